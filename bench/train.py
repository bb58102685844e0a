"""Training speed: our multi-task trainer against sentence-transformers' trainer, side by side.

The work is the demo's (`python train.py`): the first 1,000 SICK TRAIN pairs, both objectives
(3-way entailment classification over [u; v; |u - v|] and cosine regression on the relatedness
score rescaled to [0, 1]), batch 16, one epoch, lr 2e-5, starting from all-MiniLM-L6-v2. Three
runs in this one process, alternating their order from round to round:

- ours, demo:      `sbert.train.Trainer` with the demo's settings exactly as `make_config` gives
                   them now (read at run time: the defaults may change);
- ours, reference: the same trainer at the reference's settings (head lr = encoder lr = 2e-5,
                   strategy full, one epoch, loss weights 1:1);
- sentence-transformers: `SentenceTransformerTrainer`, `SoftmaxLoss` (3 labels, [u; v; |u-v|])
                   on one copy of the pairs and `CosineSimilarityLoss` ((score - 1) / 4) on the
                   other, `multi_dataset_batch_sampler="round_robin"`, batch 16, lr 2e-5, warm-up
                   ratio 0.1, weight decay 0.01 and gradient clipping at 1.0 (as ours), one epoch,
                   no evaluation, no saving, the same seed.

Only training is timed (`Trainer.fit` with checkpoints and plots switched off, as ST's
save_strategy="no"; `SentenceTransformerTrainer.train`): model loading and evaluation are not.
Afterwards each model is scored on SICK TRIAL (relatedness Spearman x 100 of cosine vs gold,
entailment accuracy; for ST with its trained SoftmaxLoss classifier) and STS-B dev (Spearman).

    python bench/train.py [--rounds 1] [--device cpu] [--threads N]

Needs sentence-transformers' training extras: pip install "datasets>=2.16" "accelerate>=1.3".
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SICK = ROOT / "data" / "sick" / "SICK_train_trial.txt"
STSB_DEV = ROOT / "data" / "stsbenchmark" / "sts-dev.csv"
PAIRS = 1000


@dataclass
class Run:
    name: str
    seconds: list[float] = field(default_factory=list)
    setup: list[float] = field(default_factory=list)
    pairs: int = 0  # training pairs per run (each with both targets)
    steps: int = 0  # optimizer steps per run
    sentences: int = 0  # sentences through the encoder per run
    flops: float = 0.0  # model FLOPs per run (6N + attention on real tokens)
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""


def missing_training_extras() -> list[str]:
    missing = []
    for module in ("datasets", "accelerate"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def training_flops(encoder, lengths: list[int]) -> float:
    """Model FLOPs to train on sentences of these lengths (each attends over its own length)."""
    return sum(encoder.flops_per_token(n, training=True) * n for n in lengths)


# ---------------------------------------------------------------------------------------------
# Ours


def run_ours(run: Run, values: dict, device: torch.device, out: Path, max_steps: int = 0):
    from sbert.config import make_config
    from sbert.train import Processes, Trainer

    values = {**values, "out": str(out), "no_eval": True, "device": str(device)}
    config = make_config({**values, "max_steps": max_steps})
    start = time.perf_counter()
    trainer = Trainer(config, out, device, Processes(), 0, None)
    run.setup.append(time.perf_counter() - start)
    # No checkpoint, no plot: ST runs with save_strategy="no" (and plots nothing).
    trainer.save_checkpoint = lambda: None
    trainer.plot = lambda: None
    counts = {"pairs": 0, "steps": 0, "lengths": []}
    step = trainer.train_step

    def counted(set_index, batch):
        data = trainer.train_sets[set_index]
        counts["pairs"] += len(batch)
        counts["steps"] += 1
        counts["lengths"] += [len(data.a[i]) for i in batch] + [len(data.b[i]) for i in batch]
        return step(set_index, batch)

    trainer.train_step = counted
    sync(device)
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # fit's progress bar, as ST's disable_tqdm
        trainer.fit()
    sync(device)
    run.seconds.append(time.perf_counter() - start)
    run.pairs, run.steps = counts["pairs"], counts["steps"]
    run.sentences = len(counts["lengths"])
    run.flops = training_flops(trainer.model.encoder.encoder, counts["lengths"])
    return trainer.model, config


def ours_metrics(model, device: torch.device) -> dict[str, float]:
    from sbert import batching
    from sbert.evaluate import evaluate

    index = {name: i for i, name in enumerate(model.labels)} or None
    metrics = {}
    for key, data in dev_sets().items():
        pairs = batching.tokenize_pairs(
            data, model.encoder.tokenizer, index if data.has_labels else None
        )
        result = evaluate(model, pairs, 128, device)
        metrics.update(
            {f"{key}/{k}": v for k, v in result.items() if k in ("spearman", "accuracy")}
        )
    return metrics


# ---------------------------------------------------------------------------------------------
# sentence-transformers


def run_theirs(
    run: Run,
    train,
    labels: list[str],
    device: torch.device,
    out: Path,
    seed: int,
    flops: float,
    max_steps: int = -1,
):
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import (
        CosineSimilarityLoss,
        SoftmaxLoss,
    )

    from sbert.model_folder import resolve

    start = time.perf_counter()
    torch.manual_seed(seed)  # the SoftmaxLoss classifier's initialisation
    model = SentenceTransformer(str(resolve("all-MiniLM-L6-v2")), device=str(device))
    index = {name: i for i, name in enumerate(labels)}
    a, b = [p.a for p in train.pairs], [p.b for p in train.pairs]
    lo, hi = train.score_range
    datasets = {
        "nli": Dataset.from_dict(
            {"sentence1": a, "sentence2": b, "label": [index[p.label] for p in train.pairs]}
        ),
        "sts": Dataset.from_dict(
            {
                "sentence1": a,
                "sentence2": b,
                "score": [(p.score - lo) / (hi - lo) for p in train.pairs],
            }
        ),
    }
    softmax = SoftmaxLoss(model, model.get_embedding_dimension(), num_labels=len(labels))
    losses = {"nli": softmax, "sts": CosineSimilarityLoss(model)}
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out),
        num_train_epochs=1,
        per_device_train_batch_size=16,
        learning_rate=2e-5,
        warmup_steps=0.1,  # a float below 1 is a ratio in transformers 5
        weight_decay=0.01,
        max_grad_norm=1.0,
        seed=seed,
        data_seed=seed,
        multi_dataset_batch_sampler="round_robin",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=device.type == "cpu",
        disable_tqdm=True,
        max_steps=max_steps,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=datasets, loss=losses
    )
    run.setup.append(time.perf_counter() - start)
    sync(device)
    start = time.perf_counter()
    result = trainer.train()
    sync(device)
    run.seconds.append(time.perf_counter() - start)
    run.steps = result.global_step
    # Round-robin: one batch of each data set in turn, every pair once per objective.
    run.pairs = len(train.pairs)
    run.sentences = 2 * 2 * len(train.pairs)
    run.flops = 2 * flops
    return model, softmax, index


@torch.inference_mode()
def theirs_metrics(model, softmax, index: dict[str, int]) -> dict[str, float]:
    from scipy.stats import spearmanr

    model.eval()
    softmax.eval()
    metrics = {}
    for key, data in dev_sets().items():
        a, b = [p.a for p in data.pairs], [p.b for p in data.pairs]
        unique = list(dict.fromkeys(a + b))  # each distinct sentence once, as ours does
        row = {s: i for i, s in enumerate(unique)}
        emb = model.encode(unique, batch_size=128, convert_to_tensor=True, show_progress_bar=False)
        u, v = emb[[row[s] for s in a]], emb[[row[s] for s in b]]
        cosine = F.cosine_similarity(u, v, dim=-1).cpu().numpy()
        metrics[f"{key}/spearman"] = 100 * float(
            spearmanr(cosine, [p.score for p in data.pairs]).statistic
        )
        if data.has_labels:
            logits = softmax.classifier(torch.cat([u, v, (u - v).abs()], dim=-1))
            gold = torch.tensor([index[p.label] for p in data.pairs], device=logits.device)
            metrics[f"{key}/accuracy"] = 100 * float((logits.argmax(-1) == gold).float().mean())
    return metrics


# ---------------------------------------------------------------------------------------------


def dev_sets() -> dict:
    from sbert.data import read_pairs

    return {
        "sick-trial": read_pairs(SICK, split="TRIAL"),
        "stsb-dev": read_pairs(STSB_DEV),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="training runs of each (median time)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--pairs", type=int, default=PAIRS, help="first N SICK TRAIN pairs (1000)")
    p.add_argument("--no-baseline", action="store_true", help="skip scoring the untrained model")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    import sbert.config
    from sbert.data import read_pairs
    from sbert.model import SentenceBert
    from sbert.multitask import MultiTaskModel

    missing = missing_training_extras()
    if missing:
        print(
            f"NOTE: sentence-transformers' trainer needs {' and '.join(missing)}, not "
            f'installed here: pip install "datasets>=2.16" "accelerate>=1.3" (or '
            f'"sentence-transformers[train]"). Running our trainer only.'
        )

    demo = sbert.config.make_config({})  # the demo's settings, as they are today
    reference = {
        "epochs": 1,
        "lr": 2e-5,
        "head_lr": 2e-5,
        "batch_size": 16,
        "warmup": 0.1,
        "weight_decay": 0.01,
        "max_grad_norm": 1.0,
        "strategy": "full",
        "freeze_layers": -1,
        "layer_decay": -1.0,
        "loss_weights": [1.0, 1.0],
        "dropout": -1.0,
        "grad_accum": 1,
    }
    train = read_pairs(SICK, split="TRAIN", limit=args.pairs)
    labels = sorted(train.label_names)
    fresh = SentenceBert.from_pretrained("all-MiniLM-L6-v2")
    # FLOPs of one pass over the pairs, both sentences of each (for ST, which encodes each
    # pair once per objective, twice that).
    lengths = [
        len(x) for x in fresh.tokenize([p.a for p in train.pairs] + [p.b for p in train.pairs])
    ]
    epoch_flops = training_flops(fresh.encoder, lengths)

    print("# bench/train.py: sbert.train.Trainer vs SentenceTransformerTrainer")
    st_version = __import__("sentence_transformers").__version__
    import transformers

    omp = os.environ.get("OMP_WAIT_POLICY", "(unset)")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, OMP_WAIT_POLICY={omp}, device {device}"
    )
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print(
        f"versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"sentence-transformers {st_version}, transformers {transformers.__version__}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"data: {len(train.pairs)} SICK TRAIN pairs, labels {labels}")
    shown = (
        "epochs",
        "lr",
        "head_lr",
        "batch_size",
        "warmup",
        "weight_decay",
        "strategy",
        "freeze_layers",
        "layer_decay",
        "loss_weights",
        "dropout",
        "mix",
        "seed",
    )
    print("ours, demo settings:      " + ", ".join(f"{k}={getattr(demo, k)}" for k in shown))
    ref = sbert.config.make_config({**reference, "limit": args.pairs})
    print("ours, reference settings: " + ", ".join(f"{k}={getattr(ref, k)}" for k in shown))

    runs = {
        "ours (demo)": Run("ours (demo)"),
        "ours (reference)": Run("ours (reference)"),
        "sentence-transformers": Run("sentence-transformers"),
    }
    if missing:
        runs["sentence-transformers"].note = f"not run: {', '.join(missing)} missing"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up, untimed: a few steps of each, so that neither pays the process's first-use
        # costs (allocator, oneDNN/cuBLAS kernels, lazy imports) inside its timed run.
        start = time.perf_counter()
        run_ours(Run("warm-up"), {**reference, "limit": args.pairs}, device, Path(tmp) / "w1", 3)
        if not missing:
            run_theirs(Run("warm-up"), train, labels, device, Path(tmp) / "w2", 0, 0, 3)
        print(f"(warm-up took {time.perf_counter() - start:.0f}s, not timed)", flush=True)
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for name in order:
                run, out = runs[name], Path(tmp) / f"{r}-{name.split()[-1].strip('()')}"
                if name == "sentence-transformers":
                    if missing:
                        continue
                    results[name] = run_theirs(
                        run, train, labels, device, out, demo.seed, epoch_flops
                    )
                else:
                    values = {} if name == "ours (demo)" else reference
                    values = {**values, "limit": args.pairs}
                    results[name] = run_ours(run, values, device, out)
                print(
                    f"round {r + 1}/{args.rounds}: {name} trained in {run.seconds[-1]:.1f}s "
                    f"({run.steps} steps)",
                    flush=True,
                )

    # Scores of the models of the last round (each run is seeded: they repeat).
    start = time.perf_counter()
    baseline = {}
    if not args.no_baseline:
        baseline = ours_metrics(MultiTaskModel(fresh).to(device), device)
    for name, run in runs.items():
        if name not in results:
            continue
        if name == "sentence-transformers":
            run.metrics = theirs_metrics(*results[name])
        else:
            run.metrics = ours_metrics(results[name][0], device)
    print(f"(evaluation took {time.perf_counter() - start:.0f}s, not timed)")

    keys = ["sick-trial/spearman", "sick-trial/accuracy", "stsb-dev/spearman"]
    print()
    columns = ["train s", "pairs/s", "steps", "sent/s", "GFLOP/s", "setup s"]
    header = f"{'run':<22} " + " ".join(f"{c:>8}" for c in columns)
    header += "   " + " ".join(f"{c:>8}" for c in ("SICK rho", "SICK acc", "STSb rho"))
    print(header)
    print("-" * len(header))

    def scores(metrics: dict[str, float]) -> str:
        return "   " + " ".join(f"{metrics.get(k, float('nan')):8.2f}" for k in keys)

    if baseline:
        print(
            f"{'pretrained, untrained':<22} "
            + " ".join(f"{'':>8}" for _ in columns)
            + scores(baseline)
        )
    for name, run in runs.items():
        if not run.seconds:
            print(f"{name:<22} {run.note}")
            continue
        t = statistics.median(run.seconds)
        cells = [
            t,
            run.pairs / t,
            run.steps,
            run.sentences / t,
            run.flops / t / 1e9,
            statistics.median(run.setup),
        ]
        print(
            f"{name:<22} "
            + " ".join(f"{c:8.1f}" if isinstance(c, float) else f"{c:8d}" for c in cells)
            + scores(run.metrics)
        )
    print()
    if runs["sentence-transformers"].seconds:
        theirs = runs["sentence-transformers"].seconds
        for name in ("ours (demo)", "ours (reference)"):
            ours = runs[name].seconds
            paired = statistics.median(t / o for t, o in zip(theirs, ours, strict=True))
            print(
                f"speed, {name} vs sentence-transformers (same {args.pairs} pairs, both "
                f"objectives): {statistics.median(theirs) / statistics.median(ours):.2f}x "
                f"(ratio of medians), {paired:.2f}x (median of per-round ratios)"
            )
    print(
        "pairs/s: training pairs (each with a label and a score) per second of training; "
        "sent/s: sentences through the encoder (ST encodes each pair once per objective); "
        "GFLOP/s: model FLOPs (6N + attention, real tokens) per second"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
