"""``facexai evaluate --model``: a user's face model file and verification data, no YAML.

The model is an arcface_torch-layout IResNet saved as users have it (tests/thirdparty); the data
are a small ``.bin`` set (insightface's format) or a pairs file over an image folder.
"""

from __future__ import annotations

import csv
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facexai import cli
from facexai.callbacks.comparison import ComparisonLayout
from facexai.data import write_verification_bin
from facexai.evaluate import evaluate_main
from tests.thirdparty.arcface_torch import export_like_torch2onnx, face_batch, make_arcface_model, save_state_dict

#: 32 px faces keep the metric passes cheap; arcface_torch's FC then reads a 2x2 grid, from which
#: the loader infers the side, as it infers 112 from the published models' 7x7
SIDE = 32
PAIRS = 4  # 2 genuine, 2 impostor: both kinds are needed for the verification-accuracy columns
ISSAME = [True, False] * (PAIRS // 2)
FAST = [
    "--max-samples",
    "4",
    "--batch-size",
    "4",
    "--steps",
    "3",
    "--verification-steps",
    "2",
    "--device",
    "cpu",
    "--no-progress",
]
EXPLAINERS = ["gradcam", "liftcam"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _faces(count: int, seed: int) -> list[np.ndarray]:
    batch = ((face_batch(count, SIDE, seed=seed) * 0.5 + 0.5) * 255).round().byte()
    return list(batch.permute(0, 2, 3, 1).numpy())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model files (.pth, .onnx), a .bin set and the same faces as a pairs file over a folder."""
    root = tmp_path_factory.mktemp("evaluate_model")
    model = make_arcface_model(side=SIDE)
    faces = _faces(2 * PAIRS, seed=5)
    (root / "images").mkdir()
    lines = []
    for i in range(PAIRS):
        names = [f"p{i}_a.png", f"p{i}_b.png"]
        for name, face in zip(names, faces[2 * i : 2 * i + 2], strict=True):
            Image.fromarray(face).save(root / "images" / name)
        lines.append(f"{names[0]} {names[1]} {int(ISSAME[i])}")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return {
        "pth": save_state_dict(model, root / "backbone.pth", "ddp"),
        "onnx": export_like_torch2onnx(model, root / "model.onnx", side=SIDE),
        "bin": write_verification_bin(root / "tiny.bin", faces, ISSAME),
        "pairs": root / "pairs.txt",
        "images": root / "images",
    }


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for key, value in attrs if key in ("src", "href") and value]


def _check_report(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [row["explainer"] for row in rows]
    assert names[:3] == [*EXPLAINERS, "random"]
    assert names[3].startswith("inverted ")
    for row in rows:
        assert int(row["maps"]) == 4 * PAIRS  # both sides, e+ and e-
        assert math.isfinite(float(row["deletion_auc_pos"]))
        assert math.isfinite(float(row["verification_deletion_auc"]))
    table = (out / "results.md").read_text()
    assert all(re.search(rf"^\| {name} \|", table, re.M) for name in EXPLAINERS)
    for name, title in (("gallery.png", "e+"), ("gallery_neg.png", "e-")):
        with Image.open(out / name) as image:
            height, width = ComparisonLayout(4, len(EXPLAINERS), 112).size  # first 4 pairs, 2 methods
            assert image.size == (width, height), title
    parser = _Links()
    page = (out / "index.html").read_text()
    parser.feed(page)
    assert {"gallery.png", "gallery_neg.png", "curves_overlay.png", "results.csv"} <= set(parser.links)
    for link in parser.links:
        assert not link.startswith(("/", "http")), link
        assert (out / link).is_file(), link
    assert all(f"<td>{name}</td>" in page for name in EXPLAINERS)
    return rows


@pytest.mark.parametrize("kind", ["pth", "onnx"])
def test_evaluate_model_on_a_bin_set(data, kind, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    argv = [
        "--model",
        str(data[kind]),
        "--bin",
        str(data["bin"]),
        "--explainers",
        *EXPLAINERS,
        "--out",
        str(out),
        *FAST,
    ]
    assert evaluate_main(argv) == 0
    _check_report(out)
    report = (out / "results.md").read_text()
    assert f"loaded from `{data[kind]}`; data: {data['bin']}" in report
    assert "index.html" in capsys.readouterr().out


def test_evaluate_model_on_pairs_and_image_root(data, tmp_path) -> None:
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--model",
        str(data["pth"]),
        "--pairs",
        str(data["pairs"]),
        "--images-root",
        str(data["images"]),
        "--explainers",
        *EXPLAINERS,
        "--out",
        str(out),
        *FAST,
    ]
    assert cli.main(argv) == 0
    rows = _check_report(out)
    # same faces as the .bin set in the same order, so the same model must score them alike
    bin_out = tmp_path / "bin"
    argv = [
        "--model",
        str(data["pth"]),
        "--bin",
        str(data["bin"]),
        "--explainers",
        *EXPLAINERS,
        "--out",
        str(bin_out),
        *FAST,
    ]
    assert evaluate_main(argv) == 0
    with (bin_out / "results.csv").open(newline="") as handle:
        bin_rows = list(csv.DictReader(handle))
    for a, b in zip(rows[:2], bin_rows[:2], strict=True):
        assert float(a["deletion_auc_pos"]) == pytest.approx(float(b["deletion_auc_pos"]), abs=1e-4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--config", "x.yaml"], "mutually exclusive"),
        ([], "--model needs verification data"),
        (["--pairs", "p.txt"], "--pairs needs --images-root"),
        (["--bin", "a.bin", "--pairs", "p.txt", "--images-root", "."], "--bin or --pairs, not both"),
        (["--ckpt_path", "m.ckpt", "--bin", "a.bin"], "--ckpt_path applies to --config"),
        (["--bin", "a.bin", "--mean", "1", "2"], "--mean takes one value or three"),
    ],
)
def test_model_argument_errors(data, extra, message, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(data["pth"]), *extra, "--explainers", "gradcam", "--out", str(out), *FAST]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]
    assert not out.exists()


def test_config_and_model_options_do_not_mix(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"give --config .* or --model"):
        evaluate_main(["--explainers", "gradcam", *FAST])
    with pytest.raises(ValueError, match="--bin only apply with --model"):
        evaluate_main(["--config", str(tmp_path / "c.yaml"), "--bin", "a.bin", "--explainers", "gradcam", *FAST])


def test_report_names_the_users_file_not_the_default_backbone(tmp_path: Path) -> None:
    from facexai.evaluate.inputs import describe_module
    from facexai.models import VerificationModule
    from tests.thirdparty.arcface_torch import make_arcface_model, save_state_dict

    path = save_state_dict(make_arcface_model(side=32), tmp_path / "backbone.pth")
    assert describe_module(VerificationModule(pretrained=str(path), num_identities=4)) == f"VerificationModule({path})"
    assert (
        describe_module(VerificationModule(backbone="iresnet_mini", num_identities=4))
        == "VerificationModule(iresnet_mini)"
    )
