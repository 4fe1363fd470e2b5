"""``ds.embed`` and ``ds.top_patches`` on Ray (2 actors x 1 thread) against the single-process call (2 threads).

FashionCNN (random weights) over random 28 x 28 images, the whole pass timed end to end, as a user waits for it:
on Ray that includes building the data set in the object store, starting the actor pool and merging in the
driver. A second Ray run of ``embed`` with 4x smaller batches gives Ray's cost per extra block (batch), the
figure docs/scale.md's estimate uses. The local Ray instance starts once, before the clock runs.

Goal (issue 16): Ray's overhead costs at most 20 % (single-process time / Ray time >= 0.83).
Run: .venv/bin/python bench/bench_ray.py [--images 20000] [--batch 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import ray
import torch
from common import report

import deepscope as ds
from deepscope.demo.models import FashionCNN
from deepscope.engine import RayOptions


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = FashionCNN().eval()
    images = torch.rand(args.images, 1, 28, 28)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(dir="/tmp"))
    ray.data.DataContext.get_current().enable_progress_bars = False
    on_ray = RayOptions(actors=2, cpus_per_actor=1)  # one torch thread per actor
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    calls = {
        "embed, this process (2 threads)": lambda: ds.embed(model, images, "features", batch_size=args.batch),
        "embed, Ray (2 actors x 1 thread)": lambda: ds.embed(
            model, images, "features", batch_size=args.batch, engine="ray", ray=on_ray
        ),
        "top_patches, this process (2 threads)": lambda: ds.top_patches(
            model, images, "features.relu3", batch_size=args.batch
        ),
        "top_patches, Ray (2 actors x 1 thread)": lambda: ds.top_patches(
            model, images, "features.relu3", batch_size=args.batch, engine="ray", ray=on_ray
        ),
        f"embed, Ray, batches of {args.batch // 4}": lambda: ds.embed(
            model, images, "features", batch_size=args.batch // 4, engine="ray", ray=on_ray
        ),
    }
    try:
        best = dict.fromkeys(calls, float("inf"))
        for _ in range(args.repeat):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                best[name] = min(best[name], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
        ray.shutdown()
    names = list(calls)
    times = report(f"{args.images} images, batches of {args.batch}", list(best.items()), names[0])
    for local, remote in ((names[0], names[1]), (names[2], names[3])):
        print(f"  {local.split(',')[0]}: single process / Ray = {times[local] / times[remote]:.2f} (goal >= 0.83)")
    blocks = args.images / (args.batch // 4) - args.images / args.batch
    per_block = (times[names[4]] - times[names[1]]) / blocks
    per_image = times[names[0]] / args.images * 2  # one thread's cost per image (2 threads ran in parallel)
    print(f"  Ray's cost per extra block: {per_block * 1e3:.1f} ms")
    print(f"  one CPU thread's cost per image (embed): {per_image * 1e3:.3f} ms")
    return times


if __name__ == "__main__":
    main()
