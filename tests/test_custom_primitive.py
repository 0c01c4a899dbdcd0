"""A primitive registered from Python is a first-class op: it is compiled, its
channels are grouped and pruned, and its weights are inherited, all from what it
declares (its `Channels`, slicer and `keeps_output`), with no change to nasdsl."""

import random

import pytest
import torch
import torch.nn.functional as F
from nasdsl.runtime.inherit import inherit
from torch import nn

import nasdsl
from nasdsl.compiler.channels import slice_per_channel
from nasdsl.compiler.groups import channel_groups, prune, zero_removed
from nasdsl.compiler.module import build_module
from nasdsl.language import primitives as registry


class ScaledConv(nn.Module):
    """A same-padded conv whose output channels each carry a learnt scale."""

    def __init__(self, channels: int, out: int, kernel: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out, channels, kernel, kernel) / (channels * kernel ** 2) ** 0.5)
        self.scale = nn.Parameter(torch.rand(out) + 0.5)

    def forward(self, x):
        return F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2) * self.scale.view(1, -1, 1, 1)


class Affine(nn.Module):
    """A per-channel scale and shift."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)
        self.bias = nn.Parameter(torch.randn(channels) * 0.1)

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def slice_scaled_conv(m, in_keep, out_keep):
    m.weight = nn.Parameter(m.weight[out_keep][:, in_keep].clone())
    m.scale = nn.Parameter(m.scale[out_keep].clone())


def scaled_conv_params(a, s):
    return a["out"] * s[0][0] * a["kernel"] ** 2 + a["out"]


@pytest.fixture(autouse=True)
def custom_primitives(monkeypatch):
    """`scaled_conv` and `affine`, registered the public way, in a copy of the registry
    that the test's end discards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    nasdsl.register(nasdsl.Primitive(
        "scaled_conv", (nasdsl.Arg("out", "int"), nasdsl.Arg("kernel", "int", 3)),
        shape=lambda a, s: (a["out"], *s[0][1:]), params=scaled_conv_params,
        macs=lambda a, s, o: (scaled_conv_params(a, s) - a["out"]) * o[1] * o[2],
        module=lambda a, s: ScaledConv(s[0][0], a["out"], a["kernel"]),
        channels=nasdsl.Channels("producer"), slicer=slice_scaled_conv, keeps_output=False))
    nasdsl.register(nasdsl.Primitive(
        "affine", params=lambda a, s: 2 * s[0][0], module=lambda a, s: Affine(s[0][0]),
        channels=nasdsl.Channels("pass"), slicer=slice_per_channel, keeps_output=False))


SPACE = """space custom
network = conv(out=8) bn relu
          scaled_conv(out=w, kernel=3) affine relu
          add(identity, scaled_conv(out=w, kernel=1) affine)
          scaled_conv(out=8, kernel=1) gap flatten linear(5)
    where w = {8, 12, 16}
"""
SHAPE = (3, 8, 8)
X = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))


def derivation(space, w):
    return space.parse(f"(w={w})")


def test_it_compiles_with_its_params_and_its_in_place_safety():
    space = nasdsl.loads(SPACE)
    graph = space.graph(derivation(space, 12), SHAPE)
    module = space.compile(derivation(space, 12), SHAPE)
    assert graph.graph["params"] == sum(p.numel() for p in module.parameters())
    assert module(X).shape == (2, 5)
    # affine declares that autograd does not keep its output: the relu after it works in place
    relu_after_affine = next(n for n, a in graph.nodes(data=True)
                             if a["op"] == "relu" and graph.nodes[a["inputs"][0]]["op"] == "affine")
    assert module.get_submodule(relu_after_affine).inplace


def test_its_channels_form_groups_and_prune_like_the_standard_ops():
    space = nasdsl.loads(SPACE)
    d = derivation(space, 16)
    graph, module = space.graph(d, SHAPE), space.compile(d, SHAPE).eval()
    groups = {g.name: g for g in channel_groups(graph)}
    [wide] = [g for g in groups.values() if g.channels == 16]
    assert graph.nodes[wide.name]["op"] == "scaled_conv" and wide.prunable
    assert {graph.nodes[m[0]]["op"] for m in wide.members} >= {"scaled_conv", "affine", "relu"}
    for seed in range(4):
        rng = random.Random(seed)
        keep = {g.name: sorted(rng.sample(range(g.channels), rng.randint(1, g.channels)))
                for g in groups.values() if g.prunable}
        small = prune(graph, module, keep).eval()
        with torch.no_grad():
            torch.testing.assert_close(small(X), zero_removed(graph, module, keep).eval()(X))
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in module.parameters())


def test_its_weights_are_inherited_between_widths():
    space = nasdsl.loads(SPACE)
    wide_graph, narrow_graph = space.graph(derivation(space, 16), SHAPE), space.graph(derivation(space, 8), SHAPE)
    wide = build_module(wide_graph, seed=0)
    convs = [n for n, a in wide_graph.nodes(data=True) if a["op"] == "scaled_conv"]
    node, after = convs[0], convs[-1]  # the first makes the w channels, the last reads them
    shift = next(iter(wide_graph.successors(node)))  # its affine

    narrow = build_module(narrow_graph, seed=1)
    result = inherit(wide_graph, wide.state_dict(), narrow_graph, narrow)
    p, c = wide.state_dict(), narrow.state_dict()
    assert result.fraction == 1.0 and result.fresh == ()
    assert {f"{node}.weight", f"{node}.scale", f"{shift}.weight", f"{after}.weight"} <= set(result.adapted)
    assert torch.equal(c[f"{node}.weight"], p[f"{node}.weight"][:8])
    assert torch.equal(c[f"{node}.scale"], p[f"{node}.scale"][:8])
    assert torch.equal(c[f"{shift}.bias"], p[f"{shift}.bias"][:8])
    assert torch.equal(c[f"{after}.weight"], p[f"{after}.weight"][:, :8])

    # and back: the wider child keeps the narrow parent's channels and its own fresh rest
    grown = build_module(wide_graph, seed=2)
    fresh = {k: v.clone() for k, v in grown.state_dict().items()}
    result = inherit(narrow_graph, c, wide_graph, grown)
    assert 0 < result.fraction < 1
    g = grown.state_dict()
    assert torch.equal(g[f"{node}.weight"][:8], c[f"{node}.weight"])
    assert torch.equal(g[f"{node}.weight"][8:], fresh[f"{node}.weight"][8:])
    assert torch.equal(g[f"{after}.weight"][:, 8:], fresh[f"{after}.weight"][:, 8:])
