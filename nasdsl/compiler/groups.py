"""Channel-coupling groups on a dependency graph, and structured pruning by them.

A group is a set of channels that must be removed together for the network to
stay valid: a conv's output channels with its batch norm, every consumer's input
channels, the operands of a residual add (which couple whole stages), the
channels a depthwise conv passes through, a concat's slices, and what a flatten
spreads over features. The graph may come from the compiler or the tracer.

The analysis works per channel: every channel a layer creates is a unit, each op
says how its output channels relate to its inputs' (new units, passed through,
permuted, concatenated, repeated by flatten), adds and products unite their
operands' units, and a union-find gives the classes of channels that move
together. Classes touched by the same layers, at the same places, form one group.

    groups = channel_groups(graph)
    small = prune(graph, module, keep={g.name: range(0, g.channels, 2) for g in groups if g.prunable})
"""

from __future__ import annotations

import copy

import attrs
import networkx as nx
import numpy as np

from ..language.errors import NasError

# ops whose output channels are those of their (first) input, in order
PASS_THROUGH = {"bn", "instancenorm", "layernorm", "relu", "relu6", "hswish", "hsigmoid", "silu", "gelu",
                "sigmoid", "mish", "act", "maxpool", "avgpool", "gap", "dropout", "identity", "se"}
# ops that make new output channels from all input channels
PRODUCERS = {"conv", "linear", "sepconv", "fact_reduce"}


@attrs.frozen
class Group:
    """Channels that are removed together.

    name       the first layer that creates them (a conv's path, say)
    channels   how many channels the group has
    members    (node, "in" | "out", positions): where the group's channels sit in each
               layer's input or output, position k being the group's channel k
    prunable   False when the channels reach the network's input or output, or an op
               the analysis cannot slice
    disconnects whether removing the group entirely cuts every path from input to output
    """

    name: str
    channels: int
    members: tuple
    prunable: bool
    disconnects: bool


class _Units:
    """Channel units with union-find."""

    def __init__(self):
        self.parent: list[int] = []
        self.fixed: set[int] = set()

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n)

    def find(self, u: int) -> int:
        root = u
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[u] != root:
            self.parent[u], u = root, self.parent[u]
        return root

    def union(self, a: np.ndarray, b: np.ndarray):
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)


def _channels(shape) -> int:
    return shape[0]


