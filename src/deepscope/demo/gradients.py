"""Seed 000's vanishing-gradient journey: a deep tanh MLP against the same ReLU MLP, both logged into runs.

The set-up of the tutorial the seed cites: 10 layers of width 16 on "two circles" data; tanh with weights drawn
uniformly from [0, 1], ReLU with He initialisation. ``run.watch`` records every layer's weights, gradients and
activations; the gradient norms per layer show the tanh network's first layers receiving almost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .runs import fresh_run_dir

Log = Callable[[str], None]

DEPTH, WIDTH = 10, 16


def two_circles(count: int, noise: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Points on two concentric circles (radius 1 and 0.5) with Gaussian noise; label 1 for the inner circle."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (count,), generator=generator)
    angle = torch.rand(count, generator=generator) * 2 * math.pi
    radius = torch.where(labels == 1, 0.5, 1.0)
    points = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    return points + noise * torch.randn(count, 2, generator=generator), labels


def mlp(activation: str, seed: int = 0) -> nn.Sequential:
    """``DEPTH`` linear layers of width ``WIDTH``; tanh with U[0, 1] weights, ReLU with He initialisation."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    sizes = [2] + [WIDTH] * (DEPTH - 1)
    for fan_in in sizes:
        linear = nn.Linear(fan_in, WIDTH)
        if activation == "tanh":
            nn.init.uniform_(linear.weight, 0.0, 1.0)
        else:
            nn.init.kaiming_uniform_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.Tanh() if activation == "tanh" else nn.ReLU()]
    layers.append(nn.Linear(WIDTH, 2))
    return nn.Sequential(*layers)


@dataclass
class Journey:
    """Where the runs are and the first/last layer gradient-norm ratio each ended with."""

    runs: dict[str, Path]
    ratio: dict[str, float]
    accuracy: dict[str, float]
    figure: Path


def train(activation: str, out: Path, steps: int, every: int, seed: int, progress: bool) -> tuple[float, float]:
    """Train one MLP for ``steps`` SGD steps, logged into the run ``out / activation``; (ratio, accuracy)."""
    import deepscope as ds

    x, y = two_circles(1000, seed=seed)
    model = mlp(activation, seed=seed)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    with ds.Run(
        fresh_run_dir(out / activation), config={"activation": activation, "depth": DEPTH, "width": WIDTH}
    ) as run:
        run.graph(model, x[:8])
        run.watch(model, every=every)
        for step in tqdm(range(steps), desc=activation, disable=not progress, leave=False):
            batch = torch.randint(0, len(x), (32,), generator=generator)
            logits = model(x[batch])
            loss = nn.functional.cross_entropy(logits, y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            accuracy = (logits.argmax(1) == y[batch]).float().mean()
            run.log({"train/loss": loss.detach(), "train/acc": accuracy}, step=step)
        with torch.no_grad():
            final = (model(x).argmax(1) == y).float().mean().item()
        run.log({"val/acc": final}, step=steps)
    first, last = _gradient_norms(out / activation)
    return first / last if last > 0 else float("nan"), final


def _gradient_norms(run_dir: Path) -> tuple[float, float]:
    """Mean gradient norm of the first and the last linear layer over the run."""
    from ..store import Reader

    with Reader(run_dir) as reader:
        first = reader.scalars("grad_norm/0").values
        last = reader.scalars(f"grad_norm/{2 * DEPTH}").values
    return float(first.mean()), float(last.mean())


def figure(runs: dict[str, Path], path: Path) -> Path:
    """Gradient norm of every linear layer over training, one panel per run, log scale."""
    from matplotlib import colormaps

    from ..render import new_figure
    from ..store import Reader

    plot = new_figure(10, 3.8)
    axes = plot.subplots(1, len(runs), sharey=True)
    colours = colormaps["viridis"]
    for ax, (name, run_dir) in zip(axes, runs.items(), strict=True):
        with Reader(run_dir) as reader:
            for i in range(DEPTH + 1):
                series = reader.scalars(f"grad_norm/{2 * i}")
                ax.plot(series.steps, series.values, color=colours(i / DEPTH), label=f"layer {i + 1}")
        ax.set_yscale("log")
        ax.set_title(f"{name}: gradient norm per layer")
        ax.set_xlabel("step")
    axes[0].set_ylabel("||dL/dW||")
    axes[-1].legend(fontsize=7, ncol=2)
    plot.savefig(path, dpi=90)
    return path


def run(
    out: str | Path = "deepscope-demo/runs",
    steps: int = 300,
    every: int = 10,
    seed: int = 0,
    log: Log = print,
    progress: bool = True,
) -> Journey:
    """Train both MLPs into ``out/tanh`` and ``out/relu`` and draw their gradient norms into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ratios, accuracies, runs = {}, {}, {}
    for activation in ("tanh", "relu"):
        ratios[activation], accuracies[activation] = train(activation, out, steps, every, seed, progress)
        runs[activation] = out / activation
    picture = figure(runs, out / "gradient_norms.png")
    log("vanishing gradients, 10-layer MLPs on two circles (seed 000):")
    for activation in runs:
        log(
            f"  {activation:<5} first/last layer gradient norm {ratios[activation]:9.2e}   "
            f"accuracy {accuracies[activation]:.2f}   run: {runs[activation]}"
        )
    log(f"gradient norms per layer: {picture}")
    return Journey(runs, ratios, accuracies, picture)
