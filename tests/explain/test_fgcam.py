"""FG-CAM (Qiu, Jin, Zhang, AAAI 2024, arXiv 2303.09171): rules, conservation, options, reference.

The seeded model/image helpers at the top also regenerate the reference fixtures
(``reference/fgcam_vgg16bn.pt``; see ``reference/README.md``), so keep them stable.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

import facexai.models  # noqa: F401  (registers the IResNets in timm)
from facexai.explain import ClassTarget, SimilarityTarget, create_explainer, postprocess
from facexai.explain._lrp import safe_divide
from facexai.explain.fgcam import FGCAM, denoise_components
from facexai.explain.gradcam import GradCAM

REFERENCE = Path(__file__).parent / "reference" / "fgcam_vgg16bn.pt"


# ------------------------------------------------- seeded models and images (fixtures use these)


@torch.no_grad()
def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """Deterministic weights independent of torchvision/timm init code: He-normal convs and
    linears, random BatchNorm statistics and affines, random PReLU slopes."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            std = math.sqrt(2.0 / module.weight[0].numel())
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
            if module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            module.weight.copy_(0.5 + torch.rand(c, generator=gen))
            module.bias.copy_(0.2 * torch.randn(c, generator=gen))
            module.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
            module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
        elif isinstance(module, nn.PReLU):
            module.weight.copy_(0.5 * torch.rand(module.weight.shape, generator=gen))
    return model.eval()


def seeded_vgg16_bn(seed: int) -> nn.Module:
    """torchvision's VGG16-BN (1000 classes, the reference code's layout) with seeded weights."""
    with torch.device("meta"):  # skip torchvision's own initialisation: every tensor is redrawn
        model = torchvision.models.vgg16_bn(weights=None)
    return reinitialise(model.to_empty(device="cpu"), seed)


