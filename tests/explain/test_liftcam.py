"""LIFT-CAM (Jung & Oh, ICCV 2021, arXiv 2102.05228): closed forms, DeepLIFT rules, reference."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import timm.layers
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from facexai.explain import ClassTarget, create_explainer
from facexai.explain.base import explanation_mode, postprocess
from facexai.explain.liftcam import LiftCAM, _paired_forward, cosine_multipliers, rule_kind

REFERENCE = Path(__file__).parent / "reference"


def contributions(model, images, target, layer=None):
    with explanation_mode(model):
        return LiftCAM(layer).contributions(model, images, target)


# ---- closed forms and summation-to-delta -------------------------------------------------------


@pytest.mark.parametrize("arch", ["tiny", "resnet18"])
def test_linear_head_closed_form(arch, classifier, resnet18):
    model, fc = (classifier, classifier.head[2]) if arch == "tiny" else (resnet18, resnet18.fc)
    images = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([1, 4])
    result = contributions(model, images, ClassTarget(labels))
    # s = sum_k w_ck mean_ij(A_kij) + b_c is linear in A: every multiplier is w_ck / (h w), so
    # phi_k = sum_ij A_kij w_ck / (h w) = w_ck mean(A_k), and sum_k phi_k = s(A) - b_c = s(A) - s(0)
    expected = fc.weight[labels].detach() * result.activations.mean(dim=(2, 3))
    torch.testing.assert_close(result.weights, expected, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        logits = model(images)[torch.arange(2), labels]
    torch.testing.assert_close(result.delta, logits - fc.bias[labels].detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.weights.sum(1), result.delta, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["class", "gelu", "similar", "dissimilar"])
def test_summation_to_delta_nonlinear_head(kind, images, models, embedder, pair_target):
    if kind in ("class", "gelu"):  # GELU: a smooth, not piecewise-linear Rescale
        model = models.classifier("mlp", nn.GELU if kind == "gelu" else nn.ReLU)
        target = ClassTarget([0, 2, 4])
    else:
        model, target = embedder, pair_target(kind)
    result = contributions(model, images, target)
    # independent s(0): the same model with the CAM layer's output zeroed
    handle = model.features.register_forward_hook(lambda module, args, output: torch.zeros_like(output))
    with torch.no_grad():
        zero_score = target(model(images))
    handle.remove()
    with torch.no_grad():
        torch.testing.assert_close(result.delta, target(model(images)) - zero_score, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(result.weights.sum(1), result.delta, atol=1e-6, rtol=1e-5)
    assert result.delta.abs().min() > 1e-3  # not a vacuous check


def test_rescale_rule_by_hand(images, mlp_classifier):
    """DeepLIFT of pool -> flatten -> fc1 -> BN -> ReLU -> fc2, written as matrices."""
    model, labels = mlp_classifier, torch.tensor([0, 2, 4])
    result = contributions(model, images, ClassTarget(labels))
    _, _, fc1, bn, _, fc2 = model.head
    with torch.no_grad():
        pooled = F.adaptive_avg_pool2d(result.activations, 2).flatten(1)  # linear in A: exact
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # BN in eval is affine
        z, z0 = bn(fc1(pooled)), bn(fc1(torch.zeros_like(pooled)))
        rescale = (torch.relu(z) - torch.relu(z0)) / (z - z0)  # the Rescale rule
        m_pooled = (fc2.weight[labels] * rescale * scale) @ fc1.weight  # (N, 64)
        # the pool is linear, so phi_k = sum over the 2x2 pooled cells of pooled * multiplier
        expected = (pooled * m_pooled).view(3, 16, 4).sum(2)
    torch.testing.assert_close(result.weights, expected, atol=1e-6, rtol=1e-4)
    gradient_weights = (
        (
            pooled
            * torch.autograd.functional.jacobian(lambda p: model.head[2:](p)[torch.arange(3), labels].sum(), pooled)
        )
        .view(3, 16, 4)
        .sum(2)
    )
    assert (gradient_weights - expected).abs().max() > 1e-3  # the rule matters here


class SignedMaxHead(nn.Module):
    """CAM layer = a conv without ReLU (signed A), head = 2x2 max-pool -> flatten -> fc."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


