"""The tracer: any module becomes the compiler's graph, and the graph tells the
truth about it (shapes as ShapeProp sees them, params and MACs as torch counts them)."""

import json
import math
from collections import Counter
from functools import lru_cache

import pytest
import torch
import torch.fx
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

import nasdsl
from nasdsl.cli.commands import main
from nasdsl.compiler import primitives
from nasdsl.compiler.flops import flop_counter
from nasdsl.compiler.groups import channel_groups
from nasdsl.compiler.trace import trace
from nasdsl.language.expr import type_name

SCHEMA = {"op", "args", "path", "rules", "inputs", "in_shapes", "shape", "params", "macs"}


class Tiny(nn.Module):
    """A residual, a concat, a ReLU called three times, a conv called twice, a
    parameter read as an attribute, a non-square kernel and a view that flattens."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.wide = nn.Conv2d(8, 4, (1, 3), padding=(0, 1))
        self.twice = nn.Conv2d(12, 12, 1)
        self.scale = nn.Parameter(torch.ones(1, 12, 1, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.relu(self.stem(x))
        x = self.relu(x + self.body(x))
        x = torch.cat([x, self.wide(x)], dim=1)
        x = self.relu(self.twice(self.twice(x)) * self.scale)
        x = F.relu(self.pool(x))
        return self.head(x.view(x.size(0), -1))


@lru_cache(maxsize=None)
def traced(name):
    """(module, example, graph); torchvision models at 64x64, batch 2."""
    torch.manual_seed(0)
    if name == "tiny":
        module, x = Tiny(), torch.randn(2, 3, 16, 16)
    else:
        module, x = torchvision.models.get_model(name, weights=None), torch.randn(2, 3, 64, 64)
    return module, x, trace(module, x)


def fx_shapes(module, x):
    """{graph node id: per-sample shape} from an independent symbolic_trace + ShapeProp;
    the k-th call of a module is `path_k`, as the tracer names it."""
    module.eval()
    gm = torch.fx.symbolic_trace(module)
    with torch.no_grad():
        ShapeProp(gm).propagate(x)
    shapes, calls = {}, Counter()
    for n in gm.graph.nodes:
        meta = n.meta.get("tensor_meta")
        if n.op in ("call_module", "call_function", "call_method") and isinstance(meta, TensorMetadata):
            if n.op == "call_module":
                k = calls[n.target]
                calls[n.target] += 1
                node_id = n.target if k == 0 else f"{n.target}_{k}"
            else:
                node_id = n.name
            shapes[node_id] = tuple(meta.shape[1:])
    return shapes


@pytest.mark.parametrize("name", ["tiny", "resnet18", "mobilenet_v3_small", "regnet_x_400mf"])
def test_graph_tells_the_truth_about_the_module(name):
    module, x, graph = traced(name)
    module.eval()
    with torch.no_grad(), flop_counter() as counter:
        y = module(x)
    assert graph.graph["space"] == type(module).__name__
    assert graph.graph["input_shape"] == tuple(x.shape[1:])
    assert graph.graph["params"] == sum(p.numel() for p in module.parameters())
    assert graph.graph["macs"] == counter.get_total_flops() // 2 // x.shape[0]
    assert graph.nodes[graph.graph["outputs"][0]]["shape"] == tuple(y.shape[1:])
    shapes = fx_shapes(module, x)
    operations = [n for n, a in graph.nodes(data=True) if a["op"] not in ("input", "output")]
    assert sorted(operations) == sorted(shapes)
    for node_id in operations:
        assert graph.nodes[node_id]["shape"] == shapes[node_id], node_id


@pytest.mark.parametrize("name", ["tiny", "resnet18", "mobilenet_v3_small", "regnet_x_400mf"])
def test_graph_follows_the_compilers_schema(name):
    module, _, graph = traced(name)
    submodules = dict(module.named_modules())
    for node_id, a in graph.nodes(data=True):
        # and the torch.fx node's name; and, for a function on one submodule's tensors, that submodule
        assert set(a) - {"module", "call"} == SCHEMA | {"fx"} and a["path"] == node_id, node_id
        assert "module" not in a or a["module"] in submodules, node_id
        assert all(i in graph for i in a["inputs"]), node_id
        assert {(i, node_id) for i in a["inputs"]} == set(graph.in_edges(node_id)), node_id
        assert a["in_shapes"] == [graph.nodes[i]["shape"] for i in a["inputs"]], node_id
        assert isinstance(a["rules"], tuple)
        if a["op"] not in ("input", "output"):
            assert a["rules"][0] == type(module).__name__
        if node_id in submodules:  # a module's first call: its own parameters
            assert a["params"] == sum(p.numel() for p in submodules[node_id].parameters()), node_id
        prim = primitives.get(a["op"])
        if prim is not None:  # nasdsl's vocabulary means what nasdsl means by it
            assert list(a["args"]) == [arg.name for arg in prim.args], node_id
            assert all(type_name(a["args"][arg.name]) == arg.type for arg in prim.args), node_id
            assert tuple(prim.shape(a["args"], a["in_shapes"])) == a["shape"], node_id
            assert prim.macs(a["args"], a["in_shapes"], a["shape"]) == a["macs"], node_id
        else:
            assert a["op"] in ("input", "output", "add", "mul", "concat") or ":" in a["op"], node_id
    assert [n for n in graph if graph.nodes[n]["op"] == "output"] == ["output"]
    assert graph.nodes["output"]["inputs"] == graph.graph["outputs"]


def test_resnet18_in_nasdsls_words():
    module, _, graph = traced("resnet18")
    nodes = graph.nodes
    assert nodes["conv1"]["op"] == "conv"
    assert nodes["conv1"]["args"] == {"out": 64, "kernel": 7, "stride": 2, "groups": 1, "dilation": 1,
                                      "bias": False, "padding": 3}
    assert nodes["bn1"]["op"] == "bn" and nodes["bn1"]["args"] == {"affine": True, "eps": 1e-5, "momentum": 0.1}
    assert nodes["maxpool"]["args"] == {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": False}
    assert nodes["avgpool"]["op"] == "gap" and nodes["flatten"]["op"] == "flatten"
    assert nodes["fc"]["op"] == "linear" and nodes["fc"]["args"] == {"out": 1000, "bias": True}
    # BasicBlock calls self.relu twice: two nodes, one module
    assert nodes["layer1.0.relu"]["inputs"] == ["layer1.0.bn1"]
    assert nodes["layer1.0.relu_1"]["op"] == "relu" and nodes["layer1.0.relu_1"]["inputs"] == ["add"]
    assert nodes["add"]["op"] == "add" and nodes["add"]["inputs"] == ["layer1.0.bn2", "maxpool"]
    assert nodes["layer1.0.conv1"]["rules"] == ("ResNet", "Sequential", "BasicBlock")
    assert module.get_submodule("layer2.0.downsample.0") is not None
    assert nodes["layer2.0.downsample.0"]["args"]["stride"] == 2
    assert Counter(a["op"] for _, a in graph.nodes(data=True))["add"] == 8


def test_mobilenet_squeeze_excitation_is_a_mul():
    _, _, graph = traced("mobilenet_v3_small")
    nodes = graph.nodes
    se = "features.1.block.1"
    assert [nodes[f"{se}.{part}"]["op"] for part in ("avgpool", "fc1", "activation", "fc2", "scale_activation")] \
        == ["gap", "conv", "relu", "conv", "hsigmoid"]
    assert nodes["mul"]["op"] == "mul" and nodes["mul"]["inputs"] == [f"{se}.scale_activation", "features.1.block.0.2"]
    assert nodes["mul"]["in_shapes"] == [(16, 1, 1), (16, 16, 16)]
    assert nodes["features.0.2"]["op"] == "hswish"
    assert nodes["features.1.block.0.0"]["args"]["groups"] == 16  # depthwise


def test_tiny_module_by_hand():
    _, _, graph = traced("tiny")
    nodes = graph.nodes
    assert [nodes[n]["inputs"] for n in ("relu", "relu_1", "relu_2")] == [["stem"], ["add"], ["mul"]]
    assert nodes["add"]["inputs"] == ["relu", "body.1"] and nodes["add"]["op"] == "add"
    assert nodes["cat"]["op"] == "concat" and nodes["cat"]["shape"] == (12, 16, 16)
    assert nodes["wide"]["op"] == "conv2d" and (nodes["wide"]["args"]["kernel_h"], nodes["wide"]["args"]["kernel_w"]) == (1, 3)
    # a module called twice counts its parameters once; the attribute's count at its reader
    assert nodes["twice"]["params"] == 12 * 12 + 12 and nodes["twice_1"]["params"] == 0
    assert nodes["twice_1"]["op"] == "conv" and nodes["twice_1"]["macs"] == nodes["twice"]["macs"]
    assert nodes["mul"]["op"] == "function:mul" and nodes["mul"]["params"] == 12  # x * parameter: no merge
    assert nodes["relu_3"]["op"] == "relu" and nodes["relu_3"]["rules"] == ("Tiny",)  # F.relu
    assert nodes["view"]["op"] == "flatten" and nodes["view"]["inputs"] == ["relu_3"]  # x.size(0) is no node
    assert graph.graph["outputs"] == ["head"]


def test_tuples_of_tensors_and_training_mode():
    """A split of the channels read item by item is a `slice` per item; any other
    tuple (here halves of the rows) is one node, and each item read a node that picks it."""
    class Split(nn.Module):
        def forward(self, x):
            a, b = x.chunk(2, dim=1)
            top, bottom = x.chunk(2, dim=2)
            return torch.cat([b, F.dropout(a, 0.5, self.training)], dim=1), top + bottom

    module = Split().train()
    graph = trace(module, torch.randn(1, 4, 8, 8))
    assert module.training  # restored
    assert "chunk" not in graph and graph.nodes["getitem_1"]["op"] == "slice"
    assert graph.nodes["getitem_1"]["args"] == {"start": 2, "stop": 4} and graph.nodes["getitem_1"]["inputs"] == ["input"]
    assert graph.nodes["dropout"]["inputs"] == ["getitem"] and graph.nodes["dropout"]["in_shapes"] == [(2, 8, 8)]
    assert graph.nodes["cat"]["op"] == "concat" and graph.nodes["cat"]["inputs"] == ["getitem_1", "dropout"]
    assert graph.nodes["chunk_1"]["shape"] is None and graph.nodes["chunk_1"]["op"] == "function:chunk"
    items = graph.nodes["add"]["inputs"]
    assert [graph.nodes[i]["call"].args[1] for i in items] == [0, 1]
    assert all(graph.nodes[i]["inputs"] == ["chunk_1"] and graph.nodes[i]["shape"] == (4, 4, 8) for i in items)


def test_split_items_and_channel_slices_are_pruned_by_new_sizes_in_the_code():
    """mixnet, res2net, cspnet, ghostnet and dpn split channels (`torch.split` with
    sizes in the model's code, `chunk`, `x[:, a:b]`, an item by a negative index): each
    item is a slice of its tensor, so its channels are groups, and a pruned model is the
    traced model's torch.fx code with each slice's new bounds."""
    from nasdsl.compiler.groups import prune, zero_removed

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.sizes = nn.Conv2d(3, 12, 1), [4, 8]
            self.a, self.b = nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.mix, self.d = nn.Conv2d(14, 10, 1), nn.Conv2d(5, 5, 1)
            self.head = nn.Linear(5 + 5 + 8, 3)

        def forward(self, x):
            parts = torch.split(self.stem(x).relu(), self.sizes, 1)
            y = torch.cat([self.a(parts[0]), self.b(parts[-1])], 1)
            u, v = self.mix(y).chunk(2, dim=1)
            return self.head(torch.cat([self.d(u), v, y[:, 6:]], 1).mean((2, 3)))

    model = Mixed().eval()
    x = torch.randn(2, 3, 6, 6)
    graph = trace(model, x[:1])
    slices = {a["fx"]: a["args"] for _, a in graph.nodes(data=True) if a["op"] == "slice"}
    assert sorted(slices.values(), key=str) == sorted([{"start": 0, "stop": 4}, {"start": 4, "stop": 12},
                                                       {"start": 0, "stop": 5}, {"start": 5, "stop": 10},
                                                       {"start": 6, "stop": 14}], key=str)
    groups = {g.name: g for g in channel_groups(graph)}
    assert {n: g.channels for n, g in groups.items() if g.prunable} == \
        {"stem": 4, "stem#2": 8, "a": 6, "mix": 5, "mix#2": 5, "d": 5}
    keep = {"stem": [0, 3], "stem#2": [0, 2, 4, 6], "a": [1, 2, 5], "mix": [0, 1], "mix#2": [2, 4], "d": [3]}
    small = prune(graph, model, keep).eval()
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_removed(graph, model, keep)(x))
    assert small.b.groups == 4 and small.head.in_features == 1 + 2 + 4
    assert set(small.state_dict()) == set(model.state_dict())
    # a pruning that moves no bounds keeps the model's own code
    assert type(prune(graph, model, {"d": [0, 1]})) is Mixed


def test_what_cannot_be_traced_is_a_nas_error():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(nasdsl.NasError) as caught:
        trace(Branchy(), torch.randn(1, 3))
    line = Branchy.forward.__code__.co_firstlineno + 1
    assert f"cannot trace Branchy (forward, test_trace.py:{line})" in str(caught.value)
    assert "Traceback" not in str(caught.value) and "x.shape" in caught.value.hint
    with pytest.raises(nasdsl.NasError, match="at `stem`"):
        trace(Tiny(), torch.randn(1, 4, 16, 16))


def test_code_that_branches_on_a_shape_is_traced_for_the_example_or_kept_whole():
    """timm's shape checks (vgg's head, mobilevit, efficientvit, tiny_vit) branch on a
    traced size: traced for the example's sizes (the batch's stays free), the layers
    inside are nodes; without an input shape, or where that trace would miss a
    parameter, that submodule is one node, a leaf, with its parameters and MACs."""
    from nasdsl.compiler.fxtrace import fx_trace

    class Pad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3)
            self.cache = {}

        def forward(self, x):
            if x.shape[-1] < 8:
                x = F.pad(x, (1, 1, 1, 1))
            self.cache["last"] = x  # a trace would leave a proxy here; it is put back
            y = self.conv(x) * torch.tensor(1.5)  # a constant: torch.fx keeps it on the root
            return y.reshape(x.size(0), 4, math.ceil(x.shape[-2] / 1) - 2, -1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.blocks = nn.Conv2d(3, 4, 1), nn.Sequential(nn.ReLU(), Pad(), Pad())
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)))

    model, x = Net().eval(), torch.randn(1, 3, 4, 4)
    graph = trace(model, x)
    assert model.blocks[1].cache == {}
    assert graph.nodes["blocks.1.conv"]["op"] == graph.nodes["blocks.2.conv"]["op"] == "conv"
    assert graph.nodes["blocks.1.conv"]["in_shapes"] == [(4, 6, 6)]  # padded: the example's branch
    assert graph.graph["params"] == sum(p.numel() for p in model.parameters())
    with flop_counter() as counter:
        model(x)
    assert graph.graph["macs"] == counter.get_total_flops() // 2
    gm = fx_trace(model, (3, 4, 4))
    with torch.no_grad():
        torch.testing.assert_close(gm(torch.randn(3, 3, 4, 4).mul(0).add(x)), model(x.expand(3, -1, -1, -1)))
    leaves = [n.target for n in fx_trace(model).graph.nodes if n.op == "call_module"]
    assert leaves == ["stem", "blocks.0", "blocks.1", "blocks.2", "head"]


def test_cli_trace(capsys):
    assert main(["trace", "torchvision:resnet18", "--input-shape", "3,64,64", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    _, _, graph = traced("resnet18")
    assert data == {"model": "torchvision:resnet18", "input_shape": [3, 64, 64], "output_shape": [1000],
                    "params": graph.graph["params"], "macs": graph.graph["macs"], "nodes": graph.number_of_nodes(),
                    "groups": 13, "prunable_groups": 12,  # as torch-pruning counts them (see test_groups.py)
                    "removal_structures": 11}  # 8 residual bodies, 3 projection shortcuts (test_erasing.py)
    assert main(["trace", "torchvision:resnet19"]) == 1
    assert "did you mean `resnet18`?" in capsys.readouterr().err
    assert main(["trace", "resnet18"]) == 1
    assert "torchvision:NAME" in capsys.readouterr().err


def test_functional_forms_and_in_place_methods():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            y.add_(x)  # in place: what reads y from here on reads the sum
            a = F.max_pool2d(F.hardswish(y), 2)
            b = F.avg_pool2d(torch.sigmoid(a), 3, 1, 1)
            c = torch.add(a, b).relu() * b.mean((2, 3), keepdim=True)
            return torch.flatten(F.adaptive_avg_pool2d(F.relu6(c), 1), 1) + y.mean((2, 3))

    graph = trace(Functional(), torch.randn(2, 4, 8, 8))
    ops = {n: (a["op"], a["args"]) for n, a in graph.nodes(data=True)}
    assert ops["add_"] == ("add", {})
    assert graph.nodes["hardswish"]["inputs"] == ["add_"] and ops["hardswish"][0] == "hswish"
    assert ops["max_pool2d"] == ("maxpool", {"kernel": 2, "stride": 2, "padding": 0, "ceil_mode": False})
    assert ops["avg_pool2d"] == ("avgpool", {"kernel": 3, "stride": 1, "padding": 1, "count_include_pad": True,
                                             "ceil_mode": False})
    assert [ops[n][0] for n in ("sigmoid", "add", "relu", "mean", "mul", "relu6", "adaptive_avg_pool2d", "flatten")] \
        == ["sigmoid", "add", "relu", "gap", "mul", "relu6", "gap", "flatten"]
    assert ops["mean_1"][0] == "spatial_mean" and graph.nodes["mean_1"]["inputs"] == ["add_"]  # no keepdim: (C,)
    assert ops["add_1"][0] == "add" and graph.graph["macs"] == 16 * 64


def test_a_module_keeps_its_path_when_a_function_took_its_name_first():
    class Clash(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(F.relu(x)) + self.relu(x)  # fx names F.relu `relu`

    module = Clash()
    graph = trace(module, torch.randn(1, 3))
    assert graph.nodes["relu"]["inputs"] == [graph.nodes["relu"]["inputs"][0]] != ["input"]
    assert module.get_submodule("relu") is module.relu
    assert sorted(graph) == ["add", "input", "output", "relu", "relu_1", "relu_2"]


def test_ceil_mode_pooling_is_nasdsls_pooling():
    """A pool with ceil_mode (googlenet, squeezenet) is nasdsl's maxpool/avgpool, its shape
    computed as torch does, hanging windows included."""
    for pool in (nn.MaxPool2d(3, 2, ceil_mode=True), nn.AvgPool2d(3, 2, padding=1, ceil_mode=True),
                 nn.MaxPool2d(2, 2, ceil_mode=True)):
        for side in (7, 8, 13, 14):
            model = nn.Sequential(nn.Conv2d(3, 4, 1), pool)
            graph = trace(model, torch.randn(1, 3, side, side))
            (node,) = [a for _, a in graph.nodes(data=True) if a["op"] in ("maxpool", "avgpool")]
            assert node["args"]["ceil_mode"] is True
            assert node["shape"] == tuple(model(torch.randn(1, 3, side, side)).shape[1:])
            built = primitives.get(node["op"]).module(node["args"], node["in_shapes"])
            assert built(torch.randn(1, 4, side, side)).shape[1:] == node["shape"]


def test_cli_traces_a_timm_model_and_names_an_unknown_one(capsys):
    pytest.importorskip("timm")
    assert main(["trace", "timm:lcnet_050", "--input-shape", "3,64,64", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "timm:lcnet_050" and data["output_shape"] == [1000] and data["prunable_groups"] == 17  # torch-pruning: 17
    assert main(["trace", "timm:lcnet_05"]) == 1
    err = capsys.readouterr().err
    assert "unknown timm model `lcnet_05`" in err and "did you mean `lcnet_0" in err and "Traceback" not in err


def test_channels_last_blocks_are_tokens_to_their_linear_layers_and_norms():
    """convnext's block: a map permuted to (H, W, C), normalised and put through an MLP
    over C, permuted back, scaled and added; swin's: a function on the channels-last map
    (here a roll) between them, and a layer scale over the last axis (edgenext). The MLP
    widths are groups; the stream through the LayerNorms stays whole; a conv reading a
    channels-last map is a barrier."""
    from nasdsl.compiler.groups import prune, zero_removed

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.norm = nn.LayerNorm(8, eps=1e-6)
            self.fc1, self.act, self.fc2 = nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8)
            self.gamma = nn.Parameter(torch.full((8, 1, 1), 0.5))
            self.norm2, self.fc3, self.fc4 = nn.LayerNorm(8), nn.Linear(8, 16), nn.Linear(16, 8)
            self.gamma2 = nn.Parameter(torch.full((8,), 0.3))
            self.odd = nn.Conv2d(5, 5, 1)

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.fc2(self.act(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
            x = x + self.gamma * y
            z = torch.roll(x.permute(0, 2, 3, 1), (1, 1), dims=(1, 2))  # still channels-last
            z = z + self.gamma2 * self.fc4(F.gelu(self.fc3(self.norm2(z))))
            return self.odd(z).permute(0, 3, 1, 2).mean((2, 3))  # a conv on (H, W, C): a barrier

    model = Block().eval()
    x = torch.randn(2, 8, 5, 5)
    graph = trace(model, x)
    ops = {n: a["op"] for n, a in graph.nodes(data=True)}
    assert [ops[n] for n in ("norm", "fc1", "act", "fc2", "mul", "add", "norm2", "fc3", "gelu", "fc4", "mul_1",
                             "add_1")] == \
        ["layernorm", "linear", "gelu", "linear", "scale", "add", "layernorm", "linear", "gelu", "linear", "scale",
         "add"]
    assert primitives.channels_last(graph.nodes["mul_1"]["shape"])
    assert primitives.channels_last(graph.nodes["fc1"]["shape"]) and graph.nodes["fc1"]["shape"] == (5, 5, 32)
    assert primitives.channels_last(graph.nodes["roll"]["shape"]) and ops["odd"] == "module:Conv2d"
    assert not primitives.channels_last(graph.nodes["mul"]["shape"])  # permuted back: channels first
    groups = {g.name: g for g in channel_groups(graph)}
    assert sorted(n for n, g in groups.items() if g.prunable) == ["fc1", "fc3"]
    keep = {"fc1": range(0, 32, 3), "fc3": range(5)}
    with torch.no_grad():
        torch.testing.assert_close(prune(graph, model, keep)(x), zero_removed(graph, model, keep)(x))
    assert prune(graph, model, keep).fc2.in_features == 11


def test_f_linear_and_grouped_convs_are_nasdsls_and_their_outputs_are_groups():
    """timm's `Linear` calls `F.linear` on its own weight: `linear`, sliced through its
    module. A grouped conv (not depthwise) makes new channels, as torch-pruning has it:
    its output channels are a group, cut by as many in each of its groups, and so are
    the input channels it reads; a cut that is uneven across its groups is refused."""
    from nasdsl.compiler.groups import prune, zero_removed
    from nasdsl.language.errors import NasError

    class Head(nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight, self.bias)

    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1, groups=4), nn.BatchNorm2d(12),
                          nn.ReLU(), nn.Conv2d(12, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), Head(6, 5),
                          nn.ReLU(), Head(5, 3)).eval()
    x = torch.randn(2, 3, 6, 6)
    graph = trace(model, x)
    assert graph.nodes["linear"]["op"] == "linear" and graph.nodes["linear"]["module"] == "8"
    groups = {g.name: g for g in channel_groups(graph)}
    assert {n: g.channels for n, g in groups.items() if g.prunable} == {"0": 8, "2": 12, "5": 6, "linear": 5}
    keep = {"0": [0, 3, 4, 6], "2": [0, 1, 3, 4, 6, 7, 9, 10], "5": [0, 5], "linear": [1, 2, 4]}  # 1 of 2 in, 2 of 3 out
    with torch.no_grad():
        small = prune(graph, model, keep)
        torch.testing.assert_close(small(x), zero_removed(graph, model, keep)(x))
    assert (small[2].in_channels, small[2].out_channels, small[2].groups) == (4, 8, 4) and small[8].in_features == 2
    with pytest.raises(NasError, match="as many input and as many output channels in each of the 4 groups"):
        prune(graph, model, {"2": [0, 1, 2, 3, 4, 5]})  # the first two groups whole, the others gone


def test_timms_tensorflow_padded_conv_is_conv_same_and_ours_computes_the_same():
    """timm's Conv2dSame pads from the input's size (a leaf to torch.fx): `conv_same`,
    whose own module gives timm's output at odd and even sizes, strides 1 and 2."""
    conv2d_same = pytest.importorskip("timm.layers.conv2d_same")
    for k, stride, groups in ((3, 2, 1), (5, 2, 4), (3, 1, 4), (4, 2, 1)):
        theirs = conv2d_same.Conv2dSame(4, 8, k, stride, groups=groups, bias=True).eval()
        for side in (7, 8, 13):
            x = torch.randn(1, 4, side, side)
            graph = trace(nn.Sequential(theirs), x)
            node = graph.nodes["0"]
            assert node["op"] == "conv_same" and node["args"]["kernel"] == k and node["args"]["groups"] == groups
            assert node["shape"] == tuple(theirs(x).shape[1:]) == (8, -(-side // stride), -(-side // stride))
            ours = primitives.get("conv_same").module(node["args"], node["in_shapes"])
            ours.load_state_dict(theirs.state_dict())
            with torch.no_grad():
                torch.testing.assert_close(ours(x), theirs(x))


def test_a_rectangular_conv_is_conv2d_and_its_channels_are_a_group():
    """inception's 1x7 and 7x1 convolutions (and any kernel, stride, padding or dilation
    that differs per axis) are `conv2d`, whose module is torch's own conv."""
    from nasdsl.compiler.groups import prune, zero_removed

    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 6, (1, 7), padding=(0, 3)),
                          nn.Conv2d(6, 5, (3, 1), stride=(2, 1), dilation=(2, 1), groups=1), nn.Flatten(),
                          nn.LazyLinear(4)).eval()
    x = torch.randn(2, 3, 9, 9)
    model(x)
    graph = trace(model, x[:1])
    node = graph.nodes["2"]
    assert node["op"] == "conv2d" and (node["args"]["kernel_h"], node["args"]["kernel_w"]) == (1, 7)
    assert graph.nodes["3"]["shape"] == tuple(model[:4](x).shape[1:])
    for n in ("2", "3"):
        built = primitives.get("conv2d").module(graph.nodes[n]["args"], graph.nodes[n]["in_shapes"])
        built.load_state_dict(model[int(n)].state_dict())
        with torch.no_grad():
            torch.testing.assert_close(built(model[:int(n)](x)), model[:int(n) + 1](x))
    groups = {g.name: g for g in channel_groups(graph) if g.prunable}
    assert set(groups) == {"0", "2", "3"}
    keep = {"0": [0, 2, 4], "2": [1, 5], "3": [0, 1, 3]}
    with torch.no_grad():
        torch.testing.assert_close(prune(graph, model, keep)(x), zero_removed(graph, model, keep)(x))