def seeded_images(seed: int, n: int, size: int) -> Tensor:
    """Smooth structure plus noise at roughly normalised-image scale, (n, 3, size, size)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, 6, 6, generator=gen)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return smooth + 0.3 * torch.randn(n, 3, size, size, generator=gen)


# --------------------------------------------------------------------------- small test models

SIZE = 64


@pytest.fixture(scope="module")
def vgg() -> nn.Module:
    model = torchvision.models.vgg11_bn(num_classes=10)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))
    return reinitialise(model, 1)  # the 4096-wide head would dominate the run time at 64 px


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return reinitialise(torchvision.models.resnet18(num_classes=10), 2)


@pytest.fixture(scope="module")
def timm_resnet() -> nn.Module:
    return reinitialise(timm.create_model("resnet10t", num_classes=10), 3)


@pytest.fixture(scope="module")
def se_resnet() -> nn.Module:
    return reinitialise(timm.create_model("seresnet18", num_classes=10), 7)


@pytest.fixture(scope="module")
def iresnet() -> nn.Module:
    return reinitialise(timm.create_model("iresnet_mini", img_size=SIZE, num_classes=32), 4)


@pytest.fixture(scope="module")
def images() -> Tensor:
    return seeded_images(5, 2, SIZE)


def class_target(model: nn.Module, images: Tensor) -> ClassTarget:
    with torch.no_grad():
        return ClassTarget(model(images).argmax(dim=1))


def face_target(model: nn.Module, images: Tensor) -> SimilarityTarget:
    with torch.no_grad():
        return SimilarityTarget(model(images.flip(0)))  # each face against the other's embedding


def raw(model: nn.Module, images: Tensor, target, **options) -> Tensor:
    """The signed map before post-processing, as the explainer computes it."""
    with torch.enable_grad():
        return FGCAM(**options).explain(model.eval(), images, target)


def gradcam_raw(model: nn.Module, images: Tensor, target, layer: str) -> Tensor:
    """sum_k alpha_k A_k, the Grad-CAM map before ReLU: the total FG-CAM must conserve."""
    with torch.enable_grad():
        return GradCAM(target_layer=layer).explain(model.eval(), images, target)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


# ------------------------------------------------------------------------ relevance conservation

CONSERVATION = [
    ("vgg", "features.28", "input"),
    ("vgg", "features.28", "features.14"),
    ("vgg", "features.25", "features.11"),  # a conv as CAM layer and as explain_at
    ("resnet", "layer4", "input"),
    ("resnet", "layer4", "layer2"),
    ("resnet", "layer4", "maxpool"),
    ("timm_resnet", "layer4", "input"),
    ("timm_resnet", "layer4", "layer1"),
    ("iresnet", "layer4", "input"),
    ("iresnet", "layer4", "prelu"),
    ("se_resnet", "layer3", "input"),  # squeeze-excitation gates pass relevance to x
]


@pytest.mark.parametrize(("arch", "layer", "explain_at"), CONSERVATION)
def test_total_relevance_is_conserved(request, images, arch, layer, explain_at):
    """sum(map) == sum_k alpha_k A_k layer to layer: residual adds, BN-before-conv, z^B, PReLU.

    explain_at must cut every path (a layer inside a residual branch gets only its share).
    """
    model = request.getfixturevalue(arch)
    target = face_target(model, images) if arch == "iresnet" else class_target(model, images)
    expected = gradcam_raw(model, images, target, layer).sum(dim=(1, 2))
    total = raw(model, images, target, target_layer=layer, explain_at=explain_at).sum(dim=(1, 2))
    assert expected.abs().min() > 1e-6  # a vacuous 0 == 0 would prove nothing
    torch.testing.assert_close(total, expected, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize(
    ("arch", "layer"),
    [("vgg", "features.28"), ("vgg", "features.25"), ("resnet", "layer4"), ("iresnet", "dropout")],
)
def test_explain_at_the_cam_layer_is_the_gradcam_sum(request, images, arch, layer):
    model = request.getfixturevalue(arch)
    target = face_target(model, images) if arch == "iresnet" else class_target(model, images)
    expected = gradcam_raw(model, images, target, layer)
    maps = raw(model, images, target, target_layer=layer, explain_at=layer)
    torch.testing.assert_close(maps, expected)


# ------------------------------------------------- the rules themselves, on a toy residual model


class ToyResidual(nn.Module):
    """conv(bias) -> ReLU -> [conv -> BN] + identity -> max-pool -> linear, on 8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu(self.conv1(x))
        y = a + self.bn(self.conv2(a))
        return self.fc(self.pool(y).flatten(1))


def grad(output: Tensor, inputs: Tensor, seed: Tensor) -> Tensor:
    return torch.autograd.grad(output, inputs, seed)[0]


def explicit_walk(model: ToyResidual, x: Tensor, components: Tensor) -> tuple[Tensor, Tensor]:
    """The rules written out layer by layer, as the reference code does: relevance at a and x."""
    a = model.relu(model.conv1(x)).detach().requires_grad_(True)
    b = model.bn(model.conv2(a))
    y = a + b
    _, index = F.max_pool2d(y, 2, return_indices=True)
    r_y = F.max_unpool2d(components, index, 2, output_size=y.shape[-2:])  # to the arg-max
    r_a, r_b = r_y * a / y, r_y * b / y  # residual split a / (a + b), b / (a + b)
    z = F.conv2d(a, model.conv2.weight.clamp(min=0), padding=1)  # z+; a >= 0, BN passes r_b
    r_a = (r_a + a * grad(z, a, r_b / z)).detach()
    x = x.detach().requires_grad_(True)  # z^B; ReLU passes r_a to conv1's output
    low = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x).clone().requires_grad_(True)
    high = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x).clone().requires_grad_(True)
    w = model.conv1.weight
    y1 = F.conv2d(x, w, padding=1)
    y2 = F.conv2d(low, w.clamp(min=0), padding=1)
    y3 = F.conv2d(high, w.clamp(max=0), padding=1)
    s = r_a / (y1 - y2 - y3)
    r_x = x * grad(y1, x, s) - low * grad(y2, low, s) - high * grad(y3, high, s)
    return r_a, r_x.detach()


