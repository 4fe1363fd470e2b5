"""Deletion / insertion curves: deepscope (all steps of all images in large batches) vs Quantus vs a naive loop.

Quantus's deletion is ``PixelFlipping`` (it has no insertion): per step it perturbs the whole batch and runs it
through the model, so it makes ``steps`` forward passes of ``N`` images. The naive loop runs one image and one
step at a time. deepscope runs the ``N * (steps + 1)`` images in batches of ``--batch-size`` rows.
Same model (resnet18, random weights, greyscale input, 1 thread), same images, same Grad-CAM maps, baseline 0.

Run: .venv/bin/python bench/bench_faithfulness.py   (needs ``pip install quantus`` for the Quantus row)
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import numpy as np
import torch
from common import report, resnet18_batch, timed_together
from torch import Tensor, nn

import deepscope as ds


class Gray(nn.Module):
    """Greyscale input for an RGB network: Quantus 0.6 ranks each channel of a position on its own and needs
    ``H * W`` divisible by its step, so only one-channel inputs give it the same 100 steps as the others."""

    def forward(self, x: Tensor) -> Tensor:
        return x.expand(-1, 3, -1, -1)


def naive(model: nn.Module, x: Tensor, heatmap: Tensor, targets: Tensor, metric: str, steps: int) -> Tensor:
    """One image and one step at a time, baseline 0; the curves ``[N, steps + 1]``."""
    curves = torch.zeros(x.shape[0], steps + 1)
    positions = heatmap[0].numel()
    with torch.no_grad():
        for i in range(x.shape[0]):
            order = torch.argsort(heatmap[i].flatten(), descending=True, stable=True)
            for k in range(steps + 1):
                chosen = torch.zeros(positions, dtype=torch.bool)
                chosen[order[: round(k * positions / steps)]] = True
                chosen = chosen.view(heatmap.shape[1:])
                image = torch.where(chosen, x[i], 0.0) if metric == "insertion" else torch.where(chosen, 0.0, x[i])
                curves[i, k] = model(image[None]).softmax(dim=1)[0, targets[i]]
    return curves


def quantus_deletion(model: nn.Module, x: Tensor, heatmap: Tensor, targets: Tensor, steps: int) -> Callable[[], list]:
    import quantus

    positions = x[0, 0].numel()
    if positions % steps:
        raise SystemExit(f"Quantus needs H * W ({positions}) divisible by the steps ({steps}); try --size 40.")
    metric = quantus.PixelFlipping(
        features_in_step=positions // steps,
        perturb_baseline=0.0,
        return_auc_per_sample=False,  # its AUC calls np.trapz, gone in numpy 2: we take the curves
        disable_warnings=True,
    )
    x_np, y_np = x.numpy(), targets.numpy()
    a_np = heatmap[:, None].numpy().copy()

    def run() -> list:
        return metric(model, x_np, y_np, a_batch=a_np, device="cpu", softmax=True, batch_size=len(x_np))

    return run


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=40)  # 1600 positions: 16 per step
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rgb, x, _ = resnet18_batch(args.batch, args.size)
    model, x = nn.Sequential(Gray(), rgb).eval(), x.mean(dim=1, keepdim=True)
    with torch.no_grad():
        classes = model(x).argmax(dim=1)
    heatmap = ds.explain(model, x, method="gradcam", target=classes).heatmap
    results: dict[str, object] = {}
    times: dict[str, float] = {}
    for metric in ("deletion", "insertion"):

        def ours(metric: str = metric) -> None:
            results[f"ours {metric}"] = ds.faithfulness(
                model, x, heatmap, metric=metric, steps=args.steps, baseline=0.0, target=classes,
                batch_size=args.batch_size, progress=False,
            )  # fmt: skip

        def loop(metric: str = metric) -> None:
            results[f"naive {metric}"] = naive(model, x, heatmap, classes, metric, args.steps)

        functions = {f"deepscope faithfulness ({metric})": ours, f"naive loop ({metric})": loop}
        try:
            if metric == "deletion":
                peer = quantus_deletion(model, x, heatmap, classes, args.steps)

                def quantus_run(peer: Callable[[], list] = peer) -> None:
                    results["quantus"] = peer()

                functions["quantus PixelFlipping (deletion)"] = quantus_run
        except ImportError:
            print("  (quantus is not installed: pip install quantus to compare with it)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = timed_together(functions, args.repeat)
        times.update(
            report(
                f"{metric.capitalize()} curves, resnet18, {args.batch} images {args.size} px, {args.steps} steps, "
                f"batch_size {args.batch_size}",
                rows,
                f"deepscope faithfulness ({metric})",
            )
        )
        ours_curves, naive_curves = results[f"ours {metric}"].curves, results[f"naive {metric}"]  # type: ignore[union-attr]
        print(f"  max |ours - naive| over the curves = {(ours_curves - naive_curves).abs().max().item():.2e}")
        if "quantus" in results and metric == "deletion":
            # Quantus's curve has no clean-input point: it is ours from step 1 on.
            theirs = torch.tensor(np.asarray(results["quantus"]), dtype=torch.float32)
            difference = (ours_curves[:, 1:] - theirs).abs().max().item()
            print(f"  max |ours - quantus| over the curves = {difference:.2e}")
    return times


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
