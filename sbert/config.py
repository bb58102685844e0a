"""Run settings: one TrainConfig whose fields are the `sbert train` flags and the config-file
keys, the config file (TOML, with sequential [[stages]]), and data specs
PATH[@SPLIT][[FROM:TO]][:OBJECTIVE].

Every field is typed; the flags are generated from the types (`int | None` takes an int, a
`Literal` gives the choices, `bool` a switch). `None` means "not set": 0 is always a value.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from .choices import REGRESSION_LOSSES, Balance, RegressionLoss, Strategy
from .data import PairSet, read_pairs
from .errors import ConfigError, DataError

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
DEMO_TRAIN = [f"{REPO_DATA}/sick/SICK_train_trial.txt@TRAIN"]
DEMO_DEV = [f"{REPO_DATA}/sick/SICK_train_trial.txt@TRIAL", f"{REPO_DATA}/stsbenchmark/sts-dev.csv"]
DEMO_LIMIT = 1000

# Settings of the whole run, refused in a [[stages]] table: one output folder, one device, one
# resume, one metric that picks best/ across all stages.
RUN_LEVEL = ("out", "device", "resume", "best_metric")


def _arg(help: str, default=None, default_factory=None, **meta):
    """A TrainConfig field whose help text (and argparse details) become its CLI flag."""
    if default_factory is not None:
        return field(default_factory=default_factory, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """Settings of one run (or one stage); every field is a `sbert train` flag and a config key."""

    train: list[str] = _arg(
        "training data PATH[@SPLIT][[FROM:TO]][:OBJECTIVE], repeatable; OBJECTIVE is "
        "classification, regression, cosent, angle or both (default: every target the file "
        "has); SPLIT picks a SICK split, [FROM:TO] a range of its pairs. "
        "Default: the demo, the first 1,000 SICK TRAIN pairs",
        default_factory=list,
    )
    dev: list[str] = _arg(
        "dev data PATH[@SPLIT][[FROM:TO]], repeatable (default with the demo: SICK TRIAL and "
        "STS-B dev)",
        default_factory=list,
    )
    out: str = _arg(
        "output folder: final/, best/, checkpoints/, metrics.jsonl, curves.png", "runs/demo"
    )
    model: str = _arg(
        "model folder, packaged name, or a preset (bert-base, tiny...) to train from scratch",
        "all-MiniLM-L6-v2",
    )
    epochs: int = _arg("passes over the training data", 1)
    max_steps: int | None = _arg("stop after this many optimizer steps")
    limit: int | None = _arg("use only the first N pairs of each training file (demo: 1000)")
    batch_size: int = _arg("global batch: pairs per optimizer step, over all processes", 16)
    grad_accum: int = _arg("split each process's batch into this many micro-batches", 1)
    lr: float = _arg("peak learning rate of the encoder (SBERT: 2e-5)", 2e-5)
    # The three defaults below were chosen by measuring dev scores on the demo (README).
    head_lr: float = _arg("learning rate of the classifier head (fresh weights need more)", 0.1)
    weight_decay: float = _arg("AdamW weight decay on 2+-dimensional tensors", 0.01)
    warmup: float = _arg("fraction of the steps for linear warm-up (SBERT: 10%)", 0.1)
    max_grad_norm: float = _arg("clip the gradient norm to this", 1.0)
    dropout: float | None = _arg("dropout rate of the encoder (default: the checkpoint's)")
    loss_weights: list[float] = _arg(
        "weights of the classification, regression (and contrastive, default 1) losses, default "
        "0.1 1; with --balance uncertainty or gradnorm, their starting weights",
        default_factory=lambda: [0.1, 1.0],
    )
    regression_loss: RegressionLoss = _arg(
        "the regression objective: cosine-mse (SBERT), cosent (Su 2022) or angle (Li & Li "
        "2023); a file's spec PATH:cosent or PATH:angle chooses it for that file",
        "cosine-mse",
    )
    contrastive: bool = _arg(
        "add the multiple-negatives ranking objective on labelled NLI pairs (entailment pairs "
        "as positives, the batch's other hypotheses and its contradictions as negatives)",
        False,
    )
    balance: Balance = _arg(
        "how the objectives' losses are combined: fixed weights, uncertainty (Kendall et al. "
        "2018), pcgrad (Yu et al. 2020) or gradnorm (Chen et al. 2018)",
        "fixed",
    )
    grad_share_every: int | None = _arg(
        "log each objective's share of the encoder's gradient norm every N steps (one extra "
        "backward pass per objective on those steps)"
    )
    mix: Literal["round-robin", "proportional"] = _arg(
        "how to interleave several training files", "round-robin"
    )
    strategy: Strategy = _arg("transfer-learning strategy", "partial")
    freeze_layers: int | None = _arg(
        "freeze the lowest N encoder layers (strategies partial, full; default 0)"
    )
    layer_decay: float | None = _arg(
        "layer-wise learning-rate decay factor (strategy layer-decay; default 0.8)"
    )
    seed: int = _arg("seed of the sampler, dropout and head initialisation", 42)
    eval_every: int | None = _arg("also evaluate every N steps (default: after each epoch only)")
    save_every: int | None = _arg(
        "write a resumable checkpoint every N steps (default: at epoch ends)"
    )
    keep_checkpoints: int = _arg(
        "keep the newest K checkpoints (an older one is a fallback if the newest is damaged)", 2
    )
    best_metric: str | None = _arg(
        "dev metric that picks best/ across all stages (default: the "
        "first dev set's spearman, else accuracy)"
    )
    eval_batch_size: int = _arg("batch size for evaluation", 128)
    device: str | None = _arg("cpu, cuda, cuda:1 ... (default: cuda when available)")
    no_eval: bool = _arg("skip all evaluation", False)
    resume: bool = _arg("continue from the newest intact checkpoint in <out>/checkpoints", False)
    skip_nonfinite: bool = _arg(
        "skip a batch whose loss or gradient is NaN/Inf (counted) instead of stopping", False
    )
    max_seq_length: int | None = _arg("truncate sentences to N tokens (default: the model's)")
    precision: Literal["auto", "bf16", "fp32"] = _arg(
        "training matmuls: auto (bf16 autocast where bf16 is native: Ampere+ GPUs, CPUs with "
        "AVX-512-BF16 or AMX; else fp32), bf16 or fp32; evaluation "
        "is always fp32",
        "auto",
    )
    compile: bool = _arg("torch.compile the training step (pays off on long GPU runs)", False)
    stages: list[dict] = field(default_factory=list, metadata={"cli": False})


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, its type and choices read from the annotation."""
    p.add_argument("--config", help="TOML file with any of these settings, and [[stages]]")
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.metadata.get("cli") is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata["help"].replace("%", "%%")  # argparse formats help strings with %
        kind = _unwrap_optional(hints[f.name])
        if kind is bool:
            p.add_argument(flag, action="store_true", default=None, help=text)
        elif kind == list[float]:
            p.add_argument(flag, type=float, nargs="+", default=None, help=text)
        elif kind == list[str]:
            p.add_argument(flag, action="append", default=None, help=text)
        elif typing.get_origin(kind) is Literal:
            choices = typing.get_args(kind)
            p.add_argument(
                flag, choices=choices, default=None, help=f"{text} (default: {f.default})"
            )
        else:
            shown = "" if f.default is None else f" (default: {f.default})"
            p.add_argument(flag, type=kind, default=None, help=text + shown)


