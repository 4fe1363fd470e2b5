"""What docs/board.md's blocks assume: a run, a small MLP with an `fc1` and its test data."""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import deepscope as ds

torch.manual_seed(0)
model = nn.Sequential()
model.add_module("fc1", nn.Linear(8, 4))
model.add_module("fc2", nn.Linear(4, 3))
test_loader = DataLoader(TensorDataset(torch.randn(100, 8), torch.arange(100) % 3), batch_size=50)
CLASSES = ["a", "b", "c"]
points = torch.rand(100, 2)
run = ds.Run("runs/projector")


def docs_teardown() -> None:
    run.close()
    board = globals().get("shown")  # the board the page's first block starts
    if board is not None:
        board.stop()
