"""Synthetic faces: the embedded default data set, generated in code in a fraction of a second.

Each image shows a cartoon face of one of K identities. Identity is carried *only* by known
regions: eye shape (width and aspect), iris colour, brow tilt and a mark on one cheek. Everything
else varies per image and carries no identity: background, skin tone, lighting, pose (rotation,
shift, scale), hair-line shade, mouth and nose shape, and pixel noise. Every image comes with the
ground-truth mask of its identity regions, so localisation metrics (pointing game, energy in mask)
are exact on this data, and a model that recognises identities must look inside the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: per-identity traits drawn once per identity: name -> (low, high) of a uniform draw
_TRAIT_RANGES: dict[str, tuple[float, float]] = {
    "eye_width": (0.12, 0.21),
    "eye_aspect": (0.3, 0.95),
    "brow_tilt": (-0.55, 0.55),
    "mark_x": (0.36, 0.56),
    "mark_y": (0.18, 0.42),
    "mark_radius": (0.05, 0.1),
}
#: per-image nuisance: name -> (low, high)
_NUISANCE_RANGES: dict[str, tuple[float, float]] = {
    "angle": (-0.17, 0.17),
    "shift_x": (-0.07, 0.07),
    "shift_y": (-0.07, 0.07),
    "scale": (0.9, 1.08),
    "light_x": (-0.3, 0.3),
    "light_y": (-0.3, 0.3),
    "brightness": (0.8, 1.15),
    "mouth_width": (0.15, 0.38),
    "mouth_open": (0.02, 0.08),
    "nose_length": (0.12, 0.28),
    "noise": (0.01, 0.04),
}


@dataclass(frozen=True)
class Identities:
    """Traits of K identities: each field a tensor of K values (colours: (K, 3))."""

    eye_width: Tensor
    eye_aspect: Tensor
    brow_tilt: Tensor
    mark_x: Tensor
    mark_y: Tensor
    mark_radius: Tensor
    mark_side: Tensor
    iris_colour: Tensor
    mark_colour: Tensor

    def __len__(self) -> int:
        return len(self.eye_width)

    def take(self, index: Tensor) -> Identities:
        """Traits of the identities in ``index`` (one row per image)."""
        return Identities(**{k: v[index] for k, v in vars(self).items()})


def sample_identities(count: int, generator: torch.Generator) -> Identities:
    """Draw ``count`` identities."""
    traits = {k: _uniform(count, lo, hi, generator) for k, (lo, hi) in _TRAIT_RANGES.items()}
    side = torch.randint(0, 2, (count,), generator=generator).float() * 2 - 1
    iris = _saturated_colours(count, generator)
    mark = torch.rand(count, 3, generator=generator) * 0.5
    return Identities(**traits, mark_side=side, iris_colour=iris, mark_colour=mark)


def render_faces(identities: Identities, image_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Render one image per row of ``identities`` with fresh nuisance factors.

    Returns:
        images (B, 3, S, S) uint8 RGB and identity masks (B, S, S) bool.
    """
    count = len(identities)
    nuisance = {k: _uniform(count, lo, hi, generator) for k, (lo, hi) in _NUISANCE_RANGES.items()}
    x, y = _face_coordinates(nuisance, image_size)
    canvas = _background(count, image_size, generator)
    skin = _uniform(count, 0.35, 0.95, generator)[:, None] * torch.tensor([1.0, 0.78, 0.62])
    hair = torch.rand(count, 3, generator=generator) * 0.35
    canvas = _paint(canvas, _ellipse(x, y, 0.0, 0.05, 0.72, 0.9), skin)
    canvas = _paint(canvas, _ellipse(x, y, 0.0, -0.82, 0.7, 0.28) * _ellipse(x, y, 0.0, 0.05, 0.74, 0.92), hair)
    canvas = _paint_features(canvas, x, y, identities, nuisance, hair)
    canvas = _light(canvas, x, y, nuisance)
    canvas = canvas + nuisance["noise"][:, None, None, None] * torch.randn(canvas.shape, generator=generator)
    images = (canvas.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, _identity_mask(x, y, identities)


def _paint_features(
    canvas: Tensor, x: Tensor, y: Tensor, ids: Identities, nuisance: dict[str, Tensor], hair: Tensor
) -> Tensor:
    """Eyes, irises, brows and cheek mark (identity) plus nose and mouth (nuisance)."""
    white = torch.tensor([0.95, 0.95, 0.92])
    for side in (-1.0, 1.0):
        eye = _eye(x, y, side, ids)
        canvas = _paint(canvas, eye, white)
        iris_r = torch.minimum(ids.eye_width * ids.eye_aspect, ids.eye_width * 0.55) * 0.9
        canvas = _paint(canvas, _circle(x, y, side * 0.33, -0.15, iris_r) * eye, ids.iris_colour)
        canvas = _paint(canvas, _circle(x, y, side * 0.33, -0.15, iris_r * 0.4) * eye, torch.zeros(3))
        canvas = _paint(canvas, _brow(x, y, side, ids), hair * 0.6)
    canvas = _paint(canvas, _mark(x, y, ids), ids.mark_colour)
    nose = _ellipse(x, y, 0.0, 0.15, 0.05, nuisance["nose_length"])
    canvas = canvas * (1 - 0.25 * nose[:, None])
    mouth = _ellipse(x, y, 0.0, 0.52, nuisance["mouth_width"], nuisance["mouth_open"])
    return _paint(canvas, mouth, torch.tensor([0.6, 0.15, 0.2]))


def _identity_mask(x: Tensor, y: Tensor, ids: Identities) -> Tensor:
    regions = [_eye(x, y, s, ids) for s in (-1.0, 1.0)] + [_brow(x, y, s, ids) for s in (-1.0, 1.0)]
    regions.append(_mark(x, y, ids))
    return torch.stack(regions).amax(dim=0) > 0.5


def _eye(x: Tensor, y: Tensor, side: float, ids: Identities) -> Tensor:
    return _ellipse(x, y, side * 0.33, -0.15, ids.eye_width, ids.eye_width * ids.eye_aspect)


def _brow(x: Tensor, y: Tensor, side: float, ids: Identities) -> Tensor:
    """A thick bar above the eye, tilted by the identity's brow angle (mirrored per side)."""
    angle = (side * ids.brow_tilt)[:, None, None]
    dx, dy = x - side * 0.33, y + 0.42
    along = dx * torch.cos(angle) + dy * torch.sin(angle)
    across = -dx * torch.sin(angle) + dy * torch.cos(angle)
    return _soft((1 - torch.maximum((along / 0.2).abs(), (across / 0.045).abs())) * 6)


def _mark(x: Tensor, y: Tensor, ids: Identities) -> Tensor:
    return _circle(x, y, ids.mark_side * ids.mark_x, ids.mark_y, ids.mark_radius)


def _face_coordinates(nuisance: dict[str, Tensor], size: int) -> tuple[Tensor, Tensor]:
    """Face-frame coordinates (B, S, S) of every pixel: the inverse of the pose transform."""
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(grid, grid, indexing="ij")
    u = u[None] - nuisance["shift_x"][:, None, None]
    v = v[None] - nuisance["shift_y"][:, None, None]
    cos, sin = torch.cos(nuisance["angle"])[:, None, None], torch.sin(nuisance["angle"])[:, None, None]
    scale = nuisance["scale"][:, None, None]
    return (cos * u + sin * v) / scale, (-sin * u + cos * v) / scale


def _background(count: int, size: int, generator: torch.Generator) -> Tensor:
    base = torch.rand(count, 3, 1, 1, generator=generator)
    ramp = torch.linspace(-0.5, 0.5, size)
    direction = torch.rand(count, 2, generator=generator) - 0.5
    gradient = direction[:, 0, None, None] * ramp[None, None, :] + direction[:, 1, None, None] * ramp[None, :, None]
    return (base + gradient[:, None]).clamp(0, 1).expand(count, 3, size, size).clone()


def _light(canvas: Tensor, x: Tensor, y: Tensor, nuisance: dict[str, Tensor]) -> Tensor:
    shade = 1 + nuisance["light_x"][:, None, None] * x + nuisance["light_y"][:, None, None] * y
    return canvas * (shade * nuisance["brightness"][:, None, None])[:, None]


def _ellipse(
    x: Tensor, y: Tensor, cx: float | Tensor, cy: float | Tensor, rx: float | Tensor, ry: float | Tensor
) -> Tensor:
    dx = (x - _col(cx)) / _col(rx)
    dy = (y - _col(cy)) / _col(ry)
    return _soft((1 - torch.sqrt(dx * dx + dy * dy)) * 12)


def _circle(x: Tensor, y: Tensor, cx: float | Tensor, cy: float | Tensor, r: float | Tensor) -> Tensor:
    return _ellipse(x, y, cx, cy, r, r)


def _col(value: float | Tensor) -> float | Tensor:
    return value[:, None, None] if isinstance(value, Tensor) else value


def _soft(signed: Tensor) -> Tensor:
    """Anti-aliased coverage from a signed inside-distance (positive inside)."""
    return torch.sigmoid(signed * 4)


def _paint(canvas: Tensor, alpha: Tensor, colour: Tensor) -> Tensor:
    colour = colour if colour.dim() == 2 else colour[None].expand(len(canvas), 3)
    return canvas.lerp_(colour[:, :, None, None].expand_as(canvas), alpha[:, None].expand_as(canvas))


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _saturated_colours(count: int, generator: torch.Generator) -> Tensor:
    """Distinct, saturated colours from a random hue (HSV with S=0.8, V=0.85)."""
    hue = torch.rand(count, generator=generator) * 6
    k = (torch.tensor([5.0, 3.0, 1.0])[None] + hue[:, None]) % 6
    return 0.85 - 0.85 * 0.8 * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def generate_faces(
    labels: Tensor, identities: Identities, image_size: int, seed: int, chunk: int = 256
) -> tuple[Tensor, Tensor]:
    """Render one image per entry of ``labels`` (identity indices), deterministically from ``seed``.

    Returns:
        images (N, 3, S, S) uint8 and masks (N, S, S) bool.
    """
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
    generator = torch.Generator().manual_seed(seed)
    images, masks = [], []
    for start in range(0, len(labels), chunk):
        img, mask = render_faces(identities.take(labels[start : start + chunk]), image_size, generator)
        images.append(img)
        masks.append(mask)
    if not images:
        return torch.empty(0, 3, image_size, image_size, dtype=torch.uint8), torch.empty(
            0, image_size, image_size, dtype=torch.bool
        )
    return torch.cat(images), torch.cat(masks)


def make_pairs(labels: Tensor, num_pairs: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Half genuine, half impostor pairs of image indices drawn from ``labels``.

    Returns:
        index_a, index_b (P,) and issame (P,) bool, genuine and impostor pairs alternating.
    """
    by_id = {int(k): (labels == k).nonzero()[:, 0] for k in labels.unique()}
    usable = [k for k, idx in by_id.items() if len(idx) >= 2]
    if not usable or len(by_id) < 2:
        raise ValueError("pairs need at least two identities, one of them with two images")
    firsts, seconds, same = [], [], []
    ids = list(by_id)
    for p in range(num_pairs):
        if p % 2 == 0:
            k = usable[int(torch.randint(len(usable), (1,), generator=generator))]
            a, b = by_id[k][torch.randperm(len(by_id[k]), generator=generator)[:2]].tolist()
        else:
            i, j = torch.randperm(len(ids), generator=generator)[:2].tolist()
            a = int(_pick(by_id[ids[i]], generator))
            b = int(_pick(by_id[ids[j]], generator))
        firsts.append(a)
        seconds.append(b)
        same.append(p % 2 == 0)
    return torch.tensor(firsts), torch.tensor(seconds), torch.tensor(same)


def _pick(options: Tensor, generator: torch.Generator) -> Tensor:
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def identity_seed(seed: int, split: str) -> int:
    """Distinct, stable seeds per split so that e.g. validation does not change training data."""
    return (seed * 1_000_003 + sum(ord(c) * 31**i for i, c in enumerate(split))) % (2**62)


__all__ = ["Identities", "generate_faces", "identity_seed", "make_pairs", "render_faces", "sample_identities"]
