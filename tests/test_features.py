"""Filters, activation maps, dead units, receptive fields and top patches, against closed forms and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deepscope.errors import BadInputError
from deepscope.features.activations import activations, dead_units
from deepscope.features.filters import filters, noise_score, untrained_noise_sd
from deepscope.features.patches import top_patches
from deepscope.features.receptive_field import gradient_support, receptive_field
from deepscope.track.records import Image, Scalar

# Filters ----------------------------------------------------------------------------------------------------------


def _conv(in_channels: int, out_channels: int, kernel: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(1)))
    return conv


def test_rgb_filters_are_scaled_per_filter_or_shared():
    conv = _conv(3, 4, 5)
    w = conv.weight.detach()
    per_filter = filters(nn.Sequential(conv), scale="filter")
    assert per_filter.layer == "0" and per_filter.mode == "rgb"
    for o in range(4):
        expected = ((w[o] - w[o].min()) / (w[o].max() - w[o].min())).permute(1, 2, 0)
        torch.testing.assert_close(per_filter.images[o], expected)
    shared = filters(nn.Sequential(conv), scale="shared")
    torch.testing.assert_close(shared.images, ((w - w.min()) / (w.max() - w.min())).permute(0, 2, 3, 1))
    assert "own" in per_filter.caption and "shared" in shared.caption


def test_grid_places_each_kernel_in_its_tile():
    result = filters(nn.Sequential(_conv(3, 5, 4)))
    grid = result.grid(cell=4)  # 4 px kernels, no enlargement; 3 columns, 1-px borders
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    for o in range(5):
        r, c = divmod(o, 3)
        tile = grid[1 + r * 5 : 5 + r * 5, 1 + c * 5 : 5 + c * 5]
        assert (tile == (result.images[o].numpy() * 255).round()).all()


def test_deeper_kernels_are_grey_channel_by_channel_and_linear_rows_are_images():
    model = nn.Sequential(_conv(3, 2, 3), _conv(2, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))
    deep = filters(model, "1")
    assert deep.mode == "grey" and deep.images.shape == (6, 2, 3, 3)
    assert deep.grid(cell=3).shape == (6 * 4 + 1, 2 * 4 + 1, 3)  # a row of channels per filter
    linear = filters(model, "3", input_shape=(6, 4, 4))
    torch.testing.assert_close(linear.weight, model[3].weight.detach().reshape(3, 6, 4, 4))
    with pytest.raises(BadInputError, match="input_shape"):
        filters(model, "3")
    with pytest.raises(BadInputError, match="96"):
        filters(model, "3", input_shape=(3, 4, 4))


def test_noise_score_ranks_smooth_below_random():
    axis = torch.linspace(-1, 1, 11)
    gaussian = torch.exp(-(axis[:, None] ** 2 + axis[None] ** 2) / 0.3).expand(3, 11, 11)
    noise = torch.randn(64, 3, 11, 11, generator=torch.Generator().manual_seed(0))
    checker = ((torch.arange(11)[:, None] + torch.arange(11)) % 2).float().expand(3, 11, 11)
    scores = noise_score(torch.stack([gaussian, noise[0], checker, torch.ones(3, 11, 11)]))
    assert scores[0] < 0.2 < 0.8 < scores[1] < scores[2]
    assert scores[3] == 0
    assert abs(float(noise_score(noise).mean()) - 1) < 0.05  # white noise scores 1 in expectation


def gabors(count: int, size: int, seed: int) -> torch.Tensor:
    """``[count, 1, size, size]`` trained-like kernels: Gabor patches of random orientation, phase and a wavelength
    of 1 to 2 kernel widths (edges, bars and blobs), each with some white noise added."""
    generator = torch.Generator().manual_seed(seed)
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    theta, phase, wave = (torch.rand(3, count, 1, 1, generator=generator, dtype=torch.float64)).unbind()
    along = x * torch.cos(theta * math.pi) + y * torch.sin(theta * math.pi)
    envelope = torch.exp(-(x**2 + y**2) / (2 * (size / 2) ** 2))
    kernels = envelope * torch.cos(2 * math.pi * along / (size * (1 + wave)) + 2 * math.pi * phase)
    kernels = kernels + 0.1 * kernels.std() * torch.randn(count, size, size, generator=generator, dtype=torch.float64)
    return kernels[:, None].float()


@pytest.mark.parametrize("size", [3, 7])
def test_noise_score_tells_trained_like_kernels_from_random_init_at_any_kernel_size(size):
    torch.manual_seed(0)
    untrained = [nn.Conv2d(1, 16, size).weight.detach() for _ in range(200)]  # torch's own init, 200 layers
    means = torch.stack([noise_score(w).mean() for w in untrained])
    # calibrated against random init: an untrained layer scores 1 whatever its kernel size (the raw roughness of
    # 3 x 3 white noise is 1.12), and the predicted spread of its mean is the one observed
    assert abs(float(means.mean()) - 1) < 0.02
    predicted = untrained_noise_sd((16, 1, size, size))
    assert 0.8 < float(means.std()) / predicted < 1.2
    # measured: 3 x 3 Gabors 0.66, 7 x 7 ones 0.16; untrained layers 1.00 +- 0.06 (3 x 3), 1.00 +- 0.03 (7 x 7)
    trained_like = float(noise_score(gabors(16, size, seed=1)).mean())
    assert trained_like < 1 - 3 * predicted
    assert trained_like < means.min()
    layer = filters(nn.Sequential(nn.Conv2d(1, 16, size)))
    assert layer.untrained_sd == pytest.approx(predicted)
    assert layer.noise_vs_untrained.endswith(f"(untrained 1.00 ± {predicted:.2f})")


def test_filters_log_into_a_run(tmp_path):
    import deepscope as ds

    records = filters(nn.Sequential(_conv(3, 8, 7))).to_records("filters/conv1", step=3)
    assert isinstance(records[0], Image) and records[0].pixels.dtype.name == "uint8"
    assert isinstance(records[1], Scalar) and records[1].step == 3
    with ds.Run(tmp_path / "run") as run:
        run.log_records(records)


# Activations and dead units --------------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)
        self.relu3 = nn.ReLU()
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.out(self.relu3(self.fc(self.pool(x).flatten(1))))


def test_activations_equal_a_manual_forward_despite_inplace_relu():
    model, x = Net().eval(), torch.randn(2, 3, 8, 8)
    result = activations(model, x, "conv1", k=3, order="strongest")
    with torch.no_grad():
        expected = model.conv1(x)
    torch.testing.assert_close(result.maps, expected)  # not rectified by the in-place ReLU after it
    means = expected.transpose(0, 1).flatten(1).mean(1)
    assert result.channels.tolist() == means.argsort(descending=True)[:3].tolist()
    relu = activations(model, x, "relu1")
    assert relu.zero_fraction == pytest.approx(float((expected <= 0).float().mean()))
    torch.testing.assert_close(relu.channel_mean, expected.clamp(min=0).transpose(0, 1).flatten(1).mean(1))
    assert activations(model, x, "conv1", k=4).channels.tolist() == [0, 1, 2, 3]


def test_dead_units_finds_the_killed_units_streaming_or_not():
    model = Net().eval()
    with torch.no_grad():
        model.conv1.bias[[1, 5]] = -1e3
        model.fc.bias[:] = 10.0  # the others surely fire
        model.fc.bias[[2]] = -1e3
    x = torch.rand(20, 3, 8, 8)  # non-negative, so conv2 still sees positive inputs
    streamed = dead_units(model, DataLoader(TensorDataset(x, torch.zeros(20)), batch_size=3), progress=False)
    whole = dead_units(model, x, batch_size=20, progress=False)
    assert set(streamed.peak) == {"relu1", "relu2", "relu3"}
    assert streamed.dead["relu1"].tolist() == [1, 5] and streamed.dead["relu3"].tolist() == [2]
    assert streamed.counts["relu1"] == (2, 8) and streamed.images == 20
    for name in streamed.peak:
        torch.testing.assert_close(streamed.peak[name], whole.peak[name])
    with pytest.raises(BadInputError, match="no inputs"):
        dead_units(model, [], progress=False)


def test_dead_units_reports_each_call_of_a_reused_relu():
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    result = dead_units(model, torch.randn(2, 3, 32, 32), layers=["layer1.0.relu"], progress=False)
    assert set(result.peak) == {"layer1.0.relu:0", "layer1.0.relu:1"}


# Receptive fields -------------------------------------------------------------------------------------------------


def test_resnet50_fields_are_not_chained_through_the_shortcut():
    model = torchvision.models.resnet50(weights=None)
    for layer, size, stride in (("layer2", 91, 8), ("layer3", 267, 16), ("layer4", 427, 32)):
        field = receptive_field(model, layer, (3, 64, 64))  # the walk's numbers do not depend on the input size
        assert field.method == "graph"
        assert field.size == (size, size) and field.stride == (stride, stride)


def _chain(modules):
    """The closed form of a plain chain: size = 1 + sum (k - 1) d jump, offset = -sum p jump."""
    size, jump, offset = 1, 1, 0
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p, d = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding, m.dilation))
            size, offset, jump = size + (k - 1) * d * jump, offset - p * jump, jump * s
    return size, jump, offset


def _features(name: str) -> nn.Sequential:
    """torchvision's convolutional part of VGG-16 / AlexNet, without initialising their large classifiers."""
    if name == "vgg16":
        return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    with torch.device("meta"):
        features = torchvision.models.alexnet(weights=None).features
    return features.to_empty(device="cpu")


