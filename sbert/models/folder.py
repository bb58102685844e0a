"""Model folders in the Hugging Face / sentence-transformers layout: the one name-mapping table,
reading a folder once, and writing one.

Only this module knows checkpoint key names and folder layouts.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from sbert.errors import CheckpointError, ConfigError
from sbert.fileio import json_field, read_json, verify_manifest
from sbert.folders import is_exported, resolve
from sbert.heads import Heads
from sbert.models.bert import Bert, BertConfig
from sbert.models.pooling import POOLING_MODES, PoolingMode
from sbert.tokenizer import WordPiece, max_seq_length

# Our parameter names -> Hugging Face BertModel names; "{i}" is the layer index. A tuple is
# concatenated along dim 0 into one tensor: our attention fuses the Q, K and V projections.
WEIGHT_MAP: dict[str, str | tuple[str, ...]] = {
    "embeddings.word.weight": "embeddings.word_embeddings.weight",
    "embeddings.position.weight": "embeddings.position_embeddings.weight",
    "embeddings.segment.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.norm.bias": "embeddings.LayerNorm.bias",
    **{
        f"layers.{{i}}.attn.qkv.{p}": tuple(
            f"encoder.layer.{{i}}.attention.self.{name}.{p}" for name in ("query", "key", "value")
        )
        for p in ("weight", "bias")
    },
    "layers.{i}.attn.out.weight": "encoder.layer.{i}.attention.output.dense.weight",
    "layers.{i}.attn.out.bias": "encoder.layer.{i}.attention.output.dense.bias",
    "layers.{i}.attn_norm.weight": "encoder.layer.{i}.attention.output.LayerNorm.weight",
    "layers.{i}.attn_norm.bias": "encoder.layer.{i}.attention.output.LayerNorm.bias",
    "layers.{i}.ffn.up.weight": "encoder.layer.{i}.intermediate.dense.weight",
    "layers.{i}.ffn.up.bias": "encoder.layer.{i}.intermediate.dense.bias",
    "layers.{i}.ffn.down.weight": "encoder.layer.{i}.output.dense.weight",
    "layers.{i}.ffn.down.bias": "encoder.layer.{i}.output.dense.bias",
    "layers.{i}.ffn_norm.weight": "encoder.layer.{i}.output.LayerNorm.weight",
    "layers.{i}.ffn_norm.bias": "encoder.layer.{i}.output.LayerNorm.bias",
}

# Checkpoint tensors dropped on purpose: the pooler and the pre-training heads serve BERT's
# next-sentence and masked-LM tasks, which SBERT does not use (it mean-pools, SBERT §3);
# position_ids is a constant buffer, not a weight.
DROPPED = re.compile(r"^(pooler\.|cls\.|embeddings\.position_ids$)")


@dataclass(frozen=True)
class Layout:
    """Where a model folder keeps each part, and how it pools and normalises."""

    transformer: Path  # the folder with config.json, weights and tokenizer
    max_seq_length: int
    lowercase: bool
    pooling: PoolingMode
    normalize: bool


def read_layout(folder: Path) -> Layout:
    """Read a sentence-transformers folder (modules.json) or a plain Hugging Face BERT folder."""
    if not (folder / "modules.json").is_file():
        return Layout(folder, _positions(folder / "config.json"), False, "mean", False)
    modules = read_json(folder / "modules.json", expect=list)
    by_type = {
        str(m.get("type", "")).rsplit(".", 1)[-1]: folder / str(m.get("path", ""))
        for m in modules
        if isinstance(m, dict)
    }
    if "Transformer" not in by_type:
        raise CheckpointError(folder / "modules.json", "no Transformer module")
    transformer = by_type["Transformer"]
    st_config = transformer / "sentence_bert_config.json"
    st = read_json(st_config) if st_config.is_file() else {}
    pooling: PoolingMode = "mean"
    if "Pooling" in by_type:
        pool_config = read_json(by_type["Pooling"] / "config.json")
        named = pool_config.get("pooling_mode")
        if isinstance(named, str):  # sentence-transformers 6 writes one name
            modes, others = [m for m in POOLING_MODES if m == named], [named]
        else:  # older versions: one boolean flag per mode
            modes = [m for m in POOLING_MODES if pool_config.get(_POOL_KEYS[m])]
            others = [k for k, v in pool_config.items() if k.startswith("pooling_mode") and v]
        if len(modes) != 1 or len(others) != 1:
            raise CheckpointError(
                by_type["Pooling"] / "config.json",
                f"unsupported pooling {others}: exactly one of mean, cls, max is supported",
            )
        pooling = modes[0]
    config = transformer / "config.json"
    max_len = max_seq_length(st_config, st, "max_seq_length", _positions(config), config)
    return Layout(
        transformer, max_len, bool(st.get("do_lower_case")), pooling, "Normalize" in by_type
    )


def _positions(config: Path) -> int:
    """The size of the position table that config.json records (BERT's 512 if it does not)."""
    return json_field(config, read_json(config), "max_position_embeddings", int, 1, default=512)


_POOL_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
              "max": "pooling_mode_max_tokens"}  # fmt: skip


