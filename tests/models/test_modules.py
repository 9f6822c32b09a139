import pytest
import torch

from facexai.explain import ClassTarget, SimilarityTarget
from facexai.models import ClassifierModule, VerificationModule


def test_classifier_forward_backward_and_explanation_inputs():
    torch.manual_seed(0)
    module = ClassifierModule(backbone="resnet10t", num_classes=3)
    batch = {"image": torch.randn(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0])}
    assert module(batch["image"]).shape == (4, 3)
    loss = module.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)
    images, target = module.explanation_inputs(batch)
    assert images is batch["image"]
    assert isinstance(target, ClassTarget)
    assert target.labels.tolist() == [0, 1, 2, 0]


def test_verification_forward_is_embedding_and_training_step():
    torch.manual_seed(0)
    module = VerificationModule(num_identities=5, embedding_size=16, backbone_kwargs={"img_size": 32})
    images = torch.randn(4, 3, 32, 32)
    assert module(images).shape == (4, 16)
    loss = module.training_step({"image": images, "label": torch.tensor([0, 1, 2, 3])}, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert module.backbone.conv1.weight.grad is not None
    assert module.head.weight.grad is not None


def test_verification_explanation_inputs_pair_partners():
    torch.manual_seed(0)
    module = VerificationModule(num_identities=5, embedding_size=16, backbone_kwargs={"img_size": 32}).eval()
    a, b = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    images, target = module.explanation_inputs({"image_a": a, "image_b": b, "issame": torch.ones(3, dtype=torch.bool)})
    assert images.shape == (6, 3, 32, 32)
    assert isinstance(target, SimilarityTarget)
    with torch.no_grad():
        emb_a, emb_b = module(a), module(b)
    # A is explained against B's embedding and B against A's
    torch.testing.assert_close(target.reference, torch.cat([emb_b, emb_a]))


def test_unknown_margin():
    with pytest.raises(ValueError, match="arcface, cosface"):
        VerificationModule(margin="sphereface")


def test_classifier_class_names_must_match():
    with pytest.raises(ValueError, match="class_names"):
        ClassifierModule(backbone="resnet10t", num_classes=3, class_names=["a", "b"])
