"""The few torch modules the primitives need that torch itself does not have.

Their parameter names follow the reference implementations (torchvision's
SqueezeExcitation: `fc1`, `fc2`; DARTS' FactorizedReduce: `conv_1`, `conv_2`,
`bn`), so published weights map onto them by name. Like torch's own, each keeps
its constructor's arguments as attributes of the same names (read from its parts
where they hold them, so a slicer that cuts a part keeps them true): the standalone
Python that `nasdsl export` writes constructs them from those.
"""

from __future__ import annotations

import torch
from torch import nn


class GatedSum(nn.Module):
    """`sum_i gate[i] * x_i`: the join of a parallel site's branches. The gate starts
    at ones (the plain sum); a one-hot gate passes one option's output exactly."""

    def __init__(self, n: int):
        super().__init__()
        self.gate = nn.Parameter(torch.ones(n))

    def forward(self, *xs):
        total = xs[0] * self.gate[0]
        for i in range(1, len(xs)):
            total = total + xs[i] * self.gate[i]
        return total


class Zero(nn.Module):
    """Zeros shaped like the input (channels `out` if given), subsampled by `stride`."""

    def __init__(self, stride: int = 1, out: int = 0):
        super().__init__()
        self.stride = stride
        self.out = out

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.out and self.out != x.shape[1]:
            return x.new_zeros(x.shape[0], self.out, *x.shape[2:])
        return x.mul(0.0)


class LayerScale(nn.Module):
    """`x * weight`, one learnable scale per channel (CaiT's and ConvNeXt's layer
    scale), starting at `init`."""

    def __init__(self, channels: int, init: float = 1.0):
        super().__init__()
        self.init = init
        self.weight = nn.Parameter(torch.full((channels,), float(init)))

    @property
    def channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, x):
        return x * self.weight.view(1, -1, *([1] * (x.dim() - 2)))


class SpatialMean(nn.Module):
    """The mean over height and width: (N, C, H, W) -> (N, C)."""

    def forward(self, x):
        return x.mean((2, 3))


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation: pool, 1x1 conv, act, 1x1 conv, gate, scale."""

    def __init__(self, channels: int, squeeze: int, activation: nn.Module, scale_activation: nn.Module):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = activation
        self.scale_activation = scale_activation

    @property
    def channels(self) -> int:
        return self.fc1.in_channels

    @property
    def squeeze(self) -> int:
        return self.fc1.out_channels

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class FactorizedReduce(nn.Module):
    """DARTS' FactorizedReduce: halves height and width, `out` channels."""

    def __init__(self, channels: int, out: int):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(channels, out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(channels, out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(out)

    @property
    def channels(self) -> int:
        return self.conv_1.in_channels

    @property
    def out(self) -> int:
        return self.bn.num_features

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))
