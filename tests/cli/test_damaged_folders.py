"""Damaged folders without a manifest.json (a Hugging Face download, a hand-edited folder): each
damage is one line naming the damaged file, exit code 2, no traceback, from the real CLI.

Folders with a manifest are checked by sha256 before anything is read (test_reliability.py);
these have none, so each reader must check what it reads. One tiny model, its ONNX export and
three indexes (fp32, int8, HNSW) are built per module; each test damages a copy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sbert import SentenceBert
from sbert.fileio import MANIFEST
from sbert.inference.index import Index

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
HAS_FAISS = importlib.util.find_spec("faiss") is not None
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
TEXTS = [f"sentence {i} about topic {i % 7}" for i in range(300)]
NOT_UTF8 = bytes(range(256)) * 8
LONG = " ".join(f"word{i}" for i in range(2000))  # past any position table


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_thread) -> Path:
    """model/, onnx/ (its export), and indexes: index/ (fp32), int8/ and hnsw/ (approximate);
    no manifests."""
    root = tmp_path_factory.mktemp("built")
    model = SentenceBert.from_config("tiny")
    model.save(root / "model")
    Index.build(model, TEXTS, name=str(root / "model")).save(root / "index")
    Index.build(model, TEXTS, name=str(root / "model"), precision="int8").save(root / "int8")
    if HAS_FAISS:
        Index.build(model, TEXTS, name=str(root / "model"), approximate=True).save(root / "hnsw")
    if HAS_ONNX:
        from sbert.inference.export import export

        export(root / "model", root / "onnx")
    for manifest in root.glob(f"*/{MANIFEST}"):
        manifest.unlink()
    return root


def sbert(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sbert", *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300,
    )  # fmt: skip


def assert_one_line_naming(result: subprocess.CompletedProcess, damaged: Path) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    assert str(damaged) in lines[0], lines[0]


def edit_json(**changes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return damage


def write(data: str | bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)

    return damage


def edit_array(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        np.save(path, change(np.load(path)))

    return damage


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def vocab_only_and_not_utf8(path: Path) -> None:
    (path.parent / "tokenizer.json").unlink()  # vocab.txt is read only without tokenizer.json
    path.write_bytes(NOT_UTF8)


def nan_at_row_7(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[7 if a.ndim > 1 else slice(0, 1)] = np.nan
    return a


def damaged_copy(built: Path, tmp_path: Path, folder: str, file: str, damage) -> Path:
    copy = tmp_path / folder
    shutil.copytree(built / folder, copy)
    damage(copy / file)
    return copy


def add_five_tokens(path: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.add_tokens([f"newword{i}" for i in range(5)])
    tokenizer.save(str(path))


def move_a_token_past_the_table(path: Path) -> None:
    """One token's id past vocab_size, the token count unchanged."""
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    del vocab["[unused5]"]
    vocab["guitar"] = 40_000
    path.write_text(json.dumps(tokenizer))


