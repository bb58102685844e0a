"""Run settings: one TrainConfig whose fields are the `sbert train` flags and the config-file
keys (sbert/options.py builds both from the types), and the config file's sequential
[[stages]] tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from sbert.choices import Balance, RegressionLoss, Strategy
from sbert.errors import ConfigError
from sbert.folders import REPO_DATA
from sbert.options import check_ranges, check_table, finite, option, read_toml

DEMO_TRAIN = [f"{REPO_DATA}/sick/SICK_train_trial.txt@TRAIN"]
DEMO_DEV = [f"{REPO_DATA}/sick/SICK_train_trial.txt@TRIAL", f"{REPO_DATA}/stsbenchmark/sts-dev.csv"]
DEMO_LIMIT = 1000

# Settings of the whole run, refused in a [[stages]] table: one output folder, one device, one
# resume, one metric that picks best/ across all stages.
RUN_LEVEL = ("out", "device", "resume", "best_metric")


@dataclass
class TrainConfig:
    """Settings of one run (or one stage); every field is a `sbert train` flag and a config key."""

    train: list[str] = option(
        "training data PATH[@SPLIT][[FROM:TO]][:COLUMNS][:OBJECTIVE], repeatable; OBJECTIVE is "
        "classification, regression, cosent, angle or both (default: every target the file "
        "has); SPLIT picks a SICK split, [FROM:TO] a range of its pairs. "
        "Default: the demo, the first 1,000 SICK TRAIN pairs",
        default_factory=list,
    )
    dev: list[str] = option(
        "dev data PATH[@SPLIT][[FROM:TO]][:COLUMNS][:OBJECTIVE], repeatable (default with the "
        "demo: SICK TRIAL and STS-B dev)",
        default_factory=list,
    )
    out: str = option(
        "output folder: final/, best/, checkpoints/, metrics.jsonl, curves.png", "runs/demo"
    )
    model: str = option(
        "model folder, packaged name, or a preset (bert-base, tiny...) to train from scratch",
        "all-MiniLM-L6-v2",
    )
    epochs: int = option("passes over the training data", 1)
    max_steps: int | None = option("stop after this many optimizer steps")
    limit: int | None = option("use only the first N pairs of each training file (demo: 1000)")
    batch_size: int = option("global batch: pairs per optimizer step, over all processes", 16)
    grad_accum: int = option("split each process's batch into this many micro-batches", 1)
    lr: float = option("peak learning rate of the encoder (SBERT: 2e-5)", 2e-5)
    # The three defaults below were chosen by measuring dev scores on the demo
    # (docs/training.md, the demo's defaults and how they were chosen).
    head_lr: float = option("learning rate of the classifier head (fresh weights need more)", 0.1)
    weight_decay: float = option("AdamW weight decay on 2+-dimensional tensors", 0.01)
    warmup: float = option("fraction of the steps for linear warm-up (SBERT: 10%)", 0.1)
    max_grad_norm: float = option("clip the gradient norm to this", 1.0)
    dropout: float | None = option("dropout rate of the encoder (default: the checkpoint's)")
    loss_weights: dict[str, float] = option(
        "objectives' loss weights by name, e.g. classification=0.1,regression=1; an objective "
        "not named keeps its default (classification 0.1, regression 1, contrastive 1); with "
        "--balance uncertainty or gradnorm, the starting weights",
        default_factory=dict,
    )
    regression_loss: RegressionLoss = option(
        "the regression objective: cosine-mse (SBERT), cosent (Su 2022) or angle (Li & Li "
        "2023); a file's spec PATH:cosent or PATH:angle chooses it for that file",
        "cosine-mse",
    )
    contrastive: bool = option(
        "add the multiple-negatives ranking objective on labelled NLI pairs (entailment pairs "
        "as positives, the batch's other hypotheses and its contradictions as negatives)",
        False,
    )
    balance: Balance = option(
        "how the objectives' losses are combined: fixed weights, uncertainty (Kendall et al. "
        "2018), pcgrad (Yu et al. 2020) or gradnorm (Chen et al. 2018)",
        "fixed",
    )
    grad_share_every: int | None = option(
        "log each objective's share of the encoder's gradient norm every N steps (one extra "
        "backward pass per objective on those steps)"
    )
    mix: Literal["round-robin", "proportional"] = option(
        "how to interleave several training files", "round-robin"
    )
    strategy: Strategy = option("transfer-learning strategy", "partial")
    freeze_layers: int | None = option(
        "freeze the lowest N encoder layers (strategies partial, full; default 0)"
    )
    layer_decay: float | None = option(
        "layer-wise learning-rate decay factor (strategy layer-decay; default 0.8)"
    )
    seed: int = option(
        "seed of the sampler, dropout and head initialisation", 42, minimum=0, maximum=2**63 - 1
    )  # torch.manual_seed's range, from 0
    eval_every: int | None = option("also evaluate every N steps (default: after each epoch only)")
    save_every: int | None = option(
        "write a resumable checkpoint every N steps (default: at epoch ends)"
    )
    keep_checkpoints: int = option(
        "keep the newest K checkpoints (an older one is a fallback if the newest is damaged)", 2
    )
    best_metric: str | None = option(
        "dev metric that picks best/ across all stages (default: the "
        "first dev set's spearman, else accuracy)"
    )
    log_every: int | None = option(
        "read the steps' losses back from the device, log and check them every N steps "
        "(default: about once a second; every 20 steps under torchrun)"
    )
    eval_batch_size: int = option("batch size for evaluation", 128)
    device: str | None = option("cpu, cuda, cuda:1 ... (default: cuda when available)")
    no_eval: bool = option("skip all evaluation", False)
    resume: bool = option("continue from the newest intact checkpoint in <out>/checkpoints", False)
    skip_nonfinite: bool = option(
        "skip a batch whose loss or gradient is NaN/Inf (counted) instead of stopping", False
    )
    max_seq_length: int | None = option("truncate sentences to N tokens (default: the model's)")
    precision: Literal["auto", "bf16", "fp32"] = option(
        "training matmuls: auto (bf16 autocast where bf16 is native: Ampere+ GPUs, CPUs with "
        "AVX-512-BF16 or AMX; else fp32), bf16 or fp32; evaluation "
        "is always fp32",
        "auto",
    )
    compile: bool = option("torch.compile the training step (pays off on long GPU runs)", False)
    stages: list[dict] = option("[[stages]] tables (config file only)", flag=False,
                                default_factory=list)  # fmt: skip


def config_from_args(values: dict, given: dict) -> TrainConfig:
    """A config file's `values`, then the flags `given` on the command line, which win over the
    file's stage tables too."""
    values = dict(values)
    values["stages"] = [
        {k: v for k, v in stage.items() if k not in given} for stage in values.get("stages", [])
    ]
    return make_config({**values, **given})


