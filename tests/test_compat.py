"""Presets of torchvision's networks load torchvision's weights through
`nasdsl.compiler.compat.torchvision` and then compute the same logits."""

from pathlib import Path

import pytest
import torch
import torchvision

import nasdsl
from nasdsl.compiler.compat.torchvision import from_torchvision, key_map

SPACES = Path(__file__).resolve().parent.parent / "spaces"
PRESETS = [("resnet.nas", "resnet18"), ("resnet.nas", "resnet50"),
           ("mobilenetv3.nas", "mobilenet_v3_large"), ("mobilenetv3.nas", "mobilenet_v3_small")]


@pytest.mark.parametrize("file,name", PRESETS)
def test_torchvision_weights_give_the_same_logits(file, name):
    space = nasdsl.load(SPACES / file)
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so a mixed-up mapping shows
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    ours = space.preset_space(name).compile(space.preset(name), (3, 64, 64)).eval()
    ours.load_state_dict(from_torchvision(ours, theirs))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


def test_the_key_map_names_torchvisions_layers():
    space = nasdsl.load(SPACES / "resnet.nas")
    ours = space.preset_space("resnet18").compile(space.preset("resnet18"), (3, 64, 64))
    mapping = key_map(ours, torchvision.models.resnet18(weights=None))
    assert mapping["stem.conv.weight"] == "conv1.weight"
    assert mapping["stage2.block.shortcut.conv.weight"] == "layer2.0.downsample.0.weight"
    assert mapping["stage4.rest.0.body.conv2.weight"] == "layer4.1.conv2.weight"
    assert mapping["head.linear.bias"] == "fc.bias"


def test_a_different_network_is_refused():
    space = nasdsl.load(SPACES / "resnet.nas")
    ours = space.preset_space("resnet18").compile(space.preset("resnet18"), (3, 64, 64))
    with pytest.raises(nasdsl.NasError, match="differ|does not match"):
        key_map(ours, torchvision.models.resnet34(weights=None))
