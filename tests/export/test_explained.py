"""Explained exports: (images, target) -> (output, map[, similarity]) with gradients in the graph."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from export_helpers import CLASSIFIER_SIZE, make_verification

from facexai.explain import create_explainer
from facexai.export import EXPORTABLE_EXPLAINERS, export_onnx, read_metadata
from facexai.export.cli import EXPORT_EXPLAINERS
from facexai.export.errors import ExportError
from facexai.export.parity import check_parity, explained_reference, noise_floor, parity_images

#: the parity tests log what they measured (shown by pytest for failures, or with --log-cli-level=INFO)
LOG = logging.getLogger(__name__)


def explained_run(path: Path, images: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = dict(zip([i.name for i in session.get_inputs()], (images.numpy(), target.numpy()), strict=False))
    return dict(zip(names, session.run(names, feeds), strict=False))


def per_sample_diffs(got: dict[str, np.ndarray], expected: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: np.abs(got[k] - v.numpy()).reshape(len(v), -1).max(axis=1) for k, v in expected.items()}


def verification_diffs(path: Path, module, explainer, batch: int = 5) -> dict[str, np.ndarray]:
    """|ONNX - PyTorch| per output and sample, on new faces at a batch size not used so far."""
    images = parity_images(112, batch=batch, seed=123)["faces"]
    net = module.explained_model
    with torch.no_grad():
        embeddings = net(images)
    partners = embeddings.roll(2, dims=0).contiguous()
    got = explained_run(path, images, partners)
    assert got["map"].shape == (batch, 112, 112)
    reference = explained_reference(net, explainer, "verification")
    diffs = per_sample_diffs(got, reference(images, partners))
    diffs["map_floor"] = noise_floor(reference, images, partners, "map")
    return diffs


def classifier_diffs(path: Path, module, explainer, batch: int = 5) -> dict[str, np.ndarray]:
    images = parity_images(CLASSIFIER_SIZE, batch=batch, seed=321)["noise"]
    labels = torch.arange(batch) % 5
    got = explained_run(path, images, labels)
    assert set(got) == {"output", "map"}
    reference = explained_reference(module.explained_model, explainer, "classification")
    diffs = per_sample_diffs(got, reference(images, labels))
    diffs["map_floor"] = noise_floor(reference, images, labels, "map")
    return diffs


def assert_parity(diffs: dict[str, np.ndarray]) -> None:
    """<= 1e-4 for every output of every explainer (the export's own tolerance); no conditioning excuse."""
    floor = diffs.pop("map_floor")
    for name, diff in diffs.items():
        assert (diff <= 1e-4).all(), (name, diff, floor)


def test_cli_choices_match_exportable() -> None:
    assert tuple(sorted(EXPORT_EXPLAINERS)) == tuple(sorted(EXPORTABLE_EXPLAINERS))


def test_gradcam_verification_parity(gradcam_verification_export, verification_module) -> None:
    result = gradcam_verification_export
    assert result.parity.worst <= 1e-4
    meta = read_metadata(result.path)
    assert meta.explainer == "gradcam"
    assert meta.explained
    assert meta.input_names == ("images", "target")
    assert meta.output_names == ("output", "map", "similarity")
    explainer = create_explainer("gradcam", **meta.explainer_options)
    assert_parity(verification_diffs(result.path, verification_module, explainer))


def test_gradcam_classifier_parity(classifier_module, tmp_path: Path) -> None:
    result = export_onnx(classifier_module, tmp_path / "cls_gradcam.onnx", CLASSIFIER_SIZE, "gradcam")
    meta = read_metadata(result.path)
    assert meta.output_names == ("output", "map")
    assert meta.class_names == ("a", "b", "c", "d", "e")
    assert_parity(classifier_diffs(result.path, classifier_module, create_explainer("gradcam")))


# Issue 14 item 18: FG-CAM is held to the same 1e-4 as the others, and on the fixture it is not
# reproducible by PyTorch itself. Measured on iresnet_mini (statistics calibrated on faces; "floor" =
# max move of PyTorch's FG-CAM map under 2-ulp input changes on faces / noise, "onnx" = max
# |ONNX - PyTorch| of the map on faces): random affine (the fixture) floor 0.039-1 / 0.060, onnx 0.038;
# random weight, bias 0: floor 3.2e-4 / 8.9e-7; random bias only: 0.15 / 0.0093; bias 0.01 x randn:
# 1 / 0.072; trained 40 ArcFace steps on synthetic faces (learned affine): 0.031 / 4.5e-4, onnx 0.027;
# weight 1, bias 0: floor 4.2e-6 / 1.2e-6, onnx 3.4e-6. Only BatchNorm's init affine makes FG-CAM
# well-conditioned, which no trained network keeps, so the fixture keeps its realistic affine and the
# strict check refuses the export; test_fgcam_verification_parity_with_init_norm_affine shows the
# exported graph itself is faithful where PyTorch is stable.
FGCAM_ILL_CONDITIONED = pytest.mark.xfail(
    raises=ExportError,
    strict=True,
    reason="FG-CAM is ill-conditioned on iresnet_mini unless BatchNorm keeps its init affine, calibrated "
    "statistics or not: PyTorch's own map moves by 0.039-1 on faces under 2-ulp input changes on the fixture "
    "(onnx differs by 0.038), 0.031 after 40 ArcFace training steps (onnx 0.027), 4e-6 only with weight 1, "
    "bias 0. The strict 1e-4 parity check refuses the export instead of accepting it",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["liftcam", pytest.param("fgcam", marks=FGCAM_ILL_CONDITIONED), "gradcam++"])
def test_other_explainers_verification_parity(name: str, verification_module, tmp_path: Path) -> None:
    result = export_onnx(verification_module, tmp_path / f"{name}.onnx", explainer=name)
    assert result.parity.worst <= 1e-4
    assert not result.parity.noise_floor
    diffs = verification_diffs(result.path, verification_module, create_explainer(name))
    LOG.info(
        f"{name} verification: max |ONNX - PyTorch| {result.parity.max_abs_diff} at export, "
        f"{ {k: float(v.max()) for k, v in diffs.items()} } on new faces"
    )
    assert_parity(diffs)


@pytest.mark.slow
def test_fgcam_verification_parity_with_init_norm_affine(tmp_path: Path) -> None:
    """Where PyTorch's FG-CAM is stable (BatchNorm weight 1, bias 0, calibrated statistics), ONNX matches at 1e-4."""
    module = make_verification(affine=False)
    result = export_onnx(module, tmp_path / "fgcam.onnx", explainer="fgcam")
    assert result.parity.worst <= 1e-4
    assert not result.parity.noise_floor
    diffs = verification_diffs(result.path, module, create_explainer("fgcam"))
    assert diffs["map_floor"].max() <= 1e-4  # PyTorch itself is stable: the premise of this test
    assert_parity(diffs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["liftcam", "fgcam"])
def test_other_explainers_classifier_parity(name: str, classifier_module, tmp_path: Path) -> None:
    result = export_onnx(classifier_module, tmp_path / f"cls_{name}.onnx", CLASSIFIER_SIZE, name)
    assert result.parity.worst <= 1e-4
    assert not result.parity.noise_floor
    diffs = classifier_diffs(result.path, classifier_module, create_explainer(name))
    LOG.info(
        f"{name} classifier: max |ONNX - PyTorch| {result.parity.max_abs_diff} at export, "
        f"{ {k: float(v.max()) for k, v in diffs.items()} } on new noise"
    )
    assert_parity(diffs)


def test_fixture_norms_match_their_activations(verification_module) -> None:
    """The calibrated fixture raises no BatchNormMismatchWarning in FG-CAM (the seeded one did, 79-86%)."""
    import warnings

    images = parity_images(112, batch=3, seed=7)["faces"]
    with torch.no_grad():
        partners = verification_module(images).roll(1, dims=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*BatchNorm channels")
        explained_reference(verification_module.explained_model, create_explainer("fgcam"), "verification")(
            images, partners
        )


def test_parity_refuses_what_pytorch_itself_cannot_reproduce(tmp_path: Path) -> None:
    """No "ill-conditioned, accept 4 x the noise floor" path: over the tolerance is always refused."""
    from facexai.export.errors import ExportError
    from facexai.export.parity import _mismatch, noise_floor

    images = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    chaotic = lambda x, t: {"map": torch.sin(x * 1e9).flatten(1)}  # noqa: E731  moves under any rounding
    stable = lambda x, t: {"map": x.sum(dim=1)}  # noqa: E731
    floor = noise_floor(chaotic, images, None, "map")
    assert floor.shape == (2,)
    assert (floor > 0.1).all()
    assert "ill-conditioned" in _mismatch("map", "noise", 0.3, 1e-4, float(floor[0]), "m.onnx")
    assert (noise_floor(stable, images, None, "map") < 1e-5).all()
    assert "PyTorch itself is stable there" in _mismatch("map", "noise", 0.5, 1e-4, 0.0, "m.onnx")
    # end to end: a reference that is deterministic but chaotic under rounding, which the graph
    # does not compute; before, differences within 4 x that chaos were accepted
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    path = export_onnx(net, tmp_path / "m.onnx", 16, task="verification").path

    def chaotic_reference(x, t):
        with torch.no_grad():
            return {"embedding": net(x) + torch.sin(x.flatten(1).sum(1, keepdim=True) * 1e9)}

    with pytest.raises(ExportError, match=r"'embedding' of .*m\.onnx differs from PyTorch by .*ill-conditioned"):
        check_parity(path, chaotic_reference, None, 16, False)


@pytest.mark.parametrize("name", ["fame", "scorecam", "corrrise", "gradkam"])
def test_unexportable_explainer_names_the_exportable_ones(name: str, verification_module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Exportable: fgcam, gradcam, gradcam\\+\\+, liftcam"):
        export_onnx(verification_module, tmp_path / "x.onnx", explainer=name)
    assert not (tmp_path / "x.onnx").exists()


def test_unexportable_explainer_instance_and_options(verification_module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Exportable:"):
        export_onnx(verification_module, tmp_path / "x.onnx", explainer=create_explainer("fame"))
    with pytest.raises(ValueError, match="SVD"):
        export_onnx(verification_module, tmp_path / "x.onnx", explainer="fgcam", explainer_options={"denoise": True})
    with pytest.raises(ValueError, match="base='gradcam'"):
        export_onnx(verification_module, tmp_path / "x.onnx", explainer=create_explainer("fgcam", base="scorecam"))


def test_untraceable_code_is_reported_with_its_line(monkeypatch) -> None:
    """An exportable method whose code branches on tensor values fails with the source line."""
    from facexai.export import explained

    def branching(explainer, net, images, target):
        raw = explainer.explain(net, images, target)
        return raw if bool((raw > 0).any()) else -raw

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()
    monkeypatch.setitem(explained.RAW_MAPS, "gradcam", branching)
    with pytest.raises(ValueError, match=r"gradcam.*tracing failed at .*test_explained\.py"):
        explained.trace_explained(create_explainer("gradcam", target_layer="1"), net, "classification", 16, 3)


def test_exportability_is_declared_on_the_classes() -> None:
    """No hand-kept list: each class says whether it exports and why not; subclasses inherit it."""
    from facexai.explain import Explainer, exportable_explainers
    from facexai.explain.gradcam import GradCAM
    from facexai.export.explained import resolve_explainer

    assert tuple(exportable_explainers()) == EXPORTABLE_EXPLAINERS

    class TunedGradCAM(GradCAM):
        pass

    class Undeclared(Explainer):
        def explain(self, model, images, target):
            return images.mean(dim=1)

    assert isinstance(resolve_explainer(TunedGradCAM("layer4")), TunedGradCAM)
    with pytest.raises(ValueError, match="Undeclared' cannot be exported: it does not declare itself traceable"):
        resolve_explainer(Undeclared())
    with pytest.raises(ValueError, match=r"'fame' cannot be exported: its LOTS loop .*Exportable: fgcam"):
        resolve_explainer("fame")