def test_rules_match_an_explicit_layer_by_layer_walk():
    model = reinitialise(ToyResidual(), 6)
    x = seeded_images(7, 2, 8)
    target = ClassTarget([0, 2])
    with torch.enable_grad():
        a = model.relu(model.conv1(x))
        pooled = model.pool(a + model.bn(model.conv2(a))).detach().requires_grad_(True)
        alpha = grad(target(model.fc(pooled.flatten(1))).sum(), pooled, None).mean(dim=(2, 3))
        r_a, r_x = explicit_walk(model, x, alpha[:, :, None, None] * pooled.detach())
    at_relu = raw(model, x, target, target_layer="pool", explain_at="relu")
    torch.testing.assert_close(at_relu, r_a.sum(1))
    torch.testing.assert_close(raw(model, x, target, target_layer="pool"), r_x.sum(1))


class ToySigned(nn.Module):
    """conv -> BN (signed output) -> conv(bias) -> ReLU -> pool -> linear: the IResNet pattern."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 5, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.relu(self.conv(self.bn(self.conv0(x)))).mean(dim=(2, 3)))


def test_signed_zplus_matches_the_four_term_formula():
    """Relevance through a conv reading signed inputs: x+ W+^T (R / z) + x- W-^T (R / z) with
    z = conv(x+, W+) + conv(x-, W-), written out with four separate convolutions."""
    model = reinitialise(ToySigned(), 8)
    x = seeded_images(9, 2, 8)
    target = ClassTarget([0, 2])
    with torch.enable_grad():
        b = model.bn(model.conv0(x)).detach()
        a = model.relu(model.conv(b)).detach().requires_grad_(True)
        alpha = grad(target(model.fc(a.mean(dim=(2, 3)))).sum(), a, None).mean(dim=(2, 3))
        components = alpha[:, :, None, None] * a.detach()
        assert bool((b < 0).any())
        assert bool((b > 0).any())
        pos, neg = b.clamp(min=0).requires_grad_(True), b.clamp(max=0).requires_grad_(True)
        w = model.conv.weight
        y1, y2 = F.conv2d(pos, w.clamp(min=0), padding=1), F.conv2d(neg, w.clamp(max=0), padding=1)
        s = safe_divide(components, (y1 + y2).detach())  # ReLU passes R; 0/0 := 0
        expected = (pos * grad(y1, pos, s) + neg * grad(y2, neg, s)).detach().sum(1)
    got = raw(model, x, target, target_layer="relu", explain_at="bn")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item())


def test_rule_weights_follow_in_place_weight_updates():
    """W+, W- and |W| are remembered between calls; an optimiser-style in-place update (or a new
    parameter) must not leave stale copies behind."""
    model = reinitialise(ToySigned(), 8)
    x = seeded_images(9, 2, 8)
    target = ClassTarget([0, 2])
    raw(model, x, target, target_layer="relu")  # fills the cache
    with torch.no_grad():
        model.conv.weight.mul_(-1.5)
        model.conv0.weight.add_(0.3)
    fresh = reinitialise(ToySigned(), 8)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(raw(model, x, target, target_layer="relu"), raw(fresh, x, target, target_layer="relu"))
    model.conv.weight = nn.Parameter(torch.randn_like(model.conv.weight))
    fresh.conv.weight = nn.Parameter(model.conv.weight.detach().clone())
    torch.testing.assert_close(raw(model, x, target, target_layer="relu"), raw(fresh, x, target, target_layer="relu"))


def test_rule_weights_follow_writes_through_data():
    """``p.data.copy_()`` (checkpoint loaders, EMA and weight-averaging callbacks) does not bump
    the parameter's version counter; the rule weights must still be those of the new values
    (a cache keyed on ``_version`` gave maps up to 0.39 away from a fresh model's)."""
    model = reinitialise(ToySigned(), 8)
    x = seeded_images(9, 2, 8)
    target = ClassTarget([0, 2])
    raw(model, x, target, target_layer="relu")
    other = reinitialise(ToySigned(), 10)
    for mine, new in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        mine.data.copy_(new.data)  # parameters and BatchNorm statistics
    torch.testing.assert_close(raw(model, x, target, target_layer="relu"), raw(other, x, target, target_layer="relu"))


def weight_shaped_tensors(model: nn.Module) -> int:
    """Live tensors shaped like one of the model's convolution weights, parameters excluded."""
    gc.collect()
    shapes = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Conv2d)}
    params = {id(p) for p in model.parameters()}
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, Tensor) and id(obj) not in params and tuple(obj.shape) in shapes
    )


