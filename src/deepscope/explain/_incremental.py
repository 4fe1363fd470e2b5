"""Exact incremental inference for occlusion: recompute only what an occluding patch changes.

The idea is Krypton's (Nakandala, Kumar and Papakonstantinou, SIGMOD 2019). The model runs once on the clean
inputs, and every intermediate value of its ``torch.fx`` graph is kept. A patch changes only a box of each
spatial layer's output (the patch's cone: the outputs whose receptive field meets the changed box of the layer's
input), so for each window the engine recomputes only that box, from a slice of the layer's input with the halo
the kernel needs (stride, padding and dilation respected), and stands the result in for the cached output.

Many windows run together: at each layer all windows of a batch get a box of the same size (the largest in the
batch; a box near a border is moved inward, which only recomputes a few unchanged values), so the slices stack
into one batch for one ``conv2d`` call. Where the box grows to the whole map (the cone of a deep layer, global
pooling, a linear layer, an operation the engine does not know), the layer runs in full on the batch, as in a
plain pass. What is saved is therefore the work of the early, high-resolution layers; on resnet18 at 224x224
with 32x32 windows the cone covers layer4 and most of layer3, which bounds the gain to about 2x in operations
(the measured gain is larger: the early layers are also the memory-bound ones).

Supported incrementally: ``Conv1d/2d`` (zero padding), ``BatchNorm1d/2d`` in eval mode (folded into the
convolution before it), ``MaxPool1d/2d``, ``AvgPool1d/2d`` (without ``ceil_mode``), ReLU and other element-wise
activations (modules, functions and methods), and element-wise ``+ - * /`` (residual additions). Everything else
runs in full on the batch. The engine refuses (:class:`Unsupported`) models that ``torch.fx`` cannot trace,
models with hooks or modules in training mode, and in-place operations whose input is read elsewhere; occlusion
then uses plain batched passes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Boxes", "Engine", "Unsupported"]


class Unsupported(Exception):
    """The model cannot run incrementally; the message says why."""


# Each node's changed box, per window: (lo, hi) integer arrays [windows, spatial dims], hi exclusive.
Boxes = dict[str, tuple[np.ndarray, np.ndarray]]

_UNARY_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
)
_UNARY_FUNCTIONS: dict[Callable[..., Any], Callable[..., Any]] = {
    **{f: f for f in (torch.relu, F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish)},
    **{f: f for f in (F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, torch.sigmoid, torch.tanh, F.sigmoid)},
    **{f: f for f in (F.tanh, torch.exp, torch.abs, torch.neg, torch.sqrt, torch.square)},
    torch.relu_: torch.relu,
    F.relu_: F.relu,
    F.leaky_relu_: F.leaky_relu,
    F.elu_: F.elu,
    F.hardtanh_: F.hardtanh,
}
_UNARY_METHODS = {"relu", "sigmoid", "tanh", "exp", "abs", "neg", "sqrt", "square", "clamp", "clip"}
_BINARY_FUNCTIONS: dict[Callable[..., Any], Callable[..., Any]] = {
    **{f: f for f in (operator.add, operator.sub, operator.mul, operator.truediv)},
    **{f: f for f in (torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum)},
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}
_BINARY_METHODS = {"add", "sub", "mul", "div"}
# Convolutions on slices of at most this many positions (9 x 9 with the halo) run in NCHW, larger ones channels last
# (bench/bench_occlusion.py's resnet18 on one thread: NCHW 1.3x faster on 6x6 slices, channels last 1.1x on 15x16).
_SMALL_TILE = 100
_CONV: dict[type[nn.Module], Callable[..., Tensor]] = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d}
_MAX_POOL: dict[type[nn.Module], Callable[..., Tensor]] = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d}
_AVG_POOL: dict[type[nn.Module], Callable[..., Tensor]] = {nn.AvgPool1d: F.avg_pool1d, nn.AvgPool2d: F.avg_pool2d}


@dataclass
class _Patch:
    """A node's value for a batch of windows: ``tile`` [B, C, *size] stands in for the clean value at ``start``.

    ``start`` is None when the tile is the whole value (then it has one row per window, like a plain batch).
    """

    tile: Tensor
    start: np.ndarray | None = None


@dataclass
class _Raw:
    """A value that is not a batch of tensors (a shape, a tuple) computed for the batch."""

    value: Any


@dataclass
class _Step:
    """How the engine evaluates one graph node."""

    node: torch.fx.Node
    kind: str  # input, const, conv, pool, unary, binary, identity, generic, output
    spatial: tuple[int, ...] | None = None  # the output's spatial size when it has a box per window
    source: torch.fx.Node | None = None  # the spatial input of conv / pool / unary / identity
    fn: Callable[..., Tensor] | None = None  # the operation on a slice (padding 0) or on tiles
    full: Callable[[Tensor], Tensor] | None = None  # conv / pool: the operation on whole maps
    kernel: tuple[int, ...] = ()  # conv / pool: the kernel's extent (dilation included)
    stride: tuple[int, ...] = ()
    pad_lo: tuple[int, ...] = ()
    pad_hi: tuple[int, ...] = ()
    fill: float = 0.0  # what padding holds: 0, or -inf for max pooling
    inplace: bool = False  # generic: the operation writes into its first argument


def _tuple(value: Any, d: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * d


def _has_hooks(model: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module

    global_hooks = (
        getattr(torch_module, "_global_forward_hooks", {}),
        getattr(torch_module, "_global_forward_pre_hooks", {}),
    )
    if any(len(h) for h in global_hooks):
        return True
    names = ("_forward_hooks", "_forward_pre_hooks")
    return any(len(getattr(m, n, {})) for m in model.modules() for n in names)


class Engine:
    """Model outputs for many occluded copies of a few inputs, recomputing only what each patch changes.

    Build it once per model and input shape, :meth:`load` a chunk of inputs (one clean pass, every intermediate
    value kept), :meth:`boxes` the windows, then :meth:`run` batches of windows.

    Raises:
        Unsupported: when the model cannot run incrementally (the message says why).
    """

    def __init__(self, model: nn.Module, sample: Tensor) -> None:
        if sample.ndim not in (3, 4):
            raise Unsupported("only 1D signals (N, C, L) and 2D images (N, C, H, W) run incrementally")
        if any(m.training for m in model.modules()):
            raise Unsupported("a module is in training mode")
        if _has_hooks(model):
            raise Unsupported("the model has forward hooks, which a traced graph would not run")
        try:
            self.graph_module = torch.fx.symbolic_trace(model)
        except Exception as error:  # tracing fails in many ways (control flow on values, unsupported calls)
            raise Unsupported(f"torch.fx cannot trace it ({type(error).__name__}: {error})") from None
        self.d = sample.ndim - 2
        self.modules = dict(self.graph_module.named_modules())
        self.nodes = list(self.graph_module.graph.nodes)
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise Unsupported(f"its forward takes {len(placeholders)} arguments, not one")
        self.input = placeholders[0]
        values = self._clean_pass(sample[:1])
        result = self._output_node().args[0]
        output = values[result] if isinstance(result, torch.fx.Node) else None
        if not isinstance(output, Tensor):
            raise Unsupported("its output is not a single tensor")
        self.sample_output = output
        self.steps = self._plan(values)
        self._liveness()
        self.bytes_per_input = sum(v.numel() * v.element_size() for v in values.values() if isinstance(v, Tensor))
        self.clean: dict[torch.fx.Node, Any] = values  # the sample is loaded
        self._padded: dict[tuple[str, tuple[int, ...], tuple[int, ...], float], Tensor] = {}

    # Planning ----------------------------------------------------------------------------------------------

    def _output_node(self) -> torch.fx.Node:
        return next(n for n in self.nodes if n.op == "output")

    def _result(self) -> torch.fx.Node:
        result = self._output_node().args[0]
        assert isinstance(result, torch.fx.Node)
        return result

    def _call(self, node: torch.fx.Node, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        if node.op == "call_module":
            return self.modules[str(node.target)](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)  # type: ignore[operator]
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        if node.op == "get_attr":
            value: Any = self.graph_module
            for part in str(node.target).split("."):
                value = getattr(value, part)
            return value
        raise Unsupported(f"graph node {node.name} has an unknown op {node.op!r}")

    def _is_inplace(self, node: torch.fx.Node) -> bool:
        if node.op == "call_module":
            return bool(getattr(self.modules[str(node.target)], "inplace", False))
        if node.op == "call_method":
            return str(node.target).endswith("_") and not str(node.target).endswith("__")
        if node.op == "call_function":
            name = getattr(node.target, "__name__", "")
            in_place_op = node.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv)
            return in_place_op or bool(node.kwargs.get("inplace")) or (name.endswith("_") and not name.endswith("__"))
        return False

    @torch.no_grad()
    def _clean_pass(self, inputs: Tensor) -> dict[torch.fx.Node, Any]:
        values: dict[torch.fx.Node, Any] = {}
        for node in self.nodes:
            if node.op == "placeholder":
                values[node] = inputs
            elif node.op == "output":
                continue
            else:
                args = torch.fx.node.map_arg(node.args, values.__getitem__)
                kwargs = torch.fx.node.map_arg(node.kwargs, values.__getitem__)
                if self._is_inplace(node):
                    # Keep the cached input intact: later slices of it are read again.
                    args = tuple(a.clone() if isinstance(a, Tensor) else a for a in args)
                values[node] = self._call(node, args, kwargs)
        return values

    def _plan(self, values: dict[torch.fx.Node, Any]) -> list[_Step]:
        depends: set[torch.fx.Node] = {self.input}
        steps: list[_Step] = []
        by_node: dict[torch.fx.Node, _Step] = {}
        for node in self.nodes:
            if node.op == "placeholder":
                step = _Step(node, "input", spatial=tuple(values[node].shape[2:]))
            elif node.op == "output":
                step = _Step(node, "output")
            elif not any(a in depends for a in node.all_input_nodes):
                step = _Step(node, "const")
            else:
                depends.add(node)
                first = node.args[0] if node.args else None
                if self._is_inplace(node) and isinstance(first, torch.fx.Node) and len(first.users) > 1:
                    raise Unsupported(f"in-place operation {node.name} changes a value that is read elsewhere")
                step = self._plan_node(node, values, depends, by_node)
            steps.append(step)
            by_node[node] = step
        self._fold_batch_norms(steps, by_node)
        return steps

    def _liveness(self) -> None:
        """Per step, the values that no later step reads, to free them after it (as a plain forward pass does)."""
        position = {step.node: i for i, step in enumerate(self.steps)}
        last = {step.node: max((position[u] for u in step.node.users), default=i) for i, step in enumerate(self.steps)}
        self._last_read: list[list[torch.fx.Node]] = [[] for _ in self.steps]
        for node, i in last.items():
            self._last_read[i].append(node)

    def _spatial_shape(self, value: Any) -> tuple[int, ...] | None:
        if isinstance(value, Tensor) and value.ndim == 2 + self.d and value.shape[0] == 1:
            return tuple(value.shape[2:])
        return None

    def _plan_node(
        self,
        node: torch.fx.Node,
        values: dict[torch.fx.Node, Any],
        depends: set[torch.fx.Node],
        by_node: dict[torch.fx.Node, _Step],
    ) -> _Step:
        spatial = self._spatial_shape(values[node])
        generic = _Step(node, "generic", spatial=spatial, inplace=self._is_inplace(node))
        inputs = [a for a in node.all_input_nodes if a in depends]
        first = node.args[0] if node.args else None
        module = self.modules.get(str(node.target)) if node.op == "call_module" else None
        if spatial is None:
            # Non-spatial values (after flattening, say) are whole per window: element-wise ops still apply.
            return generic
        source_spatial = by_node[first].spatial if isinstance(first, torch.fx.Node) and first in by_node else None
        if len(inputs) == 1 and first is inputs[0] and source_spatial is not None:
            if module is not None and type(module) in _CONV and module.padding_mode == "zeros":
                return self._plan_window(node, module, values, generic)
            if module is not None and type(module) in (*_MAX_POOL, *_AVG_POOL):
                return self._plan_window(node, module, values, generic)
            unary = self._unary(node, module)
            if unary is not None and source_spatial == spatial:
                return _Step(node, "unary", spatial=spatial, source=first, fn=unary)
        binary = self._binary(node, values, depends, spatial)
        if binary is not None:
            return _Step(node, "binary", spatial=spatial, fn=binary)
        return generic

    def _unary(self, node: torch.fx.Node, module: nn.Module | None) -> Callable[[Tensor], Tensor] | None:
        rest_args = node.args[1:]
        if any(isinstance(a, torch.fx.Node) for a in (*rest_args, *node.kwargs.values())):
            return None
        kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
        if module is not None:
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if module.running_mean is None or module.running_var is None:
                    return None
                bn = module
                return lambda t: F.batch_norm(
                    t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
                )
            if isinstance(module, nn.ReLU):
                return F.relu
            if isinstance(module, _UNARY_MODULES):
                if getattr(module, "inplace", False):
                    return lambda t: module(t.clone())
                return module
            return None
        if node.op == "call_function" and node.target in _UNARY_FUNCTIONS:
            fn = _UNARY_FUNCTIONS[node.target]  # type: ignore[index]
            return lambda t: fn(t, *rest_args, **kwargs)
        if node.op == "call_method":
            name = str(node.target)
            base = name[:-1] if name.endswith("_") else name
            if base in _UNARY_METHODS:
                return lambda t: getattr(t, base)(*rest_args, **kwargs)
        return None

    def _binary(
        self,
        node: torch.fx.Node,
        values: dict[torch.fx.Node, Any],
        depends: set[torch.fx.Node],
        spatial: tuple[int, ...],
    ) -> Callable[..., Tensor] | None:
        if node.op == "call_function" and node.target in _BINARY_FUNCTIONS:
            fn = _BINARY_FUNCTIONS[node.target]  # type: ignore[index]
        elif node.op == "call_method" and str(node.target).rstrip("_") in _BINARY_METHODS:
            name = str(node.target).rstrip("_")

            def fn(a: Any, *rest: Any, **kw: Any) -> Tensor:
                return getattr(a, name)(*rest, **kw)
        else:
            return None
        out_shape = tuple(values[node].shape)
        if any(isinstance(v, torch.fx.Node) for v in node.kwargs.values()):
            return None
        for arg in node.args:
            if isinstance(arg, torch.fx.Node) and arg in depends:
                if not isinstance(values[arg], Tensor) or tuple(values[arg].shape) != out_shape:
                    return None  # broadcasting a window-dependent value: run it in full
            elif isinstance(arg, torch.fx.Node):
                const = values[arg]
                if isinstance(const, Tensor) and not _broadcasts_per_position(const, len(out_shape)):
                    return None
            elif not isinstance(arg, (int, float)):
                return None
        kwargs = dict(node.kwargs)
        return lambda *args: fn(*args, **kwargs)

    def _plan_window(self, node: torch.fx.Node, module: Any, values: dict[torch.fx.Node, Any], generic: _Step) -> _Step:
        """A convolution or pooling step: its geometry, and its operation on slices and on whole maps."""
        d = self.d
        source = node.args[0]
        assert isinstance(source, torch.fx.Node)
        in_size = tuple(values[source].shape[2:])
        out_size = tuple(values[node].shape[2:])
        size = _tuple(module.kernel_size, d)
        stride = _tuple(module.stride or module.kernel_size, d)
        dilation = _tuple(getattr(module, "dilation", 1), d)
        tile_fn: Callable[[Tensor], Tensor]
        full_fn: Callable[[Tensor], Tensor] = module
        fill = 0.0
        if type(module) in _CONV:
            kind = "conv"
            if module.padding == "same":  # PyTorch pads the odd one out on the right
                pad_lo = tuple(dl * (k - 1) // 2 for dl, k in zip(dilation, size))
            else:
                pad_lo = (0,) * d if module.padding == "valid" else _tuple(module.padding, d)
            tile_fn, full_fn = _conv_fns(module, module.weight, module.bias)
        elif type(module) in _MAX_POOL:
            if module.return_indices:
                return generic
            kind, fill, pad_lo = "pool", float("-inf"), _tuple(module.padding, d)
            max_pool = _MAX_POOL[type(module)]

            def tile_fn(x: Tensor) -> Tensor:
                # ceil_mode needs nothing here: the slice already holds the -inf padding a last window reads.
                return max_pool(x, size, stride, 0, dilation, False)

        else:
            kind, pad_lo = "pool", _tuple(module.padding, d)
            if module.ceil_mode or (not module.count_include_pad and any(pad_lo)):
                return generic  # divisors that change at the border
            avg_pool = _AVG_POOL[type(module)]
            extra = {"divisor_override": module.divisor_override} if d == 2 else {}

            def tile_fn(x: Tensor) -> Tensor:
                return avg_pool(x, size, stride, 0, False, True, **extra)

        kernel = tuple(dl * (k - 1) + 1 for dl, k in zip(dilation, size))
        pad_hi = tuple(
            max(0, (o - 1) * s - p + k - n) for o, s, p, k, n in zip(out_size, stride, pad_lo, kernel, in_size)
        )
        return _Step(
            node,
            kind,
            spatial=out_size,
            source=source,
            fn=tile_fn,
            full=full_fn,
            kernel=kernel,
            stride=stride,
            pad_lo=pad_lo,
            pad_hi=pad_hi,
            fill=fill,
        )

    def _fold_batch_norms(self, steps: list[_Step], by_node: dict[torch.fx.Node, _Step]) -> None:
        """Fold each eval BatchNorm into the convolution that alone feeds it (new tensors; the model is untouched)."""
        for step in steps:
            node = step.node
            module = self.modules.get(str(node.target)) if node.op == "call_module" else None
            if step.kind != "unary" or not isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                continue
            conv_step = by_node[step.source] if step.source is not None else None
            if conv_step is None or conv_step.kind != "conv" or len(conv_step.node.users) != 1:
                continue
            conv = self.modules[str(conv_step.node.target)]
            assert module.running_mean is not None and module.running_var is not None
            scale = torch.rsqrt(module.running_var + module.eps)
            if module.weight is not None:
                scale = scale * module.weight
            shift = -module.running_mean * scale
            if module.bias is not None:
                shift = shift + module.bias
            weight = conv.weight.detach() * scale.detach().reshape(-1, *([1] * (conv.weight.ndim - 1)))
            bias = shift.detach() if conv.bias is None else conv.bias.detach() * scale.detach() + shift.detach()
            conv_step.fn, conv_step.full = _conv_fns(conv, weight, bias)
            step.kind, step.fn = "identity", None

    # Clean values --------------------------------------------------------------------------------------------

    def load(self, inputs: Tensor) -> Tensor:
        """Run the clean ``inputs`` once, keeping every intermediate value; return the model's output."""
        loaded = self.clean.get(self.input)
        if loaded is None or loaded.shape != inputs.shape or not torch.equal(loaded, inputs):
            self._padded.clear()
            self.clean = self._clean_pass(inputs)
        return self.clean[self._result()]

    def _padded_clean(
        self, node: torch.fx.Node, pad_lo: tuple[int, ...], pad_hi: tuple[int, ...], fill: float
    ) -> Tensor:
        """The clean value padded by ``fill`` and channels last ([N, *spatial, C]), so slices gather whole rows."""
        key = (node.name, pad_lo, pad_hi, fill)
        if key not in self._padded:
            value = _pad(self.clean[node], pad_lo, pad_hi, fill)
            self._padded[key] = value.permute(0, *range(2, 2 + self.d), 1).contiguous()
        return self._padded[key]

    # Boxes --------------------------------------------------------------------------------------------------

    def boxes(self, lo: np.ndarray, hi: np.ndarray, tau: float = 1.0) -> Boxes:
        """Each spatial node's changed box for windows whose occluded input box is ``[lo, hi)`` ([W, d] arrays).

        ``tau < 1`` is Krypton's projective field thresholding (an approximation): a convolution's or pooling's
        box is cut to at most ``ceil(tau * size)`` along each axis, around its centre, and what lies outside keeps
        its clean value although the patch changed it. ``tau = 1`` cuts nothing: the exact cones.
        """
        boxes: Boxes = {}
        for step in self.steps:
            if step.spatial is None:
                continue
            name = step.node.name
            size = np.array(step.spatial)
            if step.kind == "input":
                b_lo, b_hi = lo, hi
            elif step.kind in ("conv", "pool"):
                assert step.source is not None
                s_lo, s_hi = boxes[step.source.name]
                stride, pad, kernel = np.array(step.stride), np.array(step.pad_lo), np.array(step.kernel)
                b_lo = -((kernel - 1 - s_lo - pad) // stride)  # ceil((lo + pad - kernel + 1) / stride)
                b_hi = (s_hi - 1 + pad) // stride + 1
                if tau < 1:
                    b_lo, b_hi = _threshold(np.clip(b_lo, 0, size), np.clip(b_hi, 0, size), size, tau)
            elif step.kind in ("unary", "identity"):
                assert step.source is not None
                b_lo, b_hi = boxes[step.source.name]
            elif step.kind == "binary":
                parts = [boxes[a.name] for a in step.node.all_input_nodes if a.name in boxes]
                b_lo = np.minimum.reduce([p[0] for p in parts])
                b_hi = np.maximum.reduce([p[1] for p in parts])
            else:
                b_lo, b_hi = np.zeros_like(lo), np.broadcast_to(size, lo.shape).copy()
            b_lo, b_hi = np.clip(b_lo, 0, size), np.clip(b_hi, 0, size)
            empty = (b_hi <= b_lo).any(axis=1)
            # An unchanged node gets the empty box (size, 0), which unions and propagates as nothing.
            b_lo = np.where(empty[:, None], size, b_lo)
            b_hi = np.where(empty[:, None], 0, b_hi)
            boxes[name] = (b_lo, b_hi)
        return boxes

    def order(self, boxes: Boxes) -> np.ndarray:
        """An order of the windows in which neighbours have boxes of alike sizes, to cut into batches.

        A batch's tiles take its largest box's size, so windows go by their box heights first (summed over the
        convolutions, weighted by their weights' size, as the work is), then by their widths: a batch of windows
        near the top and bottom borders, whose deep boxes are cut short, is not padded to an inner window's box.
        """
        count = next(iter(boxes.values()))[0].shape[0]
        convs = [s for s in self.steps if s.kind == "conv"]
        if not convs:
            return np.arange(count)
        weights = np.array([self.modules[str(s.node.target)].weight.numel() for s in convs], dtype=np.float64)
        extents = np.stack([boxes[s.node.name][1] - boxes[s.node.name][0] for s in convs], axis=1)  # [W, convs, d]
        keys = (extents * weights[None, :, None]).sum(axis=1)  # [W, d]
        return np.lexsort(keys.T[::-1])

    # Running windows ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, rows: Tensor, boxes: Boxes, baseline: Tensor) -> Tensor:
        """The model's output for each window: input ``rows[b]`` with box ``boxes[input][b]`` set to ``baseline``.

        Args:
            rows: [B] index of each window's input among the loaded ones.
            boxes: :meth:`boxes` of these B windows.
            baseline: [N, C, *spatial], aligned with the loaded inputs.
        """
        return self._evaluate(rows, boxes, baseline)

    def _evaluate(self, rows: Tensor, boxes: Boxes, baseline: Tensor) -> Tensor:
        env: dict[torch.fx.Node, Any] = {}
        for index, step in enumerate(self.steps):
            node = step.node
            if step.kind == "const":
                env[node] = self.clean[node]
            elif step.kind == "input":
                env[node] = self._input_patch(step, rows, boxes[node.name], baseline)
            elif step.kind == "output":
                return self._whole(self._result(), env, rows)
            elif step.kind == "identity":
                assert step.source is not None
                env[node] = env[step.source]
            elif step.kind == "unary":
                assert step.source is not None and step.fn is not None
                source = env[step.source]
                env[node] = _Patch(step.fn(source.tile), source.start)
            elif step.kind in ("conv", "pool"):
                env[node] = self._window_op(step, env, rows, boxes[node.name])
            elif step.kind == "binary":
                env[node] = self._binary_op(step, env, rows, boxes[node.name])
            else:
                env[node] = self._generic(step, env, rows)
            for done in self._last_read[index]:
                env.pop(done, None)  # free what no later step reads
        raise Unsupported("the graph has no output")

    def _tile_box(self, step: _Step, box: tuple[np.ndarray, np.ndarray]) -> tuple[tuple[int, ...], np.ndarray | None]:
        """The common tile size of a batch at a node, and each window's tile start (None: the whole map)."""
        assert step.spatial is not None
        lo, hi = box
        size = np.array(step.spatial)
        extent = np.maximum((hi - lo).max(axis=0), 1)
        start = np.clip(np.minimum(lo, size - extent), 0, None)
        return tuple(int(e) for e in extent), None if (extent == size).all() else start

    def _input_patch(self, step: _Step, rows: Tensor, box: tuple[np.ndarray, np.ndarray], baseline: Tensor) -> _Patch:
        size, start = self._tile_box(step, box)
        lo, hi = box
        corner = np.zeros_like(lo) if start is None else start
        inputs = self.clean[step.node]
        tiles = []
        for b, row in enumerate(rows.tolist()):
            tile = inputs[(row, slice(None), *_slices(corner[b], size))].clone()
            window = tuple(slice(int(low - c), int(high - c)) for low, high, c in zip(lo[b], hi[b], corner[b]))
            inner = tuple(slice(int(low), int(high)) for low, high in zip(lo[b], hi[b]))
            tile[(slice(None), *window)] = baseline[(row, slice(None), *inner)]
            tiles.append(tile)
        return _Patch(torch.stack(tiles), start)

    def _window_op(
        self, step: _Step, env: dict[torch.fx.Node, Any], rows: Tensor, box: tuple[np.ndarray, np.ndarray]
    ) -> _Patch:
        assert step.source is not None and step.fn is not None and step.full is not None
        source: _Patch = env[step.source]
        size, start = self._tile_box(step, box)
        if start is None and source.start is None:
            return _Patch(step.full(source.tile))
        corner = np.zeros((rows.shape[0], self.d), dtype=np.int64) if start is None else start
        return _Patch(self._window_tiles(step, source, rows, corner, size), start)

    def _window_tiles(
        self, step: _Step, source: _Patch, rows: Tensor, corner: np.ndarray, size: tuple[int, ...]
    ) -> Tensor:
        """The step's output on tiles of ``size`` starting at ``corner`` (per window), from the slices of its input
        (with the halo its kernel needs) that they read."""
        assert step.source is not None and step.fn is not None
        in_start = corner * np.array(step.stride) - np.array(step.pad_lo)
        in_size = tuple((e - 1) * s + k for e, s, k in zip(size, step.stride, step.kernel))
        region = self._region(step.source, source, rows, in_start, in_size, step.pad_lo, step.pad_hi, step.fill)
        return step.fn(region)

    def _binary_op(
        self, step: _Step, env: dict[torch.fx.Node, Any], rows: Tensor, box: tuple[np.ndarray, np.ndarray]
    ) -> _Patch:
        assert step.fn is not None
        size, start = self._tile_box(step, box)
        corner = np.zeros((rows.shape[0], self.d), dtype=np.int64) if start is None else start
        zeros = (0,) * self.d
        args = []
        for arg in step.node.args:
            value = env[arg] if isinstance(arg, torch.fx.Node) else arg
            if isinstance(value, _Patch):
                if (start is None and value.start is None) or (
                    start is not None
                    and value.start is not None
                    and tuple(value.tile.shape[2:]) == size
                    and np.array_equal(value.start, start)
                ):
                    value = value.tile
                else:
                    value = self._region(arg, value, rows, corner, size, zeros, zeros, 0.0)  # type: ignore[arg-type]
            args.append(value)
        return _Patch(step.fn(*args), start)

    def _region(
        self,
        node: torch.fx.Node,
        value: _Patch,
        rows: Tensor,
        start: np.ndarray,
        size: tuple[int, ...],
        pad_lo: tuple[int, ...],
        pad_hi: tuple[int, ...],
        fill: float,
    ) -> Tensor:
        """Per window, the box ``[start, start + size)`` of ``node``'s value (padding outside the map), [B, C, *size].

        The window's tile is laid over the box, and the rest of it (the kernel's halo, mostly) is gathered from
        the clean value (padded, channels last, so each position moves a whole row of channels) in one indexed
        copy. The result is a channels-last view.
        """
        d, batch = self.d, rows.shape[0]
        offset = start + np.array(pad_lo)
        if value.start is None:
            source = _pad(value.tile, pad_lo, pad_hi, fill).permute(0, *range(2, 2 + d), 1)
            if (offset == offset[0]).all():
                out = source[(slice(None), *_slices(offset[0], size))]
            else:
                out = source.new_empty((batch, *size, source.shape[-1]))
                for b in range(batch):
                    out[b] = source[(b, *_slices(offset[b], size))]
        else:
            clean = self._padded_clean(node, pad_lo, pad_hi, fill)
            out = clean.new_empty((batch, *size, clean.shape[-1]))
            tile = value.tile.permute(0, *range(2, 2 + d), 1)
            extent = np.array(tile.shape[1 : 1 + d])
            relative = value.start - start  # where each tile's corner falls in the box
            # The positions of each box that its tile does not cover, as flat indices into out and the clean value.
            covered = np.ones((batch, *size), dtype=bool)
            for axis in range(d):
                along = np.arange(size[axis])
                inside = (along >= relative[:, axis : axis + 1]) & (along < relative[:, axis : axis + 1] + extent[axis])
                covered &= inside.reshape(batch, *(size[a] if a == axis else 1 for a in range(d)))
            rest = np.nonzero(~covered)
            if len(rest[0]):
                into = np.ravel_multi_index(rest, covered.shape)
                at = (rows.cpu().numpy()[rest[0]], *(offset[rest[0], a] + rest[1 + a] for a in range(d)))
                take = np.ravel_multi_index(at, tuple(clean.shape[:-1]))
                flat_clean, flat_out = clean.view(-1, clean.shape[-1]), out.view(-1, out.shape[-1])
                gathered = flat_clean.index_select(0, torch.from_numpy(take).to(out.device))
                flat_out.index_copy_(0, torch.from_numpy(into).to(out.device), gathered)
            # Windows share few distinct offsets (all alike away from the borders): one copy per offset.
            offsets, groups = np.unique(relative, axis=0, return_inverse=True)
            for g, rel in enumerate(offsets):
                low, high = np.maximum(rel, 0), np.minimum(rel + extent, np.array(size))
                if (high <= low).any():
                    continue
                box: tuple[Any, ...] = tuple(slice(int(a), int(c)) for a, c in zip(low, high))
                part: tuple[Any, ...] = tuple(slice(int(a - r), int(c - r)) for a, c, r in zip(low, high, rel))
                members = np.flatnonzero(groups.reshape(-1) == g)
                if len(members) == batch:
                    out[(slice(None), *box)] = tile[(slice(None), *part)]
                else:  # a slice copy per window moves whole rows of channels, as indexing would not
                    for b in members.tolist():
                        out[(b, *box)] = tile[(b, *part)]
        return out.permute(0, d + 1, *range(1, d + 1))

    def _whole(self, arg: Any, env: dict[torch.fx.Node, Any], rows: Tensor) -> Any:
        if not isinstance(arg, torch.fx.Node):
            return arg
        value = env[arg]
        if isinstance(value, _Raw):
            return value.value
        if not isinstance(value, _Patch):
            return value
        if value.start is None:
            return value.tile
        spatial = tuple(self.clean[arg].shape[2:])
        zeros = (0,) * self.d
        corner = np.zeros((rows.shape[0], self.d), dtype=np.int64)
        return self._region(arg, value, rows, corner, spatial, zeros, zeros, 0.0).contiguous()

    def _generic(self, step: _Step, env: dict[torch.fx.Node, Any], rows: Tensor) -> _Patch | _Raw:
        node = step.node
        args = torch.fx.node.map_arg(node.args, lambda a: self._whole(a, env, rows))
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda a: self._whole(a, env, rows))
        if step.inplace:
            args = tuple(a.clone() if isinstance(a, Tensor) else a for a in args)
        result = self._call(node, args, kwargs)
        if isinstance(result, Tensor) and result.ndim >= 1 and result.shape[0] == rows.shape[0]:
            return _Patch(result)
        return _Raw(result)


