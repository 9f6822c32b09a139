r"""Load a face-recognition model from a file users already have, ready for facexai.

``load_face_model`` accepts an arcface_torch / insightface PyTorch state dict (``backbone.pth``),
a facexai Lightning checkpoint or an ONNX face model (insightface model zoo, arcface_torch's
torch2onnx, a facexai export) and returns an eval-mode ``nn.Module`` that maps canonical faces,
RGB ``(pixel - 127.5) / 127.5`` of shape (N, 3, S, S), to embeddings (N, D). Explainers, metrics
and ``VerificationModule(pretrained=...)`` can then treat it like a network trained in facexai.

The file kind is detected from its content, not its name: PyTorch files are zip archives
(``PK``) or legacy pickles (``\x80``); anything else is parsed as ONNX protobuf.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, fx, nn

from facexai.models.loading import first_line, iresnet_state
from facexai.models.loading.layout import (
    CanonicalInput,
    FaceModelInfo,
    InputLayout,
    attach_info,
    probe_faces,
    resolve_layout,
    to_network_input,
)

#: probe batch for the parity check and the canonicalisation check (several samples so that a
#: graph with a hard-coded batch of 1 is caught at load time, not in the first training step)
PROBE_BATCH = 4

__all__ = ["CanonicalInput", "FaceModelInfo", "InputLayout", "load_face_model"]


def load_face_model(
    path: str | Path,
    *,
    input_size: int | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    channel_order: str | None = None,
    check_parity: bool = True,
) -> nn.Module:
    """An eval-mode embedding network from a state dict, Lightning checkpoint or ONNX file.

    The returned module takes canonical faces (RGB, ``(pixel - 127.5) / 127.5``, (N, 3, S, S))
    and returns (N, D) embeddings; ``model.face_model_info`` (:class:`FaceModelInfo`) records
    where it came from. An IResNet state dict comes back as facexai's ``IResNet`` (its shape read
    from the tensors), a Lightning checkpoint as its module's backbone, an ONNX file as a
    ``torch.fx.GraphModule`` with standard torch modules. When the file's own input layout is not
    canonical the network is wrapped in :class:`CanonicalInput` (module names gain ``network.``).

    Args:
        path: the file.
        input_size: input side S; needed only for ONNX graphs with a symbolic side, and checked
            against the side the file fixes.
        mean: pixel mean(s) the *file's* network expects (scalar or 3 values in its channel
            order, 0..255 units); default from facexai metadata, else 127.5.
        std: pixel std(s), same conventions; default from metadata, else 127.5.
        channel_order: "RGB" or "BGR" input of the file's network; default from metadata, else RGB.
        check_parity: ONNX only: compare with onnxruntime on a probe batch and refuse the model
            below a per-sample cosine of 0.9999 (the measured value lands in ``parity_cosine``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, a network that is not a face-embedding model, an option that
            contradicts the file, an ONNX op onnx2torch cannot convert, or a parity failure.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Face model file not found: {path}")
    if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    overrides = partial(resolve_layout, mean=mean, std=std, channel_order=channel_order)
    if _is_torch_file(path):
        network, info = _load_torch(path, input_size, overrides)
    else:
        network, info = _load_onnx(path, input_size, overrides, check_parity)
    model = network if info.layout.canonical else CanonicalInput(network, info.layout)
    attach_info(model, info)
    return model.eval()


def _is_torch_file(path: Path) -> bool:
    r"""Kind by content, since extensions vary (.pth, .pt, .ckpt, .bin, .onnx or none).

    torch.save writes a zip archive (``PK``) or, in the legacy format, a pickle (``\x80``);
    neither byte can start an ONNX ModelProto, so everything else is parsed as ONNX.
    """
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise ValueError(f"{path} is empty")
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


#: the caller's mean / std / channel_order applied to the layout a file implies (resolve_layout)
Overrides = Callable[[InputLayout], InputLayout]


def _load_torch(path: Path, input_size: int | None, overrides: Overrides) -> tuple[nn.Module, FaceModelInfo]:
    """PyTorch files carry no layout: canonical (how arcface_torch and facexai train) unless overridden."""
    content = iresnet_state.torch_file(path)
    if not isinstance(content, dict):
        raise ValueError(  # noqa: TRY004  the file's content is wrong, not an argument: ValueError as documented
            f"{path} holds a {type(content).__name__}, not a state dict or Lightning checkpoint"
        )
    known_width: int | None = None  # an IResNet rebuilt from a state dict knows its width
    if "hyper_parameters" in content and "state_dict" in content:
        model, source = _lightning_backbone(content, path), "lightning"
        size = _backbone_size(model, input_size, path)
    else:
        state = content.get("state_dict_backbone", content)  # arcface_torch's resumable checkpoint
        iresnet = iresnet_state.build_iresnet(iresnet_state.clean_state_dict(state, path), path)
        model, source, size, known_width = iresnet, "state_dict", iresnet.img_size, iresnet.num_classes
    if input_size is not None and input_size != size:
        raise ValueError(f"input_size={input_size} contradicts {path}, whose network takes {size} px")
    width = known_width if known_width is not None else _embedding_width(model, size, path)
    layout = overrides(InputLayout(size))
    return model, FaceModelInfo(source, str(path), size, width, layout)


def _lightning_backbone(checkpoint: dict, path: Path) -> nn.Module:
    """The explained backbone of an already loaded checkpoint (the file is not read again)."""
    from facexai.models.modules import VerificationModule, module_from_checkpoint  # modules imports this file

    module = module_from_checkpoint(checkpoint, path)
    if not isinstance(module, VerificationModule):
        raise ValueError(  # noqa: TRY004  the file's content is wrong, not an argument: ValueError as documented
            f"{path} is a {type(module).__name__} checkpoint; load_face_model needs a VerificationModule"
        )
    return module.explained_model


def _backbone_size(backbone: nn.Module, input_size: int | None, path: Path) -> int:
    """Input side: IResNet's ``img_size``, else the caller's, else timm's pretrained config.

    Only IResNets fix their side (the FC reads a fixed-size map); a timm CNN with a global pool
    takes any size, so the caller's ``input_size`` wins over timm's ImageNet default there.
    """
    size = getattr(backbone, "img_size", None) or input_size
    if size is None:
        size = (getattr(backbone, "pretrained_cfg", None) or {}).get("input_size")
    if isinstance(size, (tuple, list)):
        size = size[-1]
    if size is None:
        raise ValueError(f"{path}: cannot tell the backbone's input size; pass input_size")
    return int(size)


@torch.no_grad()
def _embedding_width(model: nn.Module, size: int, path: Path) -> int:
    """D from a probe forward, which also proves the network returns (N, D)."""
    output = model(probe_faces(2, size))
    if output.dim() != 2 or output.shape[0] != 2:
        raise ValueError(f"{path}: the network returns {tuple(output.shape)}, not embeddings (N, D)")
    return int(output.shape[1])


def _load_onnx(
    path: Path, input_size: int | None, overrides: Overrides, check_parity: bool
) -> tuple[nn.Module, FaceModelInfo]:
    from facexai.models.loading import onnx_graph  # onnx / onnx2torch load slowly: only when needed

    proto = onnx_graph.read_onnx(path)
    side = onnx_graph.image_input(proto, path)
    onnx_graph.embedding_output(proto, path)
    if side is not None and input_size is not None and side != input_size:
        raise ValueError(f"input_size={input_size} contradicts {path}, whose graph input is {side}x{side}")
    base = onnx_graph.default_layout(proto, side, path)
    size = input_size or side or base.size
    if not size:
        raise ValueError(f"{path} declares no fixed input side; pass input_size")
    layout = overrides(InputLayout(size, base.mean, base.std, base.channel_order))
    proto = onnx_graph.make_batch_dynamic(proto)
    network = onnx_graph.convert(proto, path)
    faces = probe_faces(PROBE_BATCH, size)
    inputs = to_network_input(faces, layout)
    network, output = _canonical_graph(network, inputs, path)
    cosine = None
    if check_parity:
        reference = onnx_graph.onnxruntime_outputs(proto, inputs, path)
        cosine = onnx_graph.parity_cosine(output, reference, path)
    return network, FaceModelInfo("onnx", str(path), size, int(output.shape[1]), layout, cosine)


@torch.no_grad()
def _canonical_graph(network: fx.GraphModule, inputs: Tensor, path: Path) -> tuple[fx.GraphModule, Tensor]:
    """Canonicalise the converted graph, check it still computes the same; return its output.

    ``inputs`` are the probe faces already in the file's layout, i.e. what the
    :class:`CanonicalInput` wrapper will feed the graph, so the returned output is what the
    parity check compares with onnxruntime.
    """
    from facexai.models.loading.canonical import canonicalise

    try:
        network, before = canonicalise(network, inputs)
    except Exception as err:  # shape errors of graphs that hard-code their batch size, ...
        raise ValueError(f"{path}: the converted graph fails on a batch of {len(inputs)}: {first_line(err)}") from err
    if not isinstance(before, Tensor) or before.dim() != 2 or before.shape[0] != len(inputs):
        shape = tuple(before.shape) if isinstance(before, Tensor) else type(before).__name__
        raise ValueError(f"{path}: the graph returns {shape} for {len(inputs)} faces; expected (N, D)")
    after = network(inputs)
    scale = float(before.abs().max()) or 1.0
    if not torch.allclose(after, before, rtol=0.0, atol=1e-5 * scale):
        raise RuntimeError(f"{path}: canonicalising the converted graph changed its output; please report this")
    return network, after
