"""Score-CAM on resnet18 (one 224 px image, layer4's 512 channels, 1 thread): deepscope vs pytorch-grad-cam.

Goal (issue 18): at least 2x faster than pytorch-grad-cam's ScoreCAM, both with 16 masked copies per forward pass
(the peer's batch, its default, and ours) and ours also at 64 and with precision="bfloat16"; both sides on the same
single thread, every mode's ratio to the peer printed from the one run.
``--floor`` also times the forward passes alone, the peer's model as it runs them (channels first, batch norms
apart) against ours (oneDNN layouts, :func:`on_mkldnn`; channels last with batch norms folded, :func:`folded`, the
fallback and the bfloat16 mode's model), on the same 512 masked copies: the ratio the masked passes allow when
every pass must run (they are over 90% of either side's time). Run:
.venv/bin/python bench/bench_scorecam.py [--batch 1] [--size 224] [--repeat 3] [--floor]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
import warnings
from collections.abc import Callable

import torch
from common import report, resnet18_batch
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import deepscope as ds


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--floor", action="store_true", help="also time the masked forward passes alone")
    args = parser.parse_args(argv)
    print(f"load average at the start: {os.getloadavg()}")
    model, x, classes = resnet18_batch(args.batch, args.size)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]

    def peer_scorecam() -> object:
        # Made per call and closed after it: its hooks stay on the model until then, and a hooked model runs ours
        # on the folded copy rather than the oneDNN one (:func:`deepscope.explain.cam.on_mkldnn`).
        with ScoreCAM(model=model, target_layers=[model.layer4]) as peer, contextlib.redirect_stderr(io.StringIO()):
            peer.batch_size = 16  # its default, said explicitly
            return peer(input_tensor=x, targets=targets)

    def ours(batch_size: int, precision: str = "float32") -> torch.Tensor:
        return ds.explain(
            model, x, method="scorecam", layer="layer4", target=classes, batch_size=batch_size, precision=precision
        ).heatmap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine, theirs, rounded = ours(16), torch.as_tensor(peer_scorecam()), ours(16, "bfloat16")
        print(f"  max |ours scaled to [0, 1] - peer| = {(unit_range(mine) - theirs).abs().max():.2e}")
        print(f"  bfloat16 against float32, both scaled to [0, 1]: {map_change(unit_range(rounded), unit_range(mine))}")
        functions = {
            "deepscope scorecam, batch_size=16 (default)": lambda: ours(16),
            "deepscope scorecam, batch_size=64": lambda: ours(64),
            'deepscope scorecam, precision="bfloat16"': lambda: ours(16, "bfloat16"),
            "pytorch-grad-cam ScoreCAM (batch 16)": peer_scorecam,
        }
        if args.floor:
            functions.update(forward_passes(model, x))
        wall, cpu = timed_wall_and_cpu(functions, args.repeat)
    title = f"Score-CAM, resnet18 layer4, batch {args.batch}, {args.size} px"
    reference = "deepscope scorecam, batch_size=16 (default)"
    times = report(title + ", wall", list(wall.items()), reference)
    report(title + ", CPU time of the process (steadier under load)", list(cpu.items()), reference)
    for kind, measured in (("wall", wall), ("CPU", cpu)):
        peer_time = measured["pytorch-grad-cam ScoreCAM (batch 16)"]
        for name in measured:
            if name.startswith("deepscope"):
                print(f"  {kind:>4}: pytorch-grad-cam / {name} = {peer_time / measured[name]:.2f} (goal >= 2)")
        if args.floor:
            for name in OUR_PASSES.values():
                floor = measured[PEER_PASSES] / measured[name]
                print(f"  {kind:>4}: {PEER_PASSES} / {name} = {floor:.2f}")
    print(f"load average at the end: {os.getloadavg()}")
    return times


def timed_wall_and_cpu(
    functions: dict[str, Callable[[], object]], repeat: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Best wall time and best process CPU time of each function over ``repeat`` interleaved rounds, after one
    warm-up round (as ``common.timed_together``). With one thread, CPU time leaves out the waits of a loaded
    machine."""
    for fn in functions.values():
        fn()
    wall = dict.fromkeys(functions, float("inf"))
    cpu = dict.fromkeys(functions, float("inf"))
    for _ in range(repeat):
        for name, fn in functions.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return wall, cpu


def unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1] (as the peer returns them)."""
    flat = maps.flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - low) / (high - low)).view_as(maps)


def map_change(changed: torch.Tensor, exact: torch.Tensor) -> str:
    """How far ``changed`` is from ``exact`` (maps in [0, 1]): the largest change, the mean one, and Spearman's rank
    correlation of their pixels."""

    def ranks(values: torch.Tensor) -> torch.Tensor:
        return values.flatten().argsort().argsort().double()

    a, b = ranks(changed), ranks(exact)
    a, b = a - a.mean(), b - b.mean()
    spearman = float((a * b).sum() / (a.norm() * b.norm()))
    difference = (changed - exact).abs()
    return f"max change {difference.max():.2e}, mean {difference.mean():.2e}, rank correlation {spearman:.6f}"


PEER_PASSES = "forward passes, as the peer runs them"
OUR_PASSES = {
    "mkldnn": "forward passes, oneDNN layouts (float32 default)",
    "folded": "forward passes, channels last, folded",
    "bfloat16": "forward passes, channels last, folded, bfloat16",
}


def forward_passes(model: torch.nn.Module, x: torch.Tensor) -> dict[str, object]:
    """The masked copies of the first input (its layer4 channels upsampled and scaled, as both sides make them),
    run 16 at a time through the model as it is and through deepscope's folded, channels-last copy."""
    import torch.nn.functional as F

    from deepscope.explain.cam import folded, on_mkldnn

    activation = {}
    handle = model.layer4.register_forward_hook(lambda module, args, output: activation.update(a=output))
    with torch.no_grad():
        model(x[:1])
    handle.remove()
    masks = F.interpolate(activation["a"], size=x.shape[2:], mode="bilinear", align_corners=True)[0]
    flat = masks.flatten(1)
    low, high = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
    masks = (masks - low) / (high - low + 1e-8)
    fast, mkldnn = folded(model, torch.channels_last), on_mkldnn(model)
    assert mkldnn is not None

    def run(net: torch.nn.Module, layout: torch.memory_format, bfloat16: bool = False) -> object:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            for start in range(0, len(masks), 16):
                net((x[:1] * masks[start : start + 16, None]).contiguous(memory_format=layout))
        return None

    return {
        PEER_PASSES: lambda: run(model, torch.contiguous_format),
        OUR_PASSES["mkldnn"]: lambda: run(mkldnn, torch.contiguous_format),
        OUR_PASSES["folded"]: lambda: run(fast, torch.channels_last),
        OUR_PASSES["bfloat16"]: lambda: run(fast, torch.channels_last, bfloat16=True),
    }


if __name__ == "__main__":
    main()