HINTS = typing.get_type_hints(TrainConfig)


def _fits(value, kind) -> bool:
    """Whether a config file's value has the type of its TrainConfig field."""
    kind = _unwrap_optional(kind)
    if typing.get_origin(kind) is Literal:
        return value in typing.get_args(kind)
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(kind, plural: bool = False) -> str:
    kind = _unwrap_optional(kind)
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(kind)))
    if typing.get_origin(kind) is list:
        return "a list of " + _describe(typing.get_args(kind)[0], plural=True)
    names = {int: "whole number", float: "number", str: "string", bool: "true or false"}
    return names[kind] + "s" if plural else "a " + names[kind]


def _unwrap_optional(kind):
    """`int | None` -> int; anything else as it is."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if type(None) in typing.get_args(kind) and len(args) == 1:
        return args[0]
    return kind


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the config file, then the flags given on the command line (which win
    over the config file's stage tables too)."""
    values: dict = read_config_file(Path(args.config)) if args.config else {}
    given = {f.name: getattr(args, f.name, None) for f in fields(TrainConfig)}
    given = {name: value for name, value in given.items() if value is not None}
    values["stages"] = [
        {k: v for k, v in stage.items() if k not in given} for stage in values.get("stages", [])
    ]
    return make_config({**values, **given})


