"""Training with the SBERT paper's defaults: sequential stages, evaluation, checkpoints, resume.

`run(config)` trains each stage with a `Trainer`, then writes <out>/final. A Trainer is built
by small setup functions (data, model, optimizer and schedule, parallel wrapper); `fit()` loops
over `step()`, which a benchmark can also call directly. The defaults are SBERT's (§4: AdamW
lr 2e-5, batch 16, linear warm-up over 10% of the steps) plus weight decay 0.01 and gradient
clipping at 1.0. Under torchrun the model trains with DistributedDataParallel (distributed.py);
everything else works unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from . import batching
from .balance import Balancer, make_balancer
from .batching import TokenizedPairs
from .checkpoints import (
    CHECKPOINTS,
    checkpoint_path,
    prune_checkpoints,
    resume_point,
    write_checkpoint,
)
from .choices import REGRESSION_LOSSES
from .config import TrainConfig, parse_spec, read_spec, stage_configs
from .data import PairSet, shared_score_range
from .distributed import Processes, local_rank, native_bf16, pick_device, start_processes
from .errors import CheckpointError, ConfigError, TrainingError
from .evaluate import evaluate
from .fileio import check_output_dir, remove_litter
from .model import SentenceBert
from .multitask import IGNORE_LABEL, MultiTaskModel
from .strategies import param_groups, trainable

METRICS_LOG = "metrics.jsonl"  # one JSON record per line: settings, steps, evaluations
LOCK = ".lock"
# What a run writes into --out: a folder holding any of these is an earlier run's.
RUN_FILES = (METRICS_LOG, CHECKPOINTS, "final", "best", "curves.png", LOCK)

# ---------------------------------------------------------------------------------------------
# The run: stages in sequence, each starting from the previous stage's model


def run(config: TrainConfig) -> dict:
    """Train every stage, then write <out>/final. Returns the last dev metrics."""
    out = Path(config.out)
    device = pick_device(config.device, local_rank())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    if out.exists():  # anything there besides an earlier run's files is someone's data
        check_output_dir(out, is_run_folder, "a training run's output")
    procs = start_processes(device)
    try:
        with output_lock(out, procs):
            return _run_stages(config, out, device, procs)
    finally:
        procs.stop()


def is_run_folder(folder: Path) -> bool:
    """True when `folder` holds an earlier run's output (or a run holds it now)."""
    return any((folder / name).exists() for name in RUN_FILES)


def _run_stages(config: TrainConfig, out: Path, device: torch.device, procs: Processes) -> dict:
    stages = stage_configs(config)
    if procs.is_main:  # what a killed run left half-written; we hold the lock, so it is stale
        for folder in (out, out / CHECKPOINTS):
            remove_litter(folder)
    if not config.resume and procs.is_main:
        (out / METRICS_LOG).unlink(missing_ok=True)  # a fresh run starts a fresh log
    resumed = resume_point(out, warn=procs.is_main) if config.resume else None
    if resumed is not None and procs.is_main:
        # The log goes back to where the checkpoint was taken: the steps after it are trained
        # again, and logging them twice would draw every curve back over itself.
        cut_log(out / METRICS_LOG, resumed[1].get("log_size"))
    progress = Progress(best_metric=config.best_metric)
    model = None
    last = None
    if resumed is not None:
        last, state = resumed
        progress = Progress.from_state(state, last)
        if progress.stage >= len(stages):
            raise CheckpointError(last, f"is from stage {progress.stage}, and this run has "
                                        f"{len(stages)} stage(s)")  # fmt: skip
        if progress.stage > 0:  # the checkpointed model as its stage had it; weights follow
            model = MultiTaskModel(load_encoder(stages[0].model), state["labels"])
            model.encoder.bert.set_dropout(state["dropout"])
            model.encoder.truncate(state["max_length"])
            model.score_scale = state["score_scale"]
    for later in stages[progress.stage + 1 :]:  # now, rather than after the earlier stages
        check_trainable(later, read_train_sets(later), micro_batches(later, procs))
    before, metrics, trainer = {}, {}, None
    for index in range(progress.stage, len(stages)):
        if trainer is not None:  # each stage starts from the previous stage's model
            progress, model = trainer.progress.next_stage(), trainer.model
            last, trainer = trainer.last_checkpoint, None  # its DDP wrapper lets go first
        trainer = Trainer(stages[index], out, device, procs, progress, model, last)
        if resumed is not None:
            trainer.restore(*resumed)
            resumed = None
        elif index == 0 and not stages[0].no_eval:
            before = trainer.evaluate_all()
        metrics = trainer.fit()
        model = trainer.model
    if procs.is_main:
        model.save(out / "final")
        if before and metrics:
            print(before_after_table(before, metrics))
        print(f"saved the final model to {out / 'final'}")
    procs.barrier()
    return metrics


