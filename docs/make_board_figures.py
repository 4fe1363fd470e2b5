"""Make the board's pictures in docs/images/ with the code they document: seed 000's lab, logged into a run.

A FashionMNIST CNN trained for one short epoch (the Debian package's IDX files, offline), its graph, its watched
histograms, its confusion matrix and one-vs-rest PR curves on 2,000 test images, and Grad-CAM and saliency on 10
random test cases; then the board serves the run (with ResNet-18's graph beside the CNN's) and headless Chromium
(Playwright) photographs the Graph, Evaluation, Explanations and Distributions tabs.
The custom-scalars picture comes from three short runs of synthetic curves, one logging a layout
(``run.add_custom_scalars``) and a chart added in the page (the editor open). The sweep's picture: 40 runs of
synthetic loss curves (a learning rate each), one chart, its lines on a canvas, its cursor table shown.
Run: .venv/bin/python docs/make_board_figures.py [lab] [layouts] [sweep] (all by default; the lab takes about a
minute on two cores, the others a few seconds).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright
from torchvision.models import resnet18

import deepscope as ds
from deepscope.dashboard import create_app
from deepscope.dashboard.headless import CHROMIUM, CHROMIUM_ARGS
from deepscope.demo.data import CLASSES, load_fashion_mnist, to_inputs
from deepscope.demo.fashion import train
from deepscope.demo.models import FashionCNN
from deepscope.evaluate.classification import binary_report, confusion_matrix

HERE = Path(__file__).parent / "images"
TABS = {
    "graph": "board_graph.png",
    "evaluation": "board_evaluation.png",
    "explanations": "board_explanations.png",
    "distributions": "board_distributions.png",
}
LAYOUT = {
    "Training": {
        "losses": ["Multiline", [r"^loss/"]],
        "accuracy": ["Margin", ["acc/val", "acc/val_low", "acc/val_high"]],
    }
}


def log_lab(run_dir: Path) -> None:
    torch.manual_seed(0)
    data = load_fashion_mnist(offline=True, log=lambda _: None)
    model = FashionCNN()
    with ds.Run(run_dir, config={"epochs": 1, "train_images": 12_000}) as run:
        run.graph(model, to_inputs(data.test_images[:2]))
        run.graph(resnet18(weights=None), torch.rand(1, 3, 64, 64), tag="resnet18")  # a graph with branches
        with run.watch(model, every=20):  # histograms of weights, biases, gradients, activations
            train(model, data.train_images[:12_000], data.train_labels[:12_000], progress=False, run=run)
        x, y = to_inputs(data.test_images[:2000]), data.test_labels[:2000]
        with torch.no_grad():
            scores = model(x).softmax(1)
        run.log_confusion_matrix(confusion_matrix(y, scores.argmax(1), classes=list(CLASSES)))
        run.log_pr_curve(binary_report(y, scores, classes=list(CLASSES)), tag="test")
        cases = torch.randperm(2000, generator=torch.Generator().manual_seed(0))[:10]
        found = [ds.explain(model, x[cases], method=m) for m in ("gradcam", "saliency")]
        run.log_explanations(found, labels=y[cases], predictions=scores[cases], classes=list(CLASSES))


def log_layouts(root: Path) -> None:
    """Three runs of a learning rate each: losses falling, a validation accuracy with its spread over 5 seeds; the
    first logs the layout, which the board draws over every run."""
    rng = np.random.default_rng(0)
    steps = np.arange(0, 200, 5)
    for k, lr in enumerate((0.1, 0.03, 0.01)):
        rate = 40 * lr
        train = np.exp(-steps * rate / 100) + 0.02 * rng.standard_normal(steps.size) + 0.1
        with ds.Run(root / f"lr-{lr}", config={"lr": lr}) as run:
            run.log_series("loss/train", steps, train)
            run.log_series("loss/val", steps, train + 0.08 + 0.03 * rng.standard_normal(steps.size))
            seeds = 1 - np.exp(-steps[None] * rate / 80) * 0.9 - 0.12 * rng.random((5, steps.size))
            run.log_series("acc/val", steps, seeds.mean(0))
            run.log_series("acc/val_low", steps, seeds.min(0))
            run.log_series("acc/val_high", steps, seeds.max(0))
            if k == 0:
                run.add_custom_scalars(LAYOUT)


@contextlib.contextmanager
def served(root: Path) -> Iterator[int]:
    """The board on ``root``, on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def photograph_layouts(root: Path) -> None:
    """The Scalars view's custom charts: the run's layout and a chart added in the page, the editor open."""
    edited = {**LAYOUT, "Validation": {"validation loss": ["Multiline", [r"^loss/val$"]]}}
    name = "board_custom_scalars.png"
    with served(root) as port, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/?view=scalars&smoothing=0&layout={quote(json.dumps(edited))}")
        page.wait_for_function("() => document.querySelectorAll('.layouts .plot .main-svg').length >= 3")
        page.click(".layout-bar [data-action=edit]")
        page.wait_for_timeout(1500)  # plots settle
        top = page.locator(".layout-bar").bounding_box()
        bottom = page.locator(".layouts").bounding_box()
        assert top is not None and bottom is not None
        height = bottom["y"] + bottom["height"] - top["y"] + 8
        page.set_viewport_size({"width": 1300, "height": int(top["y"] + height) + 10})
        page.screenshot(
            path=str(HERE / name),
            clip={"x": top["x"] - 8, "y": top["y"] - 8, "width": bottom["width"] + 16, "height": height + 8},
        )
        browser.close()
    with Image.open(HERE / name) as image:  # a 256-colour palette: a third of the size, the same to the eye
        quantized = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    quantized.save(HERE / name, optimize=True)
    print(f"wrote {HERE / name}")


