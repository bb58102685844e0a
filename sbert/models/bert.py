"""BERT, the encoder of Sentence-BERT, written from scratch (Devlin et al., 2019, §3).

token + position + segment embeddings -> LayerNorm -> dropout -> N post-LN transformer layers.
This file knows nothing of tokenizers, files or tasks; checkpoint key names live in the folder
module (sbert/models/folder.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from sbert.errors import ConfigError


@dataclass(frozen=True)
class BertConfig:
    """BERT hyper-parameters; the defaults are BERT-base (BERT §3: L=12, H=768, A=12)."""

    vocab_size: int = 30522
    hidden_size: int = 768  # H
    num_layers: int = 12  # L
    num_heads: int = 12  # A
    intermediate_size: int = 3072  # 4H, the feed-forward width
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # segments A and B
    dropout: float = 0.1  # on embeddings, sub-layer outputs and attention probabilities (§A.2)
    layer_norm_eps: float = 1e-12  # BERT's TF code, not PyTorch's 1e-5: checkpoints depend on it
    initializer_range: float = 0.02
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(
                f"pad_token_id {self.pad_token_id} is not below vocab_size {self.vocab_size}"
            )

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


PRESETS: dict[str, BertConfig] = {
    # BERT paper §3, "BERT_BASE (L=12, H=768, A=12, Total Parameters=110M)".
    "bert-base": BertConfig(),
    # BERT paper §3, "BERT_LARGE (L=24, H=1024, A=16, Total Parameters=340M)".
    "bert-large": BertConfig(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    # For tests: the same architecture, small enough to train in seconds on a CPU.
    "tiny": BertConfig(
        hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=128
    ),
}


def preset(name: str, **overrides) -> BertConfig:
    """Return the named preset, with fields replaced by `overrides` (e.g. vocab_size)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class Embeddings(nn.Module):
    """Sum of token, position and segment embeddings, then LayerNorm and dropout (BERT §3.2)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.segment = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(positions) + self.segment(token_type_ids)
        return self.dropout(self.norm(x))


@dataclass(frozen=True)
class RealTokens:
    """Where a batch's real tokens are: `index` (N,) long, their flat positions in (B, T).

    With them (`Bert.forward`'s `token_index`) every position-wise part of a layer (the
    projections, the feed-forward, the layer norms, dropout) runs on the N real tokens only,
    and attention on them scattered back into (B, T), zeros at padding (masked, as without):
    no FLOP of the layers' linear parts goes to padding, which is 16% of STS-B train's
    positions in training batches (a pair's two sentences pad to the longer; the embeddings
    still run on every position). Index ops, no host read: the index comes from the host with
    the batch (`sbert.data.batching.collate`), and it must be the mask's real positions (it is
    not checked against the mask: that would read the device).
    """

    index: torch.Tensor
    batch: int
    length: int

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...)."""
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at padding."""
        out = x.new_zeros(self.batch * self.length, *x.shape[1:]).index_copy_(0, self.index, x)
        return out.view(self.batch, self.length, *x.shape[1:])


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection (one matmul instead of three)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.dropout

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, tokens: RealTokens | None = None
    ) -> torch.Tensor:
        qkv = self.qkv(x)
        if tokens is not None:  # (N, 3C) real tokens -> (B, T, 3C), zeros where padding
            qkv = tokens.pad(qkv)
        B, T, C3 = qkv.shape
        C = C3 // 3
        # (B, T, 3C) -> 3 x (B, A, T, C/A): views, no copy. Split first, then one 4-D transpose
        # each: the same strides as one 5-D permute, but the exported graph then has the per-head
        # transposes OpenVINO folds into its attention kernel (sbert/inference/onnx_rewrites.py).
        q, k, v = (
            part.view(B, T, self.num_heads, self.head_size).transpose(1, 2)
            for part in qkv.split(C, dim=-1)
        )
        # mask: (B, 1, 1, T), True where a key is a real token, so padding is never attended to.
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.out(y if tokens is None else tokens.unpad(y))


class FeedForward(nn.Module):
    """Position-wise feed-forward: H -> 4H -> H with the exact (erf) GELU, as in BERT's code."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))  # approximate="none": tanh GELU breaks parity


class Layer(nn.Module):
    """One post-LN transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x)) (Vaswani et al.)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, tokens: RealTokens | None = None
    ) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x, mask, tokens)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


class Bert(nn.Module):
    """The BERT encoder (no pooler, no pre-training heads: SBERT pools the token vectors).

    Args:
        config: the hyper-parameters.
    Shapes:
        input_ids, attention_mask, token_type_ids: (B, T) -> hidden states (B, T, H);
        token_index (N,): the real tokens' flat positions (`RealTokens`; the states are then
        zeros at padding), or None to compute every position.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_layers))
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation: N(0, 0.02) weights, zero biases, LayerNorm 1 and 0.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        token_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        tokens = RealTokens(token_index, *input_ids.shape) if token_index is not None else None
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask.bool()[
            :, None, None, :
        ]  # (B, 1, 1, T), broadcast over heads, queries
        x = self.embeddings(input_ids, token_type_ids)
        if tokens is not None:
            x = tokens.unpad(x)
        for layer in self.layers:
            x = layer(x, mask, tokens)
        return x if tokens is None else tokens.pad(x)

    def set_dropout(self, p: float) -> None:
        """Change every dropout rate, e.g. to 0 for runs that must match exactly."""
        self.config = replace(self.config, dropout=p)
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, SelfAttention):
                module.dropout_p = p

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= sum(p.numel() for p in self.embeddings.parameters())
        return n

    def flops_per_token(self, seq_len: int, training: bool) -> float:
        """Model FLOPs per token: 2N forward (+4N backward) plus attention (nanoGPT's MFU)."""
        c = self.config
        attention = 2 * 2 * c.num_layers * seq_len * c.hidden_size  # QK^T and AV
        forward = 2 * self.num_parameters(exclude_embeddings=True) + attention
        return 3 * forward if training else forward
