"""What computing the real tokens only saves a training step (`token_index`, RealTokens in
sbert/models/bert.py), against the same step computing every padded position.

all-MiniLM-L6-v2, forward and backward of the regression objective over the first N length-
bucketed training batches of a data file, exactly as `sbert train` makes them; the two ways
alternate round by round (the first one rotating, after one untimed round of each) and the
ratio is per round, so that a busy machine slows both alike. Prints the share of padding in
the batches and the per-round ratios.

    python bench/padding.py --data data/stsbenchmark/sts-train.csv --precision bf16
    python bench/padding.py --data data/sick/SICK_train_trial.txt@TRAIN --batch-size 16
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from common import STSB_TRAIN, machine

from sbert.data.batching import bucketed_batches, collate, tokenize_pairs
from sbert.data.specs import read_spec
from sbert.models.losses import regression_loss
from sbert.models.sentence import SentenceBert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(STSB_TRAIN), help="a training data spec")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args()
    print(machine())
    torch.manual_seed(0)
    model = SentenceBert.from_pretrained("all-MiniLM-L6-v2").train()
    data = tokenize_pairs(read_spec(args.data), model.tokenizer, objective="regression")
    batches = bucketed_batches(data.lengths, args.batch_size, seed=0)[: args.batches]
    tensors = [collate(data, b, model.tokenizer.pad_id) for b in batches]
    real = sum(int(t["attention_mask"].sum()) for t in tensors)
    padded = sum(t["attention_mask"].numel() for t in tensors)
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if args.precision == "bf16"
        else contextlib.nullcontext()
    )

    def steps(real_only: bool) -> float:
        started = time.perf_counter()
        for t in tensors:
            index = t.get("token_index") if real_only else None  # none: no padding
            with autocast:
                u, v = model(t["input_ids"], t["attention_mask"], token_index=index).chunk(2)
                loss = regression_loss(u.float(), v.float(), t["scores"])
            loss.backward()
        return time.perf_counter() - started

    steps(False), steps(True)  # untimed: first calls build kernels and allocate
    seconds = {False: [], True: []}
    for r in range(args.rounds):
        for real_only in (False, True) if r % 2 == 0 else (True, False):
            seconds[real_only].append(steps(real_only))
    ratios = [a / b for a, b in zip(seconds[False], seconds[True], strict=True)]
    print(
        f"{args.data}, batch {args.batch_size}, {len(tensors)} batches, {args.precision}: "
        f"padding {1 - real / padded:.1%} of the positions; every position "
        f"{statistics.median(seconds[False]):.2f} s, real tokens only "
        f"{statistics.median(seconds[True]):.2f} s (medians of {args.rounds} rounds): "
        f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
