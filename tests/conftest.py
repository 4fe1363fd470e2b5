"""Tiny models and shared helpers for the tests."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepscope as ds

torch.set_num_threads(2)

# Options that keep each method fast on tiny models; methods not listed run with their defaults.
FAST_OPTIONS: dict[str, dict] = {
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"samples": 4, "seed": 0},
    "scorecam": {"batch_size": 32},
    "lime": {"samples": 40, "grid": 4, "seed": 0},
    "occlusion": {"window": 4, "stride": 4},
}


class TinyCNN(nn.Module):
    """conv-relu-conv-relu-maxpool-conv-relu-GAP-linear, with ReLU modules (optionally in-place)."""

    def __init__(self, classes: int = 5, inplace: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.relu3 = nn.ReLU(inplace=inplace)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        x = self.relu3(self.conv3(x))
        return self.fc(self.gap(x).flatten(1))


class FunctionalCNN(TinyCNN):
    """The same network calling ReLU functionally (F.relu, torch.relu, Tensor.relu): no ReLU modules used."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv2(F.relu(self.conv1(x)))))
        x = self.conv3(x).relu()
        return self.fc(self.gap(x).flatten(1))


def tiny_cnn(kind: str = "modules", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = FunctionalCNN() if kind == "functional" else TinyCNN(inplace=kind == "inplace")
    return model.eval()


@pytest.fixture
def model() -> nn.Module:
    return tiny_cnn()


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 3, 16, 16)


def explain_fast(model: nn.Module, x: torch.Tensor, method: str, **kwargs) -> ds.Explanation:
    options = {**FAST_OPTIONS.get(method, {}), **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.explain(model, x, method=method, **options)


def hooks_left(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def minmax(t: torch.Tensor) -> torch.Tensor:
    flat = t.reshape(t.shape[0], -1)
    low = flat.amin(dim=1).view(-1, *([1] * (t.ndim - 1)))
    high = flat.amax(dim=1).view(-1, *([1] * (t.ndim - 1)))
    return (t - low) / (high - low + 1e-12)
