"""Atomic writes and small file helpers: a reader never sees a half-written file or folder.

Every folder written by `atomic_dir` carries a `manifest.json` with the size and sha256 of each
file, so that `verify_manifest` can tell a complete folder from a truncated or damaged one.

Reads and writes distrust the file system as they distrust file contents: a metadata file
(JSON, a vocabulary) is read only if it is a regular file of bounded size (`read_bounded`), a
path that a folder names must stay inside that folder (`inside`), and an output is written
through a symlink, a FIFO or a character device (`/dev/null`), never renamed over one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sbert.errors import CheckpointError, ConfigError
from sbert.folders import PACKAGED, resolve

MANIFEST = "manifest.json"
# Temporary names of atomic writes: ".NAME.PID-RANDOM.tmp" (being written by process PID, or
# being deleted) and ".NAME.PID.old" (the folder being replaced, on systems without an atomic
# swap). Older versions wrote ".NAME.RANDOM.tmp"; `remove_litter` takes both.
_LITTER = re.compile(r"\.(?P<name>.+)\.[^.]+\.(?P<kind>tmp|old)")
_PID_TMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[^.]+\.tmp")
# The most bytes a metadata file may hold: a config, a tokenizer, a vocabulary, a record. The
# largest real ones are tokenizers of a few hundred thousand tokens (~20 MB).
MAX_METADATA_BYTES = 64 << 20


def file_kind(mode: int) -> str:
    """What a stat mode is, in words: "a FIFO", "a character device", ..."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "a special file"


def regular_file(path: Path, limit: int | None = None) -> int:
    """The size of `path` if it is a regular file (symlinks followed) of at most `limit` bytes;
    else CheckpointError naming it. A FIFO would hang a read, `/dev/zero` never end it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    return _check_regular(path, info, limit)


def _check_regular(path: Path, info: os.stat_result, limit: int | None) -> int:
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(path, f"is {file_kind(info.st_mode)}, not a regular file")
    if limit is not None and info.st_size > limit:
        raise CheckpointError(
            path, f"{info.st_size:,} bytes, more than the {limit:,} a file of its kind may hold"
        )
    return info.st_size


def read_bounded(path: Path, limit: int = MAX_METADATA_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is a CheckpointError
    naming it. Opened without blocking (a FIFO), checked on the open file (no race), and read
    no further than `limit` + 1 bytes (a file that grows while read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise CheckpointError(path, "file not found") from None
    except OSError as e:
        raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    try:  # before fdopen, which refuses a folder with an error naming the descriptor
        _check_regular(path, os.fstat(fd), limit)
    except CheckpointError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise CheckpointError(path, f"cannot read: {e.strerror or e}") from None
    if len(data) > limit:
        raise CheckpointError(path, f"more than the {limit:,} bytes a file of its kind may hold")
    return data


def read_json(path: Path, expect: type = dict):
    """Read a JSON value of type `expect`, raising CheckpointError with the path on any problem
    (a file that is not regular, or larger than `MAX_METADATA_BYTES`, included)."""
    data = read_bounded(Path(path))
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(path, f"unreadable JSON ({e})") from None
    if not isinstance(value, expect):
        raise CheckpointError(path, f"expected a JSON {expect.__name__}")
    return value


def inside(folder: Path, name: object, source: Path) -> Path:
    """`folder / name`, for a path that the file `source` of `folder` names: refused with a
    CheckpointError naming `source` unless it is relative and stays inside `folder` once every
    symlink is followed (`../../etc`, `/another/model` or a link out of the folder are not)."""
    if not isinstance(name, str) or "\0" in name:
        raise CheckpointError(source, f"names the path {json.dumps(name)[:60]}: not a path")
    path = Path(folder) / name
    root = os.path.realpath(folder)
    if Path(name).is_absolute() or os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise CheckpointError(
            source, f"names {name!r}, which leads outside {folder}: refused (a folder may only "
                    f"name its own files)"
        )  # fmt: skip
    return path


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


def output_target(path: Path) -> tuple[Path, bool]:
    """Where writing `path` lands, and whether it is a stream: a regular file (or a new one) is
    replaced atomically where it really is (a symlink is followed and kept); a FIFO or a
    character device (`/dev/null`, a terminal) is written through. Anything else (a folder, a
    block device, a socket) is refused with a ConfigError naming it."""
    path = Path(path)
    try:
        info = os.stat(path)  # follows symlinks
    except FileNotFoundError:  # a new file, or a link to one: create what it names
        return Path(os.path.realpath(path)), False
    if stat.S_ISREG(info.st_mode):
        return Path(os.path.realpath(path)), False
    if stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode):
        return path, True
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path}: is a folder; the output is a file: give a file name")
    raise ConfigError(
        f"{path}: is {file_kind(info.st_mode)}: an output goes to a regular file, a FIFO or a "
        f"character device such as /dev/null: not written"
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    `path` is first resolved by `output_target`: through a symlink to the file it names (the
    link stays), and straight into a FIFO or a character device, never renamed over one.
    """
    path, stream = output_target(Path(path))
    if stream:
        with naming(path), open(os.open(path, os.O_WRONLY), "wb") as f:  # no O_CREAT/O_TRUNC
            f.write(data)
        return
    remove_stale_tmp(path)
    try:  # a file replaced keeps its mode (a private one stays private); a new one: the umask's
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()  # mkstemp's 0600 would hide the file from others
    fd, tmp = _temporary(path)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a full disk: say which file
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise
    fsync_dir(path.parent)


