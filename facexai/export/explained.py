"""Explanations inside the ONNX graph: trace forward + ``torch.autograd.grad`` into one module.

ONNX has no autograd, so the gradient computation of an explainer must be written out as ordinary
ops. What works with torch 2.14 (docs/design.md): trace a function that runs the
explainer (forward pass and ``torch.autograd.grad``) with ``make_fx(tracing_mode="symbolic")``,
which records the backward ops as plain aten calls, wrap the traced graph in a module and export
that with ``dynamo=True`` and a batch dimension shared by both inputs.

Three things needed help beyond that recipe, each kept in this module:

- ``aten.convolution_backward`` and ``aten.avg_pool2d_backward`` have no ONNX translation (nor a
  torch decomposition); their input gradients are transposed convolutions, so they are
  decomposed into those while tracing (:func:`_convolution_backward`,
  :func:`_avg_pool2d_backward`).
- Python control flow on tensor *values* (``if bool((x < 0).any())``) cannot be traced
  symbolically. The export traces :meth:`~facexai.explain.Explainer.explain_for_tracing`, which
  a method overrides where such a branch is only a diagnostic (LIFT-CAM's summation-to-delta
  warning, skipped) or a shortcut that gives the same number (FG-CAM's signed z+ rule: the
  branch-free form is passed down to its relevance pass).
- Python ``len(images)`` turns the symbolic batch size into the example's constant. Such
  explainers are traced for one sample and exported inside an ONNX ``Scan`` over the batch
  (:class:`PerSampleGraph`): slower than one batched pass, but exact and any batch size.

Every explainer class declares whether it exports (:attr:`~facexai.explain.Explainer.not_exportable`,
with the reason where not: FAME's early-stopping loop, Score-CAM's and CorrRISE's masking loops
over the batch); the others are refused with a ``ValueError`` giving the reason and naming the
exportable ones.
"""

from __future__ import annotations

import copy
import logging
import sysconfig
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._higher_order_ops.scan import scan
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import is_concrete_int

from facexai.explain import (
    EXPLAINERS,
    ClassTarget,
    Explainer,
    SimilarityTarget,
    Target,
    available_explainers,
    create_explainer,
    exportable_explainers,
)
from facexai.explain._cam import CAMExplainer
from facexai.explain.base import explanation_mode, postprocess
from facexai.explain.layers import get_layer
from facexai.export.errors import ExportError

logger = logging.getLogger(__name__)

#: the built-in explainers whose class declares them traceable into ONNX (derived from the classes
#: at import; :func:`~facexai.explain.exportable_explainers` also sees methods registered later)
EXPORTABLE_EXPLAINERS = tuple(exportable_explainers())
#: batch size of the example used for batched tracing (not 1: size 1 would be specialised)
TRACE_BATCH = 2

aten = torch.ops.aten
RawMapFn = Callable[[Explainer, nn.Module, Tensor, Target], Tensor]


class TracedClassTarget(ClassTarget):
    """:class:`ClassTarget` without its value checks (a traced graph cannot branch on values).

    Out-of-range indices are rejected by onnxruntime's Gather at run time instead.
    """

    def __init__(self, labels: Tensor) -> None:  # noqa: D107
        self.labels = labels

    def __call__(self, output: Tensor) -> Tensor:
        """The logit of each sample's class (N,), unchecked."""
        return output.gather(1, self.labels[:, None])[:, 0]

    def select(self, index: Tensor) -> TracedClassTarget:
        """The labels of the samples in ``index``."""
        return TracedClassTarget(self.labels[index])

    def to(self, device: torch.device) -> TracedClassTarget:
        """Itself: a traced graph has one device."""
        return self


class TracedSimilarityTarget(SimilarityTarget):
    """:class:`SimilarityTarget` ("similar" mode) without the finiteness check on its values."""

    def __init__(self, reference: Tensor, mode: str = "similar") -> None:  # noqa: D107
        self.reference = reference
        self.mode = mode

    def select(self, index: Tensor) -> TracedSimilarityTarget:
        """The partner embeddings of the samples in ``index``."""
        return TracedSimilarityTarget(self.reference[index], self.mode)

    def to(self, device: torch.device) -> TracedSimilarityTarget:
        """Itself: a traced graph has one device."""
        return self


def resolve_explainer(explainer: str | Explainer, options: dict | None = None) -> Explainer:
    """An exportable explainer instance, or a ``ValueError`` saying why not and listing the exportable names.

    Whether a method exports is its class's declaration (:attr:`Explainer.not_exportable`, and
    :meth:`Explainer.export_refusal` for option values); a name is checked before the instance is
    built, so a refused method's options are not validated.
    """
    if isinstance(explainer, str):
        if explainer not in exportable_explainers():
            raise ValueError(_not_exportable(explainer, _refusal_of_name(explainer)))
        explainer = create_explainer(explainer, **(options or {}))
    elif not isinstance(explainer, Explainer):
        raise TypeError(f"explainer must be a name or an Explainer, got {type(explainer).__name__}")
    elif options:
        raise ValueError("explainer_options apply to an explainer given by name, not to an instance")
    refusal = explainer.export_refusal()
    if refusal is not None:
        raise ValueError(_not_exportable(explainer.name or type(explainer).__name__, refusal))
    return explainer


