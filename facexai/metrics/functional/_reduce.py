"""Reductions shared by the metric functions and classes."""

from __future__ import annotations

import torch
from torch import Tensor


def count_of(values: Tensor) -> Tensor:
    """Number of rows as a float tensor on the values' device (a "sum" state increment)."""
    return torch.tensor(float(len(values)), device=values.device)


def mean_compute(total: Tensor, count: Tensor) -> Tensor:
    """Running mean; NaN when nothing was counted (no valid sample is not a zero)."""
    return total / count


def percent_compute(total: Tensor, count: Tensor) -> Tensor:
    """100 x running mean; NaN when nothing was counted."""
    return 100.0 * total / count
