"""Seed 000's lab exercise after training, on the demo's FashionMNIST CNN: how well it does, what it learned, and
how far its explanations can be trusted. Each step saves a picture into the demo's folder and logs into its run,
so ``deepscope board`` shows the same things."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from matplotlib.figure import Figure
from torch import Tensor, nn

from ..embed import embed, project
from ..evaluate import SanityCheck, compare_methods, confidently_wrong, confusion_matrix, sanity_check
from ..explanation import Explanation
from ..features import channel, evolution, filters, logit, maximize, top_patches
from ..features.transforms import jitter, pad, rotate, scale
from ..track import Run
from .data import BACKGROUND, CLASSES, MEAN, STD, FashionData, to_inputs
from .models import FashionCNN

Log = Callable[[str], None]

EMBEDDED = 1500  # test images projected: t-SNE of 1,500 points takes about 10 s on one core
SANITY_METHODS = ("saliency", "guided_backprop", "gradcam")
# A rank correlation this high with the trained map once the top layer is random: the map survived it (guided
# backprop's is about 0.85 on the demo's CNN, saliency's about 0.3, Grad-CAM's about 0).
SURVIVES = 0.5
UNIT_LAYER, UNITS = "features.relu2", 16  # the middle stage: textures and parts, 16 of its 32 channels
PATCH_SEARCH = 5000  # test images searched for each unit's top patches
COMPARED_METHODS = ("saliency", "input_x_gradient", "guided_backprop", "gradcam", "guided_gradcam")
# Lucid's transform stack in proportion to a 28-pixel image (its standard one is made for 128 to 224 pixels).
SMALL_TRANSFORMS = [pad(2), jitter(2), scale([0.95, 1.0, 1.05]), rotate([-5, 0, 5]), jitter(1)]


@dataclass
class Views:
    """The pictures written (name -> path) and the seconds each step took."""

    pictures: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def preprocess(images: Tensor) -> Tensor:
    """An image in [0, 1] as the network's input (the demo's normalisation)."""
    return (images - MEAN) / STD


def show_everything(
    model: nn.Module,
    dataset: FashionData,
    predictions: Tensor,
    explanations: list[Explanation],
    picked: Tensor,
    run: Run,
    out: Path,
    log: Log,
    progress: bool,
    trained_steps: int = 0,
) -> Views:
    """Confusion matrix, the explanation gallery, the most confidently wrong cases, a sanity check of the methods,
    first-layer filters, class visualisations by activation maximisation, and a t-SNE/PCA projection of the test
    embeddings; ``picked`` are the test indices the ``explanations`` explain, ``trained_steps`` the training
    steps taken (the final filters are logged there, after the checkpoints' filters)."""
    views = Views()
    labels = dataset.test_labels

    with _step(views, "confusion matrix", log):
        matrix = confusion_matrix(labels, predictions, CLASSES)
        run.log_confusion_matrix(matrix)
        views.pictures["confusion matrix"] = _save(matrix.figure(normalize=True), out / "confusion_matrix.png")
        worst = ", ".join(f"{t} -> {p} ({n})" for t, p, n in matrix.most_confused[:3])
        log(f"  most confused: {worst}")

    with _step(views, "explanation gallery", log):
        run.log_explanations(explanations, labels=labels[picked], predictions=predictions[picked], classes=CLASSES)

    with _step(views, "confidently wrong", log):
        if bool((predictions == labels).all()):
            log("  every test image is classified correctly: no mistakes to show")
        else:
            wrong = confidently_wrong(
                model, (to_inputs(dataset.test_images), labels), k=8, classes=CLASSES, progress=progress
            )
            views.pictures["confidently wrong"] = _save(wrong.figure(), out / "confidently_wrong.png")
            run.log_explanations(
                wrong.explanation,
                labels=wrong.labels,
                predictions=wrong.predictions,
                classes=CLASSES,
                tag="confidently_wrong",
            )

    with _step(views, "sanity check + method comparison", log), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        inputs = to_inputs(dataset.test_images[picked[:8]])
        check = sanity_check(model, inputs, methods=SANITY_METHODS)
        views.pictures["sanity check"] = _save(check.figure(), out / "sanity_check.png")
        run.log_sanity_check(check)
        ranking = compare_methods(
            model, inputs, methods=COMPARED_METHODS, steps=28, baseline=BACKGROUND, progress=progress
        )
        views.pictures["method comparison"] = _save(ranking.figure(), out / "method_comparison.png")
        run.log_method_comparison(ranking)
        log(
            f"  rank correlation of each method's maps with its trained maps, as the layers are randomised "
            f"from the top ({check.steps[1]}) down:"
        )
        for method in check.methods:
            log(f"  {sanity_line(check, method)}")

    with _step(views, "filters over training", log):
        first = filters(model)
        views.pictures["filters"] = _save(first.figure(), out / "filters.png")
        run.flush()  # the checkpoints the watcher kept, readable now
        history = evolution(run, FashionCNN, first.layer, what=("filters",), progress=progress)
        history.log(run)
        views.pictures["filters over training"] = _save(history.figure(), out / "filters_evolution.png")
        last = max(history.steps, default=-1) + 1
        run.log_records(first.to_records(f"features/{first.layer}/filters", step=max(last, trained_steps)))

    with _step(views, "class visualisations", log):
        classes = maximize(
            model,
            logit(range(len(CLASSES))),
            steps=128,
            size=28,
            channels=1,
            preprocess=preprocess,
            transforms=SMALL_TRANSFORMS,
            progress=progress,
        )
        classes = replace(classes, labels=list(CLASSES))
        views.pictures["class visualisations"] = _save(classes.figure(columns=5), out / "class_visualisations.png")
        run.log_records(classes.to_records("features/fc/maximize"))  # the class logits: fc's outputs

    with _step(views, "units: maximisation + top patches", log):
        units = list(range(UNITS))
        seen = maximize(
            model,
            channel(UNIT_LAYER, units),
            steps=128,
            size=28,
            channels=1,
            preprocess=preprocess,
            preset="simonyan",  # plain pixels: at 28 px the strongest images; Lucid's recipe is made for 128-224 px
            lr=0.1,
            redirect_relu=16,  # the first steps give units that are silent on the start image a gradient
            progress=progress,
        )
        count = min(PATCH_SEARCH, len(labels))
        patches = top_patches(
            model, to_inputs(dataset.test_images[:count]), UNIT_LAYER, units=units, k=9, progress=progress
        )
        views.pictures["unit visualisations"] = _save(seen.figure(columns=8), out / "units_maximized.png")
        views.pictures["unit top patches"] = _save(patches.figure(units[0]), out / "unit0_top_patches.png")
        run.log_records(seen.to_records(f"features/{UNIT_LAYER}/maximize"))
        run.log_records(patches.to_records(f"features/{UNIT_LAYER}/top_patches"))
        log(
            f"  {UNITS} units of {UNIT_LAYER} (receptive field {patches.field.size[0]} px): maximised by gradient "
            f"ascent, and their top patches among {count} test images"
        )

    with _step(views, "embedding + t-SNE", log):
        count = min(EMBEDDED, len(labels))
        features = embed(model, [(to_inputs(dataset.test_images[:count]), labels[:count])], "pool", progress=progress)
        perplexity = min(30.0, (count - 1) / 3)  # openTSNE needs 3 x perplexity < points (a tiny --limit run)
        tsne = project(features, "tsne", labels=features.labels, seed=0, progress=progress, perplexity=perplexity)
        pca = project(features, "pca", labels=features.labels)
        run.log_embedding(features, classes=CLASSES, projections=[tsne, pca])
        views.pictures["t-SNE"] = _save(tsne.figure(classes=CLASSES), out / "tsne.png")
        log(
            f"  t-SNE of {count} test embeddings: trustworthiness {tsne.trustworthiness:.3f}, "
            f"10-NN accuracy {tsne.knn_accuracy:.3f} (PCA: {pca.knn_accuracy:.3f})"
        )
    return views


def sanity_line(check: SanityCheck, method: str) -> str:
    """One method's cascade in words that match its numbers: the Spearman rank correlation after the top layer is
    randomised, its mean over the cascade (the method comparison's sanity column) and with every layer random."""
    spearman = check.scores[method]["spearman"].mean(dim=1)
    top, mean, last = float(spearman[1]), float(check.mean_over_steps(method).mean()), float(spearman[-1])
    verdict = f"survives randomising {check.steps[1]}" if top >= SURVIVES else "changes with the weights"
    return (
        f"{method:<16} {top:.2f} after {check.steps[1]}, mean {mean:.2f} over the cascade, {last:.2f} with all "
        f"layers random: {verdict}"
    )


@contextmanager
def _step(views: Views, name: str, log: Log) -> Iterator[None]:
    start = time.perf_counter()
    yield
    views.seconds[name] = time.perf_counter() - start
    log(f"{name}: {views.seconds[name]:.1f} s")


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=90)
    return path
