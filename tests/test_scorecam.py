"""Score-CAM's shortcuts keep pytorch-grad-cam's numbers: batch norms folded on a traced copy (the model itself where
torch.fx cannot trace it, and only then), and channels with the same mask scored once."""

from __future__ import annotations

import torch
import torch.fx
import torch.fx.experimental.optimization
from conftest import minmax, tiny_cnn
from pytorch_grad_cam import ScoreCAM as PeerScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import deepscope as ds
from deepscope.explain.cam import ScoreCAM, folded


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
    masked = sum(rows) - len(x)  # the first, clean pass has one row per input
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
