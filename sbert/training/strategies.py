"""Transfer-learning strategies: which parameters train, and at which learning rate.

A strategy is a named set of these knobs (each can also be set on its own):
- full:       fine-tune everything at `lr` (SBERT §4's setting); `freeze_layers` and
              `layer_decay` combine with it.
- frozen:     freeze the encoder, train the heads only (a linear probe: cheapest, cannot forget,
              but the regression objective then has nothing to train).
- partial:    freeze the embeddings (and the lowest `freeze_layers` layers, default none): they
              hold general lexical features that a small data set should not overwrite, and
              the embedding matrix (half of MiniLM's weights) is the costliest to update.
- layer-decay: layer-wise learning-rate decay (Howard & Ruder 2018, "discriminative
              fine-tuning"; Clark et al. 2020): layer l of L (embeddings: l = 0) trains at
              lr * decay^(L - l): the top layers adapt most, the bottom ones stay close to
              pre-training.
In every strategy the freshly initialised classifier has its own, higher `head_lr`: at 2e-5 a
random head on unit-length sentence vectors barely moves and predicts the majority class.
Weight decay applies to tensors of 2+ dimensions only (not biases, not LayerNorm; nanoGPT).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from sbert.choices import STRATEGIES
from sbert.errors import ConfigError
from sbert.models.multitask import MultiTaskModel


@dataclass(frozen=True)
class Trainable:
    """What a strategy trains, and how fast: the settings `param_groups` applies."""

    freeze_encoder: bool = False
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    layer_decay: float = 1.0


def trainable(
    strategy: str, freeze_layers: int | None = None, layer_decay: float | None = None
) -> Trainable:
    """The settings a strategy stands for, with the explicit values it uses (None = not set).

    A value the strategy has no use for is an error rather than silently dropped.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    unused = {
        "frozen": ("freeze-layers", "layer-decay"),
        "partial": ("layer-decay",),
        "layer-decay": ("freeze-layers",),
        "full": (),
    }[strategy]
    given = {"freeze-layers": freeze_layers, "layer-decay": layer_decay}
    for name in unused:
        if given[name] is not None:
            raise ConfigError(
                f"--{name} has no effect with strategy {strategy}; leave it out "
                f"or choose a strategy that uses it"
            )
    if layer_decay is not None and not 0 <= layer_decay <= 1:
        raise ConfigError(f"--layer-decay must be in [0, 1], not {layer_decay}")
    if freeze_layers is not None and freeze_layers < 0:
        raise ConfigError(f"--freeze-layers must be 0 or more, not {freeze_layers}")
    layers = 0 if freeze_layers is None else freeze_layers
    if strategy == "frozen":
        return Trainable(freeze_encoder=True)
    if strategy == "partial":
        return Trainable(freeze_embeddings=True, freeze_layers=layers)
    if strategy == "layer-decay":
        return Trainable(layer_decay=0.8 if layer_decay is None else layer_decay)
    return Trainable(freeze_layers=layers, layer_decay=1.0 if layer_decay is None else layer_decay)


def param_groups(
    model: MultiTaskModel, k: Trainable, lr: float, head_lr: float, weight_decay: float
) -> list[dict]:
    """AdamW parameter groups; frozen parameters get requires_grad=False and no group."""
    encoder = model.encoder.bert
    num_layers = len(encoder.layers)
    if k.freeze_layers > num_layers:
        raise ConfigError(f"cannot freeze {k.freeze_layers} layers of a {num_layers}-layer model")
    # (module, depth): depth 0 = embeddings, l + 1 = layer l; the decay counts from the top.
    parts: list[tuple[nn.Module, int]] = [(encoder.embeddings, 0)]
    parts += [(layer, i + 1) for i, layer in enumerate(encoder.layers)]
    groups: list[dict] = []
    for module, depth in parts:
        frozen = (
            k.freeze_encoder
            or (depth == 0 and k.freeze_embeddings)
            or (0 < depth <= k.freeze_layers)
        )
        module.requires_grad_(not frozen)
        if not frozen:
            groups += _decay_split(module, lr * k.layer_decay ** (num_layers - depth), weight_decay)
    if model.classifier is not None:
        groups += _decay_split(model.classifier, head_lr, weight_decay)
    return groups


def _decay_split(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
