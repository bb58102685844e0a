"""Reliability: a killed run, damaged files, a NaN or Inf, a full disk, a second run on the same
folder, out of memory. Each test backs a line of docs/GUARANTEES.md.

Training runs are tiny: 16 pairs in batches of 8 for 2 epochs (4 steps), a checkpoint every
step, dropout on (so the RNG state must survive a resume). Runs whose weights are compared
exactly use one thread in every process, so that they use the same float kernels.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sbert import cli
from sbert.errors import CheckpointError
from sbert.fileio import MANIFEST, remove_litter
from sbert.models.multitask import MultiTaskModel
from sbert.models.sentence import SentenceBert
from sbert.training.checkpoints import list_checkpoints, read_checkpoint
from sbert.training.distributed import Processes
from sbert.training.run import output_lock

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.usefixtures("one_thread")


def train_args(out: Path, *extra: str, seed: int = 3) -> list[str]:
    flags = "--model tiny --limit 16 --batch-size 8 --epochs 2 --lr 1e-3 --head-lr 1e-2 "
    flags += f"--dropout 0.1 --seed {seed} --device cpu --no-eval --save-every 1"
    return ["train", "--train", f"{SICK}@TRAIN", "--out", str(out), *flags.split(), *extra]


def run_here(args: list[str], capsys) -> tuple[int, str, str]:
    """`sbert ARGS` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def run_crashing(trap: list[str], args: list[str]) -> subprocess.CompletedProcess:
    """`sbert ARGS` in a subprocess, with tests/crash_at.py's trap set (see its docstring)."""
    command = [sys.executable, str(ROOT / "tests" / "crash_at.py"), *trap, "--", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300)


