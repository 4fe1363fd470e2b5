"""The receptive field of a layer's units: which input pixels a unit can see (seed 004's boxes).

Computed from a walk of the model's torch.fx graph. Per spatial axis, unit ``o`` of a tensor sees the input pixels
``[lo + o * jump, hi + o * jump]``. An input pixel has ``lo = hi = 0, jump = 1``; a convolution or pooling window
with kernel ``k``, stride ``s``, dilation ``d`` and padding ``p`` maps ``(lo, hi, jump)`` to
``(lo - p * jump, hi + ((k - 1) * d - p) * jump, s * jump)``; where paths join (a residual addition, a
concatenation) the union of the boxes is taken, so a ResNet's 1x1 shortcut is one path beside the block's
convolutions, never chained after them. On torchvision's resnet50 that gives 91 / 267 / 427 px at
layer2 / layer3 / layer4, where tools that chain every layer in module order say 139 / 811 / 1963.

Where the graph cannot be walked (fx cannot trace the model, or an operation has no rule here) the field is read
from the support of the gradient of one unit with respect to the input, and ``method`` says so.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from .. import probe
from ..errors import BadInputError


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of the units of one layer, per spatial axis (height first).

    Attributes:
        layer: the layer's name.
        size: the field's extent in input pixels (before clipping at the border).
        stride: the distance in input pixels between the fields of neighbouring units (the "jump").
        offset: the input coordinate of the first pixel of unit 0's field (negative: it starts in the padding).
        input_shape: the spatial shape of the input the field was computed for.
        output_shape: the spatial shape of the layer's output.
        method: ``"graph"`` (a walk of the torch.fx graph) or ``"gradient"`` (the support of d unit / d input:
            exact when a unit's field fits in the input, a lower bound when it does not); ``"whole input"`` in
            :func:`~deepscope.features.top_patches` of a vector layer, whose one position sees every pixel.
    """

    layer: str
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    method: str

    @property
    def center(self) -> tuple[float, ...]:
        """The input coordinate of the centre of unit 0's field, per axis."""
        return tuple(o + (s - 1) / 2 for o, s in zip(self.offset, self.size))

    def box(self, unit_position: Sequence[int]) -> tuple[int, ...]:
        """The field of the unit at ``unit_position`` (one index per spatial axis) clipped to the input.

        Returns ``(top, left, bottom, right)`` for 2-D maps (``(start, end)`` for 1-D), with the end excluded, so
        ``image[:, top:bottom, left:right]`` is the patch the unit sees. Inside the input this is exactly where
        d unit / d input can be nonzero; at the border the box is clipped, and when a deeper layer pads with
        strides and dilation the pixels a border unit actually reaches can stop short of the clipped edge.
        """
        position = tuple(int(p) for p in unit_position)
        if len(position) != len(self.size):
            raise BadInputError(
                f"unit_position {tuple(unit_position)} has {len(position)} indices; layer {self.layer!r} has "
                f"{len(self.size)} spatial axes (shape {self.output_shape})."
            )
        for axis, (p, n) in enumerate(zip(position, self.output_shape)):
            if not 0 <= p < n:
                raise BadInputError(f"unit position {p} on axis {axis} is outside the layer's output (size {n}).")
        starts, ends = [], []
        for p, size, stride, offset, limit in zip(position, self.size, self.stride, self.offset, self.input_shape):
            start = offset + p * stride
            starts.append(min(max(start, 0), limit))
            ends.append(min(max(start + size, 0), limit))
        return (*starts, *ends)


def receptive_field(model: nn.Module, layer: str, input_shape: Sequence[int]) -> ReceptiveField:
    """The receptive field of the units of ``layer`` for inputs of ``input_shape``.

    Args:
        model: the network; it is traced with torch.fx (not changed) and run once on zeros.
        layer: a name from ``model.named_modules()`` whose output is a feature map ``[N, C, *spatial]``.
        input_shape: one input's shape ``(C, H, W)``, without the batch axis.

    Returns:
        A :class:`ReceptiveField` with ``size``, ``stride``, ``offset`` per axis, ``box(unit_position)`` and
        ``method`` (``"graph"`` or ``"gradient"``).
    """
    probe.named_layer(model, layer)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise BadInputError(f"input_shape={tuple(input_shape)}; pass one input's shape (C, H, W), without N.")
    sample = torch.zeros((1, *shape), device=probe.model_device(model), dtype=probe.model_dtype(model))
    try:
        axes, output_shape = _walk(model, layer, sample)
    except _CannotWalk:
        output_shape = _output_shape(model, layer, sample)
        _check_spatial(layer, output_shape)
        return _from_gradient(model, layer, sample, output_shape[2:])
    _check_spatial(layer, output_shape)
    return ReceptiveField(
        layer=layer,
        size=tuple(hi - lo + 1 for lo, hi, _ in axes),
        stride=tuple(jump for _, _, jump in axes),
        offset=tuple(lo for lo, _, _ in axes),
        input_shape=shape[1:],
        output_shape=output_shape[2:],
        method="graph",
    )


