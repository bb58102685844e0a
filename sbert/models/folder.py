"""Model folders in the Hugging Face / sentence-transformers layout: the one name-mapping table,
reading a folder once, and writing one.

Only this module knows checkpoint key names and folder layouts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sbert.errors import CheckpointError, ConfigError
from sbert.fileio import (
    inside,
    json_field,
    read_json,
    regular_file,
    verify_manifest,
    write_error,
)
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
    if not os.path.lexists(folder / "modules.json"):  # a FIFO or a dangling link is read, refused
        length = _default_length(folder, _positions(folder / "config.json"))
        return Layout(folder, length, False, "mean", False)
    by_type = _modules(folder)
    _check_no_default_prompt(folder / "config_sentence_transformers.json")
    transformer = by_type["Transformer"]
    st_config = transformer / "sentence_bert_config.json"
    st = read_json(st_config) if os.path.lexists(st_config) else {}
    config = transformer / "config.json"
    positions = _positions(config)
    default = _default_length(transformer, positions)
    max_len = max_seq_length(st_config, st, "max_seq_length", positions, config, default)
    lowercase = json_field(st_config, st, "do_lower_case", bool, default=False)
    pooling = _pooling(by_type["Pooling"] / "config.json")
    return Layout(transformer, max_len, lowercase, pooling, "Normalize" in by_type)


# The modules of a sentence-transformers folder that we build, and Dropout, which changes no
# vector at inference (our training leaves it out too); any other (a Dense projection, a
# LayerNorm, a custom module) changes the vectors, so a folder holding one is refused rather
# than loaded without it.
SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize", "Dropout")


def _modules(folder: Path) -> dict[str, Path]:
    """modules.json's module folders by type: a Transformer and a Pooling, maybe a Normalize."""
    path = folder / "modules.json"
    by_type: dict[str, Path] = {}
    for module in read_json(path, expect=list):
        if not isinstance(module, dict):
            raise CheckpointError(path, f"a module is a JSON object, not {module!r}"[:200])
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        where = module.get("path", "")
        if kind not in SUPPORTED_MODULES:
            raise CheckpointError(
                path,
                f"module {where!r} ({module.get('type')}) is not supported: only Transformer, "
                f"Pooling, Normalize and Dropout modules are, and without it the vectors differ",
            )
        if kind in by_type:
            raise CheckpointError(path, f"module {where!r} is a second {kind} module")
        # Each module's folder must be inside the model's: `../../etc` or the absolute path of
        # another model would load what the user never named.
        by_type[kind] = inside(folder, where, path)
    missing = [kind for kind in SUPPORTED_MODULES[:2] if kind not in by_type]
    if missing:  # sentence-transformers itself gives no sentence vector without a Pooling
        raise CheckpointError(path, f"no {' and no '.join(missing)} module")
    return by_type


def _check_no_default_prompt(path: Path) -> None:
    """Refuse a model that sentence-transformers runs with a default prompt ("query: " put
    before every text): without it, its vectors would differ, silently."""
    if not os.path.lexists(path):
        return
    config = read_json(path)
    name, prompts = config.get("default_prompt_name"), config.get("prompts")
    prompt = prompts.get(name) if isinstance(prompts, dict) else None
    if name is not None and prompt != "":  # an empty prompt changes nothing
        raise CheckpointError(
            path, f"default_prompt_name {name!r}: sentence-transformers puts the prompt "
                  f"{prompt!r} before every text; prompts are not supported, and without it "
                  f"the vectors differ"
        )  # fmt: skip


def _pooling(path: Path) -> PoolingMode:
    """The Pooling module's mode: exactly one of mean, cls and max."""
    pool_config = read_json(path)
    named = pool_config.get("pooling_mode")
    if isinstance(named, str):  # sentence-transformers 6 writes one name
        modes, others = [m for m in POOLING_MODES if m == named], [named]
    else:  # older versions: one boolean flag per mode
        modes = [m for m in POOLING_MODES if pool_config.get(_POOL_KEYS[m])]
        others = [k for k, v in pool_config.items() if k.startswith("pooling_mode") and v]
    if len(modes) != 1 or len(others) != 1:
        raise CheckpointError(
            path, f"unsupported pooling {others}: exactly one of mean, cls, max is supported"
        )
    return modes[0]


