"""ONNX export of facexai models, optionally with an explainer traced into the graph.

Plain exports follow the insightface ArcFace layout for verification models: one input
(N, 3, S, S), RGB, normalised as (pixel - 127.5) / 127.5, one output (N, D); the batch axis is
dynamic. insightface's ``ArcFaceONNX`` guesses the normalisation from the graph (its first eight
node names: a ``Sub`` and a ``Mul`` mean "mxnet model, normalisation inside", anything else means
"feed (x - 127.5) / 127.5"). facexai therefore offers two input formats and checks that the
heuristic reads each one correctly:

- ``input_format="normalised"`` (default): the graph starts with the backbone (node names
  ``node_Conv...``), insightface normalises with 127.5 / 127.5 itself;
- ``input_format="raw_pixels"``: (x - 127.5) * (1 / 127.5) is baked in as the first two nodes,
  named ``Sub_facexai_input`` and ``Mul_facexai_input``, so insightface feeds raw pixels
  (mean 0, std 1) and other consumers need no preprocessing at all.

Every file carries facexai metadata (see :mod:`facexai.export.metadata`) and passed
``onnx.checker`` and a parity check against PyTorch on fresh noise and synthetic faces.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

import facexai
from facexai.explain import Explainer
from facexai.explain.base import eval_mode
from facexai.export import explained as ex
from facexai.export import parity
from facexai.export.errors import ExportError
from facexai.export.input_size import insightface_note, resolve_input_size
from facexai.export.insightface import insightface_normalisation
from facexai.export.metadata import INPUT_FORMATS, ExportMetadata, first_line
from facexai.writing import atomic_path, refuse_inputs

logger = logging.getLogger(__name__)

#: above this many weight bytes the graph is saved with an external ``.data`` file (protobuf: 2 GB)
EXTERNAL_DATA_BYTES = 1_500_000_000
NORMALISATION_NODES = ("Sub_facexai_input", "Mul_facexai_input")


@dataclass(frozen=True)
class ExportResult:
    """The exported file, its metadata and the measured parity."""

    path: Path
    metadata: ExportMetadata
    parity: parity.ParityReport


def to_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: int | None = None,
    explainer: str | Explainer | None = None,
    **kwargs: object,
) -> Path:
    """Export ``model`` (optionally with ``explainer``) to ONNX; see :func:`export_onnx`.

    Returns:
        The path of the written, checked file.
    """
    return export_onnx(model, path, input_size, explainer, **kwargs).path


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: int | None = None,
    explainer: str | Explainer | None = None,
    *,
    task: str | None = None,
    class_names: list[str] | None = None,
    input_format: str = "normalised",
    explainer_options: dict | None = None,
    checkpoint: str | Path | None = None,
    tolerance: float = parity.DEFAULT_TOLERANCE,
) -> ExportResult:
    """Export a model to ONNX with a dynamic batch axis, check it and record its metadata.

    Args:
        model: a facexai ``ClassifierModule``/``VerificationModule`` (its ``explained_model`` is
            exported; ``forward`` is the same network) or any ``nn.Module`` mapping normalised
            images (N, 3, S, S) to logits or embeddings (then ``task`` is required).
        path: output ``.onnx`` file.
        input_size: square input side; ``None`` takes the model's own (see
            :mod:`facexai.export.input_size`: ``backbone_kwargs.img_size``, the backbone's
            ``img_size`` or timm config, else 112). A side the model is not built for is refused.
            Verification exports at a side other than 112 carry a note (metadata ``notes``):
            insightface's ArcFaceONNX wrapper expects 112 px.
        explainer: name or instance of an exportable explainer (see
            :data:`facexai.export.explained.EXPORTABLE_EXPLAINERS`). The graph then takes
            ``(images, target)`` -- class indices (N,) int64 or partner embeddings (N, D) -- and
            returns ``(output, map[, similarity])``.
        task: "classification" or "verification"; inferred for facexai modules.
        class_names: stored in the metadata (defaults to the module's ``class_names``).
        input_format: "normalised" or "raw_pixels" (see the module docstring).
        explainer_options: keyword options when ``explainer`` is a name (e.g. ``target_layer``).
        checkpoint: the checkpoint the weights came from; its sha256 goes into the metadata.
        tolerance: largest tolerated |onnxruntime - PyTorch| in the parity check.

    The file is written beside ``path`` and renamed onto it only once every check passed, so a
    failed export leaves a previous file at ``path`` untouched.

    Raises:
        ValueError: bad task, input size, input format or an explainer that cannot be exported.
        OverwriteInputError: ``path`` is the ``checkpoint`` (a ValueError).
        ExportError: torch.onnx cannot export the model (names the model and, where the exporter
            says, the operator or the source line), the model is not deterministic in eval mode,
            or the graph does not match PyTorch (a ValueError).
    """
    net, task = _network_and_task(model, task)
    input_size = resolve_input_size(model, input_size)
    explainer = _check_options(input_format, explainer, explainer_options, tolerance)
    path = Path(path)
    refuse_inputs(path, [checkpoint], what="output")
    with eval_mode(net):
        width = _output_width(net, input_size)
        meta = _base_metadata(model, task, input_size, input_format, width, class_names, checkpoint)
        note = insightface_note(input_size) if task == "verification" and explainer is None else None
        meta = replace(meta, notes=(note,) if note else ())
        if explainer is not None:
            explainer = ex.with_resolved_layer(explainer, net, torch.zeros(1, 3, input_size, input_size))
            meta = _explained_metadata(meta, explainer)
        return _write_atomically(net, path, meta, explainer, tolerance)


def _write_atomically(
    net: nn.Module, path: Path, meta: ExportMetadata, explainer: Explainer | None, tolerance: float
) -> ExportResult:
    """Export into a hidden sibling file and rename it onto ``path`` only when every check passed.

    Before, the export wrote ``path`` itself and deleted it on failure, which destroyed a good
    file from an earlier export. A failed or interrupted export now leaves no trace.
    """
    with atomic_path(path) as partial:
        try:
            result = _write_checked(net, partial, meta, explainer, tolerance, path)
            _move_external_data(partial, path)
        except BaseException:
            _external_data(partial).unlink(missing_ok=True)
            raise
    logger.info("exported %s (parity max abs diff %.3g)", path, result.parity.worst)
    return replace(result, path=path)


def _external_data(path: Path) -> Path:
    """Where the exporter puts the weights of a graph over protobuf's limit: ``<name>.data``."""
    return path.with_name(path.name + ".data")


def _move_external_data(partial: Path, target: Path) -> None:
    """Point the partial graph's external tensors at ``<target>.data`` and move that file there."""
    data = _external_data(partial)
    if not data.exists():
        return
    model = onnx.load(str(partial), load_external_data=False)
    for tensor in _graph_tensors(model.graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = _external_data(target).name
    onnx.save(model, str(partial))
    os.replace(data, _external_data(target))


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


def _check_options(
    input_format: str, explainer: str | Explainer | None, options: dict | None, tolerance: float
) -> Explainer | None:
    """Validate the export options up front (before anything is written); resolve the explainer."""
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative number, got {tolerance!r}")
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"Unknown input_format {input_format!r}. Available: {', '.join(INPUT_FORMATS)}")
    if explainer is None:
        if options:
            raise ValueError("explainer_options were given without an explainer")
        return None
    if input_format != "normalised":
        raise ValueError("explained exports take normalised images; use input_format='normalised'")
    return ex.resolve_explainer(explainer, options)


def _explained_metadata(meta: ExportMetadata, explainer: Explainer) -> ExportMetadata:
    verification = meta.task == "verification"
    return replace(
        meta,
        explainer=explainer.name,
        explainer_options=ex.explainer_options(explainer),
        input_names=("images", "target"),
        output_names=("output", "map", "similarity") if verification else ("output", "map"),
    )


def _write_checked(
    net: nn.Module, path: Path, meta: ExportMetadata, explainer: Explainer | None, tolerance: float, shown: Path
) -> ExportResult:
    """Export, check against PyTorch, then write the metadata; the file is complete only at the end.

    ``shown`` is the output path that errors name (``path`` is its hidden temporary sibling).
    """
    if explainer is None:
        report = _export_plain(net, path, meta, tolerance, shown)
    else:
        report = _export_explained(net, explainer, path, meta, tolerance, shown)
    floor = max(report.noise_floor.values()) if report.noise_floor else None
    meta = replace(meta, parity_max_abs_diff=report.worst, parity_noise_floor=floor)
    _finalise(path, meta)
    return ExportResult(path, meta, report)


def _network_and_task(model: nn.Module, task: str | None) -> tuple[nn.Module, str]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from facexai.models.modules import ClassifierModule, VerificationModule

    inferred = {ClassifierModule: "classification", VerificationModule: "verification"}
    found = next((t for cls, t in inferred.items() if isinstance(model, cls)), None)
    if task is None and found is None:
        raise ValueError(
            f"task must be 'classification' or 'verification' for a plain {type(model).__name__} "
            "(it is inferred only for facexai's ClassifierModule and VerificationModule)"
        )
    if task is not None and task not in ("classification", "verification"):
        raise ValueError(f"Unknown task {task!r}. Available: classification, verification")
    if task is not None and found is not None and task != found:
        raise ValueError(f"task={task!r} contradicts the {type(model).__name__}, a {found} model")
    net = model.explained_model if found is not None else model
    return net, task or found


def _output_width(net: nn.Module, input_size: int) -> int:
    """The output width, from one forward pass; a side the network cannot take is a ValueError."""
    try:
        with torch.no_grad():
            output = net(torch.zeros(1, 3, input_size, input_size))
    except RuntimeError as err:  # e.g. "mat1 and mat2 shapes cannot be multiplied"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"the model does not run on {input_size}x{input_size} inputs ({first}); "
            "pass the input size it was trained at"
        ) from err
    if not isinstance(output, Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"the model must return (N, K) logits or (N, D) embeddings, got {shape}")
    return int(output.shape[1])


