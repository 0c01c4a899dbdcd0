"""Channel-coupling groups and pruning on compiled graphs: a pruned module is
smaller, valid, and computes what the original computes with the removed
channels zeroed."""

import random
from pathlib import Path

import pytest
import torch

import nasdsl
from nasdsl.groups import channel_groups, prune, zero_removed

SPACES = Path(__file__).resolve().parent.parent / "spaces"

RESIDUAL = """space r
network = conv(out=8) bn relu
          add(identity, conv(out=16) bn relu conv(out=8) bn) relu
          concat(conv(out=4), dwconv(kernel=3)) bn
          gap flatten linear(5)
"""


def random_keep(groups, rng):
    return {g.name: sorted(rng.sample(range(g.channels), rng.randint(1, g.channels)))
            for g in groups if g.prunable and rng.random() < 0.8}


def check_pruning(space, d, seeds=3):
    graph = space.graph(d)
    module = space.compile(d).eval()
    groups = channel_groups(graph)
    x = torch.randn(2, *graph.graph["input_shape"])
    for seed in range(seeds):
        keep = random_keep(groups, random.Random(seed))
        small = prune(graph, module, keep).eval()
        reference = zero_removed(graph, module, keep).eval()
        with torch.no_grad():
            assert torch.allclose(small(x), reference(x), atol=1e-5, rtol=1e-4)
        removed = sum(g.channels - len(keep[g.name]) for g in groups if g.name in keep)
        if removed:
            assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in module.parameters())


def test_groups_of_a_residual_and_a_concat():
    space = nasdsl.loads(RESIDUAL)
    groups = {g.name: g for g in channel_groups(space.graph(space.sample(seed=0), (3, 8, 8)))}
    # the stem conv, its bn, the residual branch's last conv and the dwconv's channels move together
    trunk = groups["conv1"]
    assert trunk.channels == 8 and trunk.prunable and trunk.disconnects
    assert {m[0] for m in trunk.members} >= {"conv1", "bn1", "conv3", "bn3", "add", "dwconv"}
    inner = groups["conv2"]  # inside the residual branch: removable, the skip remains
    assert inner.channels == 16 and inner.prunable and not inner.disconnects
    assert groups["conv4"].channels == 4  # the concat's first slice
    assert not groups["linear"].prunable  # the network's output


@pytest.mark.parametrize("name,params", [("nb201", {"C": 4, "N": 1}), ("tutorial", {})])
def test_random_prunings_of_compiled_spaces(name, params):
    space = nasdsl.load(SPACES / f"{name}.nas").bind(**params)
    for seed in range(3):
        check_pruning(space, space.sample(seed=seed))


def test_pruning_a_residual_space_with_a_concat():
    space = nasdsl.loads(RESIDUAL)
    check_pruning(space, space.sample(seed=0), seeds=8)


def test_bad_keep_sets_are_clear_errors():
    space = nasdsl.loads(RESIDUAL)
    d = space.sample(seed=0)
    graph, module = space.graph(d, (3, 8, 8)), space.compile(d, (3, 8, 8))
    with pytest.raises(nasdsl.NasError, match="no channel group"):
        prune(graph, module, {"conv9": [0]})
    with pytest.raises(nasdsl.NasError, match="cannot be pruned"):
        prune(graph, module, {"linear": [0]})
    with pytest.raises(nasdsl.NasError, match="keep 1..8"):
        prune(graph, module, {"conv1": []})
