"""Encoding speed: our `SentenceBert.encode` against `SentenceTransformer.encode`, side by side.

All encode every STS-B dev sentence (3,000: fields 5 and 6 of each row) with the same
checkpoint (all-MiniLM-L6-v2), in this one process, at each batch size. After a warm-up they
run in turn (the order rotates each round), so that a change in the machine's load hits all
alike; each figure is the median over the rounds. Beside ours and theirs run the ONNX exports of
the same checkpoint on ONNX Runtime (`sbert export`: "onnx" fp32 and "int8"), when onnx,
onnxscript and onnxruntime are installed.

With --openvino (its own environment, bench/README.md): our `sbert export --format openvino
--quantize int8` ("ov-bf16": the fp32 graph in bf16 where the CPU has it, "ov-int8": static
int8), and the anchors: sentence-transformers' OpenVINO backend at its default precision
("st-ov") and its IR statically quantised by NNCF as optimum-intel's OVQuantizationConfig does
by default, calibrated on the same 300 STS-B train sentences ("st-ov-int8").

The warm-up pass (all the sentences, by default) is timed and printed too: it holds what a
runtime does once per input shape. Then, one sentence at a time (batch 1, as a server often
runs): latency p50/p95 per sentence of each, in turn per sentence. Then every row's quality
(STS-B dev and SICK TRIAL Spearman x 100 of cosine vs gold), its parity (min cosine to our
PyTorch fp32 over the 3,000 sentences) and its batch independence (min cosine of 96
sentences encoded alone against the same inside mixed batches of 32), and the file sizes.

Printed per batch size: sentences/s, real (non-padding) tokens/s, the achieved model GFLOP/s
(forward: 2 N_nonembedding + attention per token, `Bert.flops_per_token`, counted on real
tokens only) beside this machine's fp32 matmul peak measured here, and the ratio ours/theirs.
The max abs difference of the embeddings is printed as a sanity check (ours vs theirs; the
ONNX rows vs ours); nothing is asserted.

    python bench/encode.py [--rounds 3] [--batch-sizes 32 128] [--limit N] [--device cpu]
                           [--onnx EXPORT_DIR] [--latency N] [--openvino]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# What a user's process gets: `tokenizers` tokenizes a call's sentences on every core. (common.py
# turns that off for the benches that fork; this one does not fork.) Tokenizing one thread at a
# time, the 3,000 sentences took 70 ms a pass where the OpenVINO int8 row took 0.99 s in all:
# a fixed cost that every row paid alike and that shrank the ratios of the fast rows
# (docs/performance.md). TOKENIZERS_PARALLELISM=false still measures that way.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
from common import SICK, STSB_DEV, cpu_name, matmul_peak, sts_sentences, sync

from sbert.data.readers import read_pairs


def timed(fn, batch_size: int, sentences: list[str], device: torch.device):
    """(seconds, embeddings) of one encode call."""
    sync(device)
    start = time.perf_counter()
    out = fn(batch_size, sentences)
    sync(device)
    return time.perf_counter() - start, out


def onnx_runners(args, source: Path, workdir: Path) -> tuple[dict, Path | None]:
    """The fp32 and int8 ONNX runners of `source` and their folder, exported into `workdir`
    unless --onnx names an export (made with --quantize int8); ({}, None) when the ONNX
    libraries are missing."""
    try:
        from sbert.inference.export import GRAPH, GRAPH_INT8, export
        from sbert.inference.onnx_runner import OnnxEncoder
    except ImportError as e:
        print(f"onnx rows skipped ({e}): pip install onnx onnxscript onnxruntime")
        return {}, None
    folder = Path(args.onnx) if args.onnx else workdir / "onnx"
    if not args.onnx:
        start = time.perf_counter()
        export(source, folder, quantize="int8")
        print(f"sbert export --quantize int8: {time.perf_counter() - start:.1f} s")
    threads = torch.get_num_threads()  # the same thread count as ours and theirs
    graphs = {"onnx": GRAPH, "int8": GRAPH_INT8}
    return {
        n: OnnxEncoder.load(folder, graph=g, threads=threads) for n, g in graphs.items()
    }, folder


def openvino_runners(source: Path, workdir: Path) -> dict:
    """Ours on OpenVINO (bf16 and int8) and the anchors: sentence-transformers' OpenVINO backend
    (default precision) and its IR quantised as optimum-intel's defaults do (NNCF, 300 STS-B
    train sentences, the calibration set of ours)."""
    import shutil

    import nncf
    import openvino
    from sentence_transformers import SentenceTransformer

    from sbert.inference.export import calibration_sentences, export
    from sbert.inference.openvino_runner import OpenVinoEncoder

    start = time.perf_counter()
    export(source, workdir / "ov", quantize="int8", format="openvino")
    print(f"sbert export --format openvino --quantize int8: {time.perf_counter() - start:.1f} s")
    ours = {
        "ov-bf16": OpenVinoEncoder.load(
            workdir / "ov", precision="auto", graph="openvino/model.xml"
        ),
        "ov-int8": OpenVinoEncoder.load(workdir / "ov", precision="int8"),
    }
    st_dir = workdir / "st-ov"
    shutil.copytree(source, st_dir)
    st = SentenceTransformer(str(st_dir), backend="openvino", device="cpu")
    st.save_pretrained(str(st_dir))  # openvino/openvino_model.xml
    tokenizer = st.tokenizer
    calibration = [dict(tokenizer(s, return_tensors="np")) for s in calibration_sentences(None)]
    start = time.perf_counter()
    quantized = nncf.quantize(  # optimum-intel's OVQuantizationConfig() defaults
        openvino.Core().read_model(str(st_dir / "openvino" / "openvino_model.xml")),
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
        fast_bias_correction=True,
        subset_size=len(calibration),
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            overflow_fix=nncf.OverflowFix.DISABLE
        ),
    )
    name = "openvino_model_qint8_quantized.xml"
    openvino.save_model(quantized, str(st_dir / "openvino" / name), compress_to_fp16=False)
    print(
        f"anchor: NNCF static int8 of sentence-transformers' IR: "
        f"{time.perf_counter() - start:.1f} s"
    )
    st_int8 = SentenceTransformer(
        str(st_dir),
        backend="openvino",
        device="cpu",
        model_kwargs={"file_name": f"openvino/{name}"},
    )

    def st_encode(model):
        return lambda s, batch_size=32, normalize=False: model.encode(
            s, batch_size=batch_size, normalize_embeddings=normalize, show_progress_bar=False
        )

    return {
        "ours": ours,
        "anchors": {"st-ov": st_encode(st), "st-ov-int8": st_encode(st_int8)},
    }


def independence(encode, sentences: list[str]) -> float:
    """Min cosine of each sentence encoded alone against the same inside mixed batches of 32
    (96 sentences drawn at random: every batch mixes lengths)."""
    rng = np.random.default_rng(0)
    few = [sentences[i] for i in rng.choice(len(sentences), min(96, len(sentences)), replace=False)]
    alone = np.stack([np.asarray(encode([s], batch_size=1))[0] for s in few])
    mixed = np.asarray(encode(few, batch_size=32))
    return float(min_cosine(alone, mixed))


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def spearman(encode, pairs) -> float:
    """Spearman x 100 of the cosine of each pair's vectors against the gold scores."""
    from scipy.stats import spearmanr

    u = encode([p.a for p in pairs], batch_size=128, normalize=True)
    v = encode([p.b for p in pairs], batch_size=128, normalize=True)
    return 100 * float(spearmanr((u * v).sum(-1), [p.score for p in pairs]).statistic)


