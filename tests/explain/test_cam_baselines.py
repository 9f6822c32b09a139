"""Grad-CAM, Grad-CAM++ and Score-CAM against hand arithmetic and straightforward loops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facexai.explain import ClassTarget, create_explainer
from facexai.explain.layers import last_feature_layer


class HandSet(nn.Module):
    """A = 1x1 conv picking R and G; s = fc(mean over pixels of A)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])[:, :, None, None])
            self.fc.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 1.0]]))
            self.fc.bias.copy_(torch.tensor([0.3, -0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(1))


def test_gradcam_hand_computed():
    red = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    green = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    image = torch.stack([red, green, torch.zeros(2, 2)])[None].repeat(2, 1, 1, 1)
    maps = create_explainer("gradcam", target_layer="conv")(HandSet(), image, ClassTarget([0, 1]))
    # A_0 = R, A_1 = G; s_c = sum_k w_ck mean(A_k) + b_c, so dS/dA_k(ij) = w_ck / 4 everywhere
    # and alpha_k = w_ck / 4.
    # class 0: alpha = (2/4, -1/4): L = 0.5 R - 0.25 G = [[0.5 - 1, 1], [1.5, 2]]
    #   = [[-0.5, 1], [1.5, 2]]
    #   ReLU -> [[0, 1], [1.5, 2]]; min 0, max 2 -> [[0, 0.5], [0.75, 1]]
    # class 1: alpha = (0.5/4, 1/4) = (0.125, 0.25): L = [[0.125 + 1, 0.25], [0.375, 0.5]]
    #   = [[1.125, 0.25], [0.375, 0.5]]; min 0.25, span 0.875 -> [[1, 0], [1/7, 2/7]]
    expected = torch.tensor([[[0.0, 0.5], [0.75, 1.0]], [[1.0, 0.0], [1 / 7, 2 / 7]]])
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=0)


def test_gradcam_upsamples_bilinearly():
    image = torch.arange(48.0).view(1, 3, 4, 4) / 48
    model = HandSet()
    model.conv.stride = (2, 2)  # A is 2x2 for a 4x4 input
    maps = create_explainer("gradcam", target_layer="conv")(model, image, ClassTarget([1]))
    low = 0.125 * image[:, 0, ::2, ::2] + 0.25 * image[:, 1, ::2, ::2]
    up = F.interpolate(low[:, None], size=(4, 4), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, (up - up.min()) / (up.max() - up.min()), atol=1e-6, rtol=0)


def activations_and_gradients(model, layer, images, score):
    store = []
    handle = layer.register_forward_hook(lambda module, args, output: store.append(output))
    try:
        output = model(images)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(score(output).sum(), store[0])
    return store[0].detach().double(), grad.double()


def finish(cam: torch.Tensor, size) -> torch.Tensor:
    """ReLU, bilinear upsampling, min-max: the post-processing of docs/design.md, written out."""
    cam = F.interpolate(torch.relu(cam)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    low, high = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
    return ((cam - low) / (high - low)).float()


def loop_gradcam_pp(model, layer, images, score) -> torch.Tensor:
    """Grad-CAM++ (arXiv 1710.11063, Eq. 19 with Y = exp(S)), one scalar at a time."""
    acts, grads = activations_and_gradients(model, layer, images, score)
    n, c, h, w = acts.shape
    weights = torch.zeros(n, c, dtype=torch.float64)
    for i in range(n):
        for k in range(c):
            total = acts[i, k].sum().item()
            for y in range(h):
                for x in range(w):
                    g = grads[i, k, y, x].item()
                    denominator = 2 * g**2 + total * g**3
                    alpha = g**2 / denominator if denominator != 0 else 0.0
                    weights[i, k] += alpha * max(g, 0.0)
    return finish(torch.einsum("nc,nchw->nhw", weights, acts), images.shape[-2:])


@pytest.mark.parametrize("kind", ["mlp", "similar"])
def test_gradcam_pp_matches_loop(kind, images, mlp_classifier, embedder, pair_target):
    model, target = (mlp_classifier, ClassTarget([4, 0, 2])) if kind == "mlp" else (embedder, pair_target())
    maps = create_explainer("gradcam++")(model, images, target)
    with torch.enable_grad():
        expected = loop_gradcam_pp(model, model.features, images, target)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)


def test_gradcam_pp_differs_from_gradcam(images, mlp_classifier):
    target = ClassTarget([4, 0, 2])
    plus = create_explainer("gradcam++")(mlp_classifier, images, target)
    plain = create_explainer("gradcam")(mlp_classifier, images, target)
    assert (plus - plain).abs().max() > 1e-2


def loop_scorecam(model, layer, images, labels) -> torch.Tensor:
    """Score-CAM (arXiv 1910.01279) for class logits: one masked image per forward."""
    acts, _ = activations_and_gradients(model, layer, images, lambda out: out.sum())
    cams = []
    with torch.no_grad():
        for i, label in enumerate(labels.tolist()):
            baseline = model(torch.zeros_like(images[i : i + 1]))[0, label]
            increases = []
            for k in range(acts.shape[1]):
                up = F.interpolate(acts[i, k][None, None].float(), size=images.shape[-2:], mode="bilinear")
                span = up.max() - up.min()
                mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
                increases.append(model(images[i : i + 1] * mask)[0, label] - baseline)
            weights = torch.softmax(torch.stack(increases).double(), dim=0)
            cams.append(torch.einsum("c,chw->hw", weights, acts[i]))
    return finish(torch.stack(cams), images.shape[-2:])


def test_scorecam_matches_loop(images, classifier):
    labels = torch.tensor([1, 4, 2])
    maps = create_explainer("scorecam")(classifier, images, ClassTarget(labels))
    with torch.enable_grad():
        expected = loop_scorecam(classifier, classifier.features, images, labels)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)


