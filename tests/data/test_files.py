"""facexai.files against hostile inputs: pairs escaping the image root, decompression bombs (issue 14)."""

from __future__ import annotations

import io
import re
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facexai import files
from facexai.files import ImageFileError, PairsFileError, load_image, read_pairs


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) claims ``width`` x ``height``; the pixel data is missing."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("/etc/passwd rel/b.jpg 1", "/etc/passwd"),
        ("../outside.jpg rel/b.jpg 0", "../outside.jpg"),
        ("rel/a.jpg rel/../../outside.jpg 1", "rel/../../outside.jpg"),
        ("../../etc 1 2", "../../etc/../../etc_0001.jpg"),
        ("alice 1 /abs 2", "/abs//abs_0002.jpg"),
        ("rel\\..\\..\\x.jpg rel/b.jpg 1", "rel\\..\\..\\x.jpg"),
    ],
    ids=["absolute", "dotdot", "inner-dotdot", "lfw-name", "lfw-impostor", "backslash"],
)
def test_pairs_outside_the_image_root_are_refused(tmp_path: Path, line: str, shown: str) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("rel/a.jpg rel/b.jpg 1\n" + line + "\n")
    with pytest.raises(
        PairsFileError, match=rf"pairs\.txt:2: {re.escape(shown)} points outside the image root"
    ) as info:
        read_pairs(pairs, tmp_path / "root", check_files=False)
    assert "allow_outside_root" in str(info.value)


def test_allow_outside_root_keeps_such_paths(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("/data/a.jpg ../b.jpg 1\n")
    got = read_pairs(pairs, tmp_path / "root", check_files=False, allow_outside_root=True)
    assert got[0].path_a == Path("/data/a.jpg")
    assert got[0].path_b == tmp_path / "root" / ".." / "b.jpg"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a.jpg b.jpg 1\n\xff\xfe broken\n", r"not UTF-8 text"),
        ("alice \u00b2 3\n".encode(), r"pairs\.txt:1"),  # '²'.isdigit() but int('²') fails
        (("alice 1 " + "9" * 5000 + "\n").encode(), r"pairs\.txt:1"),
        (b"a.jpg b\x00.jpg 1\n", r"pairs\.txt:1: .*NUL"),
    ],
    ids=["not-utf8", "superscript-digit", "5000-digits", "nul-byte"],
)
def test_malformed_pairs_raise_the_readers_error(tmp_path: Path, content: bytes, message: str) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_bytes(content)
    with pytest.raises(PairsFileError, match=message) as info:
        read_pairs(pairs, tmp_path)
    assert len(str(info.value)) < 400


def test_pairs_error_is_a_value_error() -> None:
    assert issubclass(PairsFileError, ValueError)
    assert issubclass(ImageFileError, ValueError)


def test_decompression_bomb_is_refused_with_the_file_name(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(20_000, 20_000))  # 400 MP: PIL's own DecompressionBombError range
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no DecompressionBombWarning either
        with pytest.raises(ImageFileError, match=r"bomb\.png: .*400000000 pixels.*MAX_IMAGE_PIXELS"):
            load_image(bomb)


def test_images_between_our_limit_and_pils_are_refused_too(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(11_000, 11_000))  # 121 MP: PIL only warns, we refuse
    with pytest.raises(ImageFileError, match=r"big\.png: 11000x11000"):
        load_image(big)


def test_pixel_limit_allows_ordinary_photos_and_is_read_at_call_time(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "face.png"
    Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(path)
    assert load_image(path).shape == (30, 20, 3)
    assert files.MAX_IMAGE_PIXELS >= 50_000_000  # a 50 MP camera photo loads
    monkeypatch.setattr(files, "MAX_IMAGE_PIXELS", 599)
    with pytest.raises(ImageFileError, match=r"face\.png: 20x30 .*600 pixels"):
        load_image(path)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "CMYK", "1"])
def test_every_pillow_mode_reads_as_rgb_uint8(tmp_path: Path, mode: str) -> None:
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    Image.new(mode, (5, 4)).save(path)
    image = load_image(path)
    assert image.dtype == np.uint8
    assert image.shape == (4, 5, 3)


def test_overlong_names_are_reported_missing_not_as_oserror(tmp_path: Path) -> None:
    # test_fuzz_pairs token cases 9/17 (seed 14): Path.is_file raised OSError(ENAMETOOLONG)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a" * 300 + " 1 2\n")
    with pytest.raises(FileNotFoundError, match=r"pairs\.txt references 2 missing images"):
        read_pairs(pairs, tmp_path)


def test_png_chunk_length_past_the_file_is_refused_without_allocating_it(tmp_path: Path) -> None:
    # test_fuzz_images slow case 115 (flip_bits, seed 1414): one flipped bit made an IDAT length
    # of 512 MiB, and Pillow's read of the file allocated all of it before failing
    path = tmp_path / "flipped.png"
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[33] ^= 0x20  # high byte of the IDAT length
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(ImageFileError, match=r"flipped\.png: a PNG chunk runs past the end"):
            load_image(path)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 1 << 20
