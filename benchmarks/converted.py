"""Explainers on a converted ONNX face model against the native PyTorch network it came from.

Users bring ONNX face models (insightface's model zoo, arcface_torch's torch2onnx exports);
``facexai.models.load_face_model`` converts them into a torch graph. This script measures what the
conversion costs the explainers:

- conversion: wall time of ``load_face_model`` (onnx2torch conversion, graph canonicalisation and
  the onnxruntime parity check) on IResNet-50 and IResNet-100 exports at 112 px;
- explainers: each method on the converted graph timed in alternation with the same method on
  the native network (``measure_against``, so the machine's drift cancels), reported as
  converted / native (goal <= 1.1x), with the Pearson agreement of their maps.

The native network is facexai's IResNet with BatchNorm statistics calibrated on smooth random
faces (as a trained network has them), exported like arcface_torch's torch2onnx (legacy
exporter, opset 11).

    python benchmarks/converted.py [--models iresnet50 iresnet100] [--batch-size 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
import warnings
from pathlib import Path

import timm
import torch
from harness import measure_against
from torch import Tensor, nn

import facexai.models  # noqa: F401  registers the IResNets in timm
from facexai.explain import create_explainer, explain_pairs
from facexai.models import load_face_model

#: per-method options that keep one timed call in seconds on 2 CPU cores
OPTIONS: dict[str, dict] = {"fame": {"iterations": 10}, "corrrise": {"n_masks": 100}, "scorecam": {}}
EXPLAINERS = ("gradcam", "gradcam++", "liftcam", "fgcam", "fame", "scorecam", "corrrise")


def faces(n: int, side: int = 112, seed: int = 0) -> Tensor:
    """Smooth random faces in insightface's normalisation, (pixel - 127.5) / 127.5."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=generator) * 2 - 1
    smooth = nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.randn(n, 3, side, side, generator=generator)).clamp(-1, 1)


@torch.no_grad()
def calibrated(name: str, side: int = 112) -> nn.Module:
    """An IResNet whose BatchNorm running statistics match its activations on face-like data."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=512, img_size=side)
    for norm in model.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.reset_running_stats()
            norm.momentum = None
    model.train()
    for i in range(4):
        model(faces(8, side, seed=100 + i))
    return model.eval()


def export(model: nn.Module, path: Path, side: int = 112) -> Path:
    """The torch2onnx recipe of arcface_torch: legacy exporter, opset 11, dynamic batch."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, faces(1, side), str(path), input_names=["data"], opset_version=11, dynamo=False)
    graph = onnx.load(str(path))
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "None"
    onnx.save(graph, str(path))
    return path


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Per-map Pearson correlation of two (N, H, W) stacks."""
    a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def time_explainers(native: nn.Module, converted: nn.Module, batch: int, repeats: int, names: list[str]) -> list[dict]:
    """Each explainer on both graphs, in alternation; ratio and map agreement per method."""
    faces_a, faces_b = faces(batch, seed=1), faces(batch, seed=2)
    rows = []
    for name in names:
        explainer = create_explainer(name, **OPTIONS.get(name, {}))
        on_native = functools.partial(explain_pairs, explainer, native, faces_a, faces_b)
        on_converted = functools.partial(explain_pairs, explainer, converted, faces_a, faces_b)
        timed, floor = measure_against(on_converted, on_native, torch.device("cpu"), repeats)
        torch.manual_seed(0)
        maps_native = torch.cat(on_native())
        torch.manual_seed(0)
        maps_converted = torch.cat(on_converted())
        agreement = pearson(maps_native, maps_converted)
        rows.append({
            "explainer": name, "native_s": floor.seconds, "converted_s": timed.seconds,
            "ratio": timed.seconds / floor.seconds, "pearson_min": float(agreement.min()),
        })  # fmt: skip
        print(
            f"  {name:10s} native {floor.seconds:7.3f} s  converted {timed.seconds:7.3f} s  "
            f"x{timed.seconds / floor.seconds:5.2f}  Pearson min {float(agreement.min()):.4f}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["iresnet50", "iresnet100"])
    parser.add_argument("--explain-models", nargs="+", default=["iresnet50"], help="models whose explainers are timed")
    parser.add_argument("--explainers", nargs="+", default=list(EXPLAINERS))
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"threads": torch.get_num_threads(), "batch_pairs": args.batch_size, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            native = calibrated(name)
            path = export(native, Path(tmp) / f"{name}.onnx")
            begin = time.perf_counter()
            converted = load_face_model(path)
            seconds = time.perf_counter() - begin
            entry: dict = {"load_face_model_s": seconds, "onnx_mb": path.stat().st_size / 2**20}
            print(
                f"{name}: load_face_model {seconds:.2f} s ({entry['onnx_mb']:.0f} MB ONNX, parity check included)",
                flush=True,
            )
            if name in args.explain_models:
                entry["explainers"] = time_explainers(native, converted, args.batch_size, args.repeats, args.explainers)
            results["models"][name] = entry
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
