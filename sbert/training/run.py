"""`sbert train`: a run's stages in sequence, each from the previous stage's model, then
<out>/final. The output folder is locked for the run, and a resumed run continues from the newest
intact checkpoint as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import torch

from sbert.errors import CheckpointError, ConfigError, TrainingError
from sbert.fileio import check_output_dir, remove_dir, remove_litter
from sbert.folders import is_model_folder
from sbert.models.device import pick_device
from sbert.training.checkpoints import CHECKPOINTS, list_checkpoints, resume_point
from sbert.training.config import TrainConfig, check_stages
from sbert.training.distributed import Processes, local_rank, start_processes
from sbert.training.plan import check_trainable, plan_stages, stage_labels, stage_model
from sbert.training.trainer import METRICS_LOG, Progress, Trainer

LOCK = ".lock"
MODELS = ("final", "best")  # model folders a run writes into --out
CURVES = "curves.png"


def run(config: TrainConfig) -> dict:
    """Train every stage, then write <out>/final. Returns the last dev metrics."""
    check_stages(config)  # sbert.train(TrainConfig(...)) too, as the CLI does
    out = Path(config.out)
    device = pick_device(config.device, local_rank())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    if out.exists():  # anything there besides an earlier run's files is someone's data
        check_output_dir(out, is_run_folder, "a training run's output", replaced=False)
        for name in MODELS:  # before training, not when saving after it
            check_output_dir(out / name, is_model_folder, "a model folder")
    procs = start_processes(device)
    try:
        with output_lock(out, procs):
            return _run_stages(config, out, device, procs)
    finally:
        procs.stop()


def is_run_folder(folder: Path) -> bool:
    """True when `folder` holds an earlier run's output (or a run holds it now): its lock (a
    process id), its log (a first record with the run's settings), a checkpoint, or a model it
    saved."""
    return (
        is_lock(folder / LOCK)
        or is_run_log(folder / METRICS_LOG)
        or bool(list_checkpoints(folder))
        or any(is_model_folder(folder / name) for name in MODELS)
    )


def is_lock(path: Path) -> bool:
    """Whether `path` is a run's lock file: a small file holding a process id (an empty .lock
    of the user's does not make a folder a run whose files may go)."""
    if not path.is_file():  # never opened otherwise: a FIFO would block the open
        return False
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(32).strip().isdigit()
    except (OSError, ValueError):
        return False


def is_run_log(path: Path) -> bool:
    """Whether `path` is a run's metrics.jsonl: its first record holds the run's settings."""
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline(1 << 20))  # ours is a few KiB; a user's may be huge
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and "settings" in first


def clear_earlier_run(out: Path) -> None:
    """A fresh run in an earlier run's folder starts clean: that run's checkpoints (which a
    later --resume would take for this run's), best/ (the best of another run), log and curves
    go first. Its final/ stays until this run's replaces it, in one step."""
    for path in list_checkpoints(out):
        remove_dir(path)
    if is_model_folder(out / "best"):  # checked before training: nothing else is there
        remove_dir(out / "best")
    for name in (METRICS_LOG, CURVES):
        (out / name).unlink(missing_ok=True)


def _run_stages(config: TrainConfig, out: Path, device: torch.device, procs: Processes) -> dict:
    plans = plan_stages(config, procs.world)  # every stage's data, read and checked first
    progress, resumed = _start(config, out, procs, [p.config.model for p in plans])
    model = None
    for plan in plans[: progress.stage + 1]:  # a resumed stage's model as it had it; weights
        model = stage_model(plan, model)  # follow from the checkpoint
    labels = model.labels  # a later stage may add a classifier: check each as it will be
    for plan in plans[progress.stage :]:
        labels = stage_labels(plan, labels)
        check_trainable(plan, model, labels)
    before, metrics, trainer, last = {}, {}, None, None
    for plan in plans[progress.stage :]:
        if trainer is not None:  # each later stage starts from the previous stage's model
            progress, last = trainer.progress.next_stage(), trainer.last_checkpoint
            model, trainer = stage_model(plan, trainer.model), None  # DDP's wrapper lets go
        trainer = Trainer(plan, model, out, device, procs, progress, last,
                          announce=resumed is None)  # fmt: skip
        if resumed is not None:
            trainer.restore(*resumed)
            resumed = None
        elif plan.index == 0 and not plan.config.no_eval:
            before = trainer.evaluate_all()
        metrics = trainer.fit()
    if procs.is_main:
        trainer.model.save(out / "final")
        if before and metrics:
            print(before_after_table(before, metrics))
        print(f"saved the final model to {out / 'final'}")
    procs.barrier()
    return metrics


def _start(
    config: TrainConfig, out: Path, procs: Processes, models: list[str | None]
) -> tuple[Progress, tuple[Path, dict] | None]:
    """Where the run starts: a fresh log at stage 0, or the newest intact checkpoint (whose log
    `Trainer.restore` cuts back once it has checked the checkpoint fits)."""
    if procs.is_main:  # what a killed run left half-written; we hold the lock, so it is stale
        for folder in (out, out / CHECKPOINTS):
            remove_litter(folder)
    fresh = not config.resume or not list_checkpoints(out)
    if fresh and config.resume and procs.is_main:  # stopped before its first checkpoint
        print(f"note: {out}: no checkpoint to resume from yet: starting from the beginning",
              file=sys.stderr)  # fmt: skip
    if fresh:
        check_models_outside(out, models)  # every process: none goes on alone
        if procs.is_main:
            clear_earlier_run(out)
        return Progress(best_metric=config.best_metric), None
    path, state = resume_point(out, warn=procs.is_main)
    progress = Progress.from_state(state, path)
    if progress.stage >= len(models):
        raise CheckpointError(path, f"is from stage {progress.stage}, and this run has "
                                    f"{len(models)} stage(s)")  # fmt: skip
    if procs.is_main:
        print(f"resuming from {path} (stage {progress.stage}, step {progress.step})",
              file=sys.stderr)  # fmt: skip
    return progress, (path, state)


def check_models_outside(out: Path, models: list[str | None]) -> None:
    """Refuse a fresh run whose starting model lies in what it clears first (`--model
    R/best --out R`): the model would be deleted before it is loaded."""
    cleared = [out / "best", out / CHECKPOINTS]
    for model in models:
        if model is None or not os.path.lexists(model):
            continue
        where = Path(os.path.realpath(model))
        if any(where.is_relative_to(os.path.realpath(c)) for c in cleared):
            raise ConfigError(
                f"--model {model} is inside {out}, whose best/ and checkpoints a fresh run "
                f"clears first: copy it elsewhere, or train into another --out"
            )


@contextlib.contextmanager
def output_lock(out: Path, procs: Processes):
    """Refuse a second run on the same output folder: it would interleave their files."""
    import fcntl

    if not procs.is_main:
        yield
        return
    created = not out.exists()
    Path(os.path.realpath(out)).mkdir(parents=True, exist_ok=True)  # through a dangling link too
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
