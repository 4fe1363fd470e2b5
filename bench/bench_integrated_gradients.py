"""Integrated gradients: Captum's completeness error in fewer steps, 1 thread (issue 18's goal: >= 3x less time).

For resnet18 and vgg16 (random weights, eval) on scikit-image's photos at 224 px, Captum's ``IntegratedGradients``
runs 50 steps with ``riemann_trapezoid`` (the issue's "default") and with ``gausslegendre`` (Captum 0.9's actual
default ``method``). For each, deepscope is asked for the same completeness error, every input's
|sum(attribution) - (f(x) - f(baseline))| / |f(x) - f(baseline)| at most Captum's smallest over the images, with
``completeness=`` (steps doubling from ``--start``), and again with the steps that call settled on (a user who
knows them). Times are the best of ``--repeat`` rounds.

The baseline is each photo blurred (``baseline="blur"``). With the zero baseline a random-weight torchvision model is
positively homogeneous along the path (batch norm's running statistics are 0 and 1 and its biases 0), so the
gradient is constant from 0 to x, one Gauss-Legendre node is exact, and the comparison would say nothing.

Run: .venv/bin/python bench/bench_integrated_gradients.py [--archs resnet18 vgg16]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torchvision
from captum.attr import IntegratedGradients
from common import machine

import deepscope as ds
from deepscope.demo.imagenet import load_photos
from deepscope.explain.gradients import gaussian_blur

IMAGES = {"resnet18": 2, "vgg16": 1}  # vgg16 costs about 0.6 s per step and image on one thread
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def photos(count: int, size: int) -> torch.Tensor:
    x = load_photos(("chelsea", "coffee", "astronaut")[:count])
    if size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return (x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


def errors(attribution: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    return ((attribution.flatten(1).double().sum(1) - change).abs() / change.abs()).float()


def compare(arch: str, count: int, size: int, start: int, repeat: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)().eval()
    x = photos(count, size)
    baseline = gaussian_blur(x, sigma=size / 20)  # deepscope's baseline="blur"
    with torch.no_grad():
        out = model(x)
        classes = out.argmax(1)
        rows = torch.arange(count)
        change = (out[rows, classes] - model(baseline)[rows, classes]).double()
    captum = IntegratedGradients(model)
    print(f"\nIntegrated gradients, {arch}, {count} photo(s), {size} px, blurred baseline  [{machine()}]")
    ratios = {}
    for method in ["riemann_trapezoid", "gausslegendre"]:
        found: dict[str, torch.Tensor] = {}

        def peer(method: str = method, found: dict[str, torch.Tensor] = found) -> None:
            found["peer"] = captum.attribute(
                x, baselines=baseline, target=classes, n_steps=50, method=method, internal_batch_size=64
            )

        peer_time = best_of(peer, repeat)
        peer_error = errors(found["peer"], change)
        tolerance = float(peer_error.min())

        def tolerant(tolerance: float = tolerance, found: dict[str, torch.Tensor] = found) -> None:
            e = ds.explain(
                model, x, "integrated_gradients", target=classes, baseline=baseline, steps=start,
                completeness=tolerance, batch_size=64,
            )  # fmt: skip
            found["error"], found["steps"] = e.extras["completeness_error"], e.extras["steps"]

        tolerant_time = best_of(tolerant, repeat)
        steps = int(found["steps"][0])

        def fixed(steps: int = steps, found: dict[str, torch.Tensor] = found) -> None:
            e = ds.explain(model, x, "integrated_gradients", target=classes, baseline=baseline, steps=steps)
            found["fixed"] = e.extras["completeness_error"]

        fixed_time = best_of(fixed, repeat)

        def shown(error: torch.Tensor) -> str:
            return "max " + f"{float(error.max()):.1e}"

        print(f"  Captum method={method!r}, 50 steps: completeness error per photo {peer_error.tolist()}")
        print(f"    {'Captum, 50 steps':<52} {shown(peer_error):>12} {peer_time:8.2f} s")
        label = f"deepscope completeness={tolerance:.1e}, steps from {start}"
        print(f"    {label:<52} {shown(found['error']):>12} {tolerant_time:8.2f} s   {peer_time / tolerant_time:5.2f}x")
        label = f"deepscope steps={steps} (gauss_legendre)"
        print(f"    {label:<52} {shown(found['fixed']):>12} {fixed_time:8.2f} s   {peer_time / fixed_time:5.2f}x")
        ratios[f"{arch} {method} completeness="] = peer_time / tolerant_time
        ratios[f"{arch} {method} steps={steps}"] = peer_time / fixed_time
    return ratios


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=list(IMAGES), choices=list(IMAGES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--start", type=int, default=2, help="deepscope's first steps before doubling")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ratios: dict[str, float] = {}
    for arch in args.archs:
        ratios.update(compare(arch, IMAGES[arch], args.size, args.start, args.repeat))
    print("\n  Captum / deepscope (goal >= 3x against the 50-step trapezoid):")
    for name, ratio in ratios.items():
        print(f"    {name:<52} {ratio:5.2f}x")
    return ratios


if __name__ == "__main__":
    main()
