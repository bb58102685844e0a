"""The encoder against a tiny randomly initialised Hugging Face BertModel (no files needed),
parameter counts against the BERT paper, pooling, and the config presets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import transformers

from sbert import SentenceBert
from sbert.errors import ConfigError
from sbert.models.bert import PRESETS, Bert, BertConfig, preset
from sbert.models.folder import hf_to_ours, ours_to_hf
from sbert.models.pooling import pool

VOCAB = 101


def hf_config(config: BertConfig, initializer_range: float = 0.02) -> transformers.BertConfig:
    """The Hugging Face config of the same architecture."""
    return transformers.BertConfig(
        initializer_range=initializer_range,
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        hidden_act="gelu",
    )


@pytest.fixture(scope="module")
def pair() -> tuple[Bert, transformers.BertModel]:
    """A random HF BertModel and our Bert holding its weights, through the production converter."""
    config = preset("tiny", vocab_size=VOCAB, max_position_embeddings=64)
    torch.manual_seed(0)
    # Weights 10x BERT's init: with std 0.02 the feed-forward inputs stay near 0, where the tanh
    # and erf GELUs differ by ~1e-6 and the test could not tell them apart (0.2: ~6e-4).
    hf = transformers.BertModel(hf_config(config, initializer_range=0.2)).eval()
    # Random LayerNorm parameters and biases too (HF initialises them to 1 and 0), so that a
    # swapped weight and bias, or a mis-mapped LayerNorm, cannot hide.
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    ours = Bert(config).eval()
    ours.load_state_dict(hf_to_ours(hf.state_dict(), ours, Path("<hf tiny>")))
    return ours, hf


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    """A padded batch of sentence pairs: lengths 12, 7 and 3, segment B = 1."""
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, VOCAB, (3, 12), generator=g)
    attention_mask = torch.zeros(3, 12, dtype=torch.long)
    token_type_ids = torch.zeros(3, 12, dtype=torch.long)
    for row, (length, second) in enumerate([(12, 6), (7, 4), (3, 2)]):
        attention_mask[row, :length] = 1
        token_type_ids[row, second:length] = 1
        input_ids[row, length:] = 0  # [PAD]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
    }


def hf_hidden(hf: transformers.BertModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return hf(**batch).last_hidden_state


def test_hidden_states_equal_hf(pair, batch):
    ours, hf = pair
    with torch.no_grad():
        actual = ours(**batch)
    expected = hf_hidden(hf, batch)
    assert actual.shape == expected.shape == (3, 12, ours.config.hidden_size)
    real = batch["attention_mask"].bool()  # padding positions are never used: compare real ones
    torch.testing.assert_close(actual[real], expected[real], atol=1e-5, rtol=1e-5)


def test_token_type_ids_matter_and_default_to_segment_a(pair, batch):
    ours, hf = pair
    no_types = {k: v for k, v in batch.items() if k != "token_type_ids"}
    with torch.no_grad():
        default = ours(**no_types)
        zeros = ours(**no_types, token_type_ids=torch.zeros_like(batch["input_ids"]))
        with_types = ours(**batch)
    torch.testing.assert_close(default, zeros, atol=0, rtol=0)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(default[real], hf_hidden(hf, no_types)[real], atol=1e-5, rtol=1e-5)
    assert (default - with_types)[real].abs().max() > 1e-2


def test_padding_does_not_change_real_tokens(pair, batch):
    ours, _ = pair
    row = 2  # three real tokens in a row of twelve
    length = int(batch["attention_mask"][row].sum())
    alone = {k: v[row : row + 1, :length] for k, v in batch.items()}
    with torch.no_grad():
        padded = ours(**batch)[row, :length]
        unpadded = ours(**alone)[0]
    torch.testing.assert_close(padded, unpadded, atol=1e-5, rtol=1e-5)


def test_computing_real_tokens_only_changes_no_real_token_and_no_gradient(pair, batch):
    """`token_index` (what collate gives a training batch): the linear layers skip padding,
    the real tokens' states and every weight's gradient stay HF's/the padded pass's."""
    ours, hf = pair
    index = batch["attention_mask"].reshape(-1).nonzero()[:, 0]
    real = batch["attention_mask"].bool()
    grads = []
    for token_index in (None, index):
        ours.zero_grad()
        hidden = ours(**batch, token_index=token_index)
        (hidden[real] ** 2).sum().backward()
        grads.append([p.grad.clone() for p in ours.parameters() if p.grad is not None])
        if token_index is not None:
            assert hidden[~real].eq(0).all()  # zeros at padding
            expected = hf_hidden(hf, batch)[real]
            torch.testing.assert_close(hidden[real], expected, atol=1e-5, rtol=1e-5)
    ours.zero_grad()
    assert len(grads[0]) == len(grads[1]) == len(list(ours.parameters()))
    for padded, unpadded in zip(*grads, strict=True):
        torch.testing.assert_close(unpadded, padded, atol=1e-5, rtol=1e-4)


def test_weights_round_trip_to_hf_names(pair, batch):
    ours, hf = pair
    theirs = ours_to_hf(ours)
    hf_state = hf.state_dict()
    for name, tensor in theirs.items():
        torch.testing.assert_close(tensor, hf_state[name], atol=0, rtol=0)
    dropped = set(hf_state) - set(theirs)
    assert dropped and all(n.startswith("pooler.") for n in dropped), dropped


def test_dropout_is_active_in_training_only(pair, batch):
    ours, _ = pair
    copy = Bert(ours.config)
    copy.load_state_dict(ours.state_dict())
    torch.manual_seed(0)
    with torch.no_grad():
        train = copy.train()(**batch)
        evaluated = copy.eval()(**batch)
        again = copy(**batch)
    assert (train - evaluated).abs().max() > 1e-3
    torch.testing.assert_close(evaluated, again, atol=0, rtol=0)


# --- parameter counts: BERT §3 reports 110M (base) and 340M (large) ---------------------------

POOLER = {"bert-base": 768 * 768 + 768, "bert-large": 1024 * 1024 + 1024}


def hf_count(name: str) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = transformers.BertModel(hf_config(PRESETS[name]), add_pooling_layer=False)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "exact", "paper"),
    [("bert-base", 108_891_648, 109.5e6), ("bert-large", 334_092_288, 335e6)],
)
def test_parameter_count(name, exact, paper):
    with torch.device("meta"):  # the real from_config path, without allocating 0.4-1.3 GB
        model = SentenceBert.from_config(name)
    n = model.bert.num_parameters()
    assert n == exact == hf_count(name)
    # We drop the pooler on purpose (SBERT pools the token vectors); with it, the paper's count.
    assert abs(n + POOLER[name] - paper) <= 0.5e6
    assert model.dim == PRESETS[name].hidden_size


def test_from_config_builds_a_working_tiny_model():
    model = SentenceBert.from_config("tiny")
    assert model.bert.config.vocab_size == model.tokenizer.vocab_size == 30522
    assert model.tokenizer.max_length == PRESETS["tiny"].max_position_embeddings
    vectors = model.encode(["a short sentence", "another, slightly longer, sentence"])
    assert vectors.shape == (2, PRESETS["tiny"].hidden_size)


def test_bert_initialisation():
    torch.manual_seed(0)
    model = Bert(preset("tiny", vocab_size=VOCAB))
    layer = model.layers[0]
    assert abs(layer.ffn.up.weight.std().item() - 0.02) < 0.002
    assert torch.all(layer.ffn.up.bias == 0)
    assert torch.all(layer.attn_norm.weight == 1) and torch.all(layer.attn_norm.bias == 0)
    assert torch.all(model.embeddings.word.weight[0] == 0)  # [PAD]


# --- pooling -----------------------------------------------------------------------------------


@pytest.fixture
def tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """(B=3, T=4, H=5) token vectors with huge values at the padding positions."""
    torch.manual_seed(0)
    hidden = torch.randn(3, 4, 5)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    hidden[mask == 0] = 1e4
    return hidden, mask


def test_mean_pooling_averages_real_tokens_only(tokens):
    hidden, mask = tokens
    expected = torch.stack([hidden[0].mean(0), (hidden[1, 0] + hidden[1, 1]) / 2, hidden[2, 0]])
    torch.testing.assert_close(pool(hidden, mask, "mean"), expected)


def test_cls_pooling_takes_the_first_token(tokens):
    hidden, mask = tokens
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0], atol=0, rtol=0)


def test_max_pooling_ignores_padding(tokens):
    hidden, mask = tokens
    expected = torch.stack([hidden[0].amax(0), hidden[1, :2].amax(0), hidden[2, 0]])
    torch.testing.assert_close(pool(hidden, mask, "max"), expected, atol=0, rtol=0)
    negative = -hidden.abs()  # all real values negative: padding must not win as 0 either
    negative[mask == 0] = 0.0
    assert torch.all(pool(negative, mask, "max") < 0)


@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
def test_pooling_does_not_modify_inputs(tokens, mode):
    hidden, mask = tokens
    hidden_before, mask_before = hidden.clone(), mask.clone()
    out = pool(hidden, mask, mode)
    assert out.shape == (3, 5)
    assert torch.equal(hidden, hidden_before) and torch.equal(mask, mask_before)


def test_mean_pooling_of_an_all_padding_row_is_finite(tokens):
    hidden, mask = tokens
    mask = mask.clone()
    mask[2] = 0
    assert torch.isfinite(pool(hidden, mask, "mean")).all()


def test_unknown_pooling_mode():
    with pytest.raises(ValueError, match="unknown pooling mode 'sum'"):
        pool(torch.zeros(1, 2, 3), torch.ones(1, 2), "sum")  # type: ignore[arg-type]


# --- presets -----------------------------------------------------------------------------------


def test_presets_carry_the_paper_numbers():
    base, large = PRESETS["bert-base"], PRESETS["bert-large"]
    assert (base.num_layers, base.hidden_size, base.num_heads) == (12, 768, 12)
    assert (base.intermediate_size, base.max_position_embeddings) == (3072, 512)
    assert (base.vocab_size, base.dropout, base.layer_norm_eps) == (30522, 0.1, 1e-12)
    assert (large.num_layers, large.hidden_size, large.num_heads) == (24, 1024, 16)
    assert large.intermediate_size == 4096 and large.head_size == 64
    assert set(PRESETS) == {"bert-base", "bert-large", "tiny"}


def test_preset_overrides_and_is_frozen():
    config = preset("tiny", vocab_size=VOCAB)
    assert config.vocab_size == VOCAB and config.hidden_size == PRESETS["tiny"].hidden_size
    assert PRESETS["tiny"].vocab_size == 30522  # the preset itself is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_size = 64  # type: ignore[misc]


def test_preset_errors():
    with pytest.raises(
        ConfigError, match="unknown preset 'bert-huge'.*bert-base, bert-large, tiny"
    ):
        preset("bert-huge")
    with pytest.raises(ConfigError, match="not divisible"):
        preset("bert-base", num_heads=7)
    with pytest.raises(ConfigError, match="not divisible"):
        BertConfig(hidden_size=10, num_heads=3)
