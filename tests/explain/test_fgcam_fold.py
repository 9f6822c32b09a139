"""FG-CAM's fold of element-wise rules (BatchNorm) into the rule of the convolution before them.

A convolution's rule scales the gradient of its contributions z by ``output / z``, the
BatchNorm after it by ``y / output``; :class:`facexai.explain._lrp_rules.FoldableRule` gives
that chain in one step, ``y / z``, and defers the convolution's own scale until it knows whether
a BatchNorm folds it. The references here are the rules computed one by one: with
``FOLD_ELEMENTWISE = False`` (no fold) and with every rule's scale computed eagerly at its own
layer, as before the fold existed (no deferral: what an in-place op after the convolution must
not change).
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import Tensor, nn

import facexai.explain._lrp as lrp
import facexai.explain._lrp_rules as rules
from facexai.explain import ClassTarget, SimilarityTarget, create_explainer
from facexai.explain._lrp_rules import FoldableRule, PendingRules, safe_divide, signed_zplus
from facexai.explain.targets import Target
from tests.thirdparty.arcface_torch import face_batch, make_arcface_model

SIDE = 32


def raw_maps(model: nn.Module, images: Tensor, target: Target, tracing: bool = False, **options: str) -> Tensor:
    explainer = create_explainer("fgcam", **options)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    explain = explainer.explain_for_tracing if tracing else explainer.explain
    return explain(model, images.clone(), target).detach()


def calibrated(model: nn.Module, side: int, seed: int = 0) -> nn.Module:
    """BatchNorm running statistics of a few train-mode batches (random ones make ratios unstable)."""
    for norm in model.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.reset_running_stats()
            norm.momentum = None
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.randn(8, 3, side, side, generator=generator))
    return model.eval()


@pytest.fixture
def folds(monkeypatch: pytest.MonkeyPatch) -> list[nn.Module]:
    """The modules whose rule an element-wise layer folded, in order."""
    folded: list[nn.Module] = []
    original = FoldableRule.fold

    def spy(rule: FoldableRule, value: Tensor) -> Tensor | None:
        result = original(rule, value)
        if result is not None:
            folded.append(rule.module)
        return result

    monkeypatch.setattr(FoldableRule, "fold", spy)
    return folded


def unfolded(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fold, and every rule's own scale computed at its layer (nothing deferred)."""
    original = FoldableRule.apply

    def eager(rule: FoldableRule, pending: PendingRules | None = None) -> Tensor:
        return original(rule, None)

    monkeypatch.setattr(FoldableRule, "apply", eager)
    monkeypatch.setattr(lrp, "FOLD_ELEMENTWISE", False)


def assert_same_maps(folded: Tensor, reference: Tensor) -> None:
    assert reference.abs().sum() > 0
    torch.testing.assert_close(folded, reference, rtol=1e-4, atol=1e-6 * reference.abs().max().item())


def test_fold_gives_the_chain_by_hand():
    """A 1x1 convolution on non-negative inputs, then BatchNorm: R_x = x * W+^T (R_y / z).

    The folded node's scale must be y / z: with output / z or y / output alone the relevance
    would not be this one (and would not sum to R_y's total).
    """
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 1)
    norm = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[0.5, -0.3], [0.2, 0.7], [-0.4, 0.9]]).view(3, 2, 1, 1))
        norm.running_mean.copy_(torch.tensor([0.2, -0.1, 0.3]))
        norm.running_var.copy_(torch.tensor([0.5, 2.0, 1.5]))
        norm.weight.copy_(torch.tensor([1.5, -0.7, 0.9]))
        norm.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    for parameter in [*conv.parameters(), *norm.parameters()]:
        parameter.requires_grad_(False)
    x = torch.rand(2, 2, 4, 4).requires_grad_(True)
    pending: PendingRules = []
    result = signed_zplus(conv, x, conv(x), None, pending)
    ((deferred, rule),) = pending
    assert deferred is result
    assert rule.scale is None  # nothing computed before the fold
    y = rule.fold(norm(result))
    assert y is not None
    relevance_y = torch.rand(2, 3, 4, 4) + 0.1
    (gradient,) = torch.autograd.grad(y, x, relevance_y / y.detach())
    positive = conv.weight.clamp(min=0)[:, :, 0, 0]
    z = torch.einsum("oi,nihw->nohw", positive, x.detach())
    expected = x.detach() * torch.einsum("oi,nohw->nihw", positive, relevance_y / z)
    torch.testing.assert_close(x.detach() * gradient, expected)
    torch.testing.assert_close((x.detach() * gradient).sum(), relevance_y.sum())
    assert rule.scale is None  # the convolution's own node was never needed


