"""What docs/explain.md's block assumes: a small CNN, two images and no extra options."""

import torch
import torchvision

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10).eval()
images = torch.rand(2, 3, 32, 32)
options: dict[str, object] = {}