def _default_length(transformer: Path, positions: int) -> int:
    """The sequence length where sentence_bert_config.json names none, as sentence-transformers
    takes it: the tokenizer's `model_max_length` (tokenizer_config.json; sentence-transformers
    6 records the length only there) capped at the position table; the table's size where the
    tokenizer names none."""
    path = transformer / "tokenizer_config.json"
    record = read_json(path) if os.path.lexists(path) else {}
    # transformers writes int(1e30) for "no limit"; a float is read as its whole part.
    length = json_field(path, record, "model_max_length", float, 3, default=positions)
    return int(min(length, positions))


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
    decoder = [key for key in ("is_decoder", "add_cross_attention") if c.get(key)]
    if decoder:  # a causal mask, a second input: not the encoder SBERT pools
        raise CheckpointError(path, f"a decoder BERT ({decoder[0]}): only encoders are built")
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


# The dtypes a weight may have: a checkpoint of integers (or booleans, or fp8) is no BERT's,
# and loading it would convert it into nonsense silently.
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
                "F64": torch.float64}  # fmt: skip
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


def hf_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a Hugging Face checkpoint of `config` holds (dropped ones left
    out), computed from the numbers alone: nothing is allocated, so a config.json that asks for
    a model of 40 GB costs nothing to check (tests/models/test_folder_safety.py checks this
    table against the model's own shapes)."""
    V, H, I = config.vocab_size, config.hidden_size, config.intermediate_size  # noqa: E741
    ours = {
        "embeddings.word.weight": (V, H),
        "embeddings.position.weight": (config.max_position_embeddings, H),
        "embeddings.segment.weight": (config.type_vocab_size, H),
        "embeddings.norm.weight": (H,), "embeddings.norm.bias": (H,),
        "layers.{i}.attn.qkv.weight": (3 * H, H), "layers.{i}.attn.qkv.bias": (3 * H,),
        "layers.{i}.attn.out.weight": (H, H), "layers.{i}.attn.out.bias": (H,),
        "layers.{i}.attn_norm.weight": (H,), "layers.{i}.attn_norm.bias": (H,),
        "layers.{i}.ffn.up.weight": (I, H), "layers.{i}.ffn.up.bias": (I,),
        "layers.{i}.ffn.down.weight": (H, I), "layers.{i}.ffn.down.bias": (H,),
        "layers.{i}.ffn_norm.weight": (H,), "layers.{i}.ffn_norm.bias": (H,),
    }  # fmt: skip
    shapes = {}
    for name, theirs in WEIGHT_MAP.items():
        names, shape = _as_tuple(theirs), ours[name]
        part = (shape[0] // len(names), *shape[1:])  # the fused Q, K, V: one third each
        for i in range(config.num_layers) if "{i}" in name else [0]:
            shapes.update((n.format(i=i), part) for n in names)
    return shapes


def weights_file(folder: Path) -> Path:
    """model.safetensors (preferred) or pytorch_model.bin of a folder."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.lexists(folder / name):
            regular_file(folder / name)  # not a FIFO, not a link to /dev/zero
            return folder / name
    raise CheckpointError(folder, "no model.safetensors or pytorch_model.bin")


def _open_weights(path: Path) -> tuple[Header, Callable]:
    """The dtype and shape of every tensor of a weight file, read without reading the tensors
    (the safetensors header; a memory-mapped pytorch_model.bin), and a function that loads
    them."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:  # safetensors checks that the header's tensors cover the file exactly
            with safe_open(str(path), framework="pt") as f:
                header = {
                    k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape()))
                    for k in f.keys()  # noqa: SIM118 (a safetensors handle, not a dict)
                }
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(path, f"corrupted or truncated safetensors file ({e})") from None

        def load() -> dict[str, torch.Tensor]:
            try:
                return load_file(path)
            except (SafetensorError, OSError, ValueError) as e:
                message = f"corrupted or truncated safetensors file ({e})"
                raise CheckpointError(path, message) from None

        return header, load
    try:  # memory-mapped: the tensors are read from the file when used, not now
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            weights = torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except Exception as e:  # torch raises many types for a damaged pickle/zip
        raise CheckpointError(path, f"unreadable PyTorch weights ({e})") from None
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise CheckpointError(path, "unreadable PyTorch weights: not a dict of named tensors")
    names = {dtype: name for name, dtype in FLOAT_DTYPES.items()}
    header = {k: (names.get(v.dtype, str(v.dtype)), tuple(v.shape)) for k, v in weights.items()}
    return header, lambda: weights


