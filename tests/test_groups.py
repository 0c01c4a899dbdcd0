"""Channel-coupling groups and pruning on compiled graphs: a pruned module is
smaller, valid, and computes what the original computes with the removed
channels zeroed."""

import random
from pathlib import Path

import pytest
import torch

import nasdsl
from nasdsl.compiler.groups import channel_groups, prune, zero_removed

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


SLICED = """space s
network = conv(out=12) bn relu
          concat(slice(start=0, stop=4) conv(out=6), slice(start=4, stop=12) dwconv(kernel=3))
          gap flatten linear(5)
"""


def test_a_channel_slice_is_its_channels_group_and_prunes_with_them():
    """`slice(start, stop)` passes channels start..stop-1 on: a pruning before it moves its
    bounds to the channels kept."""
    space = nasdsl.loads(SLICED)
    d = space.sample(seed=0)
    graph = space.graph(d, (3, 8, 8))
    assert graph.nodes["slice1"]["shape"] == (4, 8, 8) and graph.nodes["slice2"]["shape"] == (8, 8, 8)
    groups = {g.name: g for g in channel_groups(graph)}
    # the two slices' channels are two groups: each reaches its own layers
    assert (groups["conv1"].channels, groups["conv1#2"].channels) == (4, 8)
    assert "conv2" in {m[0] for m in groups["conv1"].members} and "dwconv" in {m[0] for m in groups["conv1#2"].members}
    module = space.compile(d, (3, 8, 8)).eval()
    keep = {"conv1": [1, 2], "conv1#2": [1, 5, 7]}  # channels 1, 2 and 5, 9, 11 of conv1's 12
    small = prune(graph, module, keep).eval()
    assert (small.slice1.start, small.slice1.stop, small.slice2.start, small.slice2.stop) == (0, 2, 2, 5)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_removed(graph, module, keep)(x))
    check_pruning(space, d, seeds=6)
    with pytest.raises(nasdsl.NasError, match="channels 4..12 are not within 12"):
        nasdsl.loads(SLICED.replace("start=4, stop=12", "start=4, stop=13")).graph(d, (3, 8, 8))


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


# ---- traced torchvision models, against torch-pruning's DepGraph ---------------------------
torchvision = pytest.importorskip("torchvision")
tp = pytest.importorskip("torch_pruning")

# our groups / prunable groups; torch-pruning's groups (Conv2d and Linear roots) / without the classifier
# efficientnet_b0: torchvision's stochastic depth is the identity in eval mode (it split the residual
# stream into 50 groups, 35 prunable, before the tracer knew it); regnet: a grouped conv's output
# channels are a group of their own (28 groups, 27 prunable, when they were coupled with its input's)
EXPECTED = {"resnet18": (13, 12), "mobilenet_v3_small": (28, 27), "regnet_x_400mf": (50, 49),
            "efficientnet_b0": (41, 40)}


def _torch_pruning_groups(model, x):
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    roots = [torch.nn.Conv2d, torch.nn.Linear]
    return (len(list(graph.get_all_groups(root_module_types=roots))),
            len(list(graph.get_all_groups(ignored_layers=[classifier], root_module_types=roots))))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_traced_groups_agree_with_torch_pruning(name):
    from nasdsl.compiler.trace import trace

    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    groups = channel_groups(trace(model, x))
    ours = (len(groups), sum(g.prunable for g in groups))
    assert ours == EXPECTED[name] == _torch_pruning_groups(model, x)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "regnet_x_400mf", "shufflenet_v2_x0_5",
                                  "efficientnet_b0", "squeezenet1_0"])
def test_random_prunings_of_traced_models(name):
    """shufflenet splits tensors with `chunk`: a tuple's items keep their channels whole;
    squeezenet pools with ceil_mode (25 of its 26 groups prunable; 20 before pooling knew it)."""
    from nasdsl.compiler.trace import trace

    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    graph = trace(model, x[:1])
    groups = channel_groups(graph)
    rng = random.Random(1)
    keep = {}
    for g in groups:
        if not g.prunable:
            continue
        # a grouped conv keeps as many channels in each of its groups: keep whole groups' worth
        # of channels at stride, which every grouping allows
        keep[g.name] = list(range(0, g.channels, 2)) if rng.random() < 0.5 else list(range(g.channels))
    small = prune(graph, model, keep).eval()
    reference = zero_removed(graph, model, keep).eval()
    with torch.no_grad():
        assert torch.allclose(small(x), reference(x), atol=1e-4, rtol=1e-3)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


class _Chain(torch.nn.Module):
    """conv -> `middle` -> conv, to see what pruning the first conv's channels does."""

    def __init__(self, middle):
        super().__init__()
        self.first, self.middle, self.last = torch.nn.Conv2d(3, 8, 3, padding=1), middle, torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.last(self.middle(self.first(x)))


class _Twice(torch.nn.Module):
    """One conv called twice: its weights serve both calls."""

    def __init__(self):
        super().__init__()
        self.stem, self.shared, self.head = torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 3, padding=1), \
            torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.shared(torch.relu(self.shared(self.stem(x)))))


