"""ONNX export (plain and explained), parity checks, metadata and the torch-free audit.

A facexai ``VerificationModule`` or ``ClassifierModule`` brings its task and input size; any
other network names its task:

>>> import tempfile, torch
>>> from torch import nn
>>> from facexai.export import read_metadata, to_onnx
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 8))
>>> folder = tempfile.TemporaryDirectory()
>>> path = to_onnx(net, f"{folder.name}/face.onnx", 32, task="verification")  # insightface layout
>>> read_metadata(path).output_names
('embedding',)
>>> path = to_onnx(net, f"{folder.name}/face_gradcam.onnx", 32, "gradcam", task="verification")
>>> read_metadata(path).input_names, read_metadata(path).output_names  # (images, target) -> map
(('images', 'target'), ('output', 'map', 'similarity'))
>>> folder.cleanup()

Attributes are imported lazily (PEP 562): :mod:`facexai.export.audit` and
:mod:`facexai.export.metadata` must stay importable without torch, so this package's
``__init__`` imports nothing heavy.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "to_onnx": "facexai.export.onnx",
    "export_onnx": "facexai.export.onnx",
    "ExportResult": "facexai.export.onnx",
    "ExportError": "facexai.export.errors",
    "EXPORTABLE_EXPLAINERS": "facexai.export.explained",
    "ExportMetadata": "facexai.export.metadata",
    "read_metadata": "facexai.export.metadata",
    "run_audit": "facexai.export.audit",
    "AuditOptions": "facexai.export.audit",
    "InputOverrides": "facexai.export.audit_input",
    "CorrRiseOptions": "facexai.export.corrrise_np",
    "export_main": "facexai.export.cli",
    "audit_main": "facexai.export.cli",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'facexai.export' has no attribute {name!r}")
    return getattr(import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return __all__