def layouts(graph: nx.DiGraph):
    """(units, {node: output layout}, {node: [input layouts]}, producers): the channel
    unit behind every output channel (or feature) of every node."""
    units = _Units()
    out: dict = {}
    ins: dict = {}
    producers: dict = {}
    for node in nx.topological_sort(graph):
        a = graph.nodes[node]
        op = a["op"]
        sources = [out[i] for i in a["inputs"]]
        ins[node] = sources
        if op == "input":
            out[node] = units.new(_channels(a["shape"]))
            units.fixed.update(out[node].tolist())
            continue
        if op == "output":
            for s in sources:
                units.fixed.update(s.tolist())
            continue
        first = sources[0] if sources else None
        if op in PASS_THROUGH or (op == "zero" and not a["args"].get("out")) or op == "dwconv":
            out[node] = first
        elif op == "conv" and a["args"]["groups"] > 1:
            if a["shape"][0] == a["in_shapes"][0][0]:  # depthwise or grouped, in == out: pass through
                out[node] = first
            else:  # a grouped conv that changes width: its channels stay as they are
                out[node] = units.new(a["shape"][0])
                units.fixed.update(first.tolist())
                units.fixed.update(out[node].tolist())
            producers.setdefault(node, out[node])
        elif op in PRODUCERS or op == "zero":
            out[node] = units.new(_channels(a["shape"]))
            producers[node] = out[node]
            if op == "fact_reduce":  # its two halves come from two convs: keep its width
                units.fixed.update(out[node].tolist())
        elif op == "flatten":
            in_shape = a["in_shapes"][0]
            spread = int(np.prod(in_shape[1:])) if len(in_shape) > 1 else 1
            out[node] = np.repeat(first, spread)
        elif op in ("add", "mul"):
            for other in sources[1:]:
                if len(other) != len(first):  # broadcasting beyond channels: keep it whole
                    units.fixed.update(first.tolist())
                    units.fixed.update(other.tolist())
                    continue
                units.union(first, other)
            out[node] = first
        elif op == "concat":
            out[node] = np.concatenate(sources)
        elif op == "shuffle":
            g = a["args"]["groups"]
            c = len(first)
            out[node] = first.reshape(g, c // g).T.reshape(-1)
        else:  # an op the analysis does not know: a barrier
            out[node] = units.new(_channels(a["shape"]) if a["shape"] and len(a["shape"]) else 0)
            for s in sources:
                units.fixed.update(s.tolist())
            units.fixed.update(out[node].tolist())
    return units, out, ins, producers


def channel_groups(graph: nx.DiGraph) -> list[Group]:
    """The channel-coupling groups of a graph, in the order their layers appear."""
    units, out, ins, producers = layouts(graph)
    find = units.find
    fixed = {find(u) for u in units.fixed}
    # where each class appears: (node, "in"/"out", input index, position)
    places: dict = {}
    for node in nx.topological_sort(graph):
        if node in out and graph.nodes[node]["op"] != "input":
            for pos, u in enumerate(out[node].tolist()):
                places.setdefault(find(u), []).append((node, "out", 0, pos))
        for k, layout in enumerate(ins.get(node, [])):
            for pos, u in enumerate(layout.tolist()):
                places.setdefault(find(u), []).append((node, "in", k, pos))
    # classes made by the same producer and touching the same layers form a group
    by_signature: dict = {}
    order: list = []
    for node, layout in producers.items():
        for u in layout.tolist():
            cls = find(u)
            signature = (tuple(sorted({(n, side, k) for n, side, k, _ in places.get(cls, [])})),)
            if signature not in by_signature:
                by_signature[signature] = {"name": node, "classes": []}
                order.append(signature)
            entry = by_signature[signature]
            if cls not in entry["classes"]:
                entry["classes"].append(cls)
    groups, names = [], set()
    for signature in order:
        entry = by_signature[signature]
        name, n = entry["name"], 1
        while name in names:  # one layer whose channels fall into several groups
            n += 1
            name = f"{entry['name']}#{n}"
        names.add(name)
        classes = entry["classes"]
        index = {c: i for i, c in enumerate(classes)}
        members: dict = {}
        for cls in classes:
            for node, side, k, pos in places.get(cls, []):
                members.setdefault((node, side, k), []).append((index[cls], pos))
        member_list = tuple((node, side if side == "out" else f"in{k}", tuple(p for _, p in sorted(ps)))
                            for (node, side, k), ps in members.items())
        prunable = not any(c in fixed for c in classes)
        groups.append(Group(name, len(classes), member_list, prunable,
                            _disconnects(graph, out, set(classes), find)))
    return groups


def _disconnects(graph, out, classes: set, find) -> bool:
    """Whether removing every channel of the group leaves no path from input to output."""
    gone = [n for n, layout in out.items()
            if len(layout) and graph.nodes[n]["op"] != "input" and all(find(u) in classes for u in layout.tolist())]
    rest = graph.subgraph(set(graph.nodes) - set(gone))
    return "input" not in rest or "output" not in rest or not nx.has_path(rest, "input", "output")


# ---- pruning ------------------------------------------------------------------------------
def kept_positions(graph: nx.DiGraph, keep: dict):
    """{node: (output positions kept, [input positions kept per input])} for a keep-set
    {group name: group channel indices to keep}; checks names and indices."""
    groups = {g.name: g for g in channel_groups(graph)}
    units, out, ins, _ = layouts(graph)
    find = units.find
    removed = set()
    for name, indices in keep.items():
        if name not in groups:
            from ..language.errors import did_you_mean

            raise NasError(f"no channel group `{name}`", None, did_you_mean(name, groups))
        g = groups[name]
        if not g.prunable:
            raise NasError(f"channel group `{name}` cannot be pruned (it reaches the input, the output or an "
                           f"op that cannot be sliced)")
        indices = sorted(set(int(i) for i in indices))
        if not indices or indices[0] < 0 or indices[-1] >= g.channels:
            raise NasError(f"channel group `{name}`: keep 1..{g.channels} of its channels, indices 0..{g.channels - 1}")
        node, side, positions = next(m for m in g.members if len(m[2]) == g.channels)
        layout = out[node] if side == "out" else ins[node][int(side[2:])]
        classes = [find(layout[p]) for p in positions]
        removed.update(c for i, c in enumerate(classes) if i not in set(indices))
    result = {}
    for node in graph.nodes:
        o = out.get(node)
        out_keep = None if o is None else [p for p, u in enumerate(o.tolist()) if find(u) not in removed]
        in_keep = [[p for p, u in enumerate(layout.tolist()) if find(u) not in removed] for layout in ins[node]]
        result[node] = (out_keep, in_keep)
    return result


def prune(graph: nx.DiGraph, module, keep: dict):
    """A smaller copy of `module` (compiled or traced, with submodules named by the
    graph's node ids) keeping only `keep`'s channels of each named group; its
    outputs equal the original's wherever the removed channels were zero."""
    positions = kept_positions(graph, keep)
    pruned = copy.deepcopy(module)
    named = dict(pruned.named_modules())
    for node, a in graph.nodes(data=True):
        if node not in named or a["op"] in ("input", "output"):
            continue
        out_keep, in_keep = positions[node]
        full_out = a["shape"][0] if a["shape"] else 0
        full_in = a["in_shapes"][0][0] if a["in_shapes"] else 0
        changed_out = out_keep is not None and len(out_keep) != full_out
        changed_in = bool(in_keep) and len(in_keep[0]) != full_in
        if changed_out or changed_in:
            _slice(named[node], a, in_keep[0] if in_keep else None, out_keep, node)
    return pruned


def zero_removed(graph: nx.DiGraph, module, keep: dict):
    """A copy of `module` in which the channels `prune` would remove are zero: the
    layers that create them output zeros there (weights, biases and norm scales
    zeroed). `prune(graph, module, keep)` computes the same function as this copy."""
    import torch

    positions = kept_positions(graph, keep)
    zeroed = copy.deepcopy(module)
    named = dict(zeroed.named_modules())
    with torch.no_grad():
        for node, a in graph.nodes(data=True):
            out_keep = positions[node][0]
            if node not in named or out_keep is None or not a["shape"]:
                continue
            gone = sorted(set(range(a["shape"][0])) - set(out_keep))
            if not gone:
                continue
            for name in ("weight", "bias"):
                p = getattr(named[node], name, None)
                if isinstance(p, torch.nn.Parameter) and p.dim() >= 1 and p.shape[0] == a["shape"][0]:
                    p[_idx(gone)] = 0
    return zeroed


def _idx(positions):
    import torch

    return torch.as_tensor(positions, dtype=torch.long)


def _slice(m, attrs_, in_keep, out_keep, node):
    """Cut a module down to the kept input and output channels, in place."""
    import torch
    from torch import nn

    from .modules import FactorizedReduce, SqueezeExcitation, Zero

    with torch.no_grad():
        if isinstance(m, nn.Conv2d):
            _slice_conv(m, in_keep, out_keep, node)
        elif isinstance(m, nn.Linear):
            m.weight = nn.Parameter(m.weight[_idx(out_keep)][:, _idx(in_keep)].clone())
            m.in_features, m.out_features = len(in_keep), len(out_keep)
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias[_idx(out_keep)].clone())
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)):
            keep = _idx(out_keep)
            for name in ("weight", "bias"):
                p = getattr(m, name, None)
                if p is not None:
                    setattr(m, name, nn.Parameter(p[keep].clone()))
            for name in ("running_mean", "running_var"):
                b = getattr(m, name, None)
                if b is not None:
                    setattr(m, name, b[keep].clone())
            if hasattr(m, "num_features"):
                m.num_features = len(out_keep)
            if hasattr(m, "num_channels"):
                m.num_channels = len(out_keep)
        elif isinstance(m, SqueezeExcitation):
            keep = _idx(in_keep)
            m.fc1.weight = nn.Parameter(m.fc1.weight[:, keep].clone())
            m.fc1.in_channels = len(in_keep)
            m.fc2.weight = nn.Parameter(m.fc2.weight[keep].clone())
            m.fc2.bias = nn.Parameter(m.fc2.bias[keep].clone())
            m.fc2.out_channels = len(in_keep)
        elif isinstance(m, nn.Sequential) and len(m) == 2 and all(isinstance(c, nn.Conv2d) for c in m):  # sepconv
            _slice_conv(m[0], in_keep, in_keep, node)
            _slice_conv(m[1], in_keep, out_keep, node)
        elif isinstance(m, FactorizedReduce):
            for conv in (m.conv_1, m.conv_2):
                _slice_conv(conv, in_keep, list(range(conv.out_channels)), node)
        elif isinstance(m, Zero):
            if m.out:
                m.out = len(out_keep)
        elif any(True for _ in m.parameters(recurse=False)):
            raise NasError(f"`{node}`: pruning does not know how to slice a {type(m).__name__}")


