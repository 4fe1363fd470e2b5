"""What docs/embeddings.md's blocks assume: a small CNN with a `layer4`, 310 test images and labels, an open run."""

from collections import OrderedDict

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import deepscope as ds

torch.manual_seed(0)
model = nn.Sequential(
    OrderedDict(
        layer1=nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
        layer4=nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(16, 10),
    )
)
# 310 points: enough for perplexity 100 (openTSNE needs 3 x perplexity < N)
test_loader = DataLoader(TensorDataset(torch.rand(310, 3, 16, 16), torch.arange(310) % 10), batch_size=155)
run, epoch = ds.Run("runs/embeddings"), 0


def docs_teardown() -> None:
    run.close()
