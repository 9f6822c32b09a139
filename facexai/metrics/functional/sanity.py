"""Model randomisation sanity check: do the maps change when the model is re-initialised?

Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, arXiv 1810.03292.

Explain the same inputs with the trained model and with a copy whose top layers were
re-initialised, and measure the Spearman rank correlation between the two maps. A method whose
maps barely change is not explaining the model, so lower is better. Ties get average ranks; a
constant map carries no ranking, and its correlation is defined as 0 (never NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from facexai.metrics.functional._checks import check_maps, check_same_shape
from facexai.metrics.functional._reduce import count_of, mean_compute


def average_ranks(values: Tensor) -> Tensor:
    """Row-wise ranks (0-based) with ties sharing their average rank, (N, M) -> (N, M)."""
    values = values.contiguous()
    ordered = values.sort(dim=1).values
    below = torch.searchsorted(ordered, values, right=False)
    up_to = torch.searchsorted(ordered, values, right=True)
    return (below + up_to - 1).double() / 2


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman correlation between matching rows of (N, M) tensors, (N,); 0 for constant rows."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denominator = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    rho = (ra * rb).sum(1) / torch.where(denominator > 0, denominator, 1.0)
    return torch.where(denominator > 0, rho, 0.0).to(a.dtype if a.is_floating_point() else torch.float32)


def _sanity_update(maps: Tensor, randomised_maps: Tensor) -> tuple[Tensor, Tensor]:
    maps = check_maps(maps)
    randomised_maps = check_maps(randomised_maps, "randomised_maps")
    check_same_shape(maps, randomised_maps, ("maps", "randomised_maps"))
    rho = spearman(maps.flatten(1).float(), randomised_maps.flatten(1).float())
    return rho.sum(), count_of(rho)


def randomisation_sanity(maps: Tensor, randomised_maps: Tensor) -> Tensor:
    """Mean Spearman correlation between maps of the trained and the randomised model.

    Args:
        maps: explanations from the trained model (N, H, W).
        randomised_maps: explanations of the same inputs and targets from the model with its
            top layers re-initialised (N, H, W).
    """
    return mean_compute(*_sanity_update(maps, randomised_maps))