@dataclass
class Progress:
    """Where a run is: saved whole in every checkpoint, restored whole on resume."""

    stage: int = 0
    step: int = 0  # optimizer steps taken in this stage
    epoch: int = 0
    position: int = 0  # batches of this epoch already trained
    skipped: int = 0  # batches skipped for a non-finite loss or gradient
    best: float = -math.inf  # the best value of best_metric so far, over all stages
    best_metric: str | None = None  # one metric for the whole run, named in the log

    @classmethod
    def from_state(cls, state: dict, path: Path) -> Progress:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in state]
        if missing or "balancer" not in state:
            raise CheckpointError(path, "written by an older sbert; start a new run")
        return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls)})

    def next_stage(self) -> Progress:
        return Progress(self.stage + 1, best=self.best, best_metric=self.best_metric)


# ---------------------------------------------------------------------------------------------
# Setup: each function builds one thing


@dataclass
class TrainSet:
    spec: str  # PATH[@SPLIT][[FROM:TO]][:OBJECTIVE] as given
    data: PairSet
    objective: str  # classification, regression or both
    regression: str  # the regression loss for this file's scores


def read_train_sets(config: TrainConfig) -> list[TrainSet]:
    sets = []
    for spec in config.train:
        parsed = parse_spec(spec)
        objective, regression = parsed.objective, config.regression_loss
        if objective in REGRESSION_LOSSES:  # PATH:cosent = regression with CoSENT
            objective, regression = "regression", parsed.objective
        sets.append(TrainSet(spec, read_spec(parsed, config.limit), objective, regression))
    return sets


def label_space(sets: list[TrainSet], previous: list[str]) -> list[str]:
    """The classifier's labels: sorted, or the previous model's order when they are the same."""
    labels = sorted({x for s in sets if s.objective != "regression" for x in s.data.label_names})
    return list(previous) if set(previous) == set(labels) else labels


def load_encoder(name: str) -> SentenceBert:
    """A checkpoint folder or packaged name, or a fresh preset."""
    from .bert import PRESETS

    if name in PRESETS:
        return SentenceBert.from_config(name)
    return SentenceBert.from_pretrained(name)


def setup_model(
    config: TrainConfig,
    sets: list[TrainSet],
    labels: list[str],
    previous: MultiTaskModel | None,
) -> MultiTaskModel:
    """This stage's model: the previous stage's (or the starting checkpoint, with its
    classifier if it has one), a fresh classifier where the labels differ, this stage's dropout
    and sequence length."""
    if previous is None:
        from .bert import PRESETS

        fresh = config.model in PRESETS
        previous = (
            MultiTaskModel(load_encoder(config.model))
            if fresh
            else MultiTaskModel.from_pretrained(config.model)
        )
    model = previous
    if labels and model.labels != labels:
        if model.classifier is not None:
            print(f"note: new classifier for labels {labels} (the model had {model.labels})")
        model = MultiTaskModel(previous.encoder, labels, previous.score_scale)
    # The gold scale a regression stage trains on, saved so that predictions answer on it.
    regression = [s.data for s in sets if s.objective != "classification" and s.data.has_scores]
    if regression:  # None where the files' scales differ: a cosine fitted to both maps to neither
        model.score_scale = shared_score_range(regression)
    if config.dropout is not None:
        model.encoder.bert.set_dropout(config.dropout)
    if config.max_seq_length is not None:
        model.encoder.truncate(config.max_seq_length)
    return model


def micro_batches(config: TrainConfig, procs: Processes) -> int:
    """Pieces each global batch is cut into: one per process and micro-batch."""
    pieces = procs.world * config.grad_accum
    if config.batch_size % pieces:
        raise ConfigError(
            f"batch size {config.batch_size} does not divide into {procs.world} processes "
            f"x {config.grad_accum} micro-batches"
        )
    return pieces


