"""The demo's FashionMNIST network: small enough to train in a minute on two CPU cores."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn


def _conv(name: int, channels_in: int, channels_out: int) -> list[tuple[str, nn.Module]]:
    return [
        (f"conv{name}", nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False)),
        (f"bn{name}", nn.BatchNorm2d(channels_out)),
        (f"relu{name}", nn.ReLU()),
    ]


class FashionCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU stages (16, 32, 64 channels; 28 -> 14 -> 7 pixels), global average pooling, linear.

    Global average pooling straight into the classifier makes the network fit CAM as well as Grad-CAM; batch
    norm lets one epoch of Adam reach about 86 % test accuracy. Layer names: ``features.conv1`` ...
    ``features.relu3`` (the 7 x 7 map Grad-CAM explains), ``pool``, ``fc``.
    """

    def __init__(self, classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        first, second, third = widths
        self.features = nn.Sequential(
            OrderedDict(
                [
                    *_conv(1, 1, first),
                    ("pool1", nn.MaxPool2d(2)),
                    *_conv(2, first, second),
                    ("pool2", nn.MaxPool2d(2)),
                    *_conv(3, second, third),
                ]
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(third, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))
