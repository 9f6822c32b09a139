"""insightface verification .bin sets: round trips, Python 2 pickles, and refusing hostile pickles."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from facexai.data.recordio import encode_image
from facexai.data.verification_bin import (
    VerificationBinDataset,
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
    assert all(isinstance(b, bytes) for b in bins) and flags == ISSAME


def test_python2_pickle_loads_as_bytes(tmp_path: Path, pairs) -> None:
    encoded = [encode_image(im) for im in pairs]
    path = tmp_path / "py2.bin"
    path.write_bytes(_py2_pickle(encoded, ISSAME))
    with pytest.raises(UnicodeDecodeError):  # the classic Python 3 pitfall with these files
        pickle.loads(path.read_bytes())
    images, issame = load_verification_bin(path)
    assert issame == ISSAME and np.array_equal(images[5], pairs[5])


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
    assert len(ds) == 3 and ds.name == "cfp_fp"
    item = ds[1]
    expected_b = (torch.from_numpy(pairs[3]).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.equal(item["image_b"], expected_b)
    assert item["image_a"].shape == (3, 16, 16) and item["image_a"].dtype == torch.float32
    assert item["issame"].dtype == torch.bool and not item["issame"].item()
    with pytest.raises(IndexError):
        ds[3]


def test_dataset_resizes_to_image_size(tmp_path: Path, pairs) -> None:
    ds = VerificationBinDataset(write_verification_bin(tmp_path / "s.bin", pairs, ISSAME), image_size=8)
    assert ds[0]["image_a"].shape == (3, 8, 8)
