"""Hostile model folders: files that are not what they say. Each is one line naming the file
(or the setting), exit code 2, no traceback, nothing written, and never a machine's memory:

- sizes in config.json are trusted only as far as the weight file's header proves them (a
  400-byte config asking for 40 GB is refused under a 1 GB memory limit, before allocating);
- weights of another dtype, or holding NaN or Inf, are refused at load;
- a path a folder names (modules.json, a manifest entry, an export's graph) stays inside it;
- a metadata file that is a FIFO, a link to /dev/zero or oversized is refused, not read.

Folders here have no manifest.json (a hand-made or downloaded folder): every check is the
reader's own. Through `sbert.cli.main` in this process unless a real process is the point.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sbert import SentenceBert, cli
from sbert.fileio import MANIFEST
from sbert.models.bert import Bert, preset
from sbert.models.folder import hf_shapes, ours_to_hf

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A tiny model folder without a manifest."""
    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    SentenceBert.from_config("tiny").save(root / "model")
    (root / "model" / MANIFEST).unlink()
    return root


@pytest.fixture
def model(built, tmp_path) -> Path:
    """A fresh copy of the tiny model for one test to damage."""
    return Path(shutil.copytree(built / "model", tmp_path / "model"))


def error_of(capsys, *args) -> str:
    """`sbert ARGS` must fail with exit code 2 and one line on stderr, no traceback."""
    capsys.readouterr()
    assert cli.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_weights(folder: Path, change) -> None:
    path = folder / "model.safetensors"
    weights = load_file(path)
    change(weights)
    save_file(weights, str(path))


# --- sizes a config.json claims ------------------------------------------------------------

# Each config.json edit alone would build a model of this size before comparing the weights.
OVERSIZED = {
    "48-layers-of-4096": dict(num_hidden_layers=48, hidden_size=4096, num_attention_heads=64,
                              intermediate_size=16384),  # ~38 GB
    "a-million-layers": dict(num_hidden_layers=1_000_000),
    "vocab-of-1e12": dict(vocab_size=10**12),
    "positions-1e12": dict(max_position_embeddings=10**12),
    "intermediate-1e15": dict(intermediate_size=10**15),
}  # fmt: skip

# Runs in a fresh process under a 1 GB memory limit past what importing torch took: each folder
# must be refused with one line, and the peak memory must stay below the limit.
UNDER_A_LIMIT = r"""
import contextlib, io, json, resource, sys
import torch
from sbert import cli
from sbert.models.folder import read_model
def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
limit = vm_size() + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = {}
for folder in sys.argv[1:]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["similarity", "--model", folder, "a", "b"])
    results[folder] = [code, err.getvalue()]
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
print(json.dumps({"results": results, "rss_growth_kb": grown}))
"""


def test_a_config_larger_than_its_weights_is_refused_before_allocating(built, tmp_path):
    folders = []
    for case, changes in OVERSIZED.items():
        folder = Path(shutil.copytree(built / "model", tmp_path / case))
        edit_json(folder / "config.json", **changes)
        folders.append(folder)
    result = subprocess.run(
        [sys.executable, "-c", UNDER_A_LIMIT, *map(str, folders)],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    for folder in folders:
        code, err = report["results"][str(folder)]
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (folder.name, err)
        assert str(folder) in lines[0] and "config.json" in lines[0], lines[0]
    assert report["rss_growth_kb"] < 256 * 1024  # nothing the config asked for was allocated


def test_the_shape_table_is_the_models_own():
    """hf_shapes computes what a checkpoint of a config holds; it must be what Bert builds."""
    config = preset("tiny", vocab_size=97, num_layers=3, type_vocab_size=3)
    built = {name: tuple(t.shape) for name, t in ours_to_hf(Bert(config)).items()}
    assert hf_shapes(config) == built


def test_a_million_layers_are_refused_at_once(model, capsys):
    edit_json(model / "config.json", num_hidden_layers=1_000_000)
    line = error_of(capsys, "similarity", "--model", model, "a", "b")
    assert "num_hidden_layers 1000000, the file 2" in line and str(model) in line


# --- weights that are not numbers of a model -----------------------------------------------


def nan_in_a_layernorm(w):
    w["encoder.layer.1.output.LayerNorm.weight"][3] = float("nan")


def inf_in_the_embeddings(w):
    w["embeddings.word_embeddings.weight"][5, 0] = float("inf")


def every_tensor_int32(w):
    for name in w:
        w[name] = w[name].view(torch.int32)  # the same bytes, relabelled I32


@pytest.mark.parametrize(
    "damage, said",
    [
        (nan_in_a_layernorm, "encoder.layer.1.output.LayerNorm.weight holds NaN or infinite"),
        (inf_in_the_embeddings, "embeddings.word_embeddings.weight holds NaN or infinite"),
        (every_tensor_int32, "has dtype I32: weights are floating point"),
    ],
    ids=["nan", "inf", "int32"],
)
@pytest.mark.parametrize("command", ["encode", "similarity", "evaluate", "index", "predict"])
def test_non_finite_or_retyped_weights_are_refused_at_load(
    model, tmp_path, capsys, damage, said, command
):
    edit_weights(model, damage)
    texts = tmp_path / "texts.txt"
    texts.write_text("a cat sits\na dog runs\n")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sentence1,sentence2,score\na cat,a dog,0.5\nrain,sun,0.1\nx y,y x,0.9\n")
    args = {
        "encode": ["--input", texts, "--output", tmp_path / "v.npy"],
        "similarity": ["a cat", "a dog"],
        "evaluate": ["--data", pairs],
        "index": ["--corpus", texts, "--out", tmp_path / "ix"],
        "predict": ["--input", pairs, "--output", tmp_path / "p.jsonl"],
    }[command]
    line = error_of(capsys, command, "--model", model, *args)
    assert str(model / "model.safetensors") in line and said in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "pairs.csv", "texts.txt"]