def test_scorecam_chunked_equals_unchunked(images, embedder, pair_target):
    target = pair_target("dissimilar")
    maps = [create_explainer("scorecam", batch_size=b)(embedder, images, target) for b in (1, 7, 10_000)]
    torch.testing.assert_close(maps[0], maps[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(maps[1], maps[2], atol=1e-5, rtol=0)


def test_options_reach_the_explainers():
    assert create_explainer("scorecam", target_layer="layer4", batch_size=3).batch_size == 3
    assert create_explainer("gradcam++", target_layer="layer4").target_layer == "layer4"
    with pytest.raises(TypeError, match="batch_size"):
        create_explainer("scorecam", batch_size=2.5)


def test_default_layer_is_the_last_spatial_feature_map(resnet18, classifier):
    images = torch.randn(1, 3, 64, 64)
    # not `avgpool`, whose (N, C, 1, 1) output is 4-D too
    assert last_feature_layer(resnet18, images) == "layer4"
    assert last_feature_layer(classifier, images) == "features"


def test_cam_layer_followed_by_inplace_relu():
    # vgg11_bn: features.26 is a BatchNorm whose output is modified by ReLU(inplace=True); the
    # recorded activation must be the pre-ReLU value and the call must not fail on a leaf.
    import torchvision

    from facexai.explain import ClassTarget, create_explainer

    torch.manual_seed(0)
    model = torchvision.models.vgg11_bn(num_classes=3).eval()
    assert isinstance(model.features[27], torch.nn.ReLU)
    assert model.features[27].inplace
    maps = create_explainer("gradcam", target_layer="features.26")(
        model, torch.randn(2, 3, 64, 64), ClassTarget([0, 1])
    )
    assert maps.shape == (2, 64, 64)
    assert torch.isfinite(maps).all()


def test_default_layer_search_runs_once_per_model_and_size(monkeypatch):
    import torchvision

    from facexai.explain import layers

    calls = []
    search = layers._search_last_feature_layer
    monkeypatch.setattr(layers, "_search_last_feature_layer", lambda m, x: calls.append(x.shape) or search(m, x))
    model = torchvision.models.resnet18(num_classes=3).eval()
    for _ in range(2):
        assert layers.last_feature_layer(model, torch.randn(2, 3, 64, 64)) == "layer4"
    assert layers.last_feature_layer(model, torch.randn(1, 3, 96, 96)) == "layer4"
    assert len(calls) == 2  # one search per input size, none repeated
