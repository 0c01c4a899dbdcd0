"""The erasing dependency graph (OTOv3): removal structures found on a compiled
supernet, a traced torchvision model and a parallel supernet, their nesting, the
validity oracle, and that zeroing a structure's variables really zeroes its output."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import nasdsl
from nasdsl.compiler.erasing import erased_module, erasing_graph
from nasdsl.compiler.graph import build_graph
from nasdsl.compiler.module import build_module
from nasdsl.compiler.parallel import ParallelSupernet
from nasdsl.compiler.trace import trace
from nasdsl.language.errors import NasError

SPACES = Path(__file__).resolve().parents[1] / "spaces"


@pytest.fixture(scope="module")
def superresnet():
    space = nasdsl.load(SPACES / "superresnet.nas").bind(C=4, in_channels=1, resolution=28)
    graph = build_graph(space, space.preset("supernet"))
    return graph, build_module(graph).eval(), erasing_graph(graph)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    graph = trace(model, torch.randn(1, 3, 32, 32))
    return graph, model, erasing_graph(graph)


def _outputs_when_zeroed(module, erasing, name, x) -> torch.Tensor:
    """The structure's output on `x` after its variables are set to zero (on a copy)."""
    state = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        for param, index in erasing.variables(module, name):
            p = module.get_parameter(param)
            (p if index is None else p[index : index + 1]).zero_()
    seen = {}
    handle = module.get_submodule(name).register_forward_hook(lambda m, i, out: seen.update(out=out.clone()))
    try:
        module(x)
    finally:
        handle.remove()
        module.load_state_dict(state)
    return seen["out"]


def test_superresnet_every_branch_and_projection_is_a_structure(superresnet):
    graph, module, erasing = superresnet
    s = erasing.structures
    # 16 units x 4 summed branches, and the 3 projection shortcuts; identity shortcuts hold nothing to zero
    assert len(s) == 67
    assert sorted(n for n in s if "shortcut" in n) == [f"stage{k}.unit.shortcut.bn" for k in (2, 3, 4)]
    basic = s["stage1.unit.pick.basic.basic.bn2"]
    assert basic.join == "stage1.unit.add" and basic.position == 0 and basic.gate is None
    assert basic.nodes == {f"stage1.unit.pick.basic.basic.{n}" for n in ("conv1", "bn1", "relu", "conv2", "bn2")}
    assert basic.params == sum(graph.nodes[n]["params"] for n in basic.nodes)
    assert all(x.parent is None and x.children == () for x in s.values())  # the branches of a flat sum do not nest
    x = torch.randn(2, 1, 28, 28)
    for name in ["stage1.unit.pick.basic.basic.bn2", "stage3.rest.1.unit.unit.pick.sep5.sep5.bn2",
                 "stage4.unit.shortcut.bn", "stage2.rest.2.unit.unit.pick.bottleneck.bottleneck.bn3"]:
        assert torch.count_nonzero(_outputs_when_zeroed(module, erasing, name, x)) == 0, name


def test_superresnet_validity(superresnet):
    _, _, erasing = superresnet
    s = erasing.structures
    rest = [n for n in s if n.startswith("stage1.rest.0.")]
    assert len(rest) == 4 and erasing.check(rest)  # the identity shortcut carries the unit
    first = [n for n in s if n.startswith("stage2.unit.")]
    assert erasing.check(first[:4])  # the projection carries it
    verdict = erasing.check(first)
    assert not verdict and verdict.emptied == ("stage2.unit.add",)
    assert verdict.reasons == ("`stage2.unit.relu` (relu) loses its input `stage2.unit.add`",)
    assert erasing.check([]).ok
    with pytest.raises(NasError, match="no removal structure") as err:
        erasing.check(["stage1.unit.pick.basic.basic.bn3"])
    assert "stage1.unit.pick.basic.basic.bn2" in str(err.value.hint)


def test_traced_resnet18_structures_are_its_residual_bodies_and_projections(resnet18):
    graph, model, erasing = resnet18
    s = erasing.structures
    assert list(s) == ["layer1.0.bn2", "layer1.1.bn2", "layer2.0.bn2", "layer2.0.downsample.1", "layer2.1.bn2",
                       "layer3.0.bn2", "layer3.0.downsample.1", "layer3.1.bn2", "layer4.0.bn2",
                       "layer4.0.downsample.1", "layer4.1.bn2"]
    assert s["layer1.0.bn2"].nodes == {"layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu", "layer1.0.conv2",
                                       "layer1.0.bn2"}
    assert s["layer2.0.downsample.1"].nodes == {"layer2.0.downsample.0", "layer2.0.downsample.1"}
    x = torch.randn(2, 3, 32, 32)
    for name in s:
        assert torch.count_nonzero(_outputs_when_zeroed(model, erasing, name, x)) == 0, name
    # every parameter of a body is one of its variables
    assert {p for p, _ in erasing.variables(model, "layer1.0.bn2")} == {
        f"layer1.0.{n}" for n, _ in model.layer1[0].named_parameters() if not n.startswith("downsample")}


