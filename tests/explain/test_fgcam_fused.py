"""FG-CAM's fused rule nodes and fast statistics give the numbers of the plain compositions.

The signed z+ rule of plain convolutions and the z^B rule of the image layer run as single
autograd nodes that call the convolution's backward themselves (facexai.explain._lrp_rules);
``_is_fusable`` returning False selects the composition of autograd's own nodes, the form the
rules had before. BatchNorm statistics come from row sums instead of ``torch.var_mean``.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import facexai.explain._lrp_rules as rules
from facexai.explain import ClassTarget, SimilarityTarget, create_explainer
from facexai.explain._lrp import _channel_moments, safe_divide
from facexai.explain.targets import Target
from tests.thirdparty.arcface_torch import face_batch, make_arcface_model

SIDE = 64


def raw_maps(model: nn.Module, images: torch.Tensor, target: Target, tracing: bool = False) -> torch.Tensor:
    explainer = create_explainer("fgcam")
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    explain = explainer.explain_for_tracing if tracing else explainer.explain
    return explain(model, images.clone(), target).detach()


@pytest.mark.parametrize("tracing", [False, True])
def test_fused_nodes_match_the_composition_on_a_calibrated_iresnet(monkeypatch, tracing):
    model = make_arcface_model((1, 2, 1, 1), num_features=32, widths=(8, 16, 16, 32), side=SIDE)
    batch = face_batch(4, SIDE, seed=11)
    with torch.no_grad():
        target = SimilarityTarget(model(batch[2:]))
    fused = raw_maps(model, batch[:2], target, tracing)
    monkeypatch.setattr(rules, "_is_fusable", lambda module: False)
    composed = raw_maps(model, batch[:2], target, tracing)
    assert fused.abs().sum() > 0
    torch.testing.assert_close(fused, composed, rtol=1e-4, atol=1e-6 * composed.abs().max().item())


def test_fused_nodes_match_the_composition_on_a_relu_network(monkeypatch):
    """ResNet convolutions read ReLU outputs (z = conv(x, W+)); only the image layer is fused."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.momentum = None  # running statistics of the calibration batch
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 64, 64))
    images = torch.randn(2, 3, 64, 64)
    target = ClassTarget([1, 7])
    fused = raw_maps(model, images, target, tracing=True)
    monkeypatch.setattr(rules, "_is_fusable", lambda module: False)
    composed = raw_maps(model, images, target, tracing=True)
    torch.testing.assert_close(fused, composed, rtol=1e-4, atol=1e-6 * composed.abs().max().item())


def test_channel_moments_match_var_mean():
    """Including a channel 1e3 standard deviations from 0 (recomputed exactly), a constant and a
    zero channel, and BatchNorm1d's (N, C) input."""
    generator = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 0.01, 3.0, 1e-4, 0.0, 1.0]).view(1, -1, 1, 1)
    shift = torch.tensor([0.0, 5.0, -2.0, 10.0, 0.0, 1e3]).view(1, -1, 1, 1)
    for x in (torch.randn(16, 6, 20, 20, generator=generator) * scale + shift, torch.randn(8, 5, generator=generator)):
        mean, var = _channel_moments(x)
        dims = [0, *range(2, x.dim())]
        exact_var, exact_mean = torch.var_mean(x, dim=dims, unbiased=False)
        torch.testing.assert_close(mean, exact_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(var, exact_var, rtol=1e-4, atol=1e-9)


def test_safe_divide_drops_non_finite_and_out_of_range_ratios():
    numerator = torch.tensor([float("nan"), 1.0, float("inf"), 3e20, -3e20, 2.0, -1e19])
    denominator = torch.tensor([1.0, float("nan"), 1.0, 1.0, 1.0, float("inf"), 1.0])
    result = safe_divide(numerator, denominator)
    assert torch.equal(result.abs(), torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1e19]))
    assert result[-1] < 0