def test_rule_weights_do_not_outlive_the_call():
    """W+, W- and |W| exist only during a call: a model-lifetime cache kept |W| copies of every
    convolution (about 170 MB for IResNet-50) and had to guess when they went stale."""
    model = reinitialise(ToySigned(), 8)
    x = seeded_images(9, 2, 8)
    before = weight_shaped_tensors(model)
    create_explainer("fgcam", target_layer="relu")(model, x, ClassTarget([0, 2]))
    assert weight_shaped_tensors(model) == before


def test_safe_divide_drops_zero_and_vanishing_denominators():
    numerator = torch.tensor([1.0, 0.0, 2.0, 1.0, -3.0])
    denominator = torch.tensor([0.0, 0.0, 4.0, 1e-38, -1.5])
    expected = torch.tensor([0.0, 0.0, 0.5, 0.0, 2.0])  # 1 / 1e-38 would overflow in backward
    torch.testing.assert_close(safe_divide(numerator, denominator), expected)


# ----------------------------------------------------------------- resolution, denoise, batching


@pytest.mark.parametrize(
    ("explain_at", "side"), [("input", SIZE), ("features.14", SIZE // 8), ("features.7", SIZE // 4)]
)
def test_map_resolution_is_that_of_explain_at(vgg, images, explain_at, side):
    target = class_target(vgg, images)
    maps = raw(vgg, images, target, target_layer="features.28", explain_at=explain_at)
    assert maps.shape == (len(images), side, side)


def test_denoise_keeps_the_top_tenth_of_the_singular_triplets():
    components = torch.randn(2, 64, 7, 7, generator=torch.Generator().manual_seed(8)) + 3.0
    denoised = denoise_components(components)
    centred = components.flatten(2) - components.flatten(2).mean(2, keepdim=True)
    expected = torch.linalg.svdvals(centred)[:, :4]  # int(0.1 * 49) = 4, means not added back
    kept = torch.linalg.svdvals(denoised.flatten(2))
    torch.testing.assert_close(kept[:, :4], expected, rtol=1e-4, atol=1e-4)
    assert kept[:, 4:].max() < 1e-4 * kept[:, 0].min()
    assert denoised.flatten(2).mean(2).abs().max() < 1e-4  # centred, no means added back
    small = components[:, :, :3, :3]  # 9 positions keep int(0.9) = 0 triplets
    assert torch.count_nonzero(denoise_components(small)) == 0


def test_denoise_changes_the_map_and_keeps_its_resolution(iresnet, images):
    target = face_target(iresnet, images)
    plain = raw(iresnet, images, target, target_layer="layer3", explain_at="layer1")
    denoised = raw(iresnet, images, target, target_layer="layer3", explain_at="layer1", denoise=True)
    assert denoised.shape == plain.shape == (2, SIZE // 2, SIZE // 2)  # IResNet stem: stride 1
    assert (denoised - plain).abs().max() > 1e-3 * plain.abs().max()


@pytest.mark.parametrize("arch", ["resnet", "iresnet"])
def test_batched_maps_equal_one_by_one(request, images, arch):
    model = request.getfixturevalue(arch)
    target = face_target(model, images) if arch == "iresnet" else class_target(model, images)
    batched = raw(model, images, target, target_layer="layer4")
    single = torch.cat(
        [
            raw(model, images[i : i + 1], target.select(torch.tensor([i])), target_layer="layer4")
            for i in range(len(images))
        ]
    )
    # ratio rules amplify rounding near 0/0; mixing samples up would differ by O(max)
    torch.testing.assert_close(batched, single, rtol=1e-3, atol=2e-3 * single.abs().max().item())


# ----------------------------------------------------------------------- public API and errors


def test_public_call_scorecam_base_and_hygiene(iresnet, images):
    explainer = create_explainer("fgcam", base="scorecam", explain_at="layer1")
    grads = [p.grad for p in iresnet.parameters()]
    with torch.inference_mode():
        maps = explainer(iresnet.train(), images, face_target(iresnet, images))
    assert maps.shape == images.shape[:1] + images.shape[2:]
    assert maps.dtype == torch.float32
    assert 0.0 <= maps.min()
    assert maps.max() == 1.0
    assert iresnet.training
    assert all(p.grad is g for p, g in zip(iresnet.parameters(), grads, strict=False))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in iresnet.modules())
    iresnet.eval()


def test_default_layer_and_options_in_repr(resnet, images):
    explainer = create_explainer("fgcam")
    assert explainer.layer_name(resnet, images) == "layer4"
    assert "base='gradcam'" in repr(explainer)
    assert "explain_at='input'" in repr(explainer)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"base": "gradcam++"}, ValueError, "Available: gradcam, scorecam"),
        ({"denoise": "yes"}, TypeError, "denoise"),
        ({"explain_at": 3}, TypeError, "explain_at"),
        ({"target_layer": 4}, TypeError, "target_layer"),
    ],
)
def test_bad_options_raise_at_construction(options, error, message):
    with pytest.raises(error, match=message):
        FGCAM(**options)


