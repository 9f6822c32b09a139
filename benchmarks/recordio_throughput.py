"""RecordIO read throughput: images/second through a DataLoader, with and without augmentation.

Builds a throwaway ``train.rec``/``train.idx`` of generated 112x112 JPEG faces (the way MS1M and
Glint store them), then times one epoch (after a warm-up epoch, persistent workers) of
``RecordIODataset`` for: decoding only, and decoding plus an arcface-style albumentations pipeline
(horizontal flip, small affine, colour jitter). Prints a table.

Usage::

    python benchmarks/recordio_throughput.py --images 2000 --workers 2 --batch-size 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
from torch.utils.data import DataLoader

from facexai.data.recordio import RecordIODataset, write_face_records


def _faces(count: int, size: int, per_identity: int, ext: str) -> Iterator[tuple[bytes, int]]:
    """Smooth, face-sized images (noise-only images would make JPEG decoding unrealistically slow)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(count):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        channels = [127 + 100 * np.sin(6 * xx + 4 * yy + p) for p in phase]
        image = np.clip(np.stack(channels, -1) + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(ext, image, [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
        assert ok
        yield buf.tobytes(), i // per_identity


def _augmentation() -> A.Compose:
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.95, 1.05), translate_percent=(-0.05, 0.05), rotate=(-10, 10), p=1.0),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=1.0),
        ]
    )


def _worker_init(_: int) -> None:
    cv2.setNumThreads(1)  # one decode thread per worker; more only oversubscribes the cores


def _time_epoch(dataset: RecordIODataset, workers: int, batch_size: int) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_worker_init if workers > 0 else None,
    )
    for _ in loader:  # warm-up: worker start-up and page cache
        pass
    start = time.perf_counter()
    seen = sum(batch["image"].shape[0] for batch in loader)
    elapsed = time.perf_counter() - start
    assert seen == len(dataset)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        count, classes = write_face_records(root, _faces(args.images, args.size, 20, f".{args.format}"))
        size_mb = (root / "train.rec").stat().st_size / 2**20
        print(
            f"fixture: {count} images, {classes} identities, {args.size}x{args.size} {args.format}, {size_mb:.1f} MiB"
        )
        print(f"DataLoader: {args.workers} workers, batch {args.batch_size}\n")
        print(f"{'pipeline':<28}{'images':>8}{'seconds':>10}{'images/s':>12}")
        for name, transform in (("decode", None), ("decode + flip/affine/jitter", _augmentation())):
            seconds = _time_epoch(RecordIODataset(root, transform=transform), args.workers, args.batch_size)
            print(f"{name:<28}{count:>8}{seconds:>10.2f}{count / seconds:>12.0f}")


if __name__ == "__main__":
    main()
