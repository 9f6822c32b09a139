"""The audit's numpy CorrRISE against the torch explainer, and its mask semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from facexai.explain.corrrise import CorrRISE
from facexai.explain.corrrise import average_ranks as torch_ranks
from facexai.explain.corrrise import spearman_maps as torch_spearman
from facexai.explain.targets import SimilarityTarget
from facexai.export import corrrise_np as cr


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(8 * 6 * 6, 16)
    ).eval()


def test_masks_are_unions_of_seeded_squares() -> None:
    options = cr.CorrRiseOptions(n_masks=40, patch_size=5, n_patches=3, seed=7)
    keep = cr.corrrise_masks(options, 20, 24)
    assert keep.shape == (40, 20, 24)
    assert keep.dtype == np.float32
    assert set(np.unique(keep)) <= {0.0, 1.0}
    rng = np.random.default_rng(7)  # the documented draw: all rows, then all columns
    top, left = rng.integers(0, 16, (40, 3)), rng.integers(0, 20, (40, 3))
    brute = np.ones((40, 20, 24), np.float32)
    for m in range(40):
        for t, left_column in zip(top[m], left[m], strict=True):
            brute[m, t : t + 5, left_column : left_column + 5] = 0
    np.testing.assert_array_equal(keep, brute)
    hidden = (keep == 0).sum(axis=(1, 2))
    assert hidden.min() >= 25
    assert hidden.max() <= 75
    np.testing.assert_array_equal(keep, cr.corrrise_masks(options, 20, 24))  # seeded: reproducible


def test_one_patch_hides_exactly_one_square() -> None:
    keep = cr.corrrise_masks(cr.CorrRiseOptions(n_masks=30, patch_size=4, n_patches=1, seed=1), 9, 9)
    for mask in keep:
        rows, cols = np.nonzero(mask == 0)
        assert len(rows) == 16
        assert rows.max() - rows.min() == 3
        assert cols.max() - cols.min() == 3


def test_default_patch_scales_the_papers_30px_at_112() -> None:
    assert cr.default_patch_size(112) == 30
    assert cr.default_patch_size(64) == 17
    assert cr.default_patch_size(224) == 60
    with pytest.raises(ValueError, match="does not fit"):
        cr.corrrise_masks(cr.CorrRiseOptions(patch_size=20), 16, 16)
    with pytest.raises(ValueError, match="n_masks must be at least 2"):
        cr.CorrRiseOptions(n_masks=1).check()


def test_ranks_and_spearman_match_torch() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(3, 50)), 1)  # many ties
    scores[2] = 0.5  # a constant score: correlation undefined -> 0
    np.testing.assert_allclose(cr.average_ranks(scores), torch_ranks(torch.tensor(scores, dtype=torch.float32)).numpy())
    keep = cr.corrrise_masks(cr.CorrRiseOptions(n_masks=50, patch_size=3, n_patches=2), 8, 8)
    keep[:, 0, 0] = 1.0  # a pixel no mask hides: correlation undefined -> 0
    got = cr.spearman_maps(scores, keep)
    expected = torch_spearman(torch.tensor(scores, dtype=torch.float32), torch.from_numpy(keep)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.all(got[2] == 0)
    assert np.all(got[:, 0, 0] == 0)
    # a score equal to one pixel's keep value: its ranks (two tie groups) are affine in it -> corr 1
    exact = cr.spearman_maps(keep[:, 3, 3][None].astype(np.float64), keep)
    assert exact[0, 3, 3] == pytest.approx(1.0, abs=1e-12)
    assert np.all(exact[0] <= 1 + 1e-12)


def test_maps_equal_torch_corrrise_on_the_same_masks() -> None:
    """Same masks, same model, same target: the numpy twin and facexai.explain.CorrRISE agree."""
    net = _tiny_net()
    images = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = net(torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(4)))
    explainer = CorrRISE(n_masks=64, patch_size=6, n_patches=3, seed=5, fill=-0.5, batch_size=16)
    expected = explainer(net, images, SimilarityTarget(reference)).numpy()
    keep = explainer.masks(24, 24).numpy()

    def score(masked: np.ndarray, sample: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(torch.from_numpy(masked))
        return nn.functional.cosine_similarity(out, reference[torch.from_numpy(sample)]).numpy()

    options = cr.CorrRiseOptions(n_masks=64, patch_size=6, n_patches=3, batch_size=10)
    got = cr.corrrise_maps(score, images.numpy(), options, fill=-0.5, keep=keep)
    assert got.shape == (2, 24, 24)
    assert got.min() == 0.0
    assert got.max() == pytest.approx(1.0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_per_channel_fill_is_what_hidden_pixels_see() -> None:
    images = np.ones((1, 3, 4, 4), np.float32)
    keep = np.ones((2, 4, 4), np.float32)
    keep[0, :2] = 0
    seen = []

    def score(masked: np.ndarray, sample: np.ndarray) -> np.ndarray:
        seen.append(masked)
        return masked.sum(axis=(1, 2, 3))

    cr.masked_scores(score, images, keep, np.array([-1.0, 0.0, 2.0]), batch_size=8)
    first = seen[0][0]
    assert np.all(first[0, :2] == -1)
    assert np.all(first[1, :2] == 0)
    assert np.all(first[2, :2] == 2)
    assert np.all(first[:, 2:] == 1)
    assert np.all(seen[0][1] == 1)