def test_upsampling_is_upsample_and_a_gate_may_be_upsampled_before_it_multiplies():
    """hrnet's nn.Upsample and ghostnetv2's F.interpolate to a size are `upsample` (a whole
    factor); ghostnetv2's sigmoid gate (f(0) = 0.5) is upsampled, then multiplies the
    channels it gates, so a removed channel still ends at zero and the group is prunable."""
    from nasdsl.compiler.groups import prune, zero_removed

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.short = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 1)
            self.up, self.head = nn.Upsample(scale_factor=2.0), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            gate = torch.sigmoid(self.short(F.avg_pool2d(y, 2)))
            y = y * F.interpolate(gate, size=(y.shape[-2], y.shape[-1]), mode="nearest")
            return self.head(self.up(y))

    model, x = Gated().eval(), torch.randn(2, 3, 8, 8)
    graph = trace(model, x[:1])
    assert graph.nodes["interpolate"]["op"] == graph.nodes["up"]["op"] == "upsample"
    assert graph.nodes["interpolate"]["args"] == {"scale": 2, "mode": "nearest"}
    groups = {g.name: g for g in channel_groups(graph) if g.prunable}
    assert set(groups) == {"conv"} and "short" in {m[0] for m in groups["conv"].members}
    keep = {"conv": [0, 3, 4]}
    with torch.no_grad():
        torch.testing.assert_close(prune(graph, model, keep)(x), zero_removed(graph, model, keep)(x))
    bilinear = trace(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)), x[:1])
    assert bilinear.nodes["0"]["op"] == "module:Upsample"  # align_corners: not nasdsl's
