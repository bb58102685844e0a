"""Property tests of the tokenizer path: any text encodes to finite vectors, and `sbert encode`
on any bytes either writes them or says why in one line with exit code 2, never a traceback.

The model is the tiny preset (same tokenizer as all-MiniLM-L6-v2): the properties are about
the text handling, not the weights. Most CLI examples run `cli.main` in this process; a few run
as real subprocesses (each costs ~2 s of imports).
"""

from __future__ import annotations

import itertools
import operator
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from sbert import cli
from sbert.models.sentence import SentenceBert

ROOT = Path(__file__).resolve().parent.parent
BOM = b"\xef\xbb\xbf"
COUNTER = itertools.count()
FUZZ = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

pytestmark = pytest.mark.usefixtures("one_thread")

ANY_CHAR = st.characters(exclude_categories=())  # controls, unassigned, lone surrogates too
ODD_CHARS = "\x00\x07\t\n\r\x0b\x0c\x1c\x1f\x7f\x85\xa0\u2028\u200b\u202e\ufeff\ufffd\ud800 "
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=60),
    st.text(st.sampled_from(ODD_CHARS), max_size=20),
    # Huge: far past the 128-token limit, truncation must cope.
    st.builds(operator.mul, st.text(ANY_CHAR, min_size=1, max_size=4), st.integers(1000, 20_000)),
)


@pytest.fixture(scope="module")
def model() -> SentenceBert:
    return SentenceBert.from_config("tiny")


@pytest.fixture(scope="module")
def model_folder(model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "model"
    model.save(folder)
    return folder


@settings(FUZZ, max_examples=100)
@given(sentences=st.lists(TEXT, max_size=6))
@example(sentences=[])
@example(sentences=["", " ", "\x00", "\ud800", "a\udcff b", "x" * 1_000_000])
def test_any_text_tokenizes_and_encodes_to_finite_vectors(model, sentences):
    tok = model.tokenizer
    cls, sep = tok.tokenizer.token_to_id("[CLS]"), tok.tokenizer.token_to_id("[SEP]")
    ids = model.tokenize(sentences)
    assert len(ids) == len(sentences)
    for x in ids:
        assert 2 <= len(x) <= tok.max_length and x[0] == cls and x[-1] == sep
        assert all(0 <= i < tok.vocab_size for i in x)
    vectors = model.encode(sentences)
    assert vectors.dtype == np.float32 and vectors.shape == (len(sentences), model.dim)
    assert np.isfinite(vectors).all()
    assert np.isfinite(model.encode(sentences, normalize=True)).all()
    # Alone, each sentence gets the same vector: sorting by length and padding change nothing.
    for sentence, vector in zip(sentences, vectors, strict=True):
        np.testing.assert_allclose(model.encode(sentence), vector, atol=1e-5, rtol=0)


def text_file(lines: list[str], newline: bytes, bom: bool, encoding: str) -> bytes:
    body = newline.join(line.encode(encoding, "replace") for line in lines)
    return (BOM if bom else b"") + body


FILES = st.one_of(
    st.binary(max_size=200),
    st.builds(
        text_file,
        st.lists(st.text(st.characters(exclude_categories=("Cs",)), max_size=40), max_size=6),
        st.sampled_from([b"\n", b"\r\n", b"\r"]),
        st.booleans(),
        st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16"]),
    ),
)


def encode_here(model_folder: Path, folder: Path, content: bytes, capsys) -> None:
    """`sbert encode` on a file holding `content`: vectors, or one line and exit code 2."""
    n = next(COUNTER)
    source, output = folder / f"in-{n}.txt", folder / f"out-{n}.npy"
    source.write_bytes(content)
    capsys.readouterr()
    paths = ["--model", str(model_folder), "--input", str(source), "--output", str(output)]
    code = cli.main(["encode", *paths, "--device", "cpu"])
    err = capsys.readouterr().err
    event(f"exit code {code}")
    if code == 0:
        vectors = np.load(output)
        lines = content.removeprefix(BOM).splitlines()
        while lines and not lines[-1]:  # blank lines after the last text are skipped
            lines.pop()
        assert vectors.shape[0] == len(lines)
        assert np.isfinite(vectors).all()
        assert err == f"wrote {len(vectors)} x {vectors.shape[1]} embeddings to {output}\n"
    else:
        assert code == 2
        assert err.startswith(f"sbert encode: error: {source}") and err.count("\n") == 1, err
        assert not output.exists()


@settings(FUZZ, max_examples=60)
@given(content=FILES)
@example(content=b"")
@example(content=BOM + b"caf\xc3\xa9\r\n\x00\x07 bell\r\n")
def test_encode_on_any_bytes_writes_vectors_or_one_line(model_folder, tmp_path, capsys, content):
    encode_here(model_folder, tmp_path, content, capsys)


SUBPROCESS_INPUTS = {
    "not UTF-8": (b"\xff\xfe\x00not utf-8\n", 2),
    "BOM, CRLF and control characters": (BOM + b"caf\xc3\xa9\r\n\x07 bell\r\n", 0),
    "NUL byte": (b"a binary\x00file\n", 2),
    "blank lines only": (b"\n\n", 2),
}


@pytest.mark.parametrize("case", list(SUBPROCESS_INPUTS))
def test_encode_command_on_hostile_bytes(model_folder, tmp_path, case):
    content, expected = SUBPROCESS_INPUTS[case]
    source, output = tmp_path / "in.txt", tmp_path / "out.npy"
    source.write_bytes(content)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "sbert", "encode", "--model", str(model_folder)]
        + ["--input", str(source), "--output", str(output)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert result.returncode == expected, result.stderr
    assert "Traceback" not in result.stderr
    if expected == 2:
        assert len(result.stderr.splitlines()) == 1 and str(source) in result.stderr
    else:
        assert np.load(output).shape == (2, 32)
