"""A model's structure as data: the module hierarchy and, where the model allows, the op-level graph.

:func:`model_graph` returns a :class:`~deepscope.track.records.Graph` that a dashboard draws as a node-link
diagram. The module hierarchy always comes from the model's own modules and one forward pass with hooks; the op
graph comes from ``torch.fx.symbolic_trace``, from ``torch.export.export`` where fx cannot trace the model, and is
``None`` (with the reasons) where neither can, e.g. for a forward pass that branches on tensor values.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import BadInputError
from ..probe import Hooks, from_model_layout, layer_type, preserved, torch_model
from .records import Graph

Shape = list[int] | None


def model_graph(model: nn.Module, example: Tensor | Sequence[Tensor], *, tag: str = "model") -> Graph:
    """The module hierarchy and the op-level graph of ``model``, with output shapes for ``example``.

    Args:
        model: the module, or a Keras 3 model on the torch backend (its layers under their Keras names, the
            example in its own layout); left as found (modes, ``requires_grad`` flags, buffers such as batch-norm
            statistics, hooks, and the global random number generators that dropout draws from).
        example: one batch of inputs, or a tuple of the forward pass's positional inputs.
        tag: the graph's name in a run.

    Returns:
        A :class:`Graph` whose ``modules`` hold one node per module of ``model.named_modules()`` (the model itself
        is ``""``): ``{"name", "type", "parent", "params", "shape", "calls"}``, with ``params`` counting the
        parameters of the module and its children, ``shape`` the output shape of its first call in the forward
        pass (``None`` if it was not called or returned no tensor) and ``calls`` how often it was called.
        ``ops`` is ``{"nodes": [{"name", "op", "target", "shape", "module"}], "edges": [[source, target], ...]}``
        (``module``: the module a node belongs to, where known), and ``ops_method`` says where it came from:
        ``"torch.fx"``, ``"torch.export"`` or ``"unavailable: ..."`` with the reasons, ``ops`` then ``None``.

    Raises:
        BadInputError: the model cannot run on ``example``.
    """
    args = tuple(from_model_layout(model, a) for a in _arguments(example))  # type: ignore[misc]
    model = torch_model(model)
    with preserved(model), _state_kept(model, args):
        modules = _hierarchy(model, args)
        ops, method, notes = _op_graph(model, args)
    return Graph(modules=modules, ops=ops, ops_method=method, tag=tag, notes=notes)


def _arguments(example: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    if isinstance(example, Tensor):
        return (example,)
    if isinstance(example, Sequence) and example and all(isinstance(item, Tensor) for item in example):
        return tuple(example)
    raise BadInputError(
        f"example is a {type(example).__name__}; pass one batch as a tensor, or a tuple of the tensors that the "
        "model's forward() takes."
    )


@contextlib.contextmanager
def _state_kept(model: nn.Module, args: tuple[Tensor, ...]) -> Iterator[None]:
    """Restore every buffer's values and the random number generators after the passes made here.

    A forward pass in training mode updates batch-norm statistics, and dropout draws random numbers: neither
    should be changed by looking at a model's structure.
    """
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    devices = sorted({t.device.index or 0 for t in [*args, *model.parameters()] if t.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def _hierarchy(model: nn.Module, args: tuple[Tensor, ...]) -> list[dict[str, Any]]:
    shapes: dict[str, Shape] = {}
    calls: dict[str, int] = {}
    with Hooks() as hooks, torch.no_grad():
        for name, module in model.named_modules():

            def hook(_module: nn.Module, _inputs: object, output: object, name: str = name) -> None:
                calls[name] = calls.get(name, 0) + 1
                if name not in shapes:
                    shapes[name] = _shape(output)

            hooks.add(module.register_forward_hook(hook))
        try:
            model(*args)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            given = ", ".join(f"{tuple(a.shape)} {a.dtype}" for a in args)
            raise BadInputError(
                f"{type(model).__name__} could not run on the example ({given}): {message}. Pass inputs the "
                "model accepts, N first; a tuple for a forward() that takes several tensors."
            ) from None
    return [
        {
            "name": name,
            "type": layer_type(module),
            "parent": name.rpartition(".")[0] if name else None,
            "params": sum(p.numel() for p in module.parameters()),
            "shape": shapes.get(name),
            "calls": calls.get(name, 0),
        }
        for name, module in model.named_modules()
    ]


def _op_graph(model: nn.Module, args: tuple[Tensor, ...]) -> tuple[dict[str, Any] | None, str, list[str]]:
    # Tracing can fail in many ways (TraceError, TypeError, AttributeError, guard errors from export...); any
    # failure means only "this tracer cannot read this model", and its reason is kept in the record.
    try:
        traced = torch.fx.symbolic_trace(model)
        with torch.no_grad():
            ShapeProp(traced).propagate(*args)
        return _fx_ops(traced), "torch.fx", []
    except Exception as error:
        fx_reason = _reason(error)
    try:
        # On failure torch.export prints its partial graph to stderr; the reason is kept below instead.
        with contextlib.redirect_stderr(io.StringIO()):
            exported = torch.export.export(model, args)
        return _export_ops(exported), "torch.export", [f"torch.fx could not trace the model: {fx_reason}"]
    except Exception as error:
        export_reason = _reason(error)
    return None, f"unavailable: torch.fx: {fx_reason}; torch.export: {export_reason}", []


def _fx_ops(traced: torch.fx.GraphModule) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    edges: list[list[str]] = []
    for node in traced.graph.nodes:
        nodes.append(
            {
                "name": node.name,
                "op": node.op,
                "target": _target(node.target),
                "shape": _shape(node.meta.get("tensor_meta")),
                "module": node.target if node.op == "call_module" else None,
            }
        )
        edges.extend([source.name, node.name] for source in node.all_input_nodes)
    return {"nodes": nodes, "edges": edges}


def _export_ops(exported: torch.export.ExportedProgram) -> dict[str, Any]:
    # Parameters and buffers are inputs of an exported graph; their names say which tensor of the model they are.
    owners = {spec.arg.name: spec.target for spec in exported.graph_signature.input_specs if spec.target}
    nodes: list[dict[str, Any]] = []
    edges: list[list[str]] = []
    for node in exported.graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        module = next(reversed(stack.values()))[0] if stack else None
        if node.op == "placeholder" and node.name in owners:
            module = owners[node.name].rpartition(".")[0]
        nodes.append(
            {
                "name": node.name,
                "op": node.op,
                "target": owners.get(node.name) or _target(node.target),
                "shape": _shape(node.meta.get("val")),
                "module": module,
            }
        )
        edges.extend([source.name, node.name] for source in node.all_input_nodes)
    return {"nodes": nodes, "edges": edges}


def _target(target: object) -> str:
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if module and name and not isinstance(target, torch._ops.OpOverload):
        return f"{module}.{name}"
    return str(target)


def _shape(value: object) -> Shape:
    """The shape of a tensor (or tensor metadata), or of the first one in a tuple or list; ``None`` otherwise."""
    shape = getattr(value, "shape", None)
    if isinstance(shape, torch.Size | tuple | list):
        return [_size(s) for s in shape]
    if isinstance(value, tuple | list):
        for item in value:
            found = _shape(item)
            if found is not None:
                return found
    return None


def _size(size: object) -> int:
    try:
        return int(size)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return -1  # a symbolic size with no value


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    first = first if len(first) <= 200 else first[:197] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
