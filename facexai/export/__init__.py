"""ONNX export (plain and explained), parity checks, metadata and the torch-free audit.

>>> from facexai.export import to_onnx
>>> to_onnx(module, "face.onnx", input_size=112)                     # insightface layout
>>> to_onnx(module, "face_gradcam.onnx", explainer="gradcam")        # (images, target) -> map

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
    "InputOverrides": "facexai.export.audit_model",
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