def _check_spatial(layer: str, output_shape: tuple[int, ...]) -> None:
    if len(output_shape) < 3:
        raise BadInputError(
            f"layer {layer!r} outputs shape {output_shape}, which has no spatial axes; a receptive field belongs "
            "to the units of a feature map [N, C, H, W]: choose a convolutional layer."
        )


def _output_shape(model: nn.Module, layer: str, sample: Tensor) -> tuple[int, ...]:
    with probe.preserved(model), probe.Hooks() as hooks, torch.no_grad():
        model.eval()
        record = probe.capture(hooks, model, layer)
        probe.run(model, sample)
        return tuple(record.output().shape)


# The graph walk ------------------------------------------------------------------------------------------------

Field = tuple[tuple[int, int, int], ...]  # per spatial axis: (lo, hi, jump)


class _CannotWalk(Exception):
    """The graph has something the walk has no rule for; the gradient's support is used instead."""


class _Tracer(torch.fx.Tracer):
    """The default tracer, which also notes the node that returns the output of the module called ``layer``."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        self.layer = layer
        self.outputs: list[torch.fx.Node] = []

    def call_module(self, m, forward, args, kwargs):  # type: ignore[no-untyped-def]
        result = super().call_module(m, forward, args, kwargs)
        if self.path_of_module(m) == self.layer:
            if not isinstance(result, torch.fx.Proxy):
                raise _CannotWalk("the layer does not return one tensor")
            self.outputs.append(result.node)
        return result


_WINDOW_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVG_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_MODULES = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
# Modules that act on each position on its own (normalisation statistics are not counted as seeing pixels).
_POINTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Identity,
    nn.LocalResponseNorm,
)
_POINTWISE_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.iadd,
    operator.imul,
    operator.neg,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.cat,
    torch.relu,
    torch.relu_,
    torch.sigmoid,
    torch.tanh,
    torch.clamp,
    torch.maximum,
    torch.minimum,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.sigmoid,
    F.tanh,
    F.dropout,
    F.batch_norm,
}
_POINTWISE_METHODS = {
    "relu",
    "relu_",
    "add",
    "add_",
    "sub",
    "mul",
    "mul_",
    "div",
    "sigmoid",
    "tanh",
    "clamp",
    "clamp_",
    "contiguous",
    "clone",
    "float",
    "to",
    "type_as",
}
_WINDOW_FUNCTIONS = {F.conv1d, F.conv2d, F.conv3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool2d}


def _walk(model: nn.Module, layer: str, sample: Tensor) -> tuple[Field, tuple[int, ...]]:
    """(lo, hi, jump) per spatial axis of the output of ``layer`` from the fx graph (the union over paths), and
    the output's shape."""
    tracer = _Tracer(layer)
    try:
        graph = tracer.trace(model)
    except _CannotWalk:
        raise
    except Exception as error:  # fx raises many kinds (TraceError, TypeError on control flow, ...)
        raise _CannotWalk(f"torch.fx cannot trace the model: {error}") from None
    if len(tracer.outputs) != 1:
        raise _CannotWalk("the layer is not called exactly once")
    target = tracer.outputs[0]
    module = torch.fx.GraphModule(tracer.root, graph)
    try:
        with torch.no_grad(), probe.preserved(module):
            module.eval()
            torch.fx.passes.shape_prop.ShapeProp(module).propagate(sample)
    except Exception as error:
        raise _CannotWalk(f"the traced graph does not run: {error}") from None
    modules = dict(module.named_modules())
    spatial = sample.ndim - 2
    fields: dict[torch.fx.Node, Field | None] = {}  # None: a value that depends on no input pixel (a constant)
    for node in graph.nodes:
        if node.op == "placeholder":
            fields[node] = ((0, 0, 1),) * spatial
        elif node.op == "output":
            continue
        else:
            fields[node] = _node_field(node, modules, fields, spatial)
        if node is target:
            break
    result, output_shape = fields.get(target), _shape(target)
    if result is None or output_shape is None:
        raise _CannotWalk("the layer's output does not depend on the input")
    return result, output_shape


