"""What README.md's blocks assume: a small ResNet, a few images, loaders, binary scores, an open run."""

import torch
import torchvision
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import deepscope as ds

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10).eval()  # layer2, layer3, layer4 as the README names them
images = torch.rand(4, 3, 32, 32)
image = images[:1]
names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
loader = train_loader = test_loader = DataLoader(TensorDataset(torch.rand(100, 3, 32, 32), torch.arange(100) % 10), 50)
labels, scores = torch.tensor([0, 1] * 10), torch.rand(20)  # a binary classifier's labels and scores
g = nn.Sequential(nn.Linear(128, 3 * 32 * 32), nn.Sigmoid(), nn.Unflatten(1, (3, 32, 32)))  # a generator
example_batch = images
loss, acc = 0.5, 0.8
y_val, predicted = torch.arange(20) % 10, torch.arange(20) % 7
figure = Figure()
figure.add_subplot().plot([0, 1], [1, 0])
run = ds.Run("runs/example")


def docs_teardown() -> None:
    run.close()
