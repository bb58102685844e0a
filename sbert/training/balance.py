"""Balancing several objectives on one shared encoder, from ONE forward pass.

A balancer turns the named losses of a batch ({"classification": L_cls, "regression": L_reg,
...}) into gradients: it runs the backward pass itself, so that methods working on the
gradients (PCGrad, GradNorm) fit the same interface as weighted sums. Gradients are ADDED to
`.grad` (micro-batches accumulate as with `loss.backward()`); the trainer then clips and steps.

| name | method | reference |
|---|---|---|
| `fixed` | sum_i w_i L_i | (the seed's `--loss-weights`) |
| `uncertainty` | sum_i exp(-s_i) L_i + s_i, learned s_i = log sigma_i^2 | Kendall et al. (2018) |
| `pcgrad` | per-task gradients, conflicting parts projected away, summed | Yu et al. (2020) |
| `gradnorm` | weights learned so that gradient norms follow training rates | Chen et al. (2018) |

Every balancer can report each objective's share of the shared encoder's gradient (see
`grad_report`), so a user sees the tasks fight. For `pcgrad` and `gradnorm` the per-task
gradients are computed anyway; for `fixed` and `uncertainty` the report costs one extra
backward pass per objective, so ask for it only every N steps (`report=True`).

Learnable balancer parameters (`uncertainty`'s log-variances, `gradnorm`'s weights) are this
module's `parameters()`: the optimizer must include them, at a learning rate that can move them
in a few hundred steps (the encoder's 2e-5 cannot; the head's can), without weight decay, and
outside the model's gradient clipping. Their state belongs in checkpoints (`state_dict()`).

Under DistributedDataParallel the gradient-level methods call `torch.autograd.grad`, which DDP
does not all-reduce: run them under `no_sync()` and all-reduce `.grad` afterwards.

Nothing here reads a value back to the host: the logs are 0-d tensors on the model's device
(a GPU would otherwise wait for every step to finish before the next is queued), read by the
trainer every `--log-every` steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from sbert.choices import BALANCE_METHODS
from sbert.errors import ConfigError


def grad_report(
    contributions: Mapping[str, torch.Tensor], raw: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Each objective's share of the shared gradient, and how much the objectives conflict.

    Args:
        contributions: name -> flat gradient that objective adds to the shared parameters (as
            the balancer applies it: weighted, and projected for PCGrad).
        raw: name -> flat gradient of the unweighted loss (default: the contributions).
    Returns:
        "grad_share/NAME": ||c_i|| / sum_j ||c_j|| (shares sum to 1), "grad_norm/NAME": ||c_i||,
        and "grad_cos/A|B": cosine of the raw gradients of A and B (below 0: they conflict);
        0-d tensors, read nothing back to the host.
    """
    raw = contributions if raw is None else raw
    norms = {name: g.norm() for name, g in contributions.items()}
    total = sum(norms.values())
    total = torch.where(total > 0, total, torch.ones_like(total))  # all zero: shares 0
    out = {f"grad_share/{name}": norm / total for name, norm in norms.items()}
    out.update({f"grad_norm/{name}": norm for name, norm in norms.items()})
    names = list(raw)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            cos = torch.nn.functional.cosine_similarity(raw[a], raw[b], dim=0, eps=1e-12)
            out[f"grad_cos/{a}|{b}"] = cos
    return out


