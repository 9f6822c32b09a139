"""One picture that compares explainers on face pairs: the grid a person reads at a glance.

Rows are pairs; columns are face A, every method's map of A, face B, every method's map of B, so
the methods sit side by side on the same face. A column header names each column, a caption per
row gives genuine/impostor and the similarity, a colour bar at the right says which colour is a
high map value, the ground-truth identity mask (when known) is outlined on every tile of its
face, and a coloured frame plus the title tell e+ ("what makes A and B match") from e- ("what
pushes them apart") without reading the tag.

:func:`comparison_grid` takes plain tensors and returns a ``uint8`` image, so it serves the
callback's TensorBoard logging and any script that writes a PNG alike. :class:`ComparisonLayout`
is the geometry, shared by the renderer and by whoever needs to find a tile in the picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from facexai.callbacks.overlays import check_colormap, colormap_lut, fit_text, load_font, overlay

BORDER = 4  # the e+ / e- frame
PAD = 2  # between tiles
GROUP_GAP = 10  # extra space between the A columns and the B columns
TITLE_HEIGHT = 18
HEADER_HEIGHT = 16
CAPTION_HEIGHT = 16
BAR_GAP, BAR_WIDTH, BAR_LABEL_WIDTH = 8, 14, 34
#: outline of the ground-truth identity mask: pure green, absent from inferno-like maps and thin
OUTLINE = (0, 255, 0)
#: frame colours (colour-blind safe Okabe-Ito pair): e+ bluish green, e- vermillion, else grey
FRAMES = {"e+": (0, 158, 115), "e-": (213, 94, 0)}
NEUTRAL_FRAME = (110, 110, 110)
WHITE = 255


@dataclass(frozen=True)
class ComparisonLayout:
    """Pixel geometry of a comparison grid of ``rows`` pairs and ``methods`` explainers.

    Columns ``0 .. methods`` are face A and its maps, ``methods + 1 .. 2 * methods + 1`` face B
    and its maps. Positions are (y, x) of a tile's top-left pixel.
    """

    rows: int
    methods: int
    tile: int

    @property
    def columns(self) -> int:
        """Tiles per row: A, its maps, B, its maps."""
        return 2 * (self.methods + 1)

    def tile_origin(self, row: int, column: int) -> tuple[int, int]:
        """(y, x) of the top-left pixel of the tile in ``row`` and ``column``."""
        gap = GROUP_GAP if column > self.methods else 0
        x = BORDER + PAD + column * (self.tile + PAD) + gap
        y = BORDER + TITLE_HEIGHT + HEADER_HEIGHT + row * (CAPTION_HEIGHT + self.tile + PAD) + CAPTION_HEIGHT
        return y, x

    @property
    def bar_box(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the colour bar: beside the tiles, from the first row to the last."""
        top, right = self.tile_origin(0, self.columns - 1)
        bottom = self.tile_origin(self.rows - 1, 0)[0] + self.tile
        x0 = right + self.tile + BAR_GAP
        return top, bottom, x0, x0 + BAR_WIDTH

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the whole picture, frame included."""
        height = self.tile_origin(self.rows - 1, 0)[0] + self.tile + PAD + BORDER
        return height, self.bar_box[3] + BAR_LABEL_WIDTH + BORDER


def comparison_grid(
    images_a: Tensor,
    images_b: Tensor,
    maps: Mapping[str, tuple[Tensor, Tensor]],
    captions: Sequence[str] | None = None,
    masks_a: Tensor | None = None,
    masks_b: Tensor | None = None,
    tile_size: int = 112,
    cmap: str = "inferno",
    title: str = "",
    frame: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Render explainers side by side on face pairs as one RGB picture.

    Args:
        images_a: faces A (N, 3, H, W) in display range [0, 1] (already denormalised).
        images_b: faces B (N, 3, H, W) in [0, 1].
        maps: method name -> (maps of A, maps of B), each (N, h, w) in [0, 1]; drawn in this
            order, blended half-and-half over the face (resized to the face if h, w differ).
        captions: one line per pair, e.g. ``"genuine | cos=0.83"``; ``None`` numbers the pairs.
        masks_a: ground-truth identity masks of A (N, H, W), outlined in green; ``None``: none.
        masks_b: the same for B.
        tile_size: side of every tile in pixels (faces are resized to it).
        cmap: any matplotlib colour map name; ``inferno`` (default) is perceptually ordered,
            ``jet`` gives the look of most explanation papers.
        title: the line above the grid; a title starting with ``e+`` or ``e-`` also picks the
            frame colour (green / vermillion), so the two views differ at a glance.
        frame: RGB of the frame, overriding the colour picked from ``title``.

    Returns:
        The picture, ``uint8`` (H, W, 3); its geometry is ``ComparisonLayout(N, len(maps),
        tile_size)``.

    Raises:
        ValueError: shapes that do not match, no methods, bad ``tile_size`` or unknown ``cmap``.
    """
    n = _check_inputs(images_a, images_b, maps, captions, masks_a, masks_b, tile_size)
    check_colormap(cmap)
    layout = ComparisonLayout(n, len(maps), tile_size)
    height, width = layout.size
    canvas = np.full((height, width, 3), WHITE, dtype=np.uint8)
    _draw_frame(canvas, frame or frame_colour(title))
    # Text first: the tiles drawn afterwards can never be covered by a long descender.
    canvas = _draw_texts(canvas, _texts(layout, list(maps), captions or [f"pair {i}" for i in range(n)], title))
    for side, (images, masks) in enumerate(((images_a, masks_a), (images_b, masks_b))):
        side_maps = [pair[side] for pair in maps.values()]
        _draw_side(canvas, layout, side * (layout.methods + 1), images, side_maps, masks, cmap)
    _draw_colour_bar(canvas, layout, cmap)
    return canvas


