"""Training on a tiny config: the loss falls, the classifier learns, resume is exact, and the CLI
turns bad input into one line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sbert.models.multitask import MultiTaskModel
from sbert.models.objectives import OBJECTIVES
from sbert.training.config import make_config
from sbert.training.distributed import Processes
from sbert.training.run import run
from sbert.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STS_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"


def tiny_config(out: Path, **overrides):
    values = {
        "train": [f"{SICK}@TRAIN"],
        "dev": [f"{SICK}@TRIAL"],
        "model": "tiny",
        "out": str(out),
        "limit": 64,
        "batch_size": 8,
        "epochs": 2,
        "lr": 1e-3,
        "head_lr": 1e-2,
        "dropout": 0.0,
        "seed": 3,
        "device": "cpu",
        "no_eval": True,
    }
    return make_config({**values, **overrides})


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return MultiTaskModel.from_pretrained(out / "final").state_dict()


def test_tiny_training_lowers_the_loss_and_trains_the_classifier(tmp_path):
    config = tiny_config(tmp_path, epochs=4)
    trainer = Trainer.from_config(config, tmp_path, torch.device("cpu"), Processes())
    head_before = trainer.model.classifier.weight.detach().clone()
    encoder_before = trainer.model.encoder.bert.layers[0].ffn.up.weight.detach().clone()
    trainer.fit()
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    per_epoch = len(losses) // 4
    assert sum(losses[-per_epoch:]) < 0.8 * sum(losses[:per_epoch])
    # Both the classifier and the encoder must move (sentence-transformers #2872 once shipped
    # a release whose classifier was not in the optimizer).
    head_change = (trainer.model.classifier.weight - head_before).abs().max().item()
    assert head_change > 1e-3
    encoder_after = trainer.model.encoder.bert.layers[0].ffn.up.weight
    assert (encoder_after - encoder_before).abs().max().item() > 1e-4
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_classifier_gets_its_own_learning_rate_in_the_optimizer(tmp_path):
    config = tiny_config(tmp_path, head_lr=0.05)
    trainer = Trainer.from_config(config, tmp_path, torch.device("cpu"), Processes())
    head = {id(p) for p in trainer.model.classifier.parameters()}
    groups = [g for g in trainer.optimizer.param_groups if {id(p) for p in g["params"]} & head]
    assert groups and all(g["initial_lr"] == 0.05 for g in groups)
    assert sum(len(g["params"]) for g in groups) == 2  # weight and bias


@pytest.mark.parametrize("balance", ["fixed", "uncertainty", "gradnorm"])  # learned weights too
def test_resume_after_an_interruption_ends_with_the_same_weights(tmp_path, monkeypatch, balance):
    straight = tmp_path / "straight"
    run(tiny_config(straight, dropout=0.1, save_every=3, balance=balance))

    resumed = tmp_path / "resumed"
    original = Trainer.save_checkpoint
    calls = []

    def crash_after_second_checkpoint(self):
        original(self)
        calls.append(self.step)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies right after a checkpoint

    monkeypatch.setattr(Trainer, "save_checkpoint", crash_after_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(resumed, dropout=0.1, save_every=3, balance=balance))
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    assert not (resumed / "final").exists()
    run(tiny_config(resumed, dropout=0.1, save_every=3, balance=balance, resume=True))

    a, b = final_weights(straight), final_weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def train_stages(tmp_path: Path, stages: str) -> list[dict]:
    """`sbert train --config` of a tiny run with these `[[stages]]` tables: its log's records."""
    config = tmp_path / "run.toml"
    out = tmp_path / "out"
    config.write_text(
        f'model = "tiny"\nout = "{out}"\nlimit = 32\nbatch_size = 8\ndevice = "cpu"\n{stages}'
    )
    result = sbert("train", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_stages_run_in_sequence_from_a_config_file(tmp_path):
    log = train_stages(
        tmp_path,
        f"""no_eval = true

[[stages]]
train = ["{SICK}@TRAIN:classification"]
head_lr = 0.01

[[stages]]
train = ["{STS_DEV}:regression"]
strategy = "layer-decay"
""",
    )
    assert {r["stage"] for r in log} == {0, 1}
    assert any("classification" in r for r in log if r["stage"] == 0)
    assert all("classification" not in r for r in log if r["stage"] == 1)
    assert (tmp_path / "out" / "final" / "classifier.json").is_file()


def test_a_later_stage_that_adds_the_classifier_may_have_a_dev_set_of_labels_only(tmp_path):
    labelled = tmp_path / "nli_dev.csv"  # labels, no scores: only a classifier scores it
    rows = [
        "A man plays.,A man plays music.,ENTAILMENT",
        "A dog runs.,A cat sleeps.,CONTRADICTION",
        "A kid sings.,A kid sings loudly.,NEUTRAL",
    ]
    labelled.write_text("premise,hypothesis,label\n" + "\n".join(rows * 2) + "\n")
    log = train_stages(
        tmp_path,
        f"""
[[stages]]
train = ["{STS_DEV}:regression"]
no_eval = true

[[stages]]
train = ["{SICK}@TRAIN:classification"]
dev = ["{labelled}"]
""",
    )
    assert any("nli_dev/accuracy" in r for r in log if r["stage"] == 1)


def sbert(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sbert", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_evaluate_prints_one_json_object(tmp_path):
    run(tiny_config(tmp_path, limit=16, epochs=1))
    result = sbert("evaluate", "--model", str(tmp_path / "final"), "--data", f"{SICK}@TRIAL")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"spearman", "pearson", "accuracy", "pairs"}
    assert metrics["pairs"] == 495
    sts = json.loads(
        sbert("evaluate", "--model", str(tmp_path / "final"), "--data", str(STS_DEV)).stdout
    )
    assert set(sts) == {"spearman", "pearson", "pairs"}


def loss_records(out: Path) -> list[dict]:
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in log if "loss" in r]


