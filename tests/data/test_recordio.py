"""MXNet indexed RecordIO: bit-exact round trips, the insightface layout, corruption handling."""

from __future__ import annotations

import logging
import pickle
import resource
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from facexai import files
from facexai.data.recordio import (
    MAGIC,
    IndexedRecordReader,
    RecordIODataset,
    RecordIOError,
    RecordIOWriter,
    decode_image,
    encode_image,
    frame_record,
    pack_image_folder,
    pack_payload,
    unpack_payload,
    write_face_records,
)
from facexai.files import ImageFileError
from facexai.writing import OverwriteInputError

COUNTS = (2, 1, 3)  # images per identity


def _image(rng: np.random.Generator, h: int = 12, w: int = 10) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture
def face_folder(tmp_path: Path) -> tuple[Path, list[np.ndarray], list[int]]:
    """identity subfolders with PNG files (lossless, so decoded arrays must match exactly)."""
    rng = np.random.default_rng(0)
    root, images, labels = tmp_path / "faces", [], []
    for label, count in enumerate(COUNTS):
        (root / f"id{label}").mkdir(parents=True)
        for i in range(count):
            image = _image(rng)
            cv2.imwrite(str(root / f"id{label}" / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            images.append(image)
            labels.append(label)
    (root / "id0" / "notes.txt").write_text("ignored")
    return root, images, labels


@pytest.fixture
def packed(tmp_path: Path, face_folder) -> tuple[Path, list[np.ndarray], list[int]]:
    root, images, labels = face_folder
    pack_image_folder(root, tmp_path / "rec")
    return tmp_path / "rec", images, labels


def _idx_lines(root: Path) -> list[tuple[int, int]]:
    return [tuple(map(int, line.split("\t"))) for line in (root / "train.idx").read_text().splitlines()]


def _offset(root: Path, key: int) -> int:
    return dict(_idx_lines(root))[key]


# --------------------------------------------------------------------------- round trips


def test_pack_image_folder_round_trip_is_bit_exact(packed) -> None:
    root, images, labels = packed
    ds = RecordIODataset(root)
    assert len(ds) == len(images) == sum(COUNTS)
    assert ds.num_classes == len(COUNTS)
    for i, (expected, label) in enumerate(zip(images, labels, strict=True)):
        image, got_label = ds.read_image(i)
        assert image.dtype == np.uint8
        assert np.array_equal(image, expected)
        assert got_label == label


def test_header_and_identity_records_follow_insightface_layout(packed) -> None:
    root, images, _ = packed
    reader = RecordIODataset(root).reader
    header, data = reader.read_header(0)
    n = len(images)
    assert header.flag == 2
    assert header.label == (n + 1, n + 1 + len(COUNTS))
    assert data == b""
    starts = np.cumsum((1, *COUNTS))
    for k in range(len(COUNTS)):
        identity, _ = reader.read_header(n + 1 + k)
        assert identity.label == (starts[k], starts[k + 1])
    assert [key for key, _ in _idx_lines(root)] == list(range(n + 1 + len(COUNTS)))


def test_pack_result_names_classes(tmp_path: Path, face_folder) -> None:
    result = pack_image_folder(face_folder[0], tmp_path / "out")
    assert result.num_images == sum(COUNTS)
    assert result.class_names == ("id0", "id1", "id2")
    assert result.num_classes == 3


def test_getitem_normalises_after_transform(packed) -> None:
    root, images, labels = packed
    item = RecordIODataset(root)[3]
    expected = (torch.from_numpy(images[3]).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert item["image"].dtype == torch.float32
    assert torch.equal(item["image"], expected)
    assert item["label"].dtype == torch.int64
    assert item["label"].item() == labels[3]

    flipped = RecordIODataset(root, transform=lambda im: im[:, ::-1])[3]["image"]
    assert torch.equal(flipped, expected.flip(-1))


def test_albumentations_compose_is_called_with_keyword(packed) -> None:
    albumentations = pytest.importorskip("albumentations")
    root, images, _ = packed
    ds = RecordIODataset(root, transform=albumentations.Compose([albumentations.HorizontalFlip(p=1.0)]))
    expected = (torch.from_numpy(images[0][:, ::-1].copy()).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.equal(ds[0]["image"], expected)


def test_transform_must_return_uint8_image(packed) -> None:
    ds = RecordIODataset(packed[0], transform=lambda im: im.astype(np.float32))
    with pytest.raises(TypeError, match="uint8"):
        ds[0]


MAGIC_BYTES = struct.pack("<I", MAGIC)


@pytest.mark.parametrize(
    "payload",
    [
        MAGIC_BYTES + b"abcd" + MAGIC_BYTES + b"xy" + MAGIC_BYTES + b"z" + MAGIC_BYTES,  # aligned + unaligned
        b"abcd" + MAGIC_BYTES,  # ends on the magic word: the last part is empty
        MAGIC_BYTES + MAGIC_BYTES + b"q",  # consecutive copies: an empty middle part
    ],
)
def test_records_containing_the_magic_word_are_split_and_rejoined(tmp_path: Path, payload: bytes) -> None:
    framed = frame_record(payload)
    assert struct.unpack("<I", framed[4:8])[0] >> 29 == 1  # first part of a multi-part record
    with RecordIOWriter(tmp_path) as writer:
        writer.write(5, pack_payload(1.0, payload))
        writer.write(6, pack_payload(2.0, b"tail"))
    reader = IndexedRecordReader(tmp_path / "train.rec", tmp_path / "train.idx")
    assert unpack_payload(reader.read(5))[1] == payload
    assert unpack_payload(reader.read(6))[1] == b"tail"


def test_dataset_without_header_uses_every_record(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = [_image(rng) for _ in range(3)]
    with RecordIOWriter(tmp_path) as writer:
        for key, (image, label) in enumerate(zip(images, (4, 0, 2), strict=True)):
            writer.write_image(key, image, label)
    ds = RecordIODataset(tmp_path)
    assert len(ds) == 3
    assert ds.num_classes == 5
    assert [ds.read_image(i)[1] for i in range(3)] == [4, 0, 2]
    assert np.array_equal(ds.read_image(2)[0], images[2])


def test_label_arrays_use_first_entry(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with RecordIOWriter(tmp_path) as writer:
        writer.write(0, pack_payload([3.0, 4.0]))
        writer.write_image(1, _image(rng), [0.0, 7.5])
        writer.write_image(2, _image(rng), [0.0, 1.0])
        writer.write(3, pack_payload([1.0, 3.0]))
    ds = RecordIODataset(tmp_path)
    assert len(ds) == 2
    assert ds.num_classes == 1
    assert ds[1]["label"].item() == 0


def test_write_face_records_requires_grouped_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="grouped by label"):
        write_face_records(tmp_path, [(_image(rng), 0), (_image(rng), 2)])


def test_pickled_dataset_reopens_its_file(packed) -> None:
    root, images, _ = packed
    ds = RecordIODataset(root)
    ds.read_image(0)  # opens the handle in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(clone.read_image(1)[0], images[1])


def test_dataloader_with_two_workers_reads_every_item(packed) -> None:
    root, _, labels = packed
    loader = DataLoader(RecordIODataset(root), batch_size=2, num_workers=2)
    got = torch.cat([batch["label"] for batch in loader]).tolist()
    assert got == labels


# --------------------------------------------------------------------------- corruption


def test_cut_rec_names_file_and_record(packed) -> None:
    root, images, _ = packed
    last = len(images)  # key of the last image record
    rec = root / "train.rec"
    rec.write_bytes(rec.read_bytes()[: _offset(root, last) + 20])
    ds = RecordIODataset(root)
    with pytest.raises(RecordIOError, match=rf"train\.rec: record {last} .*truncated"):
        ds[last - 1]


def test_rec_cut_before_a_record_fails_at_construction(packed) -> None:
    root, images, _ = packed
    rec = root / "train.rec"
    rec.write_bytes(rec.read_bytes()[: _offset(root, len(images))])
    with pytest.raises(ValueError, match=rf"train\.rec: record {len(images)} starts at offset .*past the end"):
        RecordIODataset(root)


def test_index_past_end_names_file_and_record(packed) -> None:
    root, _, _ = packed
    lines = [f"{k}\t{10**9 if k == 2 else off}" for k, off in _idx_lines(root)]
    (root / "train.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordIOError, match=r"train\.rec: record 2 starts at offset 1000000000"):
        RecordIODataset(root)


def test_bad_magic_names_file_and_record(packed) -> None:
    root, _, _ = packed
    _corrupt_magic(root, 3)
    with pytest.raises(RecordIOError, match=r"train\.rec: record 3 .*bad magic"):
        RecordIODataset(root)[2]


def _corrupt_magic(root: Path, key: int) -> None:
    with (root / "train.rec").open("r+b") as fh:
        fh.seek(_offset(root, key))
        fh.write(b"\0\0\0\0")


def test_undecodable_image_names_file_and_record(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path) as writer:
        writer.write_image(0, b"definitely not an image", 0)
    with pytest.raises(RecordIOError, match=r"train\.rec: record 0: image data .*cannot be decoded"):
        RecordIODataset(tmp_path)[0]


def test_malformed_index_line_names_file_and_line(packed) -> None:
    root, _, _ = packed
    (root / "train.idx").write_text("0\t0\n1 oops\n")
    with pytest.raises(RecordIOError, match=r"train\.idx: line 2"):
        RecordIODataset(root)


def test_missing_files_raise_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train\.rec"):
        RecordIODataset(tmp_path)


def test_pack_refuses_undecodable_image(face_folder, tmp_path: Path) -> None:
    root = face_folder[0]
    (root / "id1" / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(ValueError, match=r"broken\.png: not a decodable image"):
        pack_image_folder(root, tmp_path / "out")


def test_pack_names_an_image_above_the_pixel_limit(face_folder, tmp_path: Path) -> None:
    root = face_folder[0]
    (root / "id1" / "huge.png").write_bytes(_png_header_only(20_000, 20_000))
    with pytest.raises(ImageFileError, match=r"huge\.png: .*400000000 pixels"):
        pack_image_folder(root, tmp_path / "out")
    assert not (tmp_path / "out" / "train.rec").exists()


@pytest.mark.parametrize("ext", [".tif", ".tiff", ".webp"])
def test_pack_accepts_every_image_extension_the_folders_accept(tmp_path: Path, ext: str) -> None:
    """pack-rec reads files.IMAGE_EXTENSIONS, as the folder modules do; these formats decode losslessly here."""
    rng = np.random.default_rng(9)
    image = _image(rng)
    (tmp_path / "faces" / "id0").mkdir(parents=True)
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else []  # quality above 100: lossless WebP
    assert cv2.imwrite(str(tmp_path / "faces" / "id0" / f"a{ext}"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    assert pack_image_folder(tmp_path / "faces", tmp_path / "rec").num_images == 1
    decoded, label = RecordIODataset(tmp_path / "rec").read_image(0)
    assert label == 0
    assert np.array_equal(decoded, image)


def test_skip_corrupt_counts_and_logs_every_skipped_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(4)
    samples = [(_image(rng), label) for label in (0, 0, 1, 1, 2, 2)]
    samples[3] = (b"garbage", 1)  # record 4 is undecodable
    write_face_records(tmp_path, samples)
    _corrupt_magic(tmp_path, 2)  # record 2: bad magic
    lines = [f"{k}\t{10**9 if k == 5 else off}" for k, off in _idx_lines(tmp_path)]
    (tmp_path / "train.idx").write_text("\n".join(lines) + "\n")  # record 5: past the end

    with caplog.at_level(logging.WARNING, logger="facexai.data.recordio"):
        ds = RecordIODataset(tmp_path, skip_corrupt=True)
        assert len(ds) == 4
        assert ds.corrupt_count == 2
        labels = [ds[i]["label"].item() for i in range(len(ds))]
    assert ds.corrupt_count == 3
    assert sorted(ds.corrupt_records) == [2, 4, 5]
    assert labels == [0, 1, 2, 2]  # item of record 4 falls through to record 6
    assert "3 corrupt record(s) skipped so far" in caplog.text
    assert "left out 2 structurally corrupt record(s)" in caplog.text


def test_out_of_range_index_raises_index_error(packed) -> None:
    ds = RecordIODataset(packed[0], skip_corrupt=True)
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert ds[-1]["label"].item() == packed[2][-1]


def test_label_outside_header_range_names_record(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    with RecordIOWriter(tmp_path / "bad") as writer:
        writer.write(0, pack_payload([2.0, 3.0]))
        writer.write_image(1, _image(rng), 7)
        writer.write(2, pack_payload([1.0, 2.0]))
    with pytest.raises(RecordIOError, match=r"record 1: label 7 outside"):
        RecordIODataset(tmp_path / "bad")[0]


# --------------------------------------------------------------------------- hostile headers (issue 14)


def _rec_with_header(root: Path, header: bytes, images: int = 2, image_label: float | list[float] = 0.0) -> Path:
    """A set whose record 0 is the raw ``header`` payload, then ``images`` image records."""
    rng = np.random.default_rng(6)
    with RecordIOWriter(root) as writer:
        writer.write(0, header)
        for key in range(1, images + 1):
            writer.write_image(key, _image(rng), image_label)
    return root


def _raw_header(flag: int, labels: list[float], scalar: float = 0.0) -> bytes:
    return struct.pack("<IfQQ", flag, scalar, 0, 0) + np.asarray(labels, dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (_raw_header(2, [1e12, 1e12]), r"identity range .*first identity record 999999995904 .*only 3 records"),
        (_raw_header(2, [3.0, 1e9]), r"999999997 identities but only 2 images"),
        (_raw_header(1, [3.0]), r"flag 1: .*two labels"),
        (_raw_header(2, [float("inf"), 4.0]), r"identity range .*not a whole number"),
        (_raw_header(2, [float("nan"), 4.0]), r"identity range .*not a whole number"),
        (_raw_header(2, [2.5, 4.0]), r"identity range .*not a whole number"),
        (_raw_header(2, [3.0, 2.0]), r"invalid identity range"),
    ],
    ids=["huge-range", "more-identities-than-images", "flag-1", "inf", "nan", "fraction", "reversed"],
)
def test_header_fields_are_checked_against_the_file(tmp_path: Path, header: bytes, message: str) -> None:
    root = _rec_with_header(tmp_path / "set", header)
    tracemalloc.start()
    try:
        with pytest.raises(RecordIOError, match=message) as info:
            RecordIODataset(root)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert "train.rec: record 0" in str(info.value)
    assert peak < 1 << 20  # before: np.arange over the claimed range (7 TiB for 1e12)


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (float("inf"), "label inf is not a whole number"),
        (float("nan"), "label nan"),
        (1.5, "label 1.5"),
        (-1.0, "label -1 outside"),
    ],
)
def test_image_labels_must_be_whole_finite_numbers(tmp_path: Path, label: float, message: str) -> None:
    rng = np.random.default_rng(7)
    with RecordIOWriter(tmp_path) as writer:
        writer.write_image(0, _image(rng), label)
    ds = RecordIODataset(tmp_path)
    with pytest.raises(RecordIOError, match=rf"train\.rec: record 0: {message}"):
        _ = ds[0]
    with pytest.raises(RecordIOError, match=message):
        _ = ds.num_classes


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"{2**63}\t0", r"key 9223372036854775808 outside 0\.\.2\^63-1"),
        ("-1\t0", r"key -1 outside"),
        (f"0\t{2**63}", r"offset 9223372036854775808 outside"),
        ("0\t" + "9" * 5000, r" is not '<key>"),
    ],
    ids=["key-above-int64", "negative-key", "offset-above-int64", "5000-digit-offset"],
)
def test_index_fields_outside_int64_name_file_and_line(packed, line: str, message: str) -> None:
    root, _, _ = packed
    (root / "train.idx").write_text(line + "\n")
    with pytest.raises(RecordIOError, match=rf"train\.idx: line 1.*{message}") as info:
        RecordIODataset(root)
    assert len(str(info.value)) < 400  # a hostile line is quoted shortened


def test_header_record_without_labels_is_named(tmp_path: Path) -> None:
    # flag 3 but the payload ends after the header: the label array is cut off
    root = _rec_with_header(tmp_path / "set", struct.pack("<IfQQ", 3, 0.0, 0, 0))
    with pytest.raises(RecordIOError, match=r"train\.rec: record 0: IRHeader announces 3 labels"):
        RecordIODataset(root)


# --------------------------------------------------------------------------- writers keep data (issue 14)


def test_failed_pack_keeps_the_previous_set_and_leaves_no_temporaries(face_folder, tmp_path: Path) -> None:
    root = face_folder[0]
    out = tmp_path / "out"
    pack_image_folder(root, out)
    before = {name: (out / name).read_bytes() for name in ("train.rec", "train.idx")}
    (root / "id2" / "zz_broken.png").write_bytes(b"\x89PNG but not really")  # found after other images
    with pytest.raises(ValueError, match=r"zz_broken\.png: not a decodable image"):
        pack_image_folder(root, out)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["train.idx", "train.rec"]


def test_writer_error_inside_the_block_keeps_previous_files(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path) as writer:
        writer.write(0, pack_payload(1.0, b"old"))
    before = (tmp_path / "train.rec").read_bytes()

    def write_key_0_twice() -> None:
        with RecordIOWriter(tmp_path) as writer:
            writer.write(0, pack_payload(2.0, b"new"))
            writer.write(0, pack_payload(2.0, b"new"))

    with pytest.raises(ValueError, match="written twice"):
        write_key_0_twice()
    assert (tmp_path / "train.rec").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.idx", "train.rec"]


@pytest.mark.parametrize("inside", [False, True], ids=["same-folder", "subfolder"])
def test_pack_refuses_to_write_into_its_input_folder(face_folder, inside: bool) -> None:
    root = face_folder[0]
    out = root / "packed" if inside else root
    with pytest.raises(OverwriteInputError, match=r"would overwrite the input"):
        pack_image_folder(root, out)
    assert not (out / "train.rec").exists()


# --------------------------------------------------------------------------- decompression bombs (issue 14)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) claims ``width`` x ``height`` but whose data is one empty row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_decode_refuses_images_above_the_pixel_limit_before_decoding(tmp_path: Path) -> None:
    bomb = _png_header_only(20_000, 20_000)  # 400 megapixels, 1.2 GB decoded, 60 bytes on disk
    with pytest.raises(ImageFileError, match=r"400000000 pixels.*MAX_IMAGE_PIXELS"):
        decode_image(bomb)
    with RecordIOWriter(tmp_path) as writer:
        writer.write_image(0, bomb, 0)
    with pytest.raises(RecordIOError, match=r"train\.rec: record 0: .*400000000 pixels"):
        RecordIODataset(tmp_path)[0]


def test_pixel_limit_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    image = _image(np.random.default_rng(8), 12, 10)
    assert decode_image(encode_image(image)).shape == (12, 10, 3)
    monkeypatch.setattr(files, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageFileError, match=r"10x12 .*120 pixels"):
        decode_image(encode_image(image))


def test_between_our_limit_and_pillows_the_size_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImageFileError, match=r"11000x11000 image has 121000000 pixels"):
        decode_image(_png_header_only(11_000, 11_000))


def test_png_chunk_longer_than_the_data_is_not_handed_to_opencv() -> None:
    # fuzz case 1561 (huge_number, seed 1414) of test_fuzz_bin: an IDAT length of 2**32 - 1 in a
    # 900-byte PNG made OpenCV 5 allocate 4 GiB and spend ~9 s before giving up
    png = bytearray(encode_image(_image(np.random.default_rng(9), 16, 16)))
    idat = png.index(b"IDAT") - 4
    png[idat : idat + 4] = b"\xff\xff\xff\xff"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    assert decode_image(bytes(png)) is None
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 256 << 10  # KiB: < 256 MiB
