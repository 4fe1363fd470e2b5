"""What docs/occlusion.md's block assumes: a small CNN and two images large enough for its 48-pixel window."""

import torch
import torchvision

torch.manual_seed(0)
model = torchvision.models.resnet18(num_classes=10).eval()
images = torch.rand(2, 3, 64, 64)