@pytest.mark.parametrize("name, size", [("vgg16", 212), ("alexnet", 195)])
def test_plain_chains_match_the_closed_form(name, size):
    features = _features(name)
    field = receptive_field(features, str(len(features) - 1), (3, 224, 224))
    assert (field.size[0], field.stride[0], field.offset[0]) == _chain(features) and field.size[0] == size


@pytest.mark.parametrize(
    "layers, size, stride, offset",
    [
        ([nn.Conv2d(1, 1, 3, dilation=2), nn.Conv2d(1, 1, 3, dilation=2)], 9, 1, 0),
        ([nn.Conv2d(1, 1, 5, padding=2), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=1)], 10, 2, -4),
        ([nn.Conv2d(1, 1, 3, stride=2, padding=1, dilation=3), nn.Conv2d(1, 1, (3, 3), padding=(2, 2))], 11, 2, -5),
        ([nn.Conv2d(1, 1, 4, padding="same"), nn.MaxPool2d(3, stride=2, ceil_mode=True)], 6, 2, -1),
    ],
)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_dilation_and_padding(layers, size, stride, offset):
    # Weights made here, seeded: made at collection they differed between xdist workers, and on some draws a
    # max-pooling never picked the field's last column, so the gradient's support came out one pixel short.
    torch.manual_seed(0)
    for module in layers:
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    model = nn.Sequential(*layers).eval()
    layer = str(len(layers) - 1)
    field = receptive_field(model, layer, (1, 32, 32))
    assert field.size == (size, size) and field.stride == (stride, stride) and field.offset == (offset, offset)
    for position in [(3, 4), (5, 5)]:  # units whose field lies inside the input (see test_the_box_is_...)
        assert field.box(position) == _support_box(model, layer, 32, position)