def check_trainable(config: TrainConfig, sets: list[TrainSet], min_batch: int) -> None:
    """Fail up front on what would fail (or silently train nothing) later."""
    for s in sets:
        if config.strategy == "frozen" and (s.objective == "regression" or not s.data.has_labels):
            raise ConfigError(
                f"{s.spec}: strategy frozen trains only the classifier, and this file has no "
                f"labels to train it on (choose another strategy, or leave the file out)"
            )
        if len(s.data.pairs) < min_batch:
            raise ConfigError(
                f"{s.spec}: {len(s.data.pairs)} pairs cannot fill one pair per process and "
                f"micro-batch ({min_batch})"
            )


def read_dev_sets(config: TrainConfig, model: MultiTaskModel) -> dict[str, TokenizedPairs]:
    index = {name: i for i, name in enumerate(model.labels)} or None
    sets = {}
    for spec in [] if config.no_eval else config.dev:
        parsed = parse_spec(spec)
        sets[parsed.name] = batching.tokenize_pairs(
            read_spec(parsed), model.encoder.tokenizer, index
        )
    return sets


def default_best_metric(dev_sets: dict[str, TokenizedPairs]) -> str | None:
    """The first dev set's Spearman, or its accuracy if it has no scores."""
    for name, data in dev_sets.items():
        return (
            f"{name}/spearman"
            if not all(math.isnan(s) for s in data.scores)
            else (f"{name}/accuracy")
        )
    return None


