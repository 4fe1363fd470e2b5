"""Histograms over training: the on-device histogram against NumPy, the Watcher's steps, hooks and records, and
seed 000's vanishing gradients (tanh against ReLU) read from the records."""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest
import torch
from conftest import hooks_left
from torch import nn

from deepscope.errors import BadInputError
from deepscope.track.histogram import _on_device, histogram, summarise, unpack
from deepscope.track.records import Histogram, Scalar
from deepscope.track.watch import Watcher

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _masked(tensor: torch.Tensor, bins: int = 64) -> Histogram:
    """The accelerator path (no host round trip), run wherever the tensor is."""
    x = tensor.detach().reshape(-1)
    x = x if x.dtype == torch.float64 else x.float()
    return unpack(_on_device(x.contiguous(), bins).cpu().numpy(), count=tensor.numel(), tag="", step=0)


PATHS = {"histogram": histogram, "masked": _masked}


def _numpy_reference(values: np.ndarray, bins: int) -> dict[str, object]:
    finite = values[np.isfinite(values)].astype(np.float64)
    counts, _ = np.histogram(finite, bins=bins, range=(finite.min(), finite.max()))
    return {
        "counts": counts,
        "low": finite.min(),
        "high": finite.max(),
        "mean": finite.mean(),
        "std": finite.std(),
        "norm": np.sqrt((finite**2).sum()),
        "zero_fraction": (values == 0).mean(),
        "nonfinite": int((~np.isfinite(values)).sum()),
    }


# The histogram.


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device", DEVICES)
def test_bins_closed_form(path: str, dtype: torch.dtype, device: str) -> None:
    # Values i + 0.5 for i < 64, plus the ends 0 and 64: with 64 bins over [0, 64] bin i holds i + 0.5, the first
    # bin also 0 and the last also 64 (the maximum belongs to the last bin). Exact in every dtype tested.
    values = torch.cat([torch.arange(64) + 0.5, torch.tensor([0.0, 64.0])]).to(dtype).to(device)
    record = PATHS[path](values)
    expected = np.ones(64, dtype=np.int64)
    expected[0] = expected[-1] = 2
    np.testing.assert_array_equal(record.counts, expected)
    assert (record.low, record.high, record.count, record.nonfinite) == (0.0, 64.0, 66, 0)
    assert record.mean == pytest.approx(32.0)
    assert record.zero_fraction == pytest.approx(1 / 66)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bins", [1, 7, 64])
def test_matches_numpy_on_random_values(path: str, bins: int) -> None:
    torch.manual_seed(0)
    values = torch.randn(5000, dtype=torch.float64) * 3 + 1
    values[::50] = 0.0
    record = PATHS[path](values, bins)
    ref = _numpy_reference(values.numpy(), bins)
    np.testing.assert_array_equal(record.counts, ref["counts"])
    for name in ("low", "high", "mean", "std", "norm", "zero_fraction"):
        assert getattr(record, name) == pytest.approx(ref[name], rel=1e-9), name
    assert record.count == 5000


@pytest.mark.parametrize("path", PATHS)
def test_non_finite_values_are_counted_and_left_out(path: str) -> None:
    torch.manual_seed(1)
    values = torch.randn(1000)
    values[[3, 10, 500]] = torch.tensor([math.nan, math.inf, -math.inf])
    record = PATHS[path](values, 16)
    ref = _numpy_reference(values.numpy(), 16)
    assert record.nonfinite == 3 and record.count == 1000
    assert int(record.counts.sum()) == 997
    assert np.abs(record.counts - ref["counts"]).sum() <= 2  # float32 bins against float64 ones, at edges
    for name in ("low", "high", "mean", "std", "norm"):
        assert getattr(record, name) == pytest.approx(ref[name], rel=1e-5), name


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("values", "low", "mean", "std", "norm", "finite"),
    [
        (torch.full((10,), 2.5), 2.5, 2.5, 0.0, math.sqrt(62.5), 10),
        (torch.zeros(3, 4), 0.0, 0.0, 0.0, 0.0, 12),
        (torch.full((4,), math.nan), 0.0, math.nan, math.nan, 0.0, 0),
    ],
    ids=["constant", "zeros", "all-nan"],
)
def test_degenerate_tensors(
    path: str, values: torch.Tensor, low: float, mean: float, std: float, norm: float, finite: int
) -> None:
    record = PATHS[path](values, 8)
    assert record.low == record.high == low
    assert int(record.counts.sum()) == finite
    if finite:
        assert record.counts[0] == finite  # a constant tensor sits in the first bin
    assert record.mean == pytest.approx(mean, nan_ok=True)
    assert record.std == pytest.approx(std, nan_ok=True)
    assert record.norm == pytest.approx(norm)
    assert record.nonfinite == values.numel() - finite


