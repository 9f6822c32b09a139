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

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import facexai
from facexai.explain import Explainer
from facexai.explain.base import eval_mode
from facexai.export import explained as ex
from facexai.export import parity
from facexai.export.input_size import insightface_note, resolve_input_size
from facexai.export.metadata import INPUT_FORMATS, ExportMetadata
from facexai.export.onnx_file import check_graph, external_data_path, finalise, move_external_data
from facexai.export.torch_onnx import torch_export
from facexai.writing import atomic_path, refuse_inputs

logger = logging.getLogger(__name__)

#: above this many weight bytes the graph is saved with an external ``.data`` file (protobuf: 2 GB)
EXTERNAL_DATA_BYTES = 1_500_000_000


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
    **kwargs: Any,
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
            move_external_data(partial, path)
        except BaseException:
            external_data_path(partial).unlink(missing_ok=True)
            raise
    logger.info("exported %s (parity max abs diff %.3g)", path, result.parity.worst)
    return replace(result, path=path)


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
    finalise(path, meta)
    return ExportResult(path, meta, report)


def _network_and_task(model: nn.Module, task: str | None) -> tuple[nn.Module, str]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    from facexai.models.modules import ClassifierModule, VerificationModule

    inferred = {ClassifierModule: "classification", VerificationModule: "verification"}
    found = next((t for cls, t in inferred.items() if isinstance(model, cls)), None)
    resolved = task if task is not None else found
    if resolved is None:
        raise ValueError(
            f"task must be 'classification' or 'verification' for a plain {type(model).__name__} "
            "(it is inferred only for facexai's ClassifierModule and VerificationModule)"
        )
    if task is not None and task not in ("classification", "verification"):
        raise ValueError(f"Unknown task {task!r}. Available: classification, verification")
    if task is not None and found is not None and task != found:
        raise ValueError(f"task={task!r} contradicts the {type(model).__name__}, a {found} model")
    net = model.explained_model if isinstance(model, (ClassifierModule, VerificationModule)) else model
    return net, resolved


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
        """The network's output for ``images`` (pixels in [0, 255] when ``raw_pixels``)."""
        if self.raw_pixels:
            images = (images - 127.5) * (1.0 / 127.5)
        return self.net(images)


def _export_plain(
    net: nn.Module, path: Path, meta: ExportMetadata, tolerance: float, shown: Path
) -> parity.ParityReport:
    raw = meta.input_format == "raw_pixels"
    example = (torch.randn(2, 3, meta.input_size, meta.input_size) * (127.5 if raw else 1.0),)
    torch_export(PlainGraph(net, raw).eval(), example, path, meta, _external(net), type(net).__name__)
    check_graph(path, meta)
    reference = parity.plain_reference(net, meta.output_names[0])
    return parity.check_parity(path, reference, None, meta.input_size, raw, tolerance, shown)


def _export_explained(
    net: nn.Module, explainer: Explainer, path: Path, meta: ExportMetadata, tolerance: float, shown: Path
) -> parity.ParityReport:
    width = meta.output_width()
    module = ex.trace_explained(explainer, net, meta.task, meta.input_size, width).eval()
    example = ex.example_inputs(meta.task, ex.TRACE_BATCH, meta.input_size, width)
    torch_export(module, example, path, meta, _external(net), f"{type(net).__name__} with {explainer.name}")
    check_graph(path, meta)
    reference = parity.explained_reference(net, explainer, meta.task)
    target = parity.target_maker(net, meta.task)
    return parity.check_parity(path, reference, target, meta.input_size, False, tolerance, shown)


def _external(net: nn.Module) -> bool:
    """Whether the weights go to a ``.data`` file beside the graph (over :data:`EXTERNAL_DATA_BYTES`)."""
    return sum(t.numel() * t.element_size() for t in net.state_dict().values()) > EXTERNAL_DATA_BYTES
