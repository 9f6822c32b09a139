"""Helpers shared by the export tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facexai.data.synthetic import generate_faces, sample_identities
from facexai.models import ClassifierModule, VerificationModule

EMBEDDING = 128
CLASSIFIER_SIZE = 64
#: identities of the synthetic pairs set and the pairs file written for them
PAIRS_TEXT = "4\nid0 1 2\nid1 1 2\nid0 1 id1 2\nid2 1 id0 2\n"


def seed_norms(model: nn.Module, seed: int = 0, side: int | None = None, affine: bool = True) -> nn.Module:
    """BatchNorm as in a trained network: a random affine, running statistics measured on faces.

    Random affine parameters keep eval mode from being (nearly) the identity; ``affine=False``
    leaves them at their init (weight 1, bias 0). The running statistics are then calibrated
    (:func:`calibrate_norms`). FG-CAM's ratio rules on iresnet_mini are well-conditioned only with
    the init affine: with a random weight alone its map moves by 3.2e-4 under 2-ulp input changes
    on faces, with any bias (random, 0.01 x randn, or learned in 40 ArcFace steps) by 0.03-1,
    calibrated or not (measurements at test_explained.FGCAM_ILL_CONDITIONED).
    ``side`` defaults to the side the model declares (112 if none).
    """
    from facexai.export.input_size import resolve_input_size

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in norms(model) if affine else []:
            n = module.num_features
            if module.weight is not None and module.weight.requires_grad:
                module.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
            if module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return calibrate_norms(model, side or resolve_input_size(model, None), seed)


def norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def calibrate_norms(model: nn.Module, side: int, seed: int = 0, batches: int = 4, batch_size: int = 16) -> nn.Module:
    """Running statistics from train-mode forwards on synthetic faces (cumulative average), then eval.

    ``momentum=None`` averages every batch equally, as a long training run converges to; the
    faces are normalised as the parity check and training feed them.
    """
    from facexai.data.transforms import normalise

    layers = norms(model)
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    for batch in range(batches):
        labels = torch.arange(batch_size) % 8
        identities = sample_identities(8, torch.Generator().manual_seed(1000 + seed))
        faces, _ = generate_faces(labels, identities, side, seed=2000 + 10 * seed + batch)
        model(torch.stack([normalise(face) for face in faces]))
    for layer in layers:
        layer.momentum = 0.1
    return model.eval()


def make_verification(seeded_norms: bool = True, affine: bool = True) -> VerificationModule:
    """iresnet_mini at 112 px; ``seeded_norms=False`` keeps BatchNorm at its identity init.

    ``affine=False`` calibrates the statistics but keeps the affine at weight 1, bias 0.
    """
    torch.manual_seed(0)
    module = VerificationModule(
        backbone="iresnet_mini", num_identities=8, embedding_size=EMBEDDING, backbone_kwargs={"img_size": 112}
    )
    return seed_norms(module, affine=affine) if seeded_norms else module.eval()


def make_classifier(seeded_norms: bool = True) -> ClassifierModule:
    """timm resnet10t with five named classes (used at 64 px)."""
    torch.manual_seed(1)
    module = ClassifierModule(backbone="resnet10t", num_classes=5, class_names=["a", "b", "c", "d", "e"])
    return seed_norms(module, 1, CLASSIFIER_SIZE) if seeded_norms else module.eval()


def save_checkpoint(module: nn.Module, path: Path) -> Path:
    """What Lightning stores that facexai needs: state_dict + hyper_parameters (plain types)."""
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def synthetic_face(seed: int = 3, size: int = 112) -> np.ndarray:
    """One rendered face, uint8 RGB (H, W, 3)."""
    identities = sample_identities(1, torch.Generator().manual_seed(seed))
    images, _ = generate_faces(torch.zeros(1, dtype=torch.long), identities, size, seed=seed)
    return images[0].permute(1, 2, 0).numpy().copy()


def write_png_pairs(root: Path, side: int, seed: int, pairs: str) -> Path:
    """Synthetic faces of three identities as ``root/id<k>/a.png`` and ``b.png`` plus ``pairs.txt``."""
    from PIL import Image

    identities = sample_identities(3, torch.Generator().manual_seed(seed))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    images, _ = generate_faces(labels, identities, side, seed=seed + 1)
    for k, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        (root / f"id{label}").mkdir(exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / f"id{label}" / ("a.png" if k % 2 == 0 else "b.png"))
    (root / "pairs.txt").write_text(pairs)
    return root


def audit_in_fresh_process(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``audit_main(args)`` in a new interpreter that fails if anything imported torch.

    The audit promises to need only onnxruntime and numpy; a fresh process is the only place
    where ``sys.modules`` shows what the audit itself imported.
    """
    import os
    import sys

    code = (
        "import sys\nfrom facexai.export.cli import audit_main\n"
        f"rc = audit_main({args!r})\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "sys.exit(rc)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})  # fmt: skip


def tiny_face_onnx(
    path: Path,
    side: int = 16,
    explained: bool = False,
    props: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    nan_rows: bool = False,
) -> Path:
    """A hand-built facexai "export" (no torch export: milliseconds), for hostile-metadata tests.

    Embedding (N, 3) = the mean colour of each image; explained graphs also take ``target`` (N, 3)
    and return the channel-mean map (N, S, S) and the dot product with the target. ``props``
    overwrite metadata values (full keys), ``drop`` removes keys, and ``nan_rows`` makes the
    embedding NaN for images with a channel mean below pixel value 12.75 (dark images).
    """
    import onnx
    from onnx import TensorProto, helper

    from facexai.export.metadata import ExportMetadata

    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, side, side])
    first = "output" if explained else "embedding"
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat" if nan_rows else first]),
    ]
    initializers = [helper.make_tensor("axis1", TensorProto.INT64, [1], [1])]
    if nan_rows:  # mean + log(mean + 0.9) - log(mean + 0.9): NaN where a channel mean < -0.9
        initializers.append(helper.make_tensor("shift", TensorProto.FLOAT, [], [0.9]))
        nodes += [
            helper.make_node("Add", ["flat", "shift"], ["shifted"]),
            helper.make_node("Log", ["shifted"], ["log"]),
            helper.make_node("Sub", ["log", "log"], ["zero"]),
            helper.make_node("Add", ["flat", "zero"], [first]),
        ]
    inputs, outputs = [images], [helper.make_tensor_value_info(first, TensorProto.FLOAT, ["N", 3])]
    meta = ExportMetadata(task="verification", input_size=side, embedding_size=3)
    if explained:
        inputs.append(helper.make_tensor_value_info("target", TensorProto.FLOAT, ["N", 3]))
        nodes += [
            helper.make_node("ReduceMean", ["images"], ["map"], axes=[1], keepdims=0),
            helper.make_node("Mul", ["output", "target"], ["product"]),
            helper.make_node("ReduceSum", ["product", "axis1"], ["similarity"], keepdims=0),
        ]
        outputs += [
            helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", side, side]),
            helper.make_tensor_value_info("similarity", TensorProto.FLOAT, ["N"]),
        ]
        meta = ExportMetadata(
            task="verification",
            input_size=side,
            embedding_size=3,
            explainer="gradcam",
            input_names=("images", "target"),
            output_names=("output", "map", "similarity"),
        )
    graph = helper.make_graph(nodes, "tiny_face", inputs, outputs, initializers)
    model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    values = {**meta.to_props(), **(props or {})}
    helper.set_model_props(model, {k: v for k, v in values.items() if k not in drop})
    onnx.save(model, str(path))
    return path
