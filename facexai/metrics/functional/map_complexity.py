"""Complexity of explanations: Gini sparsity and entropy.

A concise explanation concentrates its mass on few pixels. The Gini index (Hurley & Rickard,
"Comparing Measures of Sparsity", IEEE TIT 2009; used for attributions by Chalasani et al.,
ICML 2020) is 0 for a uniform map and (n - 1) / n for a single bright pixel; the Shannon entropy
of E / sum(E) is low for concentrated maps. An all-zero map is treated as uniform (Gini 0,
entropy log n), never NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from facexai.metrics.functional._checks import check_maps
from facexai.metrics.functional._reduce import count_of, mean_compute


def _non_negative(maps: Tensor) -> Tensor:
    maps = check_maps(maps)
    if (maps < 0).any():
        raise ValueError("maps must be non-negative (post-processed explanations lie in [0, 1])")
    return maps.flatten(1).float()


def gini_index(maps: Tensor) -> Tensor:
    """Gini index per map (N,): sum_k (2k - n - 1) v_k / (n sum v), v sorted ascending."""
    flat = _non_negative(maps)
    n = flat.shape[1]
    values = flat.sort(dim=1).values
    k = torch.arange(1, n + 1, device=flat.device, dtype=flat.dtype)
    total = values.sum(1)
    gini = ((2 * k - n - 1) * values).sum(1) / (n * torch.where(total > 0, total, 1.0))
    return torch.where(total > 0, gini, 0.0)


def map_entropy(maps: Tensor) -> Tensor:
    """Shannon entropy (nats) of each map normalised to a distribution, (N,)."""
    flat = _non_negative(maps)
    total = flat.sum(1, keepdim=True)
    p = flat / torch.where(total > 0, total, 1.0)
    entropy = -(p * torch.where(p > 0, p.log(), 0.0)).sum(1)
    return torch.where(total[:, 0] > 0, entropy, math.log(flat.shape[1]))


def _sparsity_update(maps: Tensor) -> tuple[Tensor, Tensor]:
    gini = gini_index(maps)
    return gini.sum(), count_of(gini)


def _complexity_update(maps: Tensor) -> tuple[Tensor, Tensor]:
    entropy = map_entropy(maps)
    return entropy.sum(), count_of(entropy)


def sparsity(maps: Tensor) -> Tensor:
    """Mean Gini index of the maps; higher = sparser (more concise)."""
    return mean_compute(*_sparsity_update(maps))


def complexity(maps: Tensor) -> Tensor:
    """Mean entropy of the normalised maps; lower = less complex."""
    return mean_compute(*_complexity_update(maps))
