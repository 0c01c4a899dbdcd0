"""spaces/unet.nas: its preset is the paper's U-Net (checked against a plain torch
implementation written here from the paper, with padded convs), every derivation
maps an image to logits of its size, and the decoders' primitives count as torch does."""

from pathlib import Path

import pytest
import torch
from torch import nn

import nasdsl
from nasdsl.compiler.compat.torchvision import from_torchvision
from nasdsl.compiler.flops import flop_counter
from nasdsl.compiler.graph import output_shape

SPACE = nasdsl.load(Path(__file__).resolve().parent.parent / "spaces" / "unet.nas")


def _convs(c_in, c):
    return nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                         nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())


class PaperUNet(nn.Module):
    """Ronneberger et al.'s network: 5 levels of 64..1024 channels, 2x2 up-convs that
    halve the channels, the skip concatenated before the up-sampled map."""

    def __init__(self, in_channels=1, classes=2, widths=(64, 128, 256, 512, 1024)):
        super().__init__()
        self.down = nn.ModuleList(_convs(a, b) for a, b in zip((in_channels, *widths[:-1]), widths))
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, 2) for a, b in zip(widths[:-1], widths[1:]))
        self.decode = nn.ModuleList(_convs(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, down in enumerate(self.down):
            x = down(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = self.decode[i](torch.cat([skips[i], self.up[i](x)], 1))
        return self.head(x)


def test_the_preset_is_the_papers_network():
    graph = SPACE.graph(SPACE.preset("unet"))
    theirs = PaperUNet().eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad(), flop_counter() as counter:
        want = theirs(x)
    assert graph.graph["params"] == sum(p.numel() for p in theirs.parameters()) == 31_036_546
    assert graph.graph["macs"] == counter.get_total_flops() // 2 // 2
    assert output_shape(graph) == (2, 64, 64)
    ours = SPACE.compile(SPACE.preset("unet")).eval()
    ours.load_state_dict(from_torchvision(ours, theirs))
    with torch.no_grad():
        assert torch.allclose(ours(x), want, atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_every_derivation_maps_an_image_to_logits_of_its_size(seed):
    space = SPACE.bind(base=4, max_depth=4, resolution=24, num_classes=3)
    d = space.sample(seed=seed)
    graph = space.graph(d)
    assert output_shape(graph) == (3, 24, 24)
    y = space.compile(d)(torch.randn(2, 1, 24, 24))
    assert y.shape == (2, 3, 24, 24)


def test_a_resolution_that_cannot_halve_is_refused():
    with pytest.raises(nasdsl.NasError, match="resolution"):
        SPACE.bind(resolution=20)


def test_upsample_and_convtranspose_shapes():
    text = ("space t(in_channels: int = 3, resolution: int = 5)\n\n"
            "network = convtranspose(out=4, kernel=3, stride=2, padding=1, output_padding=1) "
            "upsample(scale=3, mode=bilinear)\n")
    space = nasdsl.loads(text, name="t.nas")
    graph = space.graph(space.sample(seed=0))
    assert graph.nodes["convtranspose"]["shape"] == (4, 10, 10)
    assert output_shape(graph) == (4, 30, 30)
    module = space.compile(space.sample(seed=0)).eval()
    with torch.no_grad(), flop_counter() as counter:
        assert module(torch.randn(1, 3, 5, 5)).shape == (1, 4, 30, 30)
    assert graph.graph["macs"] == counter.get_total_flops() // 2
