"""What the commands say, and what they never write:

- a model that gives NaN (weights damaged after the load checks, or an ONNX graph's, which are
  not scanned) is one line and exit 2 from every command: never a NaN vector, "nan%", a NaN
  metric or JSON with bare NaN;
- progress shows on a terminal and stays out of logs and pipes;
- a full disk during the final save or an export is one line naming the file;
- `sbert --version`; a hub id says nothing is downloaded.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch

from sbert import MultiTaskModel, SentenceBert, cli

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STS_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    torch.manual_seed(0)
    MultiTaskModel(SentenceBert.from_config("tiny"), ["a", "b"], (0.0, 5.0)).save(path)
    return path


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat sits\na dog runs\nit rains\n")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sentence1,sentence2,score\na cat,a dog,4.5\nrain,sun,0.1\nx y,y x,4.9\n")
    return {"texts": texts, "pairs": pairs}


def error_of(capsys, *args) -> str:
    capsys.readouterr()
    assert cli.main([str(a) for a in args]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "nan" not in out.lower(), out
    return lines[0]


@pytest.fixture
def nan_model(monkeypatch):
    """Every model loads, then gets a NaN in one LayerNorm weight: what a damaged ONNX graph
    gives (its weights are not scanned at load, the PyTorch folder's are)."""
    load = MultiTaskModel.from_pretrained.__func__

    def damaged(cls, name_or_path):
        model = load(cls, name_or_path)
        with torch.no_grad():
            model.encoder.bert.layers[0].ffn_norm.weight[3] = float("nan")
        return model

    monkeypatch.setattr(MultiTaskModel, "from_pretrained", classmethod(damaged))


@pytest.mark.parametrize(
    "command", ["encode", "similarity", "predict", "predict-stdout", "index", "evaluate",
                "evaluate-retrieval"],
)  # fmt: skip
def test_a_model_of_nan_writes_nothing_and_says_so(
    model, files, tmp_path, capsys, nan_model, command
):
    args = {
        "encode": ["encode", "--input", files["texts"], "--output", tmp_path / "v.npy"],
        "similarity": ["similarity", "a cat", "a dog"],
        "predict": ["predict", "--input", files["pairs"], "--output", tmp_path / "p.jsonl"],
        "predict-stdout": ["predict", "--input", files["pairs"]],
        "index": ["index", "--corpus", files["texts"], "--out", tmp_path / "ix"],
        "evaluate": ["evaluate", "--data", files["pairs"]],
        "evaluate-retrieval": ["evaluate-retrieval", "--data", files["pairs"]],
    }[command]
    line = error_of(capsys, *args, "--model", model)
    assert "NaN" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.csv", "texts.txt"]


def test_an_undefined_metric_is_said_not_printed_as_nan(model, tmp_path, capsys):
    same = tmp_path / "same.csv"
    same.write_text("sentence1,sentence2,score\na cat,a dog,3\nrain,sun,3\nx y,y x,3\n")
    line = error_of(capsys, "evaluate", "--model", model, "--data", same)
    assert "spearman, pearson undefined" in line and "gold scores, are not all equal" in line
    one = tmp_path / "one.csv"  # scipy raises on a single point: one line, not a traceback
    one.write_text("sentence1,sentence2,score\na cat,a dog,3\n")
    line = error_of(capsys, "evaluate", "--model", model, "--data", one)
    assert "spearman, pearson undefined: a correlation needs two or more" in line


def test_an_undefined_metric_beside_a_defined_one_is_a_note(model, tmp_path, capsys):
    """Equal gold scores leave the accuracy of the labels: printed, the rest said."""
    both = tmp_path / "both.csv"
    both.write_text("sentence1,sentence2,label,score\na cat,a dog,a,3\nrain,sun,b,3\n")
    assert cli.main(["evaluate", "--model", str(model), "--data", str(both)]) == 0
    out, err = capsys.readouterr()
    assert set(json.loads(out)) == {"pairs", "accuracy"}
    assert "note:" in err and "spearman, pearson undefined" in err


def test_a_file_without_labels_or_scores_is_no_evaluation(model, tmp_path, capsys):
    """A column mapping that names no label or score column leaves a pair count alone."""
    sick = f"{SICK}:a=sentence_A,b=sentence_B"
    line = error_of(capsys, "evaluate", "--model", model, "--data", sick)
    assert "no labels and no scores" in line and str(SICK) in line


def test_labels_a_model_cannot_score_are_said(tmp_path, capsys):
    """A model without a classifier on labelled pairs: with scores too, a note; with labels
    alone, an error (a pair count is no evaluation), never {"pairs": 2} and exit 0."""
    plain = tmp_path / "plain"
    torch.manual_seed(0)
    MultiTaskModel(SentenceBert.from_config("tiny")).save(plain)
    labels = tmp_path / "labels.csv"
    labels.write_text("premise,hypothesis,label\na cat,a dog,entailment\nrain,sun,neutral\n")
    line = error_of(capsys, "evaluate", "--model", plain, "--data", labels)
    assert "labels only" in line and "no classifier" in line
    both = tmp_path / "both.csv"
    both.write_text("sentence1,sentence2,label,score\na cat,a dog,entailment,4\n"
                    "rain,sun,neutral,1\nx y,y x,entailment,5\n")  # fmt: skip
    assert cli.main(["evaluate", "--model", str(plain), "--data", str(both)]) == 0
    out, err = capsys.readouterr()
    assert "labels are not scored" in err and "spearman" in out


def on_a_terminal(*args) -> tuple[int, str]:
    """`sbert ARGS` with stderr on a pseudo-terminal: the exit code and what it showed."""
    main, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    process = subprocess.Popen([sys.executable, "-m", "sbert", *map(str, args)], cwd=ROOT,
                               env=ENV, stdout=subprocess.DEVNULL, stderr=follower)  # fmt: skip
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 1 << 16)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    return process.wait(300), shown.decode(errors="replace")


