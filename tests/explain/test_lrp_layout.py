"""FG-CAM's transposed products of strided convolutions, computed in channels-last layout on the CPU.

oneDNN computes a strided convolution's input gradient channels-last and converts it to the
contiguous layout with a slow element-wise transpose; :class:`facexai.explain._lrp_rules.FoldableRule`
asks for the channels-last product and converts once, after combining its products. The
references are autograd's gradients of the rules written out as sums of convolutions.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import Tensor, nn

import facexai.explain._lrp_rules as rules
from facexai.explain import ClassTarget, create_explainer
from facexai.explain._lrp_rules import FoldableRule, _channels_last_placeholder, _contiguous, _plain_input_grad

CONVS = [
    nn.Conv2d(16, 8, 3, stride=2, padding=1, bias=False),
    nn.Conv2d(16, 8, 1, stride=2, bias=False),
    nn.Conv2d(16, 8, 3, stride=(2, 1), padding=(1, 0), bias=False),
    nn.Conv2d(16, 8, 3, stride=2, padding=2, dilation=2, groups=2, bias=False),
    nn.Conv2d(16, 8, 4, stride=3, padding=1, bias=False),
]


def _case(conv: nn.Conv2d, batch: int, side: int = 11, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, conv.in_channels, side, side + 2, generator=generator)
    signal = torch.randn(conv(inputs).shape, generator=generator)
    return inputs, signal


def _autograd_input_grad(conv: nn.Conv2d, inputs: Tensor, signal: Tensor, weight: Tensor) -> Tensor:
    x = inputs.clone().requires_grad_(True)
    out = nn.functional.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    (grad,) = torch.autograd.grad((out * signal).sum(), x)
    return grad


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: f"k{c.kernel_size}s{c.stride}g{c.groups}")
@pytest.mark.parametrize("batch", [1, 3])
def test_channels_last_product_is_the_input_gradient(conv, batch):
    inputs, signal = _case(conv, batch)
    placeholder = _channels_last_placeholder(conv, inputs)
    assert placeholder is not None
    assert placeholder.shape == inputs.shape
    product = _plain_input_grad(conv, signal, placeholder, conv.weight.detach())
    expected = _autograd_input_grad(conv, inputs, signal, conv.weight.detach())
    converted = _contiguous(product)
    assert converted.is_contiguous()
    torch.testing.assert_close(converted, expected, rtol=1e-5, atol=1e-5)


def test_onednn_returns_the_strided_product_channels_last():
    """The premise of the route: if a torch release stops doing this, the route gains nothing."""
    conv = CONVS[0]
    inputs, signal = _case(conv, 2)
    placeholder = _channels_last_placeholder(conv, inputs)
    assert placeholder is not None
    product = _plain_input_grad(conv, signal, placeholder, conv.weight.detach())
    assert product.is_contiguous(memory_format=torch.channels_last)
    assert not product.is_contiguous()


def test_contiguous_transposes_exactly():
    values = torch.arange(2 * 5 * 3 * 4, dtype=torch.float32).reshape(2, 5, 3, 4)
    channels_last = values.contiguous(memory_format=torch.channels_last)
    converted = _contiguous(channels_last)
    assert converted.is_contiguous()
    assert torch.equal(converted, values)
    assert _contiguous(values) is values  # already contiguous: no copy
    strided = values[:, :, ::2]  # neither layout: the ordinary copy
    assert torch.equal(_contiguous(strided), strided.contiguous())


def test_placeholder_only_for_strided_2d_convolutions_with_onednn(monkeypatch):
    inputs = torch.randn(1, 16, 9, 9)
    assert _channels_last_placeholder(nn.Conv2d(16, 8, 3, padding=1), inputs) is None  # stride 1
    assert _channels_last_placeholder(nn.Linear(16, 8), inputs) is None
    conv1d = nn.Conv1d(16, 8, 3, stride=2)
    assert _channels_last_placeholder(conv1d, torch.randn(1, 16, 9)) is None
    assert _channels_last_placeholder(CONVS[0], inputs) is not None
    # a 3x3 weight larger than x would be converted on every call: plain; a 1x1 weight never is
    wide = nn.Conv2d(64, 64, 3, stride=2, padding=1)  # 36,864 weights
    assert _channels_last_placeholder(wide, torch.randn(1, 64, 20, 20)) is None  # 25,600 inputs
    assert _channels_last_placeholder(wide, torch.randn(2, 64, 20, 20)) is not None
    assert _channels_last_placeholder(nn.Conv2d(64, 64, 1, stride=2), torch.randn(1, 64, 4, 4)) is not None
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert _channels_last_placeholder(CONVS[0], inputs) is None


@pytest.mark.parametrize("kind", ["zplus", "signed"])
@pytest.mark.parametrize("conv", CONVS[:3], ids=["3x3s2", "1x1s2", "3x3s21"])
def test_rule_products_match_autograd_of_the_rule(conv, kind):
    """zplus: W+^T s on x >= 0; signed: W^T s + sign(x) |W|^T s (gradient of layer(x, W) + layer(|x|, |W|))."""
    inputs, signal = _case(conv, 2, seed=1)
    weight = conv.weight.detach()
    if kind == "zplus":
        inputs = inputs.clamp(min=0)
        weights = [weight.clamp(min=0)]
        x = inputs.clone().requires_grad_(True)
        contributions = nn.functional.conv2d(x, weights[0], None, conv.stride, conv.padding)
    else:
        weights = [weight, weight.abs()]
        x = inputs.clone().requires_grad_(True)
        contributions = nn.functional.conv2d(x, weight, None, conv.stride, conv.padding) + nn.functional.conv2d(
            x.abs(), weight.abs(), None, conv.stride, conv.padding
        )
    (expected,) = torch.autograd.grad((contributions * signal).sum(), x)
    rule = FoldableRule(kind, conv, inputs, contributions.detach(), contributions.detach(), tuple(weights))
    grad, no_low, no_high = rule.input_grads(signal, inputs, weights)
    assert no_low is None
    assert no_high is None
    assert grad is not None
    assert grad.is_contiguous()
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-5)


def _calibrated_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5)
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.momentum = None
    generator = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 64, 64, generator=generator))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def test_fgcam_maps_equal_the_contiguous_route(monkeypatch):
    model = _calibrated_resnet()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    target = ClassTarget(torch.tensor([1, 3]))
    explainer = create_explainer("fgcam")
    routed = explainer.explain(model, images, target)
    monkeypatch.setattr(rules, "_channels_last_placeholder", lambda module, inputs: None)
    plain = explainer.explain(model, images, target)
    assert routed.abs().amax() > 0
    torch.testing.assert_close(routed, plain, rtol=0, atol=1e-6 * plain.abs().amax().item())
