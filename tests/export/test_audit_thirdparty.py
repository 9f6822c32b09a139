"""Auditing ONNX face models that facexai did not write (arcface_torch's torch2onnx recipe).

The reference numbers come from the torch model the ONNX file was exported from, fed the same
pixels with the insightface convention written out here independently ((pixel - 127.5) / 127.5,
RGB, or the flags' values), so a wrong default or a flag that is ignored shows up as a mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_helpers import audit_in_fresh_process, write_png_pairs
from PIL import Image

from facexai.export.audit import AuditOptions, InputOverrides, run_audit
from facexai.export.cli import audit_main
from facexai.files import load_image
from tests.thirdparty.arcface_torch import export_like_torch2onnx, make_arcface_model

SIDE = 112
PAIRS = "id0/a.png id0/b.png 1\nid1/a.png id1/b.png 1\nid0/a.png id1/b.png 0\nid2/a.png id0/b.png 0\n"
NO_MAPS = AuditOptions(steps=4, progress=False, corrrise=None)
#: small CorrRISE settings so a CLI run stays within seconds
FAST_MAPS = ["--masks", "24", "--map-pairs", "2", "--curve-pairs", "2", "--steps", "4", "--no-progress"]


@pytest.fixture(scope="module")
def arcface() -> torch.nn.Module:
    return make_arcface_model(side=SIDE)


@pytest.fixture(scope="module")
def arcface_onnx(arcface: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_like_torch2onnx(arcface, tmp_path_factory.mktemp("thirdparty") / "arcface_r.onnx", side=SIDE)


@pytest.fixture(scope="module")
def png_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic faces of three identities as PNG (id*/a.png, id*/b.png) and a path-form pairs file."""
    return write_png_pairs(tmp_path_factory.mktemp("png_faces"), SIDE, 11, PAIRS)


def _torch_similarities(model: torch.nn.Module, root: Path, mean: float | list, std: float | list, bgr: bool) -> list:
    """Cosine similarities of the pairs computed in torch from the same PNG pixels."""
    sims = []
    for line in PAIRS.splitlines():
        a, b, _ = line.split()
        x = torch.from_numpy(np.stack([load_image(root / a, SIDE), load_image(root / b, SIDE)])).float()
        x = x[..., [2, 1, 0]] if bgr else x
        x = ((x - torch.tensor(mean)) / torch.tensor(std)).permute(0, 3, 1, 2)
        with torch.no_grad():
            e = model(x)
        sims.append(torch.nn.functional.cosine_similarity(e[:1], e[1:]).item())
    return sims


def test_cli_audits_a_torch2onnx_file_end_to_end(
    arcface, arcface_onnx, png_faces: Path, tmp_path: Path, capsys
) -> None:
    assert not onnx.load(str(arcface_onnx)).metadata_props  # no facexai metadata at all
    out = tmp_path / "report"
    args = [
        "--onnx",
        str(arcface_onnx),
        "--pairs",
        str(png_faces / "pairs.txt"),
        "--images-root",
        str(png_faces),
        "--out",
        str(out),
        *FAST_MAPS,
    ]
    assert audit_main(args) == 0
    stdout = capsys.readouterr().out
    assert "ROC AUC" in stdout
    assert "insightface convention" in stdout
    assert "corrrise" in stdout
    report = json.loads((out / "report.json").read_text())
    model = report["model"]
    assert model["facexai_export"] is False
    assert model["input_size"] == SIDE
    assert model["input_name"] == "data"
    assert model["embedding_size"] == 128
    assert model["input_mean"] == [127.5] * 3
    assert model["channel_order"] == "RGB"
    assert model["explainer"] == "corrrise"
    assert model["explainer_options"]["patch_size"] == 30
    metrics = report["metrics"]
    assert metrics["n_pairs"] == 4
    assert all(isinstance(metrics[k], float) for k in ("roc_auc", "eer", "accuracy"))
    expected = _torch_similarities(arcface, png_faces, 127.5, 127.5, bgr=False)
    np.testing.assert_allclose([p["similarity"] for p in report["pairs"]], expected, atol=1e-4)
    assert [p["has_maps"] for p in report["pairs"]] == [True, True, False, False]  # --map-pairs 2
    for pair in report["pairs"]:
        picture = np.asarray(Image.open(out / pair["image_a"]).convert("RGB"))
        plain = load_image(pair["path_a"], SIDE)
        assert picture.shape == (SIDE, SIDE, 3)
        assert (np.abs(picture.astype(int) - plain).max() > 20) == pair["has_maps"]  # overlay vs thumbnail
    curves = report["curves"]
    assert curves["n_images"] == 4
    assert len(curves["deletion_mean"]) == 5
    # step 0 of deletion is the clean image: its score is the similarity to the partner
    first = report["pairs"][0]
    assert curves["deletion_mean"][0] == pytest.approx(
        first["similarity"] / 2 + report["pairs"][1]["similarity"] / 2, abs=1e-4
    )
    page = (out / "index.html").read_text()
    assert "third-party model" in page
    assert "corrrise (black box, onnxruntime)" in page
    assert "<svg" in page