@pytest.mark.parametrize("tracing", [False, True])
def test_fold_matches_the_unfolded_rules_on_a_calibrated_resnet(monkeypatch, folds, tracing):
    """Every BatchNorm of a torchvision ResNet follows a convolution: all 20 fold (z^B stem too)."""
    torch.manual_seed(0)
    model = calibrated(torchvision.models.resnet18(num_classes=10), 64)
    images, target = torch.randn(2, 3, 64, 64), ClassTarget([1, 7])
    folded = raw_maps(model, images, target, tracing)
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    assert len(folds) == len(norms) == 20
    assert folds[0] is model.conv1
    unfolded(monkeypatch)
    assert_same_maps(folded, raw_maps(model, images, target, tracing))
    assert len(folds) == 20  # none more


@pytest.mark.parametrize("tracing", [False, True])
def test_fold_matches_the_unfolded_rules_on_a_calibrated_iresnet(monkeypatch, folds, tracing):
    """IResNet: signed z+ convolutions fold their BatchNorm; a block's first BatchNorm reads the
    block input (no convolution before it) and keeps its own rule."""
    model = make_arcface_model((1, 2, 1, 1), num_features=32, widths=(8, 16, 16, 32), side=SIDE)
    batch = face_batch(4, SIDE, seed=11)
    with torch.no_grad():
        target = SimilarityTarget(model(batch[2:]))
    folded = raw_maps(model, batch[:2], target, tracing)
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    assert 0 < len(folds) < len(norms)
    unfolded(monkeypatch)
    assert_same_maps(folded, raw_maps(model, batch[:2], target, tracing))


class ConvNorm(nn.Module):
    """Image conv -> BN -> ReLU -> conv -> ``mode`` -> ReLU -> head conv (the CAM layer) -> fc."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stem_norm = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.inplace_relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.second_norm = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.relu(self.stem_norm(self.stem(x)))
        if self.mode == "norm_first":  # a BatchNorm after a ReLU: nothing to fold into
            hidden = self.conv(self.norm(hidden))
        else:
            a = self.conv(hidden)
            if self.mode == "inplace_add":  # the output changes before the BatchNorm reads it
                a += 0.5
                hidden = self.norm(a)
            elif self.mode == "inplace_relu":  # an in-place module between (VGG-style)
                hidden = self.norm(self.inplace_relu(a))
            elif self.mode == "shared":  # read by the BatchNorm and by the addition
                hidden = self.norm(a) + a
            elif self.mode == "two_norms":  # read by two BatchNorms: one folds, one cannot
                hidden = self.norm(a) + self.second_norm(a)
            elif self.mode == "add_after":  # the BatchNorm folds, then its input changes
                hidden = self.norm(a)
                a.mul_(3.0)
                hidden = hidden + a
            else:
                hidden = self.norm(a)
        return self.fc(self.head(self.relu(hidden)).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("mode", "folded_convs"),
    [
        ("plain", ["stem", "conv"]),
        ("norm_first", ["stem"]),
        ("inplace_add", ["stem"]),
        ("inplace_relu", ["stem"]),
        ("shared", ["stem", "conv"]),
        ("two_norms", ["stem", "conv"]),
        ("add_after", ["stem", "conv"]),
    ],
)
def test_fold_and_deferral_keep_the_eager_maps(monkeypatch, folds, mode, folded_convs):
    """The fold happens only where the BatchNorm reads the convolution's unmodified output, and
    the convolution's own scale always comes from its output as the convolution made it: after
    ``a += 0.5`` (recomputed), an in-place ReLU (computed before it runs), a second reader of
    the output after the fold (recomputed), or an in-place change after the fold."""
    torch.manual_seed(3)
    model = calibrated(ConvNorm(mode), 16)
    images = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    target = ClassTarget([0, 2, 4])
    maps = raw_maps(model, images, target, target_layer="head")
    assert [name for name, module in model.named_modules() if any(module is m for m in folds)] == folded_convs
    unfolded(monkeypatch)
    assert_same_maps(maps, raw_maps(model, images, target, target_layer="head"))


def test_explain_at_a_hidden_layer_folds_below_the_cam_layer_only(monkeypatch, folds):
    """With ``explain_at`` the rules (and folds) start after that layer's output."""
    torch.manual_seed(0)
    model = calibrated(torchvision.models.resnet18(num_classes=10), 64)
    images, target = torch.randn(2, 3, 64, 64), ClassTarget([3, 4])
    maps = raw_maps(model, images, target, target_layer="layer4", explain_at="layer2")
    assert len(folds) == 10  # layer3 and layer4: 2 blocks x 2 convolutions + 1 downsample each
    unfolded(monkeypatch)
    assert_same_maps(maps, raw_maps(model, images, target, target_layer="layer4", explain_at="layer2"))


