"""Pooling: token vectors (B, T, H) -> one sentence vector (B, H) of the same width (SBERT §3)."""

from __future__ import annotations

from typing import Literal

import torch

PoolingMode = Literal["mean", "cls", "max"]
POOLING_MODES: tuple[str, ...] = ("mean", "cls", "max")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: PoolingMode) -> torch.Tensor:
    """Pool token vectors over the real (unpadded) tokens.

    Args:
        hidden: (B, T, H) token vectors.
        attention_mask: (B, T), 1 for real tokens, 0 for padding.
        mode: "mean" (SBERT's default, §3: the best of the three in its Table 6),
            "cls" (the first token's vector) or "max" (element-wise max over tokens).
    Returns:
        (B, H) sentence vectors.
    """
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if mode == "mean":
        # The clamp keeps an all-padding row finite instead of dividing by zero.
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(1)
    raise ValueError(f"unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}")
