"""The batcher on its own, with an encoder that records what it is asked: batches keep to their
budget and arrival order, each request gets its own rows, a request cancelled before its texts
are taken costs no model time, and a model that fails fails its batch's requests only."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from sbert.heads import Heads
from sbert.serve.batcher import Batcher


class Recorder:
    """An Encoder whose vector of a text is [len(text), 0, ...]; it waits for `go` first."""

    dim, max_seq_length, heads = 4, 512, Heads()

    def __init__(self):
        self.calls: list[list[str]] = []
        self.go = threading.Event()

    def encode(self, texts, batch_size=32, normalize=False, device=None, show_progress_bar=False):
        self.go.wait(10)
        self.calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("the model failed")
        out = np.zeros((len(texts), self.dim), np.float32)
        out[:, 0] = [len(t) for t in texts]
        return out


async def run(batcher: Batcher, recorder: Recorder, jobs: list[list[str]], cancel=()):
    """Queue the jobs (cancelling some), then start the worker: nothing is taken before."""
    submitted = [batcher.submit(texts, [len(t) for t in texts]) for texts in jobs]
    for i in cancel:
        submitted[i].cancelled = True
    batcher.start()
    recorder.go.set()
    done = [j.future for i, j in enumerate(submitted) if i not in cancel]
    return await asyncio.wait_for(asyncio.gather(*done, return_exceptions=True), 10)


@pytest.mark.parametrize(
    "tokens, size, lengths",
    [
        (24, 3, [[10, 2], [5, 12], [1, 7]]),  # the token budget cuts: 10 x 3 > 24, 12 x 3 > 24
        (1000, 3, [[10, 2, 5], [12, 1, 7]]),  # the size cuts
    ],
)
def test_batches_keep_their_budget_and_every_request_gets_its_rows(tokens, size, lengths):
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_tokens=tokens, max_batch_size=size)
    jobs = [["a" * 10, "b" * 2], ["c" * 5], ["d" * 12, "e" * 1, "f" * 7]]
    results = asyncio.run(run(batcher, recorder, jobs))
    batcher.stop()
    for texts, vectors in zip(jobs, results, strict=True):
        assert vectors[:, 0].tolist() == [len(t) for t in texts]
    assert [list(map(len, call)) for call in recorder.calls] == lengths  # in arrival order


def test_a_cancelled_request_costs_no_model_time():
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_tokens=1000, max_batch_size=64)
    jobs = [["kept one"], ["gone one", "gone two"], ["kept two"]]
    asyncio.run(run(batcher, recorder, jobs, cancel={1}))
    batcher.stop()
    encoded = [t for call in recorder.calls for t in call]
    assert "kept one" in encoded and "kept two" in encoded
    assert not any(t.startswith("gone") for t in encoded)


def test_a_model_error_reaches_the_requests_of_its_batch_and_no_other():
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_tokens=1000, max_batch_size=2)
    jobs = [["ok 1"], ["boom", "spared"], ["ok 2"]]
    first, second, third = asyncio.run(run(batcher, recorder, jobs))
    batcher.stop()
    assert isinstance(first, RuntimeError) and isinstance(second, RuntimeError)
    assert third[:, 0].tolist() == [4]
    assert recorder.calls == [["ok 1", "boom"], ["ok 2"]]  # the failed request's rest not run


def test_a_request_over_two_batches_is_timed_over_both_and_counted_padded():
    """A request whose texts run in two model calls: its inference time is both calls', its
    queue time ends at the first; each batch's tokens are as the model saw them, padded to its
    longest text (the metrics' tokens a batch)."""

    called_at = []

    class Slow(Recorder):
        def encode(self, texts, *args, **kwargs):
            called_at.append(time.perf_counter())
            time.sleep(0.05)
            return super().encode(texts, *args, **kwargs)

    recorder, stats = Slow(), []
    batcher = Batcher(recorder, max_batch_tokens=1000, max_batch_size=2, on_batch=stats.append)

    async def one_request():
        job = batcher.submit(["a" * 9, "b" * 2, "c" * 4], [9, 2, 4])
        batcher.start()
        recorder.go.set()
        await asyncio.wait_for(job.future, 10)
        return job

    job = asyncio.run(one_request())
    batcher.stop()
    assert [(s.sentences, s.tokens) for s in stats] == [(2, 18), (1, 4)]
    assert job.inference_seconds == pytest.approx(sum(s.seconds for s in stats))
    assert job.inference_seconds >= 0.1  # both calls, not the last one alone
    assert job.queued_at <= job.started_at <= called_at[0] < called_at[1]  # the first call's