def frame_colour(title: str) -> tuple[int, int, int]:
    """Frame colour for a title: e+ green, e- vermillion, anything else grey."""
    return FRAMES.get(title.strip()[:2], NEUTRAL_FRAME)


def mask_outline(masks: Tensor, size: int) -> Tensor:
    """Boolean (N, size, size): the inner edge of each mask after nearest resizing to ``size``.

    The edge is ``max(1, size // 56)`` pixels wide (2 px on 112 px tiles), so it stays visible
    without hiding the map underneath.
    """
    resized = F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")
    width = max(1, size // 56)
    inside = -F.max_pool2d(-resized, 2 * width + 1, stride=1, padding=width)  # erosion
    return (resized - inside)[:, 0] > 0.5


def _check_inputs(
    images_a: Tensor,
    images_b: Tensor,
    maps: Mapping[str, tuple[Tensor, Tensor]],
    captions: Sequence[str] | None,
    masks_a: Tensor | None,
    masks_b: Tensor | None,
    tile_size: int,
) -> int:
    """The number of pairs, after checking that everything describes the same pairs."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
    for name, images in (("images_a", images_a), ("images_b", images_b)):
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{name} must be a tensor (N, 3, H, W), got {_describe(images)}")
    n = len(images_a)
    if len(images_b) != n or n == 0:
        raise ValueError(
            f"images_a and images_b must hold the same number (>= 1) of faces, got {n} and {len(images_b)}"
        )
    if not maps:
        raise ValueError("maps is empty: give at least one method -> (maps of A, maps of B)")
    for method, pair in maps.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"maps[{method!r}] must be a tuple (maps of A, maps of B), got {_describe(pair)}")
        for side, side_maps in zip("AB", pair, strict=True):
            if not isinstance(side_maps, Tensor) or side_maps.dim() != 3 or len(side_maps) != n:
                raise ValueError(f"maps[{method!r}] of {side} must be a tensor ({n}, h, w), got {_describe(side_maps)}")
    if captions is not None and len(captions) != n:
        raise ValueError(f"got {len(captions)} captions for {n} pairs")
    for name, masks, images in (("masks_a", masks_a, images_a), ("masks_b", masks_b, images_b)):
        if masks is not None and (not isinstance(masks, Tensor) or tuple(masks.shape) != (n, *images.shape[-2:])):
            raise ValueError(f"{name} must be None or a tensor {(n, *images.shape[-2:])}, got {_describe(masks)}")
    return n


def _describe(value: object) -> str:
    return f"Tensor{tuple(value.shape)}" if isinstance(value, Tensor) else repr(type(value).__name__)


def _draw_frame(canvas: np.ndarray, colour: tuple[int, int, int]) -> None:
    canvas[:BORDER], canvas[-BORDER:] = colour, colour
    canvas[:, :BORDER], canvas[:, -BORDER:] = colour, colour


def _draw_side(
    canvas: np.ndarray,
    layout: ComparisonLayout,
    first_column: int,
    images: Tensor,
    maps: Sequence[Tensor],
    masks: Tensor | None,
    cmap: str,
) -> None:
    """Face tiles and their map overlays of one side (A or B), outlines on top."""
    display = images.detach().float().cpu().clamp(0, 1)
    tiles = [display] + [overlay(display, _fit_maps(m, display.shape[-2:]), cmap) for m in maps]
    outline = None if masks is None else mask_outline(masks.detach().cpu().bool(), layout.tile)
    for offset, batch in enumerate(tiles):
        pixels = _to_uint8(_resize(batch, layout.tile))
        if outline is not None:
            pixels[outline.numpy()] = OUTLINE
        for row in range(layout.rows):
            y, x = layout.tile_origin(row, first_column + offset)
            canvas[y : y + layout.tile, x : x + layout.tile] = pixels[row]


def _fit_maps(maps: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Maps (N, h, w) as float in [0, 1] at the faces' size (bilinear when they differ)."""
    maps = maps.detach().float().cpu().clamp(0, 1)
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def _to_uint8(images: Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8, rounded (not truncated)."""
    return (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy().copy()


def _draw_colour_bar(canvas: np.ndarray, layout: ComparisonLayout, cmap: str) -> None:
    """The colour map from 1 (top) to 0 (bottom), as the map values are coloured."""
    y0, y1, x0, x1 = layout.bar_box
    values = torch.linspace(1.0, 0.0, y1 - y0)
    colours = colormap_lut(cmap)[(values * 255).round().long()]
    canvas[y0:y1, x0:x1] = _to_uint8(colours.T[None, :, :, None])[0]


def _texts(
    layout: ComparisonLayout, methods: list[str], captions: Sequence[str], title: str
) -> list[tuple[int, int, int, str]]:
    """(x, y, max width, text) of the title, the column headers, the captions and the bar labels."""
    full = layout.size[1] - 2 * BORDER - 2 * PAD
    # The 12 px font's glyphs span rows 2-15 below the anchor: each band (>= 16 px) holds one line.
    texts = [(BORDER + PAD, BORDER, full, title)] if title else []
    header_y = BORDER + TITLE_HEIGHT
    names = ["A", *[f"{m} (A)" for m in methods], "B", *[f"{m} (B)" for m in methods]]
    for column, name in enumerate(names):
        x = layout.tile_origin(0, column)[1]
        texts.append((x, header_y, layout.tile, name))
    for row, caption in enumerate(captions):
        y, x = layout.tile_origin(row, 0)
        texts.append((x, y - CAPTION_HEIGHT, full, caption))
    y0, y1, _, x1 = layout.bar_box
    texts += [(x1 + 3, y0 - 3, BAR_LABEL_WIDTH, "high"), (x1 + 3, y1 - 15, BAR_LABEL_WIDTH, "low")]
    return texts


def _draw_texts(canvas: np.ndarray, texts: Sequence[tuple[int, int, int, str]]) -> np.ndarray:
    """Black text, each shortened with an ellipsis to its width."""
    pil = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(pil), load_font(12)
    for x, y, width, text in texts:
        draw.text((x, y), fit_text(draw, font, text, width), fill=(0, 0, 0), font=font)
    return np.asarray(pil).copy()
