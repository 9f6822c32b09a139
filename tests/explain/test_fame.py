"""FAME (Zhang & Guenther, CVPRW 2026, arXiv 2605.12017): values, options, reference agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from scipy import ndimage
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from facexai.explain import ClassTarget, SimilarityTarget, available_explainers, create_explainer
from facexai.explain.fame import FAME, effective_kernel, fame_map, fame_perturb, lots_step, matching_kernel

REFERENCE = Path(__file__).parent / "reference"
STEP = 1.0 / 255.0
LUMA = np.array([0.2989, 0.587, 0.114])


# ---------------------------------------------------------------- tiny seeded models and data


def seeded(seed: int, build):
    """Build with the global RNG seeded, without disturbing other tests' RNG state."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tiny_classifier(classes: int = 5) -> nn.Module:
    return seeded(
        0,
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, classes),
        ).eval(),
    )


def tiny_embedder(size: int = 32) -> nn.Module:
    return seeded(
        1,
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.PReLU(8),
            nn.Flatten(),
            nn.Linear(8 * (size // 2) ** 2, 16),
        ).eval(),
    )


class Linear(nn.Module):
    """Logits z = W vec(x) + b: the gradient of z_c is the constant w_c."""

    def __init__(self, size: int, classes: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(randn(classes, 3, size, size, seed=7))
        self.bias = nn.Parameter(randn(classes, seed=8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,kchw->nk", x, self.weight) + self.bias


# ---------------------------------------------------------------- independent helpers


def numpy_fame_map(delta: np.ndarray, kernel: int, sigma: float) -> np.ndarray:
    """|gray(delta)| / max, torchvision's Gaussian with mirror padding, min-max (numpy/scipy)."""
    diff = np.abs(np.einsum("nchw,c->nhw", delta, LUMA))
    diff = diff / diff.reshape(len(diff), -1).max(axis=1)[:, None, None]
    x = np.arange(kernel) - (kernel - 1) / 2
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    weights /= weights.sum()
    # torch's "reflect" padding (no edge repeat) is scipy's "mirror"
    blurred = ndimage.correlate1d(diff, weights, axis=1, mode="mirror")
    blurred = ndimage.correlate1d(blurred, weights, axis=2, mode="mirror")
    low = blurred.reshape(len(blurred), -1).min(axis=1)[:, None, None]
    high = blurred.reshape(len(blurred), -1).max(axis=1)[:, None, None]
    return (blurred - low) / (high - low)


def loop_fame(model, images, score, iterations, kernel=49, sigma=7.7) -> torch.Tensor:
    """A straightforward FAME: one sample at a time, gray first then subtract, as docs/methods.md (FAME)."""
    maps = []
    for i in range(len(images)):
        x0 = images[i : i + 1]
        x = x0.clone()
        for _ in range(iterations):
            x.requires_grad_(True)
            (g,) = torch.autograd.grad(score(model(x), i).sum(), x)
            x = (x - STEP * g / g.abs().max()).detach()
        luma = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        d = ((x * luma).sum(1, keepdim=True) - (x0 * luma).sum(1, keepdim=True)).abs()
        d = gaussian_blur(d / d.max(), [kernel, kernel], [sigma, sigma])[0, 0]
        maps.append((d - d.min()) / (d.max() - d.min()))
    return torch.stack(maps)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.flatten(1).double() - a.flatten(1).double().mean(1, keepdim=True)
    b = b.flatten(1).double() - b.flatten(1).double().mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


# ---------------------------------------------------------------- basics


def test_registered_with_paper_defaults():
    assert "fame" in available_explainers()
    explainer = create_explainer("fame")
    assert isinstance(explainer, FAME)
    assert (explainer.iterations, explainer.step_size, explainer.epsilon) == (500, STEP, None)
    assert (explainer.blur_kernel, explainer.blur_sigma) == ("auto", 7.7)
    assert explainer.blur_parameters((112, 112)) == (49, 7.7)  # the paper's blur ...
    assert explainer.blur_parameters((64, 64)) == (49, 7.7)  # ... at every size unless "auto"
    assert explainer.last_iterations is None
    assert "last_iterations" not in repr(explainer)


def test_shape_range_and_iterations_used():
    model, images = tiny_classifier(), randn(3, 3, 32, 32, seed=1)
    explainer = create_explainer("fame", iterations=3)
    maps = explainer(model, images, ClassTarget([0, 1, 4]))
    assert maps.shape == (3, 32, 32)
    assert maps.dtype == torch.float32
    assert maps.min() >= 0
    assert torch.allclose(maps.flatten(1).amax(1), torch.ones(3))
    assert maps.flatten(1).amin(1).eq(0).all()
    assert explainer.last_iterations.tolist() == [3, 3, 3]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_largest_pixel_moves_exactly_step_size_per_sample(dtype):
    model = tiny_classifier().to(dtype)
    scales = torch.tensor([1.0, 5.0, 0.2], dtype=dtype).view(3, 1, 1, 1)
    images = randn(3, 3, 32, 32, seed=2).to(dtype) * scales
    # g / max|g| is exactly +-1 at the peak; only the final x - step rounds (half an ulp of x)
    atol = float(torch.finfo(dtype).eps * images.abs().max())
    target = ClassTarget([0, 2, 3])
    x = images.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(target(model(x)).sum(), x)
    peaks = g.abs().flatten(1).amax(1)
    assert peaks.max() > 1.5 * peaks.min()  # a batch-wide normalisation would fail below

    adversarial, steps = fame_perturb(model, images, target, iterations=1, step_size=STEP)
    delta = adversarial - images
    largest = delta.abs().flatten(1).amax(1)
    torch.testing.assert_close(largest, torch.full((3,), STEP, dtype=dtype), atol=atol, rtol=0)
    torch.testing.assert_close(delta, -STEP * g / peaks.view(3, 1, 1, 1), atol=atol, rtol=0)
    assert steps.tolist() == [1, 1, 1]


def test_zero_gradient_sample_stays_put_and_gives_zero_map():
    class HalfDead(nn.Module):
        def forward(self, x):  # sample 0 has an all-zero gradient, sample 1 does not
            logits = torch.stack([x[:, 0].mean((1, 2)), torch.zeros(len(x))], 1)
            return logits * torch.tensor([[0.0], [1.0]])

    images = randn(2, 3, 16, 16, seed=3)
    adversarial, _ = fame_perturb(HalfDead(), images, ClassTarget([0, 0]), 2, STEP)
    assert torch.equal(adversarial[0], images[0])
    assert abs(float((adversarial[1] - images[1]).abs().max()) - 2 * STEP) < 1e-6
    maps = create_explainer("fame", iterations=2)(HalfDead(), images, ClassTarget([0, 0]))
    assert torch.isfinite(maps).all()
    assert maps[0].eq(0).all()
    assert maps[1].max() == 1


def test_epsilon_none_equals_independent_loop():
    model, images, labels = tiny_classifier(), randn(3, 3, 32, 32, seed=4), torch.tensor([1, 3, 0])
    maps = create_explainer("fame", iterations=5)(model, images, ClassTarget(labels))
    expected = loop_fame(model, images, lambda out, i: out[0, labels[i]], iterations=5)
    # float32: x_adv - x carries rounding of ulp(x) ~ 1e-7 against a change of ~0.02 (measured 3e-5)
    torch.testing.assert_close(maps, expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- linear model: closed form


@pytest.mark.parametrize(("size", "kernel"), [(32, 49), (16, 31)])  # 16 px: kernel truncated to 31
def test_linear_model_closed_form(size, kernel):
    model, images, labels = Linear(size), randn(3, 3, size, size, seed=5), torch.tensor([0, 1, 2])
    iterations = 4
    w = model.weight.detach()[labels]
    expected_delta = -iterations * STEP * w / w.abs().flatten(1).amax(1).view(3, 1, 1, 1)
    adversarial, _ = fame_perturb(model, images, ClassTarget(labels), iterations, STEP)
    torch.testing.assert_close(adversarial - images, expected_delta, atol=1e-6, rtol=0)

    assert effective_kernel(49, (size, size)) == kernel
    maps = create_explainer("fame", iterations=iterations)(model, images, ClassTarget(labels))
    expected = numpy_fame_map(w.double().numpy(), kernel, 7.7)  # |gray(delta)| ~ |gray(w)|
    # float32 rounding of x_adv - x (measured 1.2e-4); a 10 % sigma error already fails
    np.testing.assert_allclose(maps.numpy(), expected, atol=5e-4)


# ---------------------------------------------------------------- early stopping per sample


def test_epsilon_stops_per_sample_and_is_batch_invariant():
    model, labels = tiny_classifier(), torch.tensor([1, 1, 1, 1])
    images = randn(1, 3, 32, 32, seed=6) + 0.1 * randn(4, 3, 32, 32, seed=13)
    losses, x = [], images  # the loss trajectory without early stopping, (iterations, N)
    for _ in range(12):
        x, loss = lots_step(model, x, ClassTarget(labels), STEP)
        losses.append(loss)
    losses = torch.stack(losses)
    epsilon = float(losses[6].mean())
    assert (losses - epsilon).abs().min() > 5e-6  # no near-ties: stop iterations are well defined
    below = losses < epsilon  # checked before each step, as in the reference
    expected = torch.where(below.any(0), below.int().argmax(0), torch.tensor(12))
    assert len(set(expected.tolist())) >= 3, expected

    explainer = create_explainer("fame", iterations=12, epsilon=epsilon)
    batched = explainer(model, images, ClassTarget(labels))
    steps = explainer.last_iterations.clone()
    assert steps.tolist() == expected.tolist()
    single, single_steps = [], []
    for i in range(4):
        single.append(explainer(model, images[i : i + 1], ClassTarget(labels[i : i + 1])))
        single_steps.append(int(explainer.last_iterations))
    torch.testing.assert_close(batched, torch.cat(single), atol=1e-5, rtol=0)
    assert single_steps == steps.tolist()
    for i in range(4):  # a sample stopped after k steps is exactly a k-iteration run
        fixed = create_explainer("fame", iterations=int(steps[i]))
        expected_map = fixed(model, images[i : i + 1], ClassTarget(labels[i : i + 1]))
        torch.testing.assert_close(batched[i : i + 1], expected_map, atol=1e-5, rtol=0)


def test_epsilon_above_every_loss_gives_zero_maps():
    model, images = tiny_classifier(), randn(2, 3, 16, 16, seed=9)
    explainer = create_explainer("fame", iterations=5, epsilon=1e6)
    maps = explainer(model, images, ClassTarget([0, 1]))
    assert explainer.last_iterations.tolist() == [0, 0]
    assert maps.eq(0).all()


# ---------------------------------------------------------------- verification


def test_similar_and_dissimilar_targets_differ():
    model, probe = tiny_embedder(), randn(2, 3, 32, 32, seed=10)
    with torch.no_grad():
        reference = model(randn(2, 3, 32, 32, seed=11))
    similar = SimilarityTarget(reference, "similar")
    dissimilar = SimilarityTarget(reference, "dissimilar")
    # one step: opposite directions, equal size
    step_similar, _ = lots_step(model, probe, similar, STEP)
    step_dissimilar, _ = lots_step(model, probe, dissimilar, STEP)
    torch.testing.assert_close(step_similar - probe, probe - step_dissimilar, atol=1e-6, rtol=0)
    # many steps: s falls for e+, rises for e-, and the maps differ
    x_sim, _ = fame_perturb(model, probe, similar, 20, STEP)
    x_dis, _ = fame_perturb(model, probe, dissimilar, 20, STEP)
    with torch.no_grad():
        s0, s_sim, s_dis = (F.cosine_similarity(model(x), reference) for x in (probe, x_sim, x_dis))
    assert (s_sim < s0 - 0.01).all()
    assert (s_dis > s0 + 0.01).all()
    explainer = create_explainer("fame", iterations=20)
    e_plus, e_minus = explainer(model, probe, similar), explainer(model, probe, dissimilar)
    assert (e_plus - e_minus).abs().flatten(1).amax(1).min() > 0.05


def test_hygiene_under_inference_mode():
    model, images = tiny_classifier().train(), randn(2, 3, 16, 16, seed=12)
    explainer = create_explainer("fame", iterations=3)
    expected = explainer(model, images, ClassTarget([0, 1]))
    model.train()
    with torch.inference_mode():
        maps = explainer(model, images.clone(), ClassTarget([0, 1]))
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(maps, expected)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"iterations": 0}, ValueError, "iterations must be positive"),
        ({"iterations": 2.5}, TypeError, "iterations must be an integer"),
        ({"iterations": True}, TypeError, "iterations must be an integer"),
        ({"step_size": 0.0}, ValueError, "step_size must be positive"),
        ({"step_size": "1/255"}, TypeError, "step_size must be a number"),
        ({"epsilon": "0.1"}, TypeError, "epsilon must be None or a number"),
        ({"epsilon": float("nan")}, ValueError, "epsilon must be None or a finite number"),
        ({"blur_kernel": 48}, ValueError, "blur_kernel must be odd.*49 or 47"),
        ({"blur_kernel": -3}, ValueError, "blur_kernel must be positive"),
        ({"blur_kernel": 49.0}, TypeError, "blur_kernel must be an integer"),
        ({"blur_sigma": 0}, ValueError, "blur_sigma must be positive"),
        ({"blur_sigma": None}, TypeError, "blur_sigma must be a number"),
        ({"blur_sigma": "Auto"}, ValueError, "blur_sigma must be a positive number or 'auto', got 'Auto'"),
        ({"blur_kernel": "scaled"}, ValueError, "blur_kernel must be an odd positive integer or 'auto'"),
    ],
)
def test_bad_options_raise(options, error, match):
    with pytest.raises(error, match=match):
        create_explainer("fame", **options)


# ---------------------------------------------------------------- blur that follows the image size


def test_auto_blur_is_the_paper_blur_at_112_px():
    """At the paper's 112 px, "auto" must reproduce kernel 49 / sigma 7.7 and the same map."""
    auto = create_explainer("fame", iterations=3, blur_sigma="auto")
    explicit = create_explainer("fame", iterations=3, blur_kernel=49, blur_sigma=7.7)
    assert auto.blur_parameters((112, 112)) == (49, pytest.approx(7.7, abs=1e-12))
    model, images = tiny_classifier(), randn(2, 3, 112, 112, seed=4)
    target = ClassTarget(torch.tensor([1, 3]))
    torch.testing.assert_close(auto(model, images, target), explicit(model, images, target), rtol=0, atol=1e-6)


def test_auto_blur_scales_sigma_and_kernel_with_the_shorter_side():
    """64 px: sigma 7.7 * 64 / 112 = 4.4; radius 24 * 4.4 / 7.7 = 13.7 -> 14, kernel 29."""
    auto = create_explainer("fame", blur_sigma="auto")
    kernel, sigma = auto.blur_parameters((64, 64))
    assert (kernel, sigma) == (29, pytest.approx(4.4, abs=1e-12))
    assert auto.blur_parameters((64, 200)) == (29, pytest.approx(4.4, abs=1e-12))  # the shorter side
    assert auto.blur_parameters((224, 224)) == (97, pytest.approx(15.4, abs=1e-12))  # 2 * 48 + 1
    assert auto.blur_parameters((8, 8)) == (5, pytest.approx(0.55, abs=1e-12))  # radius 1.71 -> 2
    # A fixed kernel is kept; only the sigma follows the size.
    assert create_explainer("fame", blur_sigma="auto", blur_kernel=9).blur_parameters((64, 64))[0] == 9


def test_matching_kernel_is_odd_and_at_least_one():
    for sigma in (0.01, 0.2, 1.0, 3.3, 4.4, 7.7, 20.0):
        kernel = matching_kernel(sigma)
        assert kernel >= 1
        assert kernel % 2 == 1
    assert matching_kernel(0.01) == 1  # tiny sigma: no blur rather than an even or empty kernel
    assert matching_kernel(7.7) == 49


def test_auto_blur_map_at_64_px_matches_the_scaled_explicit_blur():
    """The map "auto" produces on 64 px is the map of the explicit kernel 29 / sigma 4.4."""
    model, images = tiny_classifier(), randn(2, 3, 64, 64, seed=5)
    target = ClassTarget(torch.tensor([0, 2]))
    auto = create_explainer("fame", iterations=3, blur_sigma="auto")
    adversarial, _ = fame_perturb(model, images, target, 3, STEP)
    expected = fame_map(images, adversarial, 29, 4.4)
    expected = (expected - expected.amin((1, 2), keepdim=True)) / (
        expected.amax((1, 2), keepdim=True) - expected.amin((1, 2), keepdim=True)
    )
    torch.testing.assert_close(auto(model, images, target), expected, rtol=0, atol=1e-5)
    fixed = create_explainer("fame", iterations=3)(model, images, target)
    assert (auto(model, images, target) - fixed).abs().max() > 0.05  # the paper's 7.7 px blurs more


def test_negative_epsilon_is_a_valid_logit_threshold():
    assert create_explainer("fame", epsilon=-2).epsilon == -2.0


# ---------------------------------------------------------------- reference code agreement
# Fixtures: AIML-IfI/fame run on the seeded models/inputs below; see reference/README.md.


def reference_classifier(seed: int) -> nn.Module:
    return seeded(seed, lambda: torchvision.models.resnet18(weights=None, num_classes=10).eval())


def reference_embedder(seed: int, size: int = 64) -> nn.Module:
    return seeded(
        seed,
        lambda: nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.PReLU(16),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.PReLU(32),
            nn.Flatten(),
            nn.Linear(32 * (size // 4) ** 2, 64),
        ).eval(),
    )


def reference_inputs(seed: int, count: int) -> list[torch.Tensor]:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return [torch.randn(2, 3, 64, 64) for _ in range(count)]


@pytest.mark.parametrize(("kernel", "key"), [(49, "maps"), (1, "maps_unblurred")])
def test_classification_matches_reference_code(kernel, key):
    fixture = torch.load(REFERENCE / "fame_classification.pt")
    seeds = fixture["seeds"]
    model = reference_classifier(seeds["classifier"])
    (images,) = reference_inputs(seeds["class_images"], 1)
    with torch.no_grad():
        assert torch.equal(model(images).argmax(1), fixture["labels"])  # the same seeded model
    explainer = create_explainer("fame", iterations=fixture["iterations"], blur_kernel=kernel)
    maps = explainer(model, images, ClassTarget(fixture["labels"]))
    assert (pearson(maps, fixture[key]) >= 0.99).all()
    assert (maps - fixture[key]).abs().max() < 1e-2  # measured: 5e-4 blurred, 2e-3 unblurred


@pytest.mark.parametrize("mode", ["similar", "dissimilar"])
@pytest.mark.parametrize(("kernel", "suffix"), [(49, ""), (1, "_unblurred")])
def test_verification_matches_reference_code(mode, kernel, suffix):
    fixture = torch.load(REFERENCE / "fame_verification.pt")
    model = reference_embedder(fixture["seeds"]["embedder"])
    probe, gallery = reference_inputs(fixture["seeds"]["pair_images"], 2)
    with torch.no_grad():
        reference = model(gallery)
    explainer = create_explainer("fame", iterations=fixture["iterations"], blur_kernel=kernel)
    maps = explainer(model, probe, SimilarityTarget(reference, mode))
    assert (pearson(maps, fixture[mode + suffix]) >= 0.99).all()
    assert (maps - fixture[mode + suffix]).abs().max() < 1e-4  # measured: about 6e-6