def test_a_nan_classifier_is_refused(model, capsys):
    from safetensors.numpy import save_file as save_numpy

    weight = np.zeros((3, 96), np.float32)
    weight[1, 2] = np.nan
    save_numpy({"weight": weight, "bias": np.zeros(3, np.float32)},
               str(model / "classifier.safetensors"))  # fmt: skip
    (model / "classifier.json").write_text(json.dumps({"labels": ["a", "b", "c"]}))
    line = error_of(capsys, "predict", "--model", model, "a cat", "a dog")
    assert str(model / "classifier.safetensors") in line and "weight holds NaN" in line


def test_a_label_named_twice_is_refused(model, capsys):
    """Two classes of one name: a prediction's label could not say which one won."""
    from safetensors.numpy import save_file as save_numpy

    weight = np.zeros((3, 96), np.float32)
    save_numpy({"weight": weight, "bias": np.zeros(3, np.float32)},
               str(model / "classifier.safetensors"))  # fmt: skip
    (model / "classifier.json").write_text(json.dumps({"labels": ["a", "a", "c"]}))
    line = error_of(capsys, "predict", "--model", model, "a cat", "a dog")
    assert str(model / "classifier.json") in line and "named twice: ['a']" in line, line


# --- paths a folder names --------------------------------------------------------------------


def modules_with(path: str):
    return [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": path, "type": "sentence_transformers.models.Pooling"},
    ]


@pytest.mark.parametrize("escape", ["../../../etc", "ABSOLUTE", "LINK"])
def test_a_modules_path_that_leaves_the_folder_is_refused(built, model, tmp_path, capsys, escape):
    other = Path(shutil.copytree(built / "model", tmp_path / "other"))
    if escape == "ABSOLUTE":  # another model's folder, which would then load
        escape = str(other)
    elif escape == "LINK":  # a folder inside that is a link out of it
        (model / "linked").symlink_to(other / "1_Pooling")
        escape = "linked"
    (model / "modules.json").write_text(json.dumps(modules_with(escape)))
    line = error_of(capsys, "similarity", "--model", model, "a", "b")
    assert str(model / "modules.json") in line and "leads outside" in line, line


def test_a_manifest_entry_outside_the_folder_is_refused(model, capsys, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not the model's")
    for name in (str(secret), "../secret.txt"):
        entry = {"size": 15, "sha256": "0" * 64}
        (model / MANIFEST).write_text(json.dumps({"files": {name: entry}}))
        line = error_of(capsys, "similarity", "--model", model, "a", "b")
        assert str(model / MANIFEST) in line and "leads outside" in line, line


# --- files that are not regular files --------------------------------------------------------


def to_dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def to_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def oversized(path: Path) -> None:
    """The same file, still valid, made 65 MB by trailing spaces: past any real metadata file."""
    with open(path, "ab") as f:
        f.write(b" " * (65 << 20))


METADATA = ["config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json",
            "sentence_bert_config.json"]  # fmt: skip


@pytest.mark.parametrize(
    "how, file",  # weights may be large (their header is checked instead): not oversized
    [pytest.param(how, file, id=f"{how.__name__}-{file}")
     for how in (to_dev_zero, to_fifo, oversized)
     for file in [*METADATA, *(["model.safetensors"] if how is not oversized else [])]],
)  # fmt: skip
def test_a_special_or_oversized_metadata_file_is_refused(model, capsys, how, file):
    how(model / file)
    with unblocking(model / file):
        line = error_of(capsys, "similarity", "--model", model, "a", "b")
    assert str(model / file) in line, line


def test_a_config_file_that_is_a_device_or_a_fifo_is_refused(tmp_path, capsys):
    config = tmp_path / "c.toml"
    for how in (to_dev_zero, to_fifo):
        config.write_text("")
        how(config)
        with unblocking(config):
            line = error_of(capsys, "similarity", "--config", config, "a", "b")
        assert str(config) in line
        config.unlink()


def test_a_vocabulary_without_unk_is_one_line(model, capsys):
    (model / "tokenizer.json").unlink()
    words = [w for w in (model / "vocab.txt").read_text().splitlines() if w != "[UNK]"]
    (model / "vocab.txt").write_text("\n".join(words) + "\n")
    line = error_of(capsys, "similarity", "--model", model, "a", "b")
    assert str(model / "vocab.txt") in line and "[UNK]" in line


@contextlib.contextmanager
def unblocking(fifo: Path, seconds: int = 30):
    """Fail (instead of hanging the suite) if the block waits on `fifo`: after `seconds`, open
    it for writing, so that a reader blocked on it sees its end."""
    done, hung = threading.Event(), []

    def watchdog():
        if not done.wait(seconds) and fifo.exists():
            hung.append(True)
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        yield
    finally:
        done.set()
    assert not hung, f"blocked on the FIFO {fifo}"
