"""The compiler: every shipped space's derivations compile, run, and their graph's
shapes, params and MACs equal what the module really does."""

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from support import SMALL

import nasdsl
import nasdsl.compiler.module
from nasdsl.cli.commands import main
from nasdsl.compiler.export import to_dot, to_json
from nasdsl.compiler.flops import flop_counter
from nasdsl.compiler.graph import output_shape
from nasdsl.space.strategies import derivations

SPACES = Path(__file__).resolve().parent.parent / "spaces"
SHIPPED = {path.stem: nasdsl.load(path) for path in sorted(SPACES.glob("*.nas"))
           if not nasdsl.load(path).is_library}


def measured(module, x):
    """(output, MACs per sample) as torch's flop counter sees them."""
    module.eval()
    with torch.no_grad(), flop_counter() as counter:
        y = module(x)
    return y, counter.get_total_flops() // 2 // x.shape[0]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_any_derivation_compiles_runs_and_matches_its_graph(name):
    space = SHIPPED[name].bind(**SMALL.get(name, {}))

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(derivations(space))
    def check(d):
        graph = space.graph(d)
        module = nasdsl.compiler.module.build_module(graph)
        x = torch.randn(2, *graph.graph["input_shape"])
        y, macs = measured(module, x)
        assert tuple(y.shape[1:]) == output_shape(graph)
        assert graph.graph["params"] == sum(p.numel() for p in module.parameters())
        assert graph.graph["macs"] == macs
        submodules = dict(module.named_modules())
        for node_id, attrs in graph.nodes(data=True):  # every node's own params match its module
            if node_id in submodules:
                sub = module.get_submodule(node_id)
                assert attrs["params"] == sum(p.numel() for p in sub.parameters()), node_id

    check()


def test_same_derivation_and_seed_give_the_same_keys_and_weights():
    space = SHIPPED["tutorial"]
    d = space.sample(seed=4)
    a, b = space.compile(d, seed=1).state_dict(), space.compile(d, seed=1).state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = space.compile(d, seed=2).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_state_dict_keys_are_provenance_paths():
    space = SHIPPED["nb201"].bind(C=4, N=1)
    d = space.preset("best_cifar10")
    keys = set(space.compile(d).state_dict())
    assert "stage1.cell.0.x2.op1.nor_conv_3x3.relu_conv_bn.conv.weight" in keys
    other = space.mutate(d, seed=0)
    shared = keys & set(space.compile(other).state_dict())
    assert "stem.conv.weight" in shared and len(shared) > len(keys) // 2


def test_shape_mismatch_names_both_paths():
    space = nasdsl.loads("space s\nnetwork = add(conv(out=8), conv(out=16))\n")
    with pytest.raises(nasdsl.NasError) as err:
        space.graph(space.sample(seed=0), (3, 8, 8))
    assert "conv1" in str(err.value) and "conv2" in str(err.value) and "(16, 8, 8)" in str(err.value)


def test_an_input_too_small_for_the_strides_is_a_clear_error():
    space = SHIPPED["nb201"]
    with pytest.raises(nasdsl.NasError, match="cannot take"):
        space.graph(space.sample(seed=0), (3, 2, 2))


def test_a_computed_argument_of_the_wrong_type_is_a_clear_error():
    space = nasdsl.loads("space s\nnetwork = conv(out=8 * 1.5 + 0.25)\n")
    with pytest.raises(nasdsl.NasError, match="argument `out` of `conv` .*int"):
        space.graph(space.sample(seed=0), (3, 8, 8))


def test_a_rule_named_like_a_module_method_is_a_clear_error():
    space = nasdsl.loads("space s\nnetwork = double\ndouble = conv(out=4) bn\n")
    with pytest.raises(nasdsl.NasError, match="`double` names a method of torch.nn.Module") as err:
        space.compile(space.sample(seed=0), (3, 8, 8))
    assert "rename the rule or label `double`" in str(err.value)


def test_residual_inputs_are_not_modified_in_place():
    # relu(inplace) on x would change what the other branch reads
    space = nasdsl.loads("space s\nnetwork = add(relu, identity)\n")
    module = space.compile(space.sample(seed=0), (1, 2, 2))
    x = torch.tensor([[[[-1.0, 2.0], [3.0, -4.0]]]])
    assert torch.equal(module(x.clone()), torch.relu(x) + x)


@pytest.mark.parametrize("body", ["conv(out=4) sigmoid relu", "relu relu", "relu hswish",
                                  "conv(out=4) bn add(identity relu, identity)", "conv(out=4) bn relu",
                                  "add(conv(out=2) bn, identity) relu add(relu, identity)"])
def test_in_place_activations_never_change_a_result_or_break_training(body):
    space = nasdsl.loads(f"space s\nnetwork = {body}\n")
    d = space.sample(seed=0)
    module = space.compile(d, (2, 4, 4))
    reference = space.compile(d, (2, 4, 4))
    for m in reference.modules():  # the same network with nothing in place
        if hasattr(m, "inplace"):
            m.inplace = False
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    y = module(x)
    assert torch.allclose(y, reference(x))
    if "add(conv" in body:  # the first operand is summed into in place; the value is the same
        bn = module.get_submodule("bn")
        expected = torch.relu(bn(module.get_submodule("conv")(x)) + x)
        assert torch.allclose(y, torch.relu(expected) + expected)
    y.sum().backward()  # no "modified by an inplace operation"


def test_graph_exports():
    space = SHIPPED["nb201"].bind(C=4, N=1)
    graph = space.graph(space.preset("best_cifar10"))
    data = json.loads(json.dumps(to_json(graph)))
    assert data["params"] == graph.graph["params"] and len(data["nodes"]) == graph.number_of_nodes()
    dot = to_dot(graph)
    assert dot.startswith("digraph") and "cluster" in dot and "conv(out=4, kernel=3" in dot


def test_cli_compile(tmp_path, capsys):
    nb201 = str(SPACES / "nb201.nas")
    assert main(["compile", nb201, "--preset", "best_cifar10", "--param", "C=4", "--json",
                 "--dot", str(tmp_path / "g.dot"), "--code"]) == 0
    data = json.loads(capsys.readouterr().out)
    space = SHIPPED["nb201"].bind(C=4)
    graph = space.graph(space.preset("best_cifar10"))
    assert data["params"] == graph.graph["params"] and data["macs"] == graph.graph["macs"]
    assert data["output_shape"] == [10] and data["nodes"] == graph.number_of_nodes()
    assert "def forward" in data["code"] and (tmp_path / "g.dot").read_text().startswith("digraph")
    assert main(["compile", nb201, "--input-shape", "3,2,2"]) == 1
    assert "cannot take" in capsys.readouterr().err
    assert main(["compile", nb201, "--input-shape", "3,x"]) == 2


def test_a_graph_picture(tmp_path):
    import shutil

    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (make installs it when run as root)")
    png = tmp_path / "g.png"
    assert main(["compile", str(SPACES / "nb201.nas"), "--preset", "best_cifar10", "--param", "N=1",
                 "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