@pytest.mark.parametrize("command", ["evaluate", "evaluate-retrieval", "index", "encode", "train"])
def test_progress_shows_on_a_terminal_and_not_in_a_pipe(model, files, tmp_path, command):
    args = {
        "evaluate": ["evaluate", "--model", model, "--data", f"{STS_DEV}[:300]"],
        "evaluate-retrieval": ["evaluate-retrieval", "--model", model, "--data", STS_DEV],
        "index": ["index", "--model", model, "--corpus", files["texts"], "--out", tmp_path / "ix"],
        "encode": ["encode", "--model", model, "--input", files["texts"],
                   "--output", tmp_path / "v.npy"],
        # the demo's evaluations before and after training
        "train": ["train", "--model", "tiny", "--train", f"{SICK}@TRAIN", "--limit", "8",
                  "--dev", f"{STS_DEV}[:300]", "--max-steps", "1", "--batch-size", "8",
                  "--device", "cpu", "--out", tmp_path / "run"],
    }[command]  # fmt: skip
    code, shown = on_a_terminal(*args)
    assert code == 0, shown
    bar = "encode" if command != "index" else "index"
    assert f"{bar}:" in shown and "100%" in shown, shown
    if command == "index":
        (tmp_path / "ix").rename(tmp_path / "first")
    piped = subprocess.run([sys.executable, "-m", "sbert", *map(str, args)], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert f"{bar}:" not in piped.stderr, piped.stderr
    if command != "train":  # the training bar itself is the trainer's (sbert/training/trainer.py)
        assert "%|" not in piped.stderr, piped.stderr


def test_a_full_disk_during_the_final_save_names_the_file(tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError
    from safetensors import torch as safetensors_torch

    save = safetensors_torch.save_file

    def full(tensors, filename, *args, **kwargs):
        if "final" in str(filename):
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        return save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors_torch, "save_file", full)
    out = tmp_path / "run"
    args = [
        "train",
        "--model",
        "tiny",
        "--train",
        f"{SICK}@TRAIN",
        "--limit",
        "8",
        "--max-steps",
        "1",
        "--batch-size",
        "8",
        "--no-eval",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.splitlines()[-1]  # after the training bar
    assert line.startswith("sbert train: error: ") and "No space left on device" in line, err
    assert str(out / "final" / "model.safetensors") in line
    assert not (out / "final").exists() and not list(out.glob(".final*"))


@pytest.mark.skipif(not HAS_ONNX, reason="exporting needs onnx, onnxruntime and onnxscript")
def test_a_full_disk_during_an_export_names_the_file(model, tmp_path):
    limited = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))\n"
        "from sbert import cli\n"
        "sys.exit(cli.main(sys.argv[2:]))\n"
    )
    out = tmp_path / "out"
    for limit, named in ((200_000, "tokenizer.json"), (1_500_000, "onnx/model.onnx")):
        result = subprocess.run(
            [sys.executable, "-c", limited, str(limit), "export", "--model", str(model),
             "--out", str(out)],
            capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300,
        )  # fmt: skip
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert str(out / named) in result.stderr and "File too large" in result.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_version_and_a_hub_id(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("sbert ")
    line = error_of(capsys, "similarity", "--model", "sentence-transformers/all-mpnet-base-v2",
                    "a", "b")  # fmt: skip
    assert "nothing is downloaded: pass a local folder" in line


def test_every_flag_and_positional_has_help_and_defaults_are_shown(capsys, monkeypatch):
    """The papercuts of the issue: similarity's positionals and the --device flags had no help,
    and the default model was not shown (fixed when the options became typed; kept here)."""
    from sbert.cli import COMMANDS

    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps at hyphens: all-\nMiniLM-L6-v2
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        if command in ("encode", "similarity", "index", "export", "evaluate-retrieval"):
            assert "(default: all-MiniLM-L6-v2)" in text, command
        if "--device" in text:
            assert "--device DEVICE cpu, cuda" in text, command
    with pytest.raises(SystemExit):
        cli.main(["similarity", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "first the first sentence (required)" in text
    assert "second the second sentence (required)" in text
