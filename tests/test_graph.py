"""The model graph: module hierarchy and op-level graph, with fx, export, and neither; the model left as found."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import hooks_left, tiny_cnn
from torch import nn

from deepscope.errors import BadInputError
from deepscope.track.graph import model_graph


class ShapeBranch(nn.Module):
    """Branches on the batch size: fx cannot trace it, torch.export specialises it to the example's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.a = nn.ReLU()
        self.b = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return self.a(h) if x.shape[0] > 1 else self.b(h)


class ValueBranch(ShapeBranch):
    """Branches on the values: neither fx nor torch.export can write it as one graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return self.a(h) if h.sum() > 0 else self.b(h)


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Linear(3, 5)
        self.right = nn.Linear(2, 5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.left(x) * self.right(y)


class Trainable(nn.Module):
    """Batch norm and dropout: a forward pass in training mode changes statistics and draws random numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.bn(self.conv(x))).mean(dim=(2, 3)))


def _check_hierarchy(model: nn.Module, graph, shapes: dict[str, list[int]]) -> None:
    names = [node["name"] for node in graph.modules]
    assert names == [name for name, _ in model.named_modules()]
    by_name = {node["name"]: node for node in graph.modules}
    modules = dict(model.named_modules())
    for name, module in modules.items():
        node = by_name[name]
        assert node["type"] == type(module).__name__
        assert node["params"] == sum(p.numel() for p in module.parameters())
        if name:
            assert any(child is module for child in modules[node["parent"]].children())
        else:
            assert node["parent"] is None
    for name, shape in shapes.items():
        assert by_name[name]["shape"] == shape, name


def _check_ops(graph) -> dict[str, dict]:
    nodes = {node["name"]: node for node in graph.ops["nodes"]}
    assert len(nodes) == len(graph.ops["nodes"])
    for source, target in graph.ops["edges"]:
        assert source in nodes and target in nodes
    # Every node is reachable from the inputs, and the output from every computing node.
    ops = [node["op"] for node in graph.ops["nodes"]]
    assert ops[-1] == "output" and "placeholder" in ops
    reached = {n for n, node in nodes.items() if node["op"] in ("placeholder", "get_attr")}
    for source, target in graph.ops["edges"]:  # nodes come in topological order, and so do edges
        if source in reached:
            reached.add(target)
    assert reached == set(nodes)
    return nodes


def test_small_cnn_with_fx() -> None:
    model = tiny_cnn()
    x = torch.randn(2, 3, 16, 16)
    graph = model_graph(model, x)
    shapes = {
        "": [2, 5],
        "conv1": [2, 8, 16, 16],
        "conv2": [2, 16, 16, 16],
        "pool": [2, 16, 8, 8],
        "conv3": [2, 16, 8, 8],
        "gap": [2, 16, 1, 1],
        "fc": [2, 5],
    }
    _check_hierarchy(model, graph, shapes)
    assert graph.ops_method == "torch.fx" and graph.notes == []
    nodes = _check_ops(graph)
    modules = [node for node in nodes.values() if node["op"] == "call_module"]
    assert [node["target"] for node in modules] == [n for n, _ in model.named_children()]
    for node in modules:
        assert node["shape"] == shapes.get(node["module"], node["shape"])
    flatten = [node for node in nodes.values() if node["op"] == "call_method"]
    assert [(node["target"], node["shape"]) for node in flatten] == [("flatten", [2, 16])]


def test_resnet18() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    graph = model_graph(model, torch.randn(1, 3, 64, 64))
    by_name = {node["name"]: node for node in graph.modules}
    assert by_name[""]["params"] == 11_689_512  # torchvision's documented parameter count
    _check_hierarchy(model, graph, {"layer4": [1, 512, 2, 2], "avgpool": [1, 512, 1, 1], "fc": [1, 1000]})
    assert by_name["layer1.0.relu"]["calls"] == 2  # BasicBlock applies its ReLU twice
    assert graph.ops_method == "torch.fx"
    nodes = _check_ops(graph)
    adds = [n for n in nodes.values() if n["op"] == "call_function" and n["target"].endswith("add")]
    assert len(adds) == 8  # one residual sum per block
    assert nodes["fc"]["shape"] == [1, 1000]


def test_shape_dependent_branch_falls_back_to_export() -> None:
    model = ShapeBranch()
    graph = model_graph(model, torch.randn(3, 4))
    assert graph.ops_method == "torch.export"
    assert len(graph.notes) == 1 and "torch.fx" in graph.notes[0]
    nodes = _check_ops(graph)
    targets = {node["target"]: node for node in nodes.values()}
    assert targets["aten.linear.default"]["module"] == "fc" and targets["aten.linear.default"]["shape"] == [3, 6]
    assert targets["aten.relu.default"]["module"] == "a"  # the branch this batch size takes
    assert "aten.tanh.default" not in targets
    assert targets["fc.weight"]["op"] == "placeholder" and targets["fc.weight"]["shape"] == [6, 4]
    _check_hierarchy(model, graph, {"fc": [3, 6], "a": [3, 6]})


def test_value_dependent_branch_has_no_op_graph_but_a_full_hierarchy() -> None:
    model = ValueBranch()
    graph = model_graph(model, torch.randn(3, 4))
    assert graph.ops is None
    assert graph.ops_method.startswith("unavailable: torch.fx: TraceError")
    assert "torch.export:" in graph.ops_method
    by_name = {node["name"]: node for node in graph.modules}
    assert sum(by_name[name]["calls"] for name in ("a", "b")) == 1  # one branch ran, the other did not
    _check_hierarchy(model, graph, {"": [3, 6], "fc": [3, 6]})


def test_several_inputs() -> None:
    model = TwoInputs()
    graph = model_graph(model, (torch.randn(2, 3), torch.randn(2, 2)), tag="pair")
    assert graph.tag == "pair" and graph.ops_method == "torch.fx"
    nodes = _check_ops(graph)
    assert [n["name"] for n in nodes.values() if n["op"] == "placeholder"] == ["x", "y"]
    _check_hierarchy(model, graph, {"": [2, 5], "left": [2, 5], "right": [2, 5]})


@pytest.mark.parametrize("model_class", [Trainable, ValueBranch, ShapeBranch])
@pytest.mark.parametrize("training", [True, False])
def test_model_left_as_found(model_class: type[nn.Module], training: bool) -> None:
    torch.manual_seed(0)
    model = model_class().train(training)
    model.fc.weight.requires_grad_(False)
    x = torch.randn(2, 3, 6, 6) if model_class is Trainable else torch.randn(2, 4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [(m, m.training) for m in model.modules()]
    rng = torch.get_rng_state()
    model_graph(model, x)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    assert all(m.training == was for m, was in flags)
    assert not model.fc.weight.requires_grad and model.fc.bias.requires_grad
    assert hooks_left(model) == 0
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize(
    ("example", "match"),
    [(torch.randn(2, 7), "could not run"), ([], "tuple"), ("x", "tuple"), ((torch.randn(2, 4), 3), "tuple")],
)
def test_bad_example(example: object, match: str) -> None:
    model = ShapeBranch()
    with pytest.raises(BadInputError, match=match):
        model_graph(model, example)  # type: ignore[arg-type]
    assert hooks_left(model) == 0


def test_not_a_module() -> None:
    with pytest.raises(BadInputError, match="Module"):
        model_graph(lambda x: x, torch.randn(2))  # type: ignore[arg-type]
