"""Input validation shared by the metric functions and classes (user errors -> ValueError)."""

from __future__ import annotations

from torch import Tensor

MODES = ("deletion", "insertion")


def check_maps(maps: Tensor, name: str = "maps") -> Tensor:
    """Return ``maps`` as (N, H, W); accept (N, 1, H, W). Raise for other shapes or NaN/Inf."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(maps).__name__}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {tuple(maps.shape)}")
    if not maps.isfinite().all():
        raise ValueError(f"{name} contain NaN or Inf; explanations must be finite")
    return maps


def check_images_maps(images: Tensor, maps: Tensor) -> Tensor:
    """Check that ``images`` (N, C, H, W) and ``maps`` agree; return maps as (N, H, W)."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must have shape (N, C, H, W), got {shape}")
    maps = check_maps(maps)
    if len(maps) != len(images):
        raise ValueError(f"got {len(images)} images but {len(maps)} maps; give one map per image")
    if maps.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"maps have spatial size {tuple(maps.shape[-2:])} but images {tuple(images.shape[-2:])}; "
            "upsample the maps to the input size first"
        )
    return maps.to(images.device)


def check_same_shape(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` unless two tensors have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_scores(scores: Tensor, name: str = "scores") -> None:
    """Raise ``ValueError`` unless ``scores`` is a finite 1-D tensor."""
    if scores.dim() != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(scores.shape)}")
    if not scores.isfinite().all():
        raise ValueError(f"{name} contain NaN or Inf")


def check_steps(steps: int) -> None:
    """Raise ``ValueError`` unless ``steps`` is an integer >= 1."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")


def check_mode(mode: str) -> None:
    """Raise ``ValueError`` for a perturbation mode other than deletion/insertion."""
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}. Available: {', '.join(MODES)}")


def check_chunk_size(chunk_size: int) -> None:
    """Raise ``ValueError`` unless ``chunk_size`` is an integer >= 1."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")


def check_curves(curves: Tensor, steps: int | None = None) -> None:
    """Raise ``ValueError`` unless ``curves`` is a finite (N, steps + 1) tensor with steps >= 1."""
    if curves.dim() != 2 or curves.shape[1] < 2:
        raise ValueError(f"curves must have shape (N, steps + 1) with steps >= 1, got {tuple(curves.shape)}")
    if steps is not None and curves.shape[1] != steps + 1:
        raise ValueError(
            f"this metric was built with steps={steps} and expects curves of {steps + 1} points, got {curves.shape[1]}"
        )
    if not curves.isfinite().all():
        raise ValueError("curves contain NaN or Inf")
