"""Heatmap pictures: colour maps applied in torch, captioned image grids, curve figures, PNGs.

Everything here is display code: it runs on rank zero on a handful of samples, so it works on
CPU copies. Colour maps are lookup tables taken from matplotlib once and applied with tensor
indexing. Any matplotlib colour map is accepted; the default and :data:`COLORMAPS` are
perceptually ordered (a jet-like rainbow invents edges that the map does not have, but it is what
most explanation papers show, so it is available by name).
Captions are drawn with PIL because TensorBoard's image panel shows no per-row text.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from facexai.data.transforms import denormalise
from facexai.pipeline.views import invalid_maps
from facexai.writing import atomic_path

#: recommended colour maps: perceptually ordered and readable over faces (any matplotlib name works)
COLORMAPS = ("inferno", "magma", "plasma", "viridis", "turbo", "cividis")
PAD = 2
CAPTION_HEIGHT = 14
BACKGROUND = 1.0  # white separators and caption bands


@lru_cache(maxsize=8)
def _lut(name: str) -> Tensor:
    return torch.from_numpy(matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]).float()


def check_colormap(name: object) -> None:
    """Raise ``ValueError`` unless ``name`` is one of matplotlib's registered colour maps.

    The message suggests close names and the recommended ones, not all of matplotlib's ~170.
    """
    if isinstance(name, str) and name in matplotlib.colormaps:
        return
    close = difflib.get_close_matches(str(name), list(matplotlib.colormaps), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown colormap {name!r}.{hint} Valid: any name in matplotlib.colormaps "
        f"({len(matplotlib.colormaps)} maps), e.g. {', '.join(COLORMAPS)} or jet."
    )


def colormap_lut(name: str = "inferno") -> Tensor:
    """The 256-entry RGB lookup table (256, 3) in [0, 1] of a matplotlib colour map."""
    check_colormap(name)
    return _lut(name)


def apply_colormap(maps: Tensor, name: str = "inferno") -> Tensor:
    """Colour maps (N, H, W) in [0, 1] into RGB images (N, 3, H, W) in [0, 1].

    A map with any NaN or Inf value becomes a crossed grey tile (:func:`invalid_tile`) instead
    of an out-of-range lookup (NaN cast to an index is -2**63): one broken map must not stop
    the training run that logs it. The pipeline warns about such maps
    (:class:`~facexai.pipeline.views.InvalidMapWarning`).
    """
    lut = colormap_lut(name).to(maps.device)
    values = torch.nan_to_num(maps.detach().float(), nan=0.0).clamp(0, 1)
    return mark_invalid(lut[(values * 255).round().long()].permute(0, 3, 1, 2), invalid_maps(maps))


def overlay(images: Tensor, maps: Tensor, name: str = "inferno", alpha: float = 0.5) -> Tensor:
    """Blend coloured maps over display images (N, 3, H, W) in [0, 1].

    Invalid maps (NaN/Inf) show the crossed grey tile alone, not blended with the face, so the
    tile cannot be mistaken for an explanation.
    """
    blended = ((1 - alpha) * images + alpha * apply_colormap(maps, name)).clamp(0, 1)
    return mark_invalid(blended, invalid_maps(maps))


#: grey of tiles whose map has NaN/Inf values, and the red of the cross drawn over them
INVALID_GREY = 0.5
INVALID_CROSS = (0.85, 0.0, 0.0)
#: half-width of the cross's strokes as a fraction of the tile side (visible after resizing)
CROSS_WIDTH = 0.04


def invalid_tile(height: int, width: int) -> Tensor:
    """A grey (3, H, W) tile with a red cross corner to corner: "no map here"."""
    y = (torch.arange(height, dtype=torch.float32)[:, None] + 0.5) / height
    x = (torch.arange(width, dtype=torch.float32)[None, :] + 0.5) / width
    half = max(CROSS_WIDTH, 0.5 / min(height, width))  # at least one pixel wide
    cross = ((y - x).abs() <= half) | ((y + x - 1).abs() <= half)
    tile = torch.full((3, height, width), INVALID_GREY)
    red = torch.tensor(INVALID_CROSS)[:, None].expand(3, int(cross.sum()))
    tile[:, cross] = red
    return tile


def mark_invalid(tiles: Tensor, invalid: Tensor) -> Tensor:
    """``tiles`` (N, 3, H, W) with the tiles flagged in ``invalid`` (N,) replaced by the crossed tile."""
    if not bool(invalid.any()):
        return tiles
    tiles = tiles.clone()
    tiles[invalid.to(tiles.device)] = invalid_tile(*tiles.shape[-2:]).to(tiles)
    return tiles


def make_denormaliser(
    mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None
) -> Callable[[Tensor], Tensor]:
    """A function from normalised images to display images in [0, 1].

    ``None`` for both uses facexai's (x * 0.5 + 0.5) convention; otherwise the inverse of
    torchvision's ``Normalize(mean, std)`` (scalars or one value per channel).
    """
    if mean is None and std is None:
        return denormalise
    mean_t = torch.as_tensor(0.0 if mean is None else mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std_t = torch.as_tensor(1.0 if std is None else std, dtype=torch.float32).reshape(1, -1, 1, 1)
    if mean_t.shape[1] not in (1, 3) or std_t.shape[1] not in (1, 3):
        raise ValueError(f"mean and std must be scalars or 3 values, got mean={mean!r} std={std!r}")
    if (std_t <= 0).any():
        raise ValueError(f"std must be positive, got {std!r}")

    def inverse(images: Tensor) -> Tensor:
        return (images.float() * std_t.to(images.device) + mean_t.to(images.device)).clamp(0, 1)

    return inverse


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def classification_rows(images: Tensor, maps: Tensor, colormap: str = "inferno") -> list[list[Tensor]]:
    """Rows of [image | heatmap | overlay] tiles, one per sample (display images in [0, 1])."""
    heat = apply_colormap(maps, colormap)
    blend = overlay(images, maps, colormap)
    return [[images[i], heat[i], blend[i]] for i in range(len(images))]


def pair_rows(
    images_a: Tensor, images_b: Tensor, maps_a: Tensor, maps_b: Tensor, colormap: str = "inferno"
) -> list[list[Tensor]]:
    """Rows of [A | map over A | B | map over B] tiles, one per pair."""
    blend_a, blend_b = overlay(images_a, maps_a, colormap), overlay(images_b, maps_b, colormap)
    return [[images_a[i], blend_a[i], images_b[i], blend_b[i]] for i in range(len(images_a))]


def compose_grid(
    rows: list[list[Tensor]], captions: Sequence[str] | None = None, tile_size: int = 96, title: str | None = None
) -> Tensor:
    """Lay out rows of (3, h, w) tiles at ``tile_size`` with a caption band above each row.

    Returns:
        One image (3, H, W), float in [0, 1], on the CPU.
    """
    if not rows:
        raise ValueError("compose_grid needs at least one row")
    if captions is not None and len(captions) != len(rows):
        raise ValueError(f"got {len(captions)} captions for {len(rows)} rows")
    n_cols = max(len(row) for row in rows)
    band = CAPTION_HEIGHT if captions is not None else 0
    top = CAPTION_HEIGHT if title else 0
    row_h = band + tile_size + PAD
    width = n_cols * (tile_size + PAD) + PAD
    grid = torch.full((3, top + len(rows) * row_h + PAD, width), BACKGROUND)
    for r, row in enumerate(rows):
        tiles = _resize(torch.stack([t.detach().float().cpu() for t in row]), tile_size)
        y = top + r * row_h + band + PAD
        for c, tile in enumerate(tiles):
            x = PAD + c * (tile_size + PAD)
            grid[:, y : y + tile_size, x : x + tile_size] = tile
    texts = [(PAD, 0, title)] if title else []
    texts += [(PAD, top + r * row_h + 1, text) for r, text in enumerate(captions or [])]
    return draw_text(grid, texts)


Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def load_font(size: int) -> Font:
    """PIL's default font at ``size`` pixels (any size on Pillow >= 10.1, else its bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def draw_text(image: Tensor, texts: Sequence[tuple[int, int, str]]) -> Tensor:
    """Draw black text at (x, y) positions onto an image (3, H, W) in [0, 1], clipped to its width."""
    if not texts:
        return image
    pil = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    draw, font = ImageDraw.Draw(pil), load_font(11)
    for x, y, text in texts:
        draw.text((x, y), fit_text(draw, font, text, pil.width - x - PAD), fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255


def fit_text(draw: ImageDraw.ImageDraw, font: Font, text: str, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def curves_figure(panels: Mapping[str, Mapping[str, Tensor]], title: str = "", dashed: Sequence[str] = ()) -> Figure:
    """Mean deletion/insertion curves: one panel per ``panels`` key, one line per inner key.

    The callback's TensorBoard figures and the ``evaluate`` report's PNGs are this figure.

    Args:
        panels: ``{"deletion": {"e+": curve, ...}, "insertion": {...}}`` (or keys such as
            "deletion e+" with one line per method); each curve (steps + 1,) over the fraction
            of pixels perturbed. A key starting with "deletion" labels its x axis "deleted".
        title: what the curves belong to, put before each panel's key in its title.
        dashed: line labels drawn dashed (reference rows).

    >>> import torch
    >>> figure = curves_figure({"deletion": {"e+": torch.linspace(1, 0, 5)}}, "gradcam")
    >>> [axes.get_title() for axes in figure.axes]
    ['gradcam deletion']
    """
    count = max(len(panels), 1)
    # A fixed layout: constrained/tight layout solvers cost more than drawing these small plots.
    fig = Figure(figsize=(3.3 * count, 2.9), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.16 / count, right=0.97, bottom=0.17, top=0.89, wspace=0.35)
    for ax, (panel, lines) in zip(fig.subplots(1, count, squeeze=False)[0], panels.items(), strict=False):
        for label, curve in lines.items():
            curve = curve.detach().float().cpu()
            style = "--" if label in dashed else "-"
            ax.plot(torch.linspace(0, 1, len(curve)).numpy(), curve.numpy(), style, label=label or "score")
        ax.set_xlabel(f"fraction of pixels {'deleted' if panel.startswith('deletion') else 'inserted'}")
        ax.set_ylabel("mean score")
        ax.set_title(f"{title} {panel}".strip(), fontsize=9)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    return fig


def save_grid(grid: Tensor | np.ndarray, path: str | Path) -> Path:
    """Write an image (3, H, W) in [0, 1], or an already converted uint8 (H, W, 3), as a PNG.

    Written through :func:`facexai.writing.atomic_path`: a failure half-way (disk full, Ctrl-C)
    leaves the previous PNG of the same tag intact instead of a truncated file.
    """
    path = Path(path)
    if isinstance(grid, Tensor):
        array = (grid.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    else:
        array = grid
    picture = Image.fromarray(array)
    with atomic_path(path) as partial:
        picture.save(partial, format="PNG")
    return path


def save_heatmap_grid(
    path: str | Path,
    images: Tensor,
    maps: Tensor,
    captions: Sequence[str] | None = None,
    colormap: str = "inferno",
    tile_size: int = 96,
    title: str | None = None,
    denormalise_fn: Callable[[Tensor], Tensor] | None = None,
) -> Path:
    """Save the callback's [image | heatmap | overlay] grid for normalised ``images`` as a PNG.

    The same picture the callback logs to TensorBoard, for documentation (e.g. ``docs/``).

    Args:
        path: output file.
        images: normalised images (N, 3, H, W).
        maps: explanations (N, H, W) in [0, 1].
        captions: one line per row.
        colormap: one of :data:`COLORMAPS`.
        tile_size: side of each tile in pixels.
        title: optional line above the grid.
        denormalise_fn: normalised -> [0, 1]; default facexai's (x * 0.5 + 0.5).
    """
    display = (denormalise_fn or denormalise)(images.detach().float().cpu())
    rows = classification_rows(display, maps.detach().float().cpu(), colormap)
    return save_grid(compose_grid(rows, captions, tile_size, title), path)
