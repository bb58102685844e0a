"""Part 3: training with the SBERT paper's defaults, evaluation, checkpoints and resume.

setup (data, model, optimizer) -> fit (the loop) -> evaluate -> save. The defaults are SBERT's
(§4: AdamW lr 2e-5, batch 16, linear warm-up over 10% of the steps) plus weight decay 0.01 and
gradient clipping at 1.0. This is the only module that knows about torch.distributed: launched
by torchrun it trains with DistributedDataParallel, and everything else works unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from . import batching
from .config import (
    TrainConfig,
    add_config_flags,
    config_from_args,
    parse_spec,
    stage_configs,
)
from .data import read_pairs, shared_score_range
from .errors import CheckpointError, ConfigError, SbertError
from .evaluate import evaluate
from .fileio import atomic_dir, remove_dir, remove_litter, verify_manifest
from .model import SentenceBert
from .multitask import MultiTaskModel
from .strategies import knobs, param_groups
from .tokenizer import WordPiece


class TrainingError(SbertError):
    """Training cannot go on (a non-finite loss, out of memory, a locked output folder)."""


# ---------------------------------------------------------------------------------------------
# Command line


def add_train_parsers(sub) -> None:
    """`sbert train` (flags generated from TrainConfig) and `sbert evaluate`."""
    p = sub.add_parser("train", help="train a multi-task sentence encoder",
                       description=__doc__.splitlines()[0])  # fmt: skip
    add_config_flags(p)
    p.set_defaults(run=lambda args: run(config_from_args(args)))

    p = sub.add_parser("evaluate", help="print dev metrics of a model as one JSON object")
    p.add_argument("--model", required=True, help="model folder (with its classifier, if any)")
    p.add_argument("--data", required=True, help="data file, PATH[@SPLIT]")
    p.add_argument("--format", default=None, help="sts, sick, nli or csv (default: detected)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="")
    p.set_defaults(run=cmd_evaluate)


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass(frozen=True)
class Processes:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def start_processes(device: torch.device) -> Processes:
    if "RANK" not in os.environ:
        return Processes()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(name: str | None, local_rank: int = 0) -> torch.device:
    """The named device, else CUDA when present, else the CPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Setup


def load_model(config: TrainConfig, labels: list[str]) -> MultiTaskModel:
    """The starting model: a checkpoint (with its classifier, if any) or a fresh preset."""
    from .bert import PRESETS

    weights = tuple(config.loss_weights)
    if config.model in PRESETS:
        model = MultiTaskModel(SentenceBert.from_config(config.model), labels, weights)
    else:
        model = MultiTaskModel.from_pretrained(config.model, weights)
        if labels and model.labels != labels:
            if model.classifier is not None and set(model.labels) != set(labels):
                print(f"note: new classifier for labels {labels} (checkpoint had {model.labels})")
            model = MultiTaskModel(model.encoder, labels, weights)
    if config.dropout >= 0:
        model.encoder.encoder.set_dropout(config.dropout)
    return model


def read_train_sets(config: TrainConfig) -> list[tuple[str, object, str]]:
    sets = []
    for spec in config.train:
        path, split, objective = parse_spec(spec)
        data = read_pairs(path, split=split, limit=config.limit or None)
        sets.append((spec, data, objective))
    return sets


def label_space(sets) -> list[str]:
    return sorted({x for _, data, obj in sets if obj != "regression" for x in data.label_names})


# ---------------------------------------------------------------------------------------------
# The run


def run(config: TrainConfig) -> dict:
    """Train every stage, then write <out>/final. Returns the last dev metrics."""
    out = Path(config.out)
    device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", 0)))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    procs = start_processes(device)
    try:
        with output_lock(out, procs):
            return _run_stages(config, out, device, procs)
    finally:
        if procs.world > 1:
            dist.destroy_process_group()