def test_max_rule_by_hand():
    """DeepLIFT's max rule with the zero reference, window by window (captum's cross-max rule).

    A window with max(x) >= 0 = max(x0) moves by max(x); all of it goes to the input's arg-max.
    A window with max(x) < 0 moves by max(x) too, but the cross-max sends it to the reference's
    arg-max, the first position of the all-zero window.
    """
    model = SignedMaxHead().eval()
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    labels = torch.tensor([0, 2])
    result = contributions(model, images, ClassTarget(labels), layer="conv")
    a = result.activations
    assert (a < 0).any()
    assert (a > 0).any()
    g = model.fc.weight[labels].detach().view(2, 4, 4, 4)
    expected = torch.zeros(2, 4)
    for n in range(2):
        for k in range(4):
            for i in range(4):
                for j in range(4):
                    window = a[n, k, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                    expected[n, k] += g[n, k, i, j] * window.max()
    torch.testing.assert_close(result.weights, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.weights.sum(1), result.delta, atol=1e-5, rtol=1e-5)
    # where a whole window is negative the contribution sits at the window's first pixel
    with explanation_mode(model):
        leaf, output = _paired_forward(model, images, "conv", duplicate=False)
        (grad,) = torch.autograd.grad(output[:2], leaf, F.one_hot(labels, 3).float())
    windows = a.unfold(2, 2, 2).unfold(3, 2, 2)  # (N, C, 4, 4, 2, 2)
    negative = windows.flatten(-2).amax(-1) < 0
    contribution = (leaf * grad).detach().unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
    assert negative.any()
    assert (contribution[negative][:, 1:] == 0).all()
    assert (contribution[negative][:, 0] != 0).all()


def test_cosine_multipliers_are_exact_and_tend_to_the_gradient():
    gen = torch.Generator().manual_seed(7)
    e, e0, r = (torch.randn(5, 16, generator=gen) for _ in range(3))
    m = cosine_multipliers(e, e0, r)
    change = F.cosine_similarity(e, r) - F.cosine_similarity(e0, r)
    torch.testing.assert_close((m * (e - e0)).sum(1), change, atol=1e-6, rtol=1e-6)
    near = e + 1e-4 * torch.randn(5, 16, generator=gen)
    leaf = e.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cosine_similarity(leaf, r).sum(), leaf)
    torch.testing.assert_close(cosine_multipliers(e, near, r), gradient, atol=1e-4, rtol=1e-3)


# ---- generality: rules found by type, fallbacks, errors -----------------------------------------


@pytest.mark.parametrize(
    ("module", "kind"),
    [
        (nn.ReLU(inplace=True), "rescale"),
        (nn.PReLU(), "rescale"),
        (nn.GELU(), "rescale"),
        (nn.SiLU(), "rescale"),
        (nn.Sigmoid(), "rescale"),
        (timm.layers.activations.GELU(), "rescale"),
        (nn.MaxPool2d(2), "max"),
        (nn.AdaptiveMaxPool2d(1), "max"),
        (nn.Softmax(dim=1), None),
        (nn.Conv2d(1, 1, 1), None),
        (nn.BatchNorm2d(1), None),
        (nn.AdaptiveAvgPool2d(1), None),
        (nn.Dropout(), None),
    ],
)
def test_rule_kind(module, kind):
    assert rule_kind(module) == kind


class FunctionalHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1).flatten(1)
        return self.fc2(F.relu(self.fc1(pooled)))


def test_functional_nonlinearity_in_head_warns(images):
    with pytest.warns(RuntimeWarning, match="summation-to-delta"):
        create_explainer("liftcam", target_layer="conv")(FunctionalHead().eval(), images, ClassTarget([0, 1, 2]))


