"""The names of the choices a run or an index offers, without torch.

The command line builds its flags (and their `choices`) from these before anything imports
torch, so that `sbert encode`, `similarity` and `predict` run on an ONNX export where torch is
not installed. Each is defined here once; the module that implements it imports it from here.
"""

from __future__ import annotations

import typing
from typing import Literal

# training/balance.py: how the objectives' losses become one gradient
Balance = Literal["fixed", "uncertainty", "pcgrad", "gradnorm"]
BALANCE_METHODS: tuple[str, ...] = typing.get_args(Balance)

# models/objectives.py: the regression objective's losses (also a data spec's PATH:cosent)
RegressionLoss = Literal["cosine-mse", "cosent", "angle"]
REGRESSION_LOSSES: tuple[str, ...] = typing.get_args(RegressionLoss)

# training/strategies.py: which parameters train, and how fast
Strategy = Literal["full", "frozen", "partial", "layer-decay"]
STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)

# inference/index.py: the vectors an index scans
Precision = Literal["fp32", "int8", "binary"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