@pytest.mark.parametrize(
    ("explain_at", "message"),
    [
        ("features.2x", r"explain_at: Layer 'features.2x' is not in VGG\. Closest matches: feat"),
        ("classifier.0", "does not feed the target layer"),  # runs after the CAM layer
        ("features", "does not feed the target layer"),  # the container finishes after it
    ],
)
def test_bad_explain_at_raises_and_leaves_no_hooks(vgg, images, explain_at, message):
    explainer = FGCAM(target_layer="features.28", explain_at=explain_at)
    with pytest.raises(ValueError, match=message):
        explainer(vgg, images, class_target(vgg, images))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in vgg.modules())


def test_shared_cam_layer_is_rejected(resnet, images):
    """torchvision's BasicBlock calls its ReLU twice; FG-CAM needs a layer that runs once."""
    with pytest.raises(ValueError, match="more than once"):
        FGCAM(target_layer="layer4.1.relu")(resnet, images, class_target(resnet, images))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in resnet.modules())


# ----------------------------------------------------------- agreement with the reference code


@pytest.fixture(scope="module")
def reference():
    fixture = torch.load(REFERENCE)
    model = seeded_vgg16_bn(fixture["model_seed"])
    inputs = seeded_images(fixture["image_seed"], len(fixture["classes"]), fixture["size"])
    return fixture, model, inputs


@pytest.mark.parametrize(
    ("explain_at", "denoise"),
    [
        ("features.23", False),
        ("features.23", True),
        pytest.param("input", False, marks=pytest.mark.slow),
        pytest.param("input", True, marks=pytest.mark.slow),
    ],
)
def test_vgg16_bn_maps_match_the_reference_code(reference, explain_at, denoise):
    """Grad-CAM base on VGG16-BN (CAM layer features.43), batched vs the reference's one-by-one."""
    fixture, model, inputs = reference
    expected = fixture["maps"][explain_at + ("_denoise" if denoise else "")].float()
    target = ClassTarget(fixture["classes"])
    options = {"target_layer": "features.43", "explain_at": explain_at, "denoise": denoise}
    maps = raw(model, inputs, target, **options)
    assert maps.shape == expected.shape
    ours, theirs = postprocess(maps, maps.shape[-2:]), postprocess(expected, maps.shape[-2:])
    assert pearson(ours, theirs).min() >= 0.99
    assert (ours - theirs).abs().max() < 1e-2  # measured 2.5e-4, the fixture's float16 rounding