def latency(runners: dict, sentences: list[str], device: torch.device) -> dict:
    """Per-sentence seconds and vectors of each runner at batch 1, the runners in turn per
    sentence (the order rotating) so that load spikes hit all alike."""
    names = list(runners)
    seconds = {name: [] for name in names}
    vectors = {name: [] for name in names}
    for i, sentence in enumerate(sentences):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t, out = timed(runners[name], 1, [sentence], device)
            seconds[name].append(t)
            vectors[name].append(np.asarray(out)[0])
    return seconds, {name: np.stack(v) for name, v in vectors.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (median is reported)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    p.add_argument("--limit", type=int, default=0, help="encode only the first N sentences")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    p.add_argument(
        "--warmup", type=int, default=0, help="sentences per warm-up pass (0: all of them)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--onnx", default=None, help="an `sbert export --quantize int8` folder to use")
    p.add_argument("--latency", type=int, default=1000, help="sentences timed at batch 1 (0: no)")
    p.add_argument("--openvino", action="store_true", help="add the OpenVINO rows (ours, anchors)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    import sbert
    from sbert.folders import resolve

    device = torch.device(args.device)
    sentences = sts_sentences(args.limit)
    path = resolve("all-MiniLM-L6-v2")
    ours = sbert.SentenceBert.from_pretrained(path).to(device).eval()
    theirs = SentenceTransformer(str(path), device=str(device)).eval()

    lengths = [len(ids) for ids in ours.tokenize(sentences)]
    tokens = sum(lengths)
    # Model FLOPs of one pass, on real tokens: each sentence attends over its own length.
    flops = sum(ours.bert.flops_per_token(n, training=False) * n for n in lengths)

    print("# bench/encode.py: SentenceBert.encode vs SentenceTransformer.encode")
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
        f"TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}, device {device}"
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
    workdir = tempfile.TemporaryDirectory()
    onnx, onnx_dir = (
        onnx_runners(args, path, Path(workdir.name)) if device.type == "cpu" else ({}, None)
    )
    runners.update({n: (lambda bs, s, r=r: r.encode(s, batch_size=bs)) for n, r in onnx.items()})
    encoders = {"ours": ours.encode, **{n: r.encode for n, r in onnx.items()}}
    if args.openvino and device.type == "cpu":
        ov = openvino_runners(path, Path(workdir.name))
        for name, encoder in ov["ours"].items():
            onnx[name] = encoder
            encoders[name] = encoder.encode
        encoders.update(ov["anchors"])
        runners.update(
            {
                n: (lambda bs, s, e=e: e(s, batch_size=bs))
                for n, e in encoders.items()
                if n.startswith(("ov", "st-ov"))
            }
        )
    with torch.inference_mode():
        # Warm-up, over every sentence by default: allocators, tokenizer caches, and the
        # kernels a runtime makes at each new input shape (OpenVINO's first pass over these
        # sentences ran 20-25% slower than its next ones). Its times are printed, not hidden.
        for bs in args.batch_sizes:
            first = {
                name: timed(run, bs, sentences[: args.warmup or None], device)[0]
                for name, run in runners.items()
            }
            print(f"warm-up, b{bs}: " + ", ".join(f"{n} {t:.2f}s" for n, t in first.items()))

        times = {(bs, name): [] for bs in args.batch_sizes for name in runners}
        last = {}
        for r in range(args.rounds):
            for bs in args.batch_sizes:
                names = list(runners)
                for name in names[r % len(names) :] + names[: r % len(names)]:
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
    print("max|diff|: ours vs theirs; onnx and int8 vs ours")
    header = (
        f"{'batch':>5} {'impl':<7} {'median s':>9} {'(best)':>8} {'sent/s':>8} {'tok/s':>8} "
        f"{'GFLOP/s':>8} {'% peak':>7} {'max|diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for bs in args.batch_sizes:
        for name in runners:
            other = "theirs" if name == "ours" else "ours"
            diff = float(np.abs(last[bs, name] - last[bs, other]).max())
            t = statistics.median(times[bs, name])
            print(
                f"{bs:>5} {name:<7} {t:9.3f} {f'({min(times[bs, name]):.3f})':>8} "
                f"{len(sentences) / t:8.1f} {tokens / t:8.0f} {flops / t / 1e9:8.1f} "
                f"{100 * flops / t / 1e9 / peak:6.1f}% {diff:10.2e}"
            )
    print()
    for bs in args.batch_sizes:
        for name in (n for n in runners if n != "theirs"):
            ours_t, theirs_t = times[bs, name], times[bs, "theirs"]
            # The runs of one round ran back to back: their ratio is the least disturbed by
            # load that comes and goes (other processes on a shared machine).
            paired = statistics.median(t / o for t, o in zip(theirs_t, ours_t, strict=True))
            print(
                f"batch {bs}: {name}/theirs sentences/s = {paired:.2f}x (median of per-round "
                f"ratios; ratio of medians "
                f"{statistics.median(theirs_t) / statistics.median(ours_t):.2f}x, "
                f"of best rounds {min(theirs_t) / min(ours_t):.2f}x)"
            )

    if "onnx" in runners:
        print()
        for bs in args.batch_sizes:
            base = times[bs, "onnx"]
            print(
                f"batch {bs}, sentences/s against our fp32 export (onnx), median of per-round "
                "ratios: "
                + ", ".join(
                    f"{n} {statistics.median(b / t for b, t in zip(base, times[bs, n])):.2f}x"  # noqa: B905
                    for n in runners
                )
            )

    if args.latency:
        few = sentences[: args.latency]
        with torch.inference_mode():
            seconds, vectors = latency(runners, few, device)
        print()
        print(f"batch 1, {len(few)} sentences one at a time: latency per sentence")
        print(f"{'impl':<7} {'p50 ms':>8} {'p95 ms':>8} {'sent/s':>8} {'vs theirs':>10}")
        theirs_rate = len(few) / sum(seconds["theirs"])
        for name, s in seconds.items():
            p50, p95 = np.percentile(s, [50, 95]) * 1000
            rate = len(few) / sum(s)
            print(f"{name:<7} {p50:8.2f} {p95:8.2f} {rate:8.1f} {rate / theirs_rate:9.2f}x")
        for name in onnx:
            diff = float(np.abs(vectors[name] - vectors["ours"]).max())
            print(f"batch 1 max|{name} - ours| = {diff:.2e}")

    if len(encoders) > 1:
        print()
        print(
            "quality: Spearman x 100 of cosine vs gold; parity: min cosine to ours (PyTorch fp32)"
        )
        print("over the 3,000 sentences; batch independence: min cosine alone vs in mixed batches")
        data = {
            "STS-B dev": read_pairs(STSB_DEV).pairs,
            "SICK TRIAL": read_pairs(SICK, split="TRIAL").pairs,
        }
        reference = last[args.batch_sizes[0], "ours"]
        with torch.inference_mode():
            for name, encode in {"theirs": runners["theirs"], **encoders}.items():
                if name == "theirs":
                    encode = lambda s, batch_size=32, normalize=False: theirs.encode(  # noqa: E731
                        s,
                        batch_size=batch_size,
                        normalize_embeddings=normalize,
                        show_progress_bar=False,
                    )
                scores = {n: spearman(encode, pairs) for n, pairs in data.items()}
                parity = min_cosine(np.asarray(encode(sentences, batch_size=32)), reference)
                alone = independence(encode, sentences)
                print(
                    f"{name:<11} "
                    + ", ".join(f"{n} {v:.2f}" for n, v in scores.items())
                    + f"; parity {parity:.5f}; batch independence {alone:.6f}"
                )
        if onnx_dir is not None:
            sizes = {"model.safetensors": path / "model.safetensors"}
            sizes.update({g: onnx_dir / g for g in onnx["int8"].record["graphs"].values()})
            print(
                "file sizes: "
                + ", ".join(f"{n} {p.stat().st_size / 2**20:.1f} MiB" for n, p in sizes.items())
            )
    workdir.cleanup()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
