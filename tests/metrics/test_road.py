"""ROAD: the batched imputation solver against scipy's sparse solve, curves and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch

from facexai.metrics import ROADLeRF, ROADMoRF
from facexai.metrics.functional import linear_imputation, noisy_linear_imputation, road_curves, road_score
from facexai.metrics.functional.road import removal_masks


def scipy_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Reference: one sparse system per channel, assembled pixel by pixel (ROAD's definition)."""
    h, w = removed.shape
    unknown = np.argwhere(removed)
    index = {tuple(p): k for k, p in enumerate(unknown)}
    a = scipy.sparse.lil_matrix((len(unknown), len(unknown)))
    b = np.zeros(len(unknown))
    for k, (i, j) in enumerate(unknown):
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ii, jj = i + di, j + dj
                if (di, dj) == (0, 0) or not (0 <= ii < h and 0 <= jj < w):
                    continue
                weight = 1 / 6 if di == 0 or dj == 0 else 1 / 12
                a[k, k] += weight
                if removed[ii, jj]:
                    a[k, index[(ii, jj)]] -= weight
                else:
                    b[k] += weight * image[ii, jj]
    out = image.copy()
    out[removed] = scipy.sparse.linalg.spsolve(a.tocsr(), b)
    return out


def test_batched_solver_matches_scipy() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 2, 12, 12, generator=gen)
    removed = torch.rand(2, 12, 12, generator=gen) < 0.5
    removed[1, 2:10, 3:11] = True  # a large hole
    out = linear_imputation(images, removed)
    for n in range(2):
        for c in range(2):
            expected = scipy_imputation(images[n, c].double().numpy(), removed[n].numpy())
            np.testing.assert_allclose(out[n, c].numpy(), expected, atol=1e-4)
    assert torch.equal(out[~removed.unsqueeze(1).expand_as(out)], images[~removed.unsqueeze(1).expand_as(images)])


def test_constant_image_and_noise() -> None:
    images = torch.full((1, 3, 10, 10), 0.4)
    removed = torch.zeros(1, 10, 10, dtype=torch.bool)
    removed[0, 3:7, 3:7] = True
    torch.testing.assert_close(linear_imputation(images, removed), images)
    noisy = noisy_linear_imputation(images, removed, 0.05, torch.Generator().manual_seed(0))
    diff = (noisy - images)[0][:, removed[0]]
    assert torch.equal(noisy[:, :, ~removed[0]], images[:, :, ~removed[0]])
    assert 0.03 < diff.std().item() < 0.07
    assert diff.abs().max() > 0


def test_removal_masks_morf_and_lerf() -> None:
    maps = torch.arange(16.0).view(1, 4, 4)  # pixel 15 most relevant
    morf = removal_masks(maps, [25, 50], "morf")
    lerf = removal_masks(maps, [25], "lerf")
    assert morf.shape == (1, 2, 4, 4)
    assert morf[0, 0].flatten().nonzero().flatten().tolist() == [12, 13, 14, 15]
    assert int(morf[0, 1].sum()) == 8
    assert lerf[0, 0].flatten().nonzero().flatten().tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="Available: morf, lerf"):
        removal_masks(maps, [10], "random")
    with pytest.raises(ValueError, match="percentages"):
        removal_masks(maps, [120], "morf")


def test_road_curves_closed_form_and_chunking() -> None:
    gen = torch.Generator().manual_seed(1)
    images, maps = torch.randn(3, 3, 8, 8, generator=gen), torch.rand(3, 8, 8, generator=gen)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]

    def score(batch: torch.Tensor) -> torch.Tensor:
        return batch[:, 0].mean(dim=(1, 2))

    curves = road_curves(score, images, maps, mean, std, [20, 60], "morf", noise_std=0.0, chunk_size=2)
    masks = removal_masks(maps, [20, 60], "morf")
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    for k in range(2):
        filled = (linear_imputation(images * s + m, masks[:, k]) - m) / s
        torch.testing.assert_close(curves[:, k], score(filled))
    noisy = [road_curves(score, images, maps, mean, std, [20, 60], chunk_size=c, seed=3) for c in (1, 4)]
    torch.testing.assert_close(noisy[0], noisy[1])  # noise does not depend on the chunking
    assert not torch.allclose(noisy[0], curves)


def test_road_metrics_match_function() -> None:
    curves = torch.rand(7, 3, generator=torch.Generator().manual_seed(2))
    metric = ROADMoRF(percentages=(20, 50, 80))
    metric.update(curves[:4])
    metric.update(curves[4:])
    assert metric.compute().item() == pytest.approx(curves.mean().item())
    assert road_score(curves).item() == pytest.approx(curves.mean().item())
    torch.testing.assert_close(metric.mean_curve(), curves.mean(0))
    assert metric.log_name == "road_morf_percentages-20-80x3_noise-0.01_score-probability"
    assert ROADLeRF.higher_is_better
    assert not ROADMoRF.higher_is_better
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        metric.update(torch.rand(2, 9))
