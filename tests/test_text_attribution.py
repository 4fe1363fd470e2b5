"""Layer attribution for the gradient methods, token ids, and the coloured-token view.

Numbers are checked against Captum's layer methods (LayerGradientXActivation, LayerIntegratedGradients) on a small
CNN and on a BERT-like classifier built from a config (no downloads), and integrated gradients at the embedding
layer against completeness: the per-token attributions sum to the score difference to the baseline.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from captum import attr as captum
from conftest import explain_fast, hooks_left, tiny_cnn
from torch import nn

import deepscope as ds
from deepscope.explain.base import method_class

transformers = pytest.importorskip("transformers")

LAYERED = [m for m in ds.methods() if method_class(m).layer_optional]


def bert() -> nn.Module:
    """The issue's BERT-like classifier. initializer_range=0.2 (BERT's default is 0.02) so that the class scores
    differ between inputs by tenths, not thousandths: completeness to 1e-3 would hold trivially otherwise."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        initializer_range=0.2,
    )
    return transformers.BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return bert()


@pytest.fixture
def ids() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(1, 100, (3, 10), generator=generator)


def logits(model: nn.Module, ids: torch.Tensor, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, **kwargs).logits


def captum_forward(model: nn.Module):
    return lambda ids, *args: model(ids, *args).logits


# Integrated gradients at the embedding layer --------------------------------------------------------------------


def test_token_integrated_gradients_are_complete(model, ids):
    pad = torch.zeros_like(ids)  # BERT's [PAD] is id 0
    e = ds.explain(model, ids, method="integrated_gradients", layer="bert.embeddings", baseline=pad)
    assert e.attribution.shape == (3, 10, 32) and e.heatmap.shape == (3, 10)
    torch.testing.assert_close(e.heatmap, e.attribution.sum(dim=2))
    classes = logits(model, ids).argmax(1)
    difference = (logits(model, ids) - logits(model, pad)).gather(1, classes[:, None])[:, 0]
    assert difference.abs().max() > 0.1, "the check needs scores that differ"
    assert (e.heatmap.sum(dim=1) - difference).abs().max() < 1e-3
    assert torch.equal(e.targets, classes) and e.layer == "bert.embeddings"


def test_token_integrated_gradients_equal_captum(model, ids):
    pad = torch.full_like(ids, 3)
    classes = logits(model, ids).argmax(1)
    e = ds.explain(model, ids, method="integrated_gradients", layer="bert.embeddings", baseline=pad, steps=20)
    expected = captum.LayerIntegratedGradients(captum_forward(model), model.bert.embeddings).attribute(
        ids, baselines=pad, target=classes, n_steps=20
    )
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-6)


@pytest.fixture
def mask() -> torch.Tensor:
    """Padding at the end of the second and third inputs."""
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 8:] = 0
    return mask


def test_token_integrated_gradients_with_an_attention_mask_are_complete(model, ids, mask):
    """The issue's call: token ids, the embedding layer, an attention mask among the forward arguments."""
    pad = torch.zeros_like(ids)
    e = ds.explain(
        model,
        ids,
        method="integrated_gradients",
        layer="bert.embeddings",
        forward_kwargs={"attention_mask": mask},
        baseline=pad,
        batch_size=16,  # several steps per forward pass: the mask is repeated with them
    )
    assert e.heatmap.shape == (3, 10)
    classes = logits(model, ids, attention_mask=mask).argmax(1)
    assert torch.equal(e.targets, classes)
    difference = (logits(model, ids, attention_mask=mask) - logits(model, pad, attention_mask=mask)).gather(
        1, classes[:, None]
    )[:, 0]
    assert difference.abs().max() > 0.1
    assert (e.heatmap.sum(dim=1) - difference).abs().max() < 1e-3
    unmasked = ds.explain(model, ids, method="integrated_gradients", layer="bert.embeddings", baseline=pad)
    assert not torch.allclose(e.heatmap[1], unmasked.heatmap[1], atol=1e-3), "the mask must reach the model"


def test_token_integrated_gradients_with_a_mask_equal_captum(model, ids, mask):
    pad = torch.zeros_like(ids)
    classes = logits(model, ids, attention_mask=mask).argmax(1)
    e = ds.explain(
        model,
        ids,
        method="integrated_gradients",
        layer="bert.embeddings",
        forward_args=(mask,),
        baseline=pad,
        steps=20,
        batch_size=16,
    )
    expected = captum.LayerIntegratedGradients(captum_forward(model), model.bert.embeddings).attribute(
        ids, baselines=pad, target=classes, additional_forward_args=(mask,), n_steps=20, internal_batch_size=16
    )
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-6)


