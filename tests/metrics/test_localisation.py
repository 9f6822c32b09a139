"""Pointing games, Gini sparsity, entropy and the randomisation sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from facexai.metrics import (
    Complexity,
    EnergyPointingGame,
    PointingGame,
    RandomisationSanity,
    Sparsity,
)
from facexai.metrics.functional import (
    complexity,
    energy_pointing_game,
    gini_index,
    map_entropy,
    pointing_game,
    randomisation_sanity,
    sparsity,
    spearman,
)


def _maps_and_masks() -> tuple[torch.Tensor, torch.Tensor]:
    maps = torch.zeros(4, 6, 6)
    masks = torch.zeros(4, 6, 6, dtype=torch.bool)
    masks[:, :3, :3] = True
    maps[0, 1, 1] = 1.0  # peak inside -> hit; energy 1
    maps[1, 5, 5] = 1.0  # peak outside -> miss; energy 0
    maps[1, 0, 0] = 0.5  # energy .5 / 1.5
    maps[2] = 0.3  # constant map: miss, energy 0
    maps[3, 4, 3] = 1.0  # one pixel below the mask, one to the right of its corner
    return maps, masks


def test_pointing_game_hand_computed() -> None:
    maps, masks = _maps_and_masks()
    assert pointing_game(maps, masks).item() == pytest.approx(1 / 4)
    # The mask covers rows/cols 0..2; the peak (4, 3) is sqrt(5) from the nearest mask pixel
    # (2, 2): outside a 2 px tolerance, inside a 3 px one.
    assert pointing_game(maps, masks, tolerance=2).item() == pytest.approx(1 / 4)
    assert pointing_game(maps, masks, tolerance=3).item() == pytest.approx(2 / 4)


def test_energy_pointing_game_hand_computed() -> None:
    maps, masks = _maps_and_masks()
    # energies: 1, .5 / 1.5, 0 (constant), 0 -> (1 + 1/3) / 4
    assert energy_pointing_game(maps, masks).item() == pytest.approx((1 + 1 / 3) / 4)


def test_empty_masks_are_skipped_and_classes_match() -> None:
    maps, masks = _maps_and_masks()
    masks[1] = False
    pg, epg = PointingGame(), EnergyPointingGame()
    for part_maps, part_masks in zip(maps.split(3), masks.split(3), strict=True):
        pg.update(part_maps, part_masks)
        epg.update(part_maps, part_masks)
    assert pg.compute().item() == pytest.approx(1 / 3) == pointing_game(maps, masks).item()
    assert epg.compute().item() == pytest.approx(1 / 3) == pytest.approx(energy_pointing_game(maps, masks).item())
    pg.reset()
    pg.update(maps[:1], masks[:1])
    assert pg.compute().item() == 1.0


def _numpy_gini(v: np.ndarray) -> float:
    """Gini as the mean absolute difference over twice the mean (independent of the sort form)."""
    if v.sum() == 0:
        return 0.0
    return np.abs(v[:, None] - v[None, :]).sum() / (2 * v.size**2 * v.mean())


def test_gini_closed_forms_and_numpy() -> None:
    one_hot = torch.zeros(1, 4, 4)
    one_hot[0, 2, 1] = 1
    assert gini_index(one_hot).item() == pytest.approx(15 / 16)
    assert gini_index(torch.full((1, 4, 4), 0.7)).item() == pytest.approx(0.0, abs=1e-6)
    assert gini_index(torch.zeros(1, 4, 4)).item() == 0.0
    maps = torch.rand(6, 5, 5, generator=torch.Generator().manual_seed(0))
    expected = [_numpy_gini(m.ravel()) for m in maps.double().numpy()]
    np.testing.assert_allclose(gini_index(maps).numpy(), expected, rtol=1e-5)
    metric = Sparsity()
    metric.update(maps[:4])
    metric.update(maps[4:])
    assert metric.compute().item() == pytest.approx(np.mean(expected), rel=1e-5)
    assert sparsity(maps).item() == pytest.approx(np.mean(expected), rel=1e-5)


def test_entropy_against_numpy() -> None:
    maps = torch.rand(4, 5, 5, generator=torch.Generator().manual_seed(1))
    maps[0, :2] = 0
    expected = [scipy.stats.entropy(m.ravel()) for m in maps.double().numpy()]
    np.testing.assert_allclose(map_entropy(maps).numpy(), expected, rtol=1e-5)
    assert map_entropy(torch.zeros(1, 5, 5)).item() == pytest.approx(np.log(25))
    metric = Complexity()
    metric.update(maps)
    assert metric.compute().item() == pytest.approx(np.mean(expected), rel=1e-5) == complexity(maps).item()


def test_spearman_against_scipy_with_ties() -> None:
    gen = torch.Generator().manual_seed(2)
    a = (torch.rand(5, 6, 6, generator=gen) * 4).round() / 4  # many ties
    b = a + 0.3 * torch.rand(5, 6, 6, generator=gen)
    expected = [
        scipy.stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a.numpy(), b.numpy(), strict=True)
    ]
    np.testing.assert_allclose(spearman(a.flatten(1), b.flatten(1)).numpy(), expected, rtol=1e-5)
    metric = RandomisationSanity(randomised="head")
    metric.update(a[:2], b[:2])
    metric.update(a[2:], b[2:])
    assert metric.compute().item() == pytest.approx(np.mean(expected), rel=1e-5)
    assert randomisation_sanity(a, b).item() == pytest.approx(np.mean(expected), rel=1e-5)
    assert randomisation_sanity(a, 1 - a).item() == pytest.approx(-1.0)
    assert randomisation_sanity(torch.zeros(1, 3, 3), a[:1, :3, :3]).item() == 0.0  # constant: 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pointing_game(torch.rand(2, 4, 4), torch.ones(2, 4, 5, dtype=torch.bool)), "same shape"),
        (lambda: pointing_game(torch.rand(2, 4, 4), torch.ones(2, 4, 4), tolerance=-1), "tolerance"),
        (lambda: energy_pointing_game(-torch.rand(2, 4, 4), torch.ones(2, 4, 4)), "non-negative"),
        (lambda: sparsity(torch.full((1, 3, 3), float("nan"))), "NaN"),
        (lambda: randomisation_sanity(torch.rand(2, 4, 4), torch.rand(3, 4, 4)), "same shape"),
        (lambda: sparsity(torch.rand(4, 4)), r"\(N, H, W\)"),
    ],
)
def test_bad_inputs_raise(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
