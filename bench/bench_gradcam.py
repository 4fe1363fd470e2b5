"""Grad-CAM on resnet18 (batch 16, 224 px, 1 thread): deepscope vs Captum LayerGradCam vs pytorch-grad-cam.

Goal (issue 2): at most 1.2x one forward pass of the batch, no slower than Captum, at least 2x faster than
pytorch-grad-cam. Run: .venv/bin/python bench/bench_gradcam.py [--batch 16] [--size 224]
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from common import report, resnet18_batch, timed_together
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import deepscope as ds


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    model, x, classes = resnet18_batch(args.batch, args.size)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        xx = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xx).gather(1, classes[:, None]).sum(), xx)

    def ours() -> None:
        ds.explain(model, x, method="gradcam", layer="layer4", target=classes)

    captum = LayerGradCam(model, model.layer4)

    def captum_gradcam() -> None:
        coarse = captum.attribute(x, target=classes, relu_attributions=True)
        F.interpolate(coarse, size=x.shape[2:], mode="bilinear", align_corners=False)

    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    peer = GradCAM(model=model, target_layers=[model.layer4])

    def grad_cam_peer() -> None:
        peer(input_tensor=x, targets=targets)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        functions = {
            "forward only (no grad)": forward,
            "forward + backward to the input": forward_backward,
            "deepscope gradcam": ours,
            "captum LayerGradCam + upsample": captum_gradcam,
            "pytorch-grad-cam GradCAM": grad_cam_peer,
        }
        rows = timed_together(functions, args.repeat)
    times = report(f"Grad-CAM, resnet18, batch {args.batch}, {args.size} px", rows, "deepscope gradcam")
    ours = times["deepscope gradcam"]
    print(f"  deepscope gradcam / forward = {ours / times['forward only (no grad)']:.2f} (goal <= 1.2)")
    print(f"  captum / deepscope = {times['captum LayerGradCam + upsample'] / ours:.2f} (goal >= 1)")
    print(f"  pytorch-grad-cam / deepscope = {times['pytorch-grad-cam GradCAM'] / ours:.2f} (goal >= 2)")
    return times


if __name__ == "__main__":
    main()
