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
        assert model.embedding_size == 3
        assert model.spec.size == 16
        assert model.explained == explained
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
    ("input_names", '[{"a": 1}]', "facexai.input_names.*list of exactly 1 names"),
    ("input_names", '["images", "target"]', "facexai.input_names.*exactly 1"),
    # found by the slow fuzz test: an explainer named on a plain graph made the probe IndexError
    ("explainer", "gradcam", "facexai.input_names.*exactly 2"),
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
    assert str(path) in str(refused.value)
    assert "\n" not in str(refused.value)
    with pytest.raises(AuditModelError, match=message):
        OnnxFaceModel(path)


def test_verification_export_without_embedding_size_names_the_key(tmp_path: Path) -> None:
    """Before: the explained graph's probe fed a (2, 1) target and onnxruntime failed (or a TypeError)."""
    path = tiny_face_onnx(tmp_path / "noemb.onnx", explained=True, drop=("facexai.embedding_size",))
    with pytest.raises(MetadataError, match=r"lacks facexai.embedding_size"):
        read_metadata(path)
    with pytest.raises(AuditModelError, match=r"lacks facexai.embedding_size"):
        OnnxFaceModel(path)


@pytest.mark.parametrize("explained", [False, True])
def test_input_size_must_match_the_graph(explained: bool, tmp_path: Path) -> None:
    path = tiny_face_onnx(tmp_path / "size.onnx", explained=explained, props={"facexai.input_size": "32"})
    with pytest.raises(AuditModelError, match=r"facexai.input_size=32, but its graph takes 16x16"):
        OnnxFaceModel(path)


def test_embedding_size_must_match_the_graph(tmp_path: Path) -> None:
    for explained in (False, True):
        path = tiny_face_onnx(tmp_path / "width.onnx", explained=explained, props={"facexai.embedding_size": "5"})
        with pytest.raises(AuditModelError, match=r"facexai.embedding_size=5 .*3"):
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


def write_pairs(tmp_path: Path) -> tuple[Path, Path]:
    """16 px colour images (one dark: the NaN model's embedding is NaN there) and a pairs file.

    They go in ``tmp_path/faces``: the audit refuses a report folder inside its image root.
    """
    from PIL import Image

    root = tmp_path / "faces"
    root.mkdir()

    rng = np.random.default_rng(0)
    colours = {
        "dark": (10, 20, 5),
        "red": (220, 90, 60),
        "rose": (230, 120, 90),
        "teal": (60, 200, 190),
        "sea": (40, 180, 200),
    }
    for name, colour in colours.items():
        pixels = np.clip(np.array(colour) + rng.normal(0, 8, (16, 16, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{name}.png")
    pairs = root / "pairs.txt"
    pairs.write_text(
        "red.png rose.png 1\ndark.png red.png 0\nteal.png sea.png 1\nred.png teal.png 0\nrose.png sea.png 0\n"
    )
    return pairs, root


@pytest.mark.parametrize("explained", [False, True])
def test_nan_similarity_is_undefined_and_the_report_is_written(explained: bool, tmp_path: Path, caplog) -> None:
    """Before: json.dumps(allow_nan=False) raised on the NaN pair and no report was written."""
    import json

    from facexai.export.audit import AuditOptions, CorrRiseOptions, run_audit

    pairs, root = write_pairs(tmp_path)
    model = tiny_face_onnx(tmp_path / "nan.onnx", explained=explained, nan_rows=True)
    options = AuditOptions(steps=4, progress=False, corrrise=CorrRiseOptions(n_masks=8), map_pairs=5, curve_pairs=5)
    out = tmp_path / "report"
    with caplog.at_level("WARNING", logger="facexai.export.audit"):
        report = run_audit(model, pairs, root, out, options)
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert [p["similarity"] is None for p in saved["pairs"]] == [False, True, False, False, False]
    assert saved["pairs"][1]["decision"] is None
    assert saved["undefined_pairs"] == [{"index": 1, "path_a": str(root / "dark.png"), "path_b": str(root / "red.png")}]
    metrics = saved["metrics"]
    assert metrics["n_pairs"] == 4
    assert metrics["n_undefined"] == 1
    assert metrics["n_genuine"] == 2
    assert metrics["roc_auc"] is not None
    assert 0 <= metrics["roc_auc"] <= 1
    assert "1 of 5 pairs have no defined similarity" in caplog.text
    assert "dark.png" in caplog.text
    page = (out / "index.html").read_text()
    assert "undefined" in page
    if saved["curves"] is not None:  # curves over the images whose scores are all finite
        assert all(np.isfinite(saved["curves"]["deletion_mean"]))


def test_a_failed_rewrite_keeps_the_previous_report(tmp_path: Path, monkeypatch) -> None:
    """Before: a write that failed half-way (disk full, Ctrl-C) left a truncated report.json."""
    import json

    from PIL import Image

    from facexai.export.audit import AuditOptions, run_audit

    pairs, root = write_pairs(tmp_path)
    model = tiny_face_onnx(tmp_path / "ok.onnx")
    out = tmp_path / "report"
    options = AuditOptions(steps=4, progress=False, corrrise=None)
    run_audit(model, pairs, root, out, options)
    before = {p.name: p.read_bytes() for p in [out / "report.json", out / "index.html", out / "pairs" / "00000_a.png"]}
    write_text = Path.write_text

    def half_text(self: Path, text: str, *args, **kwargs) -> int:
        write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("No space left on device")

    def half_picture(self: Image.Image, fp, *args, **kwargs) -> None:
        Path(fp).write_bytes(b"\x89PNG\r\n")
        raise OSError("No space left on device")

    for name, replacement in (("write_text", half_text), ("save", half_picture)):
        with monkeypatch.context() as patch:
            patch.setattr(Path if name == "write_text" else Image.Image, name, replacement)
            with pytest.raises(OSError, match="No space left"):
                run_audit(model, pairs, root, out, options)
        after = {
            p.name: p.read_bytes() for p in [out / "report.json", out / "index.html", out / "pairs" / "00000_a.png"]
        }
        assert after == before, name
        json.loads(after["report.json"])
        assert not [p for p in out.rglob(".*") if "partial" in p.name]


def test_metadata_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """Found by tests/fuzz/test_fuzz_onnx_metadata.py: onnxruntime's metadata map raised UnicodeDecodeError."""
    path = tiny_face_onnx(tmp_path / "latin1.onnx", props={"facexai.version": "QQQQ"})
    path.write_bytes(path.read_bytes().replace(b"QQQQ", b"\xff\xfeQQ"))
    with pytest.raises(MetadataError, match="metadata that is not valid UTF-8"):
        read_metadata(path)
    with pytest.raises(AuditModelError, match="metadata that is not valid UTF-8"):
        OnnxFaceModel(path)