def _support_box(model: nn.Module, layer: str, side: int, position: tuple[int, int]) -> tuple[int, ...]:
    """(top, left, bottom, right) of where d unit / d input is nonzero."""
    support = gradient_support(model, layer, torch.zeros(1, 1, side, side), position, draws=64)
    rows, cols = torch.nonzero(support.any(1)).flatten(), torch.nonzero(support.any(0)).flatten()
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


class Residual(nn.Module):
    """A stem, a downsampling residual block with a 1x1 shortcut, and a dilated convolution."""

    def __init__(self, traceable: bool = True) -> None:
        super().__init__()
        self.traceable = traceable
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.shortcut = nn.Conv2d(4, 4, 1, stride=2)
        self.dilated = nn.Conv2d(4, 4, 3, padding=2, dilation=2)

    def forward(self, x):
        x = self.stem(x)
        if not self.traceable and x.sum() > float("inf"):  # data-dependent control flow: fx cannot trace it
            x = x * 2
        x = torch.relu(self.block(x) + self.shortcut(x))
        return self.dilated(x)


@pytest.mark.parametrize("layer", ["block", "dilated"])
def test_the_box_is_the_gradient_support(layer):
    model = Residual().eval()
    field = receptive_field(model, layer, (1, 40, 40))
    assert field.method == "graph" and field.size[0] == {"block": 16, "dilated": 32}[layer]
    for position in [(0, 0), (2, 3), (4, 4), (9, 9)]:
        assert field.box(position) == _support_box(model, layer, 40, position)


def test_untraceable_models_fall_back_to_the_gradient():
    traced = receptive_field(Residual(), "dilated", (1, 64, 64))
    fallback = receptive_field(Residual(traceable=False), "dilated", (1, 64, 64))
    assert fallback.method == "gradient"
    assert (fallback.size, fallback.stride, fallback.offset) == (traced.size, traced.stride, traced.offset)


def test_receptive_field_bad_input():
    with pytest.raises(BadInputError, match="spatial"):
        receptive_field(Net(), "fc", (3, 8, 8))
    with pytest.raises(BadInputError, match="outside"):
        receptive_field(Net(), "conv2", (3, 8, 8)).box((4, 0))


# Top patches ------------------------------------------------------------------------------------------------------


