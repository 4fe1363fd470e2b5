"""Make the board's pictures in docs/images/ with the code they document: seed 000's lab, logged into a run.

A FashionMNIST CNN trained for one short epoch (the Debian package's IDX files, offline), its graph, its watched
histograms, its confusion matrix and one-vs-rest PR curves on 2,000 test images, and Grad-CAM and saliency on 10
random test cases; then the board serves the run (with ResNet-18's graph beside the CNN's) and headless Chromium
(Playwright) photographs the Graph, Evaluation, Explanations and Distributions tabs.
Run: .venv/bin/python docs/make_board_figures.py (about a minute on two cores).
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


def photograph(root: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as playwright:
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
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        log_lab(Path(root) / "fashion-cnn")
        photograph(Path(root))


if __name__ == "__main__":
    main()
