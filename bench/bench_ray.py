"""``ds.embed`` and ``ds.top_patches`` on Ray (2 actors x 1 thread) against the single-process call (2 threads).

FashionCNN (random weights) over random 28 x 28 images, each call timed end to end as a user waits for it: on Ray
that includes putting the images in the object store, mapping the blocks on the actors, merging in the driver
and (top patches) reading the top inputs again by id. The actor pool stays warm between calls (as in a session):
its start (two processes importing torch and deepscope, the model loaded) is timed once, apart, as the first call.
Ray's cost per block, the figure docs/scale.md's estimate uses, is timed apart: a model that does nothing over
a Ray data set of one image per block. The local Ray instance starts once, before the clock runs.

On a busy machine wall times mislead (the one process's two torch threads wait for each other), so the CPU time of
each Ray call is printed too, split by process: the actors (the model's own work and Ray's share in them), this
process (sending blocks, merging) and Ray's own processes (raylet with the object store, GCS, agents).

Goal (issue 16): Ray's overhead costs at most 20 % (single-process time / Ray time >= 0.83).
Run: .venv/bin/python bench/bench_ray.py [--images 50000] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import psutil
import ray
import torch
from common import report
from torch import nn

import deepscope as ds
from deepscope import ray_engine
from deepscope.demo.models import FashionCNN
from deepscope.engine import RayOptions, close_pools


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=2000)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = FashionCNN().eval()
    images = torch.rand(args.images, 1, 28, 28)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(dir="/tmp"))
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
    }
    try:
        start = time.perf_counter()
        ds.embed(model, images[: args.batch], "features", batch_size=args.batch, engine="ray", ray=on_ray)
        cold = time.perf_counter() - start  # the pool's start, with one block's work
        best = dict.fromkeys(calls, float("inf"))
        cpu: dict[str, dict[str, float]] = {}
        actors = {pid for pid in ray.get([a.__ray_call__.remote(_pid) for a in ray_engine._warm.actors])}
        for _ in range(args.repeat):
            for name, call in calls.items():
                before = _cpu_times(actors)
                start = time.perf_counter()
                call()
                took = time.perf_counter() - start
                if took < best[name]:
                    best[name] = took
                    after = _cpu_times(actors)
                    cpu[name] = {key: after[key] - before[key] for key in after}
        # Ray's cost per block: a model that does nothing over a Ray data set of one image per block (sent,
        # mapped, its row sent back, merged). The data set is built (in the driver, no task) before the clock runs.
        idle = nn.Sequential(nn.Flatten())
        one_each = ray.data.from_items(
            [{"image": x} for x in images[: args.blocks].numpy()], override_num_blocks=args.blocks
        )
        ds.embed(idle, images[:2], "0", batch_size=1, thumbnail_size=None, engine="ray", ray=on_ray)  # its pool's start
        start = time.perf_counter()
        ds.embed(idle, one_each, "0", batch_size=1, thumbnail_size=None, ray=on_ray)
        per_block = (time.perf_counter() - start) / args.blocks
    finally:
        torch.set_num_threads(threads)
        close_pools()
        ray.shutdown()
    names = list(calls)
    load = os.getloadavg()[0]
    times = report(
        f"{args.images} images, batches of {args.batch}, load average {load:.1f} at the end",
        list(best.items()),
        names[0],
    )
    print(f"  the actor pool's start (first call, one block): {cold:.2f} s, once per session")
    for local, remote in ((names[0], names[1]), (names[2], names[3])):
        print(f"  {local.split(',')[0]}: single process / Ray = {times[local] / times[remote]:.2f} (goal >= 0.83)")
    for name in names[1::2]:
        parts = ", ".join(f"{key} {value:.2f} s" for key, value in cpu[name].items())
        print(f"  CPU time of {name.split(',')[0]} on Ray ({sum(cpu[name].values()):.2f} s): {parts}")
    per_image = times[names[0]] / args.images * 2  # one thread's cost per image (2 threads ran in parallel)
    print(f"  Ray's cost per block (a model that does nothing, {args.blocks} blocks): {per_block * 1e3:.1f} ms")
    print(f"  one CPU thread's cost per image (embed): {per_image * 1e3:.3f} ms")
    return {**times, "start": cold, "per_block": per_block}


def _pid(_actor: object) -> int:
    return os.getpid()


def _cpu_times(actors: set[int]) -> dict[str, float]:
    """CPU seconds used so far by the actors, this process, and Ray's other processes (this process's children)."""
    used = {"actors": 0.0, "this process": 0.0, "Ray's other processes": 0.0}
    other = "Ray's other processes"
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        key = "this process" if process.pid == me.pid else "actors" if process.pid in actors else other
        used[key] += times.user + times.system
    return used


if __name__ == "__main__":
    main()