def _conv_fns(
    conv: nn.Module, weight: Tensor, bias: Tensor | None
) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """``conv``'s operation with the given weight and bias, on slices that carry their halo (padding 0, channels
    last) and on whole maps (the module's padding, in the model's own layout)."""
    op = _CONV[type(conv)]
    stride, dilation, groups, padding = conv.stride, conv.dilation, conv.groups, conv.padding
    weight = weight.detach()
    channels_last: list[Tensor] = []  # the weight laid out for slices, made on first use

    def tile(x: Tensor) -> Tensor:
        if x.ndim == 4 and x.shape[2] * x.shape[3] <= _SMALL_TILE:
            # Small slices (deep layers, or cones cut by tau) run about 1.3x faster in oneDNN's NCHW kernels.
            return op(x.contiguous(), weight, bias, stride, 0, dilation, groups)
        if not channels_last:
            # Slices arrive channels last; a weight in the same layout spares oneDNN a reorder per call.
            laid_out = weight.contiguous(memory_format=torch.channels_last) if weight.ndim == 4 else weight
            channels_last.append(laid_out)
        return op(x, channels_last[0], bias, stride, 0, dilation, groups)

    def full(x: Tensor) -> Tensor:
        # Whole maps run as in a plain forward pass: on the small maps of deep layers, where the cone covers the
        # whole map, oneDNN is about 15 % faster in this layout than channels last.
        return op(x.contiguous(), weight, bias, stride, padding, dilation, groups)

    return tile, full


