"""Network slimming with FLOPs-aware penalties: an L1 push on batch-norm scales that
makes channels removable, the cheap ones less than the costly ones.

Liu et al. 2017 ("Learning Efficient Convolutional Networks through Network
Slimming") add `rho * sum |gamma|` over every batch norm's scales, so that channels
whose scale reaches ~0 can be cut with little loss. HR-NAS and SuperTickets weigh
each channel's term by what removing it saves, so that the push falls hardest where
the FLOPs are:

    loss += rho_t * sum_c  penalty_c * |gamma_c|
    penalty_c = MACs saved per channel of c's channel group, over the mean of that
                across every penalised channel (so rho's scale does not depend on
                the network's size)
    rho_t = rho * min(1, t / warm-up), t counted in steps

Only channels of prunable groups (`compiler.groups.channel_groups`) are penalised:
a channel that reaches the network's output cannot be removed, so pushing its scale
to 0 would only cost accuracy. The MACs a group saves per channel are read off the
graph (`group_costs`; exact for convolutions and linear layers, whose MACs are linear
in each side's channels). MENAS's tickets cut over |gamma| after such training; SuperTickets' shrink
masks and removes the channels the push emptied.
"""

from __future__ import annotations

import networkx as nx
import torch
from torch import nn

from nasdsl.compiler import primitives
from nasdsl.compiler.groups import channel_groups, side_width


def mixes(graph: nx.DiGraph, node: str) -> bool:
    """Whether each output channel is made from every input channel (a conv, a linear
    layer): then its MACs are bilinear in the two sides' channels."""
    a = graph.nodes[node]
    prim = primitives.get(a["op"])
    return prim is not None and prim.channels_of(a["args"], a["in_shapes"], a["shape"]).flow == "producer"


def group_costs(graph: nx.DiGraph, groups=None) -> dict[str, float]:
    """MACs saved per channel removed from each prunable group, by group name. A layer
    loses the share of its MACs that the channel holds on each side it touches; a
    layer that mixes channels and holds the group on both sides loses
    `macs * (a + b - a * b)` for shares a and b (an expansion-free inverted residual's
    projection), a layer that passes channels through loses its share once."""
    costs = {}
    for g in groups if groups is not None else channel_groups(graph):
        if not g.prunable:
            continue
        shares: dict[str, dict] = {}  # node -> {"in": share, "out": share}
        for node, side, positions in g.members:
            width = side_width(graph, node, side)
            if width:
                kind = side if side in ("out", "inner") else "in"
                share = len(positions) / g.channels / width  # a flatten repeats a channel per pixel
                shares.setdefault(node, {})[kind] = max(shares.get(node, {}).get(kind, 0.0), share)
        total = 0.0
        for node, by_side in shares.items():
            a, b = by_side.get("in", 0.0), by_side.get("out", 0.0)
            share = a + b - a * b if mixes(graph, node) else max(a, b)
            share += by_side.get("inner", 0.0)  # an attention's or MLP's MACs grow with its inner width
            total += graph.nodes[node].get("macs", 0) * share
        costs[g.name] = total
    return costs


def penalties(graph: nx.DiGraph) -> dict[str, torch.Tensor]:
    """Per batch norm (its node id, the module's path): each channel's penalty weight,
    0 for channels outside every prunable group; weights average 1 over the penalised
    channels."""
    groups = channel_groups(graph)
    costs = group_costs(graph, groups)
    found: dict[str, torch.Tensor] = {}
    for g in groups:
        if g.name not in costs:
            continue
        for node, side, positions in g.members:
            if side == "out" and graph.nodes[node]["op"] == "bn":
                weight = found.setdefault(node, torch.zeros(graph.nodes[node]["shape"][0]))
                weight[list(positions)] = costs[g.name]
    penalised = torch.cat([w[w > 0] for w in found.values()]) if found else torch.zeros(0)
    if penalised.numel() == 0:
        return {}
    mean = penalised.mean()
    return {node: w / mean for node, w in found.items()}


class Slimming:
    """The regulariser bound to a module: `loss(step)` is the term to add at that step."""

    def __init__(self, module: nn.Module, weights: dict[str, torch.Tensor], rho: float, warmup_steps: int):
        self.rho, self.warmup_steps = rho, warmup_steps
        scales = {node: module.get_submodule(node).weight for node in weights}
        self.terms = [(gamma, w.to(gamma.device)) for node, w in weights.items()
                      if (gamma := scales[node]) is not None]  # a batch norm without affine scales has none

    def factor(self, step: int) -> float:
        return self.rho * (min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0)

    def loss(self, step: int) -> torch.Tensor:
        total = sum((w * gamma.abs()).sum() for gamma, w in self.terms)
        return self.factor(step) * total
