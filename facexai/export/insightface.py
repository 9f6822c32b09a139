"""insightface's input convention for ONNX face models, readable without torch.

``load_face_model`` (PyTorch) and the audit (onnxruntime only) must feed a third-party file the
same way insightface's ``ArcFaceONNX`` does, so the rule lives here once.
"""

from __future__ import annotations

from pathlib import Path

import onnx


def insightface_normalisation(model: onnx.ModelProto) -> tuple[float, float]:
    """(mean, std) that insightface's ``ArcFaceONNX`` derives from the graph's first 8 node names.

    Mirrors insightface 2.1 ``model_zoo/arcface_onnx.py``: a ``Sub``/``_minus`` and a
    ``Mul``/``_mul`` node name among the first eight nodes mean the graph normalises itself
    (mxnet conversions), so it takes raw pixels (0, 1); otherwise (127.5, 127.5).
    """
    names = [node.name for node in model.graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return (0.0, 1.0) if has_sub and has_mul else (127.5, 127.5)


def file_normalisation(path: str | Path) -> tuple[float, float]:
    """:func:`insightface_normalisation` of an ONNX file (its weights in external files not read)."""
    return insightface_normalisation(onnx.load(str(path), load_external_data=False))
