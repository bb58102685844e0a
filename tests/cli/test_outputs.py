"""What every writing command does with an output that is not a plain file or folder: a
symlink is followed (its target written, the link kept), a FIFO or a character device
(/dev/null) is written through, anything else (a socket, a file where a folder goes) is one
line and exit 2 with nothing replaced. Never a rename over it: as root, `--output /dev/null`
once replaced the machine's /dev/null with a regular file.

And the files themselves: killed writes' temporary files are cleaned up by the next write of
the same name, and weight files follow the umask like every other file.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from sbert import MultiTaskModel, SentenceBert, cli

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [f"sentence number {i} about {w}" for i, w in enumerate(["cats", "dogs", "rain"] * 4)]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    corpus = tmp_path / "in" / "texts.txt"
    corpus.parent.mkdir()
    corpus.write_text("\n".join(TEXTS) + "\n")
    pairs = tmp_path / "in" / "pairs.tsv"
    pairs.write_text("a cat sits\ta dog runs\nit rains\tthe sun shines\n")
    return {"texts": corpus, "pairs": pairs}


def writes(command: str, model: Path, inputs: dict[str, Path], output: Path) -> list[str]:
    """The arguments of `command` writing its output to `output`."""
    if command == "encode":
        return ["encode", "--model", model, "--input", inputs["texts"], "--output", output]
    if command == "predict":
        return ["predict", "--model", model, "--input", inputs["pairs"], "--output", output]
    index = inputs["texts"].parent / "index"
    if not index.exists():
        assert cli.main(["index", "--model", str(model), "--corpus", str(inputs["texts"]),
                         "--out", str(index)]) == 0  # fmt: skip
    return ["search", "--index", index, "--model", model, "--queries", inputs["texts"],
            "--output", output]  # fmt: skip


def check_written(command: str, data: bytes) -> None:
    if command == "encode":
        assert np.load(io.BytesIO(data)).shape == (len(TEXTS), 32)
    else:
        rows = [json.loads(line) for line in data.decode().splitlines()]
        assert len(rows) == (2 if command == "predict" else len(TEXTS))


def error_of(capsys, *args) -> str:
    capsys.readouterr()
    assert cli.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


COMMANDS = ["encode", "predict", "search"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_symlinked_output_writes_its_target_and_stays_a_link(
    tiny, inputs, tmp_path, capsys, command
):
    target, link = tmp_path / "target", tmp_path / "link"
    target.write_text("old")
    link.symlink_to(target)
    assert cli.main([str(a) for a in writes(command, tiny, inputs, link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    check_written(command, target.read_bytes())
    dangling = tmp_path / "dangling"  # a link to a file not there yet: the file is made
    dangling.symlink_to(tmp_path / "new")
    assert cli.main([str(a) for a in writes(command, tiny, inputs, dangling)]) == 0
    assert dangling.is_symlink() and (tmp_path / "new").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_fifo_output_is_written_through(tiny, inputs, tmp_path, command):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert cli.main([str(a) for a in writes(command, tiny, inputs, fifo)]) == 0
    reader.join(60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    check_written(command, received[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "in"]


def test_a_device_output_is_written_through_not_replaced(tiny, inputs, tmp_path):
    null = tmp_path / "null"
    try:  # a second /dev/null (1, 3), as root can make it: replacing it would show
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        null = Path("/dev/null")  # not root: /dev could not be written into anyway
    for command in COMMANDS:
        assert cli.main([str(a) for a in writes(command, tiny, inputs, null)]) == 0
        assert stat.S_ISCHR(os.lstat(null).st_mode)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_socket_output_is_refused_and_kept(tiny, inputs, tmp_path, capsys, command):
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        line = error_of(capsys, *writes(command, tiny, inputs, path))
    finally:
        server.close()
    assert str(path) in line and "is a socket" in line, line
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_folder_output_that_is_a_symlink_keeps_the_link(tiny, inputs, tmp_path, capsys):
    real, link = tmp_path / "real-index", tmp_path / "link"
    args = ["index", "--model", tiny, "--corpus", inputs["texts"]]
    assert cli.main([str(a) for a in [*args, "--out", real]]) == 0
    link.symlink_to(real)
    inputs["texts"].write_text("\n".join(TEXTS[:5]) + "\n")
    assert cli.main([str(a) for a in [*args, "--out", link]]) == 0
    assert link.is_symlink() and len((real / "texts.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize("command", ["index", "train"])
def test_a_folder_output_that_is_a_fifo_is_refused_and_kept(tiny, inputs, tmp_path, capsys,
                                                           command):  # fmt: skip
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    if command == "index":
        args = ["index", "--model", tiny, "--corpus", inputs["texts"], "--out", fifo]
    else:
        sick = ROOT / "data" / "sick" / "SICK_train_trial.txt"
        args = ["train", "--model", "tiny", "--train", f"{sick}@TRAIN", "--limit", 8,
                "--max-steps", 1, "--no-eval", "--device", "cpu", "--out", fifo]  # fmt: skip
    line = error_of(capsys, *args)
    assert str(fifo) in line and "FIFO" in line, line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_a_killed_writes_temporary_files_are_removed_by_the_next(tiny, inputs, tmp_path):
    """`.NAME.PID-RANDOM.tmp` of a process that no longer runs is litter: the next atomic write
    of NAME removes it; a running process's is left alone (it may be writing)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        litter = [tmp_path / f".v.npy.{dead_pid}-k2j4x.tmp", tmp_path / f".ix.{dead_pid}-a8d7.tmp"]
        busy = tmp_path / f".v.npy.{alive.pid}-q9w8e.tmp"
        litter[0].write_text("half a file")
        litter[1].mkdir()
        (litter[1] / "vectors.npy").write_text("half an index")
        busy.write_text("being written")
        assert cli.main(["encode", "--model", str(tiny), "--input", str(inputs["texts"]),
                         "--output", str(tmp_path / "v.npy")]) == 0  # fmt: skip
        assert cli.main(["index", "--model", str(tiny), "--corpus", str(inputs["texts"]),
                         "--out", str(tmp_path / "ix")]) == 0  # fmt: skip
        assert not litter[0].exists() and not litter[1].exists() and busy.exists()
    finally:
        alive.kill()
        alive.wait()


