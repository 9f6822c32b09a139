"""The written ONNX file: its external weights, insightface's normalisation nodes, metadata and checks.

Steps of :func:`facexai.export.onnx.export_onnx` that work on the file torch.onnx wrote, not on
the model: they need only ``onnx``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import onnx

from facexai.export.insightface import insightface_normalisation
from facexai.export.metadata import ExportMetadata

#: names insightface's ``ArcFaceONNX`` looks for among the first nodes to detect in-graph normalisation
NORMALISATION_NODES = ("Sub_facexai_input", "Mul_facexai_input")


def external_data_path(path: Path) -> Path:
    """Where the exporter puts the weights of a graph over protobuf's limit: ``<name>.data``."""
    return path.with_name(path.name + ".data")


def move_external_data(partial: Path, target: Path) -> None:
    """Point the partial graph's external tensors at ``<target>.data`` and move that file there."""
    data = external_data_path(partial)
    if not data.exists():
        return
    model = onnx.load(str(partial), load_external_data=False)
    for tensor in _graph_tensors(model.graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = external_data_path(target).name
    onnx.save(model, str(partial))
    os.replace(data, external_data_path(target))


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of a graph: initializers and tensor attributes, subgraphs (Scan bodies) included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _graph_tensors(subgraph)


def check_graph(path: Path, meta: ExportMetadata) -> None:
    """Name the normalisation nodes and verify what insightface will infer from the graph."""
    model = onnx.load(str(path), load_external_data=False)
    if meta.input_format == "raw_pixels":
        _name_normalisation_nodes(model)
    if meta.task == "verification" and not meta.explained:
        expected = (0.0, 1.0) if meta.input_format == "raw_pixels" else (127.5, 127.5)
        inferred = insightface_normalisation(model)
        if inferred != expected:
            raise RuntimeError(
                f"insightface would normalise this graph with mean/std {inferred}, not {expected}; "
                "the first node names of the exported graph changed"
            )
    onnx.save(model, str(path))


def _name_normalisation_nodes(model: onnx.ModelProto) -> None:
    """Name the Sub reading the image input and the Mul reading the Sub as insightface expects."""
    head = list(model.graph.node[:8])
    source = model.graph.input[0].name
    for op, new_name in zip(("Sub", "Mul"), NORMALISATION_NODES, strict=True):
        node = next((n for n in head if n.op_type == op and source in n.input), None)
        if node is None:
            raise RuntimeError(f"the raw-pixel graph does not start with Sub, Mul: {[n.op_type for n in head]}")
        node.name, source = new_name, node.output[0]


def finalise(path: Path, meta: ExportMetadata) -> None:
    """Write the metadata and run the full ONNX checker on the final file."""
    model = onnx.load(str(path), load_external_data=False)
    kept = {p.key: p.value for p in model.metadata_props if not p.key.startswith("facexai.")}
    onnx.helper.set_model_props(model, {**kept, **meta.to_props()})
    model.doc_string = f"facexai {meta.task} model" + (f" explained by {meta.explainer}" if meta.explainer else "")
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