def test_top_patches_equal_brute_force():
    model, x = Net().eval(), torch.randn(23, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    result = top_patches(model, DataLoader(TensorDataset(x), batch_size=5), "conv2", units=[0, 2, 5], k=4)
    with torch.no_grad():
        maps = model.conv2(model.conv1(x).relu())[:, [0, 2, 5]].flatten(2)  # [N, U, positions]
    best, where = maps.max(dim=2)
    values, indices = best.topk(4, dim=0)
    torch.testing.assert_close(result.values, values.t())
    assert result.indices.tolist() == indices.t().tolist()
    flat = where.gather(0, indices).t()
    assert (result.positions[..., 0] * 6 + result.positions[..., 1]).tolist() == flat.tolist()
    assert (result.boxes[..., :2] >= 0).all() and (result.boxes[..., 2:] <= 12).all()
    assert (result.boxes[..., 2:] > result.boxes[..., :2]).all()
    for unit in (0, 2, 5):
        for index, patch, box in zip(
            result.indices[[0, 2, 5].index(unit)], result.patches(unit), result.boxes[[0, 2, 5].index(unit)]
        ):
            top, left, bottom, right = box.tolist()
            torch.testing.assert_close(patch, x[index, :, top:bottom, left:right])
    assert set(result.images) == set(result.indices.flatten().tolist())  # only the winners are kept


def test_top_patches_ties_go_to_the_earlier_input_and_keep_k_per_unit():
    # A dead unit (all zeros) ties every input: the answer is its first k inputs, and the running merge holds at
    # most k x units rows, not every tied input (it once kept the whole data set, and copied it every batch).
    from deepscope.engine import Batch
    from deepscope.features.patches import merge_top, patch_rows

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with torch.no_grad():
        model[0].bias[1] = -1e3  # unit 1 never fires
    x = torch.randn(60, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    x[50] = x[7]  # equal activations everywhere: 7 wins every tie with 50
    result = top_patches(model, DataLoader(TensorDataset(x), batch_size=6), "1", k=3)
    with torch.no_grad():
        best = model(x).flatten(2).amax(dim=2).numpy()  # [N, U]
    ids = np.broadcast_to(np.arange(len(x))[:, None], best.shape)
    order = np.lexsort((ids, -best), axis=0)[:3]  # largest first, then the smaller index
    assert result.indices.tolist() == order.T.tolist()
    assert result.indices[1].tolist() == [0, 1, 2]
    merged = None
    for start in range(0, len(x), 6):
        batch = Batch(x[start : start + 6], None, torch.arange(start, start + 6))
        with torch.no_grad():
            merged = merge_top(merged, patch_rows(model, batch, "1", None, 3), 3)
        assert len(merged["id"]) <= 3 * 4
    assert merged is not None and len(merged["id"]) < len(x)


def test_top_patches_records_hold_each_units_patches_in_order():
    from deepscope.render import to_image_array

    model, x = Net().eval(), torch.randn(9, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    result = top_patches(model, x, "conv2", units=[1, 3], k=4)
    records = result.to_records("features/conv2/top_patches", step=7)
    assert [r.tag for r in records] == ["features/conv2/top_patches/1", "features/conv2/top_patches/3"]
    assert all(r.step == 7 and r.pixels.dtype == np.uint8 for r in records)
    grid = records[1].pixels  # unit 3: 2 x 2 patches, strongest top left
    index = int(result.indices[1, 0])
    top, left, bottom, right = result.boxes[1, 0].tolist()
    expected = (to_image_array(x[index])[top:bottom, left:right] * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(grid[1 : 1 + bottom - top, 1 : 1 + right - left], expected)


def test_top_patches_bad_input():
    model, x = Net().eval(), torch.randn(4, 3, 8, 8)
    with pytest.raises(BadInputError, match="out of range"):
        top_patches(model, x, "conv2", units=[6])
    with pytest.raises(BadInputError, match="2-D feature map"):  # tokens [N, C, L]: neither a map nor a vector
        top_patches(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(2)), x, "1")
    with pytest.raises(BadInputError, match="no inputs"):
        top_patches(model, [], "conv2")


def test_figures_render():
    model, x = Net().eval(), torch.rand(6, 3, 12, 12)
    for result in (
        filters(model),
        activations(model, x, "conv1"),
        dead_units(model, x, progress=False),
        top_patches(model, x, "conv2", k=4),
    ):
        assert result._repr_png_()[:4] == b"\x89PNG"
    assert math.isfinite(float(filters(model).noise.mean()))