class _Named(torch.nn.Module):
    """Submodules called `input` and `output`, the names of the graph's ends."""

    def __init__(self):
        super().__init__()
        self.input, self.middle, self.output = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), \
            torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.output(self.middle(self.input(x)))


class _Pooled(torch.nn.Module):
    """conv, a mean over H and W without keepdim (mnasnet's head), linear."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.conv(x).mean([2, 3]))


class _BatchNormAct(torch.nn.BatchNorm2d):
    """timm's BatchNormAct2d in small: a BatchNorm2d whose forward calls F.batch_norm,
    which torch.fx traces into (it is no torch.nn module), then an activation."""

    def forward(self, x):
        x = torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                           self.training, self.momentum, self.eps)
        return torch.relu(x)


class _Scaled(torch.nn.Module):
    """Layer scale as timm writes it (a (C,) parameter viewed per channel) or as
    torchvision does (a (C, 1, 1) parameter); `twice` scales two tensors with two
    parameters of one module, each call's slicer cutting its own (edgenext's blocks)."""

    def __init__(self, shape=(8,), twice=False):
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.rand(*shape) + 0.5)
        self.twice = twice
        if twice:
            self.other = torch.nn.Parameter(torch.rand(*shape) + 0.5)

    def forward(self, x):
        y = x * self.gamma.view(1, -1, 1, 1)
        return y + (x.relu() * self.other.view(1, -1, 1, 1)) if self.twice else y


@pytest.mark.parametrize("model, prunable", [
    pytest.param(_Chain(torch.nn.GroupNorm(1, 8)), 0, id="groupnorm-pools-every-channel"),
    pytest.param(_Chain(_Scaled()), 1, id="layer-scale-viewed"),
    pytest.param(_Chain(_Scaled((8, 1, 1))), 1, id="layer-scale-per-channel-map"),
    pytest.param(_Chain(_Scaled(twice=True)), 1, id="two-scales-of-one-module-each-sliced"),
    pytest.param(_Chain(_BatchNormAct(8)), 1, id="functional-batch-norm-on-a-module's-statistics"),
    pytest.param(_Chain(torch.nn.Sigmoid()), 0, id="sigmoid-makes-zero-0.5"),
    pytest.param(_Chain(torch.nn.Hardsigmoid()), 0, id="hardsigmoid-makes-zero-0.5"),
    pytest.param(_Chain(torch.nn.ReLU()), 1, id="relu-keeps-zero"),
    pytest.param(_Chain(torch.nn.LeakyReLU(0.1)), 1, id="leaky-relu-keeps-zero"),
    pytest.param(_Chain(torch.nn.AdaptiveAvgPool2d(2)), 1, id="adaptive-pool-to-2x2"),
    pytest.param(_Pooled(), 1, id="mean-over-h-and-w-then-linear"),
    pytest.param(_Twice(), 1, id="a-module-called-twice"),
    pytest.param(_Named(), 1, id="submodules-named-input-and-output"),
])
def test_traced_pruning_stays_exact_where_channels_interact(model, prunable):
    """Where removing a channel changes the others (a norm over all channels), a removed
    channel would still arrive somewhere (f(0) != 0), or one weight serves two calls, the
    groups say so, and every pruning equals the network with those channels zeroed."""
    from nasdsl.compiler.trace import trace

    model = model.eval()
    x = torch.randn(2, 3, 8, 8)
    graph = trace(model, x[:1])
    groups = [g for g in channel_groups(graph) if g.prunable]
    assert len(groups) == prunable
    for seed in range(3):
        keep = random_keep(groups, random.Random(seed))
        with torch.no_grad():
            torch.testing.assert_close(prune(graph, model, keep).eval()(x), zero_removed(graph, model, keep).eval()(x),
                                       atol=1e-5, rtol=1e-4)


SCALED = """
space scaled
network = conv(out=8, kernel=3) bn relu add(identity, body) conv(out=4, kernel=1)
body = conv(out=8, kernel=3) bn scale(init=0.5)
"""


def test_layer_scale_compiles_traces_back_and_prunes():
    """`scale` in a space: its graph is its module's, the module traces back to the same
    ops, and the compiled and the traced network prune as their zeroed copies do."""
    from nasdsl.compiler.trace import trace

    space = nasdsl.loads(SCALED)
    d = space.sample(seed=0)
    graph, module = space.graph(d, (3, 8, 8)), space.compile(d, (3, 8, 8)).eval()
    assert graph.graph["params"] == sum(p.numel() for p in module.parameters())
    assert torch.equal(module.get_submodule("body.scale").weight, torch.full((8,), 0.5))
    check_pruning(space, d)
    traced = trace(module, torch.randn(1, 3, 8, 8))
    assert [a["op"] for _, a in traced.nodes(data=True)] == [a["op"] for _, a in graph.nodes(data=True)
                                                             if a["op"] != "identity"]  # a skip calls nothing
    groups = [g for g in channel_groups(traced) if g.prunable]
    assert len(groups) == len([g for g in channel_groups(graph) if g.prunable]) == 1  # the trunk, scale in it
    x = torch.randn(2, 3, 8, 8)
    keep = random_keep(groups, random.Random(0))
    with torch.no_grad():
        torch.testing.assert_close(prune(traced, module, keep)(x), zero_removed(traced, module, keep)(x))