def test_flags_override_the_convention(arcface, arcface_onnx, png_faces: Path, tmp_path: Path) -> None:
    mean, std = [120.0, 110.0, 100.0], [60.0, 70.0, 80.0]
    overrides = InputOverrides(mean=tuple(mean), std=tuple(std), channel_order="BGR")
    report = run_audit(arcface_onnx, png_faces / "pairs.txt", png_faces, tmp_path / "r", NO_MAPS, overrides)
    expected = _torch_similarities(arcface, png_faces, mean, std, bgr=True)
    np.testing.assert_allclose([p["similarity"] for p in report["pairs"]], expected, atol=1e-4)
    default = _torch_similarities(arcface, png_faces, 127.5, 127.5, bgr=False)
    assert np.abs(np.array(expected) - default).max() > 1e-3  # the flags really change the input
    assert report["model"]["channel_order"] == "BGR"
    assert report["curves"] is None


# a fixed-batch graph as older tools wrote it: the legacy exporter, deprecated by torch on purpose here
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_fixed_batch_graph_runs_one_image_at_a_time(arcface, png_faces: Path, tmp_path: Path) -> None:
    path = tmp_path / "batch1.onnx"
    with torch.no_grad():
        torch.onnx.export(
            arcface, torch.zeros(1, 3, SIDE, SIDE), str(path), input_names=["data"], opset_version=11, dynamo=False
        )
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    report = run_audit(path, png_faces / "pairs.txt", png_faces, tmp_path / "r", NO_MAPS)
    expected = _torch_similarities(arcface, png_faces, 127.5, 127.5, bgr=False)
    np.testing.assert_allclose([p["similarity"] for p in report["pairs"]], expected, atol=1e-4)


