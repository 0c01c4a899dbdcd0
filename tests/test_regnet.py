"""spaces/regnet.nas: its presets are torchvision's regnet_x_400mf and regnet_y_400mf
(parameters, MACs, and the same logits from torchvision's weights), and every member is
torchvision's RegNet for its six numbers."""

import itertools
import json
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.regnet import BlockParams, RegNet

import nasdsl
from nasdsl.cli.commands import main
from nasdsl.compiler.compat.torchvision import from_torchvision, key_map

PATH = Path(__file__).resolve().parent.parent / "spaces" / "regnet.nas"
SPACE = nasdsl.load(PATH)
VARIANTS = {"x": SPACE, "y": SPACE.bind(variant="y")}  # planned once each (about a second), then shared
PRESETS = [("regnetx_400mf", "regnet_x_400mf"), ("regnety_400mf", "regnet_y_400mf")]
MAX_DEPTH = 40  # RegNetX's d <= 40, as the file says


def torchvision_regnet(d, variant: str, b: int) -> RegNet:
    """torchvision's RegNet for a derivation's six numbers, on the meta device (no weights)."""
    params = BlockParams.from_init_params(d["stage4.d"], d["w0"], d["wa"], d["wm"], d["g"],
                                          bottleneck_multiplier=1 / b, se_ratio=0.25 if variant == "y" else None)
    with torch.device("meta"):
        return RegNet(params).eval()


def convs_in_order(module: torch.nn.Module, order=None) -> list:
    """Every Conv2d's configuration, in the order `order` lists the modules (default: registration)."""
    modules = order if order is not None else [module]
    return [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.groups, m.bias is not None)
            for top in modules for m in top.modules() if isinstance(m, torch.nn.Conv2d)]


def run_order(module: torch.fx.GraphModule) -> list:
    return [module.get_submodule(n.target) for n in module.graph.nodes if n.op == "call_module"]


@pytest.mark.parametrize("name,tv_name", PRESETS)
def test_preset_is_torchvisions_model(name, tv_name):
    space, d = VARIANTS[SPACE.preset_params(name)["variant"]], SPACE.preset(name)
    graph = space.graph(d, (3, 224, 224))
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, tv_name)(weights=None).eval()
    assert graph.graph["params"] == sum(p.numel() for p in theirs.parameters())
    with torch.no_grad():  # batch-norm statistics that are not the identity, so a wrong pairing shows
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    ours = space.compile(d, (3, 64, 64)).eval()
    ours.load_state_dict(from_torchvision(ours, theirs))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5
    with FlopCounterMode(display=False) as counter:  # MACs at 224 need shapes only
        theirs.to("meta")(torch.empty(1, 3, 224, 224, device="meta"))
    assert graph.graph["macs"] == counter.get_total_flops() // 2


def test_torchvision_runs_its_blocks_in_registration_order():
    """The key map pairs tensors by position, with torchvision's in registration order: that
    has to be the order they run in. In a RegNet block the projection and the first conv of F
    can have equal shapes, so a swap would pass the shape check; here it cannot hide."""
    model = torchvision.models.regnet_y_400mf(weights=None).eval()
    ran = []
    hooks = [m.register_forward_hook(lambda m, i, o: ran.append(m)) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert ran == [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("variant,b", [("x", 1), ("y", 1), ("y", 4)])
def test_members_are_torchvisions_regnet_for_their_numbers(variant, b):
    space = VARIANTS[variant] if b == 1 else VARIANTS[variant].bind(b=b)
    for seed in range(5):
        d = space.sample(seed=seed)
        theirs = torchvision_regnet(d, variant, b)
        with torch.device("meta"):
            ours = space.compile(d)
        key_map(ours, theirs)  # the same tensors with the same shapes, in the same order
        assert convs_in_order(ours, run_order(ours)) == convs_in_order(theirs), d.text  # strides, groups too
        assert space.graph(d).graph["params"] == sum(p.numel() for p in theirs.parameters())


def test_members_and_count_follow_torchvisions_quantisation():
    """For every (w0, wa, wm) of the space and every d up to 40: a member exactly when
    torchvision's per-block quantisation makes four stages of the widths w0 * wm ** i (i = 0..3)."""
    members = [(d["w0"], d["wa"], d["wm"], d["stage4.d"], d["g"]) for d in SPACE.enumerate()]
    numbers = {m[:4] for m in members}
    groups = {m[4] for m in members}
    w0s, was, wms = ({m[i] for m in members} for i in range(3))
    expected = set()
    for w0, wa, wm in itertools.product(w0s, was, wms):
        levels = [round(w0 * wm ** i / 8) * 8 for i in range(4)]
        for depth in range(1, MAX_DEPTH + 1):
            if BlockParams.from_init_params(depth, w0, wa, wm, 1).widths == levels:
                expected.add((w0, wa, wm, depth))
    assert numbers == expected
    assert groups == {1, 2, 4, 8, 16, 32}
    assert SPACE.count == len(members) == len(expected) * len(groups)
    assert VARIANTS["y"].count == SPACE.count


@pytest.mark.slow
def test_every_member_has_torchvisions_stages():
    """Stage widths and depths of every (w0, wa, wm, d) of the space, at g = 8 (about a minute)."""
    for d in SPACE.enumerate():
        if d["g"] != 8:
            continue
        graph = SPACE.graph(d)
        depths = [1 + len({n.split(".")[2] for n in graph if n.startswith(f"stage{k}.rest.")}) for k in range(1, 5)]
        widths = [graph.nodes[f"stage{k}.block.f.c.conv"]["shape"][0] for k in range(1, 5)]
        params = BlockParams.from_init_params(d["stage4.d"], d["w0"], d["wa"], d["wm"], d["g"])
        assert (widths, depths) == (params.widths, params.depths), d.text


@pytest.mark.parametrize("param", ["num_classes=0", "resolution=0", "variant=z", "b=3", "in_channels=0"])
def test_bad_parameters_are_refused_by_name(param, capsys):
    assert main(["count", str(PATH), "--param", param]) == 1
    name = param.split("=")[0]
    assert re.search(rf"\b{name}\b", capsys.readouterr().err)


def test_cli_counts_samples_and_compiles_a_preset(capsys):
    assert main(["count", str(PATH), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == SPACE.count
    assert main(["sample", str(PATH), "-n", "2", "--seed", "0"]) == 0
    assert capsys.readouterr().out.count("stage4=(d=") == 2
    assert main(["compile", str(PATH), "--preset", "regnetx_400mf", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == sum(p.numel() for p in torchvision.models.regnet_x_400mf(weights=None).parameters())
    assert data["output_shape"] == [1000]