@pytest.mark.parametrize("log_every, logged", [(1, [1, 2, 3, 4]), (100, [1, 2, 3])])
def test_a_resumed_run_logs_each_step_once(tmp_path, monkeypatch, log_every, logged):
    """Killed two steps after its checkpoint and resumed, the log holds the same step records as
    an uninterrupted run's: the two steps trained again are not logged twice. Steps are logged
    when read back (--log-every, and before every checkpoint): read less often, the kill loses
    the unread step 4, which the resumed run trains again."""
    straight = tmp_path / "straight"
    run(tiny_config(straight, save_every=3))
    resumed = tmp_path / "resumed"
    original, calls = Trainer.step, []

    def crash_at_step_5(self, *args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Trainer, "step", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_config(resumed, save_every=3, log_every=log_every))
    monkeypatch.setattr(Trainer, "step", original)
    assert [r["step"] for r in loss_records(resumed)] == logged
    run(tiny_config(resumed, save_every=3, resume=True, log_every=log_every))
    assert loss_records(resumed) == loss_records(straight)


@pytest.mark.parametrize("balance", ["fixed", "uncertainty", "pcgrad", "gradnorm"])
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_a_training_step_reads_nothing_back_from_the_device(tmp_path, monkeypatch, balance):
    """On the meta device tensors have shapes but no values: any read (`.item()`, `if tensor`,
    a boolean index, `torch.unique`) raises, as on a GPU each would make the host wait. Every
    objective, labelled and unlabelled batches, micro-batches, the gradient-share report: the
    whole step but the fused optimizer's kernel (PyTorch's, and not on meta)."""
    config = tiny_config(
        tmp_path,
        train=[f"{SICK}@TRAIN", str(STS_DEV)],  # STS-B has no labels: batches without them
        balance=balance,
        contrastive=True,
        grad_share_every=1,
        grad_accum=2,
        precision="fp32",  # no autocast on meta
    )
    monkeypatch.setattr(Trainer, "_largest_weight", lambda self: 1.0)  # set-up, not a step
    trainer = Trainer.from_config(config, tmp_path, torch.device("meta"), Processes())
    monkeypatch.setattr(trainer.optimizer, "step", lambda: None)
    seen = set()
    for set_index, batch in trainer.schedule(0)[:8]:
        values = trainer.step(set_index, batch)
        assert {v.device.type for v in values.values()} == {"meta"}
        seen.add(frozenset(k for k in values if k in OBJECTIVES))
    # SICK batches with and without an entailment pair (contrastive), STS-B's without labels.
    without_entailment = frozenset({"classification", "regression"})
    assert seen == {frozenset(OBJECTIVES), without_entailment, frozenset({"regression"})}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync debug mode needs a GPU")
