"""Atomic writes and small file helpers: a reader never sees a half-written file or folder.

Every folder written by `atomic_dir` carries a `manifest.json` with the size and sha256 of each
file, so that `verify_manifest` can tell a complete folder from a truncated or damaged one.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sbert.errors import CheckpointError, ConfigError

MANIFEST = "manifest.json"
# Temporary names of atomic writes: ".NAME.RANDOM.tmp" (being written, or being deleted) and
# ".NAME.PID.old" (the folder being replaced, on systems without an atomic swap).
_LITTER = re.compile(r"\.(?P<name>.+)\.[^.]+\.(?P<kind>tmp|old)")


def read_json(path: Path, expect: type = dict):
    """Read a JSON value of type `expect`, raising CheckpointError with the path on any problem."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"unreadable JSON ({e})") from None
    if not isinstance(value, expect):
        raise CheckpointError(path, f"expected a JSON {expect.__name__}")
    return value


_REQUIRED = object()
_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
          dict: "a JSON object"}  # fmt: skip


def json_field(
    path: Path,
    record: dict,
    key: str,
    kind: type,
    minimum: float | None = None,
    maximum: float | None = None,
    default=_REQUIRED,
):
    """`record[key]`, read from the JSON file `path`, if it is a `kind` within [minimum, maximum]
    (a float may be written as an int; a bool is no number); otherwise CheckpointError naming
    `path` and `key`. A missing or null field gives `default` when one is given.

    Every folder reader checks its JSON fields here: model folders, ONNX exports, indexes.
    """
    value = record.get(key)
    if value is None:
        if default is _REQUIRED:
            raise CheckpointError(path, f"missing field {key!r}")
        return default
    number = kind in (int, float)
    ok = isinstance(value, (int, float) if kind is float else kind)
    if number:
        ok = ok and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        want = _KINDS.get(kind, kind.__name__)
        if minimum is not None:
            want += f" >= {minimum}" if maximum is None else f" in [{minimum}, {maximum}]"
        raise CheckpointError(path, f"{key} must be {want}, got {json.dumps(value)[:60]}")
    return value


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX: the directory entry must be synced too)."""
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder`, so a rename of it publishes complete data."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Build a folder under a temporary name, then swap it in place of `path` in one rename.

    Yields the temporary folder to write into; `manifest.json` is added after the caller's
    files. On any error the temporary folder is removed and `path` is left as it was. An
    existing `path` is exchanged with the new folder in one step where the system can (Linux),
    so at every moment the folder on disk is either the complete old one or the complete new one.
    """
    path = Path(path)
    if path.is_file():  # a folder swapped in for a file would lose it: refuse
        raise CheckpointError(path, "exists and is a file, not a folder: not replaced")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would hide the folder from others
        yield tmp
        write_manifest(tmp)
        sync_tree(tmp)
        if not path.exists():
            os.replace(tmp, path)
        elif _exchange(tmp, path):  # tmp now holds the old folder
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # two renames; a kill between them leaves .old, which remove_litter puts back
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_file(output: str | Path, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse, before any work, an output file that cannot or must not be written: its folder
    missing, a folder in its place, or one of the command's own inputs."""
    output = Path(output)
    if not output.parent.is_dir():
        raise ConfigError(f"{output}: output folder {output.parent} not found")
    if output.is_dir():
        raise ConfigError(f"{output}: is a folder; the output is a file: give a file name")
    for source in inputs:
        if output.exists() and Path(source).exists() and output.samefile(source):
            raise ConfigError(f"{output}: is also an input of this command: not overwritten")


def check_output_dir(output: str | Path, ours: Callable[[Path], bool], kind: str) -> None:
    """Refuse an output folder that `atomic_dir` must not replace: a file, or a folder that is
    not an earlier `kind` (it could be the source model, or anything else kept there)."""
    output = Path(output)
    if output.is_file():
        raise CheckpointError(output, "output exists and is a file")
    if output.is_dir() and any(output.iterdir()) and not ours(output):
        raise CheckpointError(output, f"output folder exists and is not {kind}: left as it is")
    if not output.parent.is_dir():
        raise CheckpointError(output, f"output's parent folder {output.parent} not found")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def remove_dir(path: Path) -> None:
    """Delete a folder without ever showing a half-deleted one under its name: hide it first."""
    hidden = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    os.replace(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def remove_litter(folder: Path) -> None:
    """Clean up after atomic writes that were killed: delete temporary files and folders, and
    put back a folder caught between the two renames of a replacement.

    Call it only while no other process writes into `folder` (training holds a lock).
    """
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        match = _LITTER.fullmatch(entry.name)
        if match is None:
            continue
        target = folder / match["name"]
        if match["kind"] == "old" and not target.exists():
            os.replace(entry, target)  # the complete old folder; its replacement never landed
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record the size and sha256 of every file under `folder` in `folder/manifest.json`."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = {
            "size": path.stat().st_size,
            "sha256": sha256(path),
        }
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=2))


def verify_manifest(folder: Path) -> None:
    """Check every file that `folder/manifest.json` lists against its recorded size and sha256.

    A folder without a manifest (a Hugging Face download, an older save) passes unchecked.
    Raises CheckpointError naming the first missing, truncated or altered file.
    """
    manifest = Path(folder) / MANIFEST
    if not manifest.is_file():
        return
    files = read_json(manifest).get("files")
    if not isinstance(files, dict):
        raise CheckpointError(manifest, "no 'files' table")
    for name, expected in files.items():
        if not (isinstance(expected, dict) and {"size", "sha256"} <= expected.keys()):
            raise CheckpointError(manifest, f"bad entry for {name!r}")
        path = manifest.parent / name
        if not path.is_file():
            raise CheckpointError(path, f"missing (listed in {MANIFEST})")
        size = path.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(
                path, f"truncated or damaged: {size} bytes, {expected['size']} when saved"
            )
        if sha256(path) != expected["sha256"]:
            raise CheckpointError(
                path,
                f"damaged: its sha256 differs from the one in {MANIFEST} (if you edited the "
                f"file on purpose, delete {MANIFEST})",
            )
