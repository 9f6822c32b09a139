"""Small seeded models and inputs shared by the explainer tests (CPU, no downloads)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

from facexai.explain import SimilarityTarget


class TinyNet(nn.Module):
    """Three conv-BN-activation stages (two max-pools) and a small head.

    ``head="linear"``: global average pool + fc (LIFT-CAM's closed form holds);
    ``head="mlp"``: 2x2 average pool, flatten, fc-BN-activation-fc (a nonlinear head whose
    gradients vary over the feature map). At 32 px the CAM layer ``features`` is 16 x 8 x 8.
    """

    def __init__(self, out_dim: int = 5, act: Callable[[], nn.Module] = nn.ReLU, head: str = "linear") -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), act(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), act(), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), act(),
        )  # fmt: skip
        if head == "linear":
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, out_dim))
        else:
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), act(),
                nn.Linear(32, out_dim),
            )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def seeded(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics/affine and non-zero biases, so eval mode is not the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
            elif isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    return model.eval()


def make_classifier(head: str = "linear", act: Callable[[], nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(0)
    return seeded(TinyNet(5, act, head), 0)


def make_embedder() -> nn.Module:
    torch.manual_seed(1)
    return seeded(TinyNet(16, nn.PReLU, "mlp"), 1)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models on a shared 2-core box: one intra-op thread avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Models:
    """Factories of fresh seeded models, for tests that need several or mutate them."""

    classifier = staticmethod(make_classifier)
    embedder = staticmethod(make_embedder)


@pytest.fixture
def models() -> Models:
    return Models()


@pytest.fixture
def classifier() -> nn.Module:
    """Tiny conv classifier, 5 classes, linear head."""
    return make_classifier("linear")


@pytest.fixture
def mlp_classifier() -> nn.Module:
    """Tiny conv classifier, 5 classes, nonlinear (MLP) head."""
    return make_classifier("mlp")


@pytest.fixture
def embedder() -> nn.Module:
    """Tiny face-style embedding model: PReLU, MLP head, 16-d embeddings."""
    return make_embedder()


@pytest.fixture
def resnet18() -> nn.Module:
    """torchvision ResNet-18 (random init, seed 0, 10 classes) for 32-64 px inputs."""
    torch.manual_seed(0)
    return seeded(torchvision.models.resnet18(weights=None, num_classes=10), 0)


@pytest.fixture
def images() -> torch.Tensor:
    """Three normalised 32 x 32 images."""
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def pair_target(embedder: nn.Module) -> Callable[[str], SimilarityTarget]:
    """Builds a SimilarityTarget against embeddings of three other (seeded) images."""

    def build(mode: str = "similar") -> SimilarityTarget:
        partners = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return SimilarityTarget(embedder(partners), mode=mode)

    return build