def the_error(stderr: str) -> str:
    """The one error line, last on stderr (after any progress bar); never a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"sbert \w+: error: ", line)]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    return errors[0]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return MultiTaskModel.from_pretrained(folder).state_dict()


def assert_equal_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def hidden(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith(".")}


def assert_whole(out: Path) -> list[int]:
    """Every checkpoint and model folder in view is complete; returns the checkpoints' steps."""
    shown = {p.name for p in out.iterdir()} - hidden(out)
    assert shown <= {"checkpoints", "final", "metrics.jsonl", "curves.png"}, shown
    steps = []
    for path in list_checkpoints(out):
        state = read_checkpoint(path)  # every file matches the manifest written with it
        assert path.name == f"stage0-step{state['step']:06d}"
        steps.append(state["step"])
    if (out / "checkpoints").is_dir():
        shown = {p.name for p in (out / "checkpoints").iterdir()} - hidden(out / "checkpoints")
        assert shown == {p.name for p in list_checkpoints(out)}
    if (out / "final").exists():
        MultiTaskModel.from_pretrained(out / "final")  # checks its manifest too
    return steps


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        del data[len(data) // 2 :]
    else:
        data[len(data) // 2] ^= 0x10  # one bit flipped
    path.write_bytes(data)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run: every interrupted run, resumed, must end with its weights."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert cli.main(train_args(out)) == 0
    return out


@pytest.fixture(scope="module")
def previous(tmp_path_factory) -> Path:
    """A finished run with another seed: the old final/ that a new run in its folder replaces."""
    out = tmp_path_factory.mktemp("previous") / "out"
    assert cli.main(train_args(out, seed=4)) == 0
    return out


# --- a killed run ---------------------------------------------------------------------------

# Where the run is killed (crash_at.py: function, N-th call, action, only calls mentioning),
# the newest checkpoint it leaves, and what final/ then holds: None (absent), or the "old" one
# of a previous run in the same folder, or the "new" one.
KILLS = {
    "between steps": (["sbert.training.trainer:Trainer.step", "3", "kill"], 2, None),
    "halfway through a checkpoint file": (["torch:save", "3", "half"], 2, None),
    "checkpoint written, before its rename": (["sbert.fileio:sync_tree", "3", "kill"], 2, None),
    "deleting the oldest checkpoint": (["shutil:rmtree", "1", "kill", "step000001"], 3, None),
    "final save, before the swap": (["sbert.fileio:sync_tree", "1", "kill", ".final."], 4, "old"),
    "final save, after the swap": (["shutil:rmtree", "1", "kill", ".final."], 4, "new"),
}


@pytest.mark.parametrize("case", list(KILLS))
def test_a_killed_run_leaves_whole_folders_and_resumes_exactly(
    tmp_path, case, reference, previous, capsys
):
    trap, newest, final = KILLS[case]
    out = tmp_path / "out"
    if final is not None:
        shutil.copytree(previous, out)
    killed = run_crashing(trap, train_args(out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # the trap was reached

    assert max(assert_whole(out)) == newest
    if final is None:
        assert not (out / "final").exists()
    else:
        expected = previous if final == "old" else reference
        assert_equal_weights(weights(out / "final"), weights(expected / "final"))

    code, stdout, stderr = run_here(train_args(out, "--resume"), capsys)
    assert code == 0, stderr
    assert f"resumed stage 0 at step {newest} " in stdout
    assert_equal_weights(weights(out / "final"), weights(reference / "final"))
    assert_whole(out)
    assert hidden(out) == {".lock"} and hidden(out / "checkpoints") == set()  # litter cleaned


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, reference, capsys):
    out = shutil.copytree(reference, tmp_path / "out")
    damaged = out / "checkpoints" / "stage0-step000004" / "state.pt"
    damage(damaged, "bit flip")
    code, stdout, stderr = run_here(train_args(out, "--resume"), capsys)
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "resuming from the older stage0-step000003" in warnings[0]
    assert f"{damaged}: damaged" in warnings[0]
    assert "resumed stage 0 at step 3 " in stdout
    assert_equal_weights(weights(out / "final"), weights(reference / "final"))
    assert read_checkpoint(damaged.parent)["step"] == 4  # written again, whole


def test_resume_without_an_intact_checkpoint_is_a_clear_error(tmp_path, reference, capsys):
    out = shutil.copytree(reference, tmp_path / "out")
    damage(out / "checkpoints" / "stage0-step000004" / "state.pt", "truncated")
    damage(out / "checkpoints" / "stage0-step000003" / MANIFEST, "truncated")
    code, _, stderr = run_here(train_args(out, "--resume"), capsys)
    assert code == 2
    error = the_error(stderr)
    assert "no intact checkpoint to resume from" in error
    assert "stage0-step000004/state.pt: truncated" in error
    assert f"stage0-step000003/{MANIFEST}: unreadable JSON" in error


def test_resume_before_the_first_checkpoint_starts_from_the_beginning(tmp_path, reference, capsys):
    """A run killed before its first checkpoint has nothing to lose: --resume starts it over
    (it used to refuse, though running the same command without --resume did the same)."""
    out = shutil.copytree(reference, tmp_path / "out")
    shutil.rmtree(out / "checkpoints")
    code, _, stderr = run_here(train_args(out, "--resume"), capsys)
    assert code == 0, stderr
    assert f"note: {out}: no checkpoint to resume from yet: starting from the beginning" in stderr
    assert_equal_weights(weights(out / "final"), weights(reference / "final"))
    fresh = tmp_path / "fresh"  # a folder never used: the same
    code, _, stderr = run_here(train_args(fresh, "--resume"), capsys)
    assert code == 0 and "starting from the beginning" in stderr


@pytest.mark.parametrize(
    "flags, changed",
    [
        ("--batch-size 4", "batch_size 8, now 4"),  # hung: the position past the epoch's end
        ("--strategy full", "strategy 'partial', now 'full'"),  # a traceback from the optimizer
        ("--balance uncertainty", "balance 'fixed', now 'uncertainty'"),
        ("--lr 5e-4", "lr 0.001, now 0.0005"),  # was ignored, while the log said 5e-4
        ("--limit 8", "limit 16, now 8"),
        ("--seed 9", "seed 3, now 9"),  # another shuffle, dropout and head: another run
    ],
)
def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, reference, capsys, flags, changed):
    out = shutil.copytree(reference, tmp_path / "out")
    code, _, stderr = run_here(train_args(out, "--resume", *flags.split()), capsys)
    assert code == 2
    error = the_error(stderr)
    assert "stage0-step000004: written by a run with other settings" in error
    assert changed in error and "train afresh" in error


def test_resume_refuses_a_checkpoint_of_other_batches_and_takes_other_stopping_points(
    tmp_path, reference, capsys, monkeypatch
):
    from sbert.data import batching

    out = shutil.copytree(reference, tmp_path / "out")
    code, stdout, stderr = run_here(train_args(out, "--resume", "--epochs", "3"), capsys)
    assert code == 0 and "resumed stage 0 at step 4 " in stdout, stderr  # train on: allowed
    shuffled = batching.bucketed_batches  # the data file changed: other batches, same settings
    monkeypatch.setattr(batching, "bucketed_batches", lambda *a, **k: shuffled(*a, **k)[::-1])
    code, _, stderr = run_here(train_args(out, "--resume", "--epochs", "3"), capsys)
    assert code == 2 and "the training data (its batches differ)" in the_error(stderr)


def test_a_fresh_run_in_an_earlier_runs_folder_never_resumes_its_checkpoints(
    tmp_path, reference, capsys
):
    """A fresh run killed before its first checkpoint left the earlier run's, which --resume
    then took for its own (another seed's weights, the log cut mid-line)."""
    out = shutil.copytree(reference, tmp_path / "out")
    (out / "best").mkdir()
    shutil.copytree(reference / "final", out / "best", dirs_exist_ok=True)
    fresh = train_args(out, "--save-every", "100", seed=5)
    killed = run_crashing(["sbert.training.trainer:Trainer.step", "1", "kill"], fresh)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list_checkpoints(out) == [] and not (out / "best").exists()
    assert_equal_weights(weights(out / "final"), weights(reference / "final"))  # until replaced
    code, _, stderr = run_here([*fresh, "--resume"], capsys)
    assert code == 0 and "no checkpoint to resume from yet" in stderr, stderr
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # whole lines, each once


def test_an_undefined_dev_metric_is_said_and_never_logged_as_nan(tmp_path, capsys, monkeypatch):
    """A model that gives every pair the same cosine has no Spearman: NaN was written into
    metrics.jsonl (no JSON) and the run went on without a word."""
    from sbert.training import trainer

    nan = {"pairs": 2, "spearman": float("nan"), "pearson": float("nan")}
    monkeypatch.setattr(trainer, "evaluate", lambda *args, **kwargs: nan)
    args = [a for a in train_args(tmp_path / "out", "--max-steps", "2") if a != "--no-eval"]
    code, _, stderr = run_here([*args, "--dev", f"{SICK}@TRIAL[0:8]"], capsys)
    assert code == 0, stderr
    assert "spearman, pearson undefined: the model gives every scored pair the same" in stderr
    for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the log"))


def test_litter_of_killed_writes_is_removed_and_a_half_swapped_folder_put_back(tmp_path):
    # Where the system cannot swap two folders in one step, atomic_dir renames twice; a kill
    # between the renames leaves the complete old folder under .NAME.PID.old, and no NAME.
    (tmp_path / ".final.4242.old").mkdir()
    (tmp_path / ".final.4242.old" / "model.safetensors").write_text("old")
    (tmp_path / ".best.4242.old").mkdir()  # best/ itself was replaced: this one goes
    (tmp_path / "best").mkdir()
    (tmp_path / ".stage0-step000003.k2j4x_9a.tmp").mkdir()  # a half-written checkpoint
    (tmp_path / ".curves.png.a8d7f0q1.tmp").write_text("half a png")
    (tmp_path / ".lock").write_text("")
    remove_litter(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "best", "final"]
    assert (tmp_path / "final" / "model.safetensors").read_text() == "old"


# --- damaged model files --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["truncated", "bit flip"])
@pytest.mark.parametrize(
    "name",
    ["model.safetensors", "classifier.safetensors", "tokenizer.json", "1_Pooling/config.json"],
)
def test_a_damaged_model_file_is_named_on_load(tmp_path, reference, name, how):
    folder = shutil.copytree(reference / "final", tmp_path / "model")
    damage(folder / name, how)
    with pytest.raises(CheckpointError) as error:
        MultiTaskModel.from_pretrained(folder)
    assert error.value.path == str(folder / name)
    with pytest.raises(CheckpointError) as error:
        SentenceBert.from_pretrained(folder)
    assert error.value.path == str(folder / name)


def test_a_damaged_model_through_the_command_line(tmp_path, reference, capsys):
    folder = shutil.copytree(reference / "final", tmp_path / "model")
    damage(folder / "model.safetensors", "bit flip")
    sentences = tmp_path / "in.txt"
    sentences.write_text("A man is playing a guitar.\n")
    args = ["encode", "--model", str(folder), "--input", str(sentences)]
    code, _, stderr = run_here([*args, "--output", str(tmp_path / "v.npy")], capsys)
    assert code == 2 and f"{folder / 'model.safetensors'}: damaged" in the_error(stderr)
    assert not (tmp_path / "v.npy").exists()


def test_a_folder_without_a_manifest_loads_as_before(tmp_path, reference):
    folder = shutil.copytree(reference / "final", tmp_path / "model")
    (folder / MANIFEST).unlink()  # as a Hugging Face download, or a folder saved by others
    assert_equal_weights(weights(folder), weights(reference / "final"))


# --- numerical faults -----------------------------------------------------------------------


def fault_at(call: int, kind: str, monkeypatch) -> None:
    """At the call-th forward pass, a NaN loss, or a finite loss whose gradient is NaN."""
    original, calls = MultiTaskModel.forward, []

    def forward(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) != call:
            return output
        losses = dict(output.losses)
        if kind == "loss":
            losses["regression"] = losses["regression"] * float("nan")
        else:
            # sqrt(0) adds nothing, but its derivative is Inf, and Inf * 0 is NaN in the chain
            # rule.
            losses["regression"] = losses["regression"] + torch.sqrt(
                0 * self.classifier.weight.sum()
            )
        return dataclasses.replace(output, losses=losses)

    monkeypatch.setattr(MultiTaskModel, "forward", forward)


@pytest.mark.parametrize("kind, named", [("loss", "loss"), ("gradient", "gradient norm")])
def test_a_nonfinite_loss_or_gradient_stops_the_run_naming_the_step(
    tmp_path, kind, named, monkeypatch, capsys
):
    fault_at(3, kind, monkeypatch)
    out = tmp_path / "out"
    code, _, stderr = run_here(train_args(out), capsys)
    assert code == 2
    error = the_error(stderr)
    last_good = out / "checkpoints" / "stage0-step000002"
    assert f"non-finite {named} (nan) at step 3; the last good checkpoint is kept" in error
    assert str(last_good) in error
    assert assert_whole(out) == [2, 1] and not (out / "final").exists()


def test_a_nan_loss_through_the_command_line(tmp_path):
    out = tmp_path / "out"
    result = run_crashing(
        ["sbert.models.multitask:MultiTaskModel.forward", "3", "nan"], train_args(out)
    )
    assert result.returncode == 2
    error = the_error(result.stderr)
    assert "non-finite loss (nan) at step 3" in error and "stage0-step000002" in error
    assert assert_whole(out) == [2, 1] and not (out / "final").exists()


def test_skip_nonfinite_skips_the_batch_and_counts_it(tmp_path, monkeypatch, capsys):
    fault_at(2, "loss", monkeypatch)
    fault_at(3, "gradient", monkeypatch)
    out = tmp_path / "out"
    code, _, stderr = run_here(train_args(out, "--skip-nonfinite"), capsys)
    assert code == 0, stderr
    assert "warning: skipped step 2: non-finite loss (nan); 1 skipped so far" in stderr
    assert "warning: skipped step 3: non-finite gradient norm (nan); 2 skipped so far" in stderr
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    skipped = [(r["step"], r["nonfinite"], r["skipped"]) for r in log if "skipped" in r]
    assert skipped == [(2, "loss", 1), (3, "gradient norm", 2)]
    assert read_checkpoint(list_checkpoints(out)[0])["skipped"] == 2
    assert all(torch.isfinite(t).all() for t in weights(out / "final").values())


# --- a run that diverges --------------------------------------------------------------------

# `sbert train` with the learning-rate bound lifted: what a mistyped rate did before the bound,
# to show the run-time guard behind it.
UNBOUNDED = (
    "import sys; import sbert.training.config as c; c.MAX_RATE = float('inf'); "
    "from sbert import cli; sys.exit(cli.main(sys.argv[1:]))"
)


def test_a_mistyped_learning_rate_is_refused_naming_the_likely_one(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "sbert", *train_args(out, "--lr", "2e5")],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    error = the_error(result.stderr)
    assert "--lr 200000 is not a learning rate that trains" in error
    assert error.endswith("did you mean 2e-05?")
    assert not out.exists()


@pytest.mark.parametrize("skip", [False, True])
def test_a_diverging_learning_rate_stops_with_one_line_and_no_final_model(tmp_path, skip):
    """The issue's run (--lr 2e5, which reached weights of 2e7 and wrote a model of NaN
    vectors, exit 0), through the real command line in a subprocess, the rate bound lifted:
    the first step runs at rate 0 (a warm-up of one of the 4 steps) and is checkpointed; the
    second diverges."""
    out = tmp_path / "out"
    args = train_args(out, "--lr", "2e5", "--warmup", "0.25", "--log-every", "1")
    args += ["--skip-nonfinite"] * skip
    result = subprocess.run(
        [sys.executable, "-c", UNBOUNDED, *args],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    error = the_error(result.stderr)
    assert re.search(r"training diverged at step 2: a weight reached [\d.e+]+ \(at most ", error)
    assert "lower --lr (now 200000) or --head-lr (now 0.01)" in error
    assert f"the last good checkpoint is kept: {out / 'checkpoints' / 'stage0-step000001'}" in error
    assert assert_whole(out) == [1] and not (out / "final").exists()
    state = read_checkpoint(list_checkpoints(out)[0])["model"]
    assert all(torch.isfinite(t).all() and t.abs().max() < 100 for t in state.values())


def test_losses_that_stay_nonfinite_stop_a_run_that_skips_them(tmp_path, monkeypatch, capsys):
    original = MultiTaskModel.forward
    calls = []

    def forward(self, *args, **kwargs):  # every step from the third on is NaN
        output = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) < 3:
            return output
        nan = {name: loss * float("nan") for name, loss in output.losses.items()}
        return dataclasses.replace(output, losses=nan)

    monkeypatch.setattr(MultiTaskModel, "forward", forward)
    out = tmp_path / "out"
    args = train_args(out, "--skip-nonfinite", "--batch-size", "2", "--save-every", "5")
    code, _, stderr = run_here(args, capsys)
    assert code == 2
    error = the_error(stderr)
    assert "training diverged at step 12: 10 non-finite steps in a row; lower --lr" in error
    assert "the last good checkpoint is kept" in error and "stage0-step000010" in error
    assert stderr.count("warning: skipped step") == 10
    assert not (out / "final").exists()


def test_a_model_with_nonfinite_vectors_is_never_saved(tmp_path, monkeypatch, capsys):
    """Finite weights can still overflow in a forward pass (the issue's 2e7 weights gave NaN
    vectors): the model is probed before every save."""
    from sbert.training.trainer import Trainer

    original = Trainer.step

    def step(self, *args):
        values = original(self, *args)
        if self.progress.step == 3:
            with torch.no_grad():  # a weight large enough to overflow, below the growth bound
                self.model.encoder.bert.layers[0].attn.qkv.weight.mul_(1e30)
        return values

    monkeypatch.setattr(Trainer, "step", step)
    monkeypatch.setattr("sbert.training.trainer.WEIGHT_GROWTH", math.inf)
    out = tmp_path / "out"
    code, _, stderr = run_here(train_args(out), capsys)
    assert code == 2
    error = the_error(stderr)
    assert "training diverged at step 3: the model's vectors are no longer finite" in error
    assert assert_whole(out) == [2, 1] and not (out / "final").exists()


# --- resource faults ------------------------------------------------------------------------


FULL_DISK = {  # what torch.save raised on a full disk: through a Python file, or its zip writer
    "OSError": (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
    "RuntimeError": (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                                  "64 vs 0"), "[enforce fail at inline_container.cc:672]"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(FULL_DISK))
def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_no_litter(
    tmp_path, monkeypatch, capsys, kind
):
    save, calls = torch.save, []
    raised, said = FULL_DISK[kind]

    def fill_the_disk(obj, file):
        calls.append(1)
        if len(calls) == 3:  # the third checkpoint runs out of space halfway
            file.write(b"\0" * 1000)
            raise raised
        save(obj, file)

    monkeypatch.setattr(torch, "save", fill_the_disk)
    out = tmp_path / "out"
    code, _, stderr = run_here(train_args(out), capsys)
    assert code == 2
    error = the_error(stderr)
    assert f"stage0-step000003: cannot write the checkpoint ({said}" in error
    assert f"the last good checkpoint is kept: {out / 'checkpoints' / 'stage0-step000002'}" in error
    assert assert_whole(out) == [2, 1]
    assert hidden(out) == {".lock"} and hidden(out / "checkpoints") == set()


def test_a_second_run_on_the_same_folder_refuses(tmp_path):
    out = tmp_path / "out"
    with output_lock(out, Processes()):  # this process is the first run
        before = sorted(out.iterdir())
        second = subprocess.run(
            [sys.executable, "-m", "sbert", *train_args(out)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=ENV,
        )
        assert sorted(out.iterdir()) == before
    assert second.returncode == 2
    error = the_error(second.stderr)
    assert f"{out}: another run (process {os.getpid()}) is using this output folder" in error


def test_out_of_memory_names_the_batch_size_and_length_to_lower(tmp_path, monkeypatch, capsys):
    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(MultiTaskModel, "forward", out_of_memory)
    args = train_args(tmp_path / "out", "--max-seq-length", "12")
    code, _, stderr = run_here(args, capsys)
    assert code == 2
    found = re.search(
        r"out of memory at step 1 on micro-batches of 8 pairs x (\d+) tokens: lower --batch-size "
        r"\(now 8\) or raise --grad-accum \(now 1\), or lower --max-seq-length \(now 12\)$",
        the_error(stderr),
    )
    assert found and int(found[1]) <= 12, stderr


@pytest.mark.parametrize(("keep", "steps"), [(1, [4]), (3, [4, 3, 2])])
def test_keep_checkpoints_keeps_that_many_newest(tmp_path, capsys, keep, steps):
    out = tmp_path / "out"  # 4 steps, a checkpoint after each
    code, _, err = run_here(train_args(out, "--keep-checkpoints", str(keep)), capsys)
    assert code == 0, err
    assert assert_whole(out) == steps


# --- runs that must not lose what is there -----------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """A finished run with a dev set: best/, its log of evaluations, curves."""
    out = tmp_path_factory.mktemp("evaluated") / "out"
    args = [a for a in train_args(out) if a != "--no-eval"]
    assert cli.main([*args, "--dev", f"{SICK}@TRIAL[:16]"]) == 0
    return out


def test_a_fresh_run_from_its_own_best_model_is_refused_before_anything_goes(
    tmp_path, evaluated, capsys
):
    """`--model R/best --out R`: a fresh run clears R's best/ first, and so deleted the model
    it was about to start from (with the log and curves), then failed on the missing folder."""
    out = shutil.copytree(evaluated, tmp_path / "out")
    kept = sorted(p.name for p in out.iterdir())
    code, _, stderr = run_here(train_args(out, "--model", str(out / "best")), capsys)
    assert code == 2
    assert f"--model {out / 'best'} is inside {out}, whose best/ and checkpoints" in the_error(
        stderr
    )
    assert sorted(p.name for p in out.iterdir()) == kept and "best" in kept


@pytest.mark.parametrize(
    "flags, words",
    [
        ("--lr 5e-4", "written by a run with other settings"),
        ("--best-metric SICK_train_trial-TRIAL[:16]/accuracy", "its run picks best/ by "
         "SICK_train_trial-TRIAL[:16]/spearman; a resumed run keeps that"),
    ],
)  # fmt: skip
def test_a_refused_resume_leaves_the_log_as_it_was(tmp_path, evaluated, capsys, flags, words):
    """The log was cut back to the checkpoint, and the refused run's settings appended to it,
    before the checkpoint was found not to fit: the finished run's evaluations were lost."""
    out = shutil.copytree(evaluated, tmp_path / "out")
    log = (out / "metrics.jsonl").read_bytes()
    args = [a for a in train_args(out, "--resume", *flags.split()) if a != "--no-eval"]
    code, _, stderr = run_here([*args, "--dev", f"{SICK}@TRIAL[:16]"], capsys)
    assert code == 2 and words in the_error(stderr)
    assert (out / "metrics.jsonl").read_bytes() == log


def test_a_best_metric_without_dev_data_is_refused(tmp_path, capsys):
    code, _, stderr = run_here(train_args(tmp_path / "out", "--best-metric", "x/spearman"), capsys)
    assert code == 2 and "this run evaluates no dev data" in the_error(stderr)


@pytest.mark.parametrize(
    "state, words",
    [
        ([1, 2, 3], "holds no training state of sbert's"),
        ({"step": 4}, "holds no training state of sbert's"),
    ],
)
def test_a_checkpoint_that_is_no_training_state_is_passed_over(
    tmp_path, reference, capsys, state, words
):
    """A state.pt of something else, with a manifest that matches it, was read into the run:
    an AttributeError or KeyError, with a traceback. It is damaged: the older one resumes."""
    from sbert.fileio import write_manifest

    out = shutil.copytree(reference, tmp_path / "out")
    newest = list_checkpoints(out)[0]
    torch.save(state, newest / "state.pt")
    write_manifest(newest)
    code, _, stderr = run_here(train_args(out, "--resume"), capsys)
    assert (
        code == 0
        and "resuming from the older stage0-step000003: newer checkpoint damaged" in stderr
    )
    assert words in stderr


def test_a_checkpoint_whose_progress_is_no_runs_is_one_line(tmp_path, reference, capsys):
    from sbert.fileio import write_manifest

    out = shutil.copytree(reference, tmp_path / "out")
    for path in list_checkpoints(out):
        state = read_checkpoint(path)
        state["step"] = "abc"
        torch.save(state, path / "state.pt")
        write_manifest(path)
    code, _, stderr = run_here(train_args(out, "--resume"), capsys)
    assert code == 2 and "its progress is not a run's" in the_error(stderr)


def test_an_empty_lock_file_does_not_make_a_folder_a_run(tmp_path, capsys):
    """A user's folder with an empty .lock was taken for a run's, and its metrics.jsonl and
    curves.png deleted by a fresh run."""
    out = tmp_path / "mine"
    out.mkdir()
    for name in (".lock", "metrics.jsonl", "curves.png"):
        (out / name).write_text("" if name == ".lock" else "the user's own")
    code, _, stderr = run_here(train_args(out), capsys)
    assert code == 2 and str(out) in the_error(stderr)
    assert (
        (out / "metrics.jsonl").read_text() == (out / "curves.png").read_text() == "the user's own"
    )


def test_progress_comes_back_whole_from_a_checkpoint(tmp_path):
    """Every field of the progress is restored: a resumed run that forgot `best` would let a
    worse model replace best/, one that forgot `skipped` would undercount skipped batches."""
    from sbert.training.trainer import Progress

    saved = Progress(stage=1, step=7, epoch=2, position=3, skipped=4, best=0.75, best_metric="m")
    state = {**dataclasses.asdict(saved), "balancer": {}}
    assert Progress.from_state(state, tmp_path) == saved
