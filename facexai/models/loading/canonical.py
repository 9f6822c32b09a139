"""Rewrite an onnx2torch graph into the standard torch modules a native network has.

onnx2torch keeps some ONNX semantics in its own modules: a BatchNorm whose weights arrive as graph
inputs (``OnnxBatchNorm``, produced when the exporter deduplicated equal initializers and routed
them through ``Identity`` copies), ``OnnxPReLU(x, slope)`` and ``OnnxBinaryMathOperation`` for
residual additions. Explainers look for ``nn.BatchNorm2d`` / ``nn.PReLU`` modules (relevance rules,
hooks) and expect additions to be plain functions as in a native ``forward``; this pass gives
them that view without changing what the network computes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from onnx2torch.node_converters.activations import OnnxPReLU
from onnx2torch.node_converters.batch_norm import OnnxBatchNorm
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
from onnx2torch.node_converters.identity import OnnxCopyIdentity
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

#: onnx2torch module types that :func:`canonicalise` replaces (tests check none remain)
ONNX_SPECIFIC = (OnnxBatchNorm, OnnxPReLU, OnnxBinaryMathOperation, OnnxCopyIdentity)
_BATCHNORM_BY_RANK: dict[int, type[nn.Module]] = {
    2: nn.BatchNorm1d,
    3: nn.BatchNorm1d,
    4: nn.BatchNorm2d,
    5: nn.BatchNorm3d,
}
_OPERATORS: dict[Callable[..., Tensor], Callable[..., Tensor]] = {
    torch.add: operator.add,
    torch.sub: operator.sub,
    torch.mul: operator.mul,
}


def canonicalise(graph_module: fx.GraphModule, probe: Tensor) -> tuple[fx.GraphModule, Tensor]:
    """Replace onnx2torch-specific modules in place; ``probe`` (a valid input) gives tensor ranks.

    Returns the rewritten module and the *original* graph's output for ``probe`` (the shape
    propagation runs it anyway), so callers can check that the rewrite changed nothing.
    """
    graph_module.eval()
    with torch.no_grad():
        before = ShapeProp(graph_module).propagate(probe)
    _fold_constant_copies(graph_module)
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module":
            continue
        module = graph_module.get_submodule(_target(node))
        if isinstance(module, OnnxBatchNorm):
            _replace_batchnorm(graph_module, node, module)
        elif isinstance(module, OnnxPReLU):
            _replace_prelu(graph_module, node)
        elif isinstance(module, OnnxBinaryMathOperation):
            _replace_binary(graph_module, node, module)
    graph_module.graph.eliminate_dead_code()
    _drop_unused_constants(graph_module)
    graph_module.graph.lint()
    graph_module.recompile()
    return graph_module.eval(), before  # eval(): the new BatchNorms start in train mode


def _target(node: fx.Node) -> str:
    """The qualified name a ``call_module`` or ``get_attr`` node refers to (fx stores it as a str)."""
    return str(node.target)


def _tensor_meta(value: object) -> Any:
    """ShapeProp's metadata (shape, dtype) of a node's output; None for constants or unpropagated nodes."""
    return value.meta.get("tensor_meta") if isinstance(value, fx.Node) else None


def _constant(graph_module: fx.GraphModule, node: object) -> Tensor | None:
    """The tensor behind a ``get_attr`` node, None for anything computed at run time."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value: object = graph_module
    for name in _target(node).split("."):
        value = getattr(value, name)
    return value if isinstance(value, Tensor) else None


def _fold_constant_copies(graph_module: fx.GraphModule) -> None:
    """``Identity`` copies of initializers become the initializer itself (nothing mutates it)."""
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(graph_module.get_submodule(_target(node)), OnnxCopyIdentity):
            continue
        source = node.args[0]
        if _constant(graph_module, source) is None:
            continue
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
        graph_module.delete_submodule(_target(node))


def _swap_module(graph_module: fx.GraphModule, node: fx.Node, module: nn.Module, args: tuple) -> None:
    graph_module.delete_submodule(_target(node))
    graph_module.add_submodule(_target(node), module)
    node.args = args


def _replace_batchnorm(graph_module: fx.GraphModule, node: fx.Node, module: OnnxBatchNorm) -> None:
    params = [p for p in (_constant(graph_module, arg) for arg in node.args[1:5]) if p is not None]
    meta = _tensor_meta(node.args[0])
    if len(params) != 4 or meta is None or len(meta.shape) not in _BATCHNORM_BY_RANK:
        return  # statistics computed at run time: nothing standard to map it to
    weight, bias, mean, var = params
    norm = _BATCHNORM_BY_RANK[len(meta.shape)](weight.numel(), eps=module.epsilon, momentum=module.momentum)
    _copy_into(norm, {"weight": weight, "bias": bias, "running_mean": mean, "running_var": var})
    _swap_module(graph_module, node, norm, (node.args[0],))


def _copy_into(module: nn.Module, values: dict[str, Tensor]) -> None:
    """Copy each value, flattened, into the parameter or buffer of that name."""
    targets = dict(module.named_parameters()) | dict(module.named_buffers())
    with torch.no_grad():
        for name, value in values.items():
            targets[name].copy_(value.reshape(-1))


def _replace_prelu(graph_module: fx.GraphModule, node: fx.Node) -> None:
    slope = _constant(graph_module, node.args[1])
    meta = _tensor_meta(node.args[0])
    if slope is None or meta is None or len(meta.shape) < 2:
        return
    per_channel = slope.numel() == meta.shape[1] and slope.shape[0] == meta.shape[1]
    if not (slope.numel() == 1 or (per_channel and all(s == 1 for s in slope.shape[1:]))):
        return  # a broadcast nn.PReLU cannot express
    prelu = nn.PReLU(slope.numel())
    with torch.no_grad():
        prelu.weight.copy_(slope.reshape(-1))
    _swap_module(graph_module, node, prelu, (node.args[0],))


def _replace_binary(graph_module: fx.GraphModule, node: fx.Node, module: OnnxBinaryMathOperation) -> None:
    if module.broadcast == 1 and module.axis is not None:
        return  # opset < 7 axis broadcasting has no operator equivalent
    function = _OPERATORS.get(module.math_op_function)
    kwargs: dict[str, fx.node.Argument] = {}
    if function is None:  # onnx2torch's Div: true division for floats, truncation for integers
        meta = _tensor_meta(node)
        if meta is None or meta.dtype.is_floating_point:
            function = operator.truediv
        else:
            function, kwargs = torch.div, {"rounding_mode": "trunc"}
    with graph_module.graph.inserting_before(node):
        replacement = graph_module.graph.call_function(function, tuple(node.args), kwargs)
    replacement.meta = dict(node.meta)
    node.replace_all_uses_with(replacement)
    graph_module.graph.erase_node(node)
    graph_module.delete_submodule(_target(node))


def _drop_unused_constants(graph_module: fx.GraphModule) -> None:
    """Delete initializer buffers no node reads any more (their values now live in modules)."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    container = getattr(graph_module, "initializers", None)
    if container is None:
        return
    for name, _ in list(container.named_buffers(recurse=False)):
        if f"initializers.{name}" not in used:
            delattr(container, name)
