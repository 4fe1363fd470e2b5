"""What a training run records: small typed records, the contract between what computes them and the store.

Computing code (``watch``, ``graph``, the evaluation functions) produces these; :class:`deepscope.Run` hands
them to the store. Neither side needs to know the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

HistogramKind = Literal["weight", "bias", "gradient", "activation", "other"]


@dataclass(frozen=True)
class Scalar:
    """One value of a series at a step (and optionally an epoch); ``value`` may be NaN or infinite."""

    tag: str
    value: float
    step: int
    epoch: int | None = None
    wall_time: float | None = None


@dataclass(frozen=True)
class Histogram:
    """A tensor's distribution at a step: ``counts`` over ``len(counts)`` uniform bins from ``low`` to ``high``.

    ``layer`` is the module name and ``kind`` what the tensor is (weights, biases, gradients, activations), so a
    view can group them; the summary statistics come from the whole tensor, not from the bins.
    """

    tag: str
    step: int
    low: float
    high: float
    counts: np.ndarray
    layer: str = ""
    kind: HistogramKind = "other"
    mean: float = float("nan")
    std: float = float("nan")
    zero_fraction: float = float("nan")
    norm: float = float("nan")
    count: int = 0
    nonfinite: int = 0
    wall_time: float | None = None


@dataclass(frozen=True)
class Graph:
    """A model's structure as data a dashboard can draw.

    ``modules``: the module hierarchy, nodes ``{"name", "type", "parent", "params", "shape"}``.
    ``ops``: the op-level graph, ``{"nodes": [{"name", "op", "target", "shape"}], "edges": [[src, dst], ...]}``,
    or ``None`` with ``ops_method`` saying why (e.g. ``"unavailable: <reason>"``).
    """

    modules: list[dict[str, Any]]
    ops: dict[str, Any] | None
    ops_method: str
    tag: str = "model"
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Text:
    """A text note at a step (a remark, a log line, a description of the run)."""

    tag: str
    text: str
    step: int = 0
    wall_time: float | None = None


@dataclass(frozen=True)
class Image:
    """An image at a step: ``pixels`` uint8 ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` (or floats in [0, 1]).

    The store keeps it as a PNG file beside the run's database; reading it back gives uint8 pixels.
    """

    tag: str
    step: int
    pixels: np.ndarray
    caption: str = ""
    wall_time: float | None = None


@dataclass(frozen=True)
class Audio:
    """A sound at a step: ``samples`` float ``[T]`` (mono) or ``[T, C]`` in [-1, 1] at ``sample_rate`` Hz.

    The store keeps it as a 16-bit PCM WAV file beside the run's database; reading it back gives float32 samples
    (the 16-bit levels divided by 32767).
    """

    tag: str
    step: int
    samples: np.ndarray
    sample_rate: int = 44100
    wall_time: float | None = None


@dataclass(frozen=True)
class Video:
    """A clip at a step: ``frames`` uint8 ``[T, H, W]`` or ``[T, H, W, 3]`` (or floats in [0, 1]), ``fps`` a second.

    The store keeps it as an animated GIF beside the run's database (as TensorBoard does); reading it back gives
    uint8 RGB frames. GIF keeps 256 colours per frame, so colourful frames come back approximately.
    """

    tag: str
    step: int
    frames: np.ndarray
    fps: float = 4.0
    wall_time: float | None = None


@dataclass(frozen=True)
class ScalarLayout:
    """How the board groups scalar tags into charts: TensorBoard's custom-scalars layout.

    ``layout`` is ``{category: {chart title: ["Multiline", [tag regex, ...]] or ["Margin", [value, lower,
    upper]]}}``: a multiline chart overlays every scalar tag a regex finds (``re.search``); a margin chart draws
    the tag ``value`` with a band between the tags ``lower`` and ``upper``. The store keeps it as JSON; the last
    layout logged is the one shown.
    """

    layout: dict[str, dict[str, list[Any]]]
    tag: str = "custom_scalars"
    step: int = 0
    wall_time: float | None = None


@dataclass(frozen=True)
class Embedding:
    """Feature vectors at a step, for a projection view: ``features`` float ``[N, D]``, one label row per vector.

    ``labels`` is ``None``, ``N`` strings, or ``N`` rows of strings with ``label_header`` naming the columns;
    ``thumbnails`` (optional) uint8 ``[N, H, W]`` or ``[N, H, W, 3]`` (or floats in [0, 1]), one image per vector.
    ``projections`` (optional) names precomputed 2D or 3D points ``[N, 2 | 3]`` (``{"tsne-2d": points}``), which
    the board's projector shows as they are instead of computing them.
    The store keeps the arrays in a ``.npz`` file beside the run's database and the labels in the database.
    """

    tag: str
    step: int
    features: np.ndarray
    labels: list[str] | list[list[str]] | None = None
    label_header: list[str] | None = None
    thumbnails: np.ndarray | None = None
    wall_time: float | None = None
    projections: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class PRCurve:
    """A precision-recall curve at a step: counts and rates at ``len(thresholds)`` ascending score thresholds.

    At threshold ``t`` a prediction counts as positive when its score is at least ``t``; ``tp``, ``fp``, ``tn``,
    ``fn`` are (weighted) counts, ``precision`` and ``recall`` float arrays of the same length.
    """

    tag: str
    step: int
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    wall_time: float | None = None


@dataclass(frozen=True)
class Confusion:
    """A confusion matrix at a step: ``counts`` ``[K, K]`` whole numbers, row = true class, column = predicted.

    ``classes`` names the ``K`` classes in order. :func:`deepscope.track.convert.confusion` makes one from a
    :class:`deepscope.evaluate.ConfusionMatrix`; the store keeps it as JSON in the database.
    """

    tag: str
    step: int
    counts: np.ndarray
    classes: list[str]
    wall_time: float | None = None


@dataclass(frozen=True)
class ExplanationSet:
    """``N`` inputs explained by ``M`` methods at a step, as pictures with what the model made of each input.

    ``inputs`` uint8 ``[N, H, W, 3]``; ``heatmaps`` (each method's map through a colour map) and ``overlays``
    (that map laid over the input) uint8 ``[M, N, H, W, 3]``, one row per name in ``methods``. ``labels`` (the true
    classes) and ``predictions`` hold ``N`` names or are ``None``; ``targets`` ``[M][N]`` says what each method
    explained (a class name, ``"predicted"``, a unit), ``scores`` float ``[M, N]`` the model's score for it.
    :func:`deepscope.track.convert.explanation_set` makes one from :class:`deepscope.Explanation` objects; the
    store keeps every picture as a PNG file beside the run's database, as it does images.
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


@dataclass(frozen=True)
class SanityCurves:
    """A sanity check's similarity curves at a step: how alike each method's maps stay as the model is randomised.

    ``stages`` are the check's steps (``"original"``, then each layer re-initialised, or the retrained models of
    a data randomisation check); ``mean[method][metric]`` and ``std[method][metric]`` are float ``[stages]``: the
    mean and (population) standard deviation over the ``inputs`` images of the similarity to the original map,
    ``metric`` one of ``metrics``. :func:`deepscope.track.convert.sanity_curves` makes one from a
    :class:`deepscope.evaluate.SanityCheck`; the store keeps it as JSON in the database (the maps stay out).
    """

    tag: str
    step: int
    mode: str
    methods: list[str]
    stages: list[str]
    metrics: list[str]
    mean: dict[str, dict[str, np.ndarray]]
    std: dict[str, dict[str, np.ndarray]]
    inputs: int
    wall_time: float | None = None


@dataclass(frozen=True)
class FaithfulnessCurves:
    """Deletion or insertion curves of ``M`` methods' explanations of the same ``inputs`` images at a step.

    ``fractions`` float ``[S]`` is the share of the input changed at each point; ``mean`` and ``std`` float
    ``[M, S]`` the target's probability (or score, when ``probability`` is false) over the inputs, one row per
    name in ``methods``; ``auc`` float ``[M]`` the mean area under the inputs' curves.
    :func:`deepscope.track.convert.faithfulness_curves` makes one from :class:`deepscope.evaluate.Faithfulness`
    results; the store keeps it as JSON in the database.
    """

    tag: str
    step: int
    metric: str
    methods: list[str]
    fractions: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    auc: np.ndarray
    inputs: int
    probability: bool = True
    wall_time: float | None = None


# The metrics a method comparison measures, and which way is better for each: deletion AUC and the rank correlation
# kept through the randomisation cascade (its mean over the steps) should be low. Here, with the record, so
# readers of the store need not import torch.
COMPARISON_METRICS = ("deletion", "insertion", "sanity")
LOWER_IS_BETTER = {"deletion": True, "insertion": False, "sanity": True}


@dataclass(frozen=True)
class ComparisonTable:
    """Explanation methods ranked by faithfulness and sanity at a step, best first.

    ``metrics`` are among ``"deletion"``, ``"insertion"``, ``"sanity"`` and ``sort_by`` is one of them; ``mean``
    and ``std`` float ``[M, len(metrics)]`` hold each method's mean over the inputs and its spread (NaN where not
    measured, as for a method that failed); ``errors`` says, per method, why it could not explain the model
    (``None`` when it could). :func:`deepscope.track.convert.comparison_table` makes one from a
    :class:`deepscope.evaluate.MethodComparison`; the store keeps it as JSON in the database.
    """

    tag: str
    step: int
    metrics: list[str]
    sort_by: str
    methods: list[str]
    mean: np.ndarray
    std: np.ndarray
    errors: list[str | None]
    wall_time: float | None = None


Record = (
    Scalar
    | Histogram
    | Graph
    | Text
    | Image
    | Audio
    | Video
    | ScalarLayout
    | Embedding
    | PRCurve
    | Confusion
    | ExplanationSet
    | SanityCurves
    | FaithfulnessCurves
    | ComparisonTable
)
