"""The torch-free audit: report contents, metrics, pairs parsing, errors, no torch import."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_helpers import audit_in_fresh_process

from facexai.export import audit_metrics as am
from facexai.export.audit import AuditOptions, CorrRiseOptions, run_audit
from facexai.export.cli import audit_main
from facexai.export.pairs import read_pairs

FAST = AuditOptions(steps=4, progress=False)


def test_audit_explained_model(gradcam_verification_export, pairs_file: Path, faces_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = run_audit(gradcam_verification_export.path, pairs_file, faces_root, out, FAST)
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["model"]["explainer"] == "gradcam"
    assert saved["model"]["task"] == "verification"
    assert len(saved["pairs"]) == 4
    assert [p["issame"] for p in saved["pairs"]] == [True, True, False, False]
    metrics = saved["metrics"]
    assert metrics["n_pairs"] == 4
    assert metrics["n_genuine"] == 2
    assert 0 <= metrics["roc_auc"] <= 1
    assert 0 <= metrics["eer"] <= 1
    assert 0.5 <= metrics["accuracy"] <= 1
    curves = saved["curves"]
    assert curves["steps"] == 4
    assert curves["n_images"] == 8
    assert len(curves["deletion_mean"]) == 5
    first = saved["pairs"][0]
    assert len(first["deletion_auc"]) == 2
    assert all(-1.0001 <= a <= 1.0001 for a in first["insertion_auc"])
    page = (out / "index.html").read_text()
    for pair in saved["pairs"]:
        assert pair["image_a"] in page
        assert (out / pair["image_a"]).is_file()
    assert "ROC AUC" in page
    assert "<svg" in page
    ET.fromstring((out / "curves.svg").read_text())  # well-formed SVG


def test_audit_similarities_match_pytorch(
    gradcam_verification_export, verification_module, pairs_file, faces_root, tmp_path
) -> None:
    from facexai.data.folders import load_image
    from facexai.data.folders import read_pairs as torch_read_pairs
    from facexai.data.transforms import normalise

    options = AuditOptions(curve_pairs=0, progress=False)
    report = run_audit(gradcam_verification_export.path, pairs_file, faces_root, tmp_path, options)
    pairs = torch_read_pairs(pairs_file, faces_root)
    with torch.no_grad():
        for pair, record in zip(pairs, report["pairs"], strict=True):
            a, b = (verification_module(normalise(load_image(p, 112))[None]) for p in (pair.path_a, pair.path_b))
            assert abs(torch.nn.functional.cosine_similarity(a, b).item() - record["similarity"]) < 1e-4
    assert report["curves"] is None  # curve_pairs=0


def test_audit_plain_model_gets_black_box_maps(plain_verification_onnx, pairs_file, faces_root, tmp_path) -> None:
    options = AuditOptions(steps=4, progress=False, corrrise=CorrRiseOptions(n_masks=8), map_pairs=1, curve_pairs=4)
    report = run_audit(plain_verification_onnx, pairs_file, faces_root, tmp_path / "maps", options)
    assert report["model"]["explainer"] == "corrrise"
    assert report["model"]["facexai_export"] is True
    assert [p["has_maps"] for p in report["pairs"]] == [True, False, False, False]
    assert report["curves"]["n_images"] == 2  # only pairs with maps get curves
    no_maps = replace(options, corrrise=None)
    report = run_audit(plain_verification_onnx, pairs_file, faces_root, tmp_path / "none", no_maps)
    assert report["curves"] is None
    assert report["model"]["maps"] is None
    assert "no maps were drawn" in (tmp_path / "none" / "index.html").read_text()


def test_audit_command_imports_no_torch(gradcam_verification_export, pairs_file, faces_root, tmp_path) -> None:
    """The audit runs where torch is not even importable: the child process checks sys.modules."""
    out = tmp_path / "report"
    proc = audit_in_fresh_process([
        "--onnx", str(gradcam_verification_export.path), "--pairs", str(pairs_file),
        "--images-root", str(faces_root), "--out", str(out), "--curve-pairs", "2",
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "ROC AUC" in proc.stdout
    assert (out / "index.html").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["curves"]["steps"] == 20
    assert report["curves"]["n_images"] == 4


def test_numpy_metrics_match_torch_metrics() -> None:
    from facexai.metrics.verification import _best_threshold, equal_error_rate

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(4, 40))
        scores = np.round(rng.normal(size=n), 1 if trial % 2 else 6)  # with and without ties
        issame = rng.random(n) < 0.5
        issame[:2] = [True, False]
        eer, threshold = am.equal_error_rate(scores, issame)
        t_eer, t_threshold = equal_error_rate(torch.tensor(scores), torch.tensor(issame))
        assert eer == pytest.approx(float(t_eer), abs=1e-9)
        assert threshold == pytest.approx(float(t_threshold), abs=1e-9)
        accuracy, cut = am.best_accuracy(scores, issame)
        assert cut == pytest.approx(float(_best_threshold(torch.tensor(scores), torch.tensor(issame).long())))
        assert accuracy == pytest.approx(((scores >= cut) == issame).mean())
        pos, neg = scores[issame], scores[~issame]
        brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
        assert am.roc_auc(scores, issame) == pytest.approx(brute)


def test_numpy_curves_match_torch_curves() -> None:
    from facexai.metrics.functional.perturbation import perturbation_curves

    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 3, 8, 8)).astype(np.float32)
    maps = np.round(rng.random((3, 8, 8)), 1).astype(np.float32)  # ties: the order must be stable
    weights = rng.normal(size=(3 * 8 * 8,)).astype(np.float32)
    score_np = lambda x, index: x.reshape(len(x), -1) @ weights  # noqa: E731
    deletion, insertion = am.perturbation_curves(score_np, images, maps, steps=5)
    for mode, got in (("deletion", deletion), ("insertion", insertion)):
        expected = perturbation_curves(
            lambda x: x.flatten(1) @ torch.from_numpy(weights),
            torch.from_numpy(images),
            torch.from_numpy(maps),
            steps=5,
            baseline="zero",
            mode=mode,
        )
        np.testing.assert_allclose(got, expected.double().numpy(), atol=1e-4)
    assert am.curve_auc(np.array([[1.0, 1.0, 1.0]]))[0] == pytest.approx(1.0)


def test_pairs_parser_reads_every_line_form(faces_root: Path, tmp_path: Path) -> None:
    # The audit and the training data modules share facexai.files.read_pairs; check every form.
    text = (
        "10 300\n# comment\nid0 1 2\n\nid0 1 id1 2\n"
        "id0/id0_0001.jpg id1/id1_0002.jpg 0\nid2/id2_0001.jpg id2/id2_0002.jpg 1\n"
    )
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    got = [
        (p.path_a.relative_to(faces_root).as_posix(), p.path_b.relative_to(faces_root).as_posix(), p.issame)
        for p in read_pairs(path, faces_root)
    ]
    assert got == [
        ("id0/id0_0001.jpg", "id0/id0_0002.jpg", True),
        ("id0/id0_0001.jpg", "id1/id1_0002.jpg", False),
        ("id0/id0_0001.jpg", "id1/id1_0002.jpg", False),
        ("id2/id2_0001.jpg", "id2/id2_0002.jpg", True),
    ]


def test_audit_errors(gradcam_verification_export, pairs_file, faces_root, tmp_path: Path, capsys) -> None:
    onnx_path = str(gradcam_verification_export.path)
    args = [
        "--onnx",
        onnx_path,
        "--pairs",
        str(pairs_file),
        "--images-root",
        str(faces_root),
        "--out",
        str(tmp_path / "r"),
    ]
    # missing images
    missing = tmp_path / "missing.txt"
    missing.write_text("nobody 1 2\n")
    assert audit_main([*args[:2], "--pairs", str(missing), *args[4:]]) == 2
    assert "missing images" in capsys.readouterr().err
    # malformed line
    bad = tmp_path / "bad.txt"
    bad.write_text("id0 1 2\nonly_two tokens\n")
    assert audit_main([*args[:2], "--pairs", str(bad), *args[4:]]) == 2
    assert "bad.txt:2" in capsys.readouterr().err
    # missing ONNX file
    assert audit_main(["--onnx", str(tmp_path / "none.onnx"), *args[2:]]) == 2
    assert "ONNX file not found" in capsys.readouterr().err
    # an output folder inside the images (or equal to an input) is refused before anything is written
    for out in (faces_root / "report", Path(onnx_path)):
        assert audit_main([*args[:6], "--out", str(out)]) == 2
        assert "would overwrite the input" in capsys.readouterr().err
    assert not (faces_root / "report").exists()


def test_audit_refuses_partial_metadata_and_classifier_models(pairs_file, faces_root, tmp_path: Path) -> None:
    node = onnx.helper.make_node("Flatten", ["x"], ["y"])
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 112, 112])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3 * 112 * 112])
    graph = onnx.helper.make_graph([node], "foreign", [x], [y])
    foreign = tmp_path / "foreign.onnx"
    model = onnx.helper.make_model(graph, ir_version=10, opset_imports=[onnx.helper.make_opsetid("", 17)])
    # some facexai keys but not all: a damaged contract is refused, not guessed around
    onnx.helper.set_model_props(model, {"facexai.format_version": "1", "facexai.version": "0"})
    onnx.save(model, str(foreign))
    with pytest.raises(ValueError, match=r"not a facexai export.*facexai.task"):
        run_audit(foreign, pairs_file, faces_root, tmp_path / "r", FAST)
    model = onnx.load(str(foreign))
    props = {
        "format_version": "1",
        "version": "0",
        "task": "classification",
        "input_size": "112",
        "input_format": "normalised",
        "input_mean": "127.5",
        "input_std": "127.5",
        "input_names": '["x"]',
        "output_names": '["y"]',
    }
    onnx.helper.set_model_props(model, {f"facexai.{k}": v for k, v in props.items()})
    onnx.save(model, str(foreign))
    with pytest.raises(ValueError, match="classification model; the audit evaluates face verification"):
        run_audit(foreign, pairs_file, faces_root, tmp_path / "r", FAST)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        run_audit(tmp_path / "junk.onnx", pairs_file, faces_root, tmp_path / "r", FAST)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium")
def test_report_renders_in_headless_chromium(
    gradcam_verification_export, pairs_file, faces_root, tmp_path: Path
) -> None:
    run_audit(gradcam_verification_export.path, pairs_file, faces_root, tmp_path / "r", FAST)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "/usr/bin/chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (tmp_path / "r" / "index.html").as_uri(),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.std() > 10  # not a blank page
    shutil.rmtree(tmp_path / "r")
