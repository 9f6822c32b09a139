"""Copy the heatmap grids that ExplanationCallback logged to TensorBoard into PNG files.

Used to make the README pictures from a real demo run:

    python -m facexai fit --config configs/demo.yaml
    python docs/export_tensorboard_images.py runs/demo/version_0 docs/
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def export_images(run_dir: str, out_dir: str, tags: list[str] | None = None) -> list[Path]:
    """Write the last logged image of each tag (all ``xai/`` image tags by default) as PNG."""
    files = sorted(glob.glob(str(Path(run_dir) / "events.out.tfevents.*")))
    if not files:
        raise FileNotFoundError(f"No TensorBoard event file in {run_dir}")
    events = EventAccumulator(files[-1], size_guidance={"images": 0})
    events.Reload()
    wanted = tags or [t for t in events.Tags()["images"] if t.startswith("xai/")]
    written = []
    for tag in wanted:
        last = events.Images(tag)[-1]
        path = Path(out_dir) / (tag.replace("/", "_") + ".png")
        path.write_bytes(last.encoded_image_string)
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--tags", nargs="*")
    args = parser.parse_args()
    for written in export_images(args.run_dir, args.out_dir, args.tags):
        print(written)
