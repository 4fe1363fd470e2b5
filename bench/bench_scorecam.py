"""Score-CAM on resnet18 (one 224 px image, layer4's 512 channels, 1 thread): deepscope vs pytorch-grad-cam.

Goal (issue 18): at least 2x faster than pytorch-grad-cam's ScoreCAM, both with 16 masked copies per forward pass
(the peer's batch) and ours also at its default batch_size. Run: .venv/bin/python bench/bench_scorecam.py
[--batch 1] [--size 224] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings

import torch
from common import report, resnet18_batch, timed_together
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import deepscope as ds


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    model, x, classes = resnet18_batch(args.batch, args.size)
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    peer = ScoreCAM(model=model, target_layers=[model.layer4])
    peer.batch_size = 16  # its default, said explicitly

    def peer_scorecam() -> object:
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bars
            return peer(input_tensor=x, targets=targets)

    def ours(batch_size: int) -> object:
        return ds.explain(model, x, method="scorecam", layer="layer4", target=classes, batch_size=batch_size).heatmap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine, theirs = ours(16), torch.as_tensor(peer_scorecam())
        flat = mine.flatten(1)
        scaled = (flat - flat.amin(1, keepdim=True)) / (flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True))
        print(f"  max |ours scaled to [0, 1] - peer| = {(scaled.view_as(theirs) - theirs).abs().max():.2e}")
        functions = {
            "deepscope scorecam, batch_size=16": lambda: ours(16),
            "deepscope scorecam, batch_size=64": lambda: ours(64),
            "pytorch-grad-cam ScoreCAM (batch 16)": peer_scorecam,
        }
        rows = timed_together(functions, args.repeat)
    times = report(
        f"Score-CAM, resnet18 layer4, batch {args.batch}, {args.size} px", rows, "deepscope scorecam, batch_size=16"
    )
    peer_time = times["pytorch-grad-cam ScoreCAM (batch 16)"]
    for name in ("deepscope scorecam, batch_size=16", "deepscope scorecam, batch_size=64"):
        print(f"  pytorch-grad-cam / {name} = {peer_time / times[name]:.2f} (goal >= 2)")
    return times


if __name__ == "__main__":
    main()