def _base_metadata(
    model: nn.Module,
    task: str,
    input_size: int,
    input_format: str,
    width: int,
    class_names: list[str] | None,
    checkpoint: str | Path | None,
) -> ExportMetadata:
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    if names is not None and len(names) != width:
        raise ValueError(f"class_names has {len(names)} names but the model has {width} outputs")
    verification = task == "verification"
    return ExportMetadata(
        task=task,
        input_size=input_size,
        input_format=input_format,
        output_names=("embedding",) if verification else ("logits",),
        version=facexai.__version__,
        embedding_size=width if verification else None,
        num_classes=None if verification else width,
        class_names=None if verification or names is None else tuple(str(n) for n in names),
        source_sha256=None if checkpoint is None else file_sha256(checkpoint),
    )


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PlainGraph(nn.Module):
    """The network, with (x - 127.5) * (1 / 127.5) in front for raw-pixel inputs."""

    def __init__(self, net: nn.Module, raw_pixels: bool) -> None:
        super().__init__()
        self.net, self.raw_pixels = net, raw_pixels

    def forward(self, images: Tensor) -> Tensor:
        if self.raw_pixels:
            images = (images - 127.5) * (1.0 / 127.5)
        return self.net(images)


def _export_plain(
    net: nn.Module, path: Path, meta: ExportMetadata, tolerance: float, shown: Path
) -> parity.ParityReport:
    raw = meta.input_format == "raw_pixels"
    example = (torch.randn(2, 3, meta.input_size, meta.input_size) * (127.5 if raw else 1.0),)
    _torch_export(PlainGraph(net, raw).eval(), example, path, meta, _weight_bytes(net), type(net).__name__)
    _check_graph(path, meta)
    reference = parity.plain_reference(net, meta.output_names[0])
    return parity.check_parity(path, reference, None, meta.input_size, raw, tolerance, shown)