_DOWNSAMPLED = {("layer2.0.bn2", "layer2.0.downsample.1"), ("layer3.0.bn2", "layer3.0.downsample.1"),
                ("layer4.0.bn2", "layer4.0.downsample.1")}


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_resnet18_removal_is_valid_unless_a_stride_block_loses_both_paths(resnet18, data):
    _, _, erasing = resnet18
    removed = data.draw(st.sets(st.sampled_from(sorted(erasing.structures))))
    expected = not any(body in removed and projection in removed for body, projection in _DOWNSAMPLED)
    assert erasing.check(removed).ok == expected


def test_parallel_supernet_options_nest_in_their_edges():
    space = nasdsl.load(SPACES / "nb201.nas").bind(C=4, N=1)
    net = ParallelSupernet(space, (3, 16, 16)).eval()
    erasing = erasing_graph(net.network)
    s = erasing.structures
    cell = "stage1.cell.0"
    # every option of every edge, gated: a skip, a pool and `none` are removable by their gate entry
    options = [f"{site}.{label}" for site, labels in net.sites.items() for label in labels]
    assert sum(1 for x in s.values() if x.gate is not None) == len(options)
    edge = s[f"{cell}.x2.op1"]  # the edge x0 -> x2: one input of node 2's sum, holding its five options
    assert edge.gate is None and edge.join == f"{cell}.x2.add" and len(edge.children) == 5
    assert all(s[c].parent == edge.name and s[c].gate[0] == edge.name for c in edge.children)
    assert erasing.variables(net, edge.children[1]) == [(f"{edge.name}.gate", 1)]
    assert len(erasing.variables(net, edge.name)) == 1 + 2 * 3  # the gate; two relu-conv-bn's conv, bn weight, bias
    # every option of an edge erased: its sum is emptied, node 2 keeps its other edge
    verdict = erasing.check(edge.children)
    assert verdict and verdict.emptied == (edge.name,)
    # node 1 is one edge, read by the convs of the edges out of it: it may not go alone
    lone = [c for c in s if c.startswith(f"{cell}.x1.op.")]
    assert len(lone) == 5 and s[lone[0]].parent is None
    assert not erasing.check(lone)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        for _, index in (v for c in edge.children for v in erasing.variables(net, c)):
            net.get_parameter(f"{edge.name}.gate")[index] = 0.0
        seen = {}
        handle = net.get_submodule(edge.name).register_forward_hook(lambda m, i, out: seen.update(out=out.clone()))
        net(x)
        handle.remove()
    assert torch.count_nonzero(seen["out"]) == 0