def test_empty_tensor() -> None:
    record = histogram(torch.empty(0, 3), 8)
    assert record.count == 0 and record.counts.sum() == 0 and len(record.counts) == 8
    assert math.isnan(record.mean) and math.isnan(record.zero_fraction)


@pytest.mark.parametrize("path", PATHS)
def test_large_mean_small_spread(path: str) -> None:
    # E[x²] - mean² cancels in float32 here; the variance must still be right.
    torch.manual_seed(2)
    values = 1000 + 0.01 * torch.randn(200_000)
    record = PATHS[path](values)
    exact = values.double()
    assert record.std == pytest.approx(float(exact.std(correction=0)), rel=1e-3)
    assert record.norm == pytest.approx(float(exact.norm()), rel=1e-6)


@pytest.mark.parametrize("values", [torch.arange(10), torch.tensor([True, False, True])], ids=["int", "bool"])
def test_integer_and_bool_tensors(values: torch.Tensor) -> None:
    record = histogram(values, 4)
    ref = _numpy_reference(values.numpy().astype(np.float64), 4)
    np.testing.assert_array_equal(record.counts, ref["counts"])
    assert record.mean == pytest.approx(ref["mean"])


def test_histogram_fills_the_record_and_leaves_the_tensor() -> None:
    values = torch.randn(6, 5, requires_grad=True)
    before = values.detach().clone()
    record = histogram(values, 4, tag="t", layer="fc", kind="weight", step=7)
    assert (record.tag, record.layer, record.kind, record.step) == ("t", "fc", "weight", 7)
    assert record.wall_time is not None
    torch.testing.assert_close(values.detach(), before, rtol=0, atol=0)
    assert summarise(values, 4).shape == (4 + 7,)


@pytest.mark.parametrize("bins", [0, -3, 2.5, True, "64"])
def test_bad_bins(bins: object) -> None:
    with pytest.raises(BadInputError, match="bins"):
        histogram(torch.randn(3), bins)  # type: ignore[arg-type]


def test_not_a_tensor() -> None:
    with pytest.raises(BadInputError, match="Tensor"):
        histogram(np.zeros(3))  # type: ignore[arg-type]


# The Watcher.


class Shared(nn.Module):
    """Two linear layers sharing one ReLU module, which is called twice per forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc2(self.act(self.fc1(x))))


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def _train(model: nn.Module, steps: int, seed: int = 0, between=None) -> list[dict[str, torch.Tensor]]:
    """Plain SGD steps on random batches; returns each step's parameters and gradients, as the step saw them."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    for _ in range(steps):
        x = torch.randn(5, 4, generator=generator)
        y = torch.randint(0, 3, (5,), generator=generator)
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        optimizer.step()
        seen.append({"params": params, "grads": grads})
        if between is not None:
            between()
    return seen


def _by_tag(records: list) -> dict[str, Histogram | Scalar]:
    return {r.tag: r for r in records}


def test_records_every_n_steps_with_the_tensors_each_step_saw() -> None:
    model = _mlp()
    calls: list[list] = []
    with Watcher(model, every=3, sink=calls.append, bins=16) as watcher:
        seen = _train(model, 7)
        assert watcher.current_step == 6
    assert [{r.step for r in records} for records in calls] == [{0}, {3}, {6}]
    for records in calls:
        step = records[0].step
        tags = _by_tag(records)
        for name in seen[step]["params"]:
            kind = "bias" if name.endswith("bias") else "weight"
            expected = histogram(seen[step]["params"][name], 16)
            np.testing.assert_array_equal(tags[f"{kind}/{name}"].counts, expected.counts)
            assert tags[f"{kind}/{name}"].layer == name.rpartition(".")[0]
            assert tags[f"gradient/{name}"].norm == pytest.approx(float(seen[step]["grads"][name].norm()), rel=1e-5)
        for layer in ("0", "2", "4"):
            norm = math.sqrt(sum(float(g.norm()) ** 2 for n, g in seen[step]["grads"].items() if n.startswith(layer)))
            assert tags[f"grad_norm/{layer}"].value == pytest.approx(norm, rel=1e-5)
        assert {t for t in tags if t.startswith("activation/")} == {f"activation/{i}" for i in range(5)}
        assert all(r.kind == "activation" for r in records if r.tag.startswith("activation/"))


