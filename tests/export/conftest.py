"""Tiny seeded facexai modules, checkpoints, exports and a synthetic pairs set (CPU, no downloads).

Exports take ~10-30 s each on the CI machine, so the files are built once per session and
shared: the plain verification export comes from ``export_main`` on a checkpoint (which tests the
command, the checkpoint loader and the sha256 metadata at the same time).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from export_helpers import PAIRS_TEXT, make_classifier, make_verification, save_checkpoint
from PIL import Image

from facexai.data.synthetic import generate_faces, sample_identities
from facexai.models import ClassifierModule, VerificationModule


@pytest.fixture(scope="session")
def verification_module() -> VerificationModule:
    return make_verification()


@pytest.fixture(scope="session")
def classifier_module() -> ClassifierModule:
    return make_classifier()


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def verification_ckpt(verification_module: VerificationModule, export_dir: Path) -> Path:
    return save_checkpoint(verification_module, export_dir / "verification.ckpt")


@pytest.fixture(scope="session")
def plain_verification_onnx(verification_ckpt: Path, export_dir: Path) -> Path:
    """Built by the command itself: ``export --ckpt_path ... --output ...``."""
    from facexai.export import export_main

    path = export_dir / "face.onnx"
    assert export_main(["--ckpt_path", str(verification_ckpt), "--output", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def gradcam_verification_export(verification_module: VerificationModule, export_dir: Path):
    from facexai.export import export_onnx

    return export_onnx(verification_module, export_dir / "face_gradcam.onnx", explainer="gradcam")


@pytest.fixture(scope="session")
def faces_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LFW-style folders root/idK/idK_000J.jpg of three synthetic identities, two images each."""
    root = tmp_path_factory.mktemp("faces")
    identities = sample_identities(3, torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    images, _ = generate_faces(labels, identities, 112, seed=6)
    for k, (image, label) in enumerate(zip(images, labels.tolist(), strict=False)):
        folder = root / f"id{label}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"id{label}_{k % 2 + 1:04d}.jpg", quality=95)
    return root


@pytest.fixture(scope="session")
def pairs_file(faces_root: Path) -> Path:
    path = faces_root / "pairs.txt"
    path.write_text(PAIRS_TEXT)
    return path
