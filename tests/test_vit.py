"""spaces/vit.nas and the token primitives: its presets are torchvision's vit_b_16
and timm's deit_tiny_patch16_224 (params, MACs with attention's products, logits
after loading their weights), and tokens behave as tokens."""

from pathlib import Path

import pytest
import timm
import torch
import torchvision

import nasdsl
from nasdsl.compiler import primitives
from nasdsl.compiler.compat.torchvision import from_torchvision, key_map
from nasdsl.compiler.flops import flop_counter
from nasdsl.compiler.graph import output_shape
from nasdsl.language.errors import NasError

SPACES = Path(__file__).resolve().parent.parent / "spaces"
SPACE = nasdsl.load(SPACES / "vit.nas")
REFERENCES = {"vit_b_16": lambda: torchvision.models.vit_b_16(weights=None),
              "deit_tiny": lambda: timm.create_model("deit_tiny_patch16_224", pretrained=False)}


def _randomised(model, seed=0):
    """Random weights everywhere: both references start their heads at zero, which
    would make any two logits agree."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_presets_are_the_reference_networks(name):
    theirs = _randomised(REFERENCES[name]())
    graph = SPACE.graph(SPACE.preset(name))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad(), flop_counter() as counter:  # nn.MultiheadAttention's fused fast path off: counted
        theirs(x)
    assert graph.graph["params"] == sum(p.numel() for p in theirs.parameters())
    assert graph.graph["macs"] == counter.get_total_flops() // 2 // 2
    assert output_shape(graph) == (1000,)
    ours = SPACE.compile(SPACE.preset(name)).eval()
    ours.load_state_dict(from_torchvision(ours, theirs))
    with torch.no_grad():
        want = theirs(x)
        assert want.abs().max() > 0.05
        assert torch.allclose(ours(x), want, atol=1e-5, rtol=1e-4)


def test_the_key_map_pairs_tokens_and_attention_by_what_runs_first():
    ours = SPACE.compile(SPACE.preset("deit_tiny"))
    mapping = key_map(ours, timm.create_model("deit_tiny_patch16_224", pretrained=False))
    assert mapping["cls_token.token"] == "cls_token"  # (192,) here, (1, 1, 192) in timm
    assert mapping["pos_embed.weight"] == "pos_embed"
    assert mapping["block.attention.qkv.weight"] == "blocks.0.attn.qkv.weight"
    assert mapping["linear.weight"] == "head.weight"


def test_the_space_counts_its_choices():
    per_block = 4 * 3  # heads x MLP ratio
    assert SPACE.count == 5 * sum(per_block ** n for n in range(1, 15))


def test_a_fashion_mnist_vit_runs_and_trains():
    space = SPACE.bind(resolution=28, in_channels=1, num_classes=10, patch=4, width=0.125, head_dim=8)
    d = space.sample(seed=3)
    module = space.compile(d)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    loss = torch.nn.functional.cross_entropy(module(x), y)
    loss.backward()
    assert all(p.grad is not None for p in module.parameters())
    assert space.graph(d).nodes["patch_embed"]["shape"][0] == 49  # 7 x 7 patches of 4 x 4


# ---- the token primitives, one by one -------------------------------------------------------
def _space(body: str, **params):
    text = "space t(in_channels: int = 2, resolution: int = 8)\n\nnetwork = " + body + "\n"
    return nasdsl.loads(text, name="t.nas").bind(**params)


def _run(body: str):
    space = _space(body)
    d = space.sample(seed=0)
    graph = space.graph(d)
    module = space.compile(d).eval()
    x = torch.randn(3, 2, 8, 8)
    with torch.no_grad(), flop_counter() as counter:
        y = module(x)
    assert tuple(y.shape[1:]) == output_shape(graph)
    assert graph.graph["params"] == sum(p.numel() for p in module.parameters())
    assert graph.graph["macs"] == counter.get_total_flops() // 2 // 3
    return graph, module, x, y


def test_tokens_and_to_map_are_inverse():
    graph, _, x, y = _run("tokens to_map")
    assert graph.nodes["tokens"]["shape"] == (64, 2)
    assert torch.equal(x, y)


def test_attention_with_its_own_head_width_and_the_mlp():
    graph, module, _, _ = _run("patch_embed(dim=12, patch=2) layernorm attention(heads=3, head_dim=5) "
                               "mlp(hidden=20, act=gelu) token_pool(mode=mean) linear(out=4)")
    assert graph.nodes["attention"]["shape"] == (16, 12)
    assert module.attention.qkv.out_features == 3 * 3 * 5
    assert graph.nodes["token_pool"]["shape"] == (12,)


def test_a_class_token_and_position_embedding_on_the_right_tokens():
    graph, module, x, _ = _run("patch_embed(dim=6, patch=4) cls_token pos_embed token_pool(mode=cls)")
    assert graph.nodes["cls_token"]["shape"] == (5, 6)
    with torch.no_grad():
        cls = module(x)
    assert torch.allclose(cls, (module.cls_token.token + module.pos_embed.weight[0]).expand(3, -1))


def test_linear_and_layernorm_act_on_each_token():
    graph, module, x, y = _run("tokens linear(out=5) layernorm(eps=1e-6) scale(init=0.5)")
    want = torch.nn.functional.layer_norm(module.linear(x.flatten(2).transpose(1, 2)), (5,),
                                          module.layernorm.weight, module.layernorm.bias, 1e-6) * 0.5
    assert torch.allclose(y, want, atol=1e-6)


def test_attention_in_windows_keeps_each_window_to_itself():
    graph, module, x, y = _run("tokens attention(heads=2, windows=4)")  # 64 tokens: 4 runs of 16
    changed = x.clone()
    changed[..., :2, :] += 1.0  # the first two rows of the map: tokens 0..15, the first window
    with torch.no_grad():
        z = module(changed)
    assert not torch.allclose(z[:, :16], y[:, :16]) and torch.allclose(z[:, 16:], y[:, 16:], atol=1e-6)
    whole = primitives.get("attention").macs({"heads": 2, "head_dim": 0, "qkv_bias": True, "windows": 1},
                                              [(64, 2)], (64, 2))
    assert graph.nodes["attention"]["macs"] == whole - 2 * 2 * 64 * (64 - 16) * 1  # q k^T and a v, per window


def test_batch_norm_of_tokens_normalises_each_channel_over_all_tokens():
    graph, module, x, y = _run("tokens linear(out=5) bn")  # LeViT's linear + BatchNorm1d
    bn = module.bn
    assert isinstance(bn, torch.nn.BatchNorm1d) and bn.num_features == 5 and graph.nodes["bn"]["params"] == 10
    tokens = module.linear(x.flatten(2).transpose(1, 2))
    want = (tokens - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    assert torch.allclose(y, want, atol=1e-5)


@pytest.mark.parametrize("body, words", [
    ("tokens attention(heads=3)", "3 heads must divide the 2 channels"),
    ("attention(heads=1)", "`attention` needs tokens (N, D)"),
    ("tokens tokens", "`tokens` needs a feature map"),
    ("patch_embed(dim=4, patch=4) cls_token to_map", "cannot lay 5 tokens out as a square map; give its height"),
    ("tokens to_map(height=3)", "cannot lay 64 tokens out as a map of height 3"),
    ("patch_embed(dim=4, patch=9)", "cannot take a 8-pixel side"),
])
def test_token_shape_errors_are_clear(body, words):
    with pytest.raises(NasError) as err:
        _space(body).graph(_space(body).sample(seed=0))
    assert words in str(err.value)


def test_a_vit_search_runs_from_the_cli_and_reports(tmp_path, capsys):
    import json

    from nasdsl.cli.commands import main

    store = tmp_path / "vit.db"
    code = main(["search", str(SPACES / "vit.nas"), "--dataset", "digits", "--epochs", "1", "--limit", "300",
                 "--trials", "2", "--algorithm", "random", "--optimizer", "adamw", "--store", str(store),
                 "--param", "patch=4", "--param", "width=0.0625", "--param", "head_dim=4", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["finished"] == 2, out
    assert main(["report", "--store", str(store), "--out", str(tmp_path / "report")]) == 0
    assert "Pareto front" in (tmp_path / "report" / "summary.md").read_text()


def test_heads_and_mlp_widths_are_channel_groups_that_prune_exactly(tmp_path):
    from nasdsl.compiler.groups import channel_groups, prune, zero_removed

    space = SPACE.bind(resolution=16, patch=4, in_channels=1, num_classes=10, width=0.125, head_dim=8)
    d = space.sample(seed=2)
    graph = space.graph(d)
    module = space.compile(d).eval()
    groups = {g.name: g for g in channel_groups(graph)}
    heads = groups["block.attention.inner"]
    assert heads.prunable and heads.members == (("block.attention", "inner", tuple(range(heads.channels))),)
    assert groups["block.mlp.inner"].prunable
    assert not groups["patch_embed"].prunable  # the residual stream: every layernorm pools it
    x = torch.randn(3, 1, 16, 16)
    per_head = {name: range(0, g.channels, 2) for name, g in groups.items() if g.prunable}  # half of each head
    first_head = {"block.attention.inner": range(8)}  # one whole head of 8 channels
    for keep in (per_head, first_head):
        small, zeroed = prune(graph, module, keep), zero_removed(graph, module, keep)
        with torch.no_grad():
            torch.testing.assert_close(small(x), zeroed(x), rtol=1e-4, atol=1e-5)
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in module.parameters())
    assert prune(graph, module, first_head).block.attention.heads == 1
    # a pruned attention keeps the original scale, and standalone Python writes it back
    # (write_module checks the file's logits against the module's)
    from nasdsl.compiler.export import write_module

    write_module(prune(graph, module, per_head), graph.graph["input_shape"], {"py": tmp_path / "pruned.py", "state_dict": tmp_path / "pruned.pt"})
    assert ", 4, scale=0.35355" in (tmp_path / "pruned.py").read_text()
    with pytest.raises(NasError, match="keeps whole heads or as many channels of each"):
        prune(graph, module, {"block.attention.inner": range(12)})  # 8 of one head, 4 of another


# ---- traced ViTs: the tracer gives them the compiler's graph -------------------------------
def _ops(graph):
    """The graph's operations in order, as (op, args, shape, params, MACs), without the
    ones that compute nothing in eval mode."""
    import networkx as nx

    return [(a["op"], a["args"], a["shape"], a["params"], a["macs"])
            for a in (graph.nodes[n] for n in nx.topological_sort(graph))
            if a["op"] not in ("identity", "dropout", "input", "output")]


def test_timms_deit_traces_to_the_presets_graph():
    from nasdsl.compiler.trace import trace

    theirs = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    traced = trace(theirs, torch.randn(1, 3, 224, 224))
    ours = SPACE.graph(SPACE.preset("deit_tiny"))
    assert _ops(traced) == _ops(ours)  # patch_embed, cls_token, pos_embed, then per block attention and mlp
    assert traced.nodes["blocks.0.attn"]["op"] == "attention" and traced.nodes["cat"]["tensors"] == ("cls_token",)


def test_torchvisions_vit_traces_to_tokens_with_its_attention_counted():
    from torchvision.models.vision_transformer import VisionTransformer

    from nasdsl.compiler.trace import trace

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                              num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    graph = trace(model, x)
    with torch.no_grad(), flop_counter() as counter:  # eval mode: nn.MultiheadAttention's fast path is off
        model(x)
    assert graph.graph["macs"] == counter.get_total_flops() // 2 // 2
    assert graph.graph["params"] == sum(p.numel() for p in model.parameters())
    ops = [op for op, *_ in _ops(graph)]
    assert ops[:5] == ["conv", "tokens", "cls_token", "pos_embed", "layernorm"] and ops[-2:] == ["token_pool", "linear"]
    # torch's attention is one node of the shape and MACs nasdsl's attention has: its input width
    # is its inner width, so it stays whole, and the residual stream is every layernorm's anyway
    mha = graph.nodes["encoder.layers.encoder_layer_0.self_attention"]
    assert mha["op"] == "module:MultiheadAttention" and mha["shape"] == (17, 64)
    attention = primitives.get("attention")
    assert mha["macs"] == attention.macs({"heads": 4, "head_dim": 0, "qkv_bias": True, "windows": 1}, [(17, 64)],
                                         (17, 64))


@pytest.mark.parametrize("fused", [True, False])
def test_a_traced_timm_vit_prunes_whole_heads_and_channels_of_each_as_zeroed(fused):
    from timm.models.vision_transformer import VisionTransformer

    from nasdsl.compiler.groups import channel_groups, prune, zero_removed
    from nasdsl.compiler.trace import trace

    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2,
                              num_classes=10).eval()
    for block in model.blocks:
        block.attn.fused_attn = fused
    x = torch.randn(2, 3, 32, 32)
    graph = trace(model, x)
    groups = {g.name: g for g in channel_groups(graph)}
    assert sorted(n for n, g in groups.items() if g.prunable) == \
        ["blocks.0.attn.inner", "blocks.0.mlp.inner", "blocks.1.attn.inner", "blocks.1.mlp.inner"]
    half_of_each = {"blocks.0.attn.inner": [c for c in range(48) if c % 16 < 8], "blocks.1.mlp.inner": range(40)}
    last_two_heads = {"blocks.1.attn.inner": range(16, 48)}
    for keep, heads in ((half_of_each, (3, 3)), (last_two_heads, (3, 2))):
        small = prune(graph, model, keep)
        with torch.no_grad():
            torch.testing.assert_close(small(x), zero_removed(graph, model, keep)(x), rtol=1e-4, atol=1e-5)
        assert tuple(b.attn.num_heads for b in small.blocks) == heads
        assert all(b.attn.attn_dim == b.attn.num_heads * b.attn.head_dim for b in small.blocks)
