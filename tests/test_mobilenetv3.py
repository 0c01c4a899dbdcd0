"""The MobileNetV3 space: its presets are torchvision's models exactly (parameters,
MACs, and the very function: torchvision's weights loaded by position give the same
outputs), at any width; and any derivation compiles to what its graph says."""

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import mobilenetv3 as tv

import nasdsl
from nasdsl.compiler.graph import output_shape
from nasdsl.space.strategies import derivations

SPACE = nasdsl.load(Path(__file__).resolve().parent.parent / "spaces" / "mobilenetv3.nas")
PRESETS = ("mobilenet_v3_large", "mobilenet_v3_small")


def measured(module, x):
    """(output, MACs per sample) as torch's flop counter sees them (eval, no grad)."""
    module.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = module(x)
    return y, counter.get_total_flops() // 2 // x.shape[0]


def in_execution_order(module: torch.fx.GraphModule) -> list:
    """The state's tensors in the order the forward pass reaches their modules (a
    GraphModule registers nested submodules shallowest first)."""
    targets = [n.target for n in module.graph.nodes if n.op == "call_module"]
    return [t for target in targets for t in module.get_submodule(target).state_dict(keep_vars=True).values()]


def torchvision_model(name: str, width: float = 1.0):
    return tv.MobileNetV3(*tv._mobilenet_v3_conf(name, width_mult=width))


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_torchvisions_model(name):
    space, d = SPACE.preset_space(name), SPACE.preset(name)
    graph = space.graph(d, (3, 224, 224))
    theirs = getattr(tv, name)(weights=None)
    x = torch.randn(1, 3, 224, 224)
    assert graph.graph["params"] == sum(p.numel() for p in theirs.parameters())
    assert graph.graph["macs"] == measured(theirs, x)[1]
    y = measured(space.compile(d, (3, 224, 224)), x)[0]
    assert tuple(y.shape) == (1, 1000) == (1, *output_shape(graph))


@pytest.mark.parametrize("width", [1.0, 0.5])
@pytest.mark.parametrize("name", PRESETS)
def test_preset_computes_torchvisions_function_at_any_width(name, width):
    """Same layers in the same order: torchvision's state, copied tensor by tensor,
    gives the same outputs, so the residuals and skipped expansions agree too (at
    width 0.5, Small's 40 -> 48 block has 24 -> 24 channels and gains a residual)."""
    space = SPACE.preset_space(name).bind(width=width, resolution=64)
    ours = space.compile(SPACE.preset(name))
    theirs = torchvision_model(name, width)
    mine, other = in_execution_order(ours), list(theirs.state_dict(keep_vars=True).values())
    assert [t.shape for t in mine] == [t.shape for t in other]
    with torch.no_grad():
        for a, b in zip(mine, other):
            a.copy_(b)
    x = torch.randn(2, 3, 64, 64)
    y, macs = measured(theirs, x)
    torch.testing.assert_close(measured(ours, x)[0], y)
    assert space.graph(SPACE.preset(name)).graph["macs"] == macs


@pytest.mark.parametrize("variant", ["large", "small"])
def test_any_derivation_compiles_to_its_graph(variant):
    space = SPACE.bind(variant=variant, width=0.5, resolution=64, num_classes=10)

    @settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(derivations(space))
    def check(d):
        graph = space.graph(d)
        module = space.compile(d)
        x = torch.randn(2, 3, 64, 64)
        y, macs = measured(module, x)
        assert graph.graph["params"] == sum(p.numel() for p in module.parameters())
        assert graph.graph["macs"] == macs
        assert tuple(y.shape) == (2, 10)

    check()
