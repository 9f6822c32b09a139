import math

import pytest
import torch

from facexai.models import ArcFaceHead, CosFaceHead


def _head(cls, **kw):
    head = cls(2, 2, **kw)
    with torch.no_grad():
        # class 0 at 60 degrees from the x axis, class 1 along y
        head.weight.copy_(torch.tensor([[0.5, math.sqrt(3) / 2], [0.0, 3.0]]))
    return head


def test_arcface_hand_computed():
    head = _head(ArcFaceHead)  # s = 64, m = 0.5
    logits = head(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    # theta = 60 deg = pi/3; target logit 64 * cos(pi/3 + 0.5) = 64 * sin(pi/2 - pi/3 - 0.5)
    # = 64 * sin(0.023598) = 64 * 0.023596 = 1.5101
    assert logits[0, 0].item() == pytest.approx(64 * math.cos(math.pi / 3 + 0.5), abs=1e-4)
    assert logits[0, 0].item() == pytest.approx(1.5101, abs=1e-3)
    # the other class keeps s * cos(theta) = 64 * cos(90 deg) = 0
    assert logits[0, 1].item() == pytest.approx(0.0, abs=1e-5)


def test_arcface_falls_back_past_pi():
    head = ArcFaceHead(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0, 0.0], [0.0, 1.0]]))
    logits = head(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    # cos = -1 < cos(pi - m): logit = s * (cos - m sin m) = 64 * (-1 - 0.5 * sin 0.5)
    assert logits[0, 0].item() == pytest.approx(64 * (-1 - 0.5 * math.sin(0.5)), abs=1e-3)


def test_cosface_hand_computed():
    head = _head(CosFaceHead)  # s = 64, m = 0.35
    logits = head(torch.tensor([[3.0, 0.0]]), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(64 * (0.5 - 0.35), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(0.0, abs=1e-5)


def test_margin_only_on_target_class():
    torch.manual_seed(0)
    head = ArcFaceHead(8, 5)
    emb = torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2, 3])
    logits = head(emb, labels)
    plain = 64 * head.cosine(emb)
    mask = torch.nn.functional.one_hot(labels, 5).bool()
    torch.testing.assert_close(logits[~mask], plain[~mask])
    assert (logits[mask] < plain[mask]).all()  # the margin lowers the target logit


@pytest.mark.parametrize("kwargs", [{"scale": 0}, {"margin": -0.1}])
def test_bad_head_settings(kwargs):
    with pytest.raises(ValueError, match=r"margin head needs scale > 0 and margin >= 0"):
        ArcFaceHead(8, 5, **kwargs)