def _temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path`, for `atomic_write_bytes` to rename over it."""
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-",
                                suffix=".tmp")  # fmt: skip
    except OSError as e:  # named after the output, not after a temporary name it never saw
        raise OSError(e.errno, f"cannot write in {path.parent} ({e.strerror})", str(path)) from None


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
def atomic_dir(
    path: Path, ours: Callable[[Path], bool] | None = None, kind: str = ""
) -> Iterator[Path]:
    """Build a folder under a temporary name, then swap it in place of `path` in one rename.

    Yields the temporary folder to write into; `manifest.json` is added after the caller's
    files. On any error the temporary folder is removed and `path` is left as it was. An
    existing `path` is exchanged with the new folder in one step where the system can (Linux),
    so at every moment the folder on disk is either the complete old one or the complete new one.
    A `path` that is a symlink to a folder replaces the folder it names (the link stays); one
    that is a file, FIFO, device or socket is refused: a folder renamed over it would lose it.
    With `ours` (a predicate naming an earlier folder of this `kind`), a non-empty folder that is
    not one is refused too: `model.save("~/thesis")` must not replace someone's files.
    """
    path = Path(os.path.abspath(path))  # "." and ".." have no name to write beside
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if Path.cwd().is_relative_to(path):  # swapped out, the working folder would be deleted
        raise CheckpointError(path, "is the current folder or holds it: name a folder inside it")
    if path.exists() and not path.is_dir():
        found = file_kind(os.stat(path).st_mode)
        raise CheckpointError(path, f"exists and is {found}, not a folder: not replaced")
    if ours is not None:
        refuse_foreign_folder(path, ours, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(path)
    tmp = Path(
        tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    )
    try:
        yield tmp
        follow_umask(tmp)  # mkdtemp's 0700 and some writers' 0600 would hide files from others
        write_manifest(tmp)
        sync_tree(tmp)
        swap_in(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.filename and Path(e.filename).is_relative_to(tmp):
            # A full disk names the file it was writing: where it was going, not the
            # temporary folder that is gone now.
            where = path / Path(e.filename).relative_to(tmp)
            raise OSError(e.errno, e.strerror or str(e), str(where)) from None
        raise


def swap_in(new: Path, path: Path) -> None:
    """Put the complete folder `new` at `path` (same file system), replacing the folder there
    in one step where the system can (Linux), so a reader sees the old folder or the new one."""
    if not path.exists():
        os.replace(new, path)
    elif _exchange(new, path):  # `new` now holds the old folder
        shutil.rmtree(new, ignore_errors=True)
    else:  # two renames; a kill between them leaves .old, which remove_litter puts back
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(path.parent)


def follow_umask(folder: Path) -> None:
    """Give every file and folder under `folder` (itself included) the mode the user's umask
    asks for: mkdtemp makes 0700, mkstemp and safetensors' writer 0600."""
    mask = _umask()
    for root, _, files in os.walk(folder):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            entry = Path(root) / name
            if not entry.is_symlink():
                entry.chmod(0o666 & ~mask)


def remove_stale_tmp(path: Path) -> None:
    """Delete what atomic writes of `path` left when their process was killed: the temporary
    files and folders `.NAME.PID-RANDOM.tmp` beside it whose process PID no longer runs (a
    running one may be writing). Symlinks and other users' entries are left alone."""
    path = Path(path)
    try:
        entries = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return
    for entry in entries:
        match = _PID_TMP.fullmatch(entry.name)
        if match is None or match["name"] != path.name or _running(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            info = entry.lstat()
            if info.st_uid != os.geteuid() or stat.S_ISLNK(info.st_mode):
                continue
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's process
        return True
    return True


def check_output_file(output: str | Path, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse, before any work, an output file that cannot or must not be written: its folder
    missing, a folder, block device or socket in its place (`output_target`), one of the
    command's own inputs, or a file inside an input folder (a model's tokenizer, an index's
    texts). A symlink, a FIFO or a character device is written through."""
    output = Path(output)
    target, stream = output_target(output)
    if not stream and not target.parent.is_dir():
        raise ConfigError(f"{output}: output folder {target.parent} not found")
    if not stream:  # a folder we may not write in is found now, not after the work
        fd, tmp = _temporary(target)
        os.close(fd)
        os.unlink(tmp)
    where = Path(os.path.realpath(output))
    for source in (Path(s) for s in inputs if s is not None):
        if not source.exists():
            if str(source) not in PACKAGED:  # nothing there to overwrite
                continue
            source = resolve(source)  # a packaged model's name: its installed folder
        if output.exists() and output.samefile(source):
            raise ConfigError(f"{output}: is also an input of this command: not overwritten")
        if source.is_dir() and where.is_relative_to(os.path.realpath(source)):
            raise ConfigError(f"{output}: inside {source}, an input of this command: not "
                              "written there")  # fmt: skip


def refuse_foreign_folder(
    path: Path, ours: Callable[[Path], bool], kind: str, what: str = "", whole: bool = True
) -> None:
    """Refuse a non-empty folder that is not an earlier `kind` (`ours`), or, to be replaced
    `whole`, that holds a file its manifest does not list: someone's, put there since (a model
    or corpus copied in, notes beside an `index.json`); replacing the folder would delete it."""
    if not (path.is_dir() and any(path.iterdir())):
        return
    if not ours(path):
        raise CheckpointError(path, f"{what}folder exists and is not {kind}: left as it is")
    foreign = foreign_file(path) if whole else None
    if foreign is not None:
        raise CheckpointError(path, f"{what}folder is not only {kind} ({foreign}): left as it is")


def foreign_file(folder: Path) -> str | None:
    """What in `folder` atomic_dir did not write, said for an error: a file its manifest does
    not list, or the manifest missing; None when there is nothing else."""
    try:
        listed = read_json(folder / MANIFEST).get("files")
    except CheckpointError as e:
        return f"no {MANIFEST}" if e.problem == "file not found" else f"{MANIFEST}: {e.problem}"
    listed = listed if isinstance(listed, dict) else {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if not (path.is_dir() and not path.is_symlink()) and name not in (MANIFEST, *listed):
            return f"{name} is none of its files"
    return None


def check_output_dir(
    output: str | Path, ours: Callable[[Path], bool], kind: str, replaced: bool = True
) -> None:
    """Refuse an output folder that `atomic_dir` must not replace: a file, or a folder that is
    not an earlier `kind` (it could be the source model, or anything else kept there), or holds
    more (`refuse_foreign_folder`; not asked of a folder written into, not `replaced`)."""
    output = Path(output)
    if output.is_symlink():  # atomic_dir replaces the folder it names
        output = Path(os.path.realpath(output))
    if output.exists() and not output.is_dir():
        raise CheckpointError(
            output, f"output exists and is {file_kind(os.stat(output).st_mode)}, not a folder"
        )
    refuse_foreign_folder(output, ours, kind, "output ", whole=replaced)
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
    if not os.path.lexists(manifest):
        return
    files = read_json(manifest).get("files")
    if not isinstance(files, dict):
        raise CheckpointError(manifest, "no 'files' table")
    for name, expected in files.items():
        if not (isinstance(expected, dict) and {"size", "sha256"} <= expected.keys()):
            raise CheckpointError(manifest, f"bad entry for {name!r}")
        path = inside(manifest.parent, name, manifest)  # never /etc/hostname, never ../x
        if not os.path.lexists(path):
            raise CheckpointError(path, f"missing (listed in {MANIFEST})")
        size = regular_file(path)  # a FIFO would hang the hash, /dev/zero never end it
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


def write_error(error: Exception, path: Path) -> OSError:
    """An OSError naming `path` for a writer that raises its own type on a failed write
    (safetensors' SafetensorError says "... No space left on device (os error 28)")."""
    found = re.search(r"os error (\d+)", str(error))
    code = int(found[1]) if found else errno.EIO
    return OSError(code, f"cannot write ({error})", str(path))


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an OSError raised without a file name (a full disk, in a writer that does not say
    where) the name `path`."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