def _shape(node: object) -> tuple[int, ...] | None:
    meta = getattr(node, "meta", {}).get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _union(node: torch.fx.Node, fields: dict[torch.fx.Node, Field | None], spatial: int) -> Field | None:
    """The field of an operation that joins its inputs position by position: the union of their boxes."""
    shape = _shape(node)
    known = [fields[n] for n in node.all_input_nodes if fields.get(n) is not None]
    if not known:
        return None
    if shape is not None and len(shape) != spatial + 2:
        raise _CannotWalk(f"{node.name} changes the number of axes")
    for n in node.all_input_nodes:
        other = _shape(n)
        if fields.get(n) is not None and other is not None and shape is not None and other[2:] != shape[2:]:
            # e.g. a squeeze-excitation gate broadcast over the map: every unit then sees the whole input, which
            # the gradient's support shows
            raise _CannotWalk(f"{node.name} joins maps of different sizes")
    joined = []
    for axis in range(spatial):
        jumps = {f[axis][2] for f in known}  # type: ignore[index]
        if len(jumps) != 1:
            raise _CannotWalk(f"{node.name} joins maps with different strides")
        lo = min(f[axis][0] for f in known)  # type: ignore[index]
        hi = max(f[axis][1] for f in known)  # type: ignore[index]
        joined.append((lo, hi, jumps.pop()))
    return tuple(joined)


def _window(
    field: Field, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]
) -> Field:
    return tuple(
        (lo - p * jump, hi + ((k - 1) * d - p) * jump, s * jump)
        for (lo, hi, jump), k, s, p, d in zip(field, kernel, stride, padding, dilation)
    )


def _padding(padding: object, kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """The padding before the first position; PyTorch's ``"same"`` pads ``total // 2`` there, the rest after."""
    if padding == "valid":
        return (0,) * len(kernel)
    if padding == "same":
        return tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation))
    return _tuple(padding, len(kernel))


