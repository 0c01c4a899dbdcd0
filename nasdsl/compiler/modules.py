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
from torch.nn import functional as F


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

    def __init__(self, channels: int, init: float = 1.0, last: bool = False):
        super().__init__()
        self.init = init
        self.last = last  # tokens: the channels are the last axis
        self.weight = nn.Parameter(torch.full((channels,), float(init)))

    @property
    def channels(self) -> int:
        return self.weight.shape[0]

    def forward(self, x):
        return x * (self.weight if self.last else self.weight.view(1, -1, *([1] * (x.dim() - 2))))


class TokenBatchNorm(nn.BatchNorm1d):
    """Batch norm of each channel over every token (LeViT's norm after a linear layer):
    the channels are the last axis."""

    def forward(self, x):
        return super().forward(x.reshape(-1, x.shape[-1])).reshape_as(x)


class SpatialMean(nn.Module):
    """The mean over height and width: (N, C, H, W) -> (N, C)."""

    def forward(self, x):
        return x.mean((2, 3))


class Conv2dSame(nn.Conv2d):
    """A convolution padded as TensorFlow's SAME is (`conv_same`): each side comes out as
    ceil(size / stride), the padding for that split with the odd pixel at the bottom and
    right, computed from the input it is given."""

    def forward(self, x):
        pads = []
        for size, k, s, d in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(nn.functional.pad(x, pads))


class ChannelSlice(nn.Module):
    """`x[:, start:stop]`: some of the channels (a split's item)."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x):
        return x[:, self.start:self.stop]


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


# ---- tokens ---------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """A strided conv cutting a map into patches, read as tokens: (B, C, H, W) -> (B, N, D)."""

    def __init__(self, proj: nn.Conv2d):
        super().__init__()
        self.proj = proj

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Tokens(nn.Module):
    """A feature map's pixels as tokens: (B, C, H, W) -> (B, H * W, C)."""

    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class ToMap(nn.Module):
    """Tokens laid out row by row as a feature map: (B, N, D) -> (B, D, height, N / height)."""

    def __init__(self, height: int):
        super().__init__()
        self.height = height

    def forward(self, x):
        b, n, d = x.shape
        return x.transpose(1, 2).reshape(b, d, self.height, n // self.height)


class ClsToken(nn.Module):
    """A learned token put first: (B, N, D) -> (B, N + 1, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.token, std=0.02)

    @property
    def dim(self) -> int:
        return self.token.shape[0]

    def forward(self, x):
        return torch.cat([self.token.expand(x.shape[0], 1, -1), x], dim=1)


class PosEmbed(nn.Module):
    """A learned embedding per token position, added."""

    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(tokens, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    @property
    def tokens(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def forward(self, x):
        return x + self.weight


class Attention(nn.Module):
    """Multi-head self-attention: `qkv` projects each token to q, k and v (rows q, k, v,
    each head after head, as timm's and torch's in_proj), attention runs per head,
    `proj` maps the heads back; with `windows`, within each run of n / windows
    consecutive tokens. The scale stays 1 / sqrt(head_dim) when heads or their
    channels are pruned, so a pruned copy computes the same function."""

    def __init__(self, dim: int, heads: int, head_dim: int, qkv_bias: bool = True, scale: float | None = None,
                 windows: int = 1):
        super().__init__()
        self.heads, self.head_dim, self.windows = heads, head_dim, windows
        self.scale = head_dim ** -0.5 if scale is None else scale
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=qkv_bias)
        self.proj = nn.Linear(heads * head_dim, dim)

    @property
    def dim(self) -> int:
        return self.qkv.in_features

    @property
    def qkv_bias(self) -> bool:
        return self.qkv.bias is not None

    def forward(self, x):
        b, n, d = x.shape
        x = x.reshape(b * self.windows, n // self.windows, d)  # each window's tokens attend to each other
        q, k, v = self.qkv(x).view(*x.shape[:2], 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    """A transformer's feed-forward layer: fc1, activation, fc2 (timm's names)."""

    def __init__(self, dim: int, hidden: int, out: int, act: nn.Module):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), act, nn.Linear(hidden, out)

    @property
    def dim(self) -> int:
        return self.fc1.in_features

    @property
    def hidden(self) -> int:
        return self.fc1.out_features

    @property
    def out(self) -> int:
        return self.fc2.out_features

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TokenPool(nn.Module):
    """Tokens to one vector: their mean, or the first (the class token)."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        return x.mean(1) if self.mode == "mean" else x[:, 0]
