"""The export's and the audit's error types, torch-free so that callers can catch them without torch.

``python -m facexai export`` prints a ``ValueError`` as one line, so every way an export can
fail for a reason the user can act on (an operator without an ONNX translation, Python code that
torch.export cannot follow, a model that is not deterministic, a graph that does not match
PyTorch) ends as an :class:`ExportError` naming the model and the cause, never as a traceback
from deep inside the exporter.
"""

from __future__ import annotations


class ExportError(ValueError):
    """The model could not be exported faithfully (one line naming the model and the cause)."""


class AuditModelError(ValueError):
    """The ONNX file cannot be audited as given; one line naming the file and the problem.

    Unloadable or failing in onnxruntime, not a face embedding graph, facexai metadata that is
    malformed or contradicts the graph, or flags that would feed it wrongly.
    """
