"""The Python API on arguments it cannot use: a one-line error naming the argument (an sbert
error or a TypeError), never rows of uninitialised memory, a string split into its letters, an
obscure error from inside numpy, faiss or the tokenizer, or someone's folder replaced."""

from __future__ import annotations

import os

import numpy as np
import pytest

import sbert
from sbert.errors import CheckpointError, ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["a cat sits on the mat", "a dog runs", "it rains today", "the sun is out"]


@pytest.fixture(scope="module")
def model(tiny):
    return sbert.load(tiny)


@pytest.mark.parametrize(
    "batch_size, words",
    [(-5, "batch_size must be at least 1, not -5"), (0, "at least 1, not 0"),
     (1.5, "batch_size must be a whole number, not 1.5"), (None, "whole number, not None")],
)  # fmt: skip
def test_a_batch_size_below_1_is_refused_not_rows_of_garbage(model, batch_size, words):
    with pytest.raises(ConfigError, match=words):
        model.encode(TEXTS, batch_size=batch_size)
    with pytest.raises(ConfigError, match=words):
        sbert.Index.build(model, TEXTS, batch_size=batch_size)
    assert np.isfinite(model.encode(TEXTS, batch_size=np.int64(2))).all()  # numpy ints do


def test_texts_must_be_strings_and_a_lone_string_is_no_list(model):
    with pytest.raises(TypeError, match=r"sentences\[1\] is NoneType, not a string"):
        model.encode(["a cat", None])
    with pytest.raises(TypeError, match="sentences: expected a list of strings, not one bytes"):
        model.encode(b"hello")
    with pytest.raises(TypeError, match="texts: expected a list of strings, not one str"):
        sbert.Index.build(model, "abc")  # was an index of "a", "b", "c"
    with pytest.raises(ConfigError, match="pair 0: expected two strings, got 'ab'"):
        sbert.predict(model, ["ab"])  # was the pair ("a", "b")
    assert model.encode("a cat").shape == (model.dim,)  # one string: one vector, as before


def test_empty_inputs_give_empty_answers(model):
    assert model.encode([]).shape == (0, model.dim)
    assert sbert.predict(model, []) == []
    index = sbert.Index.build(model, TEXTS)
    assert index.search([]) == []
    empty = sbert.Index.build(model, [], precision="int8")  # no corpus: no scale to take
    empty.add(TEXTS)
    assert empty.search(TEXTS[1], k=1)[0].id == 1


def test_search_arguments(model):
    index = sbert.Index.build(model, TEXTS)
    with pytest.raises(ConfigError, match="k must be a whole number, not 2.5"):
        index.search("a cat", k=2.5)
    with pytest.raises(ConfigError, match=r"shape \(1, 768\): this index holds 32-dimensional"):
        index.search_vectors(np.ones((1, 768), np.float32), 2)  # was read as 24 queries
    with pytest.raises(ConfigError, match="NaN or Inf"):
        index.search_vectors(np.full((1, model.dim), np.nan, np.float32), 2)
    with pytest.raises(ConfigError, match="chunk_size must be at least 1, not -1"):
        sbert.Index.build(model, TEXTS, chunk_size=-1)  # left rows unfilled


def test_a_sequence_length_with_no_room_for_a_word_is_refused(model):
    with pytest.raises(ConfigError, match="max_seq_length must be at least 3, not 1"):
        model.encoder.truncate(1)  # `tokenizers` would then not truncate at all


def test_save_never_replaces_a_folder_of_another_kind(model, tmp_path):
    """save() of a model or an index replaces only an earlier folder of its kind (or an empty
    one): a user's folder, a model under an index's save, an index under a model's."""
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    index = sbert.Index.build(model, TEXTS)
    for save, kind in ((model.save, "a model folder"), (index.save, "an index")):
        with pytest.raises(CheckpointError, match=f"folder exists and is not {kind}"):
            save(mine)
    assert os.listdir(mine) == ["thesis.tex"]
    model.save(tmp_path / "model")
    model.save(tmp_path / "model")  # an earlier model: replaced
    index.save(tmp_path / "index")
    index.save(tmp_path / "index")
    with pytest.raises(CheckpointError, match="not an index"):
        index.save(tmp_path / "model")
    with pytest.raises(CheckpointError, match="not a model folder"):
        model.save(tmp_path / "index")
    assert sbert.Index.load(tmp_path / "index", tmp_path / "model").search("a dog", k=1)[0].id == 1
    with pytest.raises(CheckpointError, match="an index, not a model: open it with sbert.Index"):
        sbert.load(tmp_path / "index")


def test_save_to_the_working_folder_is_refused(model, tmp_path, monkeypatch):
    """save(".") raised pathlib's "has an empty name"; swapped out, the working folder (and
    every folder holding it) would be deleted under the user."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for path in (".", "..", work):
        with pytest.raises(CheckpointError, match="is the current folder or holds it"):
            model.save(path)
    model.save("model")  # a folder inside it is fine
    assert os.listdir(work) == ["model"]