def config_from_hf(path: Path) -> BertConfig:
    """Our BertConfig from a Hugging Face config.json, refusing what our BERT does not do."""
    c = read_json(path)
    if c.get("model_type", "bert") != "bert":
        raise CheckpointError(path, f"model_type {c.get('model_type')!r} is not BERT")
    if c.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(path, f"hidden_act {c['hidden_act']!r}: only exact gelu is built")
    if c.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(path, "only absolute position embeddings are built")
    field = functools.partial(json_field, path, c)
    try:
        return BertConfig(
            vocab_size=field("vocab_size", int, 1),
            hidden_size=field("hidden_size", int, 1),
            num_layers=field("num_hidden_layers", int, 1),
            num_heads=field("num_attention_heads", int, 1),
            intermediate_size=field("intermediate_size", int, 1),
            max_position_embeddings=field("max_position_embeddings", int, 1),
            type_vocab_size=field("type_vocab_size", int, 1, default=2),
            dropout=field("hidden_dropout_prob", float, 0, 1, default=0.1),
            layer_norm_eps=field("layer_norm_eps", float, 0, default=1e-12),
            initializer_range=field("initializer_range", float, 0, default=0.02),
            pad_token_id=field("pad_token_id", int, 0, default=0),
        )
    except ConfigError as e:  # fields that do not fit together, e.g. heads that do not divide H
        raise CheckpointError(path, str(e)) from None


def config_to_hf(config: BertConfig) -> dict:
    """A config.json that transformers' AutoModel reads as a BertModel."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.dropout,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "position_embedding_type": "absolute",
    }


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors (preferred) or pytorch_model.bin."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / "model.safetensors"
    if path.is_file():
        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(path, f"corrupted or truncated safetensors file ({e})") from None
    path = folder / "pytorch_model.bin"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a damaged pickle/zip
            raise CheckpointError(path, f"unreadable PyTorch weights ({e})") from None
    raise CheckpointError(folder, "no model.safetensors or pytorch_model.bin")


def _canonical(name: str) -> str:
    # Checkpoints saved from BertFor* models prefix "bert."; old TF conversions say gamma/beta.
    name = name.removeprefix("bert.")
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)


def _as_tuple(names: str | tuple[str, ...]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else names


def expand_map(num_layers: int) -> dict[str, str | tuple[str, ...]]:
    """WEIGHT_MAP with the layer templates filled in for `num_layers` layers."""
    out: dict[str, str | tuple[str, ...]] = {}
    for ours, theirs in WEIGHT_MAP.items():
        for i in range(num_layers) if "{i}" in ours else [0]:
            names = tuple(n.format(i=i) for n in _as_tuple(theirs))
            out[ours.format(i=i)] = names if isinstance(theirs, tuple) else names[0]
    return out


def hf_to_ours(
    weights: dict[str, torch.Tensor], model: Bert, source: Path
) -> dict[str, torch.Tensor]:
    """Map HF-named tensors onto `model`; any missing, unexpected or mis-shaped one fails."""
    weights = {_canonical(k): v for k, v in weights.items() if not DROPPED.match(_canonical(k))}
    mapping = expand_map(model.config.num_layers)
    expected = {n for names in mapping.values() for n in _as_tuple(names)}
    missing, unexpected = sorted(expected - weights.keys()), sorted(weights.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            source,
            f"tensors do not match a {model.config.num_layers}-layer BERT: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}",
        )
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    state = {}
    for ours, theirs in mapping.items():
        names = _as_tuple(theirs)
        # Check every part before concatenating: torch.cat of mis-shaped Q/K/V parts would
        # raise its own RuntimeError instead of naming the tensor.
        expected = (shapes[ours][0] // len(names), *shapes[ours][1:])
        for n in names:
            if tuple(weights[n].shape) != expected:
                raise CheckpointError(
                    source, f"{n}: shape {tuple(weights[n].shape)}, expected {expected}"
                )
        state[ours] = torch.cat([weights[n] for n in names])
    return state


def ours_to_hf(model: Bert) -> dict[str, torch.Tensor]:
    """The state dict of `model` under Hugging Face names (the fused QKV split back in three)."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in expand_map(model.config.num_layers).items():
        if isinstance(theirs, tuple):
            out.update(zip(theirs, state[ours].chunk(len(theirs)), strict=True))
        else:
            out[theirs] = state[ours]
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