@pytest.mark.parametrize("balance", ["fixed", "uncertainty", "pcgrad", "gradnorm"])
def test_a_training_step_makes_no_host_sync_on_a_gpu(tmp_path, balance):
    """What the meta device cannot show: no copy or kernel of a step makes the host wait. The
    steps run once to warm up (first calls allocate and cache), then again under "error"."""
    device = torch.device("cuda")
    config = tiny_config(
        tmp_path,
        train=[f"{SICK}@TRAIN", str(STS_DEV)],
        balance=balance,
        contrastive=True,
        grad_share_every=1,
        grad_accum=2,
        precision="bf16",
        device="cuda",
    )
    trainer = Trainer.from_config(config, tmp_path, device, Processes())
    steps = trainer.schedule(0)[:8]
    for set_index, batch in steps:
        trainer.step(set_index, batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for set_index, batch in steps:
            trainer.step(set_index, batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_log_every_reads_and_logs_every_step_as_before(tmp_path):
    """Steps are read back in groups, yet metrics.jsonl has one record per step, in order, with
    the same values as a run that reads every step."""
    run(tiny_config(tmp_path / "every", log_every=1))
    run(tiny_config(tmp_path / "grouped", log_every=5))
    every, grouped = loss_records(tmp_path / "every"), loss_records(tmp_path / "grouped")
    assert [r["step"] for r in grouped] == list(range(1, 17))
    assert grouped == every


def test_sick_stsb_recipe_runs_as_written_from_the_repo_root(tmp_path):
    """configs/sick-stsb.toml as the docs give it (cut to 2 steps): its relative data paths
    resolve from the repo root, and its settings (both files, uncertainty weighting from 1:1,
    strategy full) are the ones the run uses."""
    command = [sys.executable, "train.py", "--config", "configs/sick-stsb.toml"]
    command += ["--limit", "16", "--max-steps", "2", "--no-eval", "--out", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    settings = log[0]["settings"]
    assert [Path(t).name for t in settings["train"]] == [
        "SICK_train_trial.txt@TRAIN",
        "sts-train.csv",
    ]
    assert (settings["balance"], settings["strategy"], settings["epochs"]) == (
        "uncertainty",
        "full",
        2,
    )
    assert settings["loss_weights"] == {"classification": 1.0, "regression": 1.0}
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 2 and all("weight/regression" in r for r in steps)
    assert (tmp_path / "final" / "classifier.json").is_file()


SICK_HEADER = (
    "pair_ID\tsentence_A\tsentence_B\tentailment_label\trelatedness_score\tentailment_AB\t"
    "entailment_BA\tsentence_A_original\tsentence_B_original\tsentence_A_dataset\t"
    "sentence_B_dataset\tSemEval_set\n"
)


def sick_row(n, label="NEUTRAL", score="3.5", a="A man is here.", b="A person is here."):
    return f"{n}\t{a}\t{b}\t{label}\t{score}\tx\tx\tx\tx\tx\tx\tTRAIN\n"


BAD_INPUTS = {
    "malformed row": (SICK_HEADER + sick_row(1) + "2\tonly two fields\n", 3),
    "unknown label": (SICK_HEADER + sick_row(1) + sick_row(2, label="MAYBE"), 3),
    "score not a number": (SICK_HEADER + sick_row(1, score="high"), 2),
    "nan score": (SICK_HEADER + sick_row(1, score="nan"), 2),
    "empty sentence": (SICK_HEADER + sick_row(1, a="  "), 2),
    "empty file": ("", None),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_training_input_is_one_line_exit_2_and_no_final_model(tmp_path, case):
    text, line = BAD_INPUTS[case]
    data = tmp_path / "bad.txt"
    data.write_text(text)
    out = tmp_path / "out"
    result = sbert(
        "train",
        "--train",
        str(data),
        "--model",
        "tiny",
        "--out",
        str(out),
        "--no-eval",
        "--device",
        "cpu",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(data) + (f":{line}" if line else "") in lines[0]
    assert not (out / "final").exists()


def test_missing_and_non_utf8_training_files(tmp_path):
    missing = sbert(
        "train",
        "--train",
        str(tmp_path / "nope.tsv"),
        "--model",
        "tiny",
        "--out",
        str(tmp_path / "o"),
    )
    assert missing.returncode == 2 and "nope.tsv" in missing.stderr
    assert "not found" in missing.stderr and "Traceback" not in missing.stderr
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes((SICK_HEADER + sick_row(1, a="Un caf\xe9 noir.")).encode("latin-1"))
    bad = sbert("train", "--train", str(latin1), "--model", "tiny", "--out", str(tmp_path / "o"))
    assert bad.returncode == 2 and f"{latin1}:2" in bad.stderr and "UTF-8" in bad.stderr


def test_unknown_label_against_a_trained_classifier(tmp_path):
    run(tiny_config(tmp_path / "m", limit=16, epochs=1))
    data = tmp_path / "other.csv"
    data.write_text("sentence1,sentence2,label\nA man.,A woman.,paraphrase\n")
    result = sbert("evaluate", "--model", str(tmp_path / "m" / "final"), "--data", str(data))
    assert result.returncode == 2 and f"{data}:2" in result.stderr
    assert "paraphrase" in result.stderr


@pytest.mark.parametrize(
    "warmup, factors",
    # 64 pairs in batches of 8 over 2 epochs: 16 steps; warm-up 0.25 of them is 4 steps.
    [(0.0, [1.0, 15 / 16, 14 / 16]), (0.25, [0.0, 0.25, 0.5, 0.75, 1.0, 11 / 12])],
)
def test_learning_rate_warms_up_then_decays_and_no_warmup_starts_at_the_full_rate(
    tmp_path, warmup, factors
):
    config = tiny_config(tmp_path, warmup=warmup)
    trainer = Trainer.from_config(config, tmp_path, torch.device("cpu"), Processes())
    seen = []
    for _ in factors:
        seen.append(trainer.optimizer.param_groups[0]["lr"] / config.lr)
        trainer.optimizer.step()
        trainer.scheduler.step()
    assert seen == pytest.approx(factors)


def test_best_holds_the_evaluation_with_the_highest_metric(tmp_path, monkeypatch):
    import sbert.training.trainer as trainer_module

    # 64 pairs in batches of 8: 8 steps, evaluated every 2; step 0 is before training
    config = tiny_config(tmp_path, no_eval=False, eval_every=2, epochs=1)
    trainer = Trainer.from_config(config, tmp_path, torch.device("cpu"), Processes())
    spearman = {0: 90.0, 2: 60.0, 4: 80.0, 6: 70.0, 8: 75.0}
    monkeypatch.setattr(trainer_module, "evaluate", lambda *args, **kwargs: {
        "pairs": 10, "spearman": spearman[trainer.progress.step]})  # fmt: skip
    saved, save = [], MultiTaskModel.save

    def recorded_save(model, path):
        saved.append((Path(path).name, trainer.progress.step))
        save(model, path)

    monkeypatch.setattr(MultiTaskModel, "save", recorded_save)
    trainer.evaluate_all()
    trainer.fit()
    assert [step for name, step in saved if name == "best"] == [2, 4]  # new bests only
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["value"]) for r in log if "best" in r] == [(2, 60.0), (4, 80.0)]
