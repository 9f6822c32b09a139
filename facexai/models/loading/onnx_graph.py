"""Read, check and convert an ONNX face model (insightface model zoo, arcface_torch, facexai).

The graph is checked before conversion so that users get a one-line reason instead of a deep
stack: one image input (N, 3, S, S), one embedding output (N, D), every op convertible by
onnx2torch. arcface_torch's torch2onnx declares the output batch as a fixed 1 while the input is
dynamic, so the batch dimension is made symbolic in memory before onnxruntime or onnx2torch see
it. The file itself is never modified.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnx2torch
import torch
import torch.nn.functional as F
from onnx2torch.node_converters import get_converter
from torch import Tensor, fx

from facexai.export.insightface import insightface_normalisation
from facexai.export.metadata import PREFIX, ExportMetadata
from facexai.models.loading import first_line
from facexai.models.loading.layout import InputLayout

#: smallest per-sample cosine between the converted model and onnxruntime that is accepted
PARITY_MIN_COSINE = 0.9999
_log = logging.getLogger(__name__)


def read_onnx(path: Path) -> onnx.ModelProto:
    """Parse and check the protobuf; a corrupted or truncated file gives a one-line ValueError."""
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:  # DecodeError, ValidationError, external-data errors
        raise ValueError(f"{path} is not a readable ONNX model (corrupted or truncated?): {first_line(err)}") from err
    return model


def image_input(model: onnx.ModelProto, path: Path) -> int | None:
    """Check the single (N, 3, S, S) input; return S, or None when the side is symbolic."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(value.name for value in inputs)
        raise ValueError(f"{path} has {len(inputs)} graph inputs ({names}); a face model takes one image batch")
    dims = _dims(inputs[0])
    if len(dims) != 4 or dims[1] != 3:
        raise ValueError(
            f"{path} input {inputs[0].name!r} has shape {_shape(dims)}; expected an image batch (N, 3, S, S)"
        )
    height, width = dims[2], dims[3]
    if isinstance(height, int) and isinstance(width, int) and height != width:
        raise ValueError(f"{path} input is {height}x{width}; face models take square faces")
    return height if isinstance(height, int) else width if isinstance(width, int) else None


def embedding_output(model: onnx.ModelProto, path: Path) -> None:
    """Check there is one output of rank 2 (N, D) (rank is only checked when declared)."""
    outputs = list(model.graph.output)
    if len(outputs) != 1:
        names = ", ".join(value.name for value in outputs)
        raise ValueError(
            f"{path} has {len(outputs)} graph outputs ({names}); a face model returns one embedding (N, D)"
        )
    if outputs[0].type.tensor_type.HasField("shape"):
        dims = _dims(outputs[0])
        if len(dims) != 2:
            raise ValueError(f"{path} output {outputs[0].name!r} has shape {_shape(dims)}; expected embeddings (N, D)")


def default_layout(model: onnx.ModelProto, side: int | None, path: Path) -> InputLayout:
    """The file's layout: facexai metadata when present, else the insightface model-zoo convention.

    insightface's ``ArcFaceONNX`` feeds RGB and normalises with 127.5 / 127.5, except for graphs
    that start with ``Sub``/``Mul`` nodes (mxnet conversions), which take raw pixels.
    """
    props = {prop.key: prop.value for prop in model.metadata_props}
    if any(key.startswith(PREFIX) for key in props):
        meta = ExportMetadata.from_props(props, str(path))
        if meta.task != "verification" or meta.explained:
            kind = f"explained ({meta.explainer})" if meta.explained else meta.task
            raise ValueError(f"{path} is a facexai {kind} export; load_face_model needs a plain verification export")
        mean, std = meta.graph_normalisation
        order = "BGR" if "BGR" in props.get(PREFIX + "input_layout", "") else "RGB"
        return InputLayout(meta.input_size, (mean,) * 3, (std,) * 3, order)
    mean, std = insightface_normalisation(model)
    return InputLayout(side or 0, (mean,) * 3, (std,) * 3, "RGB")


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make the input and output batch dimension symbolic, in place (intermediate shapes re-inferred).

    In place because the proto is the loader's own parsed copy and face models are hundreds of MB.
    """
    initializers = {tensor.name for tensor in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in initializers or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    return model


def convert(model: onnx.ModelProto, path: Path) -> fx.GraphModule:
    """onnx2torch conversion in eval mode (onnx2torch returns train mode: BN would use batch stats)."""
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    missing = sorted(
        {
            f"{node.op_type} (opset {opsets.get(node.domain)})"
            for node in model.graph.node
            if not _convertible(node, opsets)
        }
    )
    if missing:
        raise ValueError(f"onnx2torch cannot convert {path}: no converter for {', '.join(missing)}")
    try:
        graph_module = onnx2torch.convert(model)
    except Exception as err:  # converters raise NotImplementedError/ValueError for unsupported attributes
        raise ValueError(f"onnx2torch cannot convert {path}: {first_line(err)}") from err
    return graph_module.eval()


def _convertible(node: onnx.NodeProto, opsets: dict[str, int]) -> bool:
    try:
        get_converter(domain=node.domain, operation_type=node.op_type, version=opsets.get(node.domain, 1))
    except NotImplementedError:
        return False
    return True


def onnxruntime_outputs(model: onnx.ModelProto, inputs: Tensor, path: Path) -> Tensor:
    """The reference: onnxruntime's output for ``inputs`` (already in the file's layout)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # declared-vs-actual shape warnings are expected, see module doc
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        (output,) = session.run(None, {name: inputs.numpy().astype(np.float32)})
    except Exception as err:  # onnxruntime's own exception types
        raise ValueError(f"onnxruntime cannot run {path} on a batch of {len(inputs)}: {first_line(err)}") from err
    return torch.from_numpy(np.asarray(output, dtype=np.float32))


def parity_cosine(ours: Tensor, reference: Tensor, path: Path) -> float:
    """Smallest per-sample cosine; raises when below :data:`PARITY_MIN_COSINE`."""
    if ours.shape != reference.shape:
        raise ValueError(f"{path}: converted model returns {tuple(ours.shape)}, onnxruntime {tuple(reference.shape)}")
    cosine = float(F.cosine_similarity(ours.double(), reference.double(), dim=1).min())
    _log.debug("%s: parity cosine with onnxruntime %.8f", path, cosine)
    if not cosine >= PARITY_MIN_COSINE:  # also catches NaN
        raise ValueError(
            f"{path}: the converted model disagrees with onnxruntime (per-sample cosine {cosine:.6f} "
            f"< {PARITY_MIN_COSINE}); refusing to use it"
        )
    return cosine


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def _shape(dims: list[int | str]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"