def test_default_baseline_is_token_id_zero_as_in_captum(model, ids):
    ours = ds.explain(model, ids, method="integrated_gradients", layer="bert.embeddings", steps=8)
    pad = ds.explain(model, ids, method="integrated_gradients", layer="bert.embeddings", steps=8, baseline=0)
    torch.testing.assert_close(ours.attribution, pad.attribution)
    expected = captum.LayerIntegratedGradients(captum_forward(model), model.bert.embeddings).attribute(
        ids, target=ours.targets, n_steps=8
    )
    torch.testing.assert_close(ours.attribution, expected, rtol=1e-4, atol=1e-6)


def test_a_float_baseline_lives_at_the_layer(model, ids):
    """A float tensor given with token ids is the layer's baseline output: zeros are a zero word embedding.

    (At ``bert.embeddings`` a zero output is no good baseline: the next LayerNorm is discontinuous at zero, so no
    path integral reaches it; at the word embeddings, position embeddings keep the sum away from zero.)
    """
    layer = "bert.embeddings.word_embeddings"
    e = ds.explain(model, ids, method="integrated_gradients", layer=layer, baseline=torch.zeros(1, 10, 32))

    def zero_embedding(_module, _inputs, output):
        return torch.zeros_like(output)

    handle = model.bert.embeddings.word_embeddings.register_forward_hook(zero_embedding)
    try:
        at_zero = logits(model, ids)
    finally:
        handle.remove()
    classes = e.targets[:, None]
    difference = (logits(model, ids).gather(1, classes) - at_zero.gather(1, classes))[:, 0]
    assert difference.abs().max() > 0.1
    assert (e.heatmap.sum(dim=1) - difference).abs().max() < 1e-3


@pytest.mark.parametrize(("method", "multiply"), [("saliency", False), ("input_x_gradient", True)])
def test_token_gradients_equal_captum(model, ids, method, multiply):
    classes = logits(model, ids).argmax(1)
    e = ds.explain(model, ids, method=method, layer="bert.embeddings")
    peer = captum.LayerGradientXActivation(captum_forward(model), model.bert.embeddings, multiply_by_inputs=multiply)
    expected = peer.attribute(ids, target=classes)
    torch.testing.assert_close(e.attribution, expected, rtol=1e-4, atol=1e-6)
    assert e.heatmap.shape == (3, 10)


def test_one_word_embedding_table_as_the_layer(model, ids):
    """Any layer on the path works; at the word embeddings alone, completeness holds as well."""
    pad = torch.zeros_like(ids)
    e = ds.explain(model, ids, method="integrated_gradients", layer="bert.embeddings.word_embeddings", baseline=pad)
    classes = e.targets[:, None]
    difference = (logits(model, ids).gather(1, classes) - logits(model, pad).gather(1, classes))[:, 0]
    assert (e.heatmap.sum(dim=1) - difference).abs().max() < 1e-3


# A small CNN: layer outputs with channels first ------------------------------------------------------------------


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(2, 3, 16, 16)


@pytest.mark.parametrize("layer", ["conv2", "pool", "relu3"])
def test_layer_gradients_on_a_cnn_equal_captum(images, layer):
    model = tiny_cnn()
    module = dict(model.named_modules())[layer]
    classes = model(images).argmax(1)
    saliency = ds.explain(model, images, method="saliency", layer=layer)
    expected = captum.LayerGradientXActivation(model, module, multiply_by_inputs=False).attribute(images, classes)
    torch.testing.assert_close(saliency.attribution, expected, rtol=1e-4, atol=1e-6)
    ixg = ds.explain(model, images, method="input_x_gradient", layer=layer)
    expected = captum.LayerGradientXActivation(model, module).attribute(images, classes)
    torch.testing.assert_close(ixg.attribution, expected, rtol=1e-4, atol=1e-6)
    # the heatmap: the channel sum at the layer's resolution, upsampled to the input's like the CAM family's
    coarse = ixg.attribution.sum(dim=1, keepdim=True)
    upsampled = F.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(ixg.heatmap, upsampled)


