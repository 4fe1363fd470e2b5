"""Layer lookup by name, and every hook or model change deepscope makes, in one place.

Every change to a model goes through :class:`Hooks` or :func:`preserved` and is undone in ``finally``, so an
error raised half-way through an explanation never leaves a hook, a changed mode or a changed flag behind.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import BadInputError, DeepscopeError, LayerNotFoundError, close_names


def named_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` in ``model.named_modules()``; a wrong name lists the closest ones."""
    if keras_backend(model) is not None:  # a Keras model that the caller did not turn into a KerasModel
        torch_model(model)  # another backend: says what works
        raise BadInputError(
            f"{type(model).__name__} is a Keras model; ds.explain, ds.embed, ds.maximize and run.graph take it as it "
            "is, other functions take deepscope.probe.KerasModel(model), with inputs channels first [N, C, H, W]."
        )
    modules = dict(model.named_modules())
    if not isinstance(name, str) or name not in modules or name == "":
        names = [n for n in modules if n]
        near = close_names(str(name), names)
        hint = f" Closest names: {', '.join(near)}." if near else f" Some names: {', '.join(names[:8])}."
        where = (
            "the Keras layers' names (layer.name; a nested model's layers as 'model.layer')"
            if isinstance(model, KerasModel)
            else "those of model.named_modules()"
        )
        raise LayerNotFoundError(f"no layer {name!r} in {type(model).__name__}.{hint} Layer names are {where}.")
    return modules[name]


# Keras 3 models ------------------------------------------------------------------------------------------------------


def keras_backend(model: object) -> str | None:
    """The backend a Keras model computes with (``"torch"``, ``"tensorflow"``, ``"jax"``), or None for other objects.

    Asked only of Keras packages already imported: a model of one cannot exist without it, so deepscope never
    imports Keras or TensorFlow itself.
    """
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, getattr(keras, "Layer", ())):
        return str(keras.backend.backend())
    tensorflow = sys.modules.get("tensorflow")  # tf.keras (Keras 2) models and other TensorFlow modules
    if tensorflow is not None and isinstance(model, getattr(tensorflow, "Module", ())):
        return "tensorflow"
    return None


def torch_model(model: object) -> nn.Module:
    """``model`` as the ``nn.Module`` deepscope probes: itself, or a Keras 3 torch-backend model as a
    :class:`KerasModel`. Anything else is a :class:`BadInputError` that says what works."""
    backend = keras_backend(model)
    if backend == "torch":
        return KerasModel(model)
    if backend is not None:
        raise BadInputError(
            f"{type(model).__name__} is a Keras model on the {backend} backend; deepscope explains PyTorch models: "
            "any torch.nn.Module, or a Keras 3 model on the torch backend. Set KERAS_BACKEND=torch before keras is "
            "first imported and load the model again (keras.saving.load_model('model.keras'): saved Keras models "
            "do not depend on the backend)."
        )
    if not isinstance(model, nn.Module):
        raise BadInputError(
            f"model must be a torch.nn.Module (or a Keras 3 model on the torch backend), not {type(model).__name__}."
        )
    return model


