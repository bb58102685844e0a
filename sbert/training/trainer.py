"""The trainer of one stage, with the SBERT paper's defaults: set-up, the loop, evaluation and
checkpoints.

A `Trainer` is built from a stage's plan (sbert/training/plan.py) and its model by small setup
functions (data, optimizer and schedule, balancer, parallel wrapper); `fit()` loops over
`step()`, which a benchmark can also call directly. The defaults are SBERT's (§4: AdamW lr 2e-5,
batch 16, linear warm-up over 10% of the steps) plus weight decay 0.01 and gradient clipping at
1.0. Under torchrun the model trains with DistributedDataParallel (distributed.py); everything
else works unchanged. `run` (run.py) strings the stages together.

A step reads nothing back to the host: its losses stay tensors on the device, and its one
non-finite check (loss or gradient norm) is a device flag that makes fused AdamW skip the update
(`found_inf`, as a gradient scaler uses it). `fit` reads the steps' values every `--log-every`
steps (default: about once a second), and before every evaluation and checkpoint; only then are
they logged, shown and checked, so a GPU never waits for the host between steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sbert.data import batching
from sbert.data.batching import IGNORE_LABEL, TokenizedPairs
from sbert.errors import CheckpointError, ConfigError, TrainingError
from sbert.models.device import native_bf16, to_device
from sbert.models.multitask import MultiTaskModel
from sbert.models.objectives import DEV_METRICS, objectives_fed
from sbert.training.balance import Balancer, make_balancer
from sbert.training.checkpoints import (
    checkpoint_path,
    cut_log,
    prune_checkpoints,
    write_checkpoint,
)
from sbert.training.config import TrainConfig
from sbert.training.distributed import Processes
from sbert.training.evaluate import evaluate
from sbert.training.plan import StagePlan, check_trainable, plan_stage, stage_model
from sbert.training.strategies import param_groups

METRICS_LOG = "metrics.jsonl"  # one JSON record per line: settings, steps, evaluations
# Without --log-every, the steps are read back about this often (seconds of training); under
# torchrun every LOG_STEPS_DISTRIBUTED steps instead, so that all processes read (and stop, if
# a run diverged) at the same steps.
LOG_SECONDS = 1.0
LOG_STEPS_DISTRIBUTED = 20
# A run has diverged, and stops even with --skip-nonfinite, when this many steps in a row were
# non-finite, or when a weight grew this many times past its largest start value (at least 1):
# fine-tuning never does either (docs/guarantees.md).
NONFINITE_IN_A_ROW = 10
WEIGHT_GROWTH = 1000.0
# Step codes of the device flag (Trainer.step's "nonfinite").
FINITE, NONFINITE_LOSS, NONFINITE_GRADIENT = 0, 1, 2


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
        progress = cls(**{f.name: state[f.name] for f in dataclasses.fields(cls)})
        counts = (progress.stage, progress.step, progress.epoch, progress.position,
                  progress.skipped)  # fmt: skip
        if (
            not all(type(x) is int and x >= 0 for x in counts)
            or not isinstance(progress.best, float)
            or not isinstance(progress.best_metric, (str, type(None)))
        ):
            raise CheckpointError(path, "its progress is not a run's (counts, best value)")
        return progress

    def next_stage(self) -> Progress:
        return Progress(self.stage + 1, best=self.best, best_metric=self.best_metric)


# Settings a resumed run may change: where it runs and what it logs, evaluates and keeps, and
# when it stops (more epochs or steps stretch the learning-rate schedule from there on).
RESUME_MAY_CHANGE = frozenset({
    "out", "device", "resume", "epochs", "max_steps", "dev", "no_eval", "eval_every",
    "eval_batch_size", "best_metric", "save_every", "keep_checkpoints", "log_every",
    "grad_share_every", "skip_nonfinite", "precision", "compile", "grad_accum",
})  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Setup: each function builds one thing


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
    warmup = round(config.warmup * total_steps)  # 0: the full rate from the first step
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


def setup_balancer(
    plan: StagePlan, model: MultiTaskModel
) -> tuple[Balancer, list[torch.Tensor], list[torch.Tensor]]:
    """How this stage combines its objectives (--balance), with the parameters they share
    (the encoder's trainable ones: call it after the strategy has frozen the others) and the
    task-specific ones (the classifier)."""
    shared = [p for p in model.encoder.parameters() if p.requires_grad]
    heads = list(model.classifier.parameters()) if model.classifier is not None else []
    options = {}
    if plan.config.balance == "gradnorm":  # norms on the last layer (Chen et al. §3.2): cheapest
        last = [p for p in model.encoder.bert.layers[-1].parameters() if p.requires_grad]
        options["layer"] = last or shared
    balancer = make_balancer(plan.config.balance, plan.objectives, plan.weights, **options)
    return balancer, shared, heads


# ---------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    """One stage: its data, model, optimizer and schedule, and the loop over steps.

    Args:
        plan: what the stage trains (sbert/training/plan.py).
        model: the stage's model (`plan.stage_model`), moved to `device` here.
        progress: where the run is (a new stage's, carrying the best score so far).
        last_checkpoint: the newest checkpoint written so far, named in errors.
    """

    def __init__(
        self,
        plan: StagePlan,
        model: MultiTaskModel,
        out: Path,
        device: torch.device,
        procs: Processes,
        progress: Progress | None = None,
        last_checkpoint: Path | None = None,
        announce: bool = True,
    ):
        self.plan, self.config = plan, plan.config
        self.out, self.device, self.procs = out, device, procs
        self.progress = progress or Progress()
        self.last_checkpoint = last_checkpoint
        self.model = model.to(device)
        self._setup_data()
        config = self.config
        groups = param_groups(self.model, plan.strategy, config.lr, config.head_lr,
                              config.weight_decay)  # fmt: skip
        self.balancer, self.shared, self.heads = setup_balancer(plan, self.model)
        self.balancer.to(device)
        self.optimizer, self.scheduler = setup_optimizer(
            config, groups, self.balancer, self.total_steps
        )
        self.module = wrap_model(self.model, config, device, procs, self.train_sets)
        self.bf16 = config.precision == "bf16" or (
            config.precision == "auto" and native_bf16(device)
        )
        self.metrics: dict[str, float] = {}
        self.evaluated_at = -1
        self.pending: list[dict] = []  # steps taken, not yet read back to the host
        self.read_at = time.monotonic()
        self.nonfinite_in_a_row = 0
        self.weight_limit = WEIGHT_GROWTH * max(1.0, self._largest_weight())
        self.trainable = sum(p.numel() for g in groups for p in g["params"])
        if announce:  # a resumed stage announces once `restore` has taken its checkpoint
            self._announce()

    @classmethod
    def from_config(
        cls,
        config: TrainConfig,
        out: Path,
        device: torch.device,
        procs: Processes,
        model: MultiTaskModel | None = None,
    ) -> Trainer:
        """The trainer of a one-stage run (benchmarks, tests): its plan, its model (`model`,
        else `config.model`), checked as `run` checks them."""
        plan = plan_stage(0, config, procs.world)
        model = stage_model(plan, model)
        check_trainable(plan, model)
        return cls(plan, model, out, device, procs)

    def _setup_data(self) -> None:
        """Tokenised training and dev sets, the metric that picks best/, the step count."""
        index = {name: i for i, name in enumerate(self.model.labels)}
        tokenizer = self.model.encoder.tokenizer
        sets = self.plan.sets
        self.regression = [s.regression for s in sets]
        self.train_sets = [
            batching.tokenize_pairs(s.data, tokenizer, index, s.objective) for s in sets
        ]
        self.dev_sets = {
            name: batching.tokenize_pairs(data, tokenizer, index or None)
            for name, data in self.plan.dev.items()
        }
        if self.progress.best_metric is None:
            self.progress.best_metric = default_best_metric(self.dev_sets)
        elif self.progress.stage == 0 and not self.dev_sets and self.config.best_metric:
            raise ConfigError(f"--best-metric {self.config.best_metric}: this run evaluates no "
                              f"dev data (--no-eval, or no --dev)")  # fmt: skip
        elif self.progress.stage == 0 and self.dev_sets:
            given = [f"{name}/{m}" for name in self.dev_sets for m in DEV_METRICS]
            if self.progress.best_metric not in given:
                raise ConfigError(f"--best-metric {self.progress.best_metric} is not a dev "
                                  f"metric of this run: {', '.join(given)}")  # fmt: skip
        first = self.schedule(0)
        # What a resumed run must find the same: the batches, and so the data and its order.
        self.batches_digest = hashlib.sha256(repr(first).encode()).hexdigest()[:16]
        total = len(first) * self.config.epochs
        self.total_steps = min(total, self.config.max_steps or total)

    def _announce(self) -> None:
        """Say what this stage trains: a line on the console, its settings in the log."""
        pairs = sum(map(len, self.train_sets))
        if self.procs.is_main:
            print(
                f"stage {self.progress.stage}: {pairs} training pairs, {self.total_steps} "
                f"steps, {self.trainable:,} trainable parameters, strategy "
                f"{self.config.strategy}, on {self.device}{' (bf16 autocast)' if self.bf16 else ''}"
            )
            self._say_best_metric()
        self.log(
            {
                "step": self.progress.step,
                "settings": self.settings(),
                "pairs": pairs,
                "steps": self.total_steps,
                "trainable": self.trainable,
            }
        )

    def settings(self) -> dict:
        """What this stage runs with, as built (not only as asked)."""
        settings = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "stages"}
        settings["dropout"] = self.model.encoder.bert.config.dropout
        settings["loss_weights"] = self.plan.weights
        return settings

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
                d.lengths, self.config.batch_size, seed + i, min_batch=self.plan.min_batch
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
            # Where stderr is a log file, a line every 30 s shows how far a run is, rather than
            # ten a second (tqdm's pace on a terminal).
            mininterval=0.1 if sys.stderr.isatty() else 30,
        )
        with bar:  # closed on an error too, so that the error message starts its own line
            while p.step < self.total_steps:
                batches = self.schedule(p.epoch)
                for set_index, batch in batches[p.position :]:
                    values = self.step(set_index, batch)
                    self.pending.append({"step": p.step, "epoch": p.epoch, **values})
                    p.position += 1
                    self._after_step(bar)
                    if p.step >= self.total_steps:
                        break
                if p.position == len(batches):
                    self._end_epoch(bar)
            self.read_steps(bar)
        if self.evaluated_at != p.step:  # stopped by max_steps inside an epoch
            self.evaluate_all()
        self.check_model()  # what run() saves as final/ is finite
        if self.procs.is_main:
            from sbert.training.plot import plot_curves

            plot_curves(self.out / METRICS_LOG, self.out / "curves.png")
        return self.metrics

    def _after_step(self, bar) -> None:
        """Count the step; read, show and log the steps taken where --log-every says; evaluate
        or checkpoint where their schedule says (after reading: never from a bad state)."""
        config, p = self.config, self.progress
        bar.update(1)
        evaluate = bool(config.eval_every) and p.step % config.eval_every == 0
        save = bool(config.save_every) and p.step % config.save_every == 0
        every = config.log_every or (LOG_STEPS_DISTRIBUTED if self.procs.world > 1 else None)
        due = p.step % every == 0 if every else time.monotonic() - self.read_at >= LOG_SECONDS
        if due or evaluate or save:
            self.read_steps(bar)
        if evaluate:
            self.evaluate_all()
        if save:
            self.save_checkpoint()
        if evaluate or save:  # "once a second" counts seconds of training
            self.read_at = time.monotonic()

    def _end_epoch(self, bar) -> None:
        """Every epoch ends evaluated and checkpointed (unless that step just was)."""
        p, save_every = self.progress, self.config.save_every
        self.read_steps(bar)
        p.epoch, p.position = p.epoch + 1, 0
        if self.evaluated_at != p.step:
            self.evaluate_all()
        if not save_every or p.step % save_every:
            self.save_checkpoint()

    def read_steps(self, bar=None) -> None:
        """Read the pending steps' values back to the host in one transfer, then log each step
        as it would have been logged at once, warn about skipped ones, and stop the run on a
        non-finite step (without --skip-nonfinite) or on divergence."""
        steps, self.pending = self.pending, []
        self.read_at = time.monotonic()
        if not steps:
            return
        keys = [[k for k, v in s.items() if isinstance(v, torch.Tensor)] for s in steps]
        tensors = [s[k].reshape(()).float() for s, ks in zip(steps, keys, strict=True) for k in ks]
        tensors.append(self._weights_max())  # divergence: one more value in the same transfer
        values = iter(torch.stack(tensors).cpu().tolist())  # the one host sync
        for s, ks in zip(steps, keys, strict=True):
            s.update({k: next(values) for k in ks})
        largest = next(values)
        p = self.progress
        for s in steps:
            code, norm = int(s.pop("nonfinite")), s.pop("grad_norm")
            if code == FINITE:
                self.nonfinite_in_a_row = 0
                self.log(s)
                continue
            what, value = ("loss", s["loss"]) if code == NONFINITE_LOSS else ("gradient norm", norm)
            where = f"step {s['step']}" + (f" of stage {p.stage}" if p.stage else "")
            if not self.config.skip_nonfinite:
                raise TrainingError(
                    f"non-finite {what} ({value}) at {where}; {self._kept()} "
                    f"(--skip-nonfinite skips such batches)"
                )
            p.skipped += 1
            self.nonfinite_in_a_row += 1
            if self.procs.is_main:
                from tqdm.auto import tqdm

                tqdm.write(
                    f"warning: skipped {where}: non-finite {what} ({value}); "
                    f"{p.skipped} skipped so far",
                    file=sys.stderr,
                )
            step = {"step": s["step"], "epoch": s["epoch"]}
            self.log({**step, "loss": float("nan"), "skipped": p.skipped, "nonfinite": what})
            if self.nonfinite_in_a_row >= NONFINITE_IN_A_ROW:
                raise self._diverged(
                    s["step"], f"{self.nonfinite_in_a_row} non-finite steps in a row"
                )
        if not math.isfinite(largest):
            raise self._diverged(steps[-1]["step"], "non-finite weights")
        if largest > self.weight_limit:
            raise self._diverged(
                steps[-1]["step"],
                f"a weight reached {largest:.3g} (at most {self.weight_limit / WEIGHT_GROWTH:.3g}"
                f" at the start)",
            )
        finite = [s for s in steps if "loss" in s and math.isfinite(s["loss"])]
        if bar is not None and finite:
            steps_per_s = bar.format_dict["rate"] or 0.0
            bar.set_postfix(
                loss=f"{finite[-1]['loss']:.4f}",
                pairs_s=f"{steps_per_s * self.config.batch_size:.0f}",
            )

    def check_model(self) -> None:
        """Refuse to go on from a model whose weights, or whose vectors, are not finite: such a
        model is never saved (checkpoints, best/, final/). A fixed probe batch of training
        sentences, in eval mode and fp32, catches weights large enough to overflow in a
        forward pass."""
        if not math.isfinite(self._weights_max().item()):
            raise self._diverged(self.progress.step, "non-finite weights")
        data = self.train_sets[0]
        probe = list(range(min(8, len(data.a))))
        tensors = batching.collate(data, probe, self.model.encoder.tokenizer.pad_id)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            vectors = self.model.encoder(
                tensors["input_ids"].to(self.device), tensors["attention_mask"].to(self.device)
            )
        self.model.train(was_training)
        if not bool(torch.isfinite(vectors).all()):
            raise self._diverged(self.progress.step, "the model's vectors are no longer finite")

    def _weights_max(self) -> torch.Tensor:
        """The largest |weight| of the model, a 0-d tensor on its device (NaN/Inf if any is)."""
        params = [p.detach() for p in self.model.parameters()]
        return torch.stack(torch._foreach_norm(params, math.inf)).max().float()

    def _largest_weight(self) -> float:
        return self._weights_max().item()

    def _diverged(self, step: int, what: str) -> TrainingError:
        where = f"step {step}" + (f" of stage {self.progress.stage}" if self.progress.stage else "")
        c = self.config
        return TrainingError(
            f"training diverged at {where}: {what}; lower --lr (now {c.lr:g}) or --head-lr "
            f"(now {c.head_lr:g}), or raise --warmup (now {c.warmup:g}); {self._kept()}"
        )

    def step(self, set_index: int, batch: list[int]) -> dict[str, torch.Tensor]:
        """One optimizer step on one global batch: this process's share, in micro-batches.

        Returns the step's values as 0-d tensors on the device, read by nothing here: the
        weighted total "loss", each objective's loss, the balancer's logs, "grad_norm", and
        "nonfinite" (FINITE, NONFINITE_LOSS or NONFINITE_GRADIENT: the update was skipped).
        """
        try:
            return self._step(set_index, batch)
        except torch.OutOfMemoryError:
            raise self._out_of_memory(set_index, batch) from None

    def _step(self, set_index: int, batch: list[int]) -> dict[str, torch.Tensor]:
        config, data = self.config, self.train_sets[set_index]
        share = batching.shard(batch, self.procs.rank, self.procs.world)
        micro = math.ceil(len(share) / config.grad_accum)
        parts = [share[i : i + micro] for i in range(0, len(share), micro)]
        self.model.train()
        totals: dict[str, torch.Tensor] = {}
        for i, part in enumerate(parts):
            tensors = batching.collate(data, part, self.model.encoder.tokenizer.pad_id)
            tensors = {k: to_device(v, self.device) for k, v in tensors.items()}
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            sync = i == len(parts) - 1 or self.procs.world == 1
            with contextlib.nullcontext() if sync else self.module.no_sync(), self.autocast():
                output = self.module(
                    **tensors,
                    regression=self.regression[set_index],
                    objectives=objectives_fed(
                        self.plan.objectives,
                        data.labels[part],
                        data.scores[part],
                        self.model.labels,
                    ),
                )
            losses = output.losses
            # Each part weighs its share of the global batch: DDP averages the processes'
            # gradients, so an uneven split (9 pairs as 5 and 4) still weighs every pair alike.
            share_of_batch = len(part) / len(batch)
            logs = self.balancer.backward(
                losses,
                self.shared,
                self.heads,
                scale=share_of_batch * self.procs.world,
                report=sync and self._report_shares(),
            )
            for name, value in {"loss": logs["loss"], **losses}.items():
                totals[name] = totals.get(name, 0.0) + value.detach() * share_of_batch
        if self.procs.world > 1:
            totals = self._synchronise(data, batch, totals)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        # The step's one non-finite check, on the device: a NaN/Inf loss, or a NaN/Inf gradient
        # norm (a finite loss can still back-propagate one). Fused AdamW skips its update where
        # found_inf is set (weights, moments and step count unchanged), without a host sync;
        # read_steps stops the run, or with --skip-nonfinite counts the skipped step. Under DDP
        # a NaN reaches every process through the gradient all-reduce: all skip together.
        bad_loss = ~torch.isfinite(totals["loss"])
        bad_norm = ~torch.isfinite(norm)
        self.optimizer.found_inf = (bad_loss | bad_norm).float()
        self.optimizer.step()
        self.scheduler.step()  # a skipped step still counts: the schedule stays a clean run's
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1
        code = torch.where(
            bad_loss, NONFINITE_LOSS, torch.where(bad_norm, NONFINITE_GRADIENT, FINITE)
        )
        extra = {k: v for k, v in logs.items() if k != "loss"}  # learned weights, grad shares
        return {**totals, **extra, "grad_norm": norm.detach(), "nonfinite": code}

    def _synchronise(
        self, data: batching.TokenizedPairs, batch: list[int], totals: dict
    ) -> dict[str, torch.Tensor]:
        """Under DDP: the step's losses summed over the processes (the whole global batch's,
        as one process logs them), and the balancer's learned weights averaged where the global
        batch feeds their objective. The same all-reduces on every process: decided from the
        global batch on the host, zeros where this process's share fed none; a weight whose
        objective the batch does not feed keeps no gradient, so AdamW leaves it as one process
        does (a zero gradient would move it on momentum)."""
        fed = objectives_fed(
            self.plan.objectives, data.labels[batch], data.scores[batch], self.model.labels
        )
        names = ["loss", *fed]
        zero = torch.zeros((), device=self.device)
        values = torch.stack([totals.get(n, zero).float() for n in names])
        self.procs.sum(values)
        learned = self.balancer.parameters_for(fed)
        for p in learned:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.procs.average(p.grad for p in learned)
        return dict(zip(names, values.unbind(), strict=True))

    def _report_shares(self) -> bool:
        every = self.config.grad_share_every
        return bool(every) and (self.progress.step + 1) % every == 0

    def _out_of_memory(self, set_index: int, batch: list[int]) -> TrainingError:
        """Name the two knobs of a step's memory: pairs per micro-batch, and their length."""
        config, lengths = self.config, self.train_sets[set_index].lengths
        pairs = math.ceil(len(batch) / self.plan.min_batch)
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
                undefined = [k for k, v in result.items() if not math.isfinite(v)]
                if undefined:  # NaN is no JSON, and no score to compare for best/
                    print(f"note: step {p.step}: {name}: {', '.join(undefined)} undefined: the "
                          f"model gives every scored pair the same cosine, or one pair has a "
                          f"score", file=sys.stderr)  # fmt: skip
                metrics.update({f"{name}/{k}": v for k, v in result.items()
                                if k != "pairs" and k not in undefined})  # fmt: skip
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
            "labels": self.model.labels,  # a resumed stage rebuilds its model from the plans
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "log_size": _size(self.out / METRICS_LOG),  # what a resumed run keeps of the log
            "settings": self.settings(),  # what a resumed run must have the same (restore)
            "batches": self.batches_digest,
        }

    def save_checkpoint(self) -> None:
        """A new checkpoint folder under <out>/checkpoints, written atomically; then only the
        newest `keep_checkpoints` are kept."""
        self.check_model()
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
        """Continue from a checkpoint's state (see `state`), written by a run like this one;
        only then is the log cut back to the checkpoint and the stage announced, so that a
        refused resume leaves the log as it was."""
        self._check_same_run(path, state)
        if state["labels"] != self.model.labels:
            raise CheckpointError(path, "labels differ from this run's data")
        given, kept = self.config.best_metric, state["best_metric"]
        if given is not None and given != kept:  # best/ would be picked by two measures
            raise CheckpointError(path, f"its run picks best/ by {kept}; a resumed run keeps "
                                        f"that (leave --best-metric out)")  # fmt: skip
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
            cut_log(self.out / METRICS_LOG, state.get("log_size"))
        self._announce()
        if self.procs.is_main:
            p = self.progress
            print(f"resumed stage {p.stage} at step {p.step} (epoch {p.epoch}) from {path}")

    def _check_same_run(self, path: Path, state: dict) -> None:
        """Refuse a checkpoint of another run: other data, batches or optimisation settings
        would resume a run that never was (another step count, another optimizer layout, or a
        sampler position past the epoch's end). What only logs, evaluates or stops the run may
        change (`RESUME_MAY_CHANGE`)."""
        saved = state.get("settings")  # None: a checkpoint from before this was recorded
        if saved is None:
            return
        ours = self.settings()
        changed = [
            f"{k} {saved.get(k)!r}, now {ours.get(k)!r}"
            for k in sorted(saved.keys() | ours.keys())
            if k not in RESUME_MAY_CHANGE and saved.get(k) != ours.get(k)
        ]
        if not changed and state.get("batches") != self.batches_digest:
            changed = ["the training data (its batches differ)"]
        if changed:
            raise CheckpointError(
                path,
                f"written by a run with other settings ({'; '.join(changed[:3])}): resume "
                f"with that run's settings, or train afresh (without --resume or into another "
                f"--out)",
            )


# ---------------------------------------------------------------------------------------------
# Small helpers


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: 0 -> 1 over `warmup` steps, then 1 -> 0 at `total` (SBERT §4)."""
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))
