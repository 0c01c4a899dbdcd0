"""Two small super-networks written as plain PyTorch, for `nasdsl sparsify module:...`
and the HESSO peer (bench/otov3.py): what OTOv3's erasing mode is for, outside any
`.nas` space.

    SummedCellNet   cells whose conv3, conv5 and max-pool branches are summed (the
                    issue's "cell with summed conv3/conv5/maxpool branches")
    MixedOpNet      DARTS's mixed operation: the same branches and a skip, weighted by
                    the softmax of the cell's architecture parameters, then summed
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(c: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c), nn.ReLU())


class _Net(nn.Module):
    """stem, `cells` cells at width `c` (a 2x2 max pool after each but the last), head."""

    def __init__(self, cell, c: int = 16, cells: int = 3, classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.cells = nn.ModuleList(cell(c) for _ in range(cells))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        x = self.stem(x)
        for i, cell in enumerate(self.cells):
            x = cell(x)
            if i < len(self.cells) - 1:
                x = self.pool(x)
        return self.head(x.mean((2, 3)))


class SummedCell(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv3, self.conv5, self.maxpool = _conv(c, 3), _conv(c, 5), nn.MaxPool2d(3, 1, 1)

    def forward(self, x):
        return self.conv3(x) + self.conv5(x) + self.maxpool(x)


class MixedOp(nn.Module):
    """DARTS's mixed edge: softmax(alpha)-weighted conv3, conv5, max pool and skip."""

    def __init__(self, c: int):
        super().__init__()
        self.conv3, self.conv5, self.maxpool = _conv(c, 3), _conv(c, 5), nn.MaxPool2d(3, 1, 1)
        self.alpha = nn.Parameter(1e-3 * torch.randn(4))

    def forward(self, x):
        w = torch.softmax(self.alpha, dim=0)
        return w[0] * self.conv3(x) + w[1] * self.conv5(x) + w[2] * self.maxpool(x) + w[3] * x


def SummedCellNet() -> nn.Module:
    return _Net(SummedCell)


def MixedOpNet() -> nn.Module:
    return _Net(MixedOp)
