import pytest
import timm
import torch

import facexai.models  # noqa: F401  registers the IResNets
from facexai.models import IResNet, create_backbone


@pytest.mark.parametrize("name", ["iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet_mini"])
def test_registered_in_timm(name):
    assert timm.is_model(name)


def test_iresnet50_parameter_count_matches_arcface():
    # insightface's arcface_torch IResNet-50 with a 512-d embedding has 43.59 M parameters
    # (43,590,848 including the BN1d "features" layer); the architecture must match it exactly.
    model = timm.create_model("iresnet50")
    assert sum(p.numel() for p in model.parameters()) == 43_590_848


def test_forward_features_and_head_shapes():
    torch.manual_seed(0)
    model = timm.create_model("iresnet18", num_classes=256).eval()
    x = torch.randn(2, 3, 112, 112)
    features = model.forward_features(x)
    assert features.shape == (2, 512, 7, 7)
    assert model.forward_head(features, pre_logits=True).shape == (2, 512 * 49)
    out = model(x)
    assert out.shape == (2, 256)
    torch.testing.assert_close(out, model.forward_head(features))


def test_block_layout_is_bn_conv_bn_prelu_conv_bn():
    block = timm.create_model("iresnet18").layer1[0]
    names = [name for name, _ in block.named_children()]
    assert names[:6] == ["bn1", "conv1", "bn2", "prelu", "conv2", "bn3"]
    assert block.conv2.stride == (2, 2)  # stride on the second convolution


def test_backward_reaches_input():
    model = timm.create_model("iresnet_mini", img_size=32)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()


def test_pretrained_request_is_refused():
    with pytest.raises(ValueError, match="No pretrained weights"):
        timm.create_model("iresnet50", pretrained=True)


def test_img_size_must_be_multiple_of_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        IResNet(img_size=100)


def test_unknown_backbone_lists_close_matches():
    with pytest.raises(ValueError, match="iresnet50"):
        create_backbone("iresnet55", 512)


def test_local_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("iresnet_mini", 64, img_size=32)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    clone = create_backbone("iresnet_mini", 64, weights=str(path), img_size=32)
    for a, b in zip(model.state_dict().values(), clone.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_missing_or_mismatched_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        create_backbone("iresnet_mini", 64, weights=str(tmp_path / "nope.pt"), img_size=32)
    path = tmp_path / "other.pt"
    torch.save(create_backbone("iresnet_mini", 32, img_size=32).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        create_backbone("iresnet_mini", 64, weights=str(path), img_size=32)
