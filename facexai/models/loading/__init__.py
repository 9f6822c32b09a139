"""The three readers behind :func:`facexai.models.load_face_model`, one file each.

``iresnet_state`` rebuilds facexai's ``IResNet`` from an arcface_torch / insightface state dict,
``onnx_graph`` converts and checks an ONNX face model, and ``canonical`` rewrites the converted
graph into the standard torch modules explainers expect. They are split out of ``face_model``
because each has its own failure modes and tests, and so that ``onnx`` / ``onnx2torch`` (slow
to import) are only imported when an ONNX file is actually loaded.
"""

# One helper for every loader and exporter message: a long cause (onnxruntime appends stack
# traces) stays one line.
from facexai.export.metadata import first_line

__all__ = ["first_line"]