def _graph(path: Path, nodes: list, inputs: list, outputs: list, initializers: list | None = None) -> Path:
    graph = onnx.helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    model = onnx.helper.make_model(graph, ir_version=8, opset_imports=[onnx.helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def _value(name: str, shape: list) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def _bad_models(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Graphs the audit must refuse, each with the phrase its one-line error must contain."""
    reshape = onnx.numpy_helper.from_array(np.array([-1, 5], np.int64), "shape")
    return {
        "rank3": (
            _graph(
                tmp_path / "rank3.onnx",
                [onnx.helper.make_node("Identity", ["x"], ["y"])],
                [_value("x", ["N", 112, 112])],
                [_value("y", ["N", 112, 112])],
            ),
            "(N, 3, S, S)",
        ),
        "channels": (
            _graph(
                tmp_path / "gray.onnx",
                [onnx.helper.make_node("Flatten", ["x"], ["y"])],
                [_value("x", ["N", 1, 112, 112])],
                [_value("y", ["N", 12544])],
            ),
            "(N, 3, S, S)",
        ),
        "output_rank": (
            _graph(
                tmp_path / "rank4out.onnx",
                [onnx.helper.make_node("Identity", ["x"], ["y"])],
                [_value("x", [1, 3, 112, 112])],
                [_value("y", [1, 3, 112, 112])],
            ),
            "returns (N, D)",
        ),
        "two_outputs": (
            _graph(
                tmp_path / "two.onnx",
                [onnx.helper.make_node("Flatten", ["x"], ["y"]), onnx.helper.make_node("Identity", ["y"], ["z"])],
                [_value("x", ["N", 3, 16, 16])],
                [_value("y", ["N", 768]), _value("z", ["N", 768])],
            ),
            "2 output(s)",
        ),
        # 2 * 3 * 16 * 16 values cannot be reshaped to (-1, 5): loads, fails when run
        "run_error": (
            _graph(
                tmp_path / "fails.onnx",
                [onnx.helper.make_node("Reshape", ["x", "shape"], ["y"])],
                [_value("x", ["N", 3, 16, 16])],
                [_value("y", ["M", 5])],
                [reshape],
            ),
            "onnxruntime could not run",
        ),
    }


def test_harmful_models_and_flags_are_refused_in_one_line(
    arcface_onnx, png_faces: Path, tmp_path: Path, capsys
) -> None:
    base = ["--pairs", str(png_faces / "pairs.txt"), "--images-root", str(png_faces), "--no-maps"]
    cases = [(path, [], phrase) for path, phrase in _bad_models(tmp_path).values()]
    cases += [
        (arcface_onnx, ["--input-size", "128"], "graph takes 112x112"),
        (arcface_onnx, ["--input-size", "8"], "from 16 to 1024"),
        (arcface_onnx, ["--std", "0"], "std must be nonzero"),
        (arcface_onnx, ["--mean", "1", "2"], "one finite number or three"),
    ]
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    cases.append((junk, [], "not a loadable ONNX model"))
    for k, (path, flags, phrase) in enumerate(cases):
        out = tmp_path / f"out{k}"
        assert audit_main(["--onnx", str(path), "--out", str(out), *base, *flags]) == 2, (path, flags)
        err = capsys.readouterr().err
        assert phrase in err, (phrase, err)
        assert len(err.strip().splitlines()) == 1, (phrase, err)
        assert "Traceback" not in err
        assert not out.exists()


def test_dynamic_side_defaults_to_112_and_follows_the_flag(png_faces: Path, tmp_path: Path) -> None:
    """A graph that pools globally (any side) is fed 112 px by default, or the flag's side."""
    nodes = [onnx.helper.make_node("GlobalAveragePool", ["x"], ["p"]), onnx.helper.make_node("Flatten", ["p"], ["y"])]
    path = _graph(tmp_path / "pool.onnx", nodes, [_value("x", ["N", 3, "H", "W"])], [_value("y", ["N", 3])])
    report = run_audit(path, png_faces / "pairs.txt", png_faces, tmp_path / "a", NO_MAPS)
    assert report["model"]["input_size"] == 112
    assert "dynamic" in report["model"]["input_source"]
    # the embedding is the normalised mean colour: check one similarity in closed form
    pair = report["pairs"][0]
    a, b = ((load_image(pair[f"path_{s}"], 112).reshape(-1, 3).mean(0) - 127.5) / 127.5 for s in "ab")
    assert pair["similarity"] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-5)
    report = run_audit(path, png_faces / "pairs.txt", png_faces, tmp_path / "b", NO_MAPS, InputOverrides(input_size=48))
    assert report["model"]["input_size"] == 48
    assert "flag" in report["model"]["input_source"]


def test_black_box_audit_imports_no_torch(arcface_onnx, png_faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = [
        "--onnx",
        str(arcface_onnx),
        "--pairs",
        str(png_faces / "pairs.txt"),
        "--images-root",
        str(png_faces),
        "--out",
        str(out),
        "--masks",
        "8",
        "--map-pairs",
        "1",
        "--curve-pairs",
        "1",
        "--steps",
        "2",
        "--no-progress",
    ]
    proc = audit_in_fresh_process(args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["maps"].startswith("corrrise")
    assert report["curves"]["n_images"] == 2