def read_config_file(path: Path) -> dict:
    # Here, not at the top: every command imports this module for its flags, and a serving
    # machine (requirements-serve.txt) has no TOML reader on Python 3.10.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, as a package
        import tomli as tomllib

    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: unreadable config file ({e})") from None
    known = {f.name for f in fields(TrainConfig)}
    stages = values.get("stages", [])
    if not (isinstance(stages, list) and all(isinstance(t, dict) for t in stages)):
        raise ConfigError(f"{path}: stages are [[stages]] tables, not {stages!r}")
    for i, table in enumerate([values, *stages]):
        where = f"{path}: " + (f"stage {i - 1}: " if i else "")
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{where}unknown setting(s) {', '.join(unknown)}")
        for name, value in table.items():
            if name != "stages" and not _fits(value, HINTS[name]):
                raise ConfigError(f"{where}{name} = {value!r} is not {_describe(HINTS[name])}")
        if i == 0:
            continue
        fixed = [k for k in (*RUN_LEVEL, "stages") if k in table]
        if i > 1 and "model" in table:
            fixed.append("model")
        if fixed:
            raise ConfigError(
                f"{where}{', '.join(fixed)} cannot change between stages (set it at the top "
                f"level; each stage after the first starts from the previous stage's model)"
            )
    return values


def make_config(values: dict) -> TrainConfig:
    """A checked TrainConfig. The demo's data and limit apply only when no `train` is given
    anywhere: neither at the top level nor in any stage."""
    try:
        config = TrainConfig(**values)
    except TypeError as e:
        raise ConfigError(f"bad settings: {e}") from None
    if not config.train and not any(stage.get("train") for stage in config.stages):
        if not Path(DEMO_TRAIN[0].partition("@")[0]).is_file():
            raise ConfigError(
                f"the demo's data ({REPO_DATA}) ships with the source checkout, not with an "
                f"installed package: run from a clone of the repository, or pass --train"
            )
        config.train = list(DEMO_TRAIN)
        config.limit = DEMO_LIMIT if config.limit is None else config.limit
        config.dev = config.dev or list(DEMO_DEV)
    for stage in stage_configs(config):
        check(stage)
    return config


def check(config: TrainConfig) -> None:
    """Values no stage may have."""
    at_least_one = ("batch_size", "grad_accum", "epochs", "keep_checkpoints", "eval_batch_size")
    for name in at_least_one:
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("max_steps", "limit", "eval_every", "save_every", "max_seq_length",
                 "grad_share_every"):  # fmt: skip
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be at least 1 (leave it out for no limit)"
            )
    # A NaN or negative rate trains a model of NaNs without one failing step: refuse it here.
    positive = {"lr": config.lr, "head_lr": config.head_lr, "max_grad_norm": config.max_grad_norm}
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a number above 0, not {value}")
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        raise ConfigError(f"--weight-decay must be 0 or more, not {config.weight_decay}")
    if not 0 <= config.warmup <= 1:
        raise ConfigError(f"--warmup is a fraction of the steps, in [0, 1], not {config.warmup}")
    weights = config.loss_weights
    if len(weights) not in (2, 3) or not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ConfigError(
            f"--loss-weights takes 2 or 3 weights of 0 or more (classification, "
            f"regression, contrastive), not {config.loss_weights}"
        )
    if config.dropout is not None and not 0 <= config.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), not {config.dropout}")
    if not config.train:
        raise ConfigError("a stage without training data: give it `train`")


