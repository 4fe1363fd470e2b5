"""What docs/lrp.md's first block assumes: a small CNN and two images (the worked example builds its own)."""

import torch
import torchvision

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10).eval()
images = torch.rand(2, 3, 32, 32)
