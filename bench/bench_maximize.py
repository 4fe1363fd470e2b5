"""Activation maximisation of every channel of resnet18's ``layer1`` (64) at 128 px: deepscope vs torch-lucent 0.1.8.

deepscope optimises all channels as one batch (``channels("layer1")``) and stops the forward pass at ``layer1``;
Lucent's ``render_vis`` renders one channel per call and runs the whole network. Both use the same recipe: a
decorrelated Fourier image with decorrelated colours, Adam at 0.05, Lucid's standard transforms (pad 12, jitter 8,
scale 0.9-1.1, rotate +-10, jitter 4) and ImageNet normalisation. Lucent upsamples images under 224 px to 224 by
default; here it resamples to 152 px (128 + 2 x 12 of padding), the size deepscope's transforms give, so both
networks see as many pixels. deepscope runs its default ``"lucid"`` preset, which adds Lucid's redirected ReLU
for the first 16 steps (work Lucent does not do).

Goal (issue 5): at least 5x faster per channel, and no hook left on the model (Lucent leaves one per module per
call: 67 -> 134 -> 201 on resnet18).

Run: .venv/bin/python bench/bench_maximize.py [--quick]
``--quick`` times Lucent on 2 channels for 16 steps and deepscope on all 64 channels for 32 steps, and
extrapolates both per channel-step to the full 256 steps (a step costs the same throughout: same shapes, same ops;
except that deepscope's 16 redirected-ReLU steps, about 1.6x a plain step, are half of its 32, which counts against
deepscope).
Lucent and its requirements come with the test extra (make setup).
"""

from __future__ import annotations

import argparse
import sys
import types
import warnings

import numpy as np
import torch
import torchvision
from common import report, timed_together

from deepscope.features import channels, maximize
from deepscope.features.objectives import forward_until

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
PAD = 12  # the first of Lucid's standard transforms


def import_lucent() -> types.SimpleNamespace:
    """Lucent's ``render``, ``objectives`` and ``param``, made importable next to today's kornia and without IPython.

    Lucent 0.1.8 imports IPython for notebook display only (never called here) and calls ``kornia.warp_affine`` /
    ``kornia.get_rotation_matrix2d``, which kornia >= 0.7 keeps under ``kornia.geometry.transform`` only.
    """
    if "IPython" not in sys.modules:
        try:
            import IPython.display  # noqa: F401
        except ImportError:
            ipython, display = types.ModuleType("IPython"), types.ModuleType("IPython.display")
            ipython.display = display  # type: ignore[attr-defined]
            sys.modules.update({"IPython": ipython, "IPython.display": display})
    import kornia

    for name in ("warp_affine", "get_rotation_matrix2d"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(kornia.geometry.transform, name))
    from lucent.optvis import objectives, param, render

    return types.SimpleNamespace(render=render, objectives=objectives, param=param)


def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def hook_count(model: torch.nn.Module) -> int:
    """Forward, forward-pre and backward hooks on all modules of ``model``."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="layer1")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=256, help="the steps the per-channel figures are for")
    parser.add_argument("--ours-steps", type=int, help="steps deepscope is timed for (default --steps)")
    parser.add_argument("--lucent-channels", type=int, help="channels Lucent is timed on (default all)")
    parser.add_argument("--lucent-steps", type=int, help="steps Lucent is timed for (default --steps)")
    parser.add_argument("--quick", action="store_true", help="Lucent: 2 channels x 16 steps; deepscope: 32 steps")
    parser.add_argument("--repeat", type=int, default=1, help="timed rounds after one warm-up round")
    args = parser.parse_args(argv)
    if args.quick:
        args.ours_steps = args.ours_steps or 32
        args.lucent_channels = args.lucent_channels or 2
        args.lucent_steps = args.lucent_steps or 16
    ours_steps = args.ours_steps or args.steps
    lucent_steps = args.lucent_steps or args.steps

    optvis = import_lucent()
    model = resnet18()
    with torch.no_grad():
        width = int(forward_until(model, torch.zeros(1, 3, 64, 64), frozenset({args.layer}))[args.layer].shape[1])
    lucent_channels = min(args.lucent_channels or width, width)
    seen = args.size + 2 * PAD

    def ours() -> None:
        maximize(
            model, channels(args.layer), steps=ours_steps, size=args.size, preprocess=lambda x: (x - MEAN) / STD,
            progress=False,
        )  # fmt: skip

    def lucent() -> None:
        np.random.seed(0)  # Lucent's transforms draw from numpy's global generator
        for unit in range(lucent_channels):
            optvis.render.render_vis(
                model, optvis.objectives.channel(args.layer, unit), param_f=lambda: optvis.param.image(args.size),
                thresholds=(lucent_steps,), progress=False, show_image=False, fixed_image_size=seen,
            )  # fmt: skip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = timed_together({"deepscope maximize": ours, "lucent render_vis": lucent}, args.repeat)
    # Per channel at the full step count, from the time per channel-step of what ran.
    work = {"deepscope maximize": width * ours_steps, "lucent render_vis": lucent_channels * lucent_steps}
    per_channel = [(name, seconds / work[name] * args.steps) for name, seconds in rows]
    ran = dict(rows)
    print(
        f"\nran: deepscope {width} channels x {ours_steps} steps in one batch ({ran['deepscope maximize']:.1f} s); "
        f"lucent {lucent_channels} channel(s) x {lucent_steps} steps one by one ({ran['lucent render_vis']:.1f} s); "
        f"best of {args.repeat} after a warm-up"
    )
    times = report(
        f"Activation maximisation, resnet18 {args.layer} ({width} channels), {args.size} px, seconds per channel "
        f"for {args.steps} steps",
        per_channel,
        "deepscope maximize",
    )
    ratio = times["lucent render_vis"] / times["deepscope maximize"]
    print(f"  lucent / deepscope per channel = {ratio:.1f}x (goal >= 5)")

    fresh = resnet18()
    leaks, ours_hooks = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            optvis.render.render_vis(
                fresh, optvis.objectives.channel(args.layer, 0), param_f=lambda: optvis.param.image(args.size),
                thresholds=(1,), progress=False, show_image=False, fixed_image_size=seen,
            )  # fmt: skip
            leaks.append(hook_count(fresh))
    clean = resnet18()
    for _ in range(3):
        maximize(clean, channels(args.layer), steps=1, size=args.size, progress=False)
        ours_hooks.append(hook_count(clean))
    print(f"  hooks left on the model after each of 3 calls: lucent {leaks}, deepscope {ours_hooks} (goal: 0)")
    return {**times, "ratio": ratio}


if __name__ == "__main__":
    main()