def stage_configs(config: TrainConfig) -> list[TrainConfig]:
    """One config per sequential stage (e.g. NLI classification, then STS regression): the
    top-level settings, overridden by the stage's table."""
    if not config.stages:
        return [config]
    base = {f.name: getattr(config, f.name) for f in fields(TrainConfig) if f.name != "stages"}
    try:
        return [TrainConfig(**{**base, **stage}) for stage in config.stages]
    except TypeError as e:
        raise ConfigError(f"bad stage settings: {e}") from None


SPEC_OBJECTIVES = ("classification", "regression", "both", *REGRESSION_LOSSES)


@dataclass(frozen=True)
class DataSpec:
    """PATH[@SPLIT][[FROM:TO]][:OBJECTIVE] taken apart, e.g.
    `data/sick/SICK_train_trial.txt@TRAIN[1000:]:regression`."""

    path: str
    split: str | None = None
    rows: slice | None = None  # pairs FROM:TO of the file (after the split), Python-style
    objective: str = "both"  # classification, regression, both, or a regression loss's name

    @property
    def name(self) -> str:
        """How logs and metrics name this data: file stem, split and rows."""
        rows = "" if self.rows is None else f"[{self.rows.start or ''}:{self.rows.stop or ''}]"
        return Path(self.path).stem + (f"-{self.split}" if self.split else "") + rows


_ROWS = re.compile(r"^(.*)\[(\d*):(\d*)\]$")


def parse_spec(spec: str) -> DataSpec:
    """PATH[@SPLIT][[FROM:TO]][:OBJECTIVE] -> DataSpec. OBJECTIVE `cosent` or `angle` trains
    the file's scores with that regression loss instead of the stage's."""
    path, objective = spec, "both"
    head, sep_objective, tail = spec.rpartition(":")
    if sep_objective and tail in SPEC_OBJECTIVES:
        path, objective = head, tail
    rows = None
    match = _ROWS.match(path)
    if match:
        path = match[1]
        rows = slice(int(match[2]) if match[2] else None, int(match[3]) if match[3] else None)
    path, sep, split = path.rpartition("@") if "@" in Path(path).name else (path, "", "")
    # "data.csv:foo" is no file; if "data.csv" is one, the user meant an objective.
    if (
        sep_objective
        and tail not in SPEC_OBJECTIVES
        and not Path(path).exists()
        and Path(parse_spec(head).path).is_file()
    ):
        raise ConfigError(
            f"{spec}: unknown objective {tail!r}; choose one of {', '.join(SPEC_OBJECTIVES)}"
        )
    return DataSpec(path, split or None, rows, objective)


def read_spec(spec: str | DataSpec, limit: int | None = None, format: str | None = None) -> PairSet:
    """The validated pairs a spec names: its split, then its rows, then the first `limit`."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.rows is None:
        return read_pairs(spec.path, format=format, split=spec.split, limit=limit)
    data = read_pairs(spec.path, format=format, split=spec.split, limit=spec.rows.stop)
    if spec.rows.stop is not None and len(data.pairs) < spec.rows.stop:
        have = f"{len(data.pairs)}" + (f" in split {spec.split}" if spec.split else "")
        raise DataError(
            spec.path, None, f"{spec.name} asks for pairs up to {spec.rows.stop}; there are {have}"
        )
    pairs = data.pairs[spec.rows][:limit]
    if not pairs:
        raise DataError(spec.path, None, f"no pairs in {spec.name}")
    return dataclasses.replace(data, pairs=pairs)
