"""How the objectives pull on the shared encoder, and what each balancer costs, on SICK TRAIN.

The demo's starting point (all-MiniLM-L6-v2, a fresh classifier, embeddings frozen as in the
`partial` strategy) on the first N batches of 16 SICK TRAIN pairs, three objectives from one
forward pass: classification, cosine regression and multiple negatives ranking (entailment
pairs as positives, contradictions as hard negatives). Prints

- each objective's share of the encoder's gradient norm under the demo's weights (0.1 for
  classification, 1 for the others) and the cosine between the objectives' raw gradients;
- the seconds of one forward + balanced backward per `--balance` method, and the ratio to
  `fixed` (methods interleaved batch by batch, so a busy machine slows them alike).

    python bench/balance.py --batches 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from sbert import SentenceBert  # noqa: E402
from sbert.balance import BALANCE_METHODS, make_balancer  # noqa: E402
from sbert.batching import collate, tokenize_pairs  # noqa: E402
from sbert.data import NLI_LABELS, read_pairs  # noqa: E402
from sbert.losses import multiple_negatives_ranking_loss, sentence_ids  # noqa: E402
from sbert.multitask import MultiTaskModel  # noqa: E402
from sbert.strategies import knobs, param_groups  # noqa: E402

SICK = "data/sick/SICK_train_trial.txt"
OBJECTIVES = ("classification", "regression", "mnrl")
WEIGHTS = {"classification": 0.1}  # the demo's --loss-weights 0.1 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = MultiTaskModel(SentenceBert.from_pretrained("all-MiniLM-L6-v2"), NLI_LABELS)
    param_groups(model, knobs("partial"), 2e-5, 0.1, 0.01)  # freezes the embeddings
    model.train()
    shared = [p for p in model.encoder.parameters() if p.requires_grad]
    heads = list(model.classifier.parameters())
    label_index = {name: i for i, name in enumerate(NLI_LABELS)}
    data = read_pairs(SICK, split="TRAIN", limit=16 * args.batches)
    tokens = tokenize_pairs(data, model.encoder.tokenizer, label_index)
    pad = model.encoder.tokenizer.pad_id
    batches = [collate(tokens, range(i, i + 16), pad) for i in range(0, 16 * args.batches, 16)]

    def losses(batch: dict) -> dict[str, torch.Tensor]:
        out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["scores"])
        ids = sentence_ids(batch["input_ids"], batch["attention_mask"])
        mnrl = multiple_negatives_ranking_loss(
            out.u, out.v, batch["labels"], label_index["entailment"],
            label_index["contradiction"], ids,
        )  # fmt: skip
        return {**out.losses, **({"mnrl": mnrl} if mnrl is not None else {})}

    runs = {m: make_balancer(m, OBJECTIVES, WEIGHTS) for m in BALANCE_METHODS}
    runs["fixed + report"] = make_balancer("fixed", OBJECTIVES, WEIGHTS)
    seconds = {name: [] for name in runs}
    reports = []
    for index, batch in enumerate(batches):
        for name, balancer in runs.items():
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            logs = balancer.backward(losses(batch), shared, heads, report=name.endswith("report"))
            if index:  # the first batch warms up
                seconds[name].append(time.perf_counter() - started)
            if name.endswith("report"):
                reports.append(logs)

    print(f"{len(batches)} batches of 16 SICK TRAIN pairs, weights {WEIGHTS} (others 1)")
    keys = sorted({k for r in reports for k in r if k.startswith(("grad_share", "grad_cos"))})
    for key in keys:
        values = [r[key] for r in reports if key in r]
        print(f"{key:<40} mean {statistics.mean(values):7.3f}  "
              f"min {min(values):7.3f}  max {max(values):7.3f}")  # fmt: skip
    base = statistics.median(seconds["fixed"])
    print(f"\n{'method':<16}{'s/step':>10}{'x fixed':>10}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<16}{median:10.3f}{median / base:10.2f}")


if __name__ == "__main__":
    main()