def task_gradients(
    losses: Mapping[str, torch.Tensor], params: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """name -> flat gradient of that loss w.r.t. params (zeros where it does not reach).

    One backward pass per loss through the shared graph, which is kept for the next one
    (retain_graph); the caller's own backward can follow.
    """
    out = {}
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out[name] = torch.cat(
            [
                (torch.zeros_like(p) if g is None else g).reshape(-1)
                for p, g in zip(params, grads, strict=True)
            ]
        )
    return out


def add_flat_grad(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Add a flat gradient vector into the params' .grad, (sum of numels,) -> each shape."""
    for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
        g = g.view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.add_(g)


def pcgrad_project(
    grads: Sequence[torch.Tensor], order: Sequence[Sequence[int]]
) -> list[torch.Tensor]:
    """PCGrad's gradient surgery (Yu et al. 2020, Algorithm 1), on flat task gradients.

    For each task i, in the order `order[i]` over the other tasks j: if g_i^PC . g_j < 0,
    g_i^PC <- g_i^PC - (g_i^PC . g_j) / ||g_j||^2 g_j (§3: project onto the normal
    plane of the ORIGINAL g_j). Returns the projected g_i^PC; their sum is the update.
    The test dot < 0 is a clamp, not a branch: no value is read back to the host.
    """
    out = []
    for i, g in enumerate(grads):
        g = g.clone()
        for j in order[i]:
            dot = torch.dot(g, grads[j]).clamp(max=0)  # 0 where they agree: g unchanged
            g -= dot / grads[j].pow(2).sum().clamp_min(1e-20) * grads[j]
        out.append(g)
    return out


class Balancer(nn.Module):
    """Base class: `backward(losses, shared, heads)` does the backward pass, returns logs.

    Args of backward:
        losses: name -> scalar loss of this batch (objectives absent from the batch are left
            out of the dict).
        shared: the parameters every objective reaches (the encoder's trainable ones).
        heads: task-specific parameters (the classifier); each gets its own loss's gradient.
        report: also return `grad_report` over `shared` (extra cost for fixed/uncertainty).
        scale: this micro-batch's share of the batch: its gradients are added times `scale`.
    Returns:
        {"loss": the balanced total}, plus the report's entries and any weights: 0-d tensors
        (or floats), nothing read back to the host.
    """

    def weights(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        raise NotImplementedError

    def total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The scalar whose gradient the model gets (weighted sum, plus any regulariser)."""
        weights = self.weights(losses)
        return sum(weights[name] * loss for name, loss in losses.items())

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        shared: Sequence[torch.Tensor],
        heads: Sequence[torch.Tensor] = (),
        report: bool = False,
        scale: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        logs = {}
        if report:  # before the backward below frees the graph
            raw = task_gradients(losses, shared)
            weights = self.weights(losses)
            logs.update(grad_report({n: _detached(weights[n]) * g for n, g in raw.items()}, raw))
        total = self.total(losses)
        (total * scale).backward()
        return {"loss": total.detach(), **logs, **self.log_weights()}

    def log_weights(self) -> dict[str, torch.Tensor]:
        """The learned weights as they are now (copies: the optimizer moves them in place)."""
        return {}

    def parameters_for(self, names: Sequence[str]) -> list[nn.Parameter]:
        """The learned parameters that the objectives `names` give a gradient (all of them
        unless a balancer knows better)."""
        return list(self.parameters())


class FixedWeights(Balancer):
    """sum_i w_i L_i with given weights (1 for an objective not named)."""

    def __init__(self, weights: Mapping[str, float] | None = None):
        super().__init__()
        self.fixed = dict(weights or {})

    def weights(self, losses):
        return {name: self.fixed.get(name, 1.0) for name in losses}


class UncertaintyWeighting(Balancer):
    """Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Kendall et al. eq. 7 (two regression tasks): 1/(2 sigma_1^2) L_1 + 1/(2 sigma_2^2) L_2
    + log sigma_1 sigma_2, with eq. 10 replacing 1/(2 sigma^2) by 1/sigma^2 for a softmax task.
    We use the common uniform form for every task, with s_i = log sigma_i^2 learned (stable: no
    division, no log of a non-positive number):

        L = sum_i exp(-s_i) L_i + s_i,

    which is twice eq. 7 (a constant factor: same minimiser, the optimiser's normalisation
    absorbs it) and treats classification like regression (its optimum is sigma^2 = L, not the
    2L of eq. 10). At the optimum over s_i every objective's weight is 1 / L_i, so a loss 100x
    larger is weighted 100x less. s_i starts at log(1 / w_i) for the given initial weights w_i.
    """

    def __init__(self, names: Sequence[str], weights: Mapping[str, float] | None = None):
        super().__init__()
        weights = weights or {}
        start = {n: -math.log(weights.get(n, 1.0)) for n in names}  # s = log(1 / w)
        self.log_vars = nn.ParameterDict(
            {n: nn.Parameter(torch.tensor(s)) for n, s in start.items()}
        )

    def weights(self, losses):
        _check_names(losses, self.log_vars)
        return {name: torch.exp(-self.log_vars[name]) for name in losses}

    def total(self, losses):
        weights = self.weights(losses)
        return sum(weights[n] * loss + self.log_vars[n] for n, loss in losses.items())

    def log_weights(self):
        return {f"weight/{n}": torch.exp(-s.detach()) for n, s in self.log_vars.items()}

    def parameters_for(self, names):
        return [self.log_vars[n] for n in names]


class PCGrad(FixedWeights):
    """Projecting conflicting gradients (Yu et al., NeurIPS 2020, "Gradient Surgery for
    Multi-Task Learning"), on top of fixed weights.

    From one forward pass: one backward per objective for its gradient on the shared
    parameters (`task_gradients`), the surgery of `pcgrad_project` (each task's gradient
    loses its component against any other task's it conflicts with; the other tasks in a
    random order, from torch's global generator so a seeded run repeats), and their sum.
    Head parameters get their own task's (weighted) gradient, unprojected. Cost: one backward
    per objective instead of one, and T flat copies of the shared gradient in memory.
    """

    def backward(self, losses, shared, heads=(), report=False, scale=1.0):
        weights = self.weights(losses)
        params = [*shared, *heads]
        flat = task_gradients({n: scale * weights[n] * loss for n, loss in losses.items()}, params)
        size = sum(p.numel() for p in shared)
        names = list(flat)
        raw = [flat[n][:size] for n in names]
        order = [
            [j for j in torch.randperm(len(names)).tolist() if j != i] for i in range(len(names))
        ]
        projected = pcgrad_project(raw, order)
        add_flat_grad(shared, sum(projected))
        if heads:
            add_flat_grad(heads, sum(flat[n][size:] for n in names))
        logs = {"loss": sum(weights[n] * loss.detach() for n, loss in losses.items())}
        if report:
            logs.update(
                grad_report(
                    dict(zip(names, projected, strict=True)), dict(zip(names, raw, strict=True))
                )
            )
        return logs


class GradNorm(Balancer):
    """Gradient normalisation (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

    Learned weights w_i(t) (the module's parameters); per step, with W the last shared layer:
    G_i = ||grad_W w_i L_i||, Gbar = mean_i G_i, r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))
    (relative inverse training rate), and the weights' gradient is that of eq. 2,
    L_grad = sum_i |G_i - Gbar r_i^alpha|, the target held constant. Since G_i = w_i ||grad_W L_i||
    its gradient is analytic: sign(G_i - target_i) ||grad_W L_i||, no second-order backward. The
    model itself gets the gradient of sum_i w_i L_i. Weights are renormalised to sum to the
    number of tasks when used, i.e. after each optimiser step. L_i(0) is each loss at its
    first appearance where it is positive and finite (a buffer: saved with `state_dict`); until
    then that objective's rate is 1, so a first loss of exactly 0 (CoSENT on a batch whose gold
    scores are all equal) cannot divide by zero.

    Args:
        names: the objectives; weights: their starting weights (default 1).
        alpha: the restoring force's strength (Chen et al. use 0.12-1.5; 1.5 default here).
        layer: W, the parameters the norms are measured on (default: all of `shared`); the
            last shared layer is cheapest (its backward stops there).
    """

    def __init__(
        self,
        names: Sequence[str],
        weights: Mapping[str, float] | None = None,
        alpha: float = 1.5,
        layer: Sequence[torch.Tensor] | None = None,
    ):
        super().__init__()
        self.names, self.alpha, self.layer = list(names), alpha, layer
        start = [(weights or {}).get(n, 1.0) for n in self.names]  # renormalised when used
        self.task_weights = nn.Parameter(torch.tensor(start))
        self.register_buffer("initial", torch.full((len(self.names),), float("nan")))
        self._index: dict[tuple[str, ...], torch.Tensor] = {}  # on the device, made once

    def weights(self, losses):
        _check_names(losses, self.names)
        with torch.no_grad():  # renormalise: sum_i w_i = T (after the optimiser moved them)
            w = self.task_weights.clamp_(min=1e-4)
            w.mul_(len(self.names) / w.sum())
        return {n: self.task_weights[self.names.index(n)].detach() for n in losses}

    def backward(self, losses, shared, heads=(), report=False, scale=1.0):
        weights = self.weights(losses)
        device = self.initial.device  # the balancer lives on the model's device
        key = tuple(losses)
        if key not in self._index or self._index[key].device != device:
            self._index[key] = torch.tensor([self.names.index(n) for n in key], device=device)
        index = self._index[key]
        values = torch.stack([loss.detach().float() for loss in losses.values()]).to(device)
        with torch.no_grad():  # L_i(0): the first positive, finite loss (a rate needs one)
            seen = self.initial[index]
            usable = seen.isnan() & values.isfinite() & (values > 0)
            self.initial[index] = torch.where(usable, values, seen)
            initial = self.initial[index]
        layer = list(self.layer) if self.layer is not None else list(shared)
        raw = task_gradients(losses, layer)
        norms = torch.stack([g.norm() for g in raw.values()])  # ||grad_W L_i||
        w = self.task_weights[index].detach()
        g = w * norms
        rate = torch.where(initial.isnan(), 1.0, values / initial)  # no L_i(0) yet: r_i = 1
        target = g.mean() * (rate / rate.mean()) ** self.alpha
        grad = torch.zeros_like(self.task_weights)
        grad[index] = torch.sign(g - target) * norms * scale
        if self.task_weights.grad is not None:  # accumulate over micro-batches
            grad += self.task_weights.grad
        self.task_weights.grad = grad
        logs = {}
        if report:
            if self.layer is not None:
                raw = task_gradients(losses, shared)
            logs = grad_report({n: weights[n] * raw[n] for n in losses}, raw)
        total = sum(weights[n] * loss for n, loss in losses.items())
        (total * scale).backward()
        return {"loss": total.detach(), **logs, **self.log_weights()}

    def log_weights(self):
        weights = self.task_weights.detach().clone()
        return {f"weight/{n}": w for n, w in zip(self.names, weights, strict=True)}


def make_balancer(
    method: str, names: Sequence[str], weights: Mapping[str, float] | None = None, **options
) -> Balancer:
    """The balancer for `--balance METHOD` over the objectives `names`."""
    if method == "fixed":
        return FixedWeights(weights)
    if method == "uncertainty":
        return UncertaintyWeighting(names, weights)
    if method == "pcgrad":
        return PCGrad(weights)
    if method == "gradnorm":
        return GradNorm(names, weights, **options)
    choices = ", ".join(BALANCE_METHODS)
    raise ConfigError(f"unknown balance method {method!r}: choose one of {choices}")


def _detached(weight: torch.Tensor | float) -> torch.Tensor | float:
    return weight.detach() if isinstance(weight, torch.Tensor) else weight


def _check_names(losses: Mapping[str, torch.Tensor], known) -> None:
    unknown = [name for name in losses if name not in known]
    if unknown:
        raise ConfigError(f"the balancer was built without the objective(s) {', '.join(unknown)}")
