"""Five-point alignment: matches insightface's norm_crop and puts landmarks on the template."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("insightface")
from insightface.utils import face_align

from facexai import files
from facexai.data import align
from facexai.data.align import LandmarksFileError, align_face, align_folder, alignment_matrix, read_landmarks
from facexai.files import ImageFileError
from facexai.writing import OverwriteInputError

TEMPLATE = face_align.arcface_dst.astype(np.float64)


def _similarity(points: np.ndarray, scale: float, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    angle = math.radians(degrees)
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return points @ rotation.T + np.asarray(shift)


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, np.ndarray]:
    """A 240x240 image with a bright dot on each of five landmarks (a rotated, scaled template)."""
    landmarks = _similarity(TEMPLATE, scale=1.6, degrees=12.0, shift=(40.0, 20.0)).astype(np.float32)
    image = np.full((240, 240, 3), 20, dtype=np.uint8)
    for x, y in landmarks:
        cv2.circle(image, (round(float(x)), round(float(y))), 4, (255, 255, 255), thickness=-1)
    return image, landmarks


def test_align_face_equals_norm_crop(face) -> None:
    image, landmarks = face
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecation inside insightface
        expected = face_align.norm_crop(image, landmarks, image_size=112)
    assert np.array_equal(align_face(image, landmarks), expected)


@pytest.mark.parametrize(("size", "scale", "dx"), [(112, 1.0, 0.0), (224, 2.0, 0.0), (128, 1.0, 8.0)])
def test_matrix_maps_landmarks_onto_template(face, size: int, scale: float, dx: float) -> None:
    _, landmarks = face
    matrix = alignment_matrix(landmarks, size)
    mapped = np.c_[landmarks, np.ones(5)] @ matrix.T
    expected = TEMPLATE * scale + np.array([dx, 0.0])
    np.testing.assert_allclose(mapped, expected, atol=1e-3)


def test_dots_land_on_template_points(face) -> None:
    image, landmarks = face
    aligned = align_face(image, landmarks)
    mask = (aligned[..., 0] > 128).astype(np.uint8)
    count, _, _, centroids = cv2.connectedComponentsWithStats(mask)
    assert count == 6  # background + five dots
    found = centroids[1:]
    for point in TEMPLATE:
        assert np.min(np.linalg.norm(found - point, axis=1)) < 1.0


@pytest.mark.parametrize(
    ("landmarks", "size", "message"),
    [
        (np.zeros((4, 2)), 112, r"shape \(5, 2\)"),
        (np.full((5, 2), np.nan), 112, "finite"),
        (np.zeros((5, 2)), 100, "112 or 128"),
    ],
)
def test_invalid_inputs(face, landmarks: np.ndarray, size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        align_face(face[0], landmarks, size)


# --------------------------------------------------------------------------- landmark files


def _row(name: str, points: np.ndarray) -> str:
    return ",".join([name] + [f"{v:.4f}" for v in points.reshape(-1)])


def test_read_landmarks_csv_with_and_without_header(tmp_path: Path, face) -> None:
    _, landmarks = face
    with_header = tmp_path / "a.csv"
    with_header.write_text("filename,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n" + _row("p/a.png", landmarks) + "\n\n")
    without = tmp_path / "b.csv"
    without.write_text(_row("b.png", landmarks) + "\n")
    got = read_landmarks(with_header)
    assert list(got) == ["p/a.png"]
    assert got["p/a.png"].shape == (5, 2)
    np.testing.assert_allclose(got["p/a.png"], landmarks, atol=1e-4)
    assert list(read_landmarks(without)) == ["b.png"]


def test_read_landmarks_json(tmp_path: Path, face) -> None:
    path = tmp_path / "l.json"
    path.write_text(json.dumps({"x.png": face[1].tolist()}))
    np.testing.assert_allclose(read_landmarks(path)["x.png"], face[1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png,1,2,3\n", r"line 1: expected 11 columns"),
        ("a.png," + ",".join(["1"] * 10) + "\nb.png,1,2,3,4,5,6,7,8,9,x\n", r"line 2: coordinates must be numbers"),
        ("a.png," + ",".join(["1"] * 10) + "\na.png," + ",".join(["2"] * 10) + "\n", r"line 2: duplicate"),
        ("../a.png," + ",".join(["1"] * 10) + "\n", r"line 1: .*without '\.\.'"),
        ("a.png," + ",".join(["inf"] * 10) + "\n", r"line 1: coordinates must be finite"),
    ],
)
def test_malformed_csv_rows_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_landmarks(path)
    assert "bad.csv" in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "expected an object"),
        ({"a.png": [[1, 2]] * 4}, r"'a.png': expected five"),
        ({"a.png": [[1, "2"]] * 5}, "numbers"),
    ],
)
def test_malformed_json_names_file_and_entry(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        read_landmarks(path)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text("")
    with pytest.raises(ValueError, match=r"use \.csv or \.json"):
        read_landmarks(path)


# --------------------------------------------------------------------------- folders


@pytest.fixture
def src(tmp_path: Path, face) -> Path:
    image, _ = face
    root = tmp_path / "src"
    (root / "id0").mkdir(parents=True)
    cv2.imwrite(str(root / "id0" / "a.png"), image)
    cv2.imwrite(str(root / "b.png"), image[:, ::-1])
    return root


def test_align_folder_writes_aligned_images(tmp_path: Path, src: Path, face) -> None:
    image, landmarks = face
    flipped = landmarks.copy()
    flipped[:, 0] = image.shape[1] - 1 - flipped[:, 0]
    flipped = flipped[[1, 0, 2, 4, 3]]  # mirror: left/right swap
    csv_path = tmp_path / "l.csv"
    csv_path.write_text(_row("id0/a.png", landmarks) + "\n" + _row("b.png", flipped) + "\n")
    dst = tmp_path / "dst"
    assert align_folder(src, csv_path, dst, image_size=112) == 2
    out = cv2.imread(str(dst / "id0" / "a.png"))
    assert out.shape == (112, 112, 3)
    expected = align_face(cv2.imread(str(src / "id0" / "a.png")), read_landmarks(csv_path)["id0/a.png"])
    assert np.array_equal(out, expected)
    assert cv2.imread(str(dst / "b.png")).shape == (112, 112, 3)


def test_align_folder_missing_image_is_named_and_nothing_written(tmp_path: Path, src: Path, face) -> None:
    csv_path = tmp_path / "l.csv"
    rows = [_row(name, face[1]) for name in ("id0/a.png", "b.png", "id0/ghost.png")]
    csv_path.write_text("\n".join(rows) + "\n")
    with pytest.raises(FileNotFoundError, match=r"l\.csv: 1 listed image\(s\) not found .*id0/ghost\.png"):
        align_folder(src, csv_path, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_align_folder_image_without_row_is_named(tmp_path: Path, src: Path, face) -> None:
    csv_path = tmp_path / "l.csv"
    csv_path.write_text(_row("id0/a.png", face[1]) + "\n")
    with pytest.raises(ValueError, match=r"1 image\(s\) have no landmark row in .*l\.csv: b\.png"):
        align_folder(src, csv_path, tmp_path / "dst")


# --------------------------------------------------------------------------- hostile inputs (issue 14)


@pytest.mark.parametrize("inside", [False, True], ids=["dst-is-src", "dst-inside-src"])
def test_align_refuses_to_write_over_its_source(tmp_path: Path, src: Path, face, inside: bool) -> None:
    csv_path = tmp_path / "l.csv"
    csv_path.write_text(_row("id0/a.png", face[1]) + "\n" + _row("b.png", face[1]) + "\n")
    before = (src / "id0" / "a.png").read_bytes()
    with pytest.raises(OverwriteInputError, match=r"would overwrite the input"):
        align_folder(src, csv_path, src / "aligned" if inside else src)
    assert (src / "id0" / "a.png").read_bytes() == before
    assert not (src / "aligned").exists()


def test_failed_write_keeps_the_previous_aligned_image(tmp_path: Path, src: Path, face, monkeypatch) -> None:
    csv_path = tmp_path / "l.csv"
    csv_path.write_text(_row("id0/a.png", face[1]) + "\n" + _row("b.png", face[1]) + "\n")
    dst = tmp_path / "dst"
    align_folder(src, csv_path, dst)
    before = (dst / "id0" / "a.png").read_bytes()

    def write_half(path: str, image: np.ndarray) -> bool:
        Path(path).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(align.cv2, "imwrite", write_half)
    with pytest.raises(KeyboardInterrupt):
        align_folder(src, csv_path, dst)
    assert (dst / "id0" / "a.png").read_bytes() == before
    assert sorted(p.name for p in (dst / "id0").iterdir()) == ["a.png"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a.png,1,2,3,4,5,6,7,8,9,10\n\xff\xfe\n", r"not UTF-8 text"),
        (("a.png," + "1" * 200_000 + ",2,3,4,5,6,7,8,9,10\n").encode(), r"line 1: .*field"),
        (b'{"a.png": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", r"nested too deeply|not valid JSON"),
        (b'{"a.png": [[1, ' + b"9" * 5000 + b"], [1, 2], [1, 2], [1, 2], [1, 2]]}", r"not valid JSON"),
    ],
    ids=["not-utf8", "csv-field-too-long", "json-deep", "json-5000-digits"],
)
def test_malformed_landmark_files_raise_the_readers_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / ("bad.json" if content.startswith(b"{") else "bad.csv")
    path.write_bytes(content)
    with pytest.raises(LandmarksFileError, match=message) as info:
        read_landmarks(path)
    assert path.name in str(info.value)
    assert len(str(info.value)) < 400


def test_landmarks_error_is_a_value_error() -> None:
    assert issubclass(LandmarksFileError, ValueError)


def test_decompression_bomb_source_is_refused(tmp_path: Path, face, monkeypatch) -> None:
    root = tmp_path / "src"
    root.mkdir()
    cv2.imwrite(str(root / "a.png"), face[0])  # 240 x 240 = 57600 pixels
    csv_path = tmp_path / "l.csv"
    csv_path.write_text(_row("a.png", face[1]) + "\n")
    monkeypatch.setattr(files, "MAX_IMAGE_PIXELS", 57_599)
    with pytest.raises(ImageFileError, match=r"a\.png: .*240x240 .*57600 pixels"):
        align_folder(root, csv_path, tmp_path / "dst")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("l.csv", "a.png,1e39," + ",".join(["1"] * 9) + "\n"),
        ("l.json", json.dumps({"a.png": [[1e308, 1]] + [[1, 2]] * 4})),
    ],
    ids=["csv", "json"],
)
def test_coordinates_that_overflow_float32_are_refused(tmp_path: Path, name: str, content: str) -> None:
    # test_fuzz_landmarks: finite as float64, inf once stored as float32 (and returned as such)
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LandmarksFileError, match=r"coordinates must be finite"):
        read_landmarks(path)
