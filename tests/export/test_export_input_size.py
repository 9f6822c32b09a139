"""Exports take the checkpoint's input size (the 64 px demo model), and audits of them work.

The demo (configs/demo.yaml) trains iresnet_mini with ``backbone_kwargs: {img_size: 64}``; its
embedding FC takes 128 * (64 / 16) ** 2 = 2048 features, so an export at the old default of 112
px failed inside the network. These tests build that checkpoint, export it with the command
(plain and with LIFT-CAM in the graph) and audit both on synthetic faces saved as PNG.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from export_helpers import save_checkpoint, seed_norms, write_png_pairs
from PIL import Image

from facexai.export import export_main, read_metadata
from facexai.export.audit import AuditOptions, CorrRiseOptions, run_audit
from facexai.export.cli import audit_main
from facexai.export.input_size import declared_input_size, insightface_note, resolve_input_size
from facexai.files import load_image
from facexai.models import VerificationModule

DEMO_SIDE = 64
#: the demo config's model section, with fewer identities (the head is not exported)
DEMO_MODEL = {
    "backbone": "iresnet_mini",
    "num_identities": 8,
    "embedding_size": 128,
    "margin": "arcface",
    "scale": 16.0,
    "margin_value": 0.2,
    "backbone_kwargs": {"img_size": DEMO_SIDE},
}
PAIRS = "id0/a.png id0/b.png 1\nid1/a.png id1/b.png 1\nid0/a.png id1/b.png 0\nid2/a.png id0/b.png 0\n"


@pytest.fixture(scope="module")
def demo_module() -> VerificationModule:
    torch.manual_seed(0)
    return seed_norms(VerificationModule(**DEMO_MODEL))


@pytest.fixture(scope="module")
def demo_ckpt(demo_module: VerificationModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lightning-style checkpoint (state_dict + hyper_parameters), as ``fit`` writes one."""
    return save_checkpoint(demo_module, tmp_path_factory.mktemp("demo") / "demo-epoch=04.ckpt")


@pytest.fixture(scope="module")
def demo_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SyntheticFaces images of three identities at the demo's 64 px, written to PNG."""
    return write_png_pairs(tmp_path_factory.mktemp("demo_faces"), DEMO_SIDE, 21, PAIRS)