Header = dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (dtype, shape)


def check_header(header: Header, config: BertConfig, path: Path, config_path: Path) -> None:
    """Refuse, before anything is allocated, a weight file whose tensors (names, dtypes,
    shapes) are not the model that config.json describes, naming both files: the config is
    trusted only as far as the weights prove it."""
    named: dict[str, str] = {}  # canonical name -> the file's: two for one would be a guess
    for name in header:
        if (other := named.setdefault(_canonical(name), name)) != name:
            raise CheckpointError(path, f"{other} and {name} are both {_canonical(name)}")
    found = {_canonical(k): v for k, v in header.items() if not DROPPED.match(_canonical(k))}
    layers = 1 + max((int(m[1]) for n in found if (m := _LAYER.match(n))), default=-1)
    n = config.num_layers
    # Expanded for at most one layer past the file's: a config of a million layers lists the
    # first missing ones without building a million names.
    expected = hf_shapes(dataclasses.replace(config, num_layers=min(n, layers + 1)))
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(k for k in found.keys() - expected.keys() if not _beyond(k, n))
    beyond = [k for k in found if _beyond(k, n)]
    if n != layers or missing or unexpected:
        counts = f" ({config_path} has num_hidden_layers {n}, the file {layers})" * (n != layers)
        unexpected = (unexpected + sorted(beyond))[:6]
        raise CheckpointError(
            path,
            f"tensors do not match a {n}-layer BERT{counts}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}",
        )
    for name, (dtype, _) in found.items():  # a dropped int64 position_ids buffer may stay
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                path, f"{name} has dtype {dtype}: weights are floating point "
                      f"({', '.join(FLOAT_DTYPES)})"
            )  # fmt: skip
    for name, (_, shape) in found.items():
        if shape != expected[name]:
            raise CheckpointError(
                path, f"{name}: shape {shape}, expected {expected[name]} by {config_path}"
            )


def _beyond(name: str, num_layers: int) -> bool:
    return (m := _LAYER.match(name)) is not None and int(m[1]) >= num_layers


def read_weights(folder: Path, config: BertConfig, config_path: Path) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors (preferred) or pytorch_model.bin, checked against
    `config` (from `config_path`) before they are read, and finite once read."""
    path = weights_file(folder)
    header, load = _open_weights(path)
    check_header(header, config, path, config_path)
    weights = load()
    for name, tensor in weights.items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(path, f"{name} holds NaN or infinite values")
    return weights


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
    The weight file's tensors (names, dtypes, shapes, read from its header) are checked against
    config.json before anything is allocated, and their values for NaN and Inf once read. The
    model is then built on the CPU: a shape-only model on the meta device would cost seconds of
    first-use set-up in torch.
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
    config = config_from_hf(config_path)  # read_layout checked the sequence length
    # The weights are checked against the config before the model is built: a config.json of
    # 48 layers of width 4096 beside a small file is refused, not allocated (40 GB).
    weights = read_weights(layout.transformer, config, config_path)
    bert = Bert(config)
    bert.load_state_dict(hf_to_ours(weights, bert, weights_file(layout.transformer)))
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
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    (folder / "config.json").write_text(json.dumps(config_to_hf(encoder.config), indent=2))
    if weights:
        path = folder / "model.safetensors"
        try:
            save_file(ours_to_hf(encoder), str(path), metadata={"format": "pt"})
        except SafetensorError as e:  # a full disk: an OSError naming the file, as others
            raise write_error(e, path) from None
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
