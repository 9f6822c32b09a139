"""Hostile ONNX files: metadata that lies about the graph, values that would feed it wrongly.

Every case is refused by the reader's own error (``MetadataError`` for ``read_metadata``,
``AuditModelError`` for the audit's model) in one line naming the file and the key; nothing
else (TypeError, RecursionError, onnxruntime's own exceptions) may escape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from export_helpers import tiny_face_onnx

from facexai.export.audit_model import AuditModelError, OnnxFaceModel
from facexai.export.metadata import MetadataError, read_metadata


def test_tiny_exports_are_read(tmp_path: Path) -> None:
    for explained in (False, True):
        path = tiny_face_onnx(tmp_path / f"ok{explained}.onnx", explained=explained)
        model = OnnxFaceModel(path)
        assert model.embedding_size == 3 and model.spec.size == 16 and model.explained == explained
        assert read_metadata(path).embedding_size == 3


BAD_VALUES = [
    ("input_size", "100000", "facexai.input_size=100000.*16 to 1024"),
    ("input_size", "0", "facexai.input_size=0"),
    ("input_size", "sixteen", "facexai.input_size='sixteen'.*integer"),
    ("input_std", "0", "facexai.input_std=0.0.*positive"),
    ("input_std", "-1", "facexai.input_std=-1.0.*positive"),
    ("input_std", "nan", "facexai.input_std=nan"),
    ("input_std", "inf", "facexai.input_std=inf"),
    ("input_mean", "nan", "facexai.input_mean=nan"),
    ("input_mean", "1e300", "facexai.input_mean=1e\\+300.*0 to 255"),
    ("input_mean", "-3", "facexai.input_mean=-3.0"),
    ("embedding_size", "0", "facexai.embedding_size=0"),
    ("embedding_size", "-4", "facexai.embedding_size=-4"),
    ("input_names", '[{"a": 1}]', "facexai.input_names.*list of 1 or 2 names"),
    ("input_names", '"images"', "facexai.input_names.*list"),
    ("output_names", "[]", "facexai.output_names"),
    ("explainer_options", "[1]", "facexai.explainer_options.*JSON object"),
    ("class_names", '"abc"', "facexai.class_names.*list"),
    ("notes", "[" * 100_000, "facexai.notes"),
    ("notes", '{"a": 1}', "facexai.notes.*list"),
    ("parity_max_abs_diff", "banana", "facexai.parity_max_abs_diff"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES, ids=[f"{k}={v[:12]}" for k, v, _ in BAD_VALUES])
def test_bad_metadata_values_are_refused_by_name(key: str, value: str, message: str, tmp_path: Path) -> None:
    path = tiny_face_onnx(tmp_path / "bad.onnx", props={f"facexai.{key}": value})
    with pytest.raises(MetadataError, match=message) as refused:
        read_metadata(path)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(AuditModelError, match=message):
        OnnxFaceModel(path)


def test_verification_export_without_embedding_size_names_the_key(tmp_path: Path) -> None:
    """Before: the explained graph's probe fed a (2, 1) target and onnxruntime failed (or a TypeError)."""
    path = tiny_face_onnx(tmp_path / "noemb.onnx", explained=True, drop=("facexai.embedding_size",))
    with pytest.raises(MetadataError, match="lacks facexai.embedding_size"):
        read_metadata(path)
    with pytest.raises(AuditModelError, match="lacks facexai.embedding_size"):
        OnnxFaceModel(path)


@pytest.mark.parametrize("explained", [False, True])
def test_input_size_must_match_the_graph(explained: bool, tmp_path: Path) -> None:
    path = tiny_face_onnx(tmp_path / "size.onnx", explained=explained, props={"facexai.input_size": "32"})
    with pytest.raises(AuditModelError, match="facexai.input_size=32, but its graph takes 16x16"):
        OnnxFaceModel(path)


def test_embedding_size_must_match_the_graph(tmp_path: Path) -> None:
    for explained in (False, True):
        path = tiny_face_onnx(tmp_path / "width.onnx", explained=explained, props={"facexai.embedding_size": "5"})
        with pytest.raises(AuditModelError, match="facexai.embedding_size=5 .*3"):
            OnnxFaceModel(path)


def test_names_must_match_the_graph(tmp_path: Path) -> None:
    path = tiny_face_onnx(tmp_path / "names.onnx", explained=True, props={"facexai.input_names": '["x", "y"]'})
    with pytest.raises(AuditModelError, match=r"facexai.input_names \['x', 'y'\] .*graph.*\['images', 'target'\]"):
        OnnxFaceModel(path)


def test_onnxruntime_run_errors_become_the_audits_error(tmp_path: Path, monkeypatch) -> None:
    model = OnnxFaceModel(tiny_face_onnx(tmp_path / "ok.onnx"))

    def fail(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : kernel exploded\nstack...")

    monkeypatch.setattr(model.session, "run", fail, raising=False)
    with pytest.raises(AuditModelError, match=f"onnxruntime could not run {tmp_path / 'ok.onnx'}: .*kernel exploded$"):
        model.embed(np.zeros((1, 3, 16, 16), np.float32))


def test_unloadable_file_is_the_audits_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    with pytest.raises(AuditModelError, match=f"{junk} is not a loadable ONNX model"):
        OnnxFaceModel(junk)
    with pytest.raises(MetadataError, match=f"{junk} is not a loadable ONNX model"):
        read_metadata(junk)