def test_no_warning_when_every_nonlinearity_is_a_module(images, mlp_classifier, embedder, pair_target):
    with warnings.catch_warnings():
        # the summation-to-delta check; an EmptyMapWarning (sample 0 of the seeded classifier
        # has no positive evidence for class 0) is a different matter
        warnings.simplefilter("error", RuntimeWarning)
        create_explainer("liftcam")(mlp_classifier, images, ClassTarget([0, 1, 2]))
        create_explainer("liftcam")(embedder, images, pair_target("dissimilar"))


def test_layer_inside_a_residual_block_holds_the_skip_fixed(resnet18):
    """layer4.1.bn2 feeds `out += identity`: the [A; 0] batch cannot broadcast with the N-row
    skip, so LIFT-CAM runs [x; x] and the skip keeps its actual value in both halves."""
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    target = ClassTarget([3, 7])
    result = contributions(resnet18, images, target, layer="layer4.1.bn2")
    handle = resnet18.layer4[1].bn2.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
    with torch.no_grad():
        zero_score = target(resnet18(images))
    handle.remove()
    with torch.no_grad():
        torch.testing.assert_close(result.delta, target(resnet18(images)) - zero_score, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.weights.sum(1), result.delta, atol=1e-5, rtol=1e-4)
    explainer = create_explainer("liftcam", target_layer="layer4.1.bn2")
    both = explainer(resnet18, images, target)
    one = explainer(resnet18, images[:1], ClassTarget([3]))
    torch.testing.assert_close(one[0], both[0], atol=5e-5, rtol=0)


def test_efficient_and_duplicated_paths_agree(mlp_classifier, images):
    labels = F.one_hot(torch.tensor([0, 2, 4]), 5).float()
    grads = []
    with explanation_mode(mlp_classifier):
        for duplicate in (False, True):
            leaf, output = _paired_forward(mlp_classifier, images, "features", duplicate)
            grads.append(torch.autograd.grad(output[:3], leaf, labels)[0] * leaf)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_layer_called_twice_is_refused(resnet18):
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="more than once"):
        create_explainer("liftcam", target_layer="layer4.1.relu")(resnet18, images, ClassTarget([0]))


# ---- agreement with the paper's code ------------------------------------------------------------


def reference_model(arch: str, seed: int) -> nn.Module:
    """Rebuilds the seeded model of ``reference/README.md`` (random biases in VGG's classifier)."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    if arch == "vgg16":
        torch.manual_seed(100 + seed)
        for layer in model.classifier:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.bias, std=0.1)
    return model


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = (
        a.flatten(1) - a.flatten(1).mean(1, keepdim=True),
        b.flatten(1) - b.flatten(1).mean(1, keepdim=True),
    )
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


@pytest.mark.parametrize(("arch", "layer"), [("vgg16", "features.29"), ("resnet50", "layer4")])
def test_matches_reference_code(arch, layer):
    fixture = torch.load(REFERENCE / f"liftcam_{arch}.pt")
    model = reference_model(arch, fixture["model_seed"])
    torch.manual_seed(fixture["images_seed"])
    images = torch.randn(2, 3, fixture["size"], fixture["size"])
    with torch.no_grad():
        assert torch.allclose(model(images), fixture["logits"], atol=1e-4), "seeded model drifted"
    # the reference explains one (image, class) at a time; here all four in one batch
    images, target = images.repeat_interleave(2, dim=0), ClassTarget(fixture["classes"].flatten())
    explainer = create_explainer("liftcam", target_layer=layer)
    maps = explainer(model, images, target)
    assert (pearson(maps, fixture["maps"].float()) >= 0.99).all()
    assert (maps - fixture["maps"].float()).abs().max() < 2e-3  # fp16 storage: ~2.5e-4 measured
    with explanation_mode(model):
        raw = torch.relu(explainer.explain(model, images, target))
    scale = fixture["raw"].flatten(1).amax(1)[:, None, None]
    torch.testing.assert_close(raw / scale, fixture["raw"] / scale, atol=1e-4, rtol=0)
    torch.testing.assert_close(postprocess(raw, images.shape[-2:]), maps)
