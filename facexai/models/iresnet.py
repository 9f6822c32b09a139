"""IResNet, the ArcFace face-recognition backbone family, registered in timm's model registry.

IResNets (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
CVPR 2019, arXiv 1801.07698; "improved residual" units after Duta et al. 2020) differ from
ImageNet ResNets in ways that matter for explanation methods: BatchNorm *before* the first
convolution of each block (BN-conv-BN-PReLU-conv-BN), PReLU activations, stride on the second
convolution, no max-pool in the stem, and an embedding head BN2d-dropout-flatten-FC-BN1d that
keeps the spatial layout until the fully connected layer. Written here from the architecture
description; no pretrained weights are shipped or downloaded.

``timm.create_model("iresnet50", num_classes=512)`` builds one (``num_classes`` is the embedding
size, 512 by default), with the ``forward_features``/``forward_head`` split timm models have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from timm.models import register_model
from torch import Tensor, nn

#: blocks per stage of the published IResNet depths
IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}
_WIDTHS = (64, 128, 256, 512)


class IBasicBlock(nn.Module):
    """BN-conv3x3-BN-PReLU-conv3x3(stride)-BN with a residual connection."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch, eps=1e-5)
            )

    def forward(self, x: Tensor) -> Tensor:
        """The block's branch plus the (downsampled where the shape changes) input."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


def _stage(in_ch: int, width: int, depth: int) -> nn.Sequential:
    """``depth`` blocks at ``width`` channels, the first halving the resolution."""
    return nn.Sequential(IBasicBlock(in_ch, width, stride=2), *(IBasicBlock(width, width) for _ in range(depth - 1)))


class IResNet(nn.Module):
    """IResNet embedding network: (N, 3, S, S) normalised faces -> (N, num_classes) embeddings.

    Args:
        layers: blocks per stage.
        num_classes: embedding size (timm's name for the output width), 512 in ArcFace.
        img_size: input side; must be a multiple of 16 (four stride-2 stages).
        widths: channels per stage (64, 128, 256, 512 in the published models).
        drop_rate: dropout before the embedding FC (0 in ArcFace's released models).
        in_chans: input channels.
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 512,
        img_size: int = 112,
        widths: tuple[int, ...] = _WIDTHS,
        drop_rate: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if img_size % 16 != 0 or img_size < 16:
            raise ValueError(f"IResNet img_size must be a positive multiple of 16, got {img_size}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"IResNet needs 4 stages, got layers={layers} widths={widths}")
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.img_size = img_size
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        in_widths = (widths[0], *widths[:-1])
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            _stage(in_ch, width, depth) for in_ch, width, depth in zip(in_widths, widths, layers, strict=True)
        )
        side = img_size // 16
        self.bn2 = nn.BatchNorm2d(widths[-1], eps=1e-5)
        self.dropout = nn.Dropout(p=drop_rate)
        self.fc = nn.Linear(widths[-1] * side * side, num_classes)
        self.features = nn.BatchNorm1d(num_classes, eps=1e-5)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # ArcFace fixes the scale of the last BN so embeddings are not rescaled by training.
        self.features.weight.requires_grad_(False)
        self.features.weight.data.fill_(1.0)

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem and the four residual stages: (N, 3, S, S) -> (N, C, S/16, S/16)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """BN2d-dropout-flatten-FC-BN1d: feature map -> embedding (``pre_logits`` stops before FC)."""
        x = torch.flatten(self.dropout(self.bn2(x)), 1)
        return x if pre_logits else self.features(self.fc(x))

    def forward(self, x: Tensor) -> Tensor:
        """Normalised faces (N, 3, S, S) to embeddings (N, num_classes)."""
        return self.forward_head(self.forward_features(x))


def _create(name: str, pretrained: bool, **kwargs: Any) -> IResNet:
    if pretrained:
        raise ValueError(
            f"No pretrained weights exist for {name!r} in facexai (nothing is downloaded); load a "
            "local state dict with the module's `weights` option instead"
        )
    # timm passes its factory bookkeeping to every entry point; IResNet has no use for it.
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only"):
        kwargs.pop(key, None)
    layers = kwargs.pop("layers", IRESNET_LAYERS.get(name, (1, 1, 1, 1)))
    return IResNet(layers=layers, **kwargs)


def _entry_point(name: str, summary: str, **defaults: Any) -> Callable[..., Any]:
    """Register ``name`` with timm: its registry keys entry points by their ``__name__``."""

    def create(pretrained: bool = False, **kwargs: Any) -> IResNet:
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        return _create(name, pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__doc__ = summary
    return register_model(create)


iresnet18 = _entry_point("iresnet18", "IResNet-18 (ArcFace backbone, 2-2-2-2 blocks).")
iresnet34 = _entry_point("iresnet34", "IResNet-34 (ArcFace backbone, 3-4-6-3 blocks).")
iresnet50 = _entry_point("iresnet50", "IResNet-50 (ArcFace backbone, 3-4-14-3 blocks).")
iresnet100 = _entry_point("iresnet100", "IResNet-100 (ArcFace backbone, 3-13-30-3 blocks).")
iresnet_mini = _entry_point(
    "iresnet_mini",
    "A 1-1-1-1 IResNet with widths 16-32-64-128 for CPU demos and tests (not a published model).",
    widths=(16, 32, 64, 128),
    num_classes=128,
)