@pytest.mark.parametrize("baseline", [0.0, "tensor"])
def test_layer_integrated_gradients_on_a_cnn_equal_captum(images, baseline):
    model = tiny_cnn()
    classes = model(images).argmax(1)
    if baseline == "tensor":
        baseline = torch.rand(1, 3, 16, 16)
    e = ds.explain(
        model, images, method="integrated_gradients", layer="pool", steps=16, batch_size=8, baseline=baseline
    )
    expected = captum.LayerIntegratedGradients(model, model.pool).attribute(
        images,
        baselines=torch.zeros_like(images) if isinstance(baseline, float) else baseline.expand_as(images),
        target=classes,
        n_steps=16,
        internal_batch_size=8,
    )
    torch.testing.assert_close(e.attribution, expected, rtol=1e-3, atol=1e-5)


def test_smoothgrad_at_a_layer_without_noise_is_its_base(images):
    model = tiny_cnn()
    smooth = ds.explain(model, images, method="smoothgrad", layer="conv3", samples=2, noise=0.0, seed=0)
    plain = ds.explain(model, images, method="saliency", layer="conv3")
    torch.testing.assert_close(smooth.attribution, plain.attribution)
    torch.testing.assert_close(smooth.heatmap, plain.heatmap)


def test_token_layer_of_an_image_model_gives_a_map_per_token():
    """A layer whose output has other axes than the inputs (tokens of images) keeps its own resolution."""
    torch.manual_seed(0)

    class Patches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, stride=4)
            self.tokens = nn.Identity()
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.tokens(self.embed(x).flatten(2).transpose(1, 2))  # [N, 16, 8]
            return self.head(tokens.mean(dim=1))

    model = Patches().eval()
    e = ds.explain(model, torch.randn(2, 3, 16, 16), method="input_x_gradient", layer="tokens")
    assert e.attribution.shape == (2, 16, 8) and e.heatmap.shape == (2, 16)
    torch.testing.assert_close(e.heatmap, e.attribution.sum(dim=2))


def test_a_layer_that_returns_a_tuple_keeps_the_rest_of_it():
    """An LSTM returns (output, (h, c)); attributing to it replaces the output and keeps the state."""
    torch.manual_seed(0)

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(20, 6)
            self.lstm = nn.LSTM(6, 5, batch_first=True)
            self.head = nn.Linear(10, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            output, (state, _) = self.lstm(self.embed(ids))
            return self.head(torch.cat([output.mean(dim=1), state[0]], dim=1))

    model = Recurrent().eval()
    ids = torch.randint(0, 20, (2, 7), generator=torch.Generator().manual_seed(0))
    e = ds.explain(model, ids, method="input_x_gradient", layer="lstm")
    output, (state, _) = model.lstm(model.embed(ids))
    output = output.detach().requires_grad_(True)  # the state is held fixed: only the output is attributed to
    scores = model.head(torch.cat([output.mean(dim=1), state[0].detach()], dim=1)).gather(1, e.targets[:, None])
    (grad,) = torch.autograd.grad(scores.sum(), output)
    torch.testing.assert_close(e.attribution, output.detach() * grad)
    assert e.heatmap.shape == (2, 7)


def test_an_explanation_of_token_ids_displays(model, ids):
    e = ds.explain(model, ids[:2], method="saliency", layer="bert.embeddings")
    assert e._repr_png_().startswith(b"\x89PNG")


# Bad input ---------------------------------------------------------------------------------------------------------


def test_token_ids_without_a_layer_name_the_embedding_layer(model, ids):
    for method in ["saliency", "integrated_gradients"]:
        with pytest.raises(ds.BadInputError, match=r"floating-point.*layer=.*'bert\.embeddings'"):
            ds.explain(model, ids, method=method)
    with pytest.raises(ds.BadInputError, match=r"use one of saliency.*layer=.*'bert\.embeddings'"):
        ds.explain(model, ids, method="occlusion")
    assert hooks_left(model) == 0


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        (0.5, "does not fit integer inputs"),
        ("mean", "does not fit integer inputs"),
        (torch.zeros(2, 10, dtype=torch.long), "do not broadcast to the inputs"),
        (torch.zeros(10, 31), "does not broadcast to it"),
    ],
    ids=["fraction", "mean", "ids of another shape", "layer baseline of another shape"],
)
def test_bad_token_baselines(model, ids, baseline, message):
    with pytest.raises(ds.BadInputError, match=message):
        ds.explain(model, ids, method="integrated_gradients", layer="bert.embeddings", baseline=baseline)
    assert hooks_left(model) == 0