def _refusal_of_name(name: str) -> str:
    """Why the explainer registered as ``name`` (not an exportable one) cannot be exported."""
    if name not in available_explainers():
        return "no explainer is registered under that name"
    return EXPLAINERS.get(name).not_exportable or "it is not traceable into ONNX"


def _not_exportable(name: str, why: str) -> str:
    return f"Explainer {name!r} cannot be exported: {why}. Exportable: {', '.join(exportable_explainers())}"


def with_resolved_layer(explainer: Explainer, net: nn.Module, example: Tensor) -> Explainer:
    """A copy whose ``target_layer`` is fixed, so tracing does not run the layer search.

    Configured layer names are checked here, so a typo gets the layer error (with close matches)
    rather than a tracing failure.
    """
    for option in ("target_layer", "explain_at"):
        name = getattr(explainer, option, None)
        if isinstance(name, str) and not (option == "explain_at" and name == "input"):
            get_layer(net, name)
    if not isinstance(explainer, CAMExplainer) or explainer.target_layer is not None:
        return explainer
    resolved = copy.copy(explainer)
    resolved.target_layer = explainer.layer_name(net, example)
    return resolved


def explainer_options(explainer: Explainer) -> dict[str, object]:
    """Public options of an explainer (what ``create_explainer`` would need to rebuild it)."""
    return {k: v for k, v in vars(explainer).items() if not k.startswith("_")}


# --- raw maps: the method's own code, minus what cannot be traced -------------------------------


def _raw_traceable(explainer: Explainer, net: nn.Module, images: Tensor, target: Target) -> Tensor:
    return explainer.explain_for_tracing(net, images, target)


#: registry name -> raw-map function traced instead of the explainer's own
#: :meth:`~facexai.explain.Explainer.explain_for_tracing` (empty: every built-in method declares
#: its traceable form on its class; this lets a caller substitute one without subclassing)
RAW_MAPS: dict[str, RawMapFn] = {}


