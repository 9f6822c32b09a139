"""A map with NaN/Inf values is drawn as a crossed grey tile with a warning, never a crash;
PNGs under ``png_dir`` are written atomically."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from callback_models import FAST_METRICS, PlainClassifier, trainer, tuple_loaders
from PIL import Image
from torch import Tensor, nn

from facexai.callbacks import ExplanationCallback
from facexai.callbacks.overlays import (
    INVALID_CROSS,
    INVALID_GREY,
    apply_colormap,
    invalid_maps,
    overlay,
    save_grid,
)
from facexai.explain import Explainer
from facexai.explain.gradcam import GradCAM
from facexai.explain.targets import Target
from facexai.pipeline import InvalidMapWarning


def test_nan_or_inf_maps_become_crossed_grey_tiles_and_others_are_unchanged() -> None:
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    broken = maps.clone()
    broken[0] = float("nan")  # a whole NaN map (crashed before: index -9223372036854775808)
    broken[2, 3, 4] = float("inf")  # one bad pixel makes the whole map untrustworthy
    assert invalid_maps(broken).tolist() == [True, False, True]
    rgb = apply_colormap(broken)
    torch.testing.assert_close(rgb[1], apply_colormap(maps[1:2])[0])
    for tile in (rgb[0], rgb[2]):
        corners = tile[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # the diagonals cross every corner
        torch.testing.assert_close(corners, torch.tensor(INVALID_CROSS)[:, None].expand(3, 4))
        edge_middle = tile[:, 0, 8]  # top edge, halfway: far from both diagonals
        torch.testing.assert_close(edge_middle, torch.full((3,), INVALID_GREY))
    images = torch.rand(3, 3, 16, 16)
    blended = overlay(images, broken)
    torch.testing.assert_close(blended[0], rgb[0])  # not blended with the face: plainly marked
    torch.testing.assert_close(blended[1], overlay(images[1:2], maps[1:2])[0])


class NaNForSample(Explainer):
    """Grad-CAM, with the map of one sample replaced by NaN (a broken user explainer)."""

    name = "broken"

    def __init__(self, sample: int) -> None:
        self.sample = sample

    def __call__(self, model: nn.Module, images: Tensor, target: Target | None = None) -> Tensor:
        maps = GradCAM("layer3")(model, images, target)
        maps[self.sample] = float("nan")
        return maps

    def explain(self, model: nn.Module, images: Tensor, target: Target) -> Tensor:
        raise NotImplementedError


def test_a_nan_map_warns_with_method_and_sample_and_validation_goes_on(tmp_path: Path) -> None:
    _, val = tuple_loaders(n_val=3, batch_size=3)
    callback = ExplanationCallback(
        explainers=[NaNForSample(1)], metrics=FAST_METRICS, max_time_share=None, png_dir=str(tmp_path / "png")
    )
    run = trainer(tmp_path, [callback])
    with pytest.warns(InvalidMapWarning, match=r"broken.*NaN or Inf.*samples \[1\].*left out of the metrics"):
        run.validate(PlainClassifier(), val, verbose=False)
    # the metrics score the two finite maps instead of refusing the batch
    assert torch.isfinite(run.callback_metrics["val/xai/broken/deletion_auc"])
    grid = callback.last_grids["xai/broken/heatmaps"]
    assert grid.shape[0] == 3
    assert torch.isfinite(grid).all()
    assert (tmp_path / "png" / "xai_broken_heatmaps.png").is_file()


def test_save_grid_keeps_the_previous_png_when_writing_fails(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "grid.png"
    first = np.full((4, 4, 3), 200, dtype=np.uint8)
    save_grid(first, target)

    def fail_half_way(self: Image.Image, fp, *args, **kwargs) -> None:
        Path(fp).write_bytes(b"\x89PNG truncated")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_grid(np.zeros((4, 4, 3), dtype=np.uint8), target)
    monkeypatch.undo()
    np.testing.assert_array_equal(np.asarray(Image.open(target)), first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no partial file left


def test_save_grid_writes_a_png_even_without_the_suffix(tmp_path: Path) -> None:
    path = save_grid(torch.ones(3, 5, 6), tmp_path / "sub" / "grid")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.asarray(Image.open(path)).shape == (5, 6, 3)
