"""The three readers behind :func:`facexai.models.load_face_model`, one file each.

``iresnet_state`` rebuilds facexai's ``IResNet`` from an arcface_torch / insightface state dict,
``onnx_graph`` converts and checks an ONNX face model, and ``canonical`` rewrites the converted
graph into the standard torch modules explainers expect. They are split out of ``face_model``
because each has its own failure modes and tests, and so that ``onnx`` / ``onnx2torch`` (slow
to import) are only imported when an ONNX file is actually loaded.
"""


def first_line(err: BaseException) -> str:
    """The first line of an error message: loader errors stay one line even for long causes."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
