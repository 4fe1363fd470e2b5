"""Score-CAM's shortcuts keep pytorch-grad-cam's numbers: batch norms folded on a traced copy (the model itself where
torch.fx cannot trace it, and only then), the masked passes in oneDNN's layouts where the copy gives the model's
numbers, and channels with the same mask scored once; precision="bfloat16" is the one opt-in approximation."""

from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.fx.experimental.optimization
from conftest import minmax, tiny_cnn
from pytorch_grad_cam import ScoreCAM as PeerScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import deepscope as ds
from deepscope.errors import BadInputError
from deepscope.explain import cam
from deepscope.explain.cam import ScoreCAM, folded, on_mkldnn


class Normed(nn.Module):
    """conv-BN-ReLU twice, GAP, linear. Channels 3-5 of ``features`` are channels 0-2 times 2, 0.5 and 3 (the same
    masks), channel 6 is all zeros (mask 0, like channel 7 of some inputs); ``branch`` puts a Python ``if`` on the
    input, which torch.fx cannot trace (the branch always takes the same way)."""

    def __init__(self, branch: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.branch = branch
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.features = nn.ReLU()
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)
            self.bn2.bias[:3] = 0.5  # channels 0-2 alive
            # The second batch norm scales channels 3-5 of the convolution by 1 / (its own factor); making the
            # convolution's channels 3-5 copies of 0-2 up to that, the normalised channels are copies times c > 0.
            a = self.bn2.weight / (self.bn2.running_var + self.bn2.eps).sqrt()
            for j, c in zip(range(3), (2.0, 0.5, 3.0), strict=True):
                ratio = c * a[j] / a[j + 3]
                self.conv2.weight[j + 3] = ratio * self.conv2.weight[j]
                shift = self.conv2.bias[j] - self.bn2.running_mean[j]
                self.conv2.bias[j + 3] = (
                    ratio * shift
                    + self.bn2.running_mean[j + 3]
                    + (c * self.bn2.bias[j] - self.bn2.bias[j + 3]) / a[j + 3]
                )
            self.conv2.weight[6] = 0
            self.conv2.bias[6] = self.bn2.running_mean[6] - 10 / a[6]  # far below zero after the norm: ReLU'd to 0
            self.bn2.bias[6] = 0
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch and x.abs().sum() < 0:
            x = -x
        h = self.features(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(h.mean(dim=(2, 3)))


def inputs() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 12, 12)


def peer_scorecam(model: nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    with PeerScoreCAM(model=model, target_layers=[model.features]) as cam:
        cam.batch_size = 16
        return torch.as_tensor(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes]))


