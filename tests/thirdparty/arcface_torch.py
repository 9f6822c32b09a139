"""Face models as arcface_torch / insightface users have them, built without facexai's code.

The class below follows the published arcface_torch IResNet *layout* (its module and parameter
names, BatchNorm before the first convolution of each block, PReLU, stride on the second
convolution, the BN2d-flatten-dropout-FC-BN1d head) and is written here from that description,
so that a loader which only works with facexai's own ``IResNet`` fails these tests. The files are
written the way users get them:

- ``save_state_dict``: ``torch.save(model.state_dict())`` plain, with the ``module.`` prefix of
  a DistributedDataParallel save, or in fp16;
- ``export_like_torch2onnx``: arcface_torch's torch2onnx recipe, i.e. the legacy TorchScript
  exporter, opset 11, input named ``data``, then the batch dimension renamed to make it dynamic.

``calibrate_batchnorm`` gives the network running statistics that match its activations, as a
trained network has them (random statistics make ratio-rule explainers numerically unstable).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

#: arcface_torch's block counts per stage for its published depths
DEPTHS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class ArcBlock(nn.Module):
    """arcface_torch's IBasicBlock: bn1, conv1, bn2, prelu, conv2 (stride), bn3, downsample."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.bn1(x)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.prelu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        return out + shortcut


class ArcIResNet(nn.Module):
    """arcface_torch's IResNet: ``num_features`` is the embedding size, 112 px input by default.

    ``widths`` other than (64, 128, 256, 512) do not exist in arcface_torch; the tests use a
    narrow variant for speed, which a loader must handle by reading widths from the tensors.
    """

    def __init__(
        self,
        layers: Sequence[int] = DEPTHS[18],
        num_features: int = 512,
        widths: Sequence[int] = (64, 128, 256, 512),
        side: int = 112,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(widths[0], layers[0])
        self.layer2 = self._make_layer(widths[1], layers[1])
        self.layer3 = self._make_layer(widths[2], layers[2])
        self.layer4 = self._make_layer(widths[3], layers[3])
        self.bn2 = nn.BatchNorm2d(widths[3], eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(widths[3] * (side // 16) ** 2, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=1e-05),
        )
        stage = [ArcBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        stage += [ArcBlock(planes, planes, 1, None) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        x = self.dropout(x)
        return self.features(self.fc(x))


def face_batch(n: int, side: int = 112, seed: int = 0) -> Tensor:
    """Smooth face-like inputs in insightface's normalisation ((pixel - 127.5) / 127.5)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=generator) * 2 - 1
    smooth = nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.randn(n, 3, side, side, generator=generator)).clamp(-1, 1)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, side: int = 112, batches: int = 4, batch_size: int = 8) -> nn.Module:
    """Running statistics from train-mode forwards on data (momentum=None: cumulative average)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    for i in range(batches):
        model(face_batch(batch_size, side, seed=1000 + i))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def make_arcface_model(
    layers: Sequence[int] = (1, 1, 1, 1),
    num_features: int = 128,
    widths: Sequence[int] = (16, 32, 64, 128),
    side: int = 112,
    seed: int = 0,
) -> ArcIResNet:
    """A seeded, BatchNorm-calibrated arcface_torch-layout IResNet in eval mode."""
    torch.manual_seed(seed)
    return calibrate_batchnorm(ArcIResNet(layers, num_features, widths, side), side=side)


def save_state_dict(model: nn.Module, path: str | Path, variant: str = "plain") -> Path:
    """Save as users have it: ``plain``, ``ddp`` (``module.`` prefix) or ``fp16`` tensors."""
    state = model.state_dict()
    if variant == "ddp":
        state = {f"module.{key}": value for key, value in state.items()}
    elif variant == "fp16":
        state = {key: value.half() if value.is_floating_point() else value for key, value in state.items()}
    elif variant != "plain":
        raise ValueError(f"unknown variant {variant!r}")
    torch.save(state, path)
    return Path(path)


def export_like_torch2onnx(model: nn.Module, path: str | Path, side: int = 112, opset: int = 11) -> Path:
    """arcface_torch's torch2onnx: legacy exporter, opset 11, input ``data``, dynamic batch."""
    import onnx

    model = model.eval()
    probe = face_batch(1, side, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, probe, str(path), input_names=["data"], keep_initializers_as_inputs=False,
            verbose=False, opset_version=opset, dynamo=False,
        )  # fmt: skip
    graph = onnx.load(str(path))
    graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "None"
    onnx.save(graph, str(path))
    return Path(path)
