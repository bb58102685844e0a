"""Training checkpoints: <out>/checkpoints/stage0-step000123/{state.pt, manifest.json}.

A checkpoint is one state dict (the trainer's progress, the model, the optimizer, the schedule
and every RNG state), written atomically; the newest K are kept, and a resume takes the newest
intact one, falling back past a damaged one with a warning.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

import torch

from sbert.errors import CheckpointError
from sbert.fileio import atomic_dir, remove_dir, verify_manifest

CHECKPOINTS = "checkpoints"
# What every checkpoint's state holds besides the trainer's progress (Trainer.state).
STATE_KEYS = ("model", "labels", "optimizer", "scheduler", "balancer", "rng", "cuda_rng")
_NAME = re.compile(r"stage(\d+)-step(\d+)")


def checkpoint_path(out: Path, stage: int, step: int) -> Path:
    return out / CHECKPOINTS / f"stage{stage}-step{step:06d}"


def list_checkpoints(out: Path) -> list[Path]:
    """Checkpoint folders, newest first. A killed write leaves only a hidden temporary name."""
    found = []
    for path in (out / CHECKPOINTS).glob("stage*-step*"):
        match = _NAME.fullmatch(path.name)
        if match and path.is_dir():
            found.append(((int(match[1]), int(match[2])), path))
    return [path for _, path in sorted(found, reverse=True)]


def write_checkpoint(path: Path, state: dict) -> None:
    with atomic_dir(path) as tmp, open(tmp / "state.pt", "wb") as f:
        try:  # through a Python file, a full disk is mostly an OSError (ENOSPC), but torch's
            torch.save(state, f)  # zip writer may also fail with its own RuntimeError
        except RuntimeError as e:  # "[enforce fail at inline_container.cc:672] unexpected pos"
            raise OSError(errno.EIO, " ".join(str(e).split())[:200], str(tmp)) from None


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
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(path / "state.pt", "file not found") from None
    except Exception as e:  # a damaged zip/pickle raises many types
        raise CheckpointError(path / "state.pt", f"damaged checkpoint ({e})") from None
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
        raise CheckpointError(path / "state.pt", "holds no training state of sbert's")
    return state


def cut_log(path: Path, size: int | None) -> None:
    """Cut the append-only log back to its first `size` bytes (None: a checkpoint older than
    this record; a log shorter than `size`, e.g. deleted by hand, is left as it is): a resumed
    run trains the steps after its checkpoint again, and logging them twice would draw every
    curve back over itself."""
    if size is not None and (path.stat().st_size if path.exists() else 0) > size:
        os.truncate(path, size)


def resume_point(out: Path, warn: bool = True) -> tuple[Path, dict]:
    """The newest intact checkpoint; skipping a damaged one is said in one line."""
    damaged = []
    for path in list_checkpoints(out):
        try:
            state = read_checkpoint(path)
        except CheckpointError as e:
            damaged.append(str(e))
            continue
        if damaged and warn:
            print(
                f"warning: resuming from the older {path.name}: newer checkpoint damaged: "
                f"{'; '.join(damaged)}",
                file=sys.stderr,
            )
        return path, state
    if damaged:
        raise CheckpointError(
            out / CHECKPOINTS, f"no intact checkpoint to resume from: {'; '.join(damaged)}"
        )
    raise CheckpointError(out / CHECKPOINTS, "no checkpoint to resume from")
