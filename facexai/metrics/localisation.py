"""Localisation, complexity and sanity metrics as torchmetrics classes.

They need maps only (plus ground-truth masks or the maps of a randomised model), never the
model, so ``update`` is pure tensor arithmetic.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from facexai.metrics._base import _MeanMetric
from facexai.metrics.functional._reduce import mean_compute
from facexai.metrics.functional.localisation import (
    _energy_update,
    _pointing_update,
    check_tolerance,
)
from facexai.metrics.functional.map_complexity import _complexity_update, _sparsity_update
from facexai.metrics.functional.sanity import _sanity_update


class PointingGame(_MeanMetric):
    """Share of maps whose maximum lies in the ground-truth mask (Zhang et al., ECCV 2016).

    ``update(maps, masks)``; empty masks are skipped, constant maps are misses. Higher is better.

    Args:
        tolerance: radius in pixels around the mask still counted as a hit (the original used
            15 px at 224 px); recorded.
        **kwargs: ``torchmetrics.Metric`` options.
    """

    key = "pointing_game"
    higher_is_better = True

    def __init__(self, tolerance: int = 0, **kwargs: Any) -> None:
        check_tolerance(tolerance)
        super().__init__({"tolerance": tolerance}, **kwargs)
        self.tolerance = tolerance

    def update(self, maps: Tensor, masks: Tensor) -> None:
        """Add maps (N, H, W) and boolean masks (N, H, W)."""
        self._accumulate(*_pointing_update(maps, masks, self.tolerance))

    def compute(self) -> Tensor:
        """Hit rate over samples with a non-empty mask (NaN if none)."""
        return mean_compute(self.total, self.count)


class EnergyPointingGame(_MeanMetric):
    """Mean share of map mass inside the mask (Score-CAM, Wang et al., CVPRW 2020); higher is better.

    ``update(maps, masks)``; empty masks are skipped.
    """

    key = "energy_pointing_game"
    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__({}, **kwargs)

    def update(self, maps: Tensor, masks: Tensor) -> None:
        """Add maps (N, H, W) and boolean masks (N, H, W)."""
        self._accumulate(*_energy_update(maps, masks))

    def compute(self) -> Tensor:
        """Mean energy share over samples with a non-empty mask (NaN if none)."""
        return mean_compute(self.total, self.count)


class Sparsity(_MeanMetric):
    """Mean Gini index of the maps (Chalasani et al., ICML 2020); higher = more concise.

    ``update(maps)`` with non-negative maps (N, H, W).
    """

    key = "sparsity"
    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__({}, **kwargs)

    def update(self, maps: Tensor) -> None:
        """Add maps (N, H, W)."""
        self._accumulate(*_sparsity_update(maps))

    def compute(self) -> Tensor:
        """Mean Gini index (NaN before any update)."""
        return mean_compute(self.total, self.count)


class Complexity(_MeanMetric):
    """Mean entropy (nats) of the maps normalised to sum 1; lower = less complex.

    ``update(maps)`` with non-negative maps (N, H, W).
    """

    key = "complexity"
    higher_is_better = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__({}, **kwargs)

    def update(self, maps: Tensor) -> None:
        """Add maps (N, H, W)."""
        self._accumulate(*_complexity_update(maps))

    def compute(self) -> Tensor:
        """Mean entropy (NaN before any update)."""
        return mean_compute(self.total, self.count)


class RandomisationSanity(_MeanMetric):
    """Mean Spearman correlation between maps of the trained and a randomised model.

    Model randomisation test of Adebayo et al. (NeurIPS 2018): a faithful method's maps change
    when the top layers are re-initialised, so lower is better. ``update(maps,
    randomised_maps)``; the caller builds the randomised model and its maps.

    Args:
        randomised: which layers were re-initialised (e.g. "head", "top-2"); recorded.
        **kwargs: ``torchmetrics.Metric`` options.
    """

    key = "randomisation_sanity"
    higher_is_better = False

    def __init__(self, randomised: str = "top", **kwargs: Any) -> None:
        super().__init__({"randomised": randomised}, **kwargs)
        self.randomised = randomised

    def update(self, maps: Tensor, randomised_maps: Tensor) -> None:
        """Add maps (N, H, W) of the trained model and of the randomised one."""
        self._accumulate(*_sanity_update(maps, randomised_maps))

    def compute(self) -> Tensor:
        """Mean Spearman correlation (NaN before any update)."""
        return mean_compute(self.total, self.count)