def setup_optimizer(
    config: TrainConfig, groups: list[dict], balancer: Balancer, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the strategy's parameter groups (and a balancer's learned weights, at the
    head's rate, undecayed), and the warm-up + linear decay schedule."""
    if list(balancer.parameters()):
        groups = [
            *groups,
            {"params": list(balancer.parameters()), "lr": config.head_lr, "weight_decay": 0.0},
        ]
    # Fused AdamW: one kernel for all tensors instead of a loop of small ops (CPU and CUDA).
    optimizer = torch.optim.AdamW(groups, fused=True)
    warmup = max(1, round(config.warmup * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: linear_warmup_decay(s, warmup, total_steps)
    )
    return optimizer, scheduler


def wrap_model(
    model: MultiTaskModel,
    config: TrainConfig,
    device: torch.device,
    procs: Processes,
    sets: list[TokenizedPairs],
) -> torch.nn.Module:
    """What a training step calls: the model, DDP-wrapped under torchrun, compiled if asked."""
    module = model
    if procs.world > 1:
        # A batch without labels leaves the classifier out of the loss; DDP must then be told
        # to look for unused parameters, or every process waits for its gradient forever.
        unused = model.classifier is not None and any(
            (s.labels == IGNORE_LABEL).any() for s in sets
        )
        module = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused,
        )
    if config.compile:  # batches vary in length: compile for dynamic shapes once
        module = torch.compile(module, dynamic=True)
    return module


LOSS_NAMES = ("classification", "regression", "contrastive")
DEV_METRICS = ("spearman", "pearson", "accuracy")  # what evaluate.evaluate returns


def setup_balancer(
    config: TrainConfig, model: MultiTaskModel, procs: Processes
) -> tuple[Balancer, list[torch.Tensor], list[torch.Tensor]]:
    """How this stage combines its objectives (--balance), with the parameters they share
    (the encoder's trainable ones: call it after the strategy has frozen the others) and the
    task-specific ones (the classifier)."""
    names = [n for n in LOSS_NAMES if n != "contrastive" or config.contrastive]
    weights = dict(zip(LOSS_NAMES, [*config.loss_weights, 1.0][:3], strict=True))
    if len(config.loss_weights) == 3 and not config.contrastive:
        raise ConfigError("a third --loss-weights value weighs the contrastive objective: add "
                          "--contrastive, or give two weights")  # fmt: skip
    if config.balance in ("uncertainty", "gradnorm") and min(weights.values()) <= 0:
        raise ConfigError(f"--balance {config.balance} learns the weights from --loss-weights "
                          f"as a start, which must be above 0: {config.loss_weights}")  # fmt: skip
    shared = [p for p in model.encoder.parameters() if p.requires_grad]
    heads = list(model.classifier.parameters()) if model.classifier is not None else []
    if config.balance in ("pcgrad", "gradnorm") and procs.world > 1:
        raise ConfigError(
            f"--balance {config.balance} computes each objective's gradient "
            f"itself, which DDP does not synchronise: run it in one process, or "
            f"use fixed or uncertainty under torchrun"
        )
    if config.balance != "fixed" and not shared:
        raise ConfigError(
            f"--balance {config.balance} balances the objectives on the encoder, "
            f"and strategy {config.strategy} trains none of it"
        )
    options = {}
    if config.balance == "gradnorm":  # norms on the last layer (Chen et al. §3.2): cheapest
        options["layer"] = [
            p for p in model.encoder.bert.layers[-1].parameters() if p.requires_grad
        ] or shared
    balancer = make_balancer(config.balance, names, weights, **options)
    return balancer, shared, heads


# ---------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """One stage: its data, model, optimizer and schedule, and the loop over steps.

    Args:
        progress: where the run is (a new stage's, carrying the best score so far).
        model: the previous stage's model (None: load `config.model`).
        last_checkpoint: the newest checkpoint written so far, named in errors.
    """

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        device: torch.device,
        procs: Processes,
        progress: Progress | None = None,
        model: MultiTaskModel | None = None,
        last_checkpoint: Path | None = None,
    ):
        self.config, self.out, self.device, self.procs = config, out, device, procs
        self.progress = progress or Progress()
        self.last_checkpoint = last_checkpoint
        self.min_batch = micro_batches(config, procs)
        sets = read_train_sets(config)
        check_trainable(config, sets, self.min_batch)
        self._setup_model(sets, model)
        self._setup_data(sets)
        plan = trainable(config.strategy, config.freeze_layers, config.layer_decay)
        groups = param_groups(self.model, plan, config.lr, config.head_lr, config.weight_decay)
        self.balancer, self.shared, self.heads = setup_balancer(config, self.model, procs)
        for s in sets:
            if not self.shared and (s.objective == "regression" or not s.data.has_labels):
                raise ConfigError(f"{s.spec}: nothing to train on this file: strategy "
                                  f"{config.strategy} freezes the whole encoder, and the file "
                                  f"has no labels for the classifier")  # fmt: skip
        self.balancer.to(device)
        self.optimizer, self.scheduler = setup_optimizer(
            config, groups, self.balancer, self.total_steps
        )
        trainable_count = sum(p.numel() for g in groups for p in g["params"])
        self.module = wrap_model(self.model, config, device, procs, self.train_sets)
        self.bf16 = config.precision == "bf16" or (
            config.precision == "auto" and native_bf16(device)
        )
        self.metrics: dict[str, float] = {}
        self.evaluated_at = -1
        self._announce(trainable_count)

    def _setup_model(self, sets: list[TrainSet], previous: MultiTaskModel | None) -> None:
        torch.manual_seed(self.config.seed)  # the classifier's initialisation
        labels = label_space(sets, previous.labels if previous else [])
        self.model = setup_model(self.config, sets, labels, previous).to(self.device)

    def _setup_data(self, sets: list[TrainSet]) -> None:
        """Tokenised training and dev sets, the metric that picks best/, the step count."""
        index = {name: i for i, name in enumerate(self.model.labels)}
        tokenizer = self.model.encoder.tokenizer
        if self.config.contrastive:
            self.model.nli_labels()  # fails here, not mid-run, without an entailment label
        self.regression = [s.regression for s in sets]
        self.train_sets = [
            batching.tokenize_pairs(s.data, tokenizer, index, s.objective) for s in sets
        ]
        self.dev_sets = read_dev_sets(self.config, self.model)
        if self.progress.best_metric is None:
            self.progress.best_metric = default_best_metric(self.dev_sets)
        elif self.progress.stage == 0 and self.dev_sets:
            given = [f"{name}/{m}" for name in self.dev_sets for m in DEV_METRICS]
            if self.progress.best_metric not in given:
                raise ConfigError(f"--best-metric {self.progress.best_metric} is not a dev "
                                  f"metric of this run: {', '.join(given)}")  # fmt: skip
        total = len(self.schedule(0)) * self.config.epochs
        self.total_steps = min(total, self.config.max_steps or total)

    def _announce(self, trainable_count: int) -> None:
        """Say what this stage trains: a line on the console, its settings in the log."""
        pairs = sum(map(len, self.train_sets))
        if self.procs.is_main:
            print(
                f"stage {self.progress.stage}: {pairs} training pairs, {self.total_steps} "
                f"steps, {trainable_count:,} trainable parameters, strategy "
                f"{self.config.strategy}, on {self.device}{' (bf16 autocast)' if self.bf16 else ''}"
            )
            self._say_best_metric()
        # What this stage runs with, as built (not only as asked).
        settings = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "stages"}
        settings["dropout"] = self.model.encoder.bert.config.dropout
        self.log(
            {
                "step": self.progress.step,
                "settings": settings,
                "pairs": pairs,
                "steps": self.total_steps,
                "trainable": trainable_count,
            }
        )

    def _say_best_metric(self) -> None:
        metric = self.progress.best_metric
        if not self.dev_sets:
            return
        if self.progress.stage == 0:
            print(f"best/ is the model with the highest {metric} over all stages")
        elif not any(metric.startswith(f"{name}/") for name in self.dev_sets):
            print(
                f"note: stage {self.progress.stage}'s dev sets do not give {metric}; its "
                f"evaluations do not compete for best/"
            )

    def schedule(self, epoch: int) -> list[tuple[int, list[int]]]:
        """This epoch's global batches, in order: the same for the same seed and epoch."""
        seed = self.config.seed * 1000 + epoch
        per_set = [
            batching.bucketed_batches(
                d.lengths, self.config.batch_size, seed + i, min_batch=self.min_batch
            )
            for i, d in enumerate(self.train_sets)
        ]
        return batching.mix(per_set, self.config.mix, seed)

    # -- the loop ---------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train to total_steps; evaluate and checkpoint on schedule. Returns the last metrics."""
        from tqdm.auto import tqdm

        p = self.progress
        bar = tqdm(
            total=self.total_steps,
            initial=p.step,
            desc=f"train (stage {p.stage})",
            unit="step",
            disable=not self.procs.is_main,
            dynamic_ncols=True,
        )
        with bar:  # closed on an error too, so that the error message starts its own line
            while p.step < self.total_steps:
                batches = self.schedule(p.epoch)
                for set_index, batch in batches[p.position :]:
                    losses = self.step(set_index, batch)
                    p.position += 1
                    self._after_step(losses, bar)
                    if p.step >= self.total_steps:
                        break
                if p.position == len(batches):
                    self._end_epoch()
        if self.evaluated_at != p.step:  # stopped by max_steps inside an epoch
            self.evaluate_all()
        if self.procs.is_main:
            from .plot import plot_curves

            plot_curves(self.out / METRICS_LOG, self.out / "curves.png")
        return self.metrics

    def _after_step(self, losses: dict[str, float], bar) -> None:
        """Show and log the step; evaluate or checkpoint where their schedule says."""
        config, p = self.config, self.progress
        bar.update(1)
        steps_per_s = bar.format_dict["rate"] or 0.0
        bar.set_postfix(
            loss=f"{losses['loss']:.4f}", pairs_s=f"{steps_per_s * config.batch_size:.0f}"
        )
        self.log({"step": p.step, "epoch": p.epoch, **losses})
        if config.eval_every and p.step % config.eval_every == 0:
            self.evaluate_all()
        if config.save_every and p.step % config.save_every == 0:
            self.save_checkpoint()

    def _end_epoch(self) -> None:
        """Every epoch ends evaluated and checkpointed (unless that step just was)."""
        p, save_every = self.progress, self.config.save_every
        p.epoch, p.position = p.epoch + 1, 0
        if self.evaluated_at != p.step:
            self.evaluate_all()
        if not save_every or p.step % save_every:
            self.save_checkpoint()

    def step(self, set_index: int, batch: list[int]) -> dict[str, float]:
        """One optimizer step on one global batch: this process's share, in micro-batches."""
        try:
            return self._step(set_index, batch)
        except torch.OutOfMemoryError:
            raise self._out_of_memory(set_index, batch) from None

    def _step(self, set_index: int, batch: list[int]) -> dict[str, float]:
        config, data = self.config, self.train_sets[set_index]
        share = batching.shard(batch, self.procs.rank, self.procs.world)
        micro = math.ceil(len(share) / config.grad_accum)
        parts = [share[i : i + micro] for i in range(0, len(share), micro)]
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        for i, part in enumerate(parts):
            tensors = batching.collate(data, part, self.model.encoder.tokenizer.pad_id)
            if self.device.type == "cuda":  # pinned pages let the copy overlap with compute
                tensors = {k: v.pin_memory() for k, v in tensors.items()}
            tensors = {k: v.to(self.device, non_blocking=True) for k, v in tensors.items()}
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            sync = i == len(parts) - 1 or self.procs.world == 1
            with contextlib.nullcontext() if sync else self.module.no_sync(), self.autocast():
                output = self.module(
                    **tensors, regression=self.regression[set_index], contrastive=config.contrastive
                )
            losses = output.losses
            total = self.balancer.total(losses)
            # Under DDP one process must not stop alone (the others would wait for it forever):
            # its NaN reaches every process through the gradient all-reduce, and all of them
            # then stop together on the gradient-norm check below.
            if self.procs.world == 1 and not torch.isfinite(total):
                return self._nonfinite("loss", total)
            share_of_batch = len(part) / len(share)
            logs = self.balancer.backward(
                losses,
                self.shared,
                self.heads,
                scale=share_of_batch,
                report=sync and self._report_shares(),
            )
            for name, value in {"loss": total, **losses}.items():
                totals[name] = totals.get(name, 0.0) + value.detach() * share_of_batch
        if self.procs.world > 1:  # the same all-reduces on every process, even for an
            for p in self.balancer.parameters():  # objective absent from this one's share
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            self.procs.average(p.grad for p in self.balancer.parameters())
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        if not torch.isfinite(norm):  # a finite loss can still back-propagate an Inf or a NaN
            return self._nonfinite("gradient norm", norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        extra = {k: v for k, v in logs.items() if k != "loss"}  # learned weights, grad shares
        return {**{name: float(value) for name, value in totals.items()}, **extra}

    def _report_shares(self) -> bool:
        every = self.config.grad_share_every
        return bool(every) and (self.progress.step + 1) % every == 0

    def _nonfinite(self, what: str, value: torch.Tensor) -> dict[str, float]:
        """Stop at a NaN/Inf loss or gradient; with --skip-nonfinite, skip the batch and count it.

        The step still counts, so that the schedule and the batches stay those of a clean run.
        """
        p = self.progress
        self.optimizer.zero_grad(set_to_none=True)
        where = f"step {p.step + 1}" + (f" of stage {p.stage}" if p.stage else "")
        value = float(value.detach())
        if not self.config.skip_nonfinite:
            raise TrainingError(
                f"non-finite {what} ({value}) at {where}; {self._kept()} "
                f"(--skip-nonfinite skips such batches)"
            )
        p.skipped += 1
        p.step += 1
        self.scheduler.step()
        if self.procs.is_main:
            from tqdm.auto import tqdm

            tqdm.write(
                f"warning: skipped {where}: non-finite {what} ({value}); "
                f"{p.skipped} skipped so far",
                file=sys.stderr,
            )
        return {"loss": float("nan"), "skipped": p.skipped, "nonfinite": what}

    def _out_of_memory(self, set_index: int, batch: list[int]) -> TrainingError:
        """Name the two knobs of a step's memory: pairs per micro-batch, and their length."""
        config, lengths = self.config, self.train_sets[set_index].lengths
        pairs = math.ceil(len(batch) / self.min_batch)
        return TrainingError(
            f"out of memory at step {self.progress.step + 1} on micro-batches of {pairs} pairs "
            f"x {max(lengths[i] for i in batch)} tokens: lower --batch-size (now "
            f"{config.batch_size}) or raise --grad-accum (now {config.grad_accum}), or lower "
            f"--max-seq-length (now {self.model.encoder.tokenizer.max_length})"
        )

    def _kept(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is kept: {self.last_checkpoint}"

    def autocast(self):
        """bf16 autocast for the training step where asked (auto: where bf16 is native)."""
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- evaluation, logging, checkpoints ---------------------------------------------------

    def evaluate_all(self) -> dict[str, float]:
        """Dev metrics on rank 0 (the others wait); a new best of best_metric saves <out>/best."""
        p, metrics = self.progress, {}
        self.evaluated_at = p.step
        if self.procs.is_main and self.dev_sets:
            for name, data in self.dev_sets.items():
                try:
                    result = evaluate(self.model, data, self.config.eval_batch_size, self.device)
                except torch.OutOfMemoryError:
                    raise TrainingError(
                        f"out of memory evaluating {name}: lower --eval-batch-size (now "
                        f"{self.config.eval_batch_size}) or --max-seq-length (now "
                        f"{self.model.encoder.tokenizer.max_length})"
                    ) from None
                metrics.update({f"{name}/{k}": v for k, v in result.items() if k != "pairs"})
            self.log({"step": p.step, "epoch": p.epoch, **metrics})
            value = metrics.get(p.best_metric)
            if p.step > 0 and value is not None and value > p.best:
                p.best = value
                self.model.save(self.out / "best")
                self.log({"step": p.step, "best": p.best_metric, "value": value})
        self.procs.barrier()
        self.metrics = metrics
        return metrics

    def log(self, record: dict) -> None:
        if not self.procs.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / METRICS_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": self.progress.stage, **record}) + "\n")

    def state(self) -> dict:
        """Everything a resumed run needs: the progress, the tensors' state, every RNG."""
        return {
            **dataclasses.asdict(self.progress),
            "model": self.model.state_dict(),
            "labels": self.model.labels,
            # What earlier stages set on the model beside its weights, for a resumed stage:
            "dropout": self.model.encoder.bert.config.dropout,
            "max_length": self.model.encoder.tokenizer.max_length,
            "score_scale": self.model.score_scale,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "log_size": _size(self.out / METRICS_LOG),  # what a resumed run keeps of the log
        }

    def save_checkpoint(self) -> None:
        """A new checkpoint folder under <out>/checkpoints, written atomically; then only the
        newest `keep_checkpoints` are kept."""
        if self.procs.is_main:
            path = checkpoint_path(self.out, self.progress.stage, self.progress.step)
            try:
                write_checkpoint(path, self.state())
            except OSError as e:  # a full disk: the temporary folder is gone, the others intact
                raise TrainingError(
                    f"{path}: cannot write the checkpoint ({e.strerror or e}); {self._kept()}"
                ) from None
            self.last_checkpoint = path
            prune_checkpoints(self.out, path, self.config.keep_checkpoints)
        self.procs.barrier()

    def restore(self, path: Path, state: dict) -> None:
        """Continue from a checkpoint's state (see `state`)."""
        if state["labels"] != self.model.labels:
            raise CheckpointError(path, "labels differ from this run's data")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:  # another --model or preset than the checkpoint's
            raise CheckpointError(path, f"does not fit this run's model ({e})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.balancer.load_state_dict(state["balancer"])
        self.progress = Progress.from_state(state, path)
        self.last_checkpoint = path
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.procs.is_main:
            p = self.progress
            print(f"resumed stage {p.stage} at step {p.step} (epoch {p.epoch}) from {path}")


# ---------------------------------------------------------------------------------------------
# Small helpers


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def cut_log(path: Path, size: int | None) -> None:
    """Cut the append-only log back to its first `size` bytes (None: a checkpoint older than
    this record; a log shorter than `size`, e.g. deleted by hand, is left as it is)."""
    if size is not None and _size(path) > size:
        os.truncate(path, size)


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: 0 -> 1 over `warmup` steps, then 1 -> 0 at `total` (SBERT §4)."""
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


@contextlib.contextmanager
def output_lock(out: Path, procs: Processes):
    """Refuse a second run on the same output folder: it would interleave their files."""
    import fcntl

    if not procs.is_main:
        yield
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with open(out / LOCK, "a+") as lock:  # "a+": opening must not erase the holder's pid
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "?"
                raise TrainingError(
                    f"{out}: another run (process {holder}) is using this output folder; wait "
                    f"for it to end or choose another --out"
                ) from None
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            yield
    except BaseException:
        # A run that failed before writing anything (bad data, bad settings) leaves no folder.
        if created and [p.name for p in out.iterdir()] == [LOCK]:
            shutil.rmtree(out, ignore_errors=True)
        raise


def before_after_table(before: dict, after: dict) -> str:
    rows = [f"{'dev metric':<32} {'before':>8} {'after':>8}"]
    for key in after:
        if key in before:
            rows.append(f"{key:<32} {before[key]:8.2f} {after[key]:8.2f}")
    return "\n".join(rows)
