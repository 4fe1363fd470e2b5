"""Explanation sets: inputs explained by several methods at a step, every picture a PNG file in a folder beside
the run, what the model made of each input in the database (the board's gallery)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import BadInputError
from .codec import Codec, FileSink, FileSource, Stored, array, loggable, register
from .image import png, read_png

if TYPE_CHECKING:
    from ...explanation import Explanation

KIND = "explanation"


@dataclass(frozen=True)
class ExplanationSet:
    """``N`` inputs explained by ``M`` methods at a step, as pictures with what the model made of each input.

    ``inputs`` uint8 ``[N, H, W, 3]``; ``heatmaps`` (each method's map through a colour map) and ``overlays``
    (that map laid over the input) uint8 ``[M, N, H, W, 3]``, one row per name in ``methods``. ``labels`` (the true
    classes) and ``predictions`` hold ``N`` names or are ``None``; ``targets`` ``[M][N]`` says what each method
    explained (a class name, ``"predicted"``, a unit), ``scores`` float ``[M, N]`` the model's score for it.
    :func:`explanation_set` makes one from :class:`deepscope.Explanation` objects; the store keeps every picture as
    a PNG file beside the run's database, as it does images.

    A sample of an explained data set (``ds.explain_dataset``) also holds ``items``, each input's id in the data
    set, and ``source``: ``{"path": the Parquet file of every item (relative to the run when inside it), "items":
    how many, "misclassified": how many the model got wrong (or None)}``. Records without them read as before.
    """

    tag: str
    step: int
    inputs: np.ndarray
    methods: list[str]
    heatmaps: np.ndarray
    overlays: np.ndarray
    targets: list[list[str]]
    scores: np.ndarray
    labels: list[str] | None = None
    predictions: list[str] | None = None
    wall_time: float | None = None
    items: list[int] | None = None
    source: dict[str, Any] | None = None


@register
class ExplanationCodec(Codec):
    kind = KIND
    record = ExplanationSet
    has_files = True
    view = "explanations"

    def normalise(self, record: ExplanationSet) -> dict[str, Any]:
        tag = record.tag
        inputs = array(record.inputs)
        if inputs.ndim != 4 or inputs.shape[3] != 3 or inputs.dtype != np.uint8 or inputs.shape[0] == 0:
            raise BadInputError(f"{tag!r}: inputs are uint8 pictures [N, H, W, 3] with N >= 1, not {inputs.shape}")
        m, n = len(record.methods), inputs.shape[0]
        pictures = (m, *inputs.shape)
        for name in ("heatmaps", "overlays"):
            found = array(getattr(record, name))
            if found.shape != pictures or found.dtype != np.uint8:
                raise BadInputError(f"{tag!r}: {name} are uint8 [M, N, H, W, 3] = {list(pictures)}, not {found.shape}")
        scores = array(record.scores).astype(np.float64)
        if scores.shape != (m, n) or len(record.targets) != m or any(len(row) != n for row in record.targets):
            raise BadInputError(f"{tag!r}: targets and scores are one per method and input, [{m}, {n}]")
        changes: dict[str, Any] = {
            "inputs": np.ascontiguousarray(inputs),
            "scores": scores,
            "methods": [str(method) for method in record.methods],
            "targets": [[str(t) for t in row] for row in record.targets],
        }
        for name in ("labels", "predictions"):
            values = getattr(record, name)
            if values is not None:
                if len(values) != n:
                    raise BadInputError(f"{tag!r}: {len(values)} {name} for {n} inputs; give one per input")
                changes[name] = [str(v) for v in values]
        if record.items is not None:
            if len(record.items) != n:
                raise BadInputError(f"{tag!r}: {len(record.items)} item ids for {n} inputs; give one per input")
            changes["items"] = [int(i) for i in record.items]
        if record.source is not None:
            source = dict(record.source)
            if not isinstance(source.get("path"), str) or not isinstance(source.get("items"), int):
                raise BadInputError(f"{tag!r}: source is {{'path': str, 'items': int, 'misclassified': int | None}}")
            changes["source"] = source
        return changes

    def encode(self, record: ExplanationSet, files: FileSink) -> Stored:
        """Every picture a PNG in the record's folder; the description holds their paths relative to the run
        (``inputs[i]``, ``heatmaps[m][i]``, ``overlays[m][i]``)."""

        def put(name: str, image: np.ndarray) -> str:
            return files.put(f"/{name}.png", png(image))

        n, methods = len(record.inputs), range(len(record.methods))
        data = {
            "methods": record.methods,
            "targets": record.targets,
            "scores": np.asarray(record.scores, dtype=np.float64).tolist(),  # NaN as JSON's NaN, read back as such
            "labels": record.labels,
            "predictions": record.predictions,
            "shape": list(record.inputs.shape),
            "inputs": [put(f"input-{i}", record.inputs[i]) for i in range(n)],
            "heatmaps": [[put(f"heatmap-{m}-{i}", record.heatmaps[m, i]) for i in range(n)] for m in methods],
            "overlays": [[put(f"overlay-{m}-{i}", record.overlays[m, i]) for i in range(n)] for m in methods],
        }
        if record.source is not None:  # only then: records of single explanations are stored as they always were
            data |= {"items": record.items, "source": record.source}
        return Stored(int(record.step), record.wall_time, data, files.base)

    def decode(self, tag: str, stored: Stored, files: FileSource) -> ExplanationSet:
        data = stored.data

        def stack(paths: list[str]) -> np.ndarray:
            return np.stack([read_png(files, p, "a picture", tag, stored.step) for p in paths])

        return ExplanationSet(
            tag,
            stored.step,
            inputs=stack(data["inputs"]),
            methods=data["methods"],
            heatmaps=np.stack([stack(paths) for paths in data["heatmaps"]]),
            overlays=np.stack([stack(paths) for paths in data["overlays"]]),
            targets=data["targets"],
            scores=np.asarray(data["scores"], dtype=np.float64),
            labels=data["labels"],
            predictions=data["predictions"],
            wall_time=stored.wall_time,
            items=data.get("items"),
            source=data.get("source"),
        )


@loggable(("deepscope.explanation", "Explanation"), description="ds.explain's Explanation (the explanations gallery)")
def _explanation(value: Any, tag: str, step: int) -> list[Any]:
    return [explanation_set(value, tag=tag, step=step)]


def explanation_set(
    explanations: Explanation | Sequence[Explanation],
    labels: Any = None,
    predictions: Any = None,
    classes: Sequence[str] | None = None,
    tag: str = "explanations",
    step: int = 0,
    cmap: str | None = None,
    alpha: float = 0.5,
    items: Sequence[int] | None = None,
    source: dict[str, Any] | None = None,
) -> ExplanationSet:
    """The record of one or more :class:`deepscope.Explanation` objects of the same images (methods side by side).

    Args:
        explanations: what ``ds.explain`` returned, for one method or several methods on the same inputs.
        labels: the true class of each input: ``N`` class indices (tensor, array, list) or ``N`` names.
        predictions: the model's class for each input: ``N`` indices or names, or ``[N, K]`` scores (argmax).
        classes: class names, to show indices (labels, predictions, explained classes) by name.
        cmap, alpha: how heatmaps are coloured and laid over the inputs (:func:`deepscope.render.overlay`).
        items, source: for a sample of an explained data set, each input's id and the file of every item
            (:class:`ExplanationSet`).

    Raises:
        BadInputError: no explanations, explanations of different inputs, inputs that are not images, or labels
            or predictions not one per input.
    """
    import torch  # an Explanation holds tensors: torch is loaded already

    from ... import render

    group = [explanations] if not isinstance(explanations, Sequence) else list(explanations)
    if not group or not all(hasattr(e, "heatmap") and hasattr(e, "inputs") for e in group):
        raise BadInputError(f"{tag!r}: pass what ds.explain returns (one Explanation or a list of them)")
    first = group[0]
    inputs = first.inputs
    if inputs.ndim != 4 or inputs.shape[1] not in (1, 3):
        raise BadInputError(
            f"{tag!r}: the explanation gallery shows images [N, 1 or 3, H, W]; these inputs are {list(inputs.shape)}"
        )
    n = inputs.shape[0]
    for e in group[1:]:
        if e.inputs.shape != inputs.shape or not torch.equal(e.inputs, inputs):
            raise BadInputError(
                f"{tag!r}: {e.method} explains other inputs than {first.method}; log explanations of the same "
                "images together, others under another tag"
            )
    for e in group:
        if tuple(e.heatmap.shape) != (n, *inputs.shape[2:]):
            raise BadInputError(f"{tag!r}: {e.method}'s heatmap is {list(e.heatmap.shape)}, not [N, H, W]")
    names = None if classes is None else [str(c) for c in classes]
    true = None if labels is None else _class_names(labels, n, names, "labels", tag)
    predicted = None if predictions is None else _class_names(predictions, n, names, "predictions", tag)
    targets = [_targets(e, names) for e in group]
    pictures = [_uint8(render.to_image_array(inputs[i])) for i in range(n)]
    heatmaps = [[_uint8(render.colorize(e.heatmap[i], cmap)) for i in range(n)] for e in group]
    overlays = [[np.asarray(render.overlay(inputs[i], e.heatmap[i], cmap, alpha)) for i in range(n)] for e in group]
    return ExplanationSet(
        tag,
        step,
        inputs=np.stack(pictures),
        methods=[e.method for e in group],
        heatmaps=np.stack([np.stack(row) for row in heatmaps]),
        overlays=np.stack([np.stack(row) for row in overlays]),
        targets=targets,
        scores=np.stack([e.scores.detach().cpu().numpy().astype(np.float64).reshape(n) for e in group]),
        labels=true,
        predictions=predicted,
        items=None if items is None else [int(i) for i in items],
        source=source,
    )


def _uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _class_names(values: Any, n: int, names: list[str] | None, what: str, tag: str) -> list[str]:
    """``N`` class names from indices, names, or ``[N, K]`` scores."""
    if isinstance(values, Sequence) and not isinstance(values, str) and all(isinstance(v, str) for v in values):
        found = list(values)
    else:
        indices_array = array(values)
        if indices_array.ndim == 2 and indices_array.dtype.kind == "f":
            indices_array = indices_array.argmax(axis=1)
        if indices_array.ndim != 1 or indices_array.dtype.kind not in "iub":
            raise BadInputError(
                f"{tag!r}: {what} are N class indices, N names or [N, K] scores, not {indices_array.shape}"
            )
        indices = indices_array.astype(np.int64).tolist()
        if names is not None and any(not 0 <= k < len(names) for k in indices):
            raise BadInputError(f"{tag!r}: {what} hold a class outside 0..{len(names) - 1} ({len(names)} classes)")
        found = [names[k] if names is not None else str(k) for k in indices]
    if len(found) != n:
        raise BadInputError(f"{tag!r}: {len(found)} {what} for {n} inputs; give one per input")
    return found


def _targets(explanation: Explanation, names: list[str] | None) -> list[str]:
    """What each input's map explains, a class shown by name where ``names`` has it."""
    if explanation.targets is not None and names is not None:
        return [names[k] if 0 <= k < len(names) else str(k) for k in explanation.targets.tolist()]
    return [str(label) for label in explanation.labels]
