"""``python -m facexai explain``: one pair of crops through a user's model file, end to end.

The model files are written the way arcface_torch users have them (tests/thirdparty), not by
facexai: a plain ``torch.save(state_dict)`` and the torch2onnx-style ONNX export.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facexai import cli
from facexai.callbacks.overlays import CAPTION_HEIGHT, PAD
from facexai.data.transforms import normalise
from facexai.explain_pair import FAME_CLI_ITERATIONS, explain_main, explainer_options
from facexai.files import load_image
from tests.thirdparty.arcface_torch import export_like_torch2onnx, face_batch, make_arcface_model, save_state_dict

SIDE = 112
QUIET = ["--no-progress", "--device", "cpu"]
FAST_FAME = ["--explainer-options", '{"fame": {"iterations": 3}}', *QUIET]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A narrow arcface_torch IResNet as .pth and .onnx, and two face crops as PNGs."""
    root = tmp_path_factory.mktemp("explain")
    model = make_arcface_model(side=SIDE)
    faces = ((face_batch(2, SIDE, seed=3) * 0.5 + 0.5) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    paths = {"a": root / "alice.png", "b": root / "bob.png", "small": root / "small.png"}
    Image.fromarray(faces[0]).save(paths["a"])
    Image.fromarray(faces[1]).save(paths["b"])
    Image.fromarray(faces[1]).resize((80, 80)).save(paths["small"])
    paths["pth"] = save_state_dict(model, root / "backbone.pth")
    paths["onnx"] = export_like_torch2onnx(model, root / "model.onnx", side=SIDE)
    paths["model"] = model
    return paths


def direct_cosine(model: torch.nn.Module, path_a: Path, path_b: Path, bgr: bool = False) -> float:
    """The pair's cosine computed on the third-party network itself, not through facexai's loader."""
    faces = torch.stack([normalise(load_image(path_a)), normalise(load_image(path_b))])
    faces = faces.flip(1) if bgr else faces
    with torch.no_grad():
        emb = model.eval()(faces)
    return float(torch.nn.functional.cosine_similarity(emb[:1], emb[1:]))


def expected_png_size(tile: int) -> tuple[int, int]:
    """(width, height) of [A | map A | B | map B] x (e+, e-) rows under a title band (compose_grid)."""
    width = 4 * (tile + PAD) + PAD
    height = CAPTION_HEIGHT + 2 * (CAPTION_HEIGHT + tile + PAD) + PAD
    return width, height


@pytest.mark.parametrize("kind", ["onnx", "pth"])
def test_explain_writes_one_png_per_explainer(files, kind, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["explain", "--model", str(files[kind]), str(files["a"]), str(files["b"]), "--out", str(out), *FAST_FAME]
    assert cli.main(argv) == 0
    stdout = capsys.readouterr().out
    similarity = float(re.search(r"similarity (-?\d+\.\d+)", stdout).group(1))
    # printed with 4 decimals; the ONNX path is a converted graph checked to cosine 0.9999
    assert similarity == pytest.approx(direct_cosine(files["model"], files["a"], files["b"]), abs=1e-3)
    written = sorted(out.iterdir())
    assert [p.name for p in written] == [f"alice_vs_bob_{name}.png" for name in ("fame", "fgcam", "liftcam")]
    for path in written:
        assert f"wrote {path}" in stdout
        with Image.open(path) as image:
            assert image.size == expected_png_size(112)
            pixels = np.asarray(image.convert("RGB"))
        # the A tile of the e+ row shows the input crop itself (display = denormalised input)
        y, x = CAPTION_HEIGHT + CAPTION_HEIGHT + PAD, PAD
        crop = pixels[y : y + 112, x : x + 112].astype(int)
        assert np.abs(crop - load_image(files["a"]).astype(int)).mean() < 2


def test_layout_flags_reach_the_loader(files, tmp_path, capsys) -> None:
    # --channel-order BGR says the network wants BGR: the printed similarity must be the network's
    # cosine on channel-flipped faces, which differs from the RGB one on these colourful crops.
    argv = [
        "--model",
        str(files["pth"]),
        str(files["a"]),
        str(files["b"]),
        "--explainers",
        "liftcam",
        "--channel-order",
        "bgr",
        "--out",
        str(tmp_path / "out"),
        *QUIET,
    ]
    assert explain_main(argv) == 0
    similarity = float(re.search(r"similarity (-?\d+\.\d+)", capsys.readouterr().out).group(1))
    bgr = direct_cosine(files["model"], files["a"], files["b"], bgr=True)
    assert similarity == pytest.approx(bgr, abs=1e-3)
    assert abs(bgr - direct_cosine(files["model"], files["a"], files["b"])) > 1e-2


def test_other_sizes_are_resized_with_a_warning(files, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = [
        "--model",
        str(files["pth"]),
        str(files["a"]),
        str(files["small"]),
        "--explainers",
        "liftcam",
        "--out",
        str(out),
        "--tile-size",
        "64",
        *QUIET,
    ]
    assert explain_main(argv) == 0
    assert "small.png is 80x80, resized to the model's 112x112 input" in capsys.readouterr().err
    with Image.open(out / "alice_vs_small_liftcam.png") as image:
        assert image.size == expected_png_size(64)


def test_fame_defaults_to_the_cli_iteration_count() -> None:
    assert explainer_options("{}", ["fame", "liftcam"]) == {"fame": {"iterations": FAME_CLI_ITERATIONS}}
    assert explainer_options('{"fame": {"iterations": 7}}', ["fame"]) == {"fame": {"iterations": 7}}
    renamed = explainer_options('{"quick": {"method": "fame"}}', ["quick"])
    assert renamed == {"quick": {"iterations": FAME_CLI_ITERATIONS, "method": "fame"}}


def _bad_inputs(files: dict, tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    broken_image = tmp_path / "broken.png"
    broken_image.write_bytes(b"\x89PNG not really")
    broken_model = tmp_path / "broken.onnx"
    broken_model.write_bytes(b"this is not a model")
    model, a, b = str(files["pth"]), str(files["a"]), str(files["b"])
    return {
        "image": (["--model", model, a, str(broken_image)], "broken.png"),
        "missing image": (["--model", model, a, str(tmp_path / "nope.png")], "nope.png"),
        "explainer": (["--model", model, a, b, "--explainers", "liftcam", "gradkam"], "Available: "),
        "model": (["--model", str(broken_model), a, b], "broken.onnx"),
        "missing model": (["--model", str(tmp_path / "none.pth"), a, b], "none.pth"),
        "layout": (["--model", model, a, b, "--mean", "1", "2"], "--mean takes one value or three"),
    }


@pytest.mark.parametrize("case", ["image", "missing image", "explainer", "model", "missing model", "layout"])
def test_bad_input_is_one_line_and_writes_nothing(files, case, tmp_path, capsys) -> None:
    argv, needle = _bad_inputs(files, tmp_path)[case]
    out = tmp_path / "out"
    assert cli.main(["explain", *argv, "--out", str(out), *QUIET]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("facexai: error: ")
    assert needle in err[0]
    if case == "explainer":
        assert all(name in err[0] for name in ("fame", "fgcam", "liftcam", "gradcam"))
    assert not out.exists()


def test_output_may_not_be_an_input(files, tmp_path, capsys) -> None:
    """--out equal to a crop or to the model file is refused before anything is read or written."""
    base = ["explain", "--model", str(files["pth"]), str(files["a"]), str(files["b"]), "--explainers", "liftcam"]
    before = {key: files[key].read_bytes() for key in ("a", "pth")}
    for key in before:
        assert cli.main([*base, "--out", str(files[key]), *QUIET]) == 2
        err = capsys.readouterr().err
        assert (
            err == f"facexai: error: --out {files[key]} would overwrite the input {files[key]}; "
            "choose a different path\n"
        )
    assert {key: files[key].read_bytes() for key in before} == before


def test_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["explain", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--model" in out
    assert "--channel-order" in out
    assert "image_a" in out