def _convolution_backward(
    grad_output: Tensor,
    inputs: Tensor,
    weight: Tensor,
    bias_sizes: object,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    transposed: bool,
    output_padding: list[int],
    groups: int,
    output_mask: list[bool],
) -> object:
    """Input gradient of a convolution as a transposed convolution (ONNX ConvTranspose).

    Weight and bias gradients are never needed (explainers differentiate w.r.t. activations),
    so other masks fall back to the original op, which then fails export with a clear op name.
    """
    if transposed or output_mask[1] or output_mask[2]:
        return NotImplemented
    spatial = range(inputs.dim() - 2)
    extra = [
        inputs.shape[2 + i]
        - ((grad_output.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (weight.shape[2 + i] - 1) + 1)
        for i in spatial
    ]
    grad = aten.convolution.default(grad_output, weight, None, stride, padding, dilation, True, extra, groups)
    return grad, None, None


def _avg_pool2d_backward(
    grad_output: Tensor,
    inputs: Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> Tensor:
    """Input gradient of 2-D average pooling as a transposed box filter (torch has no decomposition).

    The windows cover ``(out - 1) * stride + kernel`` padded positions from ``-padding`` on (a
    ``ceil_mode`` window may overhang); each output's gradient is divided by its window's
    divisor, spread over the window, and the padding is cropped off (or zeros appended where a
    floor-mode pool never read the last rows).
    """
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride or kernel_size)
    ph, pw = _pair(padding)
    n, c, h, w = inputs.shape
    oh, ow = grad_output.shape[-2:]
    full_h, full_w = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    box = inputs.new_ones(1, 1, kh, kw)
    if divisor_override:
        divisor = inputs.new_full((1, 1, 1, 1), float(divisor_override))
    else:
        counted = (
            inputs.new_ones(1, 1, h + 2 * ph, w + 2 * pw)
            if count_include_pad
            else F.pad(inputs.new_ones(1, 1, h, w), (pw, pw, ph, ph))
        )
        counted = F.pad(counted, (0, full_w - w - 2 * pw, 0, full_h - h - 2 * ph))
        divisor = F.conv2d(counted, box, stride=(sh, sw))
    spread = F.conv_transpose2d((grad_output / divisor).reshape(n * c, 1, oh, ow), box, stride=(sh, sw))
    grad = F.pad(spread, (-pw, w + pw - full_w, -ph, h + ph - full_h))
    return grad.reshape(n, c, h, w)


def _pair(value: list[int] | int) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return (value[0], value[0]) if len(value) == 1 else (value[0], value[1])


def _decompositions() -> dict:
    table = torch._decomp.get_decompositions(
        [aten.max_pool2d_with_indices_backward, aten._adaptive_avg_pool2d_backward]
    )
    table[aten.convolution_backward.default] = _convolution_backward
    table[aten.avg_pool2d_backward.default] = _avg_pool2d_backward
    return table


# --- tracing --------------------------------------------------------------------------------------


def explained_function(
    explainer: Explainer, net: nn.Module, task: str
) -> Callable[[Tensor, Tensor], tuple[Tensor, ...]]:
    """``(images, target) -> (output, map[, similarity])`` using the explainer's own code."""
    raw_map = RAW_MAPS.get(explainer.name, _raw_traceable)

    def run(images: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        scored = TracedSimilarityTarget(target) if task == "verification" else TracedClassTarget(target)
        maps = postprocess(raw_map(explainer, net, images, scored).detach(), images.shape[-2:])
        output = net(images).detach()
        if task == "verification":
            return output, maps, F.cosine_similarity(output, target, dim=1)
        return output, maps

    return run


def example_inputs(task: str, batch: int, input_size: int, width: int) -> tuple[Tensor, Tensor]:
    """Random images and targets for tracing (values do not matter, shapes and dtypes do)."""
    generator = torch.Generator().manual_seed(batch)
    images = torch.randn(batch, 3, input_size, input_size, generator=generator)
    if task == "verification":
        return images, torch.randn(batch, width, generator=generator)
    return images, torch.randint(0, width, (batch,), generator=generator)


def trace_explained(explainer: Explainer, net: nn.Module, task: str, input_size: int, width: int) -> nn.Module:
    """Module ``(images, target) -> (output, map[, similarity])`` with the gradients traced in.

    Tries one batched graph first; if the explainer's Python code fixed the batch size while
    tracing, re-traces one sample and wraps it in a Scan over the batch.

    Raises:
        ExportError: the explainer's code cannot be traced (names the source line; a ValueError).
    """
    graph = _trace(explainer, net, task, example_inputs(task, TRACE_BATCH, input_size, width))
    if _batch_is_symbolic(graph):
        return BatchedGraph(graph)
    logger.info("%s fixes the batch size when traced; exporting it per sample (ONNX Scan)", explainer.name)
    return PerSampleGraph(_trace(explainer, net, task, example_inputs(task, 1, input_size, width)))


def _trace(explainer: Explainer, net: nn.Module, task: str, example: tuple[Tensor, Tensor]) -> torch.fx.GraphModule:
    fn = explained_function(explainer, net, task)
    try:
        with explanation_mode(net):
            graph = make_fx(
                fn, decomposition_table=_decompositions(), tracing_mode="symbolic", _allow_non_fake_inputs=True
            )(*example)
    except Exception as err:  # tracing raises many internal types; re-raised with the user's line
        raise ExportError(
            _not_exportable(
                explainer.name,
                f"tracing failed at {_user_frame(err)}: {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}",
            )
        ) from err
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


def _user_frame(err: BaseException) -> str:
    """The innermost traceback line outside torch and the standard library (the untraceable code)."""
    skip = (str(Path(torch.__file__).parent), sysconfig.get_paths()["stdlib"])
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(skip)]
    if not frames:
        return "torch internals"
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno} ({(frame.line or '').strip()})"


def _batch_is_symbolic(graph: torch.fx.GraphModule) -> bool:
    shapes = [n.meta["val"].shape for n in graph.graph.nodes if n.op == "placeholder"]
    return not any(is_concrete_int(shape[0]) for shape in shapes)


class BatchedGraph(nn.Module):
    """A traced ``(images, target)`` graph with a symbolic batch, exported as it is."""

    def __init__(self, graph: torch.fx.GraphModule) -> None:
        super().__init__()
        self.graph_module = graph

    def forward(self, images: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """``(output, map[, similarity])`` of the whole batch."""
        return tuple(self.graph_module(images, target))


class PerSampleGraph(nn.Module):
    """A graph traced for one sample, applied to every sample by ``scan`` (ONNX ``Scan``)."""

    def __init__(self, graph: torch.fx.GraphModule) -> None:
        super().__init__()
        self.graph_module = graph

    def forward(self, images: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """``(output, map[, similarity])``, computed one sample at a time and stacked."""

        def step(carry: Tensor, sample: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
            outputs = self.graph_module(sample[0][None], sample[1][None])
            # scan forbids outputs aliasing inputs or each other
            return carry.clone(), tuple(out[0].clone() for out in outputs)

        _, outputs = scan(step, images.new_zeros(()), (images, target))
        return tuple(outputs)
