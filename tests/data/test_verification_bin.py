"""insightface verification .bin sets: round trips, Python 2 pickles, and refusing hostile pickles."""

from __future__ import annotations

import pickle
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from facexai.data import verification_bin
from facexai.data.recordio import encode_image
from facexai.data.verification_bin import (
    VerificationBinDataset,
    VerificationBinError,
    load_verification_bin,
    read_verification_bin,
    write_verification_bin,
)

ISSAME = [True, False, True]


@pytest.fixture
def pairs() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8) for _ in range(2 * len(ISSAME))]


def _py2_pickle(images: list[bytes], issame: list[bool]) -> bytes:
    """What Python 2's ``pickle.dump((bins, issame), f, protocol=2)`` wrote: ``str`` as BINSTRING."""
    out = bytearray(b"\x80\x02]q\x00(")  # PROTO 2, EMPTY_LIST, BINPUT, MARK
    for data in images:
        out += b"T" + struct.pack("<i", len(data)) + data  # BINSTRING (py2 str)
    out += b"e]q\x01("  # APPENDS, EMPTY_LIST, BINPUT, MARK
    out += b"".join(b"\x88" if flag else b"\x89" for flag in issame)  # NEWTRUE / NEWFALSE
    out += b"e\x86q\x02."  # APPENDS, TUPLE2, BINPUT, STOP
    return bytes(out)


def test_round_trip_is_bit_exact_and_plain_pickle_compatible(tmp_path: Path, pairs) -> None:
    path = write_verification_bin(tmp_path / "lfw.bin", pairs, ISSAME)
    images, issame = load_verification_bin(path)
    assert issame == ISSAME
    assert all(np.array_equal(got, want) for got, want in zip(images, pairs, strict=True))
    with path.open("rb") as fh:  # what insightface's load_bin does
        bins, flags = pickle.load(fh)
    assert all(isinstance(b, bytes) for b in bins)
    assert flags == ISSAME


def test_python2_pickle_loads_as_bytes(tmp_path: Path, pairs) -> None:
    encoded = [encode_image(im) for im in pairs]
    path = tmp_path / "py2.bin"
    path.write_bytes(_py2_pickle(encoded, ISSAME))
    with pytest.raises(UnicodeDecodeError):  # the classic Python 3 pitfall with these files
        pickle.loads(path.read_bytes())
    images, issame = load_verification_bin(path)
    assert issame == ISSAME
    assert np.array_equal(images[5], pairs[5])


def test_bytearray_images_are_accepted(tmp_path: Path, pairs) -> None:
    path = tmp_path / "ba.bin"
    path.write_bytes(pickle.dumps(([bytearray(encode_image(im)) for im in pairs], ISSAME), protocol=5))
    images, _ = load_verification_bin(path)
    assert np.array_equal(images[0], pairs[0])


class _CreatesFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path: Path, pairs) -> None:
    target = tmp_path / "pwned"
    payload = pickle.dumps(([_CreatesFile(target)] + [encode_image(im) for im in pairs[1:]], ISSAME))
    path = tmp_path / "evil.bin"
    path.write_bytes(payload)

    with pytest.raises(ValueError, match=r"evil\.bin: unsafe .*refusing global"):
        load_verification_bin(path)
    with pytest.raises(ValueError, match=r"evil\.bin"):
        VerificationBinDataset(path)
    assert not target.exists()

    pickle.loads(payload)  # proof that the fixture really is hostile under plain pickle
    assert target.exists()


def test_numpy_contents_are_refused_with_a_clear_error(tmp_path: Path, pairs) -> None:
    path = tmp_path / "np.bin"
    path.write_bytes(pickle.dumps(([encode_image(im) for im in pairs], np.array(ISSAME))))
    with pytest.raises(ValueError, match=r"np\.bin: unsafe .*numpy"):
        load_verification_bin(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (pickle.dumps([b"x", b"y", b"z"]), "expected a pickled pair"),
        (pickle.dumps(([b"x"], [True])), "1 images for 1 pairs"),
        (pickle.dumps(([b"x", "y"], [True])), "image 1 is str"),
        (pickle.dumps(([b"x", b"y"], ["yes"])), r"issame\[0\]"),
        (b"not a pickle at all", "not a readable verification .bin"),
    ],
    ids=["not-a-pair", "count-mismatch", "str-image", "non-bool-issame", "not-a-pickle"],
)
def test_malformed_files_name_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_verification_bin(path)
    assert "bad.bin" in str(info.value)


