"""A plain function as the model: methods that only run the model (gradients, perturbations) explain it exactly as
they explain the module it wraps; methods that hook the model's modules refuse it and say why."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from conftest import ANY_MODEL_METHODS, hooks_left, tiny_cnn

import deepscope as ds
from deepscope.explain.base import method_class

# Seeded and small, so that the module and the function see the same random draws and the test stays fast.
ACCEPTING: dict[str, dict[str, Any]] = {
    "saliency": {},
    "input_x_gradient": {},
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"samples": 4, "seed": 3},
    "guided_backprop": {},
    "deconvnet": {},
    "occlusion": {"window": 4},
    "lime": {"samples": 30, "seed": 3, "grid": 2},
}


def _call(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def as_functions(model: torch.nn.Module) -> list[Any]:
    def plain(x: torch.Tensor) -> torch.Tensor:
        return model(x)

    return [lambda x: model(x), functools.partial(_call, model), plain]


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 16, 16)


@pytest.mark.parametrize("method", ANY_MODEL_METHODS)
def test_every_method_decides_whether_it_needs_a_module(method):
    assert isinstance(method_class(method).needs_module, bool)


@pytest.mark.parametrize("method", sorted(ACCEPTING))
def test_function_explains_exactly_as_the_module(method, x):
    model = tiny_cnn()
    reference = ds.explain(model, x, method, **ACCEPTING[method])
    assert not method_class(method).needs_module
    for function in as_functions(model):
        got = ds.explain(function, x, method, **ACCEPTING[method])
        assert torch.equal(got.attribution, reference.attribution)
        assert torch.equal(got.heatmap, reference.heatmap)
        assert torch.equal(got.scores, reference.scores)


def test_occlusion_on_a_function_falls_back_to_whole_passes(x):
    model = tiny_cnn()
    with pytest.warns(UserWarning, match="function"):
        got = ds.explain(lambda t: model(t), x, "occlusion", window=4, incremental=True)
    plain = ds.explain(model, x, "occlusion", window=4, incremental=False)
    assert torch.equal(got.attribution, plain.attribution)


@pytest.mark.parametrize("method", [m for m in ds.methods() if method_class(m).needs_module])
def test_hook_methods_refuse_a_function_and_say_which_accept_one(method, x):
    model = tiny_cnn()
    with pytest.raises(ds.BadInputError) as error:
        ds.explain(lambda t: model(t), x, method)
    message = str(error.value)
    assert f"{method} hooks the model's modules" in message and "torch.nn.Module" in message
    for accepting in ACCEPTING:
        assert accepting in message
    assert hooks_left(model) == 0


def test_layer_and_unit_targets_need_a_module(x):
    model = tiny_cnn()
    layer = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with pytest.raises(ds.BadInputError, match="no layers"):
        ds.explain(lambda t: model(t), x, "saliency", layer=layer)
    with pytest.raises(ds.BadInputError, match="no layers"):
        ds.explain(lambda t: model(t), x, "saliency", target=ds.Unit(layer, 0))


def test_the_function_gets_the_inputs_unchanged_and_no_state_changes(x):
    model = tiny_cnn()
    seen: list[torch.Tensor] = []

    def function(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.detach().clone())
        return model(t)

    given = x.clone()
    rng = torch.get_rng_state()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    ds.explain(function, x, "saliency")
    ds.explain(function, x, "smoothgrad", samples=2, seed=0)
    assert torch.equal(seen[0], given) and seen[0].dtype == given.dtype
    assert torch.equal(x, given)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    assert all(p.grad is None for p in model.parameters())