def _tuple(value: object, n: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * n  # type: ignore[call-overload]


def _node_field(
    node: torch.fx.Node, modules: dict[str, nn.Module], fields: dict[torch.fx.Node, Field | None], spatial: int
) -> Field | None:
    if node.op == "get_attr":
        return None
    if node.op == "call_module":
        module = modules[str(node.target)]
        source = fields.get(node.args[0]) if node.args and isinstance(node.args[0], torch.fx.Node) else None
        if source is None:
            return _union(node, fields, spatial)
        if isinstance(module, _WINDOW_MODULES + _AVG_MODULES):
            # ceil_mode only adds a last unit whose window runs past the input; every unit's box is unchanged
            kernel = _tuple(module.kernel_size, spatial)
            stride = _tuple(module.stride if module.stride is not None else module.kernel_size, spatial)
            dilation = _tuple(getattr(module, "dilation", 1), spatial)
            padding = _padding(module.padding, kernel, dilation)
            return _window(source, kernel, stride, padding, dilation)
        if isinstance(module, _ADAPTIVE_MODULES):
            return _adaptive(node, source)
        if isinstance(module, _POINTWISE_MODULES):
            return _union(node, fields, spatial)
        raise _CannotWalk(f"no rule for module {type(module).__name__}")
    if node.op == "call_function":
        if node.target is getattr or node.target is operator.getitem:
            if _depends(node, fields):
                raise _CannotWalk(f"no rule for {node.target}")
            return None
        if node.target in _WINDOW_FUNCTIONS:
            return _window_function(node, fields, spatial)
        if node.target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            source = fields.get(node.args[0])  # type: ignore[arg-type]
            return None if source is None else _adaptive(node, source)
        if node.target in _POINTWISE_FUNCTIONS:
            if node.target is torch.cat and _cat_dim(node) in range(2, spatial + 2):
                raise _CannotWalk("concatenation along a spatial axis")
            return _union(node, fields, spatial)
        if not _depends(node, fields):
            return None
        raise _CannotWalk(f"no rule for function {getattr(node.target, '__name__', node.target)}")
    if node.op == "call_method":
        if node.target in _POINTWISE_METHODS:
            return _union(node, fields, spatial)
        if not _depends(node, fields):
            return None
        raise _CannotWalk(f"no rule for method {node.target}")
    raise _CannotWalk(f"no rule for {node.op}")


def _depends(node: torch.fx.Node, fields: dict[torch.fx.Node, Field | None]) -> bool:
    return any(fields.get(n) is not None for n in node.all_input_nodes)


def _cat_dim(node: torch.fx.Node) -> int:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    return int(dim) % (len(_shape(node) or (0, 0)))  # type: ignore[call-overload]


def _adaptive(node: torch.fx.Node, source: Field) -> Field:
    """An adaptive pooling whose input is a multiple of its output is a pooling with kernel = stride = ratio."""
    out_shape = _shape(node)
    in_shape = _shape(node.args[0])
    if out_shape is None or in_shape is None:
        raise _CannotWalk("adaptive pooling of unknown size")
    ratios = []
    for n_in, n_out in zip(in_shape[2:], out_shape[2:]):
        if n_in % n_out:
            raise _CannotWalk("adaptive pooling with uneven windows")
        ratios.append(n_in // n_out)
    ones = (1,) * len(ratios)
    return _window(source, ratios, ratios, (0,) * len(ratios), ones)


def _window_function(node: torch.fx.Node, fields: dict[torch.fx.Node, Field | None], spatial: int) -> Field | None:
    source = fields.get(node.args[0])  # type: ignore[arg-type]
    if source is None:
        return None
    names = {
        F.conv1d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
        F.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
        F.conv3d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
        F.avg_pool2d: ("input", "kernel_size", "stride", "padding"),
    }.get(node.target, ("input", "kernel_size", "stride", "padding", "dilation"))
    bound = dict(zip(names, node.args))
    bound.update(node.kwargs)
    if "weight" in bound:
        weight = _shape(bound["weight"])
        if weight is None:
            raise _CannotWalk("convolution weight of unknown shape")
        kernel = weight[2:]
    else:
        kernel = _tuple(bound["kernel_size"], spatial)
    stride = bound.get("stride") or (1 if "weight" in bound else kernel)
    dilation = _tuple(bound.get("dilation", 1), spatial)
    padding = _padding(bound.get("padding", 0), kernel, dilation)
    return _window(source, kernel, _tuple(stride, spatial), padding, dilation)


# The gradient's support ------------------------------------------------------------------------------------------


def gradient_support(model: nn.Module, layer: str, sample: Tensor, position: Sequence[int], draws: int = 8) -> Tensor:
    """A boolean map ``[*spatial]`` of the input pixels on which unit ``position`` of ``layer`` depends.

    The union over ``draws`` random inputs and every channel of the layer of where d unit / d input is nonzero:
    one input could hide a pixel behind an inactive ReLU or a max-pooling that chose another pixel.
    """
    with probe.preserved(model), probe.Hooks() as hooks:
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn((draws, *sample.shape[1:]), generator=generator).to(sample)
        x.requires_grad_(True)
        record = probe.capture(hooks, model, layer)
        probe.run(model, x)
        output = record.output()
        index = (slice(None), slice(None), *(int(p) for p in position))
        grad = torch.autograd.grad(output[index].sum(), x)[0]
    return grad.abs().sum(dim=(0, 1)) > 0


def _from_gradient(model: nn.Module, layer: str, sample: Tensor, output_shape: tuple[int, ...]) -> ReceptiveField:
    """The field read off the gradient's support of the middle unit and of its lower-right neighbour."""
    spatial = sample.shape[2:]
    middle = [n // 2 for n in output_shape]
    stride = tuple(max(1, round(i / o)) for i, o in zip(spatial, output_shape))
    support = gradient_support(model, layer, sample, middle)
    if not support.any():
        raise BadInputError(f"no input pixel reaches layer {layer!r}'s units; its receptive field is undefined.")
    sizes, offsets = [], []
    for axis in range(len(spatial)):
        other = tuple(a for a in range(len(spatial)) if a != axis)
        line = support.any(dim=other) if other else support
        where = torch.nonzero(line).flatten()
        first, last = int(where[0]), int(where[-1])
        sizes.append(last - first + 1)
        if first > 0 or last == spatial[axis] - 1:  # the left edge is a real edge (or both are clipped)
            offsets.append(first - middle[axis] * stride[axis])
        else:  # clipped on the left only: the right edge places the field
            offsets.append(last - sizes[-1] + 1 - middle[axis] * stride[axis])
    return ReceptiveField(
        layer=layer,
        size=tuple(sizes),
        stride=stride,
        offset=tuple(offsets),
        input_shape=tuple(spatial),
        output_shape=tuple(output_shape),
        method="gradient",
    )