def explained(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e = ds.explain(model, x, method="scorecam", layer="features", batch_size=3)
    return e.heatmap, e.targets


def test_the_model_is_built_with_copied_and_blank_channels():
    model, x = Normed(), inputs()
    with torch.no_grad():
        h = model.features(model.bn2(model.conv2(torch.relu(model.bn1(model.conv1(x))))))
    for j, c in zip(range(3), (2.0, 0.5, 3.0), strict=True):
        torch.testing.assert_close(h[:, j + 3], c * h[:, j], rtol=1e-5, atol=1e-6)
    assert h[:, 6].abs().max() == 0 and (h[:, :6].flatten(2).amax(2) > 0).all()


def test_scorecam_equals_pytorch_grad_cam_scoring_each_distinct_mask_once(monkeypatch):
    model, x = Normed(), inputs()
    rows = []
    run = ScoreCAM.run

    def counted(self, batch, of=None):
        rows.append(len(batch))
        return run(self, batch, of)

    monkeypatch.setattr(ScoreCAM, "run", counted)
    heatmap, classes = explained(model, x)
    # Per input: 8 channels, of which 3 copy others and 1 is blank (channel 7 may be blank too): at most 5 masks.
    # The first, clean pass has one row per input; the check of the oneDNN copy runs the first input through it and
    # through the model.
    masked = sum(rows) - len(x) - 2
    assert masked <= 2 * 5
    expected = peer_scorecam(model, x, classes)
    assert (expected.flatten(1).amax(1) > 0).all()
    torch.testing.assert_close(minmax(heatmap), expected, rtol=0, atol=1e-4)


def test_a_model_fx_cannot_trace_is_run_unfolded_with_the_same_answer():
    traceable, untraceable, x = Normed(), Normed(branch=True), inputs()
    fast = folded(traceable, torch.channels_last)
    assert isinstance(fast, torch.fx.GraphModule) and fast is not traceable
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in traceable.modules())  # the model itself is not changed
    assert fast.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert folded(untraceable) is untraceable
    plain = tiny_cnn()  # no batch norm: nothing to fold
    assert folded(plain, torch.channels_last) is plain
    heatmap, classes = explained(untraceable, x)
    torch.testing.assert_close(heatmap, explained(traceable, x)[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(minmax(heatmap), peer_scorecam(untraceable, x, classes), rtol=0, atol=1e-4)


def test_errors_of_the_folding_are_loud_and_of_the_tracing_fall_back(monkeypatch):
    model, x = Normed(), inputs()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the folding")

    monkeypatch.setattr(torch.fx.experimental.optimization, "fuse", broken)
    try:
        explained(model, x)
    except RuntimeError as error:
        assert "a bug in the folding" in str(error)
    else:
        raise AssertionError("the folding's error was swallowed")
    monkeypatch.undo()

    # Tracing runs the model's own code on proxies: whatever it raises there (a user's ValueError, an assert) means
    # fx cannot take the model, which then runs unfolded with the same answer.
    plain = explained(model, x)

    def untraceable(*args, **kwargs):
        raise ValueError("the model's own check, under fx's proxies")

    monkeypatch.setattr(torch.fx, "symbolic_trace", untraceable)
    assert folded(model) is model
    torch.testing.assert_close(explained(model, x), plain)


def masked_models(monkeypatch: pytest.MonkeyPatch) -> list[nn.Module]:
    """The models the masked passes of the explanations that follow run through (one per pass)."""
    seen = []
    score_masked = ScoreCAM.score_masked

    def recorded(self, x, masks, i, layout):
        seen.append(self.model)
        return score_masked(self, x, masks, i, layout)

    monkeypatch.setattr(ScoreCAM, "score_masked", recorded)
    return seen


def test_the_masked_passes_run_in_onednn_layouts_with_the_models_numbers(monkeypatch):
    model, x = Normed(), inputs()
    fast = on_mkldnn(model)
    assert isinstance(fast, torch.fx.GraphModule)
    kinds = {type(m).__name__ for m in fast.modules()}
    assert {"MkldnnConv2d", "MkldnnLinear"} & kinds and "BatchNorm2d" not in kinds
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model itself is not changed
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)
    seen = masked_models(monkeypatch)
    heatmap, classes = explained(model, x)
    assert len(seen) == len(x) and all(any(type(m).__name__ == "MkldnnConv2d" for m in s.modules()) for s in seen)
    torch.testing.assert_close(minmax(heatmap), peer_scorecam(model, x, classes), rtol=0, atol=1e-4)


def test_the_onednn_copy_is_left_where_it_does_not_apply():
    model = Normed()
    assert on_mkldnn(Normed(branch=True)) is None  # fx cannot trace it
    assert on_mkldnn(Normed().double()) is None  # oneDNN's layouts are float32 ones
    assert on_mkldnn(Normed().train()) is None  # a batch norm uses the batch's statistics
    assert on_mkldnn(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()) is None  # no convolution
    assert isinstance(on_mkldnn(tiny_cnn()), torch.fx.GraphModule)  # no batch norm: still a copy
    assert on_mkldnn(model) is not model


class Offset(nn.Module):
    """conv, ReLU, a number plus the map: torch's optimize_for_inference raises AttributeError on such an addition
    (it reads the number as a graph node; timm's swin has one)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.features, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Linear(6, 4)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((0.5 + self.features(self.conv(x))).mean(dim=(2, 3)))


def test_a_model_torchs_onednn_pass_fails_on_runs_on_the_folded_copy_with_the_same_answer():
    model, x = Offset(), inputs()
    with pytest.raises(AttributeError):
        torch.fx.experimental.optimization.optimize_for_inference(torch.fx.symbolic_trace(model))
    assert on_mkldnn(model) is None
    heatmap, classes = explained(model, x)
    torch.testing.assert_close(minmax(heatmap), peer_scorecam(model, x, classes), rtol=0, atol=1e-4)


class Doubled(nn.Module):
    """A stand-in for a wrong oneDNN copy: the model's output doubled (a different softmax over the channels)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * 2


class Failing(nn.Module):
    """A stand-in for a graph that runs an operation oneDNN's tensors lack."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("Could not run 'aten::something' with arguments from the 'MkldnnCPU' backend")


@pytest.mark.parametrize("stand_in", [Doubled, lambda model: Failing()])
def test_a_onednn_copy_that_differs_or_fails_on_the_first_input_is_not_used(monkeypatch, stand_in):
    model, x = Normed(), inputs()
    monkeypatch.setattr(cam, "on_mkldnn", stand_in)
    seen = masked_models(monkeypatch)
    heatmap, classes = explained(model, x)
    # The folded, channels-last copy runs instead, with pytorch-grad-cam's numbers.
    assert seen and all(isinstance(m, torch.fx.GraphModule) for m in seen)
    assert not any(isinstance(m, (Doubled, Failing)) for s in seen for m in s.modules())
    torch.testing.assert_close(minmax(heatmap), peer_scorecam(model, x, classes), rtol=0, atol=1e-4)


def test_precision_bfloat16_runs_the_masked_passes_in_bfloat16_close_to_float32(monkeypatch):
    model, x = Normed(), inputs()
    dtypes: dict[str, set[torch.dtype]] = {}
    score_masked = ScoreCAM.score_masked

    def recorded(self, x, masks, i, layout):
        seen = dtypes.setdefault(self.opts["precision"], set())
        handle = self.model.fc.register_forward_hook(lambda module, args, output: seen.add(output.dtype))
        try:
            return score_masked(self, x, masks, i, layout)
        finally:
            handle.remove()

    monkeypatch.setattr(ScoreCAM, "score_masked", recorded)
    exact = ds.explain(model, x, method="scorecam", layer="features", batch_size=3)
    rounded = ds.explain(model, x, method="scorecam", layer="features", batch_size=3, precision="bfloat16")
    assert dtypes == {"float32": {torch.float32}, "bfloat16": {torch.bfloat16}}
    assert rounded.heatmap.dtype == exact.heatmap.dtype == torch.float32
    difference = (minmax(rounded.heatmap) - minmax(exact.heatmap)).abs().max()
    assert 0 < difference < 0.05  # bfloat16's 8 bits of mantissa: a different map, and a close one


def test_a_hooked_model_runs_unchanged_hooks_on_the_folded_copy_not_on_onednn_tensors():
    model, x = Normed(), inputs()
    assert on_mkldnn(model) is not None
    outputs = []
    handle = model.features.register_forward_hook(lambda module, args, output: outputs.append(output))
    try:
        assert on_mkldnn(model) is None
        heatmap, classes = explained(model, x)
    finally:
        handle.remove()
    assert outputs and all(not output.is_mkldnn for output in outputs)
    torch.testing.assert_close(minmax(heatmap), peer_scorecam(model, x, classes), rtol=0, atol=1e-4)


@pytest.mark.parametrize("precision", ["half", "float16", "BFLOAT16", None, 16, torch.bfloat16])
def test_a_precision_scorecam_does_not_know_is_refused_naming_the_known_ones(precision):
    model, x = Normed(), inputs()
    with pytest.raises(BadInputError, match=r"precision=.* is not one of 'float32', 'bfloat16'"):
        ds.explain(model, x, method="scorecam", layer="features", precision=precision)
