"""Deletion / insertion curves against closed forms computed independently with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torchvision.transforms.v2.functional as TF

from facexai.metrics import DeletionAUC, InsertionAUC
from facexai.metrics.functional import (
    curve_auc,
    deletion_auc,
    deletion_insertion_curves,
    gaussian_blur,
    insertion_auc,
    perturbation_curves,
    pixel_ranks,
)

N, C, H, W = 3, 3, 12, 12


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(N, C, H, W, generator=gen)
    maps = torch.rand(N, H, W, generator=gen)
    maps[0, :3] = 0.5  # ties, broken by pixel index
    weights = torch.randn(C, H, W, generator=gen)
    return images, maps, weights


def linear_score(weights: torch.Tensor):
    """s(x) = <w, x>: a "model" whose curves have a closed form."""
    return lambda images: (images * weights).sum(dim=(1, 2, 3))


def numpy_curve(x: np.ndarray, m: np.ndarray, w: np.ndarray, base: np.ndarray, steps: int, mode: str) -> np.ndarray:
    """Score after k of `steps` chunks, from per-pixel contributions in stable descending order."""
    order = np.argsort(-m.ravel(), kind="stable")
    contrib_x = (w * x).sum(0).ravel()[order]
    contrib_b = (w * base).sum(0).ravel()[order]
    counts = [k * m.size // steps for k in range(steps + 1)]
    if mode == "deletion":  # first n pixels from the baseline, the rest from x
        return np.array([contrib_b[:n].sum() + contrib_x[n:].sum() for n in counts])
    return np.array([contrib_x[:n].sum() + contrib_b[n:].sum() for n in counts])


def numpy_blur(x: np.ndarray) -> np.ndarray:
    """Gaussian kernel 11, sigma 5, mirrored edges (torch 'reflect' == scipy 'mirror')."""
    t = np.arange(-5, 6, dtype=np.float64)
    g = np.exp(-0.5 * (t / 5.0) ** 2)
    g /= g.sum()
    out = scipy.ndimage.convolve1d(x, g, axis=-1, mode="mirror")
    return scipy.ndimage.convolve1d(out, g, axis=-2, mode="mirror")


@pytest.mark.parametrize(
    ("mode", "baseline"),
    [
        ("deletion", "zero"),
        ("deletion", "mean"),
        ("insertion", "blur"),
        ("insertion", "zero"),
        ("deletion", "blur"),
    ],
)
@pytest.mark.parametrize("steps", [1, 5, 7])
def test_linear_model_closed_form(data, mode: str, baseline: str, steps: int) -> None:
    images, maps, weights = data
    curves = perturbation_curves(linear_score(weights), images, maps, steps, baseline, mode, chunk_size=4)
    assert curves.shape == (N, steps + 1)
    x, m, w = images.double().numpy(), maps.double().numpy(), weights.double().numpy()
    for i in range(N):
        base = {
            "zero": np.zeros_like(x[i]),
            "mean": np.broadcast_to(x[i].mean((1, 2), keepdims=True), x[i].shape),
            "blur": numpy_blur(x[i]),
        }[baseline]
        expected = numpy_curve(x[i], m[i], w, base, steps, mode)
        np.testing.assert_allclose(curves[i].double().numpy(), expected, rtol=1e-4, atol=1e-4)


def test_default_baselines_follow_metrics_md(data) -> None:
    images, maps, weights = data
    score = linear_score(weights)
    torch.testing.assert_close(
        perturbation_curves(score, images, maps, 4, mode="insertion"),
        perturbation_curves(score, images, maps, 4, baseline="blur", mode="insertion"),
    )
    torch.testing.assert_close(
        perturbation_curves(score, images, maps, 4),
        perturbation_curves(score, images, maps, 4, baseline="zero"),
    )


def test_blur_matches_torchvision(data) -> None:
    images = data[0]
    torch.testing.assert_close(gaussian_blur(images), TF.gaussian_blur(images, [11, 11], [5.0, 5.0]))


def test_ranks_are_a_stable_descending_sort() -> None:
    maps = torch.tensor([[[0.2, 0.9], [0.2, 0.9]]])
    # order: 0.9 at index 1, 0.9 at index 3, 0.2 at index 0, 0.2 at index 2
    assert pixel_ranks(maps).flatten().tolist() == [2, 0, 3, 1]
    assert pixel_ranks(torch.zeros(1, 3, 3)).flatten().tolist() == list(range(9))


def test_chunking_and_shared_pass_do_not_change_values(data) -> None:
    images, maps, weights = data
    scored: list[int] = []

    def score(batch: torch.Tensor) -> torch.Tensor:
        scored.append(len(batch))
        return linear_score(weights)(batch)

    deletion = perturbation_curves(score, images, maps, 6, chunk_size=1)
    insertion = perturbation_curves(score, images, maps, 6, mode="insertion", chunk_size=1000)
    scored.clear()
    both = deletion_insertion_curves(score, images, maps, 6, chunk_size=5)
    torch.testing.assert_close(both[0], deletion)
    torch.testing.assert_close(both[1], insertion)
    assert sum(scored) == N * (2 * 7 - 1)
    assert max(scored) <= 5
    scored.clear()
    same = deletion_insertion_curves(score, images, maps, 6, "zero", "zero")
    assert sum(scored) == N * (2 * 7 - 2)  # all-baseline image shared too
    torch.testing.assert_close(same[1], perturbation_curves(score, images, maps, 6, "zero", "insertion"))


def test_with_index_passes_the_sample(data) -> None:
    images, maps, _ = data
    offsets = torch.tensor([10.0, 20.0, 30.0])
    curves = perturbation_curves(
        lambda batch, index: batch.mean(dim=(1, 2, 3)) * 0 + offsets[index],
        images,
        maps,
        4,
        chunk_size=2,
        with_index=True,
    )
    torch.testing.assert_close(curves, offsets[:, None].expand(N, 5))


def test_curve_auc_is_the_trapezoid_rule_on_a_uniform_grid() -> None:
    gen = torch.Generator().manual_seed(3)
    curves = torch.rand(5, 11, generator=gen, dtype=torch.float64)
    expected = [np.trapezoid(c, np.linspace(0, 1, 11)) for c in curves.numpy()]
    np.testing.assert_allclose(curve_auc(curves).numpy(), expected, rtol=1e-12)
    assert curve_auc(torch.tensor([[2.0, 2.0, 2.0]])).item() == pytest.approx(2.0)
    assert curve_auc(torch.tensor([[1.0, 0.5, 0.0]])).item() == pytest.approx(0.5)
    assert curve_auc(torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)


@pytest.mark.parametrize(("cls", "fn"), [(DeletionAUC, deletion_auc), (InsertionAUC, insertion_auc)])
def test_class_function_and_numpy_agree(cls, fn) -> None:
    gen = torch.Generator().manual_seed(4)
    curves = torch.rand(17, 9, generator=gen)
    metric = cls(steps=8)
    for part in curves.split(5):
        metric.update(part)
    expected = np.mean([np.trapezoid(c, dx=1 / 8) for c in curves.double().numpy()])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)
    assert fn(curves).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(metric.mean_curve(), curves.mean(0))
    torch.testing.assert_close(metric.fractions(), torch.linspace(0, 1, 9))
    metric.reset()
    metric.update(curves[:2])
    assert metric.compute().item() == pytest.approx(fn(curves[:2]).item())


def test_curve_metric_settings() -> None:
    metric = InsertionAUC(steps=20, score="cosine")
    assert metric.settings == {"steps": 20, "baseline": "blur", "score": "cosine"}
    assert metric.log_name == "insertion_auc_steps-20_baseline-blur_score-cosine"
    assert DeletionAUC().baseline == "zero"
    assert DeletionAUC.higher_is_better is False
    with pytest.raises(ValueError, match="expects curves of 21 points"):
        metric.update(torch.rand(2, 11))
    with pytest.raises(ValueError, match="Available: zero, blur, mean"):
        DeletionAUC(baseline="noise")


def _ones_score(batch: torch.Tensor) -> torch.Tensor:
    return batch.sum(dim=(1, 2, 3))


@pytest.mark.parametrize(
    ("images", "maps", "kwargs", "match"),
    [
        (torch.rand(2, 3, 8, 8), torch.rand(2, 7, 8), {}, "spatial size"),
        (torch.rand(2, 3, 8, 8), torch.rand(3, 8, 8), {}, "2 images but 3 maps"),
        (torch.rand(2, 3, 8, 8), torch.full((2, 8, 8), float("nan")), {}, "NaN"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), {"steps": 0}, "steps"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), {"baseline": "noise"}, "Available: zero, blur, mean"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), {"mode": "keep"}, "Available: deletion, insertion"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), {"chunk_size": 0}, "chunk_size"),
        (torch.rand(2, 3, 4, 4), torch.rand(2, 4, 4), {"baseline": "blur"}, "larger than 5"),
        (torch.rand(2, 8, 8), torch.rand(2, 8, 8), {}, r"\(N, C, H, W\)"),
    ],
)
def test_bad_inputs_raise(images, maps, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        perturbation_curves(_ones_score, images, maps, **kwargs)


def test_bad_score_fn_output_raises() -> None:
    with pytest.raises(ValueError, match="one score per image"):
        perturbation_curves(lambda b: b.sum(dim=(2, 3)), torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), 2)


def test_curves_with_nan_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        deletion_auc(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="steps >= 1"):
        curve_auc(torch.tensor([[1.0]]))
