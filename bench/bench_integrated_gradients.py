"""Integrated gradients: Captum's completeness error in fewer steps, 1 thread (issue 18's goal: >= 3x less time).

For resnet18 and vgg16 (random weights, eval) on scikit-image's photos at 224 px, Captum's ``IntegratedGradients``
runs 50 steps with ``riemann_trapezoid`` (the issue's "default") and with ``gausslegendre`` (Captum 0.9's actual
default ``method``). Against the trapezoid, deepscope is asked for the same completeness error, every input's
|sum(attribution) - (f(x) - f(baseline))| / |f(x) - f(baseline)| at most Captum's smallest over the images, with
``completeness=`` (steps doubling from ``--start``), and again with the steps that call settled on (a user who
knows them); times are the best of ``--repeat`` interleaved rounds. Against Captum's Gauss-Legendre default the
rule is the same, so the same 50 steps give the same numbers and error, and only the time per step can differ
(one round).

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


def best_of(functions: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time of each function over ``repeat`` rounds that run them in turn (load drift hits all alike)."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeat):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def photos(count: int, size: int) -> torch.Tensor:
    x = load_photos(("chelsea", "coffee", "astronaut")[:count])
    if size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return (x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


def errors(attribution: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
    return ((attribution.flatten(1).double().sum(1) - change).abs() / change.abs()).float()


def compare(arch: str, count: int, size: int, start: int, repeat: int, default_rule: bool) -> dict[str, float]:
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
    found: dict[str, torch.Tensor] = {}

    def peer(method: str) -> None:
        found[method] = captum.attribute(
            x, baselines=baseline, target=classes, n_steps=50, method=method, internal_batch_size=64
        )

    def ours(name: str, **options: object) -> None:
        e = ds.explain(model, x, "integrated_gradients", target=classes, baseline=baseline, batch_size=64, **options)
        found[name], found[name + " error"], found[name + " steps"] = (
            e.attribution,
            e.extras["completeness_error"],
            e.extras["steps"],
        )

    # Against the 50-step trapezoid: the steps that reach its error, found by completeness= (doubling from --start),
    # then those steps given directly. The tolerance is Captum's smallest error over the photos. Each round runs the
    # three in this order, so the first round's peer sets the tolerance and its deepscope call the steps.
    setting: dict[str, float] = {}

    def trapezoid() -> None:
        peer("riemann_trapezoid")
        setting["tolerance"] = float(errors(found["riemann_trapezoid"], change).min())

    def tolerant() -> None:
        ours("tolerant", steps=start, completeness=setting["tolerance"])
        setting["steps"] = int(found["tolerant steps"][0])

    times = best_of(
        {"peer": trapezoid, "tolerant": tolerant, "fixed": lambda: ours("fixed", steps=int(setting["steps"]))}, repeat
    )
    tolerance, steps = setting["tolerance"], int(setting["steps"])
    peer_error = errors(found["riemann_trapezoid"], change)
    print(f"  Captum method='riemann_trapezoid' (the issue's default), 50 steps; errors per photo {_shown(peer_error)}")
    rows = [
        ("Captum riemann_trapezoid, 50 steps", peer_error, times["peer"]),
        (f"deepscope completeness={tolerance:.1e}, steps from {start}", found["tolerant error"], times["tolerant"]),
        (f"deepscope gauss_legendre, steps={steps}", found["fixed error"], times["fixed"]),
    ]
    ratios = _print(rows)
    result = {f"{arch} vs trapezoid, completeness=": ratios[1], f"{arch} vs trapezoid, steps={steps}": ratios[2]}
    if default_rule:
        # Captum 0.9's default is Gauss-Legendre itself: the same rule and steps give the same numbers, so only the
        # per-step cost can differ. One round: both take long, and the pair is a parity check.
        times = best_of({"peer": lambda: peer("gausslegendre"), "ours": lambda: ours("same", steps=50)}, 1)
        peer_error = errors(found["gausslegendre"], change)
        difference = float((found["same"] - found["gausslegendre"]).abs().max())
        print(f"  Captum method='gausslegendre' (Captum 0.9's default), 50 steps; errors {_shown(peer_error)}")
        rows = [
            ("Captum gausslegendre, 50 steps", peer_error, times["peer"]),
            ("deepscope gauss_legendre, steps=50", found["same error"], times["ours"]),
        ]
        result[f"{arch} vs gausslegendre, steps=50"] = _print(rows)[1]
        print(f"    max |deepscope - Captum| = {difference:.1e}")
    return result


def _shown(error: torch.Tensor) -> str:
    return "[" + ", ".join(f"{value:.2e}" for value in error.tolist()) + "]"


def _print(rows: list[tuple[str, torch.Tensor, float]]) -> list[float]:
    """One line per contender: its largest completeness error, its time and the first row's time over it."""
    reference = rows[0][2]
    for name, error, seconds in rows:
        print(f"    {name:<46} error max {float(error.max()):.1e}  {seconds:8.2f} s  {reference / seconds:6.2f}x")
    return [reference / seconds for _, _, seconds in rows]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=list(IMAGES), choices=list(IMAGES))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--start", type=int, default=2, help="deepscope's first steps before doubling")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--no-default", action="store_true", help="leave out the comparison with Captum's default (gausslegendre)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ratios: dict[str, float] = {}
    for arch in args.archs:
        ratios.update(compare(arch, IMAGES[arch], args.size, args.start, args.repeat, not args.no_default))
    print("\n  Captum / deepscope time (goal: >= 3x at the 50-step trapezoid's completeness error):")
    for name, ratio in ratios.items():
        print(f"    {name:<52} {ratio:5.2f}x")
    return ratios


if __name__ == "__main__":
    main()
