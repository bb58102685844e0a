"""`sbert embed --ray`: the shards of an embedding computed on Ray Data, written by the driver.

The driver (embed.embed_corpus) decides which shards are left to do; their rows go through one
Ray Data pipeline: read (the texts, in blocks) -> `map_batches` with `Embedder`, an actor class
that loads the model once per actor (Ray's batch-inference pattern) -> back to the driver,
which gathers each shard's rows and writes the shard atomically as soon as it is whole. A
killed driver or worker costs only the shards not yet written: a rerun redoes those.

Ray is imported here only, and only when asked for (`pip install 'ray[data]'`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from collections.abc import Iterator

import numpy as np

from sbert.errors import ConfigError, SbertError

# How long an address given to --ray has to answer before it is refused (ray.init itself
# retries for about a minute).
CONNECT_TIMEOUT_S = 5.0


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("--ray needs Ray Data: pip install 'ray[data]'") from None
    return ray


@contextlib.contextmanager
def connect(address: str, num_cpus: int | None = None) -> Iterator[None]:
    """Join the Ray cluster at `address` (`auto`: the one `ray start` made on this machine;
    HOST:PORT or ray://HOST:PORT) or, for `local`, start one in this process; shut down on
    leaving. An address that does not answer within CONNECT_TIMEOUT_S is one ConfigError."""
    ray = _ray()
    if address not in ("local", "auto"):
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), CONNECT_TIMEOUT_S):
                pass
        except (OSError, ValueError) as e:
            why = (
                e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
            )
            raise ConfigError(
                f"--ray {address}: no Ray cluster answers there ({why}); start one with "
                f"`ray start --head`, or give --ray alone for a Ray started here"
            ) from None
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False)  # its notes, not ours
    # Ray Data's advice for small inputs ("... but the operator only received 1 input(s)"):
    # that one message, not every warning Ray may have for the user.
    warnings.filterwarnings("ignore", "The minimum number of concurrent actors", UserWarning)
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(f"--ray {address}: cannot join the Ray cluster ({e})") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its plan, timing and bar notes
    ray.data.DataContext.get_current().enable_progress_bars = False  # sbert's bar counts
    try:
        yield
    finally:
        ray.shutdown()


def check_resources(actors: int, cpus: float, gpus: float) -> None:
    """Refuse an actor pool the cluster cannot place: Ray would wait for it forever."""
    ray = _ray()
    have = ray.cluster_resources()
    for kind, each in (("CPU", cpus), ("GPU", gpus)):
        if actors * each > have.get(kind, 0) + 1e-9:
            flag = f"--{kind.lower()}s-per-actor"
            raise ConfigError(
                f"--actors {actors} x {flag} {each:g} needs {actors * each:g} {kind}s; the Ray "
                f"cluster has {have.get(kind, 0):g}: fewer actors, or a smaller {flag}"
            )


class Embedder:
    """A Ray Data actor: loads the model once, then embeds each batch of rows it is given."""

    def __init__(self, model: str, batch_size: int, threads: int | None = None, gpus: float = 0):
        from sbert.inference.load import load

        if threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        self.model = load(model)
        self.batch_size, self.device = batch_size, None  # None: an export, on its runtime
        # A PyTorch model runs on the GPU Ray gave the actor (the only one it sees: cuda:0),
        # else on the CPU.
        if hasattr(self.model, "parameters"):
            import torch

            if gpus and not torch.cuda.is_available():
                raise SbertError(
                    f"--gpus-per-actor {gpus:g}: the actor's torch sees no CUDA device (a CPU "
                    f"build of torch on that machine?)"
                )
            self.device = torch.device("cuda", 0) if gpus else torch.device("cpu")
            if threads:
                torch.set_num_threads(threads)

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch["text"]]
        vectors = self.model.encode(texts, self.batch_size, normalize=True, device=self.device)
        return {"id": batch["id"], "vector": np.asarray(vectors, np.float32)}


class RayShards:
    """`shards(todo, bar)` for embed.embed_corpus: the rows of the shards `todo` through a pool
    of `actors` Embedder actors; yields (shard, vectors) as each shard is whole."""

    def __init__(self, model: str, texts: list[str], shard_size: int, batch_size: int,
                 actors: int, cpus: float, gpus: float):  # fmt: skip
        self.model, self.texts, self.shard_size = str(model), texts, shard_size
        self.batch_size, self.actors, self.cpus, self.gpus = batch_size, actors, cpus, gpus

    def __call__(self, todo: list[int], bar) -> Iterator[tuple[int, np.ndarray]]:
        if not todo:
            return
        import pyarrow as pa

        ray = _ray()
        n, size = len(self.texts), self.shard_size
        # A block is what one actor takes at a time: one map batch, so that no actor idles at
        # the end while another finishes a long block (blocks of n/8 rows left one of two
        # actors idle for seconds; measured, docs/beyond-one-machine.md).
        block = 4 * self.batch_size
        tables = []
        for s in todo:
            for a in range(s * size, min(n, (s + 1) * size), block):
                b = min(n, (s + 1) * size, a + block)
                ids = pa.array(np.arange(a, b, dtype=np.int64))
                tables.append(pa.table({"id": ids, "text": pa.array(self.texts[a:b])}))
        threads = max(1, int(self.cpus)) if self.cpus else None
        data = ray.data.from_arrow(tables).map_batches(
            Embedder,
            fn_constructor_kwargs={
                "model": self.model,
                "batch_size": self.batch_size,
                "threads": threads,
                "gpus": self.gpus,
            },  # fmt: skip
            batch_size=block,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.cpus,
            num_gpus=self.gpus,
        )
        pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # shard -> (vectors, filled)
        try:
            yield from self._gather(data.iter_batches(batch_size=None, batch_format="numpy"),
                                    pending, bar)  # fmt: skip
        except ray.exceptions.RayError as e:  # an actor that failed (its model, its memory)
            first = next((x for x in str(e).splitlines() if x.strip()), type(e).__name__)
            raise SbertError(
                f"the Ray job failed ({first.strip()}); the finished shards are kept: run "
                f"again to embed the rest"
            ) from None
        if pending:  # Ray lost rows: never write a shard with holes
            raise SbertError(f"Ray returned shards {sorted(pending)} incomplete; run again")

    def _gather(self, batches, pending: dict, bar) -> Iterator[tuple[int, np.ndarray]]:
        """Each shard's vectors from the batches the actors return, in any order."""
        n, size = len(self.texts), self.shard_size
        for batch in batches:
            ids = np.asarray(batch["id"], np.int64)
            vectors = np.asarray(batch["vector"], np.float32)
            for s in np.unique(ids // size).tolist():
                a = s * size
                rows = min(size, n - a)
                if s not in pending:
                    pending[s] = (np.empty((rows, vectors.shape[1]), np.float32),
                                  np.zeros(rows, bool))  # fmt: skip
                out, filled = pending[s]
                mine = (ids // size) == s
                out[ids[mine] - a] = vectors[mine]
                filled[ids[mine] - a] = True
                if filled.all():
                    del pending[s]
                    yield s, out
            bar.update(len(ids))
