"""A model's fingerprint names the vectors it gives: the same for the same settings and
weights, another when any setting that changes a vector or any weight changes."""

from __future__ import annotations

import torch

from sbert import SentenceBert


def tiny() -> SentenceBert:
    torch.manual_seed(0)
    return SentenceBert.from_config("tiny")


def test_a_fingerprint_follows_every_setting_and_weight_of_the_vectors():
    base = tiny().fingerprint()
    assert tiny().fingerprint() == base  # the same weights and settings
    shorter = tiny()
    shorter.truncate(16)  # the same weights, another sequence length: other vectors
    normalized = tiny()
    normalized.normalize = not normalized.normalize
    cls = tiny()
    cls.pooling = "cls"
    moved = tiny()
    with torch.no_grad():
        moved.bert.layers[0].ffn.up.weight[0, 0] += 1e-3
    changed = [m.fingerprint() for m in (shorter, normalized, cls, moved)]
    assert base not in changed and len(set(changed)) == 4