def _export(ckpt: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = export_main(["--ckpt_path", str(ckpt), "--output", str(out), *extra])
    return rc, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def demo_exports(demo_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """The command's plain and LIFT-CAM exports of the demo checkpoint, without --input_size."""
    folder = tmp_path_factory.mktemp("demo_onnx")
    results = {}
    for name, extra in (("plain", ()), ("liftcam", ("--explainer", "liftcam"))):
        rc, stdout, stderr = _export(demo_ckpt, folder / f"{name}.onnx", *extra)
        assert rc == 0, stderr
        results[name] = (folder / f"{name}.onnx", stdout)
    return results


def _torch_similarities(module: VerificationModule, root: Path) -> list[float]:
    sims = []
    for line in PAIRS.splitlines():
        a, b, _ = line.split()
        pixels = torch.from_numpy(np.stack([load_image(root / a), load_image(root / b)])).float()
        with torch.no_grad():
            e = module(((pixels - 127.5) / 127.5).permute(0, 3, 1, 2))
        sims.append(torch.nn.functional.cosine_similarity(e[:1], e[1:]).item())
    return sims


def test_plain_export_takes_the_checkpoint_size_with_a_note(demo_exports) -> None:
    path, stdout = demo_exports["plain"]
    meta = read_metadata(path)
    assert meta.input_size == DEMO_SIDE
    assert meta.explainer is None
    assert len(meta.notes) == 1
    assert "expects 112 px" in meta.notes[0]
    assert "will not load" in meta.notes[0]
    assert "64 px" in stdout
    assert f"note: {meta.notes[0]}" in stdout


def test_liftcam_export_takes_the_checkpoint_size(demo_exports) -> None:
    path, stdout = demo_exports["liftcam"]
    meta = read_metadata(path)
    assert meta.input_size == DEMO_SIDE
    assert meta.explainer == "liftcam"
    assert meta.notes == ()
    assert "explainer liftcam" in stdout


def test_wrong_explicit_size_is_one_line_naming_the_checkpoint_size(demo_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    rc, _, stderr = _export(demo_ckpt, out, "--input_size", "112", "--explainer", "liftcam")
    assert rc == 2
    assert len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr
    assert "built for 64 px" in stderr
    assert "backbone_kwargs.img_size" in stderr
    assert not out.exists()


@pytest.mark.parametrize("name", ["plain", "liftcam"])
def test_audit_of_the_64px_exports(
    name: str, demo_exports, demo_module, demo_faces: Path, tmp_path: Path, capsys
) -> None:
    path, _ = demo_exports[name]
    out = tmp_path / "report"
    args = [
        "--onnx",
        str(path),
        "--pairs",
        str(demo_faces / "pairs.txt"),
        "--images-root",
        str(demo_faces),
        "--out",
        str(out),
        "--masks",
        "16",
        "--map-pairs",
        "2",
        "--curve-pairs",
        "2",
        "--steps",
        "4",
        "--no-progress",
    ]
    assert audit_main(args) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["input_size"] == DEMO_SIDE
    assert report["model"]["facexai_export"] is True
    expected_maps = "liftcam (in the graph)" if name == "liftcam" else "corrrise (black box, onnxruntime)"
    assert report["model"]["maps"] == expected_maps
    np.testing.assert_allclose(
        [p["similarity"] for p in report["pairs"]], _torch_similarities(demo_module, demo_faces), atol=1e-4
    )
    assert report["curves"]["n_images"] == 4
    assert (out / report["pairs"][0]["image_a"]).is_file()
    assert Image.open(out / report["pairs"][0]["image_a"]).size == (DEMO_SIDE, DEMO_SIDE)
    if name == "plain":
        assert "expects 112 px" in (out / "index.html").read_text()


def test_audit_refuses_flags_contradicting_facexai_metadata(demo_exports, demo_faces: Path, tmp_path: Path) -> None:
    path, _ = demo_exports["plain"]
    from facexai.export.audit import InputOverrides

    for overrides, phrase in (
        (InputOverrides(channel_order="BGR"), "--channel-order BGR contradicts"),
        (InputOverrides(mean=(0.0,)), "--mean (0.0, 0.0, 0.0) contradicts"),
    ):
        with pytest.raises(ValueError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
            run_audit(
                path,
                demo_faces / "pairs.txt",
                demo_faces,
                tmp_path / "r",
                AuditOptions(progress=False, corrrise=None),
                overrides,
            )
    assert not (tmp_path / "r").exists()
    # restating the metadata is fine
    report = run_audit(
        path,
        demo_faces / "pairs.txt",
        demo_faces,
        tmp_path / "ok",
        AuditOptions(progress=False, corrrise=CorrRiseOptions(n_masks=4), map_pairs=0),
        InputOverrides(input_size=64, mean=(127.5,), std=(127.5, 127.5, 127.5), channel_order="RGB"),
    )
    assert report["curves"] is None
    assert not any(p["has_maps"] for p in report["pairs"])


def test_declared_sizes_and_their_sources(demo_module) -> None:
    declared = declared_input_size(demo_module)
    assert (declared.size, declared.binding) == (64, True)
    assert "backbone_kwargs.img_size" in declared.source
    bare = timm.create_model("iresnet_mini", num_classes=8, img_size=48)  # no hparams: the attribute
    assert declared_input_size(bare).size == 48
    assert declared_input_size(bare).binding
    cnn = timm.create_model("resnet10t", num_classes=3)  # timm's config side, a default only: CNNs pool globally
    side = cnn.pretrained_cfg["input_size"][-1]
    assert (declared_input_size(cnn).size, declared_input_size(cnn).binding) == (side, False)
    assert resolve_input_size(cnn, 64) == 64
    assert resolve_input_size(torch.nn.Linear(2, 2), None) == 112
    with pytest.raises(ValueError, match="from 16 to 1024"):
        resolve_input_size(cnn, 8)


def test_insightface_note_follows_its_routing_rule() -> None:
    assert insightface_note(112) is None
    assert "will not load" in insightface_note(64)
    assert "will not load" in insightface_note(120)
    assert "will not load" in insightface_note(192)  # insightface's landmark size
    assert "may route" in insightface_note(128)
