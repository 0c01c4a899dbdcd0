"""Channel units through plain tensor ops (nasdsl.compiler.tensorops): reshapes,
stacks, softmaxes over paths, channel shuffles and attention heads written out in a
model's code, grouped so that each pruning equals zero_removed."""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasdsl.compiler.groups import channel_groups, prune, zero_removed
from nasdsl.compiler.trace import trace
from nasdsl.language.errors import NasError


class Selective(nn.Module):
    """Selective kernel: two paths stacked, a softmax over them per channel."""

    def __init__(self, c=8, paths=2):
        super().__init__()
        self.paths = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1 + k, dilation=1 + k), nn.BatchNorm2d(c),
                                                 nn.ReLU()) for k in range(paths))
        self.reduce = nn.Conv2d(c, 4, 1)
        self.select = nn.Conv2d(4, c * paths, 1)
        self.out = nn.Conv2d(c, 6, 1)

    def forward(self, x):
        x = torch.stack([p(x) for p in self.paths], dim=1)  # (B, P, C, H, W)
        attn = self.select(F.relu(self.reduce(x.sum(1).mean((2, 3), keepdim=True))))
        b, c, h, w = attn.shape
        attn = torch.softmax(attn.view(b, len(self.paths), c // len(self.paths), h, w), dim=1)
        return self.out((x * attn).sum(1))


class Shuffled(nn.Module):
    """Two branches concatenated and shuffled, as ShuffleNet's channel shuffle."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(8, 5, 1)

    def forward(self, x):
        x = torch.cat([self.a(x), self.b(x)], dim=1)
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)
        return self.out(x)


class WindowAttention(nn.Module):
    """Swin's attention: the head count written in the reshape, a table of biases per head."""

    def __init__(self, dim=12, heads=3, tokens=4):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn(2 * tokens - 1, heads))
        self.register_buffer("index", (torch.arange(tokens)[:, None] - torch.arange(tokens)[None] + tokens - 1))

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 3, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * 0.5) @ k.transpose(-2, -1)
        attn = attn + self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1))


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.attn, self.head = nn.Conv2d(3, 12, 4, stride=4), WindowAttention(), nn.Linear(12, 5)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.attn(x).mean(1))


def _prunings_equal_zeroed(model, x, seeds=range(4)):
    model.eval()
    graph = trace(model, x[:1])
    groups = [g for g in channel_groups(graph) if g.prunable and g.channels > 1]
    for seed in seeds:
        rng = random.Random(seed)
        keep = {g.name: sorted(rng.sample(range(g.channels), rng.randint(1, g.channels))) for g in groups}
        with torch.no_grad():
            small, reference = prune(graph, model, keep).eval()(x), zero_removed(graph, model, keep).eval()(x)
        assert torch.allclose(small, reference, atol=1e-5), seed
    return graph, groups


def test_a_softmax_over_stacked_paths_leaves_each_channel_of_every_path_one_group():
    torch.manual_seed(0)
    graph, groups = _prunings_equal_zeroed(Selective(), torch.randn(2, 8, 6, 6))
    paths = next(g for g in groups if g.name == "paths.0.0")
    assert paths.channels == 8  # channel c of both paths and both of its softmax rows
    assert {m[0] for m in paths.members} >= {"paths.0.0", "paths.1.0", "select", "out"}
    assert any(g.name == "reduce" for g in groups)


def test_a_channel_shuffle_keeps_the_same_channels_of_both_halves():
    torch.manual_seed(0)
    graph, groups = _prunings_equal_zeroed(Shuffled(), torch.randn(2, 3, 5, 5))
    (group,) = groups
    assert group.channels == 4  # channel i of branch a with channel i of branch b: a (2, C / 2) grid stays whole
    small = prune(graph, Shuffled().eval(), {group.name: [0, 3]})
    assert small.out.in_channels == 4 and small.a.out_channels == small.b.out_channels == 2


def test_attention_heads_written_in_the_code_are_groups_whose_pruning_rewrites_the_code():
    torch.manual_seed(0)
    model = Tokens()
    graph, groups = _prunings_equal_zeroed(model, torch.randn(2, 3, 8, 8))
    heads = next(g for g in groups if g.name == "attn.qkv")
    assert heads.channels == 3  # one class per head: its q, k and v rows, its bias column, its proj inputs
    small = prune(graph, model, {heads.name: [0, 2]})
    assert small.attn.table.shape == (7, 2) and small.attn.qkv.out_features == 24
    assert small.attn.proj.in_features == 8
    assert isinstance(small, torch.fx.GraphModule)  # `reshape(b, n, 3, 3, -1)` now says 2 heads


def test_a_softmax_whose_result_no_product_cancels_pins_its_channels():
    class Loose(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(torch.softmax(y.view(y.shape[0], 2, 2, *y.shape[2:]), dim=2).flatten(1, 2))

    graph = trace(Loose().eval(), torch.randn(1, 3, 4, 4))
    assert not any(g.prunable for g in channel_groups(graph))


def test_a_buffer_along_the_channels_pins_them_and_a_pruning_says_why_it_cannot_cut():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)
            self.register_buffer("w", torch.rand(1, 2, 2, 1, 1))

        def forward(self, x):
            y = self.a(x)
            return self.b((y.view(y.shape[0], 2, 2, *y.shape[2:]) * self.w).flatten(1, 2))

    graph = trace(Scaled().eval(), torch.randn(1, 3, 4, 4))
    (group,) = [g for g in channel_groups(graph) if g.name == "a"]
    assert not group.prunable
    with pytest.raises(NasError, match="cannot be pruned"):
        prune(graph, Scaled(), {"a": [0]})


class CrossCovariance(nn.Module):
    """edgenext's XCA: attention over channels within each head, a temperature per head."""

    def __init__(self, dim=12, heads=3):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.temperature = nn.Parameter(torch.rand(heads, 1, 1) + 0.5)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 4, 1).unbind(0)
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
        return self.proj((attn.softmax(dim=-1) @ v).permute(0, 3, 1, 2).reshape(b, n, c))


def test_a_parameter_per_head_broadcast_over_the_scores_is_cut_with_its_heads():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), CrossCovariance(), nn.Linear(12, 4))
    graph, groups = _prunings_equal_zeroed(model, torch.randn(2, 7, 5))
    heads = next(g for g in groups if g.name == "1.qkv")
    assert heads.channels == 3
    small = prune(graph, model, {heads.name: [1]})
    assert small.get_submodule("1").temperature.shape == (1, 1, 1)


class TokenMixing(nn.Module):
    """ResMLP's block: an affine norm (addcmul), a linear layer over the tokens, a layer scale."""

    def __init__(self, dim=6, tokens=4):
        super().__init__()
        self.alpha, self.beta = nn.Parameter(torch.rand(1, 1, dim) + 0.5), nn.Parameter(torch.randn(1, 1, dim))
        self.mix = nn.Linear(tokens, tokens)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x):
        y = torch.addcmul(self.beta, self.alpha, x)
        return x + self.gamma * self.mix(y.transpose(1, 2)).transpose(1, 2)


def test_a_linear_layer_over_the_tokens_passes_the_channels_of_each_token():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), TokenMixing(), nn.Linear(6, 3))
    graph, groups = _prunings_equal_zeroed(model, torch.randn(2, 4, 5))
    stream = next(g for g in groups if g.name == "0")
    assert stream.channels == 6  # the residual stream: through the affine, the token mixing and the scale
    small = prune(graph, model, {stream.name: [0, 2, 4]})
    assert small.get_submodule("1").alpha.shape == (1, 1, 3) and small.get_submodule("1").mix.in_features == 4
