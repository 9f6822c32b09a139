"""Colour maps, captioned grids, curve figures and PNG export."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from facexai.callbacks.overlays import (
    CAPTION_HEIGHT,
    PAD,
    apply_colormap,
    compose_grid,
    curves_figure,
    make_denormaliser,
    overlay,
    save_heatmap_grid,
)


def test_colormap_matches_matplotlib_and_brightens_with_the_map() -> None:
    maps = torch.linspace(0, 1, 256).view(1, 1, 256)
    rgb = apply_colormap(maps, "inferno")
    assert rgb.shape == (1, 3, 1, 256)
    expected = matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3]
    torch.testing.assert_close(rgb[0, :, 0].T, torch.from_numpy(expected).float())
    luminance = (rgb[0, :, 0] * torch.tensor([0.2126, 0.7152, 0.0722])[:, None]).sum(0)
    assert (luminance[1:] >= luminance[:-1] - 1e-3).all()  # perceptually ordered, unlike jet


def test_overlay_keeps_the_image_where_alpha_is_zero() -> None:
    images, maps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
    torch.testing.assert_close(overlay(images, maps, alpha=0.0), images)
    assert overlay(images, maps).shape == images.shape


def test_denormaliser_inverts_a_torchvision_normalisation() -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    pixels = torch.rand(2, 3, 4, 4)
    normalised = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(make_denormaliser(mean, std)(normalised), pixels)
    torch.testing.assert_close(make_denormaliser()(pixels * 2 - 1), pixels)  # facexai's 0.5 / 0.5
    with pytest.raises(ValueError, match="std must be positive"):
        make_denormaliser(0.0, 0.0)


def test_grid_layout_and_captions_are_drawn() -> None:
    rows = [[torch.ones(3, 8, 8)] * 3 for _ in range(2)]
    plain = compose_grid(rows, tile_size=16)
    assert plain.shape == (3, 2 * (16 + PAD) + PAD, 3 * (16 + PAD) + PAD)
    captioned = compose_grid(rows, ["first row", "second"], tile_size=16, title="gradcam")
    assert captioned.shape[1] == CAPTION_HEIGHT + 2 * (CAPTION_HEIGHT + 16 + PAD) + PAD
    band = captioned[:, CAPTION_HEIGHT : 2 * CAPTION_HEIGHT]  # the first row's caption band
    assert band.min() < 0.5  # dark text on the white band
    with pytest.raises(ValueError, match="2 captions for 1 rows"):
        compose_grid(rows[:1], ["a", "b"])


def test_curves_figure_has_one_panel_per_mode() -> None:
    curves = {
        "deletion": {"e+": torch.linspace(1, 0, 5), "e-": torch.linspace(0, 1, 5)},
        "insertion": {"": torch.rand(5)},
    }
    fig = curves_figure(curves, "gradcam")
    assert [ax.get_title() for ax in fig.axes] == ["gradcam deletion", "gradcam insertion"]
    assert len(fig.axes[0].lines) == 2


def test_save_heatmap_grid_writes_the_callback_picture(tmp_path: Path) -> None:
    images, maps = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 32, 32)
    path = save_heatmap_grid(tmp_path / "docs" / "heatmaps.png", images, maps, ["a", "b", "c"], tile_size=48)
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.mode == "RGB"
        assert png.size == (3 * (48 + PAD) + PAD, 3 * (CAPTION_HEIGHT + 48 + PAD) + PAD)
