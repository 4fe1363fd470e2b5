"""The explorer: time from click to heatmap (Grad-CAM on resnet18, one 224 px image) against a forward + backward pass.

The board's app with an explorer (``deepscope.dashboard.views.explore``) over a run without checkpoints, the worker
making torchvision's resnet18 (random weights, one thread); each round asks, as the page does, ``POST
/api/explore/jobs`` for another item (never cached) and polls ``/api/explore/jobs/{id}`` every 5 ms until done. The
peer is one forward + backward pass of the same model on one image in this process (one thread). Goal (issue 19):
click to heatmap under 1.5 forward + backward passes plus 100 ms. The worker's start (torch, the model) is not
counted: it happens once, at the first request.

Run: .venv/bin/python bench/bench_explore.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from common import machine
from fastapi.testclient import TestClient

import deepscope as ds
from deepscope.dashboard import create_app
from deepscope.dashboard.views.explore import configure


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.rand(args.repeat + 1, 3, 224, 224)

    def forward_backward() -> None:  # to the input, as bench_gradcam.py's peer: no parameter gradient
        image = x[:1].clone().requires_grad_(True)
        torch.autograd.grad(model(image).max(), image)

    forward_backward()
    passes = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        forward_backward()
        passes.append(time.perf_counter() - start)
    one_pass = min(passes)

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with ds.Run(root / "run") as run:
            run.log({"loss": 1.0})
        torch.save((x, torch.zeros(len(x), dtype=torch.long)), root / "data.pt")
        app = create_app(root)
        explorer = configure(app, {"model": "torchvision.models:resnet18", "data": {"file": str(root / "data.pt")}})
        client = TestClient(app, base_url="http://127.0.0.1")
        clicks = []
        try:
            for item in range(args.repeat + 1):  # the first starts the worker: not counted
                start = time.perf_counter()
                job = client.post("/api/explore/jobs", json={"run": "run", "item": item, "method": "gradcam"}).json()
                while job["status"] in ("queued", "running"):
                    time.sleep(0.005)
                    job = client.get(f"/api/explore/jobs/{job['id']}").json()
                assert job["status"] == "done", job
                if item:
                    clicks.append(time.perf_counter() - start)
        finally:
            explorer.close()
    click = min(clicks)
    ratio = (click - 0.1) / one_pass
    print(f"\nThe explorer: Grad-CAM on resnet18, one 224 px image, click to heatmap  [{machine()}]")
    print(f"  forward + backward to the input  {one_pass * 1e3:8.1f} ms (best of {args.repeat}, in process)")
    print(f"  click to heatmap (POST, poll)    {click * 1e3:8.1f} ms (best of {args.repeat}); rounds: "
          + ", ".join(f"{c * 1e3:.0f}" for c in clicks))  # fmt: skip
    print(f"  (click - 100 ms) / forward+backward = {ratio:.2f}   (goal < 1.5)")
    return {"forward_backward_s": one_pass, "click_to_heatmap_s": click, "ratio": ratio}


if __name__ == "__main__":
    main()
