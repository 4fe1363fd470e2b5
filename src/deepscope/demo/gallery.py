"""Explain a few inputs with several methods and write what a person looks at: overlays and one grid figure."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import render
from ..explain import explain, methods
from ..explanation import Explanation

Log = Callable[[str], None]


@dataclass
class Gallery:
    """What :func:`explain_and_save` wrote (the grid, one overlay per input and method, methods left out), and the
    explanations themselves, one per method, for logging into a run."""

    grid: Path
    overlays: dict[str, list[Path]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    explanations: list[Explanation] = field(default_factory=list)


def explain_and_save(
    model: nn.Module,
    inputs: Tensor,
    out: Path,
    method_names: Sequence[str],
    titles: Sequence[str],
    marks: Sequence[str],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    class_names: Sequence[str] | None = None,
    scale: int = 1,
    log: Log = print,
    progress: bool = True,
) -> Gallery:
    """Explain ``inputs`` (predicted class) with each method; write ``out/overlays/NN_method.png`` and ``out/grid.png``.

    Args:
        model: the model, in eval mode.
        inputs: the batch the model takes.
        out: the output folder (created if needed).
        method_names: methods to run; those this deepscope does not have (``ds.methods()``) are skipped, said so.
        titles: one line per input for the grid (say "label: Coat").
        marks: one more line per input (say "pred: Shirt - misclassified").
        options: per method, the options to pass to ``ds.explain``.
        class_names: names of the model's classes, to label each overlay with its target's name.
        scale: overlays are enlarged by this factor (nearest neighbour), for small inputs like 28 x 28.
        log: where progress messages go.
        progress: show a tqdm bar over the methods.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(exist_ok=True)
    options = options or {}
    available = set(methods())
    skipped = [name for name in method_names if name not in available]
    for name in skipped:
        log(f"method {name!r} is not registered in this deepscope (see ds.methods()); skipped.")
    chosen = [name for name in method_names if name in available]
    explanations: list[Explanation] = []
    for name in tqdm(chosen, desc="explaining", unit="method", disable=not progress):
        with warnings.catch_warnings():
            # The demo's models are in eval mode; nothing else worth a warning is expected here.
            warnings.simplefilter("ignore", UserWarning)
            explanation = explain(model, inputs, method=name, **options.get(name, {}))
        if class_names is not None and explanation.targets is not None:
            explanation.labels = [class_names[int(t)] for t in explanation.targets]
        explanations.append(explanation)
    if not explanations:
        raise RuntimeError(f"none of the methods {list(method_names)} is registered; ds.methods() lists them.")
    gallery = Gallery(grid=out / "grid.png", skipped=skipped, explanations=explanations)
    for explanation in explanations:
        paths = []
        for i in range(len(explanation)):
            picture = render.overlay(explanation.inputs[i], explanation.heatmap[i])
            if scale > 1:
                picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
            path = out / "overlays" / f"{i:02d}_{explanation.method}.png"
            picture.save(path)
            paths.append(path)
        gallery.overlays[explanation.method] = paths
    figure = render.explanation_grid(explanations, max_inputs=len(inputs), titles=list(titles), marks=list(marks))
    render.save_figure(figure, str(gallery.grid))
    return gallery
