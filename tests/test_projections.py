"""Zeiler & Fergus's projection of a feature map (seed 004): the map itself as the backward signal, checked against a
hand-written deconvnet, and the figure of a unit's top patches beside their projections; top inputs of a vector layer.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import spearman
from torch import nn

import deepscope as ds
from deepscope.features import top_patches
from deepscope.features.patches import WHOLE_INPUT, PatchProjections, projection_image


class PoolNet(nn.Module):
    """conv - ReLU - max pool - conv - ReLU: every operation a deconvnet mirrors."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))


def deconvnet_by_hand(
    model: PoolNet, x: torch.Tensor, channel: int, position: tuple[int, int] | None = None
) -> torch.Tensor:
    """Zeiler & Fergus as written: keep channel ``channel`` of relu2's maps (or its one activation at ``position``),
    zero the other filters, and pass the block down: ReLU of the signal, transposed (flipped) filters, unpooling by
    the forward pass's switches."""
    with torch.no_grad():
        a1 = F.relu(F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=1))
        pooled, switches = F.max_pool2d(a1, 2, return_indices=True)
        a2 = F.relu(F.conv2d(pooled, model.conv2.weight, model.conv2.bias, padding=1))
        signal = torch.zeros_like(a2)
        if position is None:
            signal[:, channel] = a2[:, channel]
        else:
            signal[:, channel, position[0], position[1]] = a2[:, channel, position[0], position[1]]
        down = F.conv_transpose2d(F.relu(signal), model.conv2.weight, padding=1)
        down = F.max_unpool2d(down, switches, 2, output_size=a1.shape[-2:])
        return F.conv_transpose2d(F.relu(down), model.conv1.weight, padding=1)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def test_the_feature_map_signal_is_zeiler_and_fergus_deconvnet(images):
    model = PoolNet().eval()
    e = ds.explain(model, images, method="deconvnet", target=ds.Unit("relu2", 2, signal="map"))
    expected = deconvnet_by_hand(model, images, 2)
    assert expected.abs().amax() > 0
    torch.testing.assert_close(e.attribution, expected)
    with torch.no_grad():
        a2 = model(images)[:, 2]
    torch.testing.assert_close(e.scores, 0.5 * a2.pow(2).sum(dim=(1, 2)))  # half the map's squared norm
    assert e.labels == ["relu2[2] map"] * 3

    mean = ds.explain(model, images, method="deconvnet", target=ds.Unit("relu2", 2))  # a uniform signal instead
    for i in range(3):
        assert spearman(e.attribution[i], expected[i]) > 0.999
        assert spearman(mean.attribution[i], expected[i]) < 0.6  # the issue: the mean's projection is another picture


def test_the_feature_map_signal_is_the_gradient_of_its_half_squared_norm(images):
    """With the plain gradient (no rule), the same signal is d(0.5 |A_c|^2)/dx, written with autograd."""
    model = PoolNet().eval()
    e = ds.explain(model, images, method="saliency", target=ds.Unit("conv2", 1, signal="map"))
    x = images.clone().requires_grad_(True)
    a = model.conv2(model.pool(model.relu1(model.conv1(x))))[:, 1]
    (expected,) = torch.autograd.grad((a.detach() * a).sum(), x)  # the map sent back as it is
    torch.testing.assert_close(e.attribution, expected)


@pytest.mark.parametrize(
    ("unit", "words"),
    [
        (lambda: ds.Unit("relu2", 0, signal="projection"), "signal='projection'"),
        (lambda: ds.Unit("relu2", 0, (1, 1), signal="map"), "drop position"),
    ],
)
def test_a_bad_unit_signal_is_a_clear_error(unit, words):
    with pytest.raises(ds.TargetError) as caught:
        unit()
    assert words in str(caught.value)


# The top-9 figure -----------------------------------------------------------------------------------------------------


def test_top_nine_patches_beside_their_deconvnet_projections():
    model = PoolNet().eval()
    data = torch.rand(30, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    top = top_patches(model, data, "relu2", units=[1, 3], k=9, progress=False)
    shown = top.projections(model, 3)
    assert isinstance(shown, PatchProjections) and shown.unit == 3 and shown.signal == "map"
    assert shown.indices.tolist() == top.indices[1].tolist()
    pairs = shown.pairs()
    assert len(pairs) == 9
    for (patch, projection), index, box in zip(pairs, top.indices[1].tolist(), top.boxes[1].tolist(), strict=True):
        t, left, b, right = box
        torch.testing.assert_close(patch, data[index, :, t:b, left:right])
        torch.testing.assert_close(
            projection, deconvnet_by_hand(model, data[index : index + 1], 3)[0, :, t:b, left:right]
        )

    figure = shown.figure()
    pictures = [ax for ax in figure.get_axes() if ax.get_images()]
    assert len(pictures) == 18  # nine projections, then the nine patches
    for ax, (_, projection) in zip(pictures[:9], pairs, strict=True):
        drawn = ax.get_images()[0].get_array()
        assert drawn.shape == (*projection.shape[1:], 3) and abs(drawn - projection_image(projection)).max() < 1e-6
    assert shown._repr_png_().startswith(b"\x89PNG")


def test_the_strongest_activation_projects_inside_its_receptive_field():
    model = PoolNet().eval()
    data = torch.rand(12, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    top = top_patches(model, data, "relu2", units=0, k=4, progress=False)
    shown = top.projections(model, signal="max")
    for j, (box, position) in enumerate(zip(top.boxes[0].tolist(), top.positions[0].tolist(), strict=True)):
        expected = deconvnet_by_hand(model, shown.inputs[j : j + 1], 0, tuple(position))[0]
        torch.testing.assert_close(shown.projections[j], expected)
        t, left, b, right = box
        outside = shown.projections[j].clone()
        outside[:, t:b, left:right] = 0
        assert shown.projections[j].abs().amax() > 0 and outside.abs().amax() == 0  # one unit sees only its field


def test_projection_image_puts_zero_at_grey():
    picture = projection_image(torch.tensor([[[-2.0, 0.0, 1.0]]]))
    assert picture.shape == (1, 3, 3)
    torch.testing.assert_close(torch.as_tensor(picture[0, :, 0]), torch.tensor([0.0, 0.5, 0.75]))


def test_bad_projection_input_is_a_clear_error():
    model = PoolNet().eval()
    top = top_patches(model, torch.rand(4, 3, 12, 12), "relu2", units=[0], k=2, progress=False)
    with pytest.raises(ds.BadInputError, match="'map'"):
        top.projections(model, signal="mean")
    with pytest.raises(ds.BadInputError, match="not searched"):
        top.projections(model, 4)


# Vector layers: a unit that sees the whole input ----------------------------------------------------------------------


def classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 6), nn.ReLU(), nn.Linear(6, 4)).eval()


def test_top_inputs_of_a_class_output_are_whole_images():
    model, data = classifier(), torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    top = top_patches(model, data, "3", units=[2], k=5, progress=False)
    with torch.no_grad():
        values, indices = model(data)[:, 2].topk(5)
    torch.testing.assert_close(top.values[0], values)
    assert top.indices[0].tolist() == indices.tolist()
    assert top.field.method == WHOLE_INPUT and top.boxes[0].tolist() == [[0, 0, 8, 8]] * 5
    assert (top.positions == 0).all()
    torch.testing.assert_close(top.patches(2)[0], data[int(indices[0])])
    assert top._repr_png_().startswith(b"\x89PNG")
    with pytest.raises(ds.BadInputError, match="not images"):
        top_patches(nn.Sequential(nn.Linear(5, 3)), torch.rand(6, 5), "0", progress=False)
