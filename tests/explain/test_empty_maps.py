"""Maps with no positive evidence are reported (EmptyMapWarning), never silently blank."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from facexai.explain import ClassTarget, EmptyMapWarning, create_explainer
from facexai.explain.base import empty_map_indices


def signed_head_net() -> nn.Module:
    """ReLU features A >= 0, global average pool, two logits: class 0 with all-negative weights,
    class 1 with all-positive ones (no bias).

    Closed forms: the head is linear, so Grad-CAM's weights are w_ck / (h w) and LIFT-CAM's are
    phi_k = w_ck mean(A_k) (DeepLIFT of a linear head against A = 0). For class 0 every weight
    is <= 0 and A >= 0, so sum_k weight_k A_k <= 0 everywhere: an empty map. For class 1 every
    weight is >= 0, so the map is positive wherever any channel is active.
    """
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(6, 2, bias=False),
    )  # fmt: skip
    with torch.no_grad():
        magnitude = 0.1 + torch.rand(6)
        net[4].weight.copy_(torch.stack([-magnitude, magnitude]))
    return net.eval()


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("method", ["gradcam", "liftcam"])
def test_no_positive_evidence_warns_naming_method_and_samples(method, batch):
    net = signed_head_net()
    with pytest.warns(EmptyMapWarning) as record:
        maps = create_explainer(method, target_layer="1")(net, batch, ClassTarget([1, 0, 1]))
    assert len(record) == 1  # one warning per call, however many samples
    message = str(record[0].message)
    assert message.startswith(f"{method}: 1 of 3 maps")
    assert "samples [1]" in message
    assert torch.count_nonzero(maps[1]) == 0  # the blank that the warning explains
    assert maps[0].max() == 1
    assert maps[2].max() == 1


@pytest.mark.parametrize("method", ["gradcam", "liftcam"])
def test_positive_evidence_does_not_warn(method, batch):
    net = signed_head_net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maps = create_explainer(method, target_layer="1")(net, batch, ClassTarget([1, 1, 1]))
    assert torch.all(maps.flatten(1).amax(dim=1) == 1)


def test_every_empty_sample_is_listed():
    raw = torch.tensor([[[0.0, -1.0]], [[0.5, -1.0]], [[-2.0, -3.0]], [[float("nan"), 0.0]]])
    assert empty_map_indices(raw) == [0, 2, 3]
