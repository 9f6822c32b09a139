"""Plain exports: parity, metadata read-back, insightface loading and get_feat."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from export_helpers import CLASSIFIER_SIZE, EMBEDDING, synthetic_face

import facexai
from facexai.data.transforms import normalise
from facexai.export import export_onnx, read_metadata
from facexai.export.insightface import insightface_normalisation
from facexai.export.onnx import file_sha256
from facexai.export.parity import parity_images


def run(path: Path, *inputs: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs, strict=False)})


def test_plain_verification_layout_and_parity(plain_verification_onnx: Path, verification_module) -> None:
    model = onnx.load(str(plain_verification_onnx))
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 112, 112]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", EMBEDDING]
    # new inputs at batch sizes never used for tracing (2) or the export's check (3)
    for batch in (1, 5):
        images = parity_images(112, batch=batch, seed=99)["faces"]
        (got,) = run(plain_verification_onnx, images.numpy())
        with torch.no_grad():
            expected = verification_module(images).numpy()
        assert np.abs(got - expected).max() <= 1e-4


def test_metadata_read_back(plain_verification_onnx: Path, verification_ckpt: Path) -> None:
    meta = read_metadata(plain_verification_onnx)
    assert meta.task == "verification"
    assert (meta.input_size, meta.input_format, meta.input_mean, meta.input_std) == (112, "normalised", 127.5, 127.5)
    assert meta.embedding_size == EMBEDDING
    assert meta.class_names is None
    assert meta.version == facexai.__version__
    assert meta.source_sha256 == file_sha256(verification_ckpt)
    assert meta.explainer is None
    assert not meta.explained
    assert meta.input_names == ("images",)
    assert meta.output_names == ("embedding",)
    assert 0 <= meta.parity_max_abs_diff <= 1e-4
    props = {p.key: p.value for p in onnx.load(str(plain_verification_onnx)).metadata_props}
    assert props["facexai.input_layout"] == "NCHW RGB float32"


def insightface_feat(path: Path, rgb: np.ndarray) -> tuple[object, np.ndarray]:
    from insightface.model_zoo import get_model

    handler = get_model(str(path), providers=["CPUExecutionProvider"])
    # get_feat follows OpenCV: it expects BGR and swaps to RGB (blobFromImages(swapRB=True))
    return handler, handler.get_feat(np.ascontiguousarray(rgb[:, :, ::-1]))


def test_insightface_loads_plain_export(plain_verification_onnx: Path, verification_module) -> None:
    rgb = synthetic_face()
    handler, feat = insightface_feat(plain_verification_onnx, rgb)
    assert type(handler).__name__ == "ArcFaceONNX"
    assert handler.taskname == "recognition"
    # the graph has no Sub/Mul prefix, so insightface normalises with 127.5/127.5 as facexai does
    assert (handler.input_mean, handler.input_std) == (127.5, 127.5)
    assert insightface_normalisation(onnx.load(str(plain_verification_onnx))) == (127.5, 127.5)
    with torch.no_grad():
        expected = verification_module(normalise(rgb)[None])
    cosine = F.cosine_similarity(torch.from_numpy(feat), expected).item()
    assert cosine >= 0.9999


@pytest.mark.slow
def test_raw_pixel_export_is_detected_by_insightface(verification_module, tmp_path: Path) -> None:
    path = export_onnx(verification_module, tmp_path / "raw.onnx", input_format="raw_pixels").path
    head = [n.name for n in onnx.load(str(path)).graph.node[:2]]
    assert head == ["Sub_facexai_input", "Mul_facexai_input"]
    rgb = synthetic_face(seed=4)
    handler, feat = insightface_feat(path, rgb)
    assert (handler.input_mean, handler.input_std) == (0.0, 1.0)  # it feeds raw pixels
    with torch.no_grad():
        expected = verification_module(normalise(rgb)[None])
    assert F.cosine_similarity(torch.from_numpy(feat), expected).item() >= 0.9999
    assert read_metadata(path).input_format == "raw_pixels"


def test_plain_classifier_parity_and_class_names(classifier_module, tmp_path: Path) -> None:
    result = export_onnx(classifier_module, tmp_path / "cls.onnx", input_size=CLASSIFIER_SIZE)
    assert result.parity.worst <= 1e-4
    meta = read_metadata(result.path)
    assert meta.task == "classification"
    assert meta.num_classes == 5
    assert meta.class_names == ("a", "b", "c", "d", "e")
    assert meta.output_names == ("logits",)
    assert meta.source_sha256 is None  # in-memory model
    images = parity_images(CLASSIFIER_SIZE, batch=4, seed=7)["noise"]
    (got,) = run(result.path, images.numpy())
    with torch.no_grad():
        expected = classifier_module(images).numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_export_restores_each_modules_training_flag(verification_module, tmp_path: Path) -> None:
    """A training module with one frozen BatchNorm comes back exactly as it was (not all train)."""
    verification_module.train()
    frozen = next(m for m in verification_module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen.eval()
    before = [m.training for m in verification_module.modules()]
    try:
        export_onnx(verification_module, tmp_path / "face.onnx")
        assert [m.training for m in verification_module.modules()] == before
        assert verification_module.training
        assert not frozen.training
    finally:
        verification_module.eval()