@dataclass(frozen=True)
class ModelFiles:
    """A PyTorch model folder, read once: its layout, its BERT (weights loaded), its tokenizer
    and the heads beside the encoder."""

    layout: Layout
    bert: Bert
    tokenizer: WordPiece
    heads: Heads


def read_model(name_or_path: str | Path) -> ModelFiles:
    """Read a model folder (or packaged name) once, checking each part as it is read.

    A folder we saved is first checked file by file against its manifest (size and sha256).
    The model is built on the CPU and its weights checked against it (names and shapes): a
    shape-only model on the meta device would cost a second's first-use set-up in torch.
    """
    folder = resolve(name_or_path)
    if is_exported(folder):  # its weights live in the ONNX graph only
        raise ConfigError(
            f"{name_or_path}: an ONNX export has no PyTorch weights to train or evaluate; "
            f"use the model folder it was exported from (sbert.load, predict, search and "
            f"evaluate-retrieval take the export)"
        )
    verify_manifest(folder)
    layout = read_layout(folder)
    config_path = layout.transformer / "config.json"
    bert = Bert(config_from_hf(config_path))  # read_layout checked the sequence length
    bert.load_state_dict(hf_to_ours(read_weights(layout.transformer), bert, layout.transformer))
    tokenizer = WordPiece.from_folder(layout.transformer, layout.max_seq_length, layout.lowercase)
    tokenizer.check_fits(bert.config.vocab_size, config_path)
    heads = Heads.read(layout.transformer, bert.config.hidden_size)
    return ModelFiles(layout, bert, tokenizer, heads)


def write_folder(
    folder: Path, encoder: Bert, layout: Layout, tokenizer: WordPiece, weights: bool = True
) -> None:
    """Write a sentence-transformers folder whose root is also a Hugging Face BERT folder.

    weights=False writes everything but the weights (an ONNX export keeps them in its graph).
    """
    from safetensors.torch import save_file

    (folder / "config.json").write_text(json.dumps(config_to_hf(encoder.config), indent=2))
    if weights:
        save_file(ours_to_hf(encoder), str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(folder)
    parts = [("", "Transformer"), ("1_Pooling", "Pooling")]
    parts += [("2_Normalize", "Normalize")] if layout.normalize else []
    modules = [
        {"idx": i, "name": str(i), "path": p, "type": f"sentence_transformers.models.{t}"}
        for i, (p, t) in enumerate(parts)
    ]
    for path, _ in parts[1:]:
        (folder / path).mkdir()
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    st_config = {"max_seq_length": layout.max_seq_length, "do_lower_case": layout.lowercase}
    (folder / "sentence_bert_config.json").write_text(json.dumps(st_config, indent=2))
    pool_config = {"word_embedding_dimension": encoder.config.hidden_size}
    pool_config.update({key: mode == layout.pooling for mode, key in _POOL_KEYS.items()})
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pool_config, indent=2))
