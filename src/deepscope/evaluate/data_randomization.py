"""The data randomisation test of Adebayo et al. 2018: explain a model trained on permuted labels.

A model trained on randomly permuted labels can only memorise; nothing it learned relates the inputs to their
classes. An explanation method that explains what the model learned must give that model different maps from a
model trained on the true labels. Maps that stay the same show the input, not the model. This is the slow
sanity check: it trains one model (two with ``control=True``) through the user's own training function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import BadInputError
from ..targets import TargetSpec
from .sanity import MapFunction, SanityCheck, _check, _similarities, explain_maps, frozen_targets

STEP_TRUE = "true labels (retrained)"
STEP_PERMUTED = "permuted labels"


def data_randomization_check(
    model: nn.Module,
    model_factory: Callable[[], nn.Module],
    train: Callable[[nn.Module, Tensor, Tensor], object],
    data: Tensor,
    labels: Tensor,
    inputs: Tensor,
    methods: Sequence[str | MapFunction] = ("saliency", "guided_backprop", "gradcam"),
    target: TargetSpec = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    control: bool = True,
    seed: int = 0,
) -> SanityCheck:
    """Data randomisation test (Adebayo et al. 2018): compare ``model``'s maps with a permuted-label model's.

    ``model_factory()`` builds a fresh model and ``train(model, data, permuted_labels)`` trains it in place (it
    should train long enough to fit the permuted labels: memorisation is what the test is about); the function
    then puts it in eval mode and explains ``inputs`` with every method, for the same targets as ``model``
    (its predicted classes by default), and compares the maps with ``model``'s, per input, by the metrics of
    :func:`sanity_check` (Spearman, Spearman of absolute values, SSIM, HOG similarity).

    With ``control=True`` a second fresh model is trained on the true labels under the same seed: its
    similarity to ``model`` is what retraining alone changes, the level the permuted-label model must fall
    clearly below. Both trainings run under ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``, so
    they start from the same weights and the caller's random state is left as it was.

    This is the slow check: it costs one (or two) full trainings. :func:`sanity_check` (model-parameter
    randomisation) needs none.

    Args:
        model: the trained model whose explanations are checked (not modified; call ``model.eval()``).
        model_factory: builds an untrained model of the same architecture.
        train: trains its first argument on ``(data, labels)`` in place; its return value is ignored.
        data: the training inputs handed to ``train``.
        labels: their true classes ``[len(data)]``; a seeded permutation of them trains the random model.
        inputs: the image batch ``[N, C, H, W]`` to explain (H, W at least 7).
        methods: names from ``ds.methods()`` or callables ``f(model, inputs) -> [N, H, W]``.
        target: as in ``ds.explain``; ``None`` explains ``model``'s predicted classes on every model.
        options: per-method options for ``ds.explain``, e.g. ``{"gradcam": {"layer": "features.3"}}``.
        control: also train a model on the true labels (the reference similarity).
        seed: seeds the permutation and the trainings.

    Returns:
        A :class:`SanityCheck` with ``mode="data"`` and steps ``["original", "true labels (retrained)",
        "permuted labels"]`` (the middle one only with ``control``); ``.figure()`` and ``.grid()`` draw it.
    """
    # The model's, inputs', methods', options' and seed's checks are sanity_check's; the mode is fixed here.
    names, options = _check(model, inputs, methods, "cascading", options, seed)
    if not callable(model_factory) or not callable(train):
        raise BadInputError("model_factory must build a fresh model, and train(model, data, labels) train it.")
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point():
        raise BadInputError("labels must be an integer class tensor [len(data)].")
    if len(data) != len(labels):
        raise BadInputError(f"data has {len(data)} samples but labels has {len(labels)}; give one label per sample.")
    if len(torch.unique(labels)) < 2:
        raise BadInputError("labels hold one class only; permuting them would change nothing.")

    x, resolved, spec = frozen_targets(model, inputs, target)

    generator = torch.Generator().manual_seed(seed)
    permuted = labels[torch.randperm(len(labels), generator=generator).to(labels.device)]
    runs = ([(STEP_TRUE, labels)] if control else []) + [(STEP_PERMUTED, permuted)]
    collected = {name: [m] for name, m in explain_maps(model, x, names, methods, spec, options).items()}
    for _, run_labels in runs:
        network = _trained(model_factory, train, data, run_labels, seed)
        for name, heatmap in explain_maps(network, x, names, methods, spec, options, randomised=True).items():
            collected[name].append(heatmap)

    maps = {name: torch.stack(collected[name]) for name in names}
    return SanityCheck(
        mode="data",
        methods=names,
        steps=["original", *(step for step, _ in runs)],
        scores={name: _similarities(maps[name]) for name in names},
        maps=maps,
        inputs=x.detach().float().cpu(),
        targets=resolved.classes.clone() if resolved.classes is not None else None,
    )


def _trained(
    factory: Callable[[], nn.Module],
    train: Callable[[nn.Module, Tensor, Tensor], object],
    data: Tensor,
    labels: Tensor,
    seed: int,
) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = factory()
        if not isinstance(network, nn.Module):
            raise BadInputError(f"model_factory returned {type(network).__name__}, not a torch.nn.Module.")
        train(network, data, labels)
    return network.eval()
