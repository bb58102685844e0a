"""Run settings: one TrainConfig whose fields are the `sbert train` flags and the config-file
keys, the config file (TOML, with sequential [[stages]]), and data specs PATH[@SPLIT][:OBJECTIVE].
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import ConfigError
from .strategies import STRATEGIES

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
DEMO_TRAIN = [f"{REPO_DATA}/sick/SICK_train_trial.txt@TRAIN"]
DEMO_DEV = [f"{REPO_DATA}/sick/SICK_train_trial.txt@TRIAL", f"{REPO_DATA}/stsbenchmark/sts-dev.csv"]


def _arg(help: str, default=None, default_factory=None, **meta):
    """A TrainConfig field whose help text (and argparse details) become its CLI flag."""
    if default_factory is not None:
        return field(default_factory=default_factory, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """Settings of one run; every field is a `sbert train` flag and a config-file key."""

    train: list[str] = _arg(
        "training data PATH[@SPLIT][:OBJECTIVE], repeatable; OBJECTIVE is classification, "
        "regression or both (default: every target the file has); SPLIT picks a SICK split. "
        "Default: the demo, the first 1,000 SICK TRAIN pairs",
        default_factory=list,
        append=True,
    )
    dev: list[str] = _arg(
        "dev data PATH[@SPLIT], repeatable (default with the demo: SICK TRIAL and STS-B dev)",
        default_factory=list,
        append=True,
    )
    out: str = _arg("output folder: final/, best/, checkpoints/, metrics.jsonl, curves.png",
                    "runs/demo")  # fmt: skip
    model: str = _arg("model folder, packaged name, or a preset (bert-base, tiny...) to train "
                      "from scratch", "all-MiniLM-L6-v2")  # fmt: skip
    epochs: int = _arg("passes over the training data", 1)
    max_steps: int = _arg("stop after this many optimizer steps (0: no limit)", 0)
    limit: int = _arg("use only the first N pairs of each training file (0: all; demo: 1000)", 0)
    batch_size: int = _arg("global batch: pairs per optimizer step, over all processes", 16)
    grad_accum: int = _arg("split each process's batch into this many micro-batches", 1)
    lr: float = _arg("peak learning rate of the encoder (SBERT: 2e-5)", 2e-5)
    # The three defaults below were chosen by measuring dev scores on the demo (README).
    head_lr: float = _arg("learning rate of the classifier head (fresh weights need more)", 0.1)
    weight_decay: float = _arg("AdamW weight decay on 2+-dimensional tensors", 0.01)
    warmup: float = _arg("fraction of the steps for linear warm-up (SBERT: 10%)", 0.1)
    max_grad_norm: float = _arg("clip the gradient norm to this", 1.0)
    dropout: float = _arg("dropout rate of the encoder (-1: keep the checkpoint's)", -1.0)
    loss_weights: list[float] = _arg(
        "weights of the classification and regression losses", default_factory=lambda: [0.1, 1.0]
    )
    mix: str = _arg("how to interleave several training files", "round-robin",
                    choices=("round-robin", "proportional"))  # fmt: skip
    strategy: str = _arg("transfer-learning strategy", "partial", choices=STRATEGIES)
    freeze_layers: int = _arg("freeze the lowest N encoder layers (strategy partial)", -1)
    layer_decay: float = _arg("layer-wise learning-rate decay factor (strategy layer-decay)", -1.0)
    seed: int = _arg("seed of the sampler, dropout and head initialisation", 42)
    eval_every: int = _arg("also evaluate every N steps (0: after each epoch only)", 0)
    save_every: int = _arg("write a resumable checkpoint every N steps (0: at epoch ends)", 0)
    keep_checkpoints: int = _arg("keep the newest K checkpoints (an older one is a fallback if "
                                 "the newest is damaged)", 2)  # fmt: skip
    best_metric: str = _arg("dev metric that picks best/ (default: the first dev set's "
                            "spearman, else accuracy)", "")  # fmt: skip
    eval_batch_size: int = _arg("batch size for evaluation", 128)
    device: str = _arg("cpu, cuda, cuda:1 ... (default: cuda when available)", "")
    no_eval: bool = _arg("skip all evaluation", False)
    resume: bool = _arg("continue from the newest intact checkpoint in <out>/checkpoints", False)
    skip_nonfinite: bool = _arg("skip a batch whose loss or gradient is NaN/Inf (counted) instead "
                                "of stopping", False)  # fmt: skip
    max_seq_length: int = _arg("truncate sentences to N tokens (0: the model's own limit)", 0)
    precision: str = _arg("training matmuls: auto (bf16 autocast on CUDA, fp32 on CPU), bf16 "
                          "or fp32; evaluation is always fp32", "auto",
                          choices=("auto", "bf16", "fp32"))  # fmt: skip
    compile: bool = _arg("torch.compile the training step (pays off on long GPU runs)", False)
    stages: list[dict] = field(default_factory=list, metadata={"cli": False})


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file with any of these settings, and [[stages]]")
    for f in fields(TrainConfig):
        meta = f.metadata
        if meta.get("cli") is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = meta["help"].replace("%", "%%")  # argparse formats help strings with %
        if f.type == "bool":
            p.add_argument(flag, action="store_true", default=None, help=text)
        elif f.type == "list[float]":
            p.add_argument(flag, type=float, nargs=2, default=None, help=text)
        elif meta.get("append"):
            p.add_argument(flag, action="append", default=None, help=text)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            shown = "" if f.default in ("", -1) else f" (default: {f.default})"
            p.add_argument(flag, type=kind, default=None, choices=meta.get("choices"),
                           help=text + shown)  # fmt: skip


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the config file, then the flags given on the command line."""
    values: dict = {}
    if args.config:
        values.update(read_config_file(Path(args.config)))
    for f in fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return make_config(values)


def read_config_file(path: Path) -> dict:
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: unreadable config file ({e})") from None
    known = {f.name for f in fields(TrainConfig)}
    for table in [values, *values.get("stages", [])]:
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return values


def make_config(values: dict) -> TrainConfig:
    try:
        config = TrainConfig(**values)
    except TypeError as e:
        raise ConfigError(f"bad settings: {e}") from None
    if min(config.batch_size, config.grad_accum, config.epochs, config.keep_checkpoints) < 1:
        raise ConfigError("batch-size, grad-accum, epochs and keep-checkpoints must be at least 1")
    if not config.train:  # the demo: SBERT's two objectives on SICK, checked on SICK and STS-B
        config.train = list(DEMO_TRAIN)
        config.limit = config.limit or 1000
        config.dev = config.dev or list(DEMO_DEV)
    return config


def stage_configs(config: TrainConfig) -> list[TrainConfig]:
    """One config per sequential stage (e.g. NLI classification, then STS regression)."""
    if not config.stages:
        return [config]
    base = dataclasses.asdict(config)
    return [make_config({**base, "stages": [], **stage}) for stage in config.stages]


def parse_spec(spec: str) -> tuple[str, str | None, str]:
    """PATH[@SPLIT][:OBJECTIVE] -> (path, split, objective)."""
    path, objective = spec, "both"
    head, sep, tail = spec.rpartition(":")
    if sep and tail in ("classification", "regression", "both"):
        path, objective = head, tail
    path, sep, split = path.rpartition("@") if "@" in Path(path).name else (path, "", "")
    return path, (split or None), objective
