"""What docs/tracking.md's blocks assume: a small MLP and its data, logged values, a figure, a tiny Keras model."""

import os

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(20, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


torch.manual_seed(0)
model = MLP()
loader = DataLoader(TensorDataset(torch.randn(16, 20), torch.arange(16) % 3), batch_size=8)
example_batch = torch.randn(2, 20)
epochs, step = 2, 10
acc, vl, va = 0.4, 1.0, 0.35
names = ["circle", "square", "star"]
val_labels, val_predictions = torch.arange(12) % 3, torch.arange(12) % 2
figure = Figure()
figure.add_subplot().plot([0, 1], [1, 0])

os.environ["KERAS_BACKEND"] = "torch"  # as the page says: before keras is first imported
import keras  # noqa: E402

keras_model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
keras_model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x_train, y_train = np.random.default_rng(0).normal(size=(32, 20)).astype("float32"), np.arange(32) % 3
x_val, y_val = x_train[:8], y_train[:8]
