"""Localisation, complexity and sanity metrics as torchmetrics classes.

They need maps only (plus ground-truth masks or the maps of a randomised model), never the
model, so ``update`` is pure tensor arithmetic.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from facexai.metrics._base import _MeanMetric
from facexai.metrics.functional.localisation import (
    _energy_update,
    _pointing_update,
    check_tolerance,
)
from facexai.metrics.functional.map_complexity import _complexity_update, _sparsity_update
from facexai.metrics.functional.sanity import _sanity_update
from facexai.metrics.inputs import MAPS, MAPS_AND_MASKS, RANDOMISED_MAPS
from facexai.metrics.registry import register_metric


@register_metric("pointing_game")
class PointingGame(_MeanMetric):
    """Share of maps whose maximum lies in the ground-truth mask (Zhang et al., ECCV 2016).

    ``update(maps, masks)``; empty masks are skipped, constant maps are misses. Higher is better.

    Args:
        tolerance: radius in pixels around the mask still counted as a hit (the original used
            15 px at 224 px); recorded.
        **kwargs: ``torchmetrics.Metric`` options.
    """

    inputs = MAPS_AND_MASKS
    higher_is_better = True

    def __init__(self, tolerance: int = 0, **kwargs: Any) -> None:
        check_tolerance(tolerance)
        super().__init__(**kwargs)
        self._record({"tolerance": tolerance})
        self.tolerance = tolerance

    def update(self, maps: Tensor, masks: Tensor) -> None:
        """Add maps (N, H, W) and boolean masks (N, H, W)."""
        self._accumulate(*_pointing_update(maps, masks, self.tolerance))


@register_metric("energy_pointing_game")
class EnergyPointingGame(_MeanMetric):
    """Mean share of map mass inside the mask (Score-CAM, Wang et al., CVPRW 2020); higher is better.

    ``update(maps, masks)``; empty masks are skipped.
    """

    inputs = MAPS_AND_MASKS
    higher_is_better = True

    def update(self, maps: Tensor, masks: Tensor) -> None:
        """Add maps (N, H, W) and boolean masks (N, H, W)."""
        self._accumulate(*_energy_update(maps, masks))


@register_metric("sparsity")
class Sparsity(_MeanMetric):
    """Mean Gini index of the maps (Chalasani et al., ICML 2020); higher = more concise.

    ``update(maps)`` with non-negative maps (N, H, W).
    """

    inputs = MAPS
    higher_is_better = True

    def update(self, maps: Tensor) -> None:
        """Add maps (N, H, W)."""
        self._accumulate(*_sparsity_update(maps))


@register_metric("complexity")
class Complexity(_MeanMetric):
    """Mean entropy (nats) of the maps normalised to sum 1; lower = less complex.

    ``update(maps)`` with non-negative maps (N, H, W).
    """

    inputs = MAPS
    higher_is_better = False

    def update(self, maps: Tensor) -> None:
        """Add maps (N, H, W)."""
        self._accumulate(*_complexity_update(maps))


@register_metric("randomisation_sanity")
class RandomisationSanity(_MeanMetric):
    """Mean Spearman correlation between maps of the trained and a randomised model.

    Model randomisation test of Adebayo et al. (NeurIPS 2018): a faithful method's maps change
    when the top layers are re-initialised, so lower is better. ``update(maps,
    randomised_maps)``; the caller builds the randomised model and its maps.

    Args:
        randomised: which layers were re-initialised (e.g. "head", "top-2"); recorded.
        **kwargs: ``torchmetrics.Metric`` options.
    """

    inputs = RANDOMISED_MAPS
    refusal = "it needs the maps of a re-initialised copy of the model"
    higher_is_better = False

    def __init__(self, randomised: str = "top", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._record({"randomised": randomised})
        self.randomised = randomised

    def update(self, maps: Tensor, randomised_maps: Tensor) -> None:
        """Add maps (N, H, W) of the trained model and of the randomised one."""
        self._accumulate(*_sanity_update(maps, randomised_maps))
