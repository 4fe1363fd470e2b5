"""Probes during training: the demo's CNN trained a few steps with probes explained every few steps. The stored sets
equal ds.explain on the weights of their step, and probing changes nothing of the training: parameters, buffers,
.grad, modes, flags, the random state, the losses."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import hooks_left

import deepscope as ds
from deepscope.demo.models import FashionCNN
from deepscope.errors import BadInputError, LayerNotFoundError
from deepscope.store.reader import Reader
from deepscope.store.records.explanation import explanation_set
from deepscope.track.probes import Probes, untouched

CLASSES = [f"c{k}" for k in range(10)]
STEPS, EVERY = 9, 4  # probes at steps 0, 4, 8


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    return x, y, x[:5].clone(), y[:5].clone()


def _train(path, probes=None, labels=None, methods=None, on_step=None, **watch):
    """Nine steps of the demo's CNN with Adam (batches drawn from torch's global generator, so that probing
    must leave it alone for the losses to match); one parameter frozen and one module kept in eval mode, as
    fine-tuning does, so that probing must give back mixed modes and flags. Returns the model, the state dict at
    the start of each step, and the losses."""
    torch.manual_seed(0)
    model = FashionCNN()
    model.features.conv1.weight.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    x, y, _, _ = _data()
    states, losses = {}, []
    with ds.Run(path) as run:
        watcher = run.watch(model, every=EVERY, probes=probes, labels=labels, methods=methods, **watch)
        model.train()
        model.features.bn1.eval()
        for step in range(STEPS):
            states[step] = copy.deepcopy(model.state_dict())
            if on_step is not None:
                on_step(model, step)
            batch = torch.randint(0, len(x), (16,))
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        watcher.remove()
    return model, states, losses


def _checkpoint_model(state: dict[str, torch.Tensor]) -> FashionCNN:
    model = FashionCNN()
    model.load_state_dict(state)
    return model.eval()


def test_probes_equal_explain_on_the_checkpoint_of_their_step(tmp_path):
    _, _, probes, labels = _data()
    methods = ["gradcam", "saliency"]
    _, states, _ = _train(tmp_path / "run", probes, labels, methods, kinds=())
    with Reader(tmp_path / "run") as reader:
        assert reader.tags() == {"probes": "explanation"}  # kinds=(): probes without histograms
        records = reader.records("probes")
    assert [r.step for r in records] == [0, 4, 8]
    for record in records:
        model = _checkpoint_model(states[record.step])
        explanations = [ds.explain(model, probes, method) for method in methods]
        with torch.no_grad():
            logits = model(probes)
        expected = explanation_set(explanations, labels, logits, tag="probes", step=record.step)
        assert record.methods == methods
        np.testing.assert_array_equal(record.heatmaps, expected.heatmaps)
        np.testing.assert_array_equal(record.overlays, expected.overlays)
        np.testing.assert_array_equal(record.inputs, expected.inputs)
        np.testing.assert_allclose(record.scores, expected.scores, rtol=1e-6)
        assert record.predictions == [str(k) for k in logits.argmax(1).tolist()]
        assert record.labels == [str(k) for k in labels.tolist()]
        assert record.targets == expected.targets
    # The model learns between probes: the maps are not all the same picture.
    assert not np.array_equal(records[0].heatmaps, records[-1].heatmaps)


def test_probing_changes_nothing_of_the_training(tmp_path):
    _, _, probes, labels = _data()
    seen: dict[int, dict[str, object]] = {}

    def state(model: torch.nn.Module) -> dict[str, object]:
        return {
            "grads": [(p.grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
            "modes": [m.training for m in model.modules()],
            "flags": [p.requires_grad for p in model.parameters()],
            "rng": torch.get_rng_state(),
            "state": copy.deepcopy(model.state_dict()),
        }

    # Probing calls the model too (in eval mode): these hooks look at the training's forward passes only.
    def before(model: torch.nn.Module, _args: object) -> None:  # runs before the watcher's hook: probing follows
        if model.training:
            seen[len(seen)] = state(model)

    def after(model: torch.nn.Module, _args: object) -> None:  # runs after it: the probes have been explained
        if not model.training:
            return
        step = len(seen) - 1
        found, kept = state(model), seen[step]
        for (grad, values), (grad_now, values_now) in zip(kept["grads"], found["grads"]):
            assert grad is grad_now  # the very tensor, holding the previous step's gradient
            assert (values is None) == (values_now is None)
            if values is not None:
                assert torch.equal(values, values_now)
        assert found["modes"] == kept["modes"] and found["flags"] == kept["flags"]
        assert torch.equal(found["rng"], kept["rng"])
        assert all(torch.equal(found["state"][k], v) for k, v in kept["state"].items())  # BN buffers too

    hooks = []

    def hook_once(model: torch.nn.Module, step: int) -> None:
        if step == 0:  # after run.watch made its hooks: one before them, one after
            hooks.append(model.register_forward_pre_hook(before, prepend=True))
            hooks.append(model.register_forward_pre_hook(after))

    model, _, losses = _train(tmp_path / "probed", probes, labels, ["gradcam", "smoothgrad"], hook_once)
    for hook in hooks:
        hook.remove()
    # the hooks were there from step 0; the gradient of step 3 was still held when step 4's probes ran
    assert len(seen) == STEPS and seen[4]["grads"][1][0] is not None
    with Reader(tmp_path / "probed") as reader:
        assert [r.step for r in reader.records("probes")] == [0, 4, 8]
    plain, _, plain_losses = _train(tmp_path / "plain")
    assert losses == plain_losses
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())
    assert hooks_left(model) == 0


def test_probes_with_an_optimizer_and_explicit_steps(tmp_path):
    _, _, probes, labels = _data()
    torch.manual_seed(0)
    model = FashionCNN().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y, _, _ = _data()
    chosen = Probes(probes, labels, ["gradcam"], every=2, classes=CLASSES, tag="probe/set", layer="features.relu2")
    with ds.Run(tmp_path / "run") as run, run.watch(model, every=100, probes=chosen, optimizer=optimizer, kinds=()):
        for _ in range(5):
            F.cross_entropy(model(x[:8]), y[:8]).backward()
            optimizer.step()
            optimizer.zero_grad()
    with Reader(tmp_path / "run") as reader:
        records = reader.records("probe/set")
    assert [r.step for r in records] == [0, 2, 4]
    assert records[0].labels == [CLASSES[k] for k in labels.tolist()]
    assert all(name in CLASSES for name in records[0].predictions)
    assert model.training and hooks_left(model) == 0


def test_untouched_restores_even_on_error():
    model = FashionCNN().train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    grads = [p.grad for p in model.parameters()]
    rng = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"), untouched(model):
        assert not model.training and all(p.grad is None for p in model.parameters())
        torch.rand(3)
        model(torch.rand(2, 1, 28, 28)).sum().backward()  # adds into fresh .grad, thrown away
        raise RuntimeError("boom")
    assert model.training and all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_bad_probes_are_refused_with_what_to_do(tmp_path):
    _, _, probes, labels = _data()
    model = FashionCNN()
    with pytest.raises(BadInputError, match=r"unknown method 'gradkam'.*gradcam"):
        Probes(probes, methods=["gradkam"])
    with pytest.raises(BadInputError, match=r"\[N, 1 or 3, H, W\].*\[1, 28, 28\]"):
        Probes(probes[0])
    with pytest.raises(BadInputError, match="one per probe"):
        Probes(probes, labels[:3])
    with pytest.raises(BadInputError, match="options for \\['occlusion'\\]"):
        Probes(probes, options={"occlusion": {"window": 4}})
    with pytest.raises(BadInputError, match="every=0"):
        Probes(probes, every=0)
    with ds.Run(tmp_path / "run") as run:
        with pytest.raises(BadInputError, match=r"cannot go through the model.*3, 32, 32"):
            run.watch(model, probes=torch.rand(2, 3, 32, 32))  # a 1-channel model
        with pytest.raises(LayerNotFoundError, match=r"features\.relu3"):
            run.watch(model, probes=Probes(probes, layer="features.relu_3"))
        with pytest.raises(BadInputError, match="probes=images"):
            run.watch(model, labels=labels)
        with pytest.raises(BadInputError, match="holds its own"):
            run.watch(model, probes=Probes(probes), methods=["saliency"])
        run.log({"probes": 1.0})
        with pytest.raises(BadInputError, match="tag 'probes' holds scalar"):
            run.watch(model, probes=probes)
    assert hooks_left(model) == 0 and model.training