def _export_explained(
    net: nn.Module, explainer: Explainer, path: Path, meta: ExportMetadata, tolerance: float, shown: Path
) -> parity.ParityReport:
    width = meta.embedding_size or meta.num_classes
    module = ex.trace_explained(explainer, net, meta.task, meta.input_size, width).eval()
    example = ex.example_inputs(meta.task, ex.TRACE_BATCH, meta.input_size, width)
    _torch_export(module, example, path, meta, _weight_bytes(net), f"{type(net).__name__} with {explainer.name}")
    _check_graph(path, meta)
    reference = parity.explained_reference(net, explainer, meta.task)
    target = parity.target_maker(net, meta.task)
    return parity.check_parity(path, reference, target, meta.input_size, False, tolerance, shown)


def _weight_bytes(net: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


def _torch_export(
    module: nn.Module, example: tuple[Tensor, ...], path: Path, meta: ExportMetadata, weight_bytes: int, name: str
) -> None:
    """``torch.onnx.export(dynamo=True)`` with one dynamic batch dimension shared by all inputs.

    Weights go into the ``.onnx`` file itself (one file to deploy) unless protobuf's 2 GB limit
    is near; then they are written to ``<name>.data`` beside it.

    Raises:
        ExportError: the exporter failed; names the model (``name``) and the operator or source
            line the exporter blames (its own message is pages of advice for torch developers).
    """
    batch = torch.export.Dim("batch", min=1, max=65536)
    captured = io.StringIO()  # the exporter prints progress lines; a library must not
    try:
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            # inputs sharing the batch Dim make the exporter note that it keeps one name: expected
            warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamo=True,
                dynamic_shapes=tuple({0: batch} for _ in example),
                input_names=list(meta.input_names),
                output_names=list(meta.output_names),
                external_data=weight_bytes > EXTERNAL_DATA_BYTES,
                verbose=False,
            )
    except Exception as err:  # TorchExportError, ConversionError, and torch internals they do not wrap
        raise ExportError(f"torch.onnx could not export {name}: {export_failure(err)}") from err
    finally:
        logger.debug("torch.onnx.export output:\n%s", captured.getvalue())


