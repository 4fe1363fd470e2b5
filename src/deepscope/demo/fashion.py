"""The main journey: train a small CNN on FashionMNIST, then explain 10 random test images with four methods."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..targets import probability
from ..track import Run
from .cpu import choose_threads, cpu_threads
from .data import BACKGROUND, CLASSES, FashionData, load_fashion_mnist, to_inputs
from .fashion_views import show_everything
from .gallery import explain_and_save
from .models import FashionCNN
from .runs import fresh_run_dir

Log = Callable[[str], None]

BATCH_SIZE = 128
METHODS: tuple[str, ...] = ("gradcam", "saliency", "guided_gradcam", "occlusion")
# A 4 x 4 patch is about one garment detail on a 28 x 28 image; stride 2 keeps it to 169 model calls per image.
# The patch is black, FashionMNIST's background: it hides what it covers and adds nothing, where a patch of the
# data set's mean grey adds a grey square to the black background and moves the largest drop there (see
# docs/occlusion.md). The drop is in class probability, as Zeiler & Fergus measured it (seeds 001 and 004).
OPTIONS: dict[str, dict[str, object]] = {
    "occlusion": {"window": 4, "stride": 2, "baseline": BACKGROUND, "target": probability(None)}
}


@dataclass
class Sample:
    """One explained test image: its index in the test set, true and predicted class, and the overlays."""

    index: int
    label: str
    prediction: str
    overlays: dict[str, str] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.label == self.prediction


@dataclass
class FashionResult:
    """What ``deepscope demo`` did and where it wrote it."""

    out: Path
    source: str
    train_size: int
    epochs: int
    accuracy: float
    train_seconds: float
    explain_seconds: float
    model_path: Path
    grid: Path
    summary: Path
    samples: list[Sample]
    skipped: list[str]
    views: dict[str, Path] = field(default_factory=dict)
    run: Path | None = None


def train(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int = 1,
    batch_size: int = BATCH_SIZE,
    lr: float = 0.01,
    generator: torch.Generator | None = None,
    progress: bool = True,
    run: Run | None = None,
) -> list[float]:
    """Adam with a one-cycle learning rate over ``epochs``; the mean loss of each epoch. Leaves ``model`` in eval.

    With ``run``, logs ``train/loss`` and ``train/acc`` per batch and ``train/epoch_loss`` per epoch into it.
    """
    inputs = to_inputs(images)
    steps = -(-len(inputs) // batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps)
    losses = []
    model.train()
    try:
        for epoch in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            total = 0.0
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress)
            for step in bar:
                batch = order[step * batch_size : (step + 1) * batch_size]
                logits = model(inputs[batch])
                loss = F.cross_entropy(logits, labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(batch)
                if run is not None:
                    accuracy = (logits.detach().argmax(1) == labels[batch]).float().mean()
                    run.log(
                        {"train/loss": loss.detach(), "train/acc": accuracy}, step=epoch * steps + step, epoch=epoch
                    )
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            losses.append(total / len(inputs))
            if run is not None:
                run.log({"train/epoch_loss": losses[-1]}, step=(epoch + 1) * steps, epoch=epoch)
    finally:
        model.eval()
    return losses


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 1000, progress: bool = True) -> Tensor:
    """The predicted class of each uint8 image ``[N, 28, 28]``."""
    chunks = range(0, len(images), batch_size)
    return torch.cat(
        [
            model(to_inputs(images[i : i + batch_size])).argmax(dim=1)
            for i in tqdm(chunks, desc="testing", unit="batch", disable=not progress)
        ]
    )


def run(
    out: str | os.PathLike[str] = "deepscope-demo",
    epochs: int = 1,
    limit: int | None = None,
    seed: int = 0,
    samples: int = 10,
    offline: bool = False,
    data: str | os.PathLike[str] | None = None,
    install: bool = True,
    log: Log = print,
    progress: bool = True,
    dataset: FashionData | None = None,
    threads: int | None = None,
) -> FashionResult:
    """Train :class:`FashionCNN` on FashionMNIST and explain ``samples`` random test images; write it all to ``out``.

    Args:
        out: output folder: ``model.pt`` (state dict), ``grid.png``, ``overlays/NN_method.png``, ``summary.json``.
        epochs: passes over the training images.
        limit: train on the first ``limit`` images of a seeded shuffle of the training set (all by default).
        seed: seeds the initial weights, the shuffles and the choice of test images.
        samples: how many test images to explain.
        offline: never try to download (see :func:`deepscope.demo.data.load_fashion_mnist`).
        data: a folder of the four FashionMNIST IDX files to use instead.
        install: when no source works, install the Debian package if running as root with apt-get.
        log: where messages go.
        progress: show tqdm bars.
        dataset: data already loaded (skips loading).
        threads: CPU threads torch uses while the demo runs (default :func:`choose_threads`); restored after.
    """
    out = Path(out)
    if epochs < 1:
        raise ValueError(f"epochs={epochs}: train for at least 1 epoch.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: train on at least 1 image.")
    if dataset is None:
        dataset = load_fashion_mnist(folder=data, offline=offline, install=install, log=log)
    log(f"data: {dataset.source}")
    with cpu_threads(threads or choose_threads(), log):
        return _journey(dataset, out, epochs, limit, seed, samples, log, progress)


def _journey(
    dataset: FashionData, out: Path, epochs: int, limit: int | None, seed: int, samples: int, log: Log, progress: bool
) -> FashionResult:
    generator = torch.Generator().manual_seed(seed)
    train_images, train_labels = dataset.train_images, dataset.train_labels
    if limit is not None and limit < len(train_images):
        keep = torch.randperm(len(train_images), generator=generator)[:limit]
        train_images, train_labels = train_images[keep], train_labels[keep]
    log(f"training a small CNN on {len(train_images)} images for {epochs} epoch(s), seed {seed} ...")

    torch.manual_seed(seed)
    model = FashionCNN(classes=len(CLASSES))
    run_dir = fresh_run_dir(out / "runs" / "fashion-cnn")
    config = {"epochs": epochs, "train_size": len(train_images), "seed": seed, "optimizer": "adam, one-cycle lr 0.01"}
    with Run(run_dir, config=config) as run:
        run.graph(model, to_inputs(train_images[:2]))
        start = time.perf_counter()
        # Training only: what follows are not training steps. The weights every 100 steps feed the filters'
        # evolution over training (seed 002: "earlier layers train earlier").
        with run.watch(model, every=50, checkpoint_every=100):
            losses = train(
                model, train_images, train_labels, epochs=epochs, generator=generator, progress=progress, run=run
            )
        train_seconds = time.perf_counter() - start
        predictions = predict(model, dataset.test_images, progress=progress)
        accuracy = float((predictions == dataset.test_labels).float().mean())
        run.log({"test/acc": accuracy}, epoch=epochs - 1)
        log(
            f"trained in {train_seconds:.1f} s; final loss {losses[-1]:.3f}; "
            f"test accuracy {accuracy:.2%} on {len(dataset.test_images)} images"
        )
        out.mkdir(parents=True, exist_ok=True)
        model_path = out / "model.pt"
        torch.save(model.state_dict(), model_path)

        count = min(samples, len(dataset.test_images))
        chosen = torch.randperm(len(dataset.test_images), generator=generator)[:count]
        picked = [
            Sample(int(i), CLASSES[int(dataset.test_labels[i])], CLASSES[int(predictions[i])]) for i in chosen.tolist()
        ]
        titles = [f"#{s.index} label: {s.label}" for s in picked]
        marks = [f"pred: {s.prediction} ({'correct' if s.correct else 'MISCLASSIFIED'})" for s in picked]
        start = time.perf_counter()
        gallery = explain_and_save(
            model,
            to_inputs(dataset.test_images[chosen]),
            out,
            METHODS,
            titles,
            marks,
            options=OPTIONS,
            class_names=CLASSES,
            scale=4,
            log=log,
            progress=progress,
        )
        explain_seconds = time.perf_counter() - start
        for i, sample in enumerate(picked):
            sample.overlays = {method: str(paths[i]) for method, paths in gallery.overlays.items()}
        log("after training: performance, what the network learned, how far its explanations can be trusted")
        trained_steps = epochs * -(-len(train_images) // BATCH_SIZE)
        views = show_everything(
            model, dataset, predictions, gallery.explanations, chosen, run, out, log, progress, trained_steps
        )

    summary = out / "summary.json"
    result = FashionResult(
        out=out,
        source=dataset.source,
        train_size=len(train_images),
        epochs=epochs,
        accuracy=accuracy,
        train_seconds=train_seconds,
        explain_seconds=explain_seconds,
        model_path=model_path,
        grid=gallery.grid,
        summary=summary,
        samples=picked,
        skipped=gallery.skipped,
        views=views.pictures,
        run=run_dir,
    )
    summary.write_text(json.dumps(_summary(result, seed, losses), indent=2) + "\n")
    _report(result, log)
    return result


def _summary(result: FashionResult, seed: int, losses: list[float]) -> dict[str, object]:
    return {
        "data": result.source,
        "train_images": result.train_size,
        "epochs": result.epochs,
        "seed": seed,
        "epoch_losses": losses,
        "test_accuracy": result.accuracy,
        "train_seconds": round(result.train_seconds, 2),
        "explain_seconds": round(result.explain_seconds, 2),
        "model": str(result.model_path),
        "grid": str(result.grid),
        "methods": list(result.samples[0].overlays) if result.samples else [],
        "skipped_methods": result.skipped,
        "run": str(result.run) if result.run else None,
        "pictures": {name: str(path) for name, path in result.views.items()},
        "samples": [
            {
                "test_index": s.index,
                "label": s.label,
                "prediction": s.prediction,
                "correct": s.correct,
                "overlays": s.overlays,
            }
            for s in result.samples
        ],
    }


def _report(result: FashionResult, log: Log) -> None:
    wrong = [s for s in result.samples if not s.correct]
    log(f"explained {len(result.samples)} test images, {len(wrong)} misclassified:")
    for i, s in enumerate(result.samples):
        verdict = "correct" if s.correct else f"MISCLASSIFIED as {s.prediction}"
        log(f"  {i:02d}  test #{s.index:<5} {s.label:<12} {verdict}")
    log(f"grid of every method:   {result.grid}")
    log(f"overlays per method:    {result.out / 'overlays'}/NN_<method>.png")
    log(f"trained model weights:  {result.model_path}  (FashionCNN state dict)")
    for name, path in result.views.items():
        log(f"{name + ':':<23} {path}")
    log(f"summary:                {result.summary}")
    if result.run is not None:
        log(f"training run:           {result.run}  (see it: deepscope board {result.run.parent})")