def log_sweep(root: Path, runs: int = 40) -> None:
    """A learning-rate sweep: each run's loss falls at its own rate to its own floor, with noise."""
    rng = np.random.default_rng(0)
    steps = np.arange(0, 2000, 4)
    for lr in np.geomspace(1e-4, 1e-1, runs):
        rate = 3e-3 * (lr / 1e-2) ** 0.5
        floor = 0.15 + 4 * abs(np.log10(lr) + 2.3) ** 2 / 10
        loss = (2.3 - floor) * np.exp(-steps * rate) + floor + 0.06 * rng.standard_normal(steps.size)
        with ds.Run(root / f"lr-{lr:.2e}", config={"lr": float(lr)}) as run:
            run.log_series("train/loss", steps, loss)


def photograph_sweep(root: Path) -> None:
    """The Scalars chart of the sweep, the cursor table at the middle of the steps."""
    name = "board_sweep.png"
    with served(root) as port, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        page.goto(f"http://127.0.0.1:{port}/?view=scalars")
        page.wait_for_selector('.card[data-tag="train/loss"] canvas.lines', timeout=20_000)
        page.wait_for_timeout(1000)  # plots settle
        card = page.locator('.card[data-tag="train/loss"]')
        drag = page.locator('.card[data-tag="train/loss"] .nsewdrag').bounding_box()
        assert drag is not None
        page.mouse.move(drag["x"] + drag["width"] * 0.45, drag["y"] + drag["height"] * 0.55)
        page.wait_for_selector('.card[data-tag="train/loss"] .cursor-table:not([hidden])')
        card.screenshot(path=str(HERE / name))
        browser.close()
    with Image.open(HERE / name) as image:
        quantized = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    quantized.save(HERE / name, optimize=True)
    print(f"wrote {HERE / name}")


def photograph(root: Path) -> None:
    with served(root) as port, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for tab, name in TABS.items():
            page.goto(f"http://127.0.0.1:{port}/?view={tab}")
            page.wait_for_selector(f'.view[data-view="{tab}"] .main-svg, .gallery img', timeout=20_000)
            if tab == "graph":
                page.select_option('.view[data-view="graph"] aside select >> nth=1', "resnet18")
            page.wait_for_timeout(1500)  # images and plots settle
            page.screenshot(path=str(HERE / name), full_page=tab != "explanations")
            print(f"wrote {HERE / name}")
        browser.close()


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    wanted = set(sys.argv[1:]) or {"lab", "layouts", "sweep"}
    if "lab" in wanted:
        with tempfile.TemporaryDirectory() as root:
            log_lab(Path(root) / "fashion-cnn")
            photograph(Path(root))
    if "layouts" in wanted:
        with tempfile.TemporaryDirectory() as root:
            log_layouts(Path(root))
            photograph_layouts(Path(root))
    if "sweep" in wanted:
        with tempfile.TemporaryDirectory() as root:
            log_sweep(Path(root))
            photograph_sweep(Path(root))


if __name__ == "__main__":
    main()