def _slice_conv(m, in_keep, out_keep, node):
    import torch
    from torch import nn

    g = m.groups
    if g == 1:
        w = m.weight[_idx(out_keep)][:, _idx(in_keep)]
        m.in_channels, m.out_channels = len(in_keep), len(out_keep)
    else:  # grouped or depthwise: input and output channels coincide (see layouts)
        if list(in_keep) != list(out_keep):
            raise NasError(f"`{node}`: a grouped conv keeps the same input and output channels")
        per = m.out_channels // g
        counts = [sum(1 for c in out_keep if c // per == j) for j in range(g)]
        live = [j for j in range(g) if counts[j]]
        if len(set(counts[j] for j in live)) != 1:
            raise NasError(f"`{node}`: a grouped conv must keep as many channels in each of its {g} groups "
                           f"(kept {counts})")
        blocks = []
        for j in live:  # each group keeps its own rows and, of its inputs, the same channels
            mine = [c for c in out_keep if c // per == j]
            blocks.append(m.weight[_idx(mine)][:, _idx([c - j * per for c in mine])])
        w = torch.cat(blocks)
        m.groups = len(live)
        m.in_channels = m.out_channels = len(out_keep)
    m.weight = nn.Parameter(w.clone())
    if m.bias is not None:
        m.bias = nn.Parameter(m.bias[_idx(out_keep)].clone())
