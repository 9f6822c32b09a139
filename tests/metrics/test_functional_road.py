"""ROAD's solver internals: the sliced stencil is the convolution, CG's in-place updates are the textbook ones."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from facexai.metrics.functional.road import _batched_pcg, _Neighbours, _stencil, linear_imputation, to_device


def test_sliced_stencil_equals_the_convolution() -> None:
    x = torch.randn(5, 1, 9, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    neighbours = _Neighbours(x)
    expected = F.conv2d(x, _stencil(x.device, torch.float64), padding=1)
    torch.testing.assert_close(neighbours(x), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(neighbours(2 * x), 2 * expected, rtol=0, atol=1e-14)  # buffer reused


def _reference_pcg(
    apply_a: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, diag: torch.Tensor, tol: float, max_iter: int
) -> torch.Tensor:
    """The out-of-place iteration road.py used before its in-place updates."""
    x, r = torch.zeros_like(b), b.clone()
    z = r / diag
    p = z.clone()
    rz = (r * z).sum(dim=(1, 2, 3), keepdim=True)
    b_norm = b.flatten(1).norm(dim=1).clamp(min=1e-30)
    for _ in range(max_iter):
        if (r.flatten(1).norm(dim=1) / b_norm).max() <= tol:
            break
        ap = apply_a(p)
        alpha = rz / (p * ap).sum(dim=(1, 2, 3), keepdim=True).clamp(min=1e-30)
        x, r = x + alpha * p, r - alpha * ap
        z = r / diag
        rz_next = (r * z).sum(dim=(1, 2, 3), keepdim=True)
        p = z + (rz_next / rz.clamp(min=1e-30)) * p
        rz = rz_next
    return x


def test_in_place_cg_equals_the_reference_iteration() -> None:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(4, 2, 12, 10, generator=gen)
    removed = torch.rand(4, 12, 10, generator=gen) < 0.6
    values = images.reshape(8, 1, 12, 10).double()
    unknown = removed.repeat_interleave(2, dim=0).unsqueeze(1).double()
    kernel = _stencil(values.device, torch.float64)
    degree = F.conv2d(torch.ones_like(values[:1]), kernel, padding=1).expand_as(values)
    rhs = unknown * F.conv2d((1 - unknown) * values, kernel, padding=1)

    def apply_a(x: torch.Tensor) -> torch.Tensor:
        x = unknown * x
        return unknown * (degree * x - F.conv2d(x, kernel, padding=1))

    diag = torch.where(unknown > 0, degree, 1.0)
    for max_iter in (3, 200):  # part-way and converged
        ours = _batched_pcg(apply_a, rhs, diag, 1e-6, max_iter)
        torch.testing.assert_close(ours, _reference_pcg(apply_a, rhs, diag, 1e-6, max_iter), rtol=0, atol=1e-12)
    solved = torch.where(unknown > 0, ours, values).float().view(4, 2, 12, 10)
    torch.testing.assert_close(linear_imputation(images, removed), solved, rtol=0, atol=1e-6)


def test_to_device_on_the_cpu_is_a_plain_copy() -> None:
    host = torch.randn(2, 3)
    like = torch.zeros(1, dtype=torch.float64)
    moved = to_device(host, like)
    assert moved.dtype == torch.float64
    assert not moved.is_pinned()
    torch.testing.assert_close(moved, host.double())