def add_module(kind: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        modules = json.loads(path.read_text())
        modules.append({"path": f"9_{kind}", "type": f"sentence_transformers.models.{kind}"})
        path.write_text(json.dumps(modules))

    return damage


def drop_the_pooling(path: Path) -> None:
    modules = json.loads(path.read_text())
    path.write_text(json.dumps([m for m in modules if not m["type"].endswith("Pooling")]))


MODEL_DAMAGE = {
    "token-id-past-vocab_size": ("tokenizer.json", move_a_token_past_the_table),
    "module-dense": ("modules.json", add_module("Dense")),  # ST's projection: not built
    "module-second-pooling": ("modules.json", add_module("Pooling")),
    "module-no-pooling": ("modules.json", drop_the_pooling),
    "is_decoder": ("config.json", edit_json(is_decoder=True)),  # causal attention: not built
    "do_lower_case-string": ("tokenizer_config.json", edit_json(do_lower_case="false")),
    "model_max_length-string": ("tokenizer_config.json", edit_json(model_max_length="long")),
    "max_seq_length-2": ("sentence_bert_config.json", edit_json(max_seq_length=2)),
    "tokenizer-cut": ("tokenizer.json", write('{"a":')),
    "tokenizer-random-bytes": ("tokenizer.json", write(NOT_UTF8)),
    "vocab-random-bytes": ("vocab.txt", vocab_only_and_not_utf8),
    "vocab_size-string": ("config.json", edit_json(vocab_size="abc")),
    "num_layers-float": ("config.json", edit_json(num_hidden_layers=2.5)),
    "hidden_size-not-divisible": ("config.json", edit_json(hidden_size=30)),
    "pad_token_id-past-vocab": ("config.json", edit_json(pad_token_id=10**6)),
    "dropout-above-1": ("config.json", edit_json(hidden_dropout_prob=3)),
    "config-not-json": ("config.json", write("{")),
    "tokenizer-past-vocab_size": ("tokenizer.json", add_five_tokens),
    "max_seq_length-negative": ("sentence_bert_config.json", edit_json(max_seq_length=-5)),
    "max_seq_length-past-positions": (
        "sentence_bert_config.json",
        edit_json(max_seq_length=100_000),
    ),
}


@pytest.mark.parametrize("case", MODEL_DAMAGE)
def test_a_damaged_model_folder_is_one_line(built, tmp_path, case):
    file, damage = MODEL_DAMAGE[case]
    folder = damaged_copy(built, tmp_path, "model", file, damage)
    assert_one_line_naming(sbert("similarity", "--model", folder, LONG, "c d"), folder / file)


@pytest.mark.parametrize(
    "command",
    [
        ["export", "--out", "{tmp}/out"],
        [
            "train",
            "--train",
            f"{SICK}@TRAIN",
            "--limit",
            8,
            "--max-steps",
            1,
            "--no-eval",
            "--out",
            "{tmp}/run",
        ],
    ],  # fmt: skip
    ids=["export", "train"],
)
def test_a_damaged_tokenizer_stops_export_and_train(built, tmp_path, command):
    if command[0] == "export" and not HAS_ONNX:
        pytest.skip("exporting needs onnx, onnxruntime and onnxscript")
    folder = damaged_copy(built, tmp_path, "model", "tokenizer.json", write('{"a":'))
    args = [str(a).format(tmp=tmp_path) for a in command]
    result = sbert(*args, "--model", folder)
    assert_one_line_naming(result, folder / "tokenizer.json")


EXPORT_DAMAGE = {
    "tokenizer-cut": ("tokenizer.json", write('{"a":')),
    "tokenizer-random-bytes": ("tokenizer.json", write(NOT_UTF8)),
    "max_seq_length-negative": ("onnx_export.json", edit_json(max_seq_length=-1)),
    "max_seq_length-past-positions": ("onnx_export.json", edit_json(max_seq_length=100_000)),
    "dim-string": ("onnx_export.json", edit_json(dim="x")),
    "dim-not-the-graph's": ("onnx_export.json", edit_json(dim=33)),
    "lowercase-string": ("onnx_export.json", edit_json(lowercase="yes")),
    "graph-number": ("onnx_export.json", edit_json(graph=5)),
    # a path out of the folder: never followed (tests/cli/test_hostile_folders.py: the others)
    "graph-outside": ("onnx_export.json", edit_json(graph="../../../../etc/hostname")),
    "graph-absolute": ("onnx_export.json", edit_json(graph="/etc/hostname")),
    "positions-string": ("config.json", edit_json(max_position_embeddings="many")),
    "vocab_size-below-the-tokenizer's": ("config.json", edit_json(vocab_size=100)),
}


@pytest.mark.parametrize("case", EXPORT_DAMAGE)
def test_a_damaged_onnx_export_is_one_line(built, tmp_path, case):
    if not HAS_ONNX:
        pytest.skip("exporting needs onnx, onnxruntime and onnxscript")
    file, damage = EXPORT_DAMAGE[case]
    folder = damaged_copy(built, tmp_path, "onnx", file, damage)
    assert_one_line_naming(sbert("similarity", "--model", folder, LONG, "c d"), folder / file)


INDEX_DAMAGE = {
    "vectors-truncated": ("index", "vectors.npy", truncate),
    "vectors-100-columns": ("index", "vectors.npy", edit_array(lambda a: np.ones((300, 100)))),
    "vectors-float64": ("index", "vectors.npy", edit_array(lambda a: a.astype(np.float64))),
    "vectors-nan": ("index", "vectors.npy", edit_array(nan_at_row_7)),
    "vectors-not-npy": ("index", "vectors.npy", write("not an array")),
    "texts-not-json": ("index", "texts.jsonl", write('"a"\nnot json\n"b"\n')),
    "texts-not-a-string": ("index", "texts.jsonl", write('"a"\n5\n')),
    "texts-5-lines": ("index", "texts.jsonl", write("".join(f'"t{i}"\n' for i in range(5)))),
    "texts-not-utf8": ("index", "texts.jsonl", write(NOT_UTF8)),
    "count-wrong": ("index", "index.json", edit_json(count=299)),
    "dim-not-the-model's": ("index", "index.json", edit_json(dim=16)),
    "model-a-string": ("index", "index.json", edit_json(model="str")),
    "precision-unknown": ("index", "index.json", edit_json(precision="fp16")),
    "int8-codes-truncated": ("int8", "codes.npy", truncate),
    "int8-codes-other-dtype": ("int8", "codes.npy", edit_array(lambda a: a.astype(np.int16))),
    "int8-scales-nan": ("int8", "int8_scales.npy", edit_array(nan_at_row_7)),
    "int8-vectors-truncated": ("int8", "vectors.npy", truncate),  # memory-mapped
    "hnsw-graph-truncated": ("hnsw", "hnsw.faiss", truncate),
    "hnsw-count-wrong": ("hnsw", "index.json", edit_json(count=299)),
}


@pytest.mark.parametrize("case", INDEX_DAMAGE)
def test_a_damaged_index_is_one_line(built, tmp_path, case):
    folder, file, damage = INDEX_DAMAGE[case]
    if folder == "hnsw" and not HAS_FAISS:
        pytest.skip("an approximate index needs faiss-cpu")
    index = damaged_copy(built, tmp_path, folder, file, damage)
    assert_one_line_naming(sbert("search", "--index", index, "topic 3"), index / file)


def test_the_undamaged_folders_work(built, tmp_path):
    """The damage, not the folders or the long sentence, is what the tests above see; a Dropout
    module, which changes no vector at inference, is no damage."""
    dropout = damaged_copy(built, tmp_path, "model", "modules.json", add_module("Dropout"))
    assert sbert("similarity", "--model", dropout, LONG, "c d").returncode == 0
    models = ["model", "onnx"] if HAS_ONNX else ["model"]
    indexes = ["index", "int8", "hnsw"] if HAS_FAISS else ["index", "int8"]
    for result in [
        *(sbert("similarity", "--model", built / folder, LONG, "c d") for folder in models),
        *(sbert("search", "--index", built / folder, "topic 3", "-k", 1) for folder in indexes),
    ]:
        assert result.returncode == 0, result.stderr
