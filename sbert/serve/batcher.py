"""The dynamic batcher: every request's texts join one queue, and one worker thread runs the
model on batches taken from it by token budget (text-embeddings-inference's `next_batch`,
router/src/queue.rs).

A batch takes queued texts in arrival order while its padded size (longest sentence x
sentences) stays within `max_batch_tokens` and its count within `max_batch_size`; the encoder
then sorts them by length so that padding stays small. The model runs in the worker thread,
never on the event loop; each request's vectors go back to its own future. A request's answer
does not depend on what shared its batch as long as the encoder's vectors do not (tested through
HTTP). A request cancelled before its texts are taken (its client went away) costs nothing more.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sbert.inference.encoder import Encoder, check_finite


class ShuttingDown(Exception):
    """The server stopped before this request's texts were embedded."""


@dataclass(eq=False)
class Job:
    """One request's texts, and where their vectors go."""

    texts: list[str]
    lengths: list[int]  # tokens of each text as the model sees it
    future: asyncio.Future
    vectors: np.ndarray | None = None  # (N, H), filled in as batches finish
    remaining: int = 0
    cancelled: bool = False
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float | None = None  # when its first text was taken into a batch
    inference_seconds: float = 0.0  # model time of the batches it took part in

    def __post_init__(self) -> None:
        self.remaining = len(self.texts)


@dataclass(frozen=True)
class BatchStats:
    """What one model call did, for the metrics."""

    sentences: int
    tokens: int  # padded: longest x sentences
    seconds: float


class Batcher:
    """One queue, one worker thread running `encoder`.

    Args:
        encoder: what embeds the texts (any `Encoder`).
        max_batch_tokens, max_batch_size: the budget of one model call.
        on_batch: called in the worker with each batch's `BatchStats` (metrics).
        device: where a PyTorch encoder runs (None for an export).
    """

    def __init__(
        self,
        encoder: Encoder,
        max_batch_tokens: int,
        max_batch_size: int,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
        device=None,
    ):
        self.encoder, self.device = encoder, device
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.on_batch = on_batch
        self._queue: deque[tuple[Job, int]] = deque()  # (job, index of one of its texts)
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="sbert-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def depth(self) -> int:
        """Texts waiting for a batch."""
        return len(self._queue)

    def submit(self, texts: list[str], lengths: list[int]) -> Job:
        """Queue a request's texts; await `job.future` for its (N, H) vectors."""
        job = Job(texts, lengths, asyncio.get_running_loop().create_future())
        job.vectors = np.empty((len(texts), self.encoder.dim), np.float32)
        with self._ready:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            self._queue.extend((job, i) for i in range(len(texts)))
            self._ready.notify()
        return job

    def stop(self) -> None:
        """Fail what is still queued (ShuttingDown) and let the worker end."""
        with self._ready:
            self._stopping = True
            left = {job for job, _ in self._queue}
            self._queue.clear()
            self._ready.notify()
        for job in left:
            _resolve(job, ShuttingDown("the server shut down before this request was embedded"))

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                if self._stopping and not self._queue:
                    return
                batch = self._take()
            if batch:
                self._run(batch)

    def _take(self) -> list[tuple[Job, int]]:
        """Queued texts in arrival order, within the budget (at least one); a cancelled
        request's texts are dropped here."""
        batch: list[tuple[Job, int]] = []
        longest = 0
        while self._queue and len(batch) < self.max_batch_size:
            job, i = self._queue[0]
            if job.cancelled:
                self._queue.popleft()
                continue
            longer = max(longest, job.lengths[i])
            if batch and longer * (len(batch) + 1) > self.max_batch_tokens:
                break
            self._queue.popleft()
            batch.append((job, i))
            longest = longer
        return batch

    def _run(self, batch: list[tuple[Job, int]]) -> None:
        start = time.perf_counter()
        for job, _ in batch:
            job.started_at = job.started_at or start
        try:
            texts = [job.texts[i] for job, i in batch]
            vectors = self.encoder.encode(texts, batch_size=len(texts), device=self.device)
            check_finite(vectors, self.encoder)  # a damaged model: never an answer of NaNs
        except Exception as e:  # the model failed: every request in the batch hears of it
            for job in {job for job, _ in batch}:
                job.cancelled = True  # its other texts need not run
                _resolve(job, e)
            return
        seconds = time.perf_counter() - start
        longest = max(job.lengths[i] for job, i in batch)
        self.on_batch(BatchStats(len(batch), longest * len(batch), seconds))
        finished = []
        for (job, i), vector in zip(batch, vectors, strict=True):
            job.vectors[i] = vector
            job.remaining -= 1
            if job.remaining == 0:
                finished.append(job)
        for job in {job for job, _ in batch}:
            job.inference_seconds += seconds
        for job in finished:
            _resolve(job, job.vectors)


def _resolve(job: Job, result) -> None:
    """Hand a result (or an exception) to the job's future, on its event loop's thread."""

    def settle() -> None:
        if job.future.done():  # cancelled meanwhile
            return
        if isinstance(result, BaseException):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    job.future.get_loop().call_soon_threadsafe(settle)
