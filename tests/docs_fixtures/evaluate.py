"""What docs/evaluate.md's blocks assume: the demo's FashionMNIST CNN (untrained), a few images and labels."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from deepscope.demo.models import FashionCNN

torch.manual_seed(0)
model = FashionCNN().eval()
y_true, y_pred = torch.arange(40) % 10, torch.arange(40) % 7
test_images, test_labels = torch.randn(40, 1, 28, 28), torch.arange(40) % 10
test_loader = DataLoader(TensorDataset(test_images, test_labels), batch_size=20)
train_images, train_labels = torch.randn(32, 1, 28, 28), torch.arange(32) % 10
images = test_images[:2]
labels, scores = torch.tensor([0, 1] * 10), torch.rand(20)  # a binary classifier's labels and scores