class FunctionModel(nn.Module):
    """A model given as a plain function of the input batch, as a module without parameters or submodules.

    It lives for one ``explain`` call, so methods that only run the model (gradients, perturbations) see the
    module they expect; there is nothing inside it to hook, and its device is the inputs'.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        super().__init__()
        self.function = function

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        return self.function(*inputs, **kwargs)


def is_function_model(model: object) -> bool:
    """Whether ``model`` is a callable that is neither an ``nn.Module`` nor a Keras model."""
    return callable(model) and not isinstance(model, nn.Module) and keras_backend(model) is None


def from_model_layout(model: object, inputs: object) -> object:
    """Inputs given in the layout of ``model`` (as the user passed it), channels first (deepscope's layout): a
    channels-last Keras model's ``[N, H, W, C]`` images become ``[N, C, H, W]``; everything else, including the
    inputs of a :class:`KerasModel` (channels first already), is returned as it is."""
    if keras_backend(model) == "torch" and _channels_last(model) and isinstance(inputs, Tensor) and inputs.ndim >= 3:
        return inputs.movedim(-1, 1)
    return inputs


def _channels_last(model: object) -> bool:
    """Whether a Keras model's images are ``[N, H, W, C]``: its layers' ``data_format``, else Keras' default."""
    formats = {str(layer.data_format) for layer in _walk(model) if getattr(layer, "data_format", None) is not None}
    if len(formats) > 1:
        raise BadInputError(
            f"{type(model).__name__} mixes data formats {sorted(formats)}; deepscope needs one layout per model."
        )
    return (formats.pop() if formats else sys.modules["keras"].config.image_data_format()) == "channels_last"


def _keras_layers(model: object) -> list[Any]:
    keras = sys.modules["keras"]
    return [layer for layer in getattr(model, "layers", ()) if not isinstance(layer, keras.layers.InputLayer)]


class KerasLayer(nn.Module):
    """Stands for one Keras layer inside a :class:`KerasModel`: called with the layer's output, channels first,
    each time the layer runs, so hooks on it see (and may replace) that output like a torch layer's.

    Its parameters are the Keras layer's own torch tensors (``kernel``, ``bias``, ...), not copies.
    """

    keras_layer: Any

    def __init__(self, layer: object, channels_last: bool) -> None:
        super().__init__()
        # kept out of the module tree: its torch names (_torch_params, ...) are Keras' internals, not layers
        object.__setattr__(self, "keras_layer", layer)
        self.channels_last = channels_last
        sublayers = _keras_layers(layer)
        for sublayer in sublayers:
            self.add_module(_module_name(sublayer), KerasLayer(sublayer, channels_last))
        if not sublayers:
            for weight in getattr(layer, "weights", ()):
                if weight.name not in self._parameters and isinstance(weight.value, nn.Parameter):
                    self.register_parameter(weight.name, weight.value)

    def forward(self, output: object) -> object:
        return output

    def relay(self, _layer: nn.Module, _inputs: object, output: object) -> object:
        """The Keras layer's forward hook: its output goes through this module, channels first, and back."""
        if self.channels_last and isinstance(output, Tensor) and output.ndim >= 3:
            return self(output.movedim(-1, 1)).movedim(1, -1)
        return self(output)


def layer_type(module: nn.Module) -> str:
    """What kind of layer ``module`` is: its class name, or the Keras layer's for a :class:`KerasLayer`."""
    return type(module.keras_layer).__name__ if isinstance(module, KerasLayer) else type(module).__name__


def _module_name(layer: object) -> str:
    name = str(getattr(layer, "name", ""))
    if not name or "." in name:
        raise BadInputError(
            f"Keras layer {name!r} cannot be named in deepscope (a name must be non-empty and have no '.'); "
            "give the layer another name= when building the model."
        )
    return name


class KerasModel(nn.Module):
    """A Keras 3 model on the torch backend, as an ``nn.Module`` whose named modules are the Keras layers.

    ``named_modules()`` of a Keras model shows only Keras' parameter containers (``_torch_params``); here every
    layer of ``model.layers`` is a :class:`KerasLayer` under its Keras name (``"conv2d"``, ``"dense_1"``; a nested
    model's layers as ``"inner.conv2d"``), so every deepscope function finds, hooks and explains it by that name.

    Layout: deepscope works channels first. The module takes ``[N, C, H, W]`` and hands the Keras model its own
    layout (``[N, H, W, C]`` for ``channels_last``, Keras' default); layer outputs are seen as ``[N, C, ...]``.
    Entry points given a Keras model take inputs in the model's own layout (:func:`from_model_layout`); given a
    ``KerasModel``, channels first like for any module (so ``KerasModel(model)`` serves every deepscope function).
    Keras layers run with ``training=False`` unless told otherwise, whatever this module's ``training`` flag.
    """

    keras_model: Any

    def __init__(self, model: object) -> None:
        super().__init__()
        object.__setattr__(self, "keras_model", model)
        self.channels_last = _channels_last(model)
        for layer in _keras_layers(model):
            self.add_module(_module_name(layer), KerasLayer(layer, self.channels_last))

    def forward(self, *inputs: Tensor) -> object:
        """The Keras model's output for ``inputs`` channels first (several for a model with several inputs)."""
        moved = [x.movedim(1, -1) if self.channels_last and x.ndim >= 3 else x for x in inputs]
        keras_inputs = moved[0] if len(moved) == 1 else moved
        with Hooks() as hooks:
            for module in self.modules():
                if isinstance(module, KerasLayer):
                    hooks.add(module.keras_layer.register_forward_hook(module.relay))
            try:
                return self.keras_model(keras_inputs)
            except (RuntimeError, ValueError, TypeError, IndexError) as error:
                if isinstance(error, DeepscopeError):
                    raise
                raise BadInputError(self._failure(keras_inputs, error)) from None

    def _failure(self, keras_inputs: Tensor | list[Tensor], error: Exception) -> str:
        """What Keras said, without its "Exception encountered when calling ..." preamble, and what it expects."""
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # Keras makes the message bold for terminals
        lines = [line.strip() for line in plain.splitlines() if line.strip()]
        said = next((line for line in lines if not line.startswith("Exception encountered")), type(error).__name__)
        try:
            expected = f" It expects {', '.join(str(tuple(t.shape)) for t in self.keras_model.inputs)}."
        except AttributeError:  # a subclassed model: Keras knows no input shape
            expected = ""
        layout = "N, H, W, C" if self.channels_last else "N, C, H, W"
        given = keras_inputs if isinstance(keras_inputs, list) else [keras_inputs]
        shapes = ", ".join(str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__ for x in given)
        return (
            f"the Keras model {self.keras_model.name!r} could not run on inputs of shape {shapes} "
            f"(its layout: {layout}): {said.rstrip('.')}.{expected}"
        )


def _walk(model: object) -> Iterator[Any]:
    for layer in _keras_layers(model):
        yield layer
        yield from _walk(layer)


class Hooks(contextlib.AbstractContextManager["Hooks"]):
    """The hook handles of one operation; all removed on exit, whether or not an error was raised."""

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def add(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        self._handles.append(handle)

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __exit__(self, *exc: object) -> None:
        self.remove()


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval mode and every parameter's ``requires_grad`` flag on exit."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)


@dataclass
class Capture:
    """The outputs one layer produced during a forward pass (a module may be called more than once)."""

    name: str
    outputs: list[Tensor] = field(default_factory=list)
    call: int | None = None

    def output(self) -> Tensor:
        """The output of the chosen call (the last one unless ``call`` says otherwise)."""
        if not self.outputs:
            raise BadInputError(
                f"layer {self.name!r} was not called in the forward pass, so it has no output to explain; "
                "choose a layer that the model's forward() uses."
            )
        calls = len(self.outputs)
        if self.call is None:
            if calls > 1:
                warnings.warn(
                    f"layer {self.name!r} was called {calls} times in one forward pass; explaining its last call. "
                    f"Pass call=0..{calls - 1} to choose another.",
                    stacklevel=4,
                )
            return self.outputs[-1]
        if not -calls <= self.call < calls:
            raise BadInputError(f"call={self.call} but layer {self.name!r} was called {calls} time(s).")
        return self.outputs[self.call]


def _first_tensor(output: object) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise BadInputError(
        f"the layer's output is a {type(output).__name__}, not a tensor; choose a layer that returns one."
    )


def capture(hooks: Hooks, model: nn.Module, name: str, call: int | None = None) -> Capture:
    """Record what layer ``name`` outputs in later forward passes, until ``hooks`` is closed."""
    record = Capture(name, call=call)

    def hook(_module: nn.Module, _inputs: object, output: object) -> object:
        tensor = _first_tensor(output)
        record.outputs.append(tensor)
        # The model goes on with a copy, so an in-place op after the layer (ReLU(inplace=True)) cannot change
        # the recorded output, and autograd still sees the recorded tensor on the path to the output.
        copy = tensor.clone()
        return copy if isinstance(output, Tensor) else (copy, *output[1:])  # type: ignore[index]

    hooks.add(named_layer(model, name).register_forward_hook(hook))
    return record


def replace_output(hooks: Hooks, model: nn.Module, name: str, fn: Callable[[Tensor], Tensor]) -> None:
    """Make layer ``name`` return ``fn(output)`` instead of its output, until ``hooks`` is closed. For a layer that
    returns a tuple (an LSTM's ``(output, state)``), its first tensor is replaced and the rest kept."""

    def hook(_module: nn.Module, _inputs: object, output: object) -> object:
        replaced = fn(_first_tensor(output))
        return replaced if isinstance(output, Tensor) else (replaced, *output[1:])  # type: ignore[index]

    hooks.add(named_layer(model, name).register_forward_hook(hook))


def model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype | None:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return None


OutputSpec = None | str | int | Callable[[Any], Tensor]
"""How the score tensor is read from a model's output: found (None), a key, an index, or a callable."""


Inputs = Tensor | tuple[Tensor, ...]
"""What a model is called with: one batch, or a tuple of batches sharing dim 0 (a model with several inputs)."""


def run(
    model: nn.Module,
    inputs: Inputs,
    output: OutputSpec = None,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """``model(*inputs, *args, **kwargs)``'s score tensor (:func:`score_tensor`), with a failure of the model on
    these inputs reported as bad input. ``inputs`` is one batch or a tuple of them (one per model input)."""
    batches = inputs if isinstance(inputs, tuple) else (inputs,)
    try:
        raw = model(*batches, *args, **(kwargs or {}))
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        if isinstance(error, BadInputError):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        shapes = " and ".join(str(tuple(x.shape)) for x in batches)
        dtypes = " and ".join(str(x.dtype) for x in batches)
        extra = " with the extra forward arguments given" if args or kwargs else ""
        raise BadInputError(
            f"{type(model).__name__} could not run on inputs of shape {shapes} and dtype {dtypes}{extra}: "
            f"{message}. Pass a batch shaped as the model expects (N first)."
        ) from None
    return score_tensor(raw, output)


def batch_rows(value: Any, rows: Tensor, count: int) -> Any:
    """``value`` for a batch whose row ``r`` stands for input ``rows[r]`` of ``count``: a tensor with ``count`` rows
    (a per-input argument) gives those rows; anything else (numbers, tensors without the batch axis) is returned
    as it is, as is a tensor when ``rows`` is the batch itself (``0..count-1``). Captum's rule for
    ``additional_forward_args``, restricted to the tensors that carry the batch axis."""
    if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != count:
        return value
    if rows.shape[0] == count and bool((rows == torch.arange(count, device=rows.device)).all()):
        return value
    return value[rows.to(value.device)]


def score_tensor(raw: object, output: OutputSpec = None) -> Tensor:
    """The tensor of scores in a model's output ``raw``, the one place deepscope reads a model's output.

    By default: the output itself when it is a tensor; for a mapping (a dict, a Hugging Face ``ModelOutput``,
    which is an ordered dict) its ``"logits"``, else its first tensor value; for a tuple or list its first
    tensor. ``output`` chooses instead: a key of a mapping, an index of a tuple or list, or a callable from
    the output to the tensor.
    """
    if output is None:
        return _found_tensor(raw)
    if callable(output):
        chosen = output(raw)
        if not isinstance(chosen, Tensor):
            raise BadInputError(f"the output= callable returned a {type(chosen).__name__}, not a tensor.")
        return chosen
    if isinstance(output, str):
        if not isinstance(raw, Mapping):
            raise BadInputError(
                f"output={output!r} is a key, but the model returns a {type(raw).__name__}, not a dict; "
                "pass an index for a tuple or list, or a callable output -> tensor."
            )
        if output not in raw:
            raise BadInputError(f"output={output!r} is not a key of the model's output; its keys: {list(raw)}.")
        return _checked(raw[output], f"output[{output!r}]")
    if isinstance(output, int) and not isinstance(output, bool):
        if not isinstance(raw, (tuple, list)):
            raise BadInputError(
                f"output={output} is an index, but the model returns a {type(raw).__name__}, not a tuple or list; "
                "pass a key for a dict, or a callable output -> tensor."
            )
        if not -len(raw) <= output < len(raw):
            raise BadInputError(f"output={output} is out of range: the model's output has {len(raw)} items.")
        return _checked(raw[output], f"output[{output}]")
    raise BadInputError(
        f"output={output!r} is not understood; pass a key (str), an index (int) or a callable output -> tensor."
    )


def _found_tensor(raw: object) -> Tensor:
    if isinstance(raw, Tensor):
        return raw
    if isinstance(raw, Mapping):
        if isinstance(raw.get("logits"), Tensor):
            return raw["logits"]
        values: Iterable[object] = raw.values()
    elif isinstance(raw, (tuple, list)):
        values = raw
    else:
        values = ()
    for value in values:
        if isinstance(value, Tensor):
            return value
    what = f"keys {list(raw)}" if isinstance(raw, Mapping) else type(raw).__name__
    raise BadInputError(
        f"the model's output ({what}) holds no tensor to explain; pass output=<key, index or callable "
        "output -> tensor> to say where its scores are."
    )


def _checked(value: object, where: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise BadInputError(f"{where} is a {type(value).__name__}, not a tensor; choose the model's score tensor.")
    return value


# Modules that hand on what they are given (in eval mode): never a layer of their own to explain by default (timm's
# placeholder q_norm/k_norm see attention heads, attn_drop the attention weights).
_PASS_THROUGH = (nn.Identity, nn.modules.dropout._DropoutNd)
# How many leading tokens a token sequence (N, tokens, C) may carry before its grid: none (Swin), a class token
# (ViT), a class and a distillation token (DeiT), a class token and 4 registers (timm's *_reg4 ViTs, DINOv2).
LEADING_TOKENS = (0, 1, 2, 5)


@dataclass(frozen=True)
class MapLayout:
    """How a layer's output becomes a feature map ``(N, C, *grid)``: as it is (``"channels_first"``), permuted
    (``"channels_last"``, ``(N, *grid, C)``: Swin, ConvNeXt blocks), or ``"tokens"`` ``(N, tokens, C)`` laid on
    ``grid`` after ``skip`` leading tokens (ViT's class token, DeiT's distillation token)."""

    kind: str
    grid: tuple[int, ...]
    skip: int = 0

    def to_map(self, output: Tensor) -> Tensor:
        if self.kind == "channels_first":
            return output
        if self.kind == "channels_last":
            return output.movedim(-1, 1)
        n, _, channels = output.shape
        return output[:, self.skip :].reshape(n, *self.grid, channels).movedim(-1, 1)

    def __str__(self) -> str:
        grid = "x".join(map(str, self.grid))
        if self.kind == "tokens":
            leading = {0: "no leading token", 1: "1 class token dropped"}.get(
                self.skip, f"{self.skip} leading tokens dropped"
            )
            return f"tokens on a {grid} grid ({leading})"
        return f"{self.kind.replace('_', ' ')} on a {grid} grid"


def _plausible(grid: tuple[int, ...], spatial: tuple[int, ...]) -> bool:
    """Whether ``grid`` can be a downsampled view of inputs of size ``spatial``: no larger, and the same stride along
    every axis within a factor of 4 (an attention's (heads, tokens, head_dim) is not)."""
    if len(grid) != len(spatial) or any(not 1 <= g <= s for g, s in zip(grid, spatial, strict=True)):
        return False
    strides = [s / g for g, s in zip(grid, spatial, strict=True)]
    return max(strides) <= 4 * min(strides)


def _normalises_last_axis(module: nn.Module, shape: tuple[int, ...]) -> bool:
    """A layer normalisation over the last axis: that axis holds the channels (a channels-last map, or tokens)."""
    norms = tuple(n for n in (nn.LayerNorm, getattr(nn, "RMSNorm", None)) if n is not None)
    normalized = getattr(module, "normalized_shape", None)
    return isinstance(module, norms) and normalized is not None and tuple(normalized) == (shape[-1],)


def token_layouts(tokens: int, spatial: tuple[int, ...]) -> list[MapLayout]:
    """The readings of ``tokens`` tokens as a grid with the inputs' aspect ratio after :data:`LEADING_TOKENS`
    leading tokens, the closest in aspect; more than one reading at the same distance is ambiguous."""
    if len(spatial) != 2:
        return []
    aspect = math.log(spatial[0] / spatial[1])
    scored: list[tuple[float, MapLayout]] = []
    for skip in LEADING_TOKENS:
        count = tokens - skip
        grids = [(rows, count // rows) for rows in range(1, count + 1) if count % rows == 0]
        for rows, cols in grids:
            distance = abs(math.log(rows / cols) - aspect)
            if distance <= math.log(1.5):
                scored.append((distance, MapLayout("tokens", (rows, cols), skip)))
    scored.sort(key=lambda item: item[0])
    return [layout for distance, layout in scored if math.isclose(distance, scored[0][0])]


def map_layout(module: nn.Module, shape: tuple[int, ...], spatial: tuple[int, ...]) -> MapLayout | None:
    """How an output of ``shape`` from ``module`` reads as a feature map of inputs with spatial size ``spatial``;
    None where no reading is unambiguous.

    Same rank as the inputs: channels first (a CNN's maps), unless a layer normalisation over the last axis says
    that axis holds the channels, or only the channels-last reading has a grid the inputs can have (Swin's
    ``(N, 7, 7, 768)``). One axis fewer, for images: tokens ``(N, tokens, C)`` on a grid of the inputs' aspect
    ratio after 0, 1 (class), 2 (class and distillation) or 5 (class and 4 registers) leading tokens.
    """
    if len(shape) == len(spatial) + 2:
        first = MapLayout("channels_first", tuple(shape[2:]))
        last = MapLayout("channels_last", tuple(shape[1:-1]))
        if _normalises_last_axis(module, shape) and _plausible(last.grid, spatial):
            return last
        if _plausible(first.grid, spatial):
            return first
        return last if _plausible(last.grid, spatial) else None
    if len(shape) == 3 and len(spatial) == 2:
        readings = token_layouts(shape[1], spatial)
        return readings[0] if len(readings) == 1 else None
    return None


def default_cam_layer(
    model: nn.Module,
    inputs: Inputs,
    output: OutputSpec = None,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> str:
    """The layer the CAM family explains by default: the last feature map from which the gradient of the top
    score reaches the output, spread over its grid.

    Found by one forward and backward pass of the first input. Candidates, in the order the forward pass finishes
    them: outputs with more than one position read as feature maps (:func:`map_layout`); token sequences and
    channels-last maps only where a layer normalisation over the last axis produces them (the representations
    between blocks, not an attention's projections); pass-through modules (Identity, Dropout) are skipped. On
    torchvision's ResNets that is ``layer4``, on VGG the pooled ``features``. The last candidate whose gradient
    is non-zero at more than one position along each axis of its grid wins: in a class-token ViT the final norm
    and the last block's MLP only reach the head through the class token, so the choice is the last block's
    first norm (torchvision ``encoder.layers[-1].ln_1``, timm ``blocks[-1].norm1``, Hugging Face
    ``layers[-1].layernorm_before``), pytorch-grad-cam's documented choice; Swin gets its final norm (channels
    last, permuted), ConvNeXt its last stage. Where no gradient reaches (a zero or dead head) the last candidate.
    ``args``/``kwargs`` are the model's extra forward arguments for that first input.
    """
    modules = dict(model.named_modules())
    batches = inputs if isinstance(inputs, tuple) else (inputs,)
    # Several inputs: the grid is that of the first one with spatial axes (where a layer method's map goes).
    spatial = next((tuple(b.shape[2:]) for b in batches if b.ndim >= 3), tuple(batches[0].shape[2:]))
    last_call: dict[str, tuple[int, Tensor]] = {}
    calls = 0
    firsts = tuple(b[:1].detach().clone().requires_grad_(b.is_floating_point()) for b in batches)
    x: Inputs = firsts if isinstance(inputs, tuple) else firsts[0]
    with Hooks() as hooks, torch.enable_grad():
        for name, module in modules.items():
            if not name or isinstance(module, _PASS_THROUGH):
                continue

            def hook(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
                nonlocal calls
                tensor = out if isinstance(out, Tensor) else _first_tensor_or_none(out)
                if tensor is not None:
                    last_call[name] = (calls, tensor)
                calls += 1

            hooks.add(module.register_forward_hook(hook))
        scores = run(model, x, output, args, kwargs)
    order = sorted(last_call.items(), key=lambda item: item[1][0])
    candidates: list[tuple[str, MapLayout, Tensor]] = []
    for name, (_, tensor) in order:
        shape = tuple(tensor.shape)
        layout = map_layout(modules[name], shape, spatial) if shape and shape[0] == 1 else None
        if layout is None or math.prod(layout.grid) < 2:
            continue
        if layout.kind != "channels_first" and not _normalises_last_axis(modules[name], shape):
            continue  # tokens and channels-last maps where a norm says so: never an attention's projections
        candidates.append((name, layout, tensor))
    if not candidates:
        raise BadInputError(
            f"{type(model).__name__} has no convolutional feature map, channels-last map or token sequence, so "
            "there is no default layer for a CAM method; pass layer=<name> with a spatial output."
        )
    reaching = _reaching(scores, candidates)
    return reaching[-1] if reaching else candidates[-1][0]


def _first_tensor_or_none(output: object) -> Tensor | None:
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


def _reaching(scores: Tensor, candidates: list[tuple[str, MapLayout, Tensor]]) -> list[str]:
    """The candidates whose gradient of the top score is spread over their grid (non-zero at more than one index
    along each axis longer than 1), in order."""
    differentiable = [(name, layout, t) for name, layout, t in candidates if t.requires_grad]
    if not scores.requires_grad or not differentiable:
        return []
    unique = list({id(t): t for _, _, t in differentiable}.values())
    grads = torch.autograd.grad(scores.reshape(-1).max(), unique, allow_unused=True)
    by_tensor = {id(t): g for t, g in zip(unique, grads, strict=True)}
    reaching = []
    for name, layout, tensor in differentiable:
        grad = by_tensor[id(tensor)]
        if grad is None:
            continue
        spread = layout.to_map(grad)[0].abs().sum(dim=0)  # the grid
        per_axis = [spread.movedim(a, 0).reshape(size, -1).sum(dim=1) for a, size in enumerate(spread.shape)]
        if all(len(along) == 1 or int((along > 0).sum()) > 1 for along in per_axis):
            reaching.append(name)
    return reaching


class _Rewrite(torch.overrides.TorchFunctionMode):
    """Calls ``replacements[func]`` instead of ``func`` for the torch functions named there."""

    def __init__(
        self,
        replacements: dict[Callable[..., object], Callable[..., object]],
        otherwise: Callable[..., object] | None = None,
    ) -> None:
        super().__init__()
        self.replacements = replacements
        self.otherwise = otherwise
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        replacement = self.replacements.get(func)
        if replacement is not None:
            result = replacement(*args, **kwargs)
            if result is not NotImplemented:
                self.calls += 1
                return result
        if self.otherwise is not None:
            return self.otherwise(func, args, kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def rewrite(
    replacements: dict[Callable[..., object], Callable[..., object]],
    otherwise: Callable[..., object] | None = None,
) -> Iterator[_Rewrite]:
    """Within the block, torch functions in ``replacements`` are replaced (module or functional calls alike).

    This is how backward rules reach ReLUs that a model calls as ``F.relu`` or ``torch.relu`` rather than through
    ``nn.ReLU`` modules. A replacement may return ``NotImplemented`` to let the original run. The mode's
    ``calls`` counts the replacements made, so a caller can tell when a rule never applied. ``otherwise(func,
    args, kwargs)``, if given, runs every other call (and those a replacement declined) in place of
    ``func(*args, **kwargs)``: LRP uses it to mark the functions it has no rule for.
    """
    mode = _Rewrite(replacements, otherwise)
    with mode:
        yield mode


RELU_FUNCTIONS: tuple[Callable[..., object], ...] = (
    torch.nn.functional.relu,
    torch.nn.functional.relu_,
    torch.relu,
    torch.relu_,
    Tensor.relu,
    Tensor.relu_,
)


def relu_rewrite(replacement: Callable[[Tensor], Tensor]) -> dict[Callable[..., object], Callable[..., object]]:
    """Replacements that send every ReLU call, in-place or not, to ``replacement(x)``."""

    def call(x: Tensor, *_args: object, **_kwargs: object) -> Tensor:
        return replacement(x)

    return dict.fromkeys(RELU_FUNCTIONS, call)


_MODULE_HOOKS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def copy_without_hooks(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` without the forward/backward hooks attached to its modules.

    Hooks belong to whoever registered them (``run.watch``, a profiler, another library): copied along they would
    record the copy's activations into the original's run, or fail because they hold what cannot be copied (an
    open file). The original keeps its hooks.
    """
    import copy

    stashed = []
    for module in model.modules():
        saved = {name: getattr(module, name) for name in _MODULE_HOOKS if hasattr(module, name)}
        stashed.append((module, saved))
        for name, hooks in saved.items():
            setattr(module, name, type(hooks)())
    try:
        return copy.deepcopy(model)
    finally:
        for module, saved in stashed:
            for name, hooks in saved.items():
                setattr(module, name, hooks)