def test_activations_are_the_layer_outputs() -> None:
    model = _mlp()
    calls: list[list] = []
    x = torch.randn(6, 4)
    with Watcher(model, every=1, sink=calls.append, kinds=["activation"]):
        outputs: dict[str, torch.Tensor] = {}

        def keep(module: nn.Module, _inputs: object, output: torch.Tensor, name: str) -> None:
            outputs[name] = output.detach().clone()

        hooks = [m.register_forward_hook(lambda m, i, o, n=n: keep(m, i, o, n)) for n, m in model.named_children()]
        model(x).sum().backward()
        for hook in hooks:
            hook.remove()
    tags = _by_tag(calls[0])
    assert set(tags) == {f"activation/{n}" for n in outputs}
    for name, output in outputs.items():
        np.testing.assert_array_equal(tags[f"activation/{name}"].counts, histogram(output).counts)


def test_training_is_unchanged_by_watching() -> None:
    plain = _mlp()
    _train(plain, 5)
    watched = _mlp()
    with Watcher(watched, every=2, sink=lambda records: None):
        _train(watched, 5)
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_hooks_exist_only_while_recording_and_are_removed() -> None:
    model = _mlp()
    watcher = Watcher(model, every=10, sink=lambda records: None)

    def param_hooks() -> int:
        return sum(len(p._post_accumulate_grad_hooks or {}) for p in model.parameters())

    _train(model, 1)  # step 0 is recorded: its hooks stay until the next step starts
    assert param_hooks() == len(list(model.parameters()))
    _train(model, 1)  # step 1 is not
    assert param_hooks() == 0
    assert hooks_left(model) == 2  # the root's pre-hook and hook, which count steps
    watcher.remove()
    watcher.remove()
    assert hooks_left(model) == 0 and param_hooks() == 0


def test_eval_and_no_grad_forwards_do_not_count() -> None:
    model = _mlp()
    calls: list[list] = []

    def validate() -> None:
        model.eval()
        model(torch.randn(2, 4))
        model.train()
        with torch.no_grad():
            model(torch.randn(2, 4))

    with Watcher(model, every=2, sink=calls.append, kinds=["activation"]) as watcher:
        _train(model, 3, between=validate)
        assert watcher.current_step == 2
    # The validation passes after step 0 ran with the recording hooks in place, yet recorded nothing.
    assert [len(records) for records in calls] == [5, 5]
    assert all(r.count % 5 == 0 for records in calls for r in records)  # batches of 5, not the 2 of validation


@pytest.mark.parametrize("mode", ["explicit", "optimizer"])
def test_gradient_accumulation_records_the_accumulated_gradient(mode: str) -> None:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls: list[list] = []
    watcher = Watcher(
        model, every=1, sink=calls.append, kinds=["gradient"], optimizer=optimizer if mode == "optimizer" else None
    )
    generator = torch.Generator().manual_seed(3)
    accumulated, applied = [], []
    for step in range(2):
        optimizer.zero_grad()
        for _ in range(3):  # micro-batches
            if mode == "explicit":
                watcher.step(step)
            (10 * model(torch.randn(4, 4, generator=generator)).square().mean()).backward()
        accumulated.append({n: p.grad.clone() for n, p in model.named_parameters()})
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        applied.append({n: p.grad.clone() for n, p in model.named_parameters()})
        optimizer.step()
    watcher.remove()
    assert [records[0].step for records in calls] == [0, 1]
    for step, records in enumerate(calls):
        # Explicit steps read the gradient after its last accumulation; the optimizer's hook reads it as applied.
        expected = accumulated[step] if mode == "explicit" else applied[step]
        tags = _by_tag(records)
        for name, grad in expected.items():
            assert tags[f"gradient/{name}"].norm == pytest.approx(float(grad.norm()), rel=1e-5), name
        total = math.sqrt(sum(float(g.norm()) ** 2 for g in expected.values()))
        recorded = math.sqrt(sum(r.value**2 for r in records if isinstance(r, Scalar)))
        assert recorded == pytest.approx(total, rel=1e-5)
        assert math.sqrt(sum(float(g.norm()) ** 2 for g in accumulated[step].values())) > 1.0  # clipping bit


def test_explicit_steps_go_forward_only() -> None:
    model = _mlp()
    with Watcher(model, every=5, sink=lambda records: None) as watcher:
        watcher.step(3)
        watcher.step(3)
        with pytest.raises(BadInputError, match="backwards"):
            watcher.step(2)
        for bad in (-1, 1.5, "4"):
            with pytest.raises(BadInputError):
                watcher.step(bad)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="removed"):
        watcher.step(10)


