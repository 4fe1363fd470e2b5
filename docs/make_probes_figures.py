"""Make docs/images/board_probes.png and board_explore.png: probes during training in the board's Explanations
view, and the Explore view.

The demo's FashionMNIST CNN trained for 60 steps of batch 128 (the Debian package's IDX files, offline), watched
with 8 test images as probes explained by Grad-CAM and saliency every 5 steps (``run.watch(probes=...)``) and its
weights kept every 20 steps; the board serves the run with the CNN and 64 test images to explore, and headless
Chromium (Playwright) photographs the probe panel with the slider on an early step where the probe is still
misclassified, then the Explore view: the misclassified test images found, and the first explained by Grad-CAM,
saliency and integrated gradients side by side on the last checkpoint.
Run: .venv/bin/python docs/make_probes_figures.py (under a minute on two cores).
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path

import torch
import uvicorn
from playwright.sync_api import sync_playwright

import deepscope as ds
from deepscope.dashboard import create_app, explore
from deepscope.dashboard.headless import CHROMIUM, CHROMIUM_ARGS
from deepscope.demo.data import CLASSES, load_fashion_mnist, to_inputs
from deepscope.demo.fashion import BATCH_SIZE, train
from deepscope.demo.models import FashionCNN
from deepscope.store.reader import Reader

HERE = Path(__file__).parent / "images"
STEPS, EVERY, PROBES = 60, 5, 8


def log_training(run_dir: Path) -> None:
    torch.manual_seed(0)
    data = load_fashion_mnist(offline=True, log=lambda _: None)
    model = FashionCNN()
    probes = ds.Probes(
        to_inputs(data.test_images[:PROBES]),
        data.test_labels[:PROBES],
        methods=["gradcam", "saliency"],
        every=EVERY,
        classes=list(CLASSES),
    )
    images, labels = data.train_images[: STEPS * BATCH_SIZE], data.train_labels[: STEPS * BATCH_SIZE]
    with ds.Run(run_dir) as run, run.watch(model, every=100, kinds=(), probes=probes, checkpoint_every=20):
        train(model, images, labels, progress=False, run=run, generator=torch.Generator().manual_seed(0))


def chosen(run_dir: Path) -> tuple[int, int]:
    """A probe misclassified at some step and right at the last one, and the position of that step (the last
    misclassified one), so that the picture shows the mark; else probe 0 at the middle step."""
    with Reader(run_dir) as reader:
        records = reader.records("probes")
    for index in range(PROBES):
        wrong = [k for k, r in enumerate(records) if r.predictions[index] != r.labels[index]]
        if wrong and records[-1].predictions[index] == records[-1].labels[index]:
            return index, wrong[-1]
    return 0, len(records) // 2


def photograph(root: Path, index: int, position: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = load_fashion_mnist(offline=True, log=lambda _: None)
    app = create_app(root)
    explore(app, "deepscope.demo.models:FashionCNN", (to_inputs(data.test_images[:64]), data.test_labels[:64]))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1250, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/?view=explanations")
            page.wait_for_selector(".probe-now figure[data-method] img", timeout=20_000)
            page.select_option(".probe-choice", str(index))
            page.wait_for_function(f"() => document.querySelector('.probe-choice').value === '{index}'")
            page.evaluate(
                """(k) => { const s = document.querySelector('.probe-slider'); s.value = String(k);
                            s.dispatchEvent(new Event('input', { bubbles: true })); }""",
                position,
            )
            page.wait_for_timeout(2000)  # pictures and the chart settle
            name = HERE / "board_probes.png"
            page.locator(".probe-track").screenshot(path=str(name))
            print(f"wrote {name}")
            page.click('#tabs button[data-view="explore"]')
            page.wait_for_function(
                "() => document.querySelectorAll('.explore-method option').length > 3", timeout=120_000
            )
            page.click(".explore-browse summary")
            page.check(".explore-filter-misclassified")
            page.click(".explore-find")
            page.wait_for_selector(".explore-found", timeout=120_000)
            page.click(".explore-found >> nth=0")  # the first misclassified test image
            page.select_option(".explore-method", ["gradcam", "saliency", "integrated_gradients"])
            page.click(".explore-go")
            page.wait_for_selector('.explore-pictures figure[data-method="integrated_gradients"] img', timeout=120_000)
            page.wait_for_timeout(1000)
            page.set_viewport_size({"width": 1250, "height": 930})  # the items found, below the filters
            page.wait_for_timeout(500)
            name = HERE / "board_explore.png"
            page.screenshot(path=str(name), clip={"x": 0, "y": 0, "width": 1250, "height": 930})
            print(f"wrote {name}")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        log_training(root / "fashion-probes")
        index, position = chosen(root / "fashion-probes")
        photograph(root, index, position)


if __name__ == "__main__":
    main()