def test_weight_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)  # not the usual 022, so that modes written as 644/755 fail
    try:
        torch.manual_seed(0)
        MultiTaskModel(SentenceBert.from_config("tiny"), ["a", "b"]).save(tmp_path / "m")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "classifier.safetensors", "config.json", "manifest.json"):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) == 0o640, name
    assert stat.S_IMODE((tmp_path / "m" / "1_Pooling").stat().st_mode) == 0o750
    shutil.rmtree(tmp_path / "m")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_replaced_output_keeps_its_mode(tiny, inputs, tmp_path, command):
    """A private file written again stays private: the new file takes the old one's mode,
    not the umask's (a new file: the umask's, as every file)."""
    private = tmp_path / "private"
    private.write_text("old")
    private.chmod(0o600)
    assert cli.main([str(a) for a in writes(command, tiny, inputs, private)]) == 0
    check_written(command, private.read_bytes())
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    old = os.umask(0o027)
    try:
        assert cli.main([str(a) for a in writes(command, tiny, inputs, tmp_path / "new")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o640


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_not_writable_is_refused_before_any_work(tiny, inputs, capsys, monkeypatch,
                                                         command):  # fmt: skip
    """/sys takes no new files, even from root: said before the model is loaded, naming the
    output, not the temporary file it would have been written through."""
    args = writes(command, tiny, inputs, Path("/sys/out"))  # search's index is built first
    monkeypatch.setattr(SentenceBert, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    monkeypatch.setattr(MultiTaskModel, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    line = error_of(capsys, *args)
    assert "cannot write in /sys" in line and "'/sys/out'" in line and ".tmp" not in line, line
