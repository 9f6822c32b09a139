"""The demo recipe through every command of the README, end to end, on a short fit.

``fit`` (configs/demo.yaml, shortened) -> ``validate`` -> ``evaluate`` with the seed methods ->
``export`` with LIFT-CAM in the graph -> ``audit`` of that ONNX file on pairs of demo faces
written as image files. Each step reads only what the previous one wrote, as a user's shell
session would, so a broken hand-over between commands (e.g. an export that assumes 112 px when
the demo trains at 64 px) fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from facexai.cli import main
from facexai.data.synthetic import generate_faces, sample_identities

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
SIDE = 64  # the demo's image size


def short_fit_args(root: Path) -> list[str]:
    """configs/demo.yaml, one short epoch on a small set, logged under ``root``."""
    return [
        "--config",
        str(DEMO),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(root / "runs"),
        "--data.init_args.num_identities",
        "16",
        "--data.init_args.images_per_identity",
        "6",
        "--data.init_args.num_val_identities",
        "8",
        "--data.init_args.num_val_pairs",
        "16",
        "--data.init_args.batch_size",
        "16",
        "--model.init_args.num_identities",
        "16",
    ]


def write_face_pairs(root: Path) -> Path:
    """Three genuine and three impostor pairs of demo faces as PNGs and a `a b 0|1` pairs file."""
    identities = sample_identities(4, torch.Generator().manual_seed(11))
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    images, _ = generate_faces(labels, identities, SIDE, seed=12)
    names = []
    for k, image in enumerate(images):
        name = f"face{k}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / name)
        names.append(name)
    genuine = [(0, 1), (2, 3), (4, 5)]
    impostor = [(0, 2), (3, 6), (5, 7)]
    lines = [f"{names[a]} {names[b]} 1" for a, b in genuine] + [f"{names[a]} {names[b]} 0" for a, b in impostor]
    pairs = root / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return pairs


@pytest.mark.slow
def test_demo_checkpoint_goes_through_every_readme_command(tmp_path: Path) -> None:
    args = short_fit_args(tmp_path)
    assert main(["fit", *args]) == 0
    checkpoints = sorted((tmp_path / "runs" / "demo").glob("version_*/checkpoints/*.ckpt"))
    assert checkpoints, "fit wrote no checkpoint"
    ckpt = str(checkpoints[-1])

    assert main(["validate", *args, "--ckpt_path", ckpt]) == 0

    evaluation = tmp_path / "eval"
    options = json.dumps({"fame": {"iterations": 5, "blur_sigma": "auto"}})
    assert (
        main(
            [
                "evaluate",
                "--config",
                str(_small_config(tmp_path)),
                "--ckpt_path",
                ckpt,
                "--explainers",
                "fame",
                "fgcam",
                "liftcam",
                "--explainer-options",
                options,
                "--max-samples",
                "2",
                "--steps",
                "4",
                "--out",
                str(evaluation),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((evaluation / "results.json").read_text())
    rows = {row["name"]: row for row in results["results"]}
    assert {"fame", "fgcam", "liftcam"} <= set(rows)
    assert all(rows[name]["maps"] > 0 for name in ("fame", "fgcam", "liftcam"))
    for name in ("results.md", "gallery.png", "index.html"):
        assert (evaluation / name).is_file(), name

    onnx_path = tmp_path / "demo_liftcam.onnx"
    assert main(["export", "--ckpt_path", ckpt, "--output", str(onnx_path), "--explainer", "liftcam"]) == 0
    assert onnx_path.is_file()

    faces = tmp_path / "faces"
    faces.mkdir()
    pairs = write_face_pairs(faces)
    report = tmp_path / "audit"
    assert (
        main(
            [
                "audit",
                "--onnx",
                str(onnx_path),
                "--pairs",
                str(pairs),
                "--images-root",
                str(faces),
                "--out",
                str(report),
                "--steps",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    audit = json.loads((report / "report.json").read_text())
    assert len(audit["pairs"]) == 6
    assert (report / "index.html").is_file()


def _small_config(root: Path) -> Path:
    """configs/demo.yaml with the small data set of :func:`short_fit_args` (evaluate reads YAML)."""
    import yaml

    config = yaml.safe_load(DEMO.read_text())
    config["data"]["init_args"].update(
        num_identities=16, images_per_identity=6, num_val_identities=8, num_val_pairs=16, batch_size=16
    )
    config["model"]["init_args"]["num_identities"] = 16
    path = root / "small_demo.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