class _Branches(nn.Module):
    """Three summed branches: a conv-bn (removable), a conv then sigmoid (never zero),
    and one whose conv is also called on the shortcut (its weights are not its own)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.b = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Sigmoid())
        self.shared = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.a(x) + self.b(x) + torch.relu(self.shared(x)) + self.shared(x).abs()


def test_only_structures_that_zeroing_erases_are_listed():
    model = _Branches().eval()
    graph = trace(model, torch.randn(1, 3, 8, 8))
    assert list(erasing_graph(graph).structures) == ["a.1"]


def _zero(module, erasing, names):
    with torch.no_grad():
        for name in names:
            for param, index in erasing.variables(module, name):
                p = module.get_parameter(param)
                (p if index is None else p[index : index + 1]).zero_()


def test_the_erased_module_computes_what_the_zeroed_network_does():
    space = nasdsl.load(SPACES / "superresnet.nas").bind(C=4, in_channels=1, resolution=28)
    graph = build_graph(space, space.preset("supernet"))
    module = build_module(graph).eval()
    erasing = erasing_graph(graph)
    names = [n for n in erasing.structures if n.startswith("stage1.rest.0.")] + [
        "stage2.unit.pick.basic.basic.bn2", "stage2.unit.pick.sep5.sep5.bn2", "stage3.unit.shortcut.bn"]
    _zero(module, erasing, names)
    small = erased_module(erasing, module, names).eval()
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(small(x), module(x), atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) == erasing.erased(names).graph["params"] == (
        graph.graph["params"] - sum(erasing.structures[n].params for n in names))
    with pytest.raises(NasError, match="leaves no valid network: `stage2.unit.relu`"):
        erasing.erased([n for n in erasing.structures if n.startswith("stage2.unit.")])


def test_the_erased_parallel_supernet_keeps_its_gates_for_the_options_left():
    space = nasdsl.load(SPACES / "nb201.nas").bind(C=4, N=1)
    net = ParallelSupernet(space, (3, 16, 16)).eval()
    erasing = erasing_graph(net.network)
    with torch.no_grad():
        for gate in net.gates.values():
            gate.uniform_(0.5, 1.5)
    cell = "stage1.cell.0"
    names = list(erasing.structures[f"{cell}.x2.op1"].children) + [
        f"{cell}.x3.op2.none.zero", f"{cell}.x3.op2.nor_conv_3x3.relu_conv_bn.bn"]
    _zero(net, erasing, names)
    small = erased_module(erasing, net, names).eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(small(x), net(x), atol=1e-5)
    sums = erasing.erased(names)
    assert f"{cell}.x2.op1" not in sums  # emptied, and gone with its options
    assert sums.nodes[f"{cell}.x3.op2"]["args"]["labels"] == ("skip_connect", "nor_conv_1x1", "avg_pool_3x3")
    assert torch.equal(small.get_parameter(f"{cell}.x3.op2.gate"), net.get_parameter(f"{cell}.x3.op2.gate")[[1, 2, 4]])


def test_the_erased_traced_model_is_its_own_graph_without_the_branches(resnet18):
    graph, model, erasing = resnet18
    names = ["layer1.0.bn2", "layer3.0.downsample.1", "layer4.1.bn2"]
    zeroed = copy.deepcopy(model)
    _zero(zeroed, erasing, names)
    small = erased_module(erasing, zeroed, names).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(small(x), zeroed(x), atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) == graph.graph["params"] - sum(
        erasing.structures[n].params for n in names)
    assert not hasattr(small.get_submodule("layer3.0"), "downsample") and "layer1_0_conv1" not in small.code
    assert erasing.erased(names).graph["params"] == sum(p.numel() for p in small.parameters())


def test_a_parallel_remainder_is_its_derivation_or_the_nearest_one():
    space = nasdsl.load(SPACES / "nb201.nas").bind(C=4, N=1)
    net = ParallelSupernet(space, (3, 16, 16))
    erasing = erasing_graph(net.network)
    d = space.sample(seed=3)
    kept = net.kept(d)
    others = [s.name for s in erasing.structures.values()
              if s.gate is not None and net.sites[s.gate[0]][s.gate[1]] not in kept[s.gate[0]]]
    assert erasing.check(others)  # every edge keeps its one option
    assert net.nearest(erasing.left(others)) == (d, 0)
    # one edge erased whole and nothing else: every other place keeps five options, the derivation one
    with torch.no_grad():
        for gate in net.gates.values():
            gate.uniform_(0.1, 1.0)
    edge = "stage1.cell.0.x2.op1"
    near, distance = net.nearest(erasing.left([edge]))
    assert distance == 4 * (len(net.sites) - 1) + 1
    kept = net.kept(near)

    def strongest(site, skip=()):  # nb201's cells share one genotype: an edge's three places choose together
        total = sum(net.gates[f"stage{k}.{site}"].abs() for k in (1, 2, 3) if f"stage{k}.{site}" not in skip)
        return {net.sites[f"stage1.{site}"][int(total.argmax())]}

    assert kept[edge] == strongest("cell.0.x2.op1", skip={edge})  # the erased place has no say
    assert kept["stage2.cell.0.x3.op1"] == strongest("cell.0.x3.op1")


def test_a_module_is_built_from_an_erased_graph_of_under_half_its_nodes():
    # networkx's subgraph view of few nodes iterates them in set order; the module is
    # built in the graph's order, so the erased graph must keep the topological one
    space = nasdsl.load(SPACES / "superresnet.nas").bind(C=4, in_channels=1, resolution=28)
    graph = build_graph(space, space.preset("supernet"))
    module = build_module(graph).eval()
    erasing = erasing_graph(graph)
    names = [n for n in erasing.structures if ".pick." in n and not n.endswith("dil3.dil3.bn2")]
    assert erasing.erased(names).number_of_nodes() < graph.number_of_nodes() / 2
    _zero(module, erasing, names)
    small = erased_module(erasing, module, names).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(small(x), module(x), atol=1e-5)


class _FunctionalNorm(nn.BatchNorm2d):
    """timm's BatchNormAct2d without its activation: a BatchNorm2d calling F.batch_norm."""

    def forward(self, x):
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                        self.training, self.momentum, self.eps)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), _FunctionalNorm(8))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.body(x))


def test_a_functional_norm_is_part_of_its_branch_and_erased_with_it():
    torch.manual_seed(0)
    model = _Residual().eval()
    graph = trace(model, torch.randn(1, 3, 8, 8))
    erasing = erasing_graph(graph)
    (name,) = erasing.structures
    assert graph.nodes[name]["op"] == "bn" and graph.nodes[name]["module"] == "body.1"
    assert {p for p, _ in erasing.variables(model, name)} == {"body.0.weight", "body.0.bias", "body.1.weight",
                                                               "body.1.bias"}
    zeroed = copy.deepcopy(model)
    _zero(zeroed, erasing, [name])
    small = erased_module(erasing, zeroed, [name]).eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(small(x), zeroed(x), atol=1e-5) and torch.allclose(zeroed(x), model.head(model.stem(x)))
