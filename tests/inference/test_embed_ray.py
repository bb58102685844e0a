"""`sbert embed --ray`: a local Ray's actors finish what a killed local run left, a run whose
Ray driver was killed is finished by a rerun, and each folder equals an uninterrupted local
run's (same rows, vectors within 1e-6); an address that does not answer, or an actor pool the
cluster cannot place, is one line, exit 2, nothing written."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sbert import cli

pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster of the machine's
ENV |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
TEXTS = [
    f"text {i}: " + " ".join(["cats", "dogs", "rain", "chess"][: 1 + i % 4]) for i in range(150)
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tiny) -> Path:
    """The session's tiny model folder (conftest), read only."""
    return tiny


def sbert(*args, trap: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`sbert ARGS` in its own session; with `trap`, killed where crash_at.py is told to, and
    then whatever it started (a local Ray's processes outlive a killed driver) killed too."""
    command = (
        [sys.executable, str(ROOT / "tests" / "crash_at.py"), *trap, "--"]
        if trap
        else [sys.executable, "-m", "sbert"]
    )
    process = subprocess.Popen([*command, *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV,
                               start_new_session=True)  # fmt: skip
    try:
        out, err = process.communicate(timeout=300)
    finally:
        kill_session(process.pid)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def kill_session(sid: int) -> None:
    ps = subprocess.run(["ps", "-eo", "sid=,pid="], capture_output=True, text=True).stdout
    for line in ps.splitlines():
        session, pid = map(int, line.split())
        if session == sid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def rows(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("shard-*.parquet")))


def test_ray_actors_finish_a_killed_run_and_match_a_local_one(model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "emb"
    common = ["embed", "--model", model_dir, "--corpus", corpus, "--shard-size", 40,
              "--batch-size", 8]  # fmt: skip
    args = [*common, "--out", out]
    killed = sbert(*args, trap=("sbert.inference.embed:atomic_write_bytes", "1", "kill",
                                "shard-000001"))  # fmt: skip
    assert killed.returncode == -9
    assert [p.name for p in (tmp_path / ".emb.partial").glob("shard-*")] == ["shard-000000.parquet"]
    # The rest on a Ray started here: 2 actors of 1 CPU each share the 3 shards left.
    done = sbert(*args, "--ray", "--actors", 2, "--cpus-per-actor", 1)
    assert done.returncode == 0, done.stderr
    assert "resuming: 40 of 150 texts" in done.stderr and "on Ray (local)" in done.stdout
    assert not (tmp_path / ".emb.partial").exists()
    local = tmp_path / "local"
    assert cli.main([str(a) for a in [*common, "--out", local]]) == 0
    ray_rows, local_rows = rows(out), rows(local)
    assert ray_rows.column("id").to_pylist() == list(range(len(TEXTS)))
    assert ray_rows.column("text").to_pylist() == local_rows.column("text").to_pylist() == TEXTS
    vectors = [np.stack(t.column("vector").to_numpy(zero_copy_only=False))
               for t in (ray_rows, local_rows)]  # fmt: skip
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6, rtol=0)
    a, b = (json.loads((f / "embedding.json").read_text()) for f in (out, local))
    assert a == b


def test_a_killed_ray_driver_is_finished_by_a_rerun(model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    common = ["embed", "--model", model_dir, "--corpus", corpus, "--shard-size", 40,
              "--batch-size", 8]  # fmt: skip
    out = tmp_path / "emb"
    ray = [*common, "--out", out, "--ray", "--actors", 2, "--cpus-per-actor", 1]
    killed = sbert(*ray, trap=("sbert.inference.embed:atomic_write_bytes", "1", "kill",
                               "shard-000002"))  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    kept = sorted(p.name for p in (tmp_path / ".emb.partial").glob("shard-*"))
    assert kept and "shard-000002.parquet" not in kept
    done = sbert(*common, "--out", out)  # the rest here: the driver writes shards either way
    assert done.returncode == 0, done.stderr
    assert f"resuming: {40 * len(kept)} of 150 texts" in done.stderr
    local = tmp_path / "local"
    assert cli.main([str(a) for a in [*common, "--out", local]]) == 0
    assert rows(out).column("id").to_pylist() == list(range(len(TEXTS)))
    assert rows(out).column("text").to_pylist() == TEXTS
    vectors = [np.stack(rows(f).column("vector").to_numpy(zero_copy_only=False))
               for f in (out, local)]  # fmt: skip
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6, rtol=0)


def test_an_address_that_does_not_answer_is_one_line(model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    for address in ("127.0.0.1:1", "auto"):
        done = sbert("embed", "--model", model_dir, "--corpus", corpus, "--out", tmp_path / "emb",
                     "--ray", address)  # fmt: skip
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        lines = [x for x in done.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and f"--ray {address}" in lines[0], done.stderr
    # An actor pool the cluster cannot place (Ray would wait for it forever): no GPU here.
    done = sbert("embed", "--model", model_dir, "--corpus", corpus, "--out", tmp_path / "emb",
                 "--ray", "--gpus-per-actor", 1)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "needs 2 GPUs" in lines[0], done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


@pytest.mark.parametrize("gpus, device", [(0.5, "cuda:0"), (0, "cpu")])
def test_an_actor_given_a_gpu_embeds_on_it(model_dir, monkeypatch, gpus, device):
    import torch

    from sbert.inference.embed_ray import Embedder

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as in an actor Ray gave
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU (its only one)
    embedder, asked = Embedder(str(model_dir), 8, gpus=gpus), []
    encode = embedder.model.encode

    def recorded(*args, device=None, **kwargs):
        asked.append(device)
        return encode(*args, **kwargs)  # on the CPU: there is no GPU here

    embedder.model.encode = recorded
    embedder({"id": np.arange(2), "text": np.array(["a cat", "rain"])})
    assert asked == [torch.device(device)]


def test_gpus_for_an_export_are_refused(minilm_export, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    done = sbert("embed", "--model", minilm_export, "--corpus", corpus, "--out", tmp_path / "emb",
                 "--ray", "--gpus-per-actor", 1)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "is an export, which runs on the CPU: --gpus-per-actor" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


def test_an_actor_given_a_gpu_its_torch_cannot_see_says_so(model_dir, monkeypatch):
    import torch

    from sbert.errors import SbertError
    from sbert.inference.embed_ray import Embedder

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU build of torch
    with pytest.raises(SbertError, match="--gpus-per-actor 1: the actor's torch sees no CUDA"):
        Embedder(str(model_dir), 8, gpus=1)
