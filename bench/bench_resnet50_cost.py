"""ResNet-50's cost per image for top patches of ``layer4``: the ``c_image`` of docs/scale.md's estimate.

Random weights, random 224 x 224 images, one CPU thread (one actor's share on CPU), or the GPU with ``--device
cuda``: a bare forward pass of the whole model under ``torch.no_grad``, and ``ds.top_patches`` of every unit of
``layer4`` (2,048 channels, forward stopped at the layer, the running top-k merge), best of ``--repeat``, as CPU
time of this process (less disturbed by other work on a shared machine than wall time) and wall time.

Run: .venv/bin/python bench/bench_resnet50_cost.py [--batch 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torchvision

import deepscope as ds


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.resnet50().eval().to(device)
    images = torch.rand(args.batch, 3, 224, 224, device=device)

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def patches() -> None:
        ds.top_patches(model, images, "layer4", k=9, batch_size=args.batch, progress=False)

    found = {}
    try:
        forward()  # warm-up
        for name, call in (("forward pass, whole model", forward), ("top_patches, layer4", patches)):
            best_cpu = best_wall = float("inf")
            for _ in range(args.repeat):
                cpu, wall = time.process_time(), time.perf_counter()
                call()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best_cpu = min(best_cpu, time.process_time() - cpu)
                best_wall = min(best_wall, time.perf_counter() - wall)
            found[name] = best_cpu / args.batch
            print(
                f"  {name:<28} {best_cpu / args.batch * 1e3:7.1f} ms per image (CPU time), "
                f"{best_wall / args.batch * 1e3:7.1f} ms (wall)"
            )
    finally:
        torch.set_num_threads(threads)
    print(f"ResNet-50, batch {args.batch}, {device}, 1 thread, load average {os.getloadavg()[0]:.1f}")
    return found


if __name__ == "__main__":
    main()