def test_safe_divide_zeroes_undefined_and_out_of_range_ratios():
    """0/0, x/0 and |ratio| > 1e20 give 0 on both paths of safe_divide (the in-range check that
    skips the mask, and the mask when a ratio is out of range); in-range ratios, 1e19 among
    them, are the plain quotient."""
    numerator = torch.tensor([3.0, 1.0, 0.0, 1.0, -4.0, 0.1, -1.0])
    denominator = torch.tensor([1.5, 1e-19, 0.0, 0.0, 2.0, 7e-3, 0.0])
    in_range = safe_divide(numerator, denominator)
    assert in_range.tolist() == pytest.approx([2.0, 1e19, 0.0, 0.0, -2.0, 0.1 / 7e-3, 0.0])
    numerator = torch.cat([numerator, torch.tensor([1.0, -1.0])])
    denominator = torch.cat([denominator, torch.tensor([1e-21, 1e-21])])
    dropped = safe_divide(numerator, denominator)
    assert dropped[:7].tolist() == in_range.tolist()
    assert dropped[7:].abs().tolist() == [0.0, 0.0]


def test_fused_zplus_matches_the_composition(monkeypatch):
    """The z+ node after ReLUs (``explain``, not the traced form) against autograd's composition."""
    zplus: list[str] = []
    original = FoldableRule.apply

    def spy(rule: FoldableRule, pending: PendingRules | None = None) -> Tensor:
        if rule.kind == "zplus":
            zplus.append(rule.kind)
        return original(rule, pending)

    monkeypatch.setattr(FoldableRule, "apply", spy)
    torch.manual_seed(0)
    model = calibrated(torchvision.models.resnet18(num_classes=10), 64)
    images, target = torch.randn(2, 3, 64, 64), ClassTarget([1, 7])
    fused = raw_maps(model, images, target)
    assert len(zplus) >= 16  # ResNet-18: every convolution after a ReLU took the node
    monkeypatch.setattr(rules, "_is_fusable", lambda module: False)
    assert_same_maps(fused, raw_maps(model, images, target))


@pytest.mark.parametrize("kind", ["zplus", "signed", "zbox", "zbox_grouped"])
def test_a_dropped_denominator_is_recomputed_as_the_rule_made_it(kind):
    """A fold drops the rule's denominator; its own node, if reached, recomputes it from the
    saved input and weights, equal to the one the rule function computed."""
    torch.manual_seed(7)
    channels = 3 if kind.startswith("zbox") else 4
    conv = nn.Conv2d(channels, 6, 3, padding=1, groups=3 if kind == "zbox_grouped" else 1)
    x = torch.randn(2, channels, 9, 9)
    pending: PendingRules = []
    if kind == "zplus":
        x = x.relu()
        rules.signed_zplus(conv, x, conv(x), None, pending)
    elif kind == "signed":
        rules.signed_zplus_any(conv, x, conv(x), None, pending)
    else:
        x.requires_grad_(True)
        rules.zbox(conv, x, conv(x), [], None, pending)
    ((_, rule),) = pending
    assert rule.kind == kind.removesuffix("_grouped")
    assert rule.denominator is not None
    assert torch.equal(rule._denominator(conv(x).detach()), rule.denominator)


def test_a_fold_keeps_no_activation_sized_tensor_in_the_rule(monkeypatch):
    kept: list[FoldableRule] = []
    original = FoldableRule.fold

    def spy(rule: FoldableRule, value: Tensor) -> Tensor | None:
        kept.append(rule)
        return original(rule, value)

    monkeypatch.setattr(FoldableRule, "fold", spy)
    torch.manual_seed(3)
    model = calibrated(ConvNorm("plain"), 16)
    raw_maps(model, torch.randn(2, 3, 16, 16), ClassTarget([0, 2]), target_layer="head")
    assert len(kept) == 2
    assert all(rule.denominator is None and rule.output is None and rule.scale is None for rule in kept)
