"""Object segmentation for free: a saliency map, seeds from its quantiles, and a GrabCut-style split (seed 003).

Simonyan et al. (2014, section 3.2) seed GrabCut with the pixels of a class saliency map: the top 5 % are
foreground, the bottom 30 % background, and GrabCut's colour models decide the rest. Nothing in the training told the
network where the object is; the labels only said which class.

:func:`segment` does that with OpenCV's ``cv2.grabCut`` when ``opencv-python`` is installed; otherwise with a
simpler stand-in (scikit-image and SciPy): each pixel goes to the nearer of the two seed colours, and the connected
parts touching the foreground seeds are kept, holes filled.

Run it: ``python examples/saliency_segmentation.py [figure.png]``. It trains a tiny CNN for a few seconds on the CPU
to tell images with a bright disc from images without one, explains a new image with ``ds.explain(...,
"saliency")`` and prints how well the mask covers the disc (intersection over union); with a path, it saves a
figure of image, saliency and mask.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import torch
from scipy import ndimage
from skimage import measure
from torch import nn

import deepscope as ds
from deepscope import render
from deepscope.errors import BadInputError


def seeds(saliency: np.ndarray, foreground: float = 0.95, background: float = 0.30) -> tuple[np.ndarray, np.ndarray]:
    """Sure foreground (saliency at or above its ``foreground`` quantile) and sure background (at or below its
    ``background`` quantile), as boolean masks ``[H, W]``: Simonyan et al.'s 95 % and 30 %."""
    if not 0 <= background < foreground <= 1:
        raise ValueError(
            f"need 0 <= background < foreground <= 1, got background={background}, foreground={foreground}"
        )
    high, low = np.quantile(saliency, [foreground, background])
    return saliency >= high, saliency <= low


def segment(
    image: np.ndarray,
    saliency: np.ndarray,
    foreground: float = 0.95,
    background: float = 0.30,
    grabcut: bool | None = None,
) -> np.ndarray:
    """A boolean object mask ``[H, W]`` from an image ``[H, W, C]`` in [0, 1] and its saliency map ``[H, W]``.

    Args:
        foreground, background: the saliency quantiles of the seeds (:func:`seeds`).
        grabcut: ``True`` uses ``cv2.grabCut`` (needs ``opencv-python``), ``False`` the colour split, ``None`` the
            first where OpenCV is installed.
    """
    if image.shape[:2] != saliency.shape:
        raise BadInputError(
            f"image {image.shape[:2]} and saliency {saliency.shape} differ in size; pass [H, W, C], [H, W]"
        )
    sure_object, sure_background = seeds(saliency, foreground, background)
    if grabcut is None:
        grabcut = importlib.util.find_spec("cv2") is not None
    if grabcut:
        return _grabcut(image, sure_object, sure_background)
    return _colour_split(image, sure_object, sure_background)


def _grabcut(image: np.ndarray, sure_object: np.ndarray, sure_background: np.ndarray) -> np.ndarray:
    import cv2

    mask = np.full(sure_object.shape, cv2.GC_PR_BGD, dtype=np.uint8)
    mask[sure_object] = cv2.GC_FGD
    mask[sure_background] = cv2.GC_BGD
    rgb = image if image.shape[2] == 3 else np.repeat(image[..., :1], 3, axis=2)
    pixels = np.ascontiguousarray((rgb * 255).round().clip(0, 255).astype(np.uint8))
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(pixels, mask, None, *models, 5, cv2.GC_INIT_WITH_MASK)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def _colour_split(image: np.ndarray, sure_object: np.ndarray, sure_background: np.ndarray) -> np.ndarray:
    """GrabCut's idea without its graph cut: each pixel joins the nearer mean seed colour; then the connected
    parts that hold foreground seeds are the object, holes filled."""
    pixels = image.reshape(-1, image.shape[2]).astype(np.float64)
    object_colour = pixels[sure_object.ravel()].mean(axis=0)
    background_colour = pixels[sure_background.ravel()].mean(axis=0)
    nearer = np.linalg.norm(pixels - object_colour, axis=1) < np.linalg.norm(pixels - background_colour, axis=1)
    mask = (nearer.reshape(sure_object.shape) | sure_object) & ~sure_background
    parts = measure.label(mask, connectivity=2)
    kept = np.unique(parts[sure_object & mask])
    return ndimage.binary_fill_holes(np.isin(parts, kept[kept > 0]))


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks."""
    union = np.logical_or(mask, truth).sum()
    return float(np.logical_and(mask, truth).sum() / union) if union else 1.0


# The demonstration ----------------------------------------------------------------------------------------------------


def disc_images(count: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy dark greyscale images ``[count, 1, size, size]``, every other one with a bright disc of random place
    and radius; returns the images, labels (1: disc) and the discs' masks."""
    images = 0.25 + 0.1 * torch.randn(count, 1, size, size, generator=generator)
    labels = torch.arange(count) % 2
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(size // 4, size - size // 4, (count, 2), generator=generator)
    radii = torch.randint(size // 8, size // 5 + 1, (count,), generator=generator)
    inside = (rows - centres[:, :1, None]) ** 2 + (cols - centres[:, 1:, None]) ** 2 <= radii[:, None, None] ** 2
    discs = inside & (labels[:, None, None] == 1)
    images[:, 0][discs] = 0.85 + 0.05 * torch.randn(int(discs.sum()), generator=generator)
    return images.clamp(0, 1), labels, discs


def disc_classifier(seed: int = 0, steps: int = 60, size: int = 32) -> nn.Module:
    """A tiny CNN trained to say whether an image holds a bright disc (labels only, never where)."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    with torch.random.fork_rng():  # the initial weights, from this seed, without moving the caller's generator
        torch.manual_seed(seed)
        model.apply(lambda m: m.reset_parameters() if isinstance(m, (nn.Conv2d, nn.Linear)) else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        images, labels, _ = disc_images(16, size, generator)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def main(path: str | None = None) -> float:
    """Train, explain one new image with a disc, segment it; print (and return) the mask's IoU with the disc."""
    model = disc_classifier()
    images, _, discs = disc_images(2, 32, torch.Generator().manual_seed(123))
    image, disc = images[1:2], discs[1].numpy()  # the second image holds a disc
    saliency = ds.explain(model, image, method="saliency", target=1).heatmap[0].numpy()
    mask = segment(image[0].permute(1, 2, 0).numpy(), saliency)
    score = iou(mask, disc)
    print(f"mask covers the disc: IoU {score:.2f} ({'GrabCut' if importlib.util.find_spec('cv2') else 'colour split'})")
    if path:
        figure = render.new_figure(9, 3)
        panels = [(image[0, 0].numpy(), "image"), (saliency, "saliency (class 'disc')"), (mask, "mask")]
        for column, (picture, title) in enumerate(panels):
            axes = figure.add_subplot(1, 3, column + 1)
            axes.imshow(picture, cmap="gray")
            axes.set_title(title)
            axes.axis("off")
        render.save_figure(figure, path)
    return score


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