def test_shared_module_and_a_model_that_is_a_leaf() -> None:
    calls: list[list] = []
    model = Shared()
    with Watcher(model, every=1, sink=calls.append, kinds=["activation"]):
        model(torch.randn(2, 4)).sum().backward()
    assert set(_by_tag(calls[0])) == {"activation/fc1", "activation/fc2", "activation/act", "activation/act#1"}
    assert _by_tag(calls[0])["activation/act#1"].count == 2 * 3

    calls.clear()
    leaf = nn.Linear(3, 2)
    with Watcher(leaf, every=1, sink=calls.append):
        leaf(torch.randn(4, 3)).sum().backward()
    tags = _by_tag(calls[0])
    assert {"activation/Linear", "weight/weight", "bias/bias", "gradient/weight", "grad_norm/Linear"} <= set(tags)
    assert tags["activation/Linear"].count == 8


def test_non_finite_gradients_show_in_the_layer_norm() -> None:
    calls: list[list] = []
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    with Watcher(model, every=1, sink=calls.append, kinds=["gradient"]):
        model[1].weight.register_hook(lambda grad: torch.full_like(grad, math.nan))
        model(torch.randn(4, 3)).sum().backward()
    tags = _by_tag(calls[0])
    assert tags["gradient/1.weight"].nonfinite == 2 and tags["gradient/1.weight"].counts.sum() == 0
    assert math.isnan(tags["grad_norm/1"].value)
    assert math.isfinite(tags["grad_norm/0"].value)


class Remembers(nn.Module):
    """A linear layer that keeps a weak reference to each output it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.outputs: list[weakref.ref] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x).relu()
        self.outputs.append(weakref.ref(out))
        return out


def test_no_activation_or_gradient_outlives_its_step() -> None:
    model = nn.Sequential(Remembers(), nn.Linear(4, 2))
    calls: list[list] = []
    watcher = Watcher(model, every=1, sink=calls.append)
    loss = model(torch.randn(3, 4)).sum()
    loss.backward()
    del loss
    gc.collect()
    # Step 0 is still pending (its records go out when step 1 starts), yet its tensors are gone.
    assert not calls and model[0].outputs[0]() is None
    watcher.remove()
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every": 0}, "every"),
        ({"every": 2.0}, "every"),
        ({"sink": "nope"}, "callable"),
        ({"kinds": ["weights"]}, "kind"),
        ({"bins": 0}, "bins"),
        ({"optimizer": object()}, "optimizer"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    model = _mlp()
    arguments = {"sink": lambda records: None, **kwargs}
    with pytest.raises(BadInputError, match=match):
        Watcher(model, **arguments)
    assert hooks_left(model) == 0


def test_not_a_module() -> None:
    with pytest.raises(BadInputError, match="Module"):
        Watcher(lambda x: x, sink=print)  # type: ignore[arg-type]


# Seed 000: vanishing gradients in a deep tanh MLP, not in the same MLP with ReLU.


def _deep_mlp(activation: type[nn.Module], seed: int, depth: int = 10, width: int = 16) -> nn.Module:
    """Seed 000's setup (from the tutorial it cites): tanh with weights uniform in [0, 1], ReLU with He init.

    With all weights positive, the pre-activations of a tanh layer grow to a few units, tanh saturates and its
    derivative (about 1e-2 there) shrinks the gradient at every layer on the way back to the input. With PyTorch's
    default init neither network saturates, and ReLU's gradients shrink faster than tanh's: that is not the
    phenomenon the seed shows.
    """
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(depth - 1):
        layers += [nn.Linear(2 if i == 0 else width, width), activation()]
    layers.append(nn.Linear(width, 1))
    model = nn.Sequential(*layers)
    for layer in model:
        if isinstance(layer, nn.Linear):
            if activation is nn.Tanh:
                nn.init.uniform_(layer.weight, 0.0, 1.0)
            else:
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return model


def _first_to_last_gradient_ratio(activation: type[nn.Module], seed: int) -> float:
    model = _deep_mlp(activation, seed)
    calls: list[list] = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(64, 2, generator=generator) * 2 - 1
    y = (x.norm(dim=1) < 0.6).float()  # two circles: inside or outside
    with Watcher(model, every=5, sink=calls.append, kinds=["gradient"]):
        for _ in range(10):
            optimizer.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y).backward()
            optimizer.step()
    norms = {r.tag: r.value for r in calls[-1] if isinstance(r, Scalar)}
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return norms[f"grad_norm/{linears[0]}"] / norms[f"grad_norm/{linears[-1]}"]


@pytest.mark.parametrize("seed", range(3))
def test_vanishing_gradients_tanh_against_relu(seed: int) -> None:
    tanh = _first_to_last_gradient_ratio(nn.Tanh, seed)
    relu = _first_to_last_gradient_ratio(nn.ReLU, seed)
    assert tanh < 1e-6, tanh
    assert relu > 1e-2, relu