def read_config_file(path: Path) -> dict:
    """A config file's settings, its [[stages]] tables checked like the top level."""
    values = read_toml(path)
    stages = values.get("stages", [])
    if not (isinstance(stages, list) and all(isinstance(t, dict) for t in stages)):
        raise ConfigError(f"{path}: stages are [[stages]] tables, not {stages!r}")
    for i, table in enumerate([values, *stages]):
        where = f"{path}: " + (f"stage {i - 1}: " if i else "")
        check_table({k: v for k, v in table.items() if k != "stages"}, TrainConfig, where)
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
    check_stages(config)
    return config


def check_stages(config: TrainConfig) -> None:
    """`check` every stage's settings, an error naming the stage where the run has several."""
    for i, stage in enumerate(stage_configs(config)):
        try:
            check(stage)
        except ConfigError as e:
            if not config.stages:
                raise
            raise ConfigError(f"stage {i} ([[stages]] table {i + 1}): {e}") from None


def check(config: TrainConfig) -> None:
    """Values no stage may have."""
    check_ranges(TrainConfig, vars(config))
    at_least_one = ("batch_size", "grad_accum", "epochs", "keep_checkpoints", "eval_batch_size")
    for name in at_least_one:
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("max_steps", "limit", "eval_every", "save_every", "max_seq_length",
                 "grad_share_every", "log_every"):  # fmt: skip
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be at least 1 (leave it out for no limit)"
            )
    # A NaN or negative rate trains a model of NaNs without one failing step: refuse it here.
    for name in ("lr", "head_lr", "max_grad_norm"):
        finite(name, getattr(config, name), above=True)
    for name in ("lr", "head_lr"):
        check_rate(name, getattr(config, name))
    finite("weight_decay", config.weight_decay)
    if not 0 <= config.warmup <= 1:
        raise ConfigError(f"--warmup is a fraction of the steps, in [0, 1], not {config.warmup}")
    for name, weight in config.loss_weights.items():
        if not (math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"--loss-weights {name}={weight}: a weight is a number of 0 or more")
    if config.dropout is not None and not 0 <= config.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), not {config.dropout}")
    if not config.train:
        raise ConfigError("a stage without training data: give it `train`")


# A learning rate of 1 or more is refused: AdamW moves every weight by up to the rate each step,
# so such a run only ever diverges (a mistyped 2e5 for 2e-5 reached weights of 2e7 in three
# steps). Fine-tuning uses 1e-5 to 1e-4, training from scratch up to ~1e-3, a fresh head 0.1.
MAX_RATE = 1.0


def check_rate(name: str, rate: float) -> None:
    """Refuse a learning rate of MAX_RATE or more, suggesting the rate a sign slip would give."""
    if rate < MAX_RATE:
        return
    mantissa, _, exponent = f"{rate:e}".partition("e")
    hint = ""
    if int(exponent) > 0:
        hint = f"; did you mean {float(f'{mantissa}e-{int(exponent)}'):g}?"
    raise ConfigError(
        f"--{name.replace('_', '-')} {rate:g} is not a learning rate that trains (AdamW moves "
        f"every weight by up to the rate each step; it must be below {MAX_RATE:g}, SBERT "
        f"fine-tunes at 2e-05){hint}"
    )


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
