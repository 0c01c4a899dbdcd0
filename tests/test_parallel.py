"""The parallel form: every option of an alternative runs, summed under the site's gate.
One-hot gates at a derivation's options give exactly that derivation's own module;
the surviving options map back to the derivation."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.utils.flop_counter import FlopCounterMode

import nasdsl
from nasdsl.compiler.parallel import ParallelSupernet
from nasdsl.compiler.supernet import Supernet, SupernetError
from nasdsl.space.strategies import derivations

# shipped spaces with alternatives of one shape, at sizes a test can run; nb201's and darts'
# choices are all alternatives and picks (one parallel network holds every derivation),
# superresnet's also values (a parallel network per base derivation). hnb201 builds too, but
# its 28,000 sites take minutes to run.
SPACES = {
    "nb201": ({"C": 4, "N": 1}, (3, 16, 16), False),
    "darts": ({"C": 4, "layers": 5}, (3, 16, 16), False),
    "superresnet": ({"resolution": 28, "in_channels": 1, "C": 8, "blocks": 2}, (1, 28, 28), True),
}
_NETS: dict = {}


def parallel(name, base=None):
    params, shape, _ = SPACES[name]
    if base is not None:
        space = parallel(name)[0]
        return space, ParallelSupernet(space, shape, base=base), shape
    if name not in _NETS:
        space = nasdsl.load(f"spaces/{name}.nas", params)
        _NETS[name] = (space, ParallelSupernet(space, shape), shape)
    return _NETS[name]


def looks_trained(net):
    """Batch norms away from their defaults, so that eval mode is not the identity."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return net


@pytest.mark.parametrize("name", sorted(SPACES))
def test_one_hot_gates_give_exactly_the_derivations_module(name):
    space, _, shape = parallel(name)

    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(derivations(space))
    def check(d):
        net = parallel(name, base=d)[1] if SPACES[name][2] else _NETS[name][1]
        looks_trained(net).eval()
        kept = net.kept(d)
        assert net.derivation_of(kept) == d  # the round trip
        net.set_gates(kept)
        child = space.compile(d, shape, seed=None).eval()
        own = net.state_dict()
        child.load_state_dict({k: own[k] for k in child.state_dict()})  # the same keys: tensors move as they are
        x = torch.randn(2, *shape)
        with torch.no_grad():
            torch.testing.assert_close(net(x), child(x), rtol=1e-5, atol=1e-5)

    check()


@pytest.mark.parametrize("name", sorted(SPACES))
def test_the_parallel_graph_tells_the_truth_about_its_module(name):
    space, net, shape = parallel(name)
    graph = net.network
    assert graph.graph["params"] == sum(p.numel() for p in net.parameters())
    x = torch.randn(2, *shape)
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    assert graph.graph["macs"] == counter.get_total_flops() // 2 // x.shape[0]
    with torch.no_grad():
        ShapeProp(net).propagate(x)
    seen = {n.target: tuple(n.meta["tensor_meta"].shape[1:]) for n in net.graph.nodes
            if n.op == "call_module" and isinstance(n.meta.get("tensor_meta"), TensorMetadata)}
    assert any(graph.nodes[t]["op"] == "gsum" for t in seen)
    for target, shape_ in seen.items():
        assert graph.nodes[target]["shape"] == shape_, target


def test_parameter_keys_are_the_single_path_banks():
    space, net, shape = parallel("nb201")
    bank = Supernet(space, shape).bank.state_dict()
    own = {k for k in net.state_dict() if not k.endswith(".gate")}
    assert own == set(bank)  # nb201's bank holds every option's tensors, as the parallel module does
    assert all(bank[k].shape == net.state_dict()[k].shape for k in own)


TINY = """space t
network = conv(out=4, kernel=1) op gap flatten
op = a: conv(out=4, kernel=3) | b: avgpool(kernel=3) | c: identity
"""


def test_gates_of_one_sum_the_branches():
    space = nasdsl.loads(TINY)
    net = looks_trained(ParallelSupernet(space, (3, 8, 8))).eval()
    assert net.sites == {"op": ("a", "b", "c")}
    assert torch.equal(net.gates["op"], torch.ones(3))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        branches = [net.subnet(space.parse(f"(op={label})")).eval()(x) for label in "abc"]
        torch.testing.assert_close(net(x), sum(branches), rtol=1e-5, atol=1e-6)
        net.gates["op"].copy_(torch.tensor([0.5, 2.0, -1.0]))  # a gate is a weight per option
        torch.testing.assert_close(net(x), 0.5 * branches[0] + 2 * branches[1] - branches[2], rtol=1e-5, atol=1e-6)


def test_gates_given_for_one_call_carry_gradients():
    """DARTS: the mixing weights are a softmax of architecture parameters."""
    space = nasdsl.loads(TINY)
    net = ParallelSupernet(space, (3, 8, 8))
    alpha = torch.zeros(3, requires_grad=True)
    x = torch.randn(2, 3, 8, 8)
    net.run(x, {"op": alpha.softmax(0)}).square().sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    assert torch.equal(net.gates["op"], torch.ones(3))  # the stored gate is left alone
    with pytest.raises(SupernetError, match="`opp` is not a parallel site"):
        net.run(x, {"opp": alpha})


