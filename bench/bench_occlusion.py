"""Occlusion speed: deepscope (plain, exact incremental, approximate) against Captum's ``Occlusion``, in one process.

The setting of the issue: torchvision's resnet18 with random weights in eval mode, 224x224 inputs, a 32x32 window
with stride 16 (13 x 13 = 169 windows per image), one CPU thread (``torch.set_num_threads(1)``, so the numbers do
not depend on how many cores the machine lends), Captum with ``perturbations_per_eval=64`` and deepscope with
``batch_size=64``. Every method gets the same inputs, window, stride, baseline (the per-channel mean of the
inputs) and target (the predicted class); the script prints the largest difference between the attributions,
the times (best of ``--repeats``) and Captum's time divided by ours. The approximate mode (``tau`` below 1,
Krypton's projective field thresholding; ``--tau``, default 0.5) is timed beside them, with its error against the
exact map, per image: the SSIM of the heat maps (the measure Krypton's paper tunes ``tau`` by), the relative L2
error, the rank correlation (Spearman) and the largest absolute difference.

Random weights say little about an approximation's error, and no trained resnet18 can be downloaded here, so
``--quality`` trains one on FashionMNIST (Debian's ``dataset-fashion-mnist``, upsampled to ``--size``; a few
minutes of one CPU the first time, 15 on a loaded machine, then cached in ``--cache``) and explains test
images with it.

    python bench/bench_occlusion.py            # one image
    python bench/bench_occlusion.py --images 2 --repeats 3
    python bench/bench_occlusion.py --tau 0.6 0.5 0.4
    python bench/bench_occlusion.py --quality --images 3 --baseline black --tau 0.8 0.7 0.6 0.5 0.4 --no-plain

``main(argv)`` returns the figures as a dict, for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def fashion_inputs(images: Tensor, size: int) -> Tensor:
    """FashionMNIST uint8 images [N, 28, 28] as resnet18 inputs [N, 3, size, size]: normalised as the demo does,
    grey copied to three channels, upsampled bilinearly."""
    from deepscope.demo.data import to_inputs

    x = F.interpolate(to_inputs(images), size=(size, size), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous()


def fashion_resnet18(cache: Path, size: int = 224, log: Callable[[str], None] = print) -> tuple[nn.Module, Any]:
    """torchvision's resnet18 (10 classes) trained briefly on FashionMNIST from Debian's package, in eval mode, and
    the data; the weights are cached in ``cache`` (training takes minutes on one CPU: a real trained network for
    the approximate mode's quality, which no download can bring here).

    Training is cheap first (64 x 64 inputs, 150 Adam steps of 32 images), then at ``size`` (50 steps), so
    that the batch norm statistics and the filters fit the size the bench explains at.
    """
    import torchvision

    from deepscope.demo.data import load_fashion_mnist

    data = load_fashion_mnist(offline=True, log=log)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    if cache.is_file():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval(), data
    log(f"training resnet18 on FashionMNIST (minutes), then caching it in {cache}")
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for phase_size, steps in ((64, 150), (size, 50)):
        for step in range(steps):
            batch = torch.randint(0, len(data.train_images), (32,), generator=generator)
            x = fashion_inputs(data.train_images[batch], phase_size)
            loss = F.cross_entropy(model(x), data.train_labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step % 20 == 0:
                log(f"  {phase_size} px step {step}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), cache)
    return model, data


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
    parser.add_argument(
        "--quality",
        action="store_true",
        help="explain FashionMNIST test images (upsampled to --size) with a resnet18 trained on FashionMNIST here "
        "(minutes the first time, then cached) instead of random weights and noise",
    )
    parser.add_argument(
        "--baseline",
        choices=["mean", "black"],
        default="mean",
        help="the patch: the per-channel mean of the inputs (default) or, with --quality, FashionMNIST's black",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "deepscope" / "bench_occlusion_fashion_resnet18.pt",
        help="where --quality keeps its trained weights",
    )
    args = parser.parse_args(argv)
    if args.baseline == "black" and not args.quality:
        parser.error("--baseline black needs --quality (noise inputs have no background)")

    import torchvision

    import deepscope as ds
    from deepscope.demo.data import BACKGROUND
    from deepscope.evaluate.sanity import spearman, ssim

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.quality:
        model, data = fashion_resnet18(args.cache, args.size)
        x = fashion_inputs(data.test_images[: args.images], args.size)
        with torch.no_grad():
            tested = fashion_inputs(data.test_images[:500], args.size)
            accuracy = (model(tested).argmax(dim=1) == data.test_labels[:500]).float().mean().item()
        described = f"resnet18 trained on FashionMNIST (test accuracy {accuracy:.3f} on 500 images), test images"
    else:
        model = torchvision.models.resnet18(weights=None).eval()
        x = torch.randn(args.images, 3, args.size, args.size)
        described = "resnet18 (random weights, eval), noise"
    black = torch.full((1, 3, 1, 1), BACKGROUND)
    baseline = black if args.baseline == "black" else x.mean(dim=(0, 2, 3), keepdim=True)
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    per_axis = -(-(args.size - args.window) // args.stride) + 1
    figures: dict[str, Any] = {
        "model": described,
        "baseline": args.baseline,
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
        f"{described}, {args.images} x 3 x {args.size} x {args.size}, {args.baseline} patches, window {args.window} "
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
        # Per image, then the mean over images: SSIM of the heat maps (Krypton's measure of an approximate map),
        # the relative L2 error and the rank correlation.
        name = f"tau={tau:g}"
        approximate, reference_maps = results[name].mean(dim=1), exact.mean(dim=1)
        error = (approximate - reference_maps).flatten(1)
        figures[f"{name}_max_abs_error"] = (results[name] - exact).abs().max().item()
        relative = error.norm(dim=1) / reference_maps.flatten(1).norm(dim=1).clamp_min(1e-30)
        figures[f"{name}_relative_l2_error"] = relative.mean().item()
        figures[f"{name}_spearman"] = spearman(approximate, reference_maps).mean().item()
        figures[f"{name}_ssim"] = ssim(approximate, reference_maps).mean().item()
        figures[f"{name}_ssim_min"] = ssim(approximate, reference_maps).min().item()
        print(
            f"{name} vs exact: SSIM {figures[f'{name}_ssim']:.3f} (least {figures[f'{name}_ssim_min']:.3f}), "
            f"relative L2 error {figures[f'{name}_relative_l2_error']:.3f}, "
            f"Spearman {figures[f'{name}_spearman']:.3f}, "
            f"max |error| = {figures[f'{name}_max_abs_error']:.3g}"
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
