"""Explanations of a face model converted from ONNX equal those of the network it came from.

Users bring arcface_torch / insightface ONNX files; ``facexai.models.load_face_model`` turns them
into a ``torch.fx.GraphModule`` of standard modules, in which the exporter has folded every
BatchNorm that follows a convolution into that convolution (convolutions gain a bias) and the
residual additions are ``operator.add`` calls, not modules. The network computes the same
function, so every explainer must give the same maps on both graphs: Pearson >= 0.99 per map
(the measured minimum is 0.9999; float rounding of the folded weights is all that differs).

The sources are the arcface_torch-layout IResNet of ``tests/thirdparty`` (its head flattens
before the dropout, so its last feature layer is ``bn2``) and facexai's own IResNet (dropout
before the flatten, so its last feature layer is ``dropout``); both BatchNorm-calibrated as a
trained network is, narrow and 64 px so that the whole module runs in seconds on a CPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from facexai.explain import (
    BatchNormMismatchWarning,
    EmptyMapWarning,
    create_explainer,
    explain_pairs,
    pair_targets,
)
from facexai.explain.base import explanation_mode
from facexai.explain.fgcam import FGCAM
from facexai.explain.layers import capture_output, last_feature_layer
from facexai.models.face_model import load_face_model
from facexai.models.iresnet import IResNet
from tests.thirdparty.arcface_torch import (
    calibrate_batchnorm,
    export_like_torch2onnx,
    face_batch,
    make_arcface_model,
)

SIDE = 64
WIDTHS = (8, 16, 16, 32)
#: one block in each stage but the second: both the downsampling and the identity shortcut
LAYERS = (1, 2, 1, 1)
#: cheap but non-trivial settings: 4x4 CAM maps, a few FAME steps, few fixed-seed masks
OPTIONS: dict[str, dict] = {
    "gradcam": {},
    "gradcam++": {},
    "scorecam": {"batch_size": 64},
    "liftcam": {},
    "fgcam": {},
    "fame": {"iterations": 4},
    "corrrise": {"n_masks": 32, "patch_size": 16, "seed": 0},
}
#: the last 4-D module of each source network, and of its converted graph
NATIVE_DEFAULT = {"arcface_torch": "bn2", "facexai": "dropout"}
CONVERTED_DEFAULT = "bn2/BatchNormalization"
MIN_PEARSON = 0.99


def build_source(kind: str) -> nn.Module:
    """A calibrated, seeded source network of the given layout, in eval mode."""
    if kind == "arcface_torch":
        return make_arcface_model(LAYERS, num_features=32, widths=WIDTHS, side=SIDE, seed=0)
    torch.manual_seed(0)
    return calibrate_batchnorm(IResNet(LAYERS, 32, SIDE, WIDTHS), side=SIDE)


@pytest.fixture(scope="module", params=["arcface_torch", "facexai"])
def networks(request, tmp_path_factory) -> tuple[str, nn.Module, nn.Module]:
    """(layout, source network, the graph load_face_model makes of its torch2onnx export)."""
    source = build_source(request.param)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    export_like_torch2onnx(source, path, side=SIDE)
    return request.param, source, load_face_model(path)


@pytest.fixture(scope="module")
def pairs() -> tuple[Tensor, Tensor]:
    faces = face_batch(4, SIDE, seed=5)
    return faces[:2], faces[2:]


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Per-map Pearson correlation of two (N, H, W) stacks."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))


def both_maps(method: str, model: nn.Module, pairs: tuple[Tensor, Tensor], mode: str) -> Tensor:
    """A and B maps of the pairs, stacked.

    Fails on an empty map (which would agree vacuously), on LIFT-CAM missing summation-to-delta
    (a head module its rules do not know) and on FG-CAM's BatchNorm warning (the networks are
    calibrated).
    """
    explainer = create_explainer(method, **OPTIONS[method])
    with warnings.catch_warnings():
        for category in (EmptyMapWarning, RuntimeWarning, BatchNormMismatchWarning):
            warnings.simplefilter("error", category)
        return torch.cat(explain_pairs(explainer, model, *pairs, mode=mode))


@pytest.mark.parametrize("method", list(OPTIONS))
def test_maps_of_the_converted_graph_match_the_source(networks, pairs, method):
    _, source, converted = networks
    modes = ("similar", "dissimilar") if method in ("gradcam", "liftcam", "fgcam") else ("similar",)
    for mode in modes:
        native = both_maps(method, source, pairs, mode)
        ported = both_maps(method, converted, pairs, mode)
        assert torch.all(native.flatten(1).std(dim=1) > 0)  # a constant map would agree vacuously
        correlation = pearson(native, ported)
        assert correlation.min() >= MIN_PEARSON, (method, mode, correlation.tolist())


def test_default_layer_is_the_converted_equivalent(networks, pairs):
    """The exporter drops the dropout and keeps bn2 (it follows an add, not a convolution), so the
    converted default is bn2's node, whose output equals the native default layer's."""
    kind, source, converted = networks
    images = torch.cat(pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bn2 is a module: no functional tail to warn about
        assert last_feature_layer(source, images[:1]) == NATIVE_DEFAULT[kind]
        assert last_feature_layer(converted, images[:1]) == CONVERTED_DEFAULT
    with torch.no_grad():
        with capture_output(source, NATIVE_DEFAULT[kind]) as native:
            source(images)
        with capture_output(converted, CONVERTED_DEFAULT) as ported:
            converted(images)
    torch.testing.assert_close(ported[-1], native[-1], atol=1e-4, rtol=1e-4)


def test_fgcam_relevance_is_the_same_through_folded_convs_and_functional_adds(networks, pairs):
    """FG-CAM's raw input relevance, before any normalisation, equals the source's.

    Folding multiplies a convolution's z (and its output's share of it) by the same positive BN
    scale, which the ratio output / z cancels; the folded bias is excluded from z but shared in
    full with the output, as the source's BN shift is; and the ``operator.add`` shortcuts split
    relevance a / (a + b) by their ordinary gradient, as the source's ``out + shortcut`` does.
    """
    _, source, converted = networks
    relevance = []
    for model in (source, converted):
        images, target = pair_targets(model, *pairs)
        with explanation_mode(model):
            relevance.append(FGCAM().explain(model, images, target))
    native, ported = relevance
    assert native.abs().amax(dim=(1, 2)).min() > 1e-4  # a vacuous 0 == 0 would prove nothing
    torch.testing.assert_close(ported, native, rtol=0, atol=1e-3 * native.abs().max().item())


def test_converted_convolutions_carry_the_folded_batchnorm(networks):
    """What the tests above rely on: the converted graph has biased convolutions and no add
    modules (so the rules are exercised on the folded form, not on a copy of the source)."""
    _, _, converted = networks
    convs = [m for m in converted.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    assert all(conv.bias is not None for conv in convs)
    adds = [n for n in converted.graph.nodes if n.op == "call_function" and "add" in str(n.target)]
    assert len(adds) == sum(LAYERS)


class AddTail(nn.Module):
    """A network whose last feature map is a residual addition that no module follows."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        return self.fc((self.branch(x) + x).mean(dim=(2, 3)))


def test_a_functional_last_feature_map_is_reported():
    """Traced by fx, as a converted graph is, the addition is an ``operator.add`` node outside
    every module: the default layer ``branch`` lies before the last feature map, and says so."""
    graph = torch.fx.symbolic_trace(AddTail())
    with pytest.warns(UserWarning, match=r"outside any module \(add\).*'branch'.*target_layer"):
        assert last_feature_layer(graph, torch.randn(1, 3, 8, 8)) == "branch"