def test_options_that_disagree_in_shape_are_a_clear_error():
    space = nasdsl.loads("space t\nnetwork = conv(out=4, kernel=1) blk\n"
                         "blk = wide: conv(out=8, kernel=3) | down: avgpool(kernel=2, stride=2, padding=0) | same: identity\n")
    with pytest.raises(SupernetError) as err:
        ParallelSupernet(space, (3, 8, 8))
    message = str(err.value)
    assert "`blk`: the options disagree in shape" in message
    assert "`wide` (8, 8, 8)" in message and "`down` (4, 4, 4)" in message and "`same` (4, 8, 8)" in message
    assert "Traceback" not in message


def test_derivation_of_says_which_site_keeps_none_or_too_many():
    space, net, _ = parallel("nb201")
    kept = net.kept(space.sample(0))
    site = "stage2.cell.0.x2.op1"
    with pytest.raises(SupernetError, match=f"`{site}` keeps no option"):
        net.derivation_of({**kept, site: set()})
    with pytest.raises(SupernetError, match=f"`{site}` keeps no option"):
        net.derivation_of({k: v for k, v in kept.items() if k != site})
    with pytest.raises(SupernetError, match=f"`{site}` keeps 2 options \\(none, skip_connect\\); an alternative"):
        net.derivation_of({**kept, site: {"none", "skip_connect"}})
    with pytest.raises(SupernetError, match="`stage1.cell.0.x2.op1` and `stage2.cell.0.x2.op1` are one choice "
                                            "\\(`cell.x2.op1`"):
        other = next(lab for lab in net.sites[site] if lab not in kept[site])
        net.derivation_of({**kept, site: {other}})
    with pytest.raises(SupernetError, match="has no option `conv3`"):
        net.derivation_of({**kept, site: {"conv3"}})


def test_a_pick_in_a_sum_keeps_as_many_as_it_takes():
    space, net, _ = parallel("darts")
    kept = net.kept(space.sample(1))
    pick = "cells.cell_at.normal.cell.n4.pick"
    assert net.sites[pick] == ("p0", "p1", "n2", "n3")
    assert len(kept[pick]) == 2
    with pytest.raises(SupernetError, match=f"`{pick}` keeps 3 options .*; the pick takes 2"):
        net.derivation_of({**kept, pick: {"p0", "p1", "n2"}})
    # a candidate left out asks nothing about the edges inside it, and what is said there does not count
    unpicked = next(c for c in net.sites[pick] if c not in kept[pick])
    inside = [s for s in net.sites if s.startswith(f"{pick}.{unpicked}.")]
    assert inside and not any(s in kept for s in inside)
    assert net.derivation_of({**kept, **{s: {"skip_connect"} for s in inside}}) == space.sample(1)


def test_value_sites_named_by_the_caller_run_side_by_side():
    """SuperTickets' parallel kernels: each value its own branch, with its own weights."""
    space = nasdsl.load("spaces/tutorial.nas")
    d = space.sample(2)
    values = ["stage1.block.mbconv.dwconv.kernel", "stage2.rest.*.mbconv.dwconv.kernel", "stage3.block.mbconv.expand"]
    net = looks_trained(ParallelSupernet(space, (1, 28, 28), base=d, values=values)).eval()
    assert net.sites["stage1.block.mbconv.dwconv"] == ("kernel=3", "kernel=5")
    assert "stage3.block.mbconv.expand=6.dwconv" not in net.sites  # not named: the base's kernel
    assert net.derivation_of(net.kept(d)) == d
    net.set_gates(net.kept(d))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        child = net.subnet(d).eval()
        torch.testing.assert_close(net(x), child(x), rtol=1e-5, atol=1e-5)
    # every value of a named site is a derivation: the round trip at each
    other = net.derivation_of({**net.kept(d), "stage1.block.mbconv.dwconv": {"kernel=5"}})
    assert other["stage1.block.mbconv.dwconv.kernel"] == 5 and net.kept(other)["stage1.block.mbconv.dwconv"] == {"kernel=5"}
    # a trained child goes back into the branches it takes
    with torch.no_grad():
        for p in child.parameters():
            p.add_(1.0)
    net.load_subnet(d, child)
    for k, v in net.subnet(d).state_dict().items():
        torch.testing.assert_close(v, child.state_dict()[k], msg=k)
    with pytest.raises(SupernetError, match="`stage1.block.kernel` names no value choice"):
        ParallelSupernet(space, (1, 28, 28), values=["stage1.block.kernel"])


@pytest.mark.parametrize("name", ["nb201", "superresnet"])
def test_channel_groups_and_pruning_work_on_the_parallel_form(name):
    """A gated sum couples its options' channels as an add does; its gates are not cut.
    Pruned, the supernet computes what it computes with those channels zeroed."""
    import random

    from nasdsl.compiler.groups import channel_groups, prune, zero_removed

    _, net, shape = parallel(name)
    net = looks_trained(net).eval()
    groups = channel_groups(net.network)
    prunable = [g for g in groups if g.prunable and g.channels > 1]
    assert prunable
    x = torch.randn(2, *shape)
    for seed in range(2):
        rng = random.Random(seed)
        keep = {g.name: sorted(rng.sample(range(g.channels), rng.randint(1, g.channels - 1))) for g in prunable}
        small, reference = prune(net.network, net, keep).eval(), zero_removed(net.network, net, keep).eval()
        with torch.no_grad():
            torch.testing.assert_close(small(x), reference(x), atol=1e-5, rtol=1e-4)
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())
        assert all(torch.equal(small.get_parameter(f"{p}.gate"), g) for p, g in net.gates.items())
