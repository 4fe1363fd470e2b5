"""What docs/demo.md's block assumes: FashionMNIST, here a tiny random stand-in (64 training, 20 test images)."""

import torch

from deepscope.demo.data import FashionData

generator = torch.Generator().manual_seed(0)
tiny_fashion = FashionData(
    train_images=torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8, generator=generator),
    train_labels=torch.arange(64) % 10,
    test_images=torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8, generator=generator),
    test_labels=torch.arange(20) % 10,
    source="random stand-in",
)
