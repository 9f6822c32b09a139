"""Exports that fail must fail in one line and never destroy data (issue 14).

Tiny networks at 16 px keep each export to a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from facexai.export import ExportError, export_onnx, read_metadata
from facexai.writing import OverwriteInputError

SIDE = 16


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 8)
    ).eval()


class Svd(nn.Module):
    """Singular values per channel: aten._linalg_svd has no ONNX translation."""

    def forward(self, images: Tensor) -> Tensor:
        return torch.linalg.svd(images.flatten(2)).S.flatten(1)


class Branching(nn.Module):
    """Python control flow on a tensor value: torch.export cannot follow it."""

    def forward(self, images: Tensor) -> Tensor:
        if images.sum() > 0:
            return images.mean(dim=(2, 3))
        return -images.mean(dim=(2, 3))


class Noisy(nn.Module):
    """Adds fresh noise in forward, also in eval mode (what the reviewer's 0.68 'ill-conditioned' model did)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_net()

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images) + 0.5 * torch.randn(len(images), 8)


def export(net: nn.Module, path: Path, **kwargs) -> object:
    return export_onnx(net, path, SIDE, task="verification", **kwargs)


def test_unsupported_operator_is_one_line_naming_model_and_operator(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as failed:
        export(Svd(), tmp_path / "svd.onnx")
    message = str(failed.value)
    assert message.startswith("torch.onnx could not export Svd: operator aten._linalg_svd has no ONNX translation")
    assert "\n" not in message
    assert isinstance(failed.value, ValueError)
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even the hidden partial file


def test_untraceable_python_is_one_line_naming_the_source_line(tmp_path: Path) -> None:
    with pytest.raises(
        ExportError,
        match=r"could not export Branching: torch.export cannot follow "
        r".*test_export_hardening\.py:\d+ \(if images\.sum\(\) > 0:\)",
    ) as failed:
        export(Branching(), tmp_path / "branch.onnx")
    assert "\n" not in str(failed.value)


def test_failed_export_keeps_the_previous_output(tmp_path: Path) -> None:
    """Before: the failed export deleted ``--output``, a good file from an earlier export."""
    path = tmp_path / "face.onnx"
    export(tiny_net(), path)
    good = path.read_bytes()
    with pytest.raises(ExportError):
        export(Svd(), path)
    assert path.read_bytes() == good
    with pytest.raises(ExportError, match="not deterministic"):
        export(Noisy(), path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.onnx"]
    assert read_metadata(path).embedding_size == 8


def test_output_equal_to_the_checkpoint_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"weights")
    with pytest.raises(OverwriteInputError, match="would overwrite the input"):
        export(tiny_net(), checkpoint, checkpoint=checkpoint)
    assert checkpoint.read_bytes() == b"weights"


def test_nondeterministic_model_is_refused(tmp_path: Path) -> None:
    """Before: the noise was called ill-conditioning (PyTorch 'moved' under rounding) and accepted."""
    with pytest.raises(
        ExportError,
        match=r"^model is not deterministic in eval mode: two PyTorch runs on the same "
        r"noise input differ by [0-9.e+-]+ in 'embedding'",
    ):
        export(Noisy(), tmp_path / "noisy.onnx")
    assert not (tmp_path / "noisy.onnx").exists()


def test_external_data_is_renamed_with_the_graph(tmp_path: Path, monkeypatch) -> None:
    """Graphs over protobuf's limit keep their weights in ``<name>.data``: it must follow the rename."""
    from facexai.export import onnx as export_module

    monkeypatch.setattr(export_module, "EXTERNAL_DATA_BYTES", -1)
    path = tmp_path / "big.onnx"
    export(tiny_net(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    model = onnx.load(str(path), load_external_data=False)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"big.onnx.data"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).normal(size=(2, 3, SIDE, SIDE)).astype(np.float32)
    with torch.no_grad():
        expected = tiny_net()(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(session.run(None, {"images": images})[0], expected, atol=1e-5)
