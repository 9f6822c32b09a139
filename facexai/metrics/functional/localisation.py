"""Localisation: pointing game and energy-based pointing game.

The pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016,
arXiv 1608.00507) counts a hit when the map's maximum falls inside the ground-truth mask; the
energy-based variant (Wang et al., "Score-CAM", CVPRW 2020, arXiv 1910.01279) is the share of
the map's mass inside the mask, which does not hinge on a single pixel. The synthetic face data
ships masks of the identity-carrying regions, so both are exact there.

Conventions: samples whose mask is empty are skipped (they count in neither numerator nor
denominator), as the original protocol skips images without the object; a constant map (every
pixel equal, e.g. the all-zero map of a degenerate explanation) points nowhere: a miss, and
zero energy inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from facexai.metrics.functional._checks import check_maps, check_same_shape
from facexai.metrics.functional._reduce import mean_compute


def _check_maps_masks(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    maps = check_maps(maps)
    masks = check_maps(masks.float(), "masks") if masks.dtype == torch.bool else check_maps(masks, "masks")
    check_same_shape(maps, masks, ("maps", "masks"))
    if (maps < 0).any():
        raise ValueError("maps must be non-negative (post-processed explanations lie in [0, 1])")
    return maps, masks > 0


def dilate(masks: Tensor, tolerance: int) -> Tensor:
    """Grow boolean masks (N, H, W) by a disc of radius ``tolerance`` pixels."""
    if tolerance == 0:
        return masks
    offsets = torch.arange(-tolerance, tolerance + 1, device=masks.device)
    disc = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= tolerance**2).float()
    grown = F.conv2d(masks.float().unsqueeze(1), disc[None, None], padding=tolerance)
    return grown[:, 0] > 0


def check_tolerance(tolerance: int) -> None:
    """Raise ``ValueError`` unless ``tolerance`` is an integer >= 0."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be an integer >= 0 (pixels), got {tolerance!r}")


def _pointing_update(maps: Tensor, masks: Tensor, tolerance: int = 0) -> tuple[Tensor, Tensor]:
    """Hits and counted samples of one batch."""
    check_tolerance(tolerance)
    maps, masks = _check_maps_masks(maps, masks)
    flat = maps.flatten(1)
    valid = masks.flatten(1).any(1)
    peak = flat.argmax(1, keepdim=True)  # first maximum in row-major order
    hit = dilate(masks, tolerance).flatten(1).gather(1, peak)[:, 0]
    informative = flat.amax(1) > flat.amin(1)
    return (hit & valid & informative).sum().float(), valid.sum().float()


def _energy_update(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of per-sample energy shares inside the mask and counted samples of one batch."""
    maps, masks = _check_maps_masks(maps, masks)
    flat = maps.flatten(1).float()
    valid = masks.flatten(1).any(1)
    total = flat.sum(1)
    inside = (flat * masks.flatten(1)).sum(1)
    informative = flat.amax(1) > flat.amin(1)
    share = torch.where(informative, inside / torch.where(total > 0, total, 1.0), 0.0)
    return share[valid].sum(), valid.sum().float()


def pointing_game(maps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """Fraction of maps whose maximum lies in the mask (grown by ``tolerance`` px); higher is better.

    Args:
        maps: explanations (N, H, W), non-negative.
        masks: ground-truth regions (N, H, W), boolean or {0, 1}.
        tolerance: radius in pixels around the mask still counted as a hit (Zhang et al. used 15).
    """
    return mean_compute(*_pointing_update(maps, masks, tolerance))


def energy_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Mean share of map mass inside the mask, sum(E * M) / sum(E); higher is better."""
    return mean_compute(*_energy_update(maps, masks))