def test_undecodable_image_names_file_and_index(tmp_path: Path, pairs) -> None:
    path = write_verification_bin(tmp_path / "x.bin", [encode_image(im) for im in pairs[:3]] + [b"junk"], ISSAME[:2])
    with pytest.raises(ValueError, match=r"x\.bin: image 3 .*cannot be decoded"):
        load_verification_bin(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.bin"):
        load_verification_bin(tmp_path / "nope.bin")


def test_dataset_yields_normalised_pairs(tmp_path: Path, pairs) -> None:
    ds = VerificationBinDataset(write_verification_bin(tmp_path / "cfp_fp.bin", pairs, ISSAME), image_size=16)
    assert len(ds) == 3
    assert ds.name == "cfp_fp"
    item = ds[1]
    expected_b = (torch.from_numpy(pairs[3]).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.equal(item["image_b"], expected_b)
    assert item["image_a"].shape == (3, 16, 16)
    assert item["image_a"].dtype == torch.float32
    assert item["issame"].dtype == torch.bool
    assert not item["issame"].item()
    with pytest.raises(IndexError):
        ds[3]


def test_dataset_resizes_to_image_size(tmp_path: Path, pairs) -> None:
    ds = VerificationBinDataset(write_verification_bin(tmp_path / "s.bin", pairs, ISSAME), image_size=8)
    assert ds[0]["image_a"].shape == (3, 8, 8)


# --------------------------------------------------------------------------- hostile files (issue 14)


def _frame_free(*parts: bytes) -> bytes:
    """A protocol-4 pickle assembled from raw opcodes (no FRAME), ending in STOP."""
    return b"\x80\x04" + b"".join(parts) + b"."


def _u8(value: int) -> bytes:
    return struct.pack("<Q", value)


def _u4(value: int) -> bytes:
    return struct.pack("<I", value)


def _memo_bomb(image_bytes: int, references: int) -> bytes:
    """One bytearray memoised once and referenced ``references`` times (BINGET), plus matching flags."""
    images = b"](\x96" + _u8(image_bytes) + b"\0" * image_bytes + b"\x94" + b"h\x00" * (references - 1) + b"e"
    flags = b"](" + b"\x88" * (references // 2) + b"e"
    return _frame_free(images, flags, b"\x86")


def _peak_while(read) -> int:
    tracemalloc.start()
    try:
        read()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_memo_references_to_one_image_are_refused_without_expanding(tmp_path: Path) -> None:
    # Before: this 1 MB file loaded as 300 images and grew memory by ~301 MB.
    path = tmp_path / "memo.bin"
    path.write_bytes(_memo_bomb(10**6, 300))
    size = path.stat().st_size

    def read() -> None:
        with pytest.raises(
            VerificationBinError, match=r"memo\.bin: the images hold 300000000 bytes .* only 100\d{4} bytes"
        ):
            read_verification_bin(path)

    assert _peak_while(read) < 3 * size


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_frame_free(b"\x8e" + _u8(2**40) + b"abc"), "BINBYTES8"),  # 1 TB bytes
        (_frame_free(b"\x8d" + _u8(2**40) + b"abc"), "BINUNICODE8"),
        (_frame_free(b"\x96" + _u8(2**40) + b"abc"), "BYTEARRAY8"),
        (_frame_free(b"B" + _u4(2**31 - 1) + b"abc"), "BINBYTES"),
        (b"\x80\x04\x95" + _u8(2**40) + b"].", "FRAME"),
        (_frame_free(b"]r" + _u4(2**32 - 1)), "memo index 4294967295"),  # a 32 GiB memo table
        (_frame_free(b"(" * 10_000), "MARK"),
    ],
    ids=["bytes8", "unicode8", "bytearray8", "bytes4", "frame", "memo-index", "nested-marks"],
)
def test_huge_lengths_are_refused_before_allocating(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "huge.bin"
    path.write_bytes(content)
    with pytest.raises(VerificationBinError, match=message) as info:
        read_verification_bin(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (([b"x", b"y"], [2]), r"issame\[0\] is 2"),
        (([b"x", b"y"], ["1"]), r"issame\[0\] is '1'"),
        (([1, 2], [True]), "image 0 is int"),
        (([[b"x"], [b"y"]], [True]), "image 0 is list"),
        (([b"x", b"y"], [[True]]), r"issame\[0\] is \[True\]"),
        (({"images": [b"x", b"y"]}, [True]), "EMPTY_DICT"),
        (([b"x", b"y"], {True}), "EMPTY_SET"),
        (([b"x", b"y"], [1.0]), "BINFLOAT"),
        ([[b"x", b"y"], [True], None], "expected a pickled pair"),
        ((b"xy", [True]), "images must be a list, got bytes"),
    ],
    ids=[
        "int-flag",
        "str-flag",
        "int-images",
        "nested-images",
        "nested-flags",
        "dict",
        "set",
        "float",
        "triple",
        "bytes",
    ],
)
def test_wrong_types_inside_the_pickle_raise_the_readers_error(tmp_path: Path, obj: object, message: str) -> None:
    path = tmp_path / "types.bin"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(VerificationBinError, match=message) as info:
        read_verification_bin(path)
    assert "types.bin" in str(info.value)


def test_big_flag_objects_are_not_copied_into_the_message(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(pickle.dumps(([b"x", b"y"], [b"z" * 100_000]), protocol=4))
    with pytest.raises(VerificationBinError) as info:
        read_verification_bin(path)
    assert len(str(info.value)) < 300


def test_undecodable_image_raises_the_readers_error(tmp_path: Path, pairs) -> None:
    path = write_verification_bin(tmp_path / "x.bin", [encode_image(im) for im in pairs[:3]] + [b"junk"], ISSAME[:2])
    with pytest.raises(VerificationBinError, match=r"image 3"):
        load_verification_bin(path)
    assert issubclass(VerificationBinError, ValueError)


def test_failed_write_keeps_the_previous_file(tmp_path: Path, pairs, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_verification_bin(tmp_path / "lfw.bin", pairs, ISSAME)
    before = path.read_bytes()

    def dump_then_fail(obj: object, fh, protocol: int) -> None:
        fh.write(b"half a pickle")
        raise OSError("disk full")

    monkeypatch.setattr(verification_bin.pickle, "dump", dump_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_verification_bin(path, pairs[::-1], ISSAME)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["lfw.bin"]  # no temporary left behind