def test_a_layer_with_several_inputs_is_refused(images):
    """The layer's output is one tensor: with several inputs the others go in forward_args instead."""

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([self.conv(x).mean(dim=(2, 3)), meta], dim=1))

    model = TwoInputs().eval()
    with pytest.raises(ds.BadInputError, match="several inputs, pass the others as forward_args"):
        ds.explain(model, (images, torch.randn(2, 2)), method="saliency", layer="conv")
    at_layer = ds.explain(model, images, method="saliency", layer="conv", forward_args=(torch.randn(2, 2),))
    assert at_layer.attribution.shape == (2, 4, 16, 16)
    assert hooks_left(model) == 0


def test_smoothgrad_refuses_token_ids(model, ids):
    with pytest.raises(ds.BadInputError, match=r"noise.*integers"):
        ds.explain(model, ids, method="smoothgrad", layer="bert.embeddings")


def test_a_layer_that_runs_twice_is_refused(images):
    torch.manual_seed(0)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))

    model = Twice().eval()
    for method in LAYERED:
        with pytest.raises(ds.BadInputError, match="runs more than once"):
            explain_fast(model, images, method, layer="conv")
    assert hooks_left(model) == 0


def test_a_layer_after_the_target_is_refused(images):
    with pytest.raises(ds.TargetError, match="does not depend on layer"):
        ds.explain(tiny_cnn(), images, method="saliency", layer="conv3", target=ds.Unit("conv2", 0))


# The coloured-token view --------------------------------------------------------------------------------------------


def _colours(html: str) -> list[tuple[int, int, int]]:
    return [tuple(map(int, c)) for c in re.findall(r"background-color: rgb\((\d+), (\d+), (\d+)\)", html)]


def test_text_colours_follow_the_attributions(model, ids):
    e = ds.explain(model, ids[:1], method="integrated_gradients", layer="bert.embeddings", steps=8)
    e.heatmap[0] = torch.tensor([0.5, -2.0, 0.0, 1.0, -1.0, 2.0, 0.25, 0.0, -0.5, 1.5])
    tokens = ["[CLS]", "<b>", "a&b", "x", "y", "z", "'q'", "w", "v", "[SEP]"]
    view = e.text(tokens)
    colours = _colours(view.html())
    assert len(colours) == 10
    assert colours[5] == (255, 0, 0), "the highest attribution is the most saturated red"
    assert colours[1] == (0, 0, 255), "the lowest is the most saturated blue"
    assert colours[2] == colours[7] == (255, 255, 255), "zero is white"
    assert colours[3] == (255, 128, 128) and colours[4] == (128, 128, 255), "symmetric around zero"
    assert "&lt;b&gt;" in view.html() and "<b>" not in view.html() and "a&amp;b" in view.html()
    assert view._repr_html_() == view.html()


def test_each_input_has_its_own_scale(model, ids):
    e = ds.explain(model, ids[:2], method="saliency", layer="bert.embeddings")
    e.heatmap[:] = torch.tensor([[1.0] + [0.0] * 9, [100.0] + [50.0] * 9])
    colours = _colours(e.text([[str(i) for i in range(10)]] * 2).html())
    assert colours[0] == colours[10] == (255, 0, 0)
    assert colours[11] == (255, 128, 128)


def test_text_refuses_tokens_that_do_not_fit(model, ids):
    e = ds.explain(model, ids[:2], method="saliency", layer="bert.embeddings")
    with pytest.raises(ds.BadInputError, match=r"input 1 has 10 attributions .* but 9 tokens"):
        e.text([["t"] * 10, ["t"] * 9])
    with pytest.raises(ds.BadInputError, match=r"batch of one.*2 inputs"):
        e.text(["t"] * 10)
    with pytest.raises(ds.BadInputError, match="a str"):
        e.text("one two three")
    image = ds.explain(tiny_cnn(), torch.randn(1, 3, 16, 16), method="saliency")
    with pytest.raises(ds.BadInputError, match="one value per token"):
        image.text(["t"] * 16)


def test_text_view_saves_html_and_pictures(model, ids, tmp_path):
    e = ds.explain(model, ids[:2], method="input_x_gradient", layer="bert.embeddings")
    view = e.text([[f"tok{i}" for i in row.tolist()] for row in ids[:2]])
    view.save(str(tmp_path / "tokens.html"))
    page = (tmp_path / "tokens.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and view.html() in page
    view.save(str(tmp_path / "tokens.png"))
    assert (tmp_path / "tokens.png").read_bytes().startswith(b"\x89PNG")
    assert view._repr_png_().startswith(b"\x89PNG")
