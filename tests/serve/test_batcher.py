"""The batcher on its own, with an encoder that records what it is asked: batches keep to their
budget and arrival order, each request gets its own rows, and a request cancelled before its
texts are taken costs no model time."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

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
    return await asyncio.gather(*done)


def test_batches_keep_their_budget_and_every_request_gets_its_rows():
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_tokens=40, max_batch_size=3)
    jobs = [["a" * 10, "b" * 2], ["c" * 5], ["d" * 12, "e" * 1, "f" * 7]]
    results = asyncio.run(run(batcher, recorder, jobs))
    batcher.stop()
    for texts, vectors in zip(jobs, results, strict=True):
        assert vectors[:, 0].tolist() == [len(t) for t in texts]
    for call in recorder.calls:  # at most 3 sentences, and longest x count <= 40 tokens
        assert len(call) <= 3 and max(map(len, call)) * len(call) <= 40
    assert [t for call in recorder.calls for t in call] == [t for job in jobs for t in job]


def test_a_cancelled_request_costs_no_model_time():
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_tokens=1000, max_batch_size=64)
    jobs = [["kept one"], ["gone one", "gone two"], ["kept two"]]
    asyncio.run(run(batcher, recorder, jobs, cancel={1}))
    batcher.stop()
    encoded = [t for call in recorder.calls for t in call]
    assert "kept one" in encoded and "kept two" in encoded
    assert not any(t.startswith("gone") for t in encoded)
