"""Network slimming: FLOPs-aware penalties read off the graph, and the trainer's L1
push on batch-norm scales (`--bn-l1`)."""

import json

import pytest
import torch
from nasdsl.runtime.data import load
from nasdsl.runtime.search import bind_to_data
from nasdsl.runtime.slimming import Slimming, group_costs, penalties
from nasdsl.runtime.store import Store
from nasdsl.runtime.train import TrainConfig, train
from support import SPACES

import nasdsl
from nasdsl.cli import main
from nasdsl.compiler.groups import channel_groups, prune
from nasdsl.compiler.trace import trace

TUTORIAL = str(SPACES / "tutorial.nas")


def _mobilenet():
    space = nasdsl.load(SPACES / "mobilenetv3.nas", {"width": 0.5, "num_classes": 10})
    d = space.sample(seed=3)
    graph = space.graph(d, (3, 32, 32))
    return graph, space.compile(d, (3, 32, 32), seed=0)


def test_a_groups_cost_is_what_removing_one_of_its_channels_saves():
    """Exact against the traced MACs of the network with one channel of the group cut
    (every group of a MobileNetV3 derivation: convs, depthwise convs, squeeze-excite)."""
    graph, module = _mobilenet()
    module.eval()
    example = torch.zeros(1, 3, 32, 32)
    before = trace(module, example).graph["macs"]
    costs = group_costs(graph)
    groups = [g for g in channel_groups(graph) if g.prunable and g.channels > 1]
    assert len(groups) >= 10 and set(costs) == {g.name for g in channel_groups(graph) if g.prunable}
    for g in groups:
        smaller = prune(graph, module, {g.name: range(1, g.channels)})
        after = trace(smaller, example).graph["macs"]
        assert costs[g.name] == pytest.approx(before - after, rel=1e-9), g.name


def test_penalties_weigh_batch_norm_channels_by_cost_and_spare_what_cannot_be_removed():
    graph, _ = _mobilenet()
    weights = penalties(graph)
    bns = {n for n, a in graph.nodes(data=True) if a["op"] == "bn"}
    assert weights and set(weights) <= bns
    penalised = torch.cat([w[w > 0] for w in weights.values()])
    assert penalised.mean() == pytest.approx(1.0) and penalised.max() > 2 * penalised.min()
    costs = group_costs(graph)
    for g in channel_groups(graph):
        for node, side, positions in g.members:
            if side == "out" and node in weights:
                expected = costs[g.name] if g.prunable else 0.0
                ratio = weights[node][list(positions)] / (1 if not expected else expected)
                assert torch.allclose(ratio, ratio[0].expand_as(ratio)), node  # one weight per group
                if not g.prunable:
                    assert (weights[node][list(positions)] == 0).all()


def test_the_push_ramps_up_over_its_warm_up():
    graph, module = _mobilenet()
    slim = Slimming(module, penalties(graph), 1e-3, warmup_steps=10)
    assert [slim.factor(s) for s in (0, 4, 9, 50)] == pytest.approx([1e-4, 5e-4, 1e-3, 1e-3])
    assert Slimming(module, penalties(graph), 1e-3, warmup_steps=0).factor(0) == 1e-3


def test_training_with_bn_l1_shrinks_the_penalised_scales_only():
    data = load("digits", limit=300, seed=0)
    space = bind_to_data(nasdsl.load(TUTORIAL), data, {})
    d = space.sample(seed=2)
    graph = space.graph(d, data.input_shape)
    weights = penalties(graph)
    assert weights

    def scales(rho):
        module = space.compile(d, data.input_shape, seed=0)
        train(module, data, TrainConfig(epochs=2, batch_size=32, bn_l1=rho), seed=0, graph=graph)
        return {n: module.get_submodule(n).weight.detach().abs() for n in weights}

    plain, slimmed = scales(0.0), scales(0.05)
    for node, w in weights.items():
        on = w > 0
        if on.any():
            assert slimmed[node][on].mean() < plain[node][on].mean(), node
    with pytest.raises(ValueError, match="needs the module's graph"):
        train(space.compile(d, data.input_shape), data, TrainConfig(epochs=1, bn_l1=0.1))


def test_search_takes_bn_l1_flags_and_records_them(tmp_path, capsys):
    store = tmp_path / "s.db"
    argv = ["search", TUTORIAL, "--dataset", "digits", "--limit", "200", "--epochs", "1", "--trials", "2",
            "--algorithm", "random", "--bn-l1", "1e-3", "--bn-l1-warmup", "0.5", "--store", str(store), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["finished"] == 2
    with Store.open(store) as s:
        assert (s.config["train"]["bn_l1"], s.config["train"]["bn_l1_warmup"]) == (1e-3, 0.5)
        assert all(t.status == "done" for t in s.trials())
