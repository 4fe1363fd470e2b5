"""Conservation of LRP on transformers (random weights, no downloads): the table in docs/lrp.md.

For each model, ``images`` random images at 224x224 (float32, default options but ``biases``), prints per image
``sum(attribution) / score``, the share kept by constants (``extras["constants"]``: class token, position embedding)
and the books' gap ``|sum(attribution) + constants * score - score| / |score|``. Also what Captum's LRP does with
the same model. About a minute per model and image on one CPU core; ``python docs/measure_lrp_transformers.py
[images] [device]``.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable

import torch
import torchvision
from torch import nn

import deepscope as ds


def _vit_b_16() -> nn.Module:
    model = torchvision.models.vit_b_16(weights=None)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts the head at zero
    return model


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return build


MODELS: dict[str, Callable[[], nn.Module]] = {
    "torchvision vit_b_16": _vit_b_16,
    "timm vit_small_patch16_224": _timm("vit_small_patch16_224"),
    "torchvision swin_t": torchvision.models.swin_t,
    "torchvision convnext_tiny": torchvision.models.convnext_tiny,
}


def captum_says(model: nn.Module, x: torch.Tensor, target: int) -> str:
    from captum.attr import LRP

    try:
        relevance = LRP(model).attribute(x, target=target)
    except Exception as error:  # what Captum does is the measurement
        return f"{type(error).__name__}: {str(error).splitlines()[0][:90]}"
    return f"sum(R) / score = {float(relevance.sum() / model(x)[0, target]):.3g}"


def main() -> None:
    images = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    device = sys.argv[2] if len(sys.argv) > 2 else "cpu"
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(images, 3, 224, 224, generator=generator).to(device)
    for name, build in MODELS.items():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build().eval().to(device)
        for biases in (False, True):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                e = ds.explain(model, x, method="lrp", biases=biases)
            seconds = time.perf_counter() - start
            score = e.scores.double()
            total = e.attribution.flatten(1).double().sum(dim=1)
            kept = e.extras.get("constants", torch.zeros_like(e.scores)).double()
            gap = ((total + kept * score - score) / score).abs()
            print(
                f"{name}, biases={biases}: sum(R)/score {[round(v, 4) for v in (total / score).tolist()]}, "
                f"constants {[round(v, 4) for v in kept.tolist()]}, books' gap max {float(gap.max()):.1e} "
                f"({seconds:.0f} s)",
                flush=True,
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            print(f"{name}, Captum LRP: {captum_says(model, x[:1], int(e.targets[0]))}", flush=True)


if __name__ == "__main__":
    main()
