"""spaces/resnet.nas: its presets are torchvision's resnet18 and resnet50."""

from pathlib import Path

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import nasdsl
from nasdsl.compiler.graph import output_shape

SPACE = nasdsl.load(Path(__file__).resolve().parent.parent / "spaces" / "resnet.nas")


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_presets_have_torchvisions_params_and_macs(name):
    graph = SPACE.preset_space(name).graph(SPACE.preset(name), (3, 224, 224))
    model = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 224, 224))
    assert graph.graph["params"] == sum(p.numel() for p in model.parameters())
    assert graph.graph["macs"] == counter.get_total_flops() // 2
    assert output_shape(graph) == (1000,)


def test_the_space_counts_its_choices():
    # 5 widths per stage; per stage 1..8 units of 2 kernels each: sum of 2**n for n = 1..8
    assert SPACE.count == 5 ** 4 * sum(2 ** n for n in range(1, 9)) ** 4
    assert SPACE.bind(unit="bottleneck").count == SPACE.count
