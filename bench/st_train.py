"""The demo's work in sentence-transformers' own trainer, as one process (bench/train.py times it).

The first N SICK TRAIN pairs, both objectives: `SoftmaxLoss` (3 labels, [u; v; |u - v|]) on one
copy of the pairs and `CosineSimilarityLoss` (score rescaled to [0, 1]) on the other,
`multi_dataset_batch_sampler="round_robin"`, batch 16, lr 2e-5, warm-up ratio 0.1, weight
decay 0.01, gradient clipping at 1.0 (as ours), one epoch, no evaluation, no checkpoints. The
model is saved with its trained classifier in our layout, so that bench/train.py scores it
with the same code as ours.

    python bench/st_train.py --out DIR [--pairs 1000] [--seed 42]

Needs sentence-transformers' training extras: pip install "datasets>=2.16" "accelerate>=1.3".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import SICK


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

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

    from sbert.data.readers import read_pairs
    from sbert.folders import resolve
    from sbert.heads import Classifier

    train = read_pairs(SICK, split="TRAIN", limit=args.pairs)
    labels = sorted(train.label_names)
    index = {name: i for i, name in enumerate(labels)}
    torch.manual_seed(args.seed)  # the SoftmaxLoss classifier's initialisation
    model = SentenceTransformer(str(resolve("all-MiniLM-L6-v2")), device=args.device)
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
    trainer = SentenceTransformerTrainer(
        model=model,
        args=SentenceTransformerTrainingArguments(
            output_dir=args.out,
            num_train_epochs=1,
            per_device_train_batch_size=16,
            learning_rate=2e-5,
            warmup_steps=0.1,  # a float below 1 is a ratio in transformers 5
            weight_decay=0.01,
            max_grad_norm=1.0,
            seed=args.seed,
            data_seed=args.seed,
            multi_dataset_batch_sampler="round_robin",
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            use_cpu=args.device == "cpu",
            disable_tqdm=True,
        ),
        train_dataset=datasets,
        loss={"nli": softmax, "sts": CosineSimilarityLoss(model)},
    )
    trainer.train()
    final = Path(args.out) / "final"
    model.save(str(final))
    weight, bias = (t.detach().float().cpu().numpy() for t in softmax.classifier.parameters())
    Classifier(labels, weight, bias).write(final)


if __name__ == "__main__":
    main()
