"""A plan per stage: what one stage trains (its data, objectives and their weights, strategy, and
the model it starts from), read and checked once, before any stage trains.

A run's stages run in sequence, each from the previous stage's model (e.g. NLI classification,
then STS regression). `plan_stages` reads every stage's data up front, so that a bad file or a
setting that cannot work in the last stage fails before the first one trains. A fresh stage and
a resumed one build their model the same way, from the plans (`stage_model`), and "nothing to
train" is checked in one place (`check_trainable`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sbert.choices import REGRESSION_LOSSES
from sbert.data.readers import PairSet, shared_score_range
from sbert.data.specs import parse_spec, read_scored_spec, read_spec
from sbert.errors import ConfigError
from sbert.models.bert import PRESETS
from sbert.models.multitask import MultiTaskModel
from sbert.models.objectives import DEFAULT_OBJECTIVES, OBJECTIVES, nli_labels
from sbert.models.sentence import SentenceBert
from sbert.training.config import TrainConfig, stage_configs
from sbert.training.strategies import Trainable, trainable


@dataclass
class TrainSet:
    """One training file of a stage, and how it trains."""

    spec: str  # PATH[@SPLIT][[FROM:TO]][:COLUMNS][:OBJECTIVE] as given
    data: PairSet
    objective: str  # classification, regression or both
    regression: str  # the regression loss for this file's scores


@dataclass
class StagePlan:
    """What one stage trains, as checked: `config` is the stage's settings (the top level's,
    overridden by its [[stages]] table)."""

    index: int
    config: TrainConfig
    sets: list[TrainSet]
    dev: dict[str, PairSet]  # dev data by name (none with no_eval)
    objectives: tuple[str, ...]  # the objectives it trains, in the table's order
    weights: dict[str, float]  # each objective's loss weight (a balancer's starting weight)
    strategy: Trainable  # which parameters train, at which rates
    min_batch: int  # pieces a global batch is cut into: one per process and micro-batch

    def labels(self, previous: list[str]) -> list[str]:
        """The classifier's labels: sorted, or the previous model's order when the same."""
        sets = [s for s in self.sets if s.objective != "regression"]
        labels = sorted({x for s in sets for x in s.data.label_names})
        return list(previous) if set(previous) == set(labels) else labels


def plan_stages(config: TrainConfig, world: int) -> list[StagePlan]:
    """Every stage's plan, its data read and its settings checked (`world` processes)."""
    return [plan_stage(i, stage, world) for i, stage in enumerate(stage_configs(config))]


def plan_stage(index: int, config: TrainConfig, world: int) -> StagePlan:
    optional = tuple(n for n in OBJECTIVES if n not in DEFAULT_OBJECTIVES)
    asked = {"contrastive": config.contrastive}  # the flags that turn optional objectives on
    objectives = DEFAULT_OBJECTIVES + tuple(n for n in optional if asked.get(n))
    sets = read_train_sets(config)
    check_label_count(sets, objectives)
    return StagePlan(
        index,
        config,
        sets,
        {} if config.no_eval else read_dev_sets(config.dev),
        objectives,
        loss_weights(config, objectives),
        trainable(config.strategy, config.freeze_layers, config.layer_decay),
        micro_batches(config, world),
    )


def read_dev_sets(specs: list[str]) -> dict[str, PairSet]:
    """Dev data by the name its metrics carry; two specs of one name would share their rows."""
    dev: dict[str, PairSet] = {}
    for spec in specs:
        name = parse_spec(spec).name
        if name in dev:
            raise ConfigError(
                f"--dev {spec}: its metrics would be named {name}/..., as another dev set's: "
                f"give one of them a different file name"
            )
        dev[name] = read_scored_spec(spec)
    return dev


def read_train_sets(config: TrainConfig) -> list[TrainSet]:
    sets = []
    for spec in config.train:
        parsed = parse_spec(spec)
        objective, regression = parsed.objective, config.regression_loss
        if objective in REGRESSION_LOSSES:  # PATH:cosent = regression with CoSENT
            objective, regression = "regression", parsed.objective
        data = read_spec(parsed, config.limit)
        if not (data.has_labels or data.has_scores):
            raise ConfigError(
                f"{spec}: its pairs have no labels and no scores: nothing to train them on "
                f"(name a label= or score= column)"
            )
        sets.append(TrainSet(spec, data, objective, regression))
    return sets


def check_label_count(sets: list[TrainSet], objectives: tuple[str, ...]) -> None:
    """Refuse a classifier of one label: it would learn nothing (its softmax is always 1) and
    label every pair it is asked about with that label. One label is fine for the contrastive
    objective (entailment pairs are its positives)."""
    labelled = [s for s in sets if s.objective != "regression" and s.data.has_labels]
    labels = {x for s in labelled for x in s.data.label_names}
    if len(labels) == 1 and "contrastive" not in objectives:
        files = ", ".join(s.spec for s in labelled)
        raise ConfigError(
            f"{files}: every pair is labelled {labels.pop()!r}, and a classifier needs two "
            f"labels or more: add pairs of another label, train the file's scores only "
            f"(PATH:regression), or train these pairs as positives with --contrastive"
        )


