"""What docs/maximize.md's blocks assume: a small CNN with a `layer3`, a photo, images in [0, 1], a generator, a run."""

from collections import OrderedDict

import torch
from torch import nn

import deepscope as ds

torch.manual_seed(0)
model = nn.Sequential(
    OrderedDict(
        layer1=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
        layer3=nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()),
        avgpool=nn.AdaptiveAvgPool2d(1),  # torchvision ResNet names
        flatten=nn.Flatten(),
        fc=nn.Linear(8, 10),
    )
).eval()
photo = torch.rand(3, 64, 64)
images = torch.rand(32, 3, 32, 32)
g = nn.Sequential(nn.Linear(128, 3 * 32 * 32), nn.Sigmoid(), nn.Unflatten(1, (3, 32, 32)))  # a generator of 32 px
run, epoch = ds.Run("runs/maximize"), 0


def docs_teardown() -> None:
    run.close()
