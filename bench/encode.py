"""Encoding speed: our `SentenceBert.encode` against `SentenceTransformer.encode`, side by side.

Both encode every STS-B dev sentence (3,000: fields 5 and 6 of each row) with the same
checkpoint (all-MiniLM-L6-v2), in this one process, at each batch size. After a warm-up the two
run alternately (ours first in even rounds, theirs first in odd ones), so that a change in the
machine's load hits both alike; each figure is the median over the rounds.

Printed per batch size: sentences/s, real (non-padding) tokens/s, the achieved model GFLOP/s
(forward: 2 N_nonembedding + attention per token, `Bert.flops_per_token`, counted on real
tokens only) beside this machine's fp32 matmul peak measured here, and the ratio ours/theirs.
The max abs difference of the two embeddings is printed as a sanity check; nothing is asserted.

    python bench/encode.py [--rounds 3] [--batch-sizes 32 128] [--limit N] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STSB_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"


def read_sentences(path: Path, limit: int = 0) -> list[str]:
    """Both sentences of every STS-B pair, in file order."""
    from sbert.data import read_pairs

    sentences = [s for pair in read_pairs(path).pairs for s in (pair.a, pair.b)]
    return sentences[:limit] if limit else sentences


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, n: int = 4096, repeats: int = 3) -> float:
    """Best fp32 GFLOP/s of an n x n @ n x n torch.matmul, after one warm-up product."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.matmul(a, b)
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def timed(fn, batch_size: int, sentences: list[str], device: torch.device):
    """(seconds, embeddings) of one encode call."""
    sync(device)
    start = time.perf_counter()
    out = fn(batch_size, sentences)
    sync(device)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (median is reported)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    p.add_argument("--limit", type=int, default=0, help="encode only the first N sentences")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    p.add_argument("--warmup", type=int, default=256, help="sentences per warm-up pass")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    import sbert
    from sbert.model_folder import resolve

    device = torch.device(args.device)
    sentences = read_sentences(STSB_DEV, args.limit)
    path = resolve("all-MiniLM-L6-v2")
    ours = sbert.SentenceBert.from_pretrained(path).to(device).eval()
    theirs = SentenceTransformer(str(path), device=str(device)).eval()

    lengths = [len(ids) for ids in ours.tokenize(sentences)]
    tokens = sum(lengths)
    # Model FLOPs of one pass, on real tokens: each sentence attends over its own length.
    flops = sum(ours.bert.flops_per_token(n, training=False) * n for n in lengths)

    print("# bench/encode.py: SentenceBert.encode vs SentenceTransformer.encode")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, device {device}"
    )
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print(
        f"versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"sentence-transformers {sys.modules['sentence_transformers'].__version__}, "
        f"transformers {sys.modules['transformers'].__version__}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"data: {len(sentences)} STS-B dev sentences, {tokens} real tokens "
        f"(mean {tokens / len(sentences):.1f}, max {max(lengths)}), "
        f"{flops / 1e9:.1f} GFLOP per pass; model all-MiniLM-L6-v2, "
        f"{ours.bert.num_parameters(exclude_embeddings=True) / 1e6:.2f}M "
        f"non-embedding parameters"
    )

    peak = matmul_peak(device)
    print(f"fp32 matmul peak (4096^3, best of 3): {peak:.1f} GFLOP/s")

    runners = {
        "ours": lambda bs, s: ours.encode(s, batch_size=bs),
        "theirs": lambda bs, s: theirs.encode(s, batch_size=bs, show_progress_bar=False),
    }
    with torch.inference_mode():
        for bs in args.batch_sizes:  # warm-up: allocator, kernels, tokenizer caches
            for run in runners.values():
                run(bs, sentences[: args.warmup])

        times = {(bs, name): [] for bs in args.batch_sizes for name in runners}
        last = {}
        for r in range(args.rounds):
            for bs in args.batch_sizes:
                order = list(runners) if r % 2 == 0 else list(reversed(runners))
                for name in order:
                    seconds, out = timed(runners[name], bs, sentences, device)
                    times[bs, name].append(seconds)
                    last[bs, name] = np.asarray(out)
            print(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(f"b{bs} {n} {times[bs, n][-1]:.2f}s" for bs, n in times)
            )

    peak_again = matmul_peak(device)
    print(f"fp32 matmul peak again at the end: {peak_again:.1f} GFLOP/s")
    peak = max(peak, peak_again)

    print()
    print("median over rounds (best round in brackets); GFLOP/s = model FLOPs on real tokens")
    header = (
        f"{'batch':>5} {'impl':<7} {'median s':>9} {'(best)':>8} {'sent/s':>8} {'tok/s':>8} "
        f"{'GFLOP/s':>8} {'% peak':>7} {'max|diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for bs in args.batch_sizes:
        diff = float(np.abs(last[bs, "ours"] - last[bs, "theirs"]).max())
        for name in runners:
            t = statistics.median(times[bs, name])
            print(
                f"{bs:>5} {name:<7} {t:9.3f} {f'({min(times[bs, name]):.3f})':>8} "
                f"{len(sentences) / t:8.1f} {tokens / t:8.0f} {flops / t / 1e9:8.1f} "
                f"{100 * flops / t / 1e9 / peak:6.1f}% {diff:10.2e}"
            )
    print()
    for bs in args.batch_sizes:
        ours_t, theirs_t = times[bs, "ours"], times[bs, "theirs"]
        # Ours and theirs of one round ran back to back: their ratio is the least disturbed by
        # load that comes and goes (other processes on a shared machine).
        paired = statistics.median(t / o for t, o in zip(theirs_t, ours_t, strict=True))
        print(
            f"batch {bs}: ours/theirs sentences/s = {paired:.2f}x (median of per-round ratios; "
            f"ratio of medians {statistics.median(theirs_t) / statistics.median(ours_t):.2f}x, "
            f"of best rounds {min(theirs_t) / min(ours_t):.2f}x)"
        )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
