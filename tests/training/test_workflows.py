"""The paths a user takes after the demo: {one file with both targets, two files with different
objectives, two TOML stages} x {full, frozen, partial, layer-decay} x {1 process, 2 processes}.
Each ends with a model folder or with its one-line error; each stage's own settings reach its
trainer; and a two-stage run killed in stage 1 resumes to the weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sbert import cli
from sbert.choices import STRATEGIES
from sbert.errors import ConfigError
from sbert.models.multitask import MultiTaskModel
from sbert.training.config import make_config, read_config_file
from sbert.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STS_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"
COMMON = ["--model", "tiny", "--batch-size", "8", "--device", "cpu", "--no-eval", "--seed", "7"]

# Stage 1 changes every per-stage setting, so that the log shows whether it took effect.
STAGES = f"""
limit = 16

[[stages]]
train = ["{SICK}@TRAIN:classification"]
loss_weights = {{ classification = 1.0, regression = 1.0 }}
dropout = 0.0
lr = 1e-3
max_seq_length = 16

[[stages]]
train = ["{SICK}@TRAIN", "{STS_DEV}:regression"]
limit = 24
loss_weights = {{ classification = 0.5, regression = 2.0 }}
dropout = 0.2
lr = 5e-4
head_lr = 0.02
"""


def layouts(tmp: Path) -> dict[str, list[str]]:
    config = tmp / "stages.toml"
    config.write_text(STAGES)
    return {
        "one file": ["--train", f"{SICK}@TRAIN", "--limit", "16"],
        "two files": [
            "--train",
            f"{SICK}@TRAIN:classification",
            "--train",
            f"{STS_DEV}",
            "--limit",
            "16",
        ],
        "two stages": ["--config", str(config)],
    }


def expected_error(layout: str, strategy: str) -> str | None:
    """frozen trains only the classifier: a file without labels has nothing for it."""
    if strategy == "frozen" and layout != "one file":
        return "strategy frozen trains only the classifier"
    return None


def matrix(tmp: Path, processes: int) -> dict[str, list[str]]:
    runs = {
        f"{layout}/{strategy}": [
            "train", *args, *COMMON, "--strategy", strategy,
            "--out", str(tmp / f"{processes}" / layout / strategy),
        ]
        for layout, args in layouts(tmp).items()
        for strategy in STRATEGIES
    }  # fmt: skip
    # A learned balancer, and a third objective that some shares of a batch lack.
    runs["one file/partial, uncertainty, contrastive"] = [
        "train", *layouts(tmp)["one file"], *COMMON, "--balance", "uncertainty",
        "--contrastive", "--batch-size", "4", "--out", str(tmp / f"{processes}" / "balanced"),
    ]  # fmt: skip
    return runs


def check(results: dict[str, dict], runs: dict[str, list[str]]) -> None:
    for name, args in runs.items():
        layout, strategy = name.split("/")
        code, stderr = results[name]["code"], results[name]["stderr"]
        out = Path(args[args.index("--out") + 1])
        assert "Traceback" not in stderr, name
        error = expected_error(layout, strategy)
        if error is None:
            assert code == 0, (name, stderr)
            assert (out / "final" / "model.safetensors").is_file(), name
        else:
            errors = [line for line in stderr.splitlines() if line.startswith("sbert train:")]
            assert code == 2 and len(errors) == 1 and error in errors[0], (name, stderr)
            assert not (out / "final").exists(), name


def in_this_process(runs: dict[str, list[str]]) -> dict[str, dict]:
    results = {}
    for name, args in runs.items():
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            results[name] = {"code": cli.main(args), "stderr": stderr.getvalue()}
    return results


def test_every_workflow_in_one_process(tmp_path, one_thread):
    runs = matrix(tmp_path, 1)
    check(in_this_process(runs), runs)


def test_every_workflow_in_two_processes(tmp_path):
    runs = matrix(tmp_path, 2)
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        str(ROOT / "tests" / "workflow_runs.py"),
        str(tmp_path / "runs.json"),
        str(tmp_path / "results.json"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(launcher, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    check(json.loads((tmp_path / "results.json").read_text()), runs)


def log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_each_stage_trains_with_its_own_settings(tmp_path, one_thread):
    out = tmp_path / "out"
    args = ["train", *layouts(tmp_path)["two stages"], *COMMON, "--out", str(out)]
    assert cli.main(args) == 0
    records = log(out)
    settings = {r["stage"]: r for r in records if "settings" in r}
    assert settings[0]["pairs"] == 16 and settings[1]["pairs"] == 24 + 24  # limit per file
    assert settings[0]["settings"]["dropout"] == 0.0 and settings[1]["settings"]["dropout"] == 0.2
    assert settings[1]["settings"]["lr"] == 5e-4 and settings[1]["settings"]["head_lr"] == 0.02
    assert settings[1]["settings"]["max_seq_length"] is None  # stage 0's truncation carries on
    # The loss each step logs is the stage's own weighting of the objectives.
    for stage, (w_cls, w_reg) in {0: (1.0, 1.0), 1: (0.5, 2.0)}.items():
        steps = [r for r in records if r["stage"] == stage and "loss" in r]
        assert steps
        for r in steps:
            expected = w_cls * r.get("classification", 0) + w_reg * r.get("regression", 0)
            assert r["loss"] == pytest.approx(expected, rel=1e-5)


def test_a_two_stage_run_killed_in_stage_1_resumes_to_the_same_weights(
    tmp_path, monkeypatch, capsys
):
    common = [*layouts(tmp_path)["two stages"], *COMMON, "--save-every", "2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert cli.main(["train", *common, "--out", str(straight)]) == 0

    original = Trainer.save_checkpoint

    def die_in_stage_1(self):
        original(self)
        if self.progress.stage == 1:
            raise KeyboardInterrupt  # the process dies right after stage 1's first checkpoint

    monkeypatch.setattr(Trainer, "save_checkpoint", die_in_stage_1)
    assert cli.main(["train", *common, "--out", str(resumed)]) == 130
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    assert not (resumed / "final").exists()
    capsys.readouterr()
    assert cli.main(["train", *common, "--out", str(resumed), "--resume"]) == 0
    newest = resumed / "checkpoints" / "stage1-step000002"  # stage 1's, not stage 0's last
    assert f"resuming from {newest} (stage 1, step 2)" in capsys.readouterr().err

    a = MultiTaskModel.from_pretrained(straight / "final").state_dict()
    b = MultiTaskModel.from_pretrained(resumed / "final").state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_the_demo_applies_only_when_no_stage_has_training_data(tmp_path):
    staged = make_config({"stages": [{"train": [f"{SICK}@TRAIN"]}, {"train": [str(STS_DEV)]}]})
    assert staged.limit is None and staged.train == []
    demo = make_config({})
    assert demo.limit == 1000 and demo.train and demo.dev


@pytest.mark.parametrize("key", ["out", "device", "resume", "best_metric"])
def test_run_level_settings_are_refused_in_a_stage_table(tmp_path, key):
    config = tmp_path / "c.toml"
    value = "true" if key == "resume" else '"x"'
    config.write_text(f'[[stages]]\ntrain = ["{SICK}"]\n{key} = {value}\n')
    with pytest.raises(ConfigError, match=f"stage 0: {key} cannot change between stages"):
        read_config_file(config)


def test_model_is_refused_after_the_first_stage(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'[[stages]]\nmodel = "tiny"\ntrain = ["{SICK}"]\n\n'
        f'[[stages]]\nmodel = "tiny"\ntrain = ["{SICK}"]\n'
    )
    with pytest.raises(ConfigError, match="stage 1: model cannot change"):
        read_config_file(config)


@pytest.mark.parametrize(
    "strategy, flag, value",
    [
        ("layer-decay", "--freeze-layers", "1"),
        ("partial", "--layer-decay", "0.5"),
        ("frozen", "--freeze-layers", "0"),
    ],
)
def test_a_setting_the_strategy_does_not_use_is_an_error(tmp_path, strategy, flag, value):
    args = [
        "train",
        *layouts(tmp_path)["one file"],
        *COMMON,
        "--strategy",
        strategy,
        flag,
        value,
        "--out",
        str(tmp_path / "o"),
    ]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert cli.main(args) == 2
    assert f"{flag} has no effect with strategy {strategy}" in stderr.getvalue()


@pytest.mark.parametrize(
    "args, error",
    [
        (["--balance", "uncertainty", "--loss-weights", "classification=0"], "must be above 0"),
        (["--loss-weights", "contrastive=1"], "add --contrastive, or leave its weight out"),
        (["--grad-share-every", "0"], "--grad-share-every must be at least 1"),
        (["--dev", str(STS_DEV), "--best-metric", "sts-dev/spearmann"], "is not a dev metric"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_settings_that_cannot_work_are_one_line(tmp_path, args, error):
    argv = ["train", *layouts(tmp_path)["one file"], *COMMON, *args, "--out", str(tmp_path / "o")]
    if "--dev" in args:
        argv.remove("--no-eval")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert cli.main(argv) == 2
    lines = stderr.getvalue().strip().splitlines()
    assert len(lines) == 1 and error in lines[0], stderr.getvalue()
    assert not (tmp_path / "o" / "final").exists()


def test_a_config_value_of_the_wrong_type_is_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('epochs = "2"\n')
    with pytest.raises(ConfigError, match="epochs = '2' is not a whole number"):
        read_config_file(config)
