"""Occlusion speed: deepscope (plain, exact incremental, approximate) against Captum's ``Occlusion``, in one process.

The setting of the issue: torchvision's resnet18 with random weights in eval mode, 224x224 inputs, a 32x32 window
with stride 16 (13 x 13 = 169 windows per image), one CPU thread (``torch.set_num_threads(1)``, so the numbers do
not depend on how many cores the machine lends), Captum with ``perturbations_per_eval=64`` and deepscope with
``batch_size=64``. Every method gets the same inputs, window, stride, baseline (the per-channel mean of the
inputs) and target (the predicted class); the script prints the largest difference between the attributions,
the times (best of ``--repeats``) and Captum's time divided by ours. The approximate mode (``tau`` below 1,
Krypton's projective field thresholding; ``--tau``, default 0.5) is timed beside them, with its error against the
exact map: the largest absolute difference, the relative L2 error and the rank correlation (Spearman) of the maps.

    python bench/bench_occlusion.py            # one image
    python bench/bench_occlusion.py --images 2 --repeats 3
    python bench/bench_occlusion.py --tau 0.6 0.5 0.4

``main(argv)`` returns the figures as a dict, for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


def _best_time(fn: Callable[[], Tensor], repeats: int) -> tuple[float, float, Tensor]:
    """Best wall time and best CPU time of this process over ``repeats`` runs, and the last result.

    With one thread the CPU time does not count the moments another process had the core, so on a shared
    machine it is the steadier figure of the two.
    """
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    assert result is not None
    return wall, cpu, result


def _spearman(a: Tensor, b: Tensor) -> float:
    """The rank correlation of two maps (ties broken by position)."""
    ra = a.flatten().double().argsort().argsort().double()
    rb = b.flatten().double().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print a report and return its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1, help="inputs explained together (default 1)")
    parser.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    parser.add_argument("--window", type=int, default=32, help="window side (default 32)")
    parser.add_argument("--stride", type=int, default=16, help="window stride (default 16)")
    parser.add_argument("--batch", type=int, default=64, help="windows per forward pass, both libraries (default 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per method; the best counts (default 1)")
    parser.add_argument("--tau", type=float, nargs="*", default=[0.5], help="approximate modes to time (default 0.5)")
    parser.add_argument("--no-plain", action="store_true", help="skip deepscope's whole passes")
    parser.add_argument("--no-captum", action="store_true", help="skip Captum (then no ratio)")
    args = parser.parse_args(argv)

    import torchvision

    import deepscope as ds

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(args.images, 3, args.size, args.size)
    baseline = x.mean(dim=(0, 2, 3), keepdim=True)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    per_axis = -(-(args.size - args.window) // args.stride) + 1
    figures: dict[str, Any] = {
        "model": "resnet18 (random weights, eval)",
        "images": args.images,
        "size": args.size,
        "window": args.window,
        "stride": args.stride,
        "windows_per_image": per_axis**2,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }
    print(
        f"resnet18 (random weights, eval), {args.images} x 3 x {args.size} x {args.size}, window {args.window} "
        f"stride {args.stride} ({per_axis**2} windows per image), {args.batch} per pass, "
        f"torch.set_num_threads({args.threads}), torch {torch.__version__}"
    )

    def ours(incremental: bool, tau: float = 1.0) -> Tensor:
        e = ds.explain(
            model,
            x,
            method="occlusion",
            target=target,
            window=args.window,
            stride=args.stride,
            baseline=baseline,
            batch_size=args.batch,
            incremental=incremental,
            tau=tau,
        )
        assert e.attribution is not None
        return e.attribution

    results: dict[str, Tensor] = {}
    runs: list[tuple[str, Callable[[], Tensor]]] = [("incremental", lambda: ours(True))]
    runs += [(f"tau={tau:g}", lambda tau=tau: ours(True, tau)) for tau in args.tau]  # type: ignore[misc]
    if not args.no_plain:
        runs.append(("plain", lambda: ours(False)))
    for name, fn in runs:
        seconds, cpu, results[name] = _best_time(fn, args.repeats)
        figures[f"{name}_s"], figures[f"{name}_cpu_s"] = seconds, cpu
        print(f"deepscope {name:<12} {seconds:8.2f} s  (CPU {cpu:.2f} s)")
    exact = results["incremental"]
    figures["max_abs_attribution"] = exact.abs().max().item()
    if "plain" in results:
        diff = (exact - results["plain"]).abs().max().item()
        figures["max_abs_diff_incremental_vs_plain"] = diff
        print(f"max |incremental - plain| = {diff:.3g} (largest |attribution| {figures['max_abs_attribution']:.3g})")
    for tau in args.tau:
        name = f"tau={tau:g}"
        error = results[name] - exact
        figures[f"{name}_max_abs_error"] = error.abs().max().item()
        figures[f"{name}_relative_l2_error"] = (error.norm() / exact.norm()).item()
        figures[f"{name}_spearman"] = _spearman(results[name].mean(dim=1), exact.mean(dim=1))
        print(
            f"{name} vs exact: max |error| = {figures[f'{name}_max_abs_error']:.3g}, relative L2 error "
            f"{figures[f'{name}_relative_l2_error']:.3f}, Spearman {figures[f'{name}_spearman']:.3f}"
        )

    if not args.no_captum:
        from captum.attr import Occlusion

        def captum() -> Tensor:
            return Occlusion(model).attribute(
                x,
                sliding_window_shapes=(3, args.window, args.window),
                strides=(3, args.stride, args.stride),
                baselines=baseline,
                target=target,
                perturbations_per_eval=args.batch,
            )

        seconds, cpu, reference = _best_time(captum, args.repeats)
        figures["captum_s"], figures["captum_cpu_s"] = seconds, cpu
        print(f"captum Occlusion       {seconds:8.2f} s  (CPU {cpu:.2f} s; perturbations_per_eval={args.batch})")
        for name in results:
            diff = (results[name] - reference).abs().max().item()
            figures[f"max_abs_diff_{name}_vs_captum"] = diff
            figures[f"speedup_{name}"] = seconds / figures[f"{name}_s"]
            figures[f"speedup_{name}_cpu"] = cpu / figures[f"{name}_cpu_s"]
            print(
                f"{name:<12} vs captum: max |diff| = {diff:.3g}, captum / ours = {figures[f'speedup_{name}']:.2f}x "
                f"(CPU time: {figures[f'speedup_{name}_cpu']:.2f}x)"
            )
        for name in results:
            if name != "plain":
                ratio = figures[f"speedup_{name}_cpu"]
                verdict = "meets" if ratio >= 5 else f"misses by {5 / ratio:.2f}x"
                kind = "exact" if name == "incremental" else "approximate"
                print(f"goal >= 5x Captum, {kind} {name}: {ratio:.2f}x in CPU time, {verdict}")
    return figures


if __name__ == "__main__":
    main()
