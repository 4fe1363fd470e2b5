"""What docs/features.md's blocks assume: photos for EfficientNet-Lite0, an MLP, and a small digits CNN `Net`."""

from collections import OrderedDict

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import deepscope as ds

torch.manual_seed(0)
x = torch.rand(1, 3, 64, 64)  # a photo (small: any size above 32 px runs)
loader = DataLoader(TensorDataset(torch.rand(8, 3, 64, 64), torch.zeros(8, dtype=torch.long)), batch_size=4)
mlp = nn.Sequential(
    OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(28 * 28, 16), relu=nn.ReLU(), fc2=nn.Linear(16, 10))
)
run, step = ds.Run("runs/features"), 0


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5, padding=2)
        self.conv2 = nn.Conv2d(8, 16, 5, padding=2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


digits_loader = DataLoader(TensorDataset(torch.rand(8, 1, 28, 28), torch.arange(8)), batch_size=4)


def docs_teardown() -> None:
    run.close()