def _run_stages(config: TrainConfig, out: Path, device, procs: Processes) -> dict:
    stages = stage_configs(config)
    if procs.is_main:  # what a killed run left half-written; we hold the lock, so it is stale
        for folder in (out, out / CHECKPOINTS):
            remove_litter(folder)
    last, state = resume_point(out, procs) if config.resume else (None, None)
    start_stage = state["stage"] if state else 0
    if not config.resume and procs.is_main:
        (out / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run starts a fresh log
    model, before, metrics = None, {}, {}
    for index, stage in enumerate(stages):
        if index < start_stage:
            continue
        trainer = Trainer(stage, out, device, procs, index, model)
        trainer.last_checkpoint = last
        if index == start_stage and state is not None:
            trainer.restore(state)
        elif index == 0 and not stage.no_eval:
            before = trainer.evaluate_all(step=0)
        metrics = trainer.fit()
        model, last, state = trainer.model, trainer.last_checkpoint, None
    if procs.is_main:
        model.save(out / "final")
        if before and metrics:
            print(before_after_table(before, metrics))
        print(f"saved the final model to {out / 'final'}")
    procs.barrier()
    return metrics


class Trainer:
    """One stage: data, model, optimizer and schedule, and the loop over steps."""

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        device: torch.device,
        procs: Processes,
        stage: int,
        model: MultiTaskModel | None,
    ):
        self.config, self.out, self.device, self.procs, self.stage = (
            config,
            out,
            device,
            procs,
            stage,
        )
        if config.batch_size % (procs.world * config.grad_accum):
            raise ConfigError(
                f"batch size {config.batch_size} does not divide into {procs.world} processes "
                f"x {config.grad_accum} micro-batches"
            )
        torch.manual_seed(config.seed)  # the classifier's initialisation
        sets = read_train_sets(config)
        labels = label_space(sets)
        self.model = load_model(config, labels) if model is None else _with_labels(model, labels)
        regression = [data for _, data, objective in sets if objective != "classification"]
        self.model.score_scale = shared_score_range(regression) or self.model.score_scale
        self.model.to(device)
        if config.max_seq_length:
            limit_seq_length(self.model.encoder, config.max_seq_length)
        tokenizer = self.model.encoder.tokenizer
        index = {name: i for i, name in enumerate(self.model.labels)}
        self.train_sets = [
            batching.tokenize_pairs(data, tokenizer, index, obj) for _, data, obj in sets
        ]
        self.dev_sets = {}
        if not config.no_eval:
            for spec in config.dev:
                path, split, _ = parse_spec(spec)
                data = read_pairs(path, split=split)
                name = Path(path).stem + (f"-{split}" if split else "")
                self.dev_sets[name] = batching.tokenize_pairs(data, tokenizer, index or None)
        self.best_metric = config.best_metric or self._default_best_metric()
        self.best = -math.inf
        total = len(self.schedule(0)) * config.epochs
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        k = knobs(config.strategy, _unset(config.freeze_layers), _unset(config.layer_decay))
        groups = param_groups(self.model, k, config.lr, config.head_lr, config.weight_decay)
        # Fused AdamW: one kernel for all tensors instead of a loop of small ops (CPU and CUDA).
        self.optimizer = torch.optim.AdamW(groups, fused=True)
        warmup = max(1, round(config.warmup * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: linear_warmup_decay(s, warmup, self.total_steps)
        )
        self.ddp = self.model
        if procs.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if config.compile:  # batches vary in length: compile for dynamic shapes once
            self.ddp = torch.compile(self.ddp, dynamic=True)
        self.step, self.epoch, self.position, self.skipped = 0, 0, 0, 0
        self.evaluated_at, self.metrics = -1, {}
        self.last_checkpoint: Path | None = None  # the newest one written or resumed from
        if procs.is_main:
            trainable = sum(p.numel() for g in groups for p in g["params"])
            print(f"stage {stage}: {sum(map(len, self.train_sets))} training pairs, "
                  f"{self.total_steps} steps, {trainable:,} trainable parameters, "
                  f"strategy {config.strategy}, on {device}")  # fmt: skip

    def _default_best_metric(self) -> str:
        for name, data in self.dev_sets.items():
            if not all(math.isnan(s) for s in data.scores):
                return f"{name}/spearman"
        return next((f"{n}/accuracy" for n in self.dev_sets), "")

    def schedule(self, epoch: int) -> list[tuple[int, list[int]]]:
        """This epoch's global batches, in order: the same for the same seed and epoch."""
        seed = self.config.seed * 1000 + epoch
        per_set = [
            batching.bucketed_batches(d.lengths, self.config.batch_size, seed + i)
            for i, d in enumerate(self.train_sets)
        ]
        mixed = batching.mix(per_set, self.config.mix, seed)
        # Under DDP every process needs a non-empty share of each batch.
        return [(d, b) for d, b in mixed if len(b) >= self.procs.world * self.config.grad_accum]

    # -- the loop ---------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train to total_steps; evaluate and checkpoint on schedule. Returns the last metrics."""
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train (stage {self.stage})",
                   unit="step", disable=not self.procs.is_main, dynamic_ncols=True)  # fmt: skip
        with bar:  # closed on an error too, so that the error message starts its own line
            self.train_steps(bar)
        if self.evaluated_at != self.step:  # stopped by max_steps inside an epoch
            self.evaluate_all(self.step)
        if self.procs.is_main:
            self.plot()
        return self.metrics

    def train_steps(self, bar) -> None:
        """The loop over epochs and batches, from where a resumed run left off."""
        config = self.config
        started, pairs = time.perf_counter(), 0
        while self.step < self.total_steps:
            batches = self.schedule(self.epoch)
            for set_index, batch in batches[self.position :]:
                try:
                    losses = self.train_step(set_index, batch)
                except torch.OutOfMemoryError:
                    raise self._out_of_memory(set_index, batch) from None
                self.position += 1
                pairs += len(batch)
                bar.update(1)
                rate = pairs / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{losses['loss']:.4f}", pairs_s=f"{rate:.0f}")
                self.log({"step": self.step, "epoch": self.epoch, **losses})
                if config.eval_every and self.step % config.eval_every == 0:
                    self.evaluate_all(self.step)
                if config.save_every and self.step % config.save_every == 0:
                    self.save_checkpoint()
                if self.step >= self.total_steps:
                    break
            if self.position == len(batches):  # the end of an epoch
                self.epoch, self.position = self.epoch + 1, 0
                if self.evaluated_at != self.step:
                    self.evaluate_all(self.step)
                if not config.save_every or self.step % config.save_every:
                    self.save_checkpoint()

    def train_step(self, set_index: int, batch: list[int]) -> dict[str, float]:
        """One optimizer step on one global batch: this process's share, in micro-batches."""
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
            with contextlib.nullcontext() if sync else self.ddp.no_sync(), self.autocast():
                output = self.ddp(**tensors)
            loss = output.loss * (len(part) / len(share))
            # Under DDP one process must not stop alone (the others would wait for it forever):
            # its NaN reaches every process through the gradient all-reduce, and all of them
            # then stop together on the gradient-norm check below.
            if self.procs.world == 1 and not torch.isfinite(loss):
                return self._nonfinite("loss", loss)
            loss.backward()
            for name, value in {"loss": output.loss, **output.losses}.items():
                totals[name] = totals.get(name, 0.0) + value.detach() * len(part) / len(share)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        if not torch.isfinite(norm):  # a finite loss can still back-propagate an Inf or a NaN
            return self._nonfinite("gradient norm", norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {name: float(value) for name, value in totals.items()}

    def _nonfinite(self, what: str, value: torch.Tensor) -> dict[str, float]:
        """Stop at a NaN/Inf loss or gradient; with --skip-nonfinite, skip the batch and count it.

        The step still counts, so that the schedule and the batches stay those of a clean run.
        """
        self.optimizer.zero_grad(set_to_none=True)
        where = f"step {self.step + 1}" + (f" of stage {self.stage}" if self.stage else "")
        value = float(value.detach())
        if not self.config.skip_nonfinite:
            raise TrainingError(
                f"non-finite {what} ({value}) at {where}; {self._kept()} "
                f"(--skip-nonfinite skips such batches)"
            )
        self.skipped += 1
        self.step += 1
        self.scheduler.step()
        if self.procs.is_main:
            from tqdm.auto import tqdm

            tqdm.write(f"warning: skipped {where}: non-finite {what} ({value}); "
                       f"{self.skipped} skipped so far", file=sys.stderr)  # fmt: skip
        return {"loss": float("nan"), "skipped": self.skipped, "nonfinite": what}

    def _out_of_memory(self, set_index: int, batch: list[int]) -> TrainingError:
        """Name the two knobs of a step's memory: pairs per micro-batch, and their length."""
        config, lengths = self.config, self.train_sets[set_index].lengths
        pairs = math.ceil(len(batch) / (self.procs.world * config.grad_accum))
        return TrainingError(
            f"out of memory at step {self.step + 1} on micro-batches of {pairs} pairs x "
            f"{max(lengths[i] for i in batch)} tokens: lower --batch-size (now "
            f"{config.batch_size}) or raise --grad-accum (now {config.grad_accum}), or lower "
            f"--max-seq-length (now {self.model.encoder.tokenizer.max_length})"
        )

    def _kept(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is kept: {self.last_checkpoint}"

    def autocast(self):
        """bf16 autocast where asked (auto: on CUDA only; CPU bf16 needs avx512_bf16/AMX)."""
        precision = self.config.precision
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- evaluation, logging, checkpoints ---------------------------------------------------

    def evaluate_all(self, step: int) -> dict[str, float]:
        """Dev metrics on rank 0 (the others wait); a better best_metric saves <out>/best."""
        metrics: dict[str, float] = {}
        self.evaluated_at = step
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
            self.log({"step": step, "epoch": self.epoch, "stage": self.stage, **metrics})
            value = metrics.get(self.best_metric)
            if step > 0 and value is not None and value > self.best:
                self.best = value
                self.model.save(self.out / "best")
        self.procs.barrier()
        self.metrics = metrics
        return metrics

    def log(self, record: dict) -> None:
        if not self.procs.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": self.stage, **record}) + "\n")

    def save_checkpoint(self) -> None:
        """Everything a resumed run needs, in a new folder under <out>/checkpoints, written
        atomically; then only the newest `keep_checkpoints` are kept."""
        if self.procs.is_main:
            state = {
                "stage": self.stage,
                "step": self.step,
                "epoch": self.epoch,
                "position": self.position,
                "skipped": self.skipped,
                "best": self.best,
                "model": self.model.state_dict(),
                "labels": self.model.labels,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }
            path = self.out / CHECKPOINTS / f"stage{self.stage}-step{self.step:06d}"
            try:
                write_checkpoint(path, state)
            except OSError as e:  # a full disk: the temporary folder is gone, the others intact
                raise TrainingError(
                    f"{path}: cannot write the checkpoint ({e.strerror or e}); {self._kept()}"
                ) from None
            self.last_checkpoint = path
            prune_checkpoints(self.out, path, self.config.keep_checkpoints)
        self.procs.barrier()

    def restore(self, state: dict) -> None:
        if state["labels"] != self.model.labels:
            raise CheckpointError(self.last_checkpoint, "labels differ from this run's data")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:  # another --model or preset than the checkpoint's
            raise CheckpointError(
                self.last_checkpoint, f"does not fit this run's model ({e})"
            ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.skipped, self.best = state["skipped"], state["best"]
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.procs.is_main:
            print(f"resumed stage {self.stage} at step {self.step} (epoch {self.epoch}) from "
                  f"{self.last_checkpoint}")  # fmt: skip

    def plot(self) -> None:
        from .plot import plot_curves

        plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")


# ---------------------------------------------------------------------------------------------
# Checkpoints: <out>/checkpoints/stage0-step000123/{state.pt, manifest.json}, the newest K kept


CHECKPOINTS = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"stage(\d+)-step(\d+)")


def list_checkpoints(out: Path) -> list[Path]:
    """Checkpoint folders, newest first. A killed write leaves only a hidden temporary name."""
    found = []
    for path in (out / CHECKPOINTS).glob("stage*-step*"):
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append(((int(match[1]), int(match[2])), path))
    return [path for _, path in sorted(found, reverse=True)]


def write_checkpoint(path: Path, state: dict) -> None:
    with atomic_dir(path) as tmp, open(tmp / "state.pt", "wb") as f:
        # Through a Python file: a full disk then raises OSError (ENOSPC), not a RuntimeError.
        torch.save(state, f)


def prune_checkpoints(out: Path, newest: Path, keep: int) -> None:
    """Keep `newest` and the keep-1 before it. Later ones go too: they are damaged ones this run
    resumed before, or left by an earlier run in the same folder."""
    paths = list_checkpoints(out)
    index = paths.index(newest)
    for path in paths[:index] + paths[index + keep :]:
        remove_dir(path)


def read_checkpoint(path: Path) -> dict:
    """The training state in a checkpoint folder, checked against its manifest first."""
    verify_manifest(path)
    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path / "state.pt", "file not found") from None
    except Exception as e:  # a damaged zip/pickle raises many types
        raise CheckpointError(path / "state.pt", f"damaged checkpoint ({e})") from None


def resume_point(out: Path, procs: Processes) -> tuple[Path, dict]:
    """The newest intact checkpoint; skipping a damaged one is said in one line."""
    damaged = []
    for path in list_checkpoints(out):
        try:
            state = read_checkpoint(path)
        except CheckpointError as e:
            damaged.append(str(e))
            continue
        if damaged and procs.is_main:
            print(f"warning: resuming from the older {path.name}: newer checkpoint damaged: "
                  f"{'; '.join(damaged)}", file=sys.stderr)  # fmt: skip
        return path, state
    if damaged:
        raise CheckpointError(out / CHECKPOINTS, f"no intact checkpoint to resume from: "
                                                 f"{'; '.join(damaged)}")  # fmt: skip
    raise CheckpointError(out / CHECKPOINTS, "no checkpoint to resume from")


def limit_seq_length(encoder: SentenceBert, max_length: int) -> None:
    """Truncate sentences to `max_length` tokens (never past the position table)."""
    tok = encoder.tokenizer
    max_length = min(max_length, encoder.encoder.config.max_position_embeddings)
    encoder.tokenizer = WordPiece(tok.tokenizer, max_length, tok.lowercase)


def _with_labels(model: MultiTaskModel, labels: list[str]) -> MultiTaskModel:
    """The previous stage's model, with a new classifier only if this stage's labels differ."""
    if not labels or labels == model.labels:
        return model
    return MultiTaskModel(model.encoder, labels, model.loss_weights, model.score_scale)


def _unset(value):
    return None if value is None or value < 0 else value


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
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as lock:  # "a+": opening must not erase the holder's pid
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise TrainingError(
                f"{out}: another run (process {holder}) is using this output folder; wait for "
                f"it to end or choose another --out"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def before_after_table(before: dict, after: dict) -> str:
    rows = [f"{'dev metric':<32} {'before':>8} {'after':>8}"]
    for key in after:
        if key in before:
            rows.append(f"{key:<32} {before[key]:8.2f} {after[key]:8.2f}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# sbert evaluate


def cmd_evaluate(args: argparse.Namespace) -> None:
    path, split, _ = parse_spec(args.data)
    data = read_pairs(path, format=args.format, split=split)
    device = pick_device(args.device, 0)
    model = MultiTaskModel.from_pretrained(args.model).to(device)
    index = {name: i for i, name in enumerate(model.labels)} or None
    pairs = batching.tokenize_pairs(data, model.encoder.tokenizer, index)
    metrics = evaluate(model, pairs, args.batch_size, device)
    json.dump(metrics, sys.stdout)
    print()