def _threshold(lo: np.ndarray, hi: np.ndarray, size: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[lo, hi)`` cut to at most ``ceil(tau * size)`` per axis around their centres (Krypton's projective
    field thresholding); smaller boxes stay as they are."""
    limit = np.maximum(1, np.ceil(tau * size - 1e-9)).astype(np.int64)
    extent = hi - lo
    cut = np.maximum(extent - limit, 0)
    lo = lo + cut // 2
    return lo, np.minimum(hi, lo + limit)


def _slices(corner: np.ndarray, size: Sequence[int]) -> tuple[Any, ...]:
    return tuple(slice(int(c), int(c) + int(e)) for c, e in zip(corner, size))


def _pad(value: Tensor, pad_lo: tuple[int, ...], pad_hi: tuple[int, ...], fill: float) -> Tensor:
    if not any(pad_lo) and not any(pad_hi):
        return value
    pads: list[int] = []
    for lo, hi in zip(reversed(pad_lo), reversed(pad_hi)):
        pads += [lo, hi]
    return F.pad(value, pads, value=fill)


def _broadcasts_per_position(const: Tensor, ndim: int) -> bool:
    """Whether a constant operand broadcasts over a [N, C, *spatial] value without varying by position or row."""
    if const.ndim > ndim:
        return False
    shape = (1,) * (ndim - const.ndim) + tuple(const.shape)
    return shape[0] == 1 and all(s == 1 for s in shape[2:])