#: how the exporter names an operator it cannot translate, and the user line torch.export blames
OPERATOR = re.compile(r"OpOverload\(op='([\w.]+)'|target=torch\.ops\.([\w.]+?)(?:\.default)?\]|(aten::\w+)")
USER_LINE = re.compile(r'The following call raised this error:\s*File "([^"]+)", line (\d+)[^\n]*\n\s*(.+)')


def export_failure(err: BaseException) -> str:
    """The cause of an exporter failure in one line: operator or source line, and the first message line.

    The exporter wraps the real error (``DispatchError``, ``GuardOnDataDependentSymNode``, ...)
    in ``__cause__`` chains; the innermost one says what went wrong.
    """
    chain = [err]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    text = "\n".join(str(e) for e in chain)
    root = chain[-1]
    summary = f"{type(root).__name__}: {first_line(root)}"
    if (found := OPERATOR.search(text)) is not None:
        operator = next(group for group in found.groups() if group)
        return f"operator {operator} has no ONNX translation ({summary})"
    if (line := USER_LINE.search(text)) is not None:
        return f"torch.export cannot follow {line[1]}:{line[2]} ({line[3].strip()}): {summary}"
    return summary


def _check_graph(path: Path, meta: ExportMetadata) -> None:
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


def _finalise(path: Path, meta: ExportMetadata) -> None:
    """Write the metadata and run the full ONNX checker on the final file."""
    model = onnx.load(str(path), load_external_data=False)
    kept = {p.key: p.value for p in model.metadata_props if not p.key.startswith("facexai.")}
    onnx.helper.set_model_props(model, {**kept, **meta.to_props()})
    model.doc_string = f"facexai {meta.task} model" + (f" explained by {meta.explainer}" if meta.explainer else "")
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