def loss_weights(config: TrainConfig, objectives: tuple[str, ...]) -> dict[str, float]:
    """Each trained objective's weight: as given by name, else the table's default."""
    given = config.loss_weights
    unknown = sorted(set(given) - OBJECTIVES.keys())
    if unknown:
        raise ConfigError(
            f"--loss-weights: unknown objective(s) {', '.join(unknown)}; the objectives are "
            f"{', '.join(OBJECTIVES)}"
        )
    off = sorted(set(given) - set(objectives))
    if off:
        raise ConfigError(
            f"--loss-weights weighs {', '.join(off)}, which this stage does not train: add "
            f"--{off[0]}, or leave its weight out"
        )
    weights = {n: given.get(n, OBJECTIVES[n].weight) for n in objectives}
    if config.balance in ("uncertainty", "gradnorm") and min(weights.values()) <= 0:
        raise ConfigError(
            f"--balance {config.balance} learns the weights from --loss-weights as a start, "
            f"which must be above 0: {weights}"
        )
    return weights


def micro_batches(config: TrainConfig, world: int) -> int:
    """Pieces each global batch is cut into: one per process and micro-batch (a balancer that
    computes per-objective gradients itself works in one process only)."""
    if config.balance in ("pcgrad", "gradnorm") and world > 1:
        raise ConfigError(
            f"--balance {config.balance} computes each objective's gradient itself, which DDP "
            f"does not synchronise: run it in one process, or use fixed or uncertainty under "
            f"torchrun"
        )
    pieces = world * config.grad_accum
    if config.batch_size % pieces:
        raise ConfigError(
            f"batch size {config.batch_size} does not divide into {world} processes "
            f"x {config.grad_accum} micro-batches"
        )
    return pieces


def check_trainable(
    plan: StagePlan, model: MultiTaskModel, labels: list[str] | None = None
) -> None:
    """Fail up front on a stage that would fail, or silently train nothing, later: a file too
    small for one pair per process, a file that nothing it trains can use, a balancer or an
    objective that has nothing to work on. `labels`: its classifier's, where the stage's model
    is not built yet (`stage_labels`; default: `model`'s)."""
    labels = model.labels if labels is None else labels
    config, num_layers = plan.config, model.encoder.bert.config.num_layers
    if (config.freeze_layers or 0) > num_layers:
        raise ConfigError(
            f"--freeze-layers {config.freeze_layers}: the model has {num_layers} encoder layers"
        )
    encoder_frozen = plan.strategy.freeze_encoder or (
        plan.strategy.freeze_embeddings and plan.strategy.freeze_layers >= num_layers
    )
    for s in plan.sets:
        if len(s.data.pairs) < plan.min_batch:
            raise ConfigError(
                f"{s.spec}: {len(s.data.pairs)} pairs cannot fill one pair per process and "
                f"micro-batch ({plan.min_batch})"
            )
        if encoder_frozen and (s.objective == "regression" or not s.data.has_labels):
            raise ConfigError(
                f"{s.spec}: strategy {config.strategy} trains only the classifier, and this "
                f"file has no labels to train it on (choose another strategy, or leave the "
                f"file out)"
            )
    if encoder_frozen and config.balance != "fixed":
        raise ConfigError(
            f"--balance {config.balance} balances the objectives on the encoder, and strategy "
            f"{config.strategy} trains none of it"
        )
    if "contrastive" in plan.objectives:  # here, not mid-run, without an entailment label
        nli_labels(plan.labels(labels))
    for name, data in plan.dev.items():
        check_dev_set(name, data, bool(labels))


def check_dev_set(name: str, data: PairSet, classifier: bool) -> None:
    """Refuse a dev set that can give no metric (no evaluation, no best/, and no word why)."""
    if data.has_labels and classifier:
        return
    scores = {p.score for p in data.pairs}
    if data.has_scores and len(scores) > 1:
        return
    if data.has_scores:
        why = f"every gold score is {scores.pop():g}: Spearman and Pearson are undefined"
    elif data.has_labels:
        why = "its labels need a classifier, and this stage trains none"
    else:
        why = "its pairs have no scores and no labels"
    raise ConfigError(f"--dev {data.path} ({name}) gives no metric: {why}")


def starting_model(name: str) -> MultiTaskModel:
    """The model a run starts from: a checkpoint folder or packaged name (with its classifier,
    if it has one), or a fresh preset."""
    if name in PRESETS:
        return MultiTaskModel(SentenceBert.from_config(name))
    return MultiTaskModel.from_pretrained(name)


def stage_labels(plan: StagePlan, previous: list[str]) -> list[str]:
    """The labels of a stage's classifier: its own data's, else the previous model's."""
    return plan.labels(previous) or list(previous)


def stage_model(plan: StagePlan, previous: MultiTaskModel | None) -> MultiTaskModel:
    """This stage's model: the previous stage's (or the starting one), with a fresh classifier
    where the labels differ, this stage's dropout, sequence length and score scale.

    The stage's seed is set first: it draws a fresh classifier's initial weights.
    """
    config = plan.config
    torch.manual_seed(config.seed)
    model = previous if previous is not None else starting_model(config.model)
    labels = stage_labels(plan, model.labels)
    if model.labels != labels:
        if model.classifier is not None:
            print(f"note: new classifier for labels {labels} (the model had {model.labels})")
        model = MultiTaskModel(model.encoder, labels, model.score_scale)
    # The gold scale a regression stage trains on, saved so that predictions answer on it.
    regression = [s.data for s in plan.sets if s.objective != "classification"]
    regression = [data for data in regression if data.has_scores]
    if regression:  # None where the files' scales differ: a cosine fitted to both maps to neither
        model.score_scale = shared_score_range(regression)
    if config.dropout is not None:
        model.encoder.bert.set_dropout(config.dropout)
    if config.max_seq_length is not None:
        model.encoder.truncate(config.max_seq_length)
    return model
