"""Channel-coupling groups on a dependency graph, and structured pruning by them.

A group is a set of channels that must be removed together for the network to
stay valid: a conv's output channels with its batch norm, every consumer's input
channels, the operands of a residual add (which couple whole stages), the
channels a depthwise conv passes through, a concat's slices, what a flatten
spreads over features, and the options a parallel supernet's gated sum joins. The graph may come from the compiler or the tracer.

The analysis works per channel: every channel a layer creates is a unit, each
primitive declares how its output channels relate to its input's (its `Channels`:
new units, passed through, permuted or repeated, or a barrier), concats join their
inputs' units, adds and products unite their operands', and a union-find gives the
classes of channels that move together. A traced model's plain tensor ops between
its layers (reshapes, permutes, softmaxes, matmuls: `nasdsl.compiler.tensorops`)
carry units on every axis of their tensors, so an attention's heads are classes; an
op nasdsl knows no rule for is a barrier. Classes touched by the same layers, at the same places, form one group.
Pruning cuts each layer's module with its primitive's slicer, so a primitive
registered from Python is analysed and pruned like the standard ones.

    groups = channel_groups(graph)
    small = prune(graph, module, keep={g.name: range(0, g.channels, 2) for g in groups if g.prunable})
"""

from __future__ import annotations

import contextlib
import copy

import attrs
import networkx as nx
import numpy as np

from ..language.errors import NasError
from ..language.primitives import BARRIER
from . import primitives, tensorops
from .channels import zero_inner
from .graph import holder


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

    def roots(self) -> np.ndarray:
        """Every unit's class (its root), as an array indexed by unit."""
        return np.array([self.find(u) for u in range(len(self.parent))], dtype=np.int64)

    def union(self, a: np.ndarray, b: np.ndarray):
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)


def _inner(graph: nx.DiGraph, node) -> tuple | None:
    """A node's inner channels as its primitive declares them: (count, where), or None."""
    a = graph.nodes[node]
    prim = primitives.get(a["op"])
    return prim.inner_of(a["args"], a["in_shapes"]) if prim else None


def inner_width(graph: nx.DiGraph, node) -> int:
    """How many inner channels a node's op has (an attention's heads x head_dim), or 0."""
    found = _inner(graph, node)
    return found[0] if found else 0


def side_width(graph: nx.DiGraph, node, side: str) -> int:
    """How many channels a group member's side holds: "out", "in<k>" or "inner"."""
    if side == "inner":
        return inner_width(graph, node)
    a = graph.nodes[node]
    shape = a["shape"] if side == "out" else a["in_shapes"][int(side[2:])]
    return primitives.channel_count(shape) if shape else 0


def layouts(graph: nx.DiGraph):
    """(units, {node: output layout}, {node: [input layouts]}, {node: inner layout},
    producers, grids): the channel unit behind every output channel (or feature) of every
    node, and behind its op's inner channels; producers by the name of their group; and
    the units of each plain tensor op's result on all its axes (`nasdsl.compiler.tensorops`)."""
    units = _Units()
    out: dict = {}
    ins: dict = {}
    inner: dict = {}
    producers: dict = {}
    grids: dict = {}  # node -> its result's grid, for the nodes `tensorops` follows
    clean: dict = {}  # node -> whether its result is zero where a removed unit sits (only where it may not be)
    for node in nx.topological_sort(graph):
        a = graph.nodes[node]
        op = a["op"]
        call = a.get("call")
        if call is not None and primitives.get(op) is not None and (
                not any(i in grids for i in a["inputs"]) or primitives.get(op).slicer is not None and all(
                    i not in grids or tensorops.layout_of(grids[i], s) is not None and clean.get(i, True)
                    for i, s in zip(a["inputs"], a["in_shapes"]))):
            # a primitive on its channels' axis (a flatten, a gap; one a pruning slices, a layer
            # scale, where its input's channels are on that axis and zero where removed): its own rule
            call = None
        sources = []
        for i, shape in zip(a["inputs"], a["in_shapes"]):
            layout = out[i]
            if graph.nodes[i]["shape"] is None and shape and i not in grids:
                # an item of a tuple (`chunk`, `split`): which of the tuple's channels it holds is
                # not known, so it gets channels of its own, kept whole
                layout = units.new(primitives.channel_count(shape))
                units.fixed.update(layout.tolist())
            elif i in grids and call is None:  # a layer reading a plain op's result: its channels on its axis
                layout = tensorops.layout_of(grids[i], shape)
                if layout is None or not clean.get(i, True):
                    # units on other axes, or non-zero where removed units sit: kept whole
                    units.fixed.update(out[i].tolist())
                    layout = units.new(primitives.channel_count(shape) if shape else 0) if layout is None else layout
                    units.fixed.update(layout.tolist())
            sources.append(layout)
        ins[node] = sources
        if call is not None:
            inputs = [grids[i] if i in grids else tensorops.grid_of(layout, shape, len(full))
                      for i, layout, shape, full in zip(a["inputs"], sources, a["in_shapes"], call.full_in)]
            call, parameters = tensorops.with_parameters(call)
            for path, shape in parameters:  # units of their own, one per element, cut where they vary
                key = ("parameter", path)
                if key not in grids:
                    grids[key] = units.new(int(np.prod(shape))).reshape(shape)
                inputs.append(grids[key])
            held = [_flat(g) for g in inputs if g is not None]
            try:
                if held and all(units.fixed.issuperset(h.tolist()) for h in held):
                    grid, clean[node] = tensorops.pinned(call, units), True
                else:
                    grid, clean[node] = tensorops.propagate(
                        call, inputs, [clean.get(i, True) for i in a["inputs"]] + [True] * len(parameters), units)
            except tensorops.Unsupported:
                for g in inputs:  # parameters' too
                    units.fixed.update(_flat(g).tolist())
                out[node] = units.new(primitives.channel_count(a["shape"]) if a["shape"] else 0)
                units.fixed.update(out[node].tolist())
                clean.pop(node, None)
                continue
            ins[node] = [_flat(g) for g in inputs[:len(a["inputs"])]]
            grids[node] = grid  # None: a constant's, no units; a list: a tuple's items'
            out[node] = _flat(grid)
            continue
        if op == "input":
            out[node] = units.new(primitives.channel_count(a["shape"]))
            units.fixed.update(out[node].tolist())
            continue
        if op == "output":
            for s in sources:
                units.fixed.update(s.tolist())
            continue
        first = sources[0] if sources else None
        if op in ("add", "mul", "gsum"):  # gsum: a parallel site's gated sum of its options
            for other in sources[1:]:
                if len(other) != len(first):  # broadcasting beyond channels: keep it whole
                    units.fixed.update(first.tolist())
                    units.fixed.update(other.tolist())
                    continue
                units.union(first, other)
            out[node] = first
            continue
        if op == "concat":
            out[node] = np.concatenate(sources)
            continue
        prim = primitives.get(op)  # None for a traced op nasdsl has no word for: a barrier
        flow = prim.channels_of(a["args"], a["in_shapes"], a["shape"]) if prim else BARRIER
        if width := inner_width(graph, node):
            inner[node] = producers[f"{node}.inner"] = units.new(width)
        if flow.flow == "pass":
            out[node] = first if flow.order is None else first[flow.order(a["args"], a["in_shapes"])]
            if not all(clean.get(i, True) for i in a["inputs"]):
                clean[node] = False
            if not flow.zero:
                if _gates(graph, node):
                    clean[node] = False  # the plain ops reading it say whether a product cancels it
                else:
                    # a removed channel would arrive as f(0) != 0; only a product with the same
                    # (zeroed) channel, a squeeze-excite gate, cancels it
                    units.fixed.update(out[node].tolist())
        elif flow.flow == "depthwise":
            out[node] = first
            producers.setdefault(node, out[node])
        else:  # a producer or a barrier: new channels
            out[node] = units.new(primitives.channel_count(a["shape"]) if a["shape"] and len(a["shape"]) else 0)
            if flow.flow == "producer":
                producers[node] = out[node]
        if flow.flow == "barrier" or "in" in flow.whole:
            for s in sources:
                units.fixed.update(s.tolist())
        if flow.flow == "barrier" or "out" in flow.whole:
            units.fixed.update(out[node].tolist())
    # a traced module called more than once: one weight, so every call keeps the same channels
    for nodes in graph.graph.get("shared_calls", {}).values():
        for other in nodes[1:]:
            if len(out[other]) == len(out[nodes[0]]):
                units.union(out[nodes[0]], out[other])
            for mine, theirs in zip(ins[nodes[0]], ins[other]):
                if len(mine) == len(theirs):
                    units.union(mine, theirs)
            if other in inner:
                units.union(inner[nodes[0]], inner[other])
    _group_whole_classes(graph, units, out, ins)
    for grid in grids.values():
        for item in grid if isinstance(grid, list) else [grid]:
            if item is not None:
                tensorops.make_slices(units, item)
    return units, out, ins, inner, producers, grids


def _group_whole_classes(graph, units, out, ins) -> None:
    """A grouped conv (not depthwise) reading a class of several channels (a head of a
    linear attention) that fills whole groups: removing the class empties those
    groups, whose outputs then go with it, so they join it (a grouped conv keeps as
    many channels in each group it keeps)."""
    for node, a in graph.nodes(data=True):
        groups = a["args"].get("groups", 1) if a["op"] in ("conv", "conv2d", "conv_same") else 1
        if groups <= 1 or not ins.get(node) or primitives.get(a["op"]).channels_of(
                a["args"], a["in_shapes"], a["shape"]).flow != "producer":
            continue
        roots = np.array([units.find(u) for u in ins[node][0].tolist()])
        per_in, per_out = len(roots) // groups, len(out[node]) // groups
        found, counts = np.unique(roots, return_counts=True)
        for cls in found[counts > 1].tolist():
            touched = sorted(set((np.flatnonzero(roots == cls) // per_in).tolist()))
            if all((roots[g * per_in:(g + 1) * per_in] == cls).all() for g in touched):
                members = out[node].reshape(groups, per_out)[touched].reshape(-1)
                units.union(np.full(len(members), ins[node][0][np.flatnonzero(roots == cls)[0]]), members)


def _flat(grid) -> np.ndarray:
    """A grid's units in order (a tuple's, item after item); none for a constant's."""
    if isinstance(grid, list):
        return np.concatenate([_flat(g) for g in grid]) if grid else np.zeros(0, dtype=np.int64)
    return np.zeros(0, dtype=np.int64) if grid is None else grid.reshape(-1)


def _gates(graph: nx.DiGraph, node) -> bool:
    """Whether every reader of `node` is a product, directly or through ops that pass
    each channel on as it is (ghostnetv2's gate is upsampled before it multiplies), or
    a plain tensor op, whose rules say where a product cancels it."""
    for reader in graph.successors(node):
        a = graph.nodes[reader]
        if a["op"] == "mul" or a.get("call") is not None:  # a plain op's rules follow it (`tensorops`)
            continue
        prim = primitives.get(a["op"])
        flow = prim.channels_of(a["args"], a["in_shapes"], a["shape"]) if prim else BARRIER
        if flow.flow != "pass" or flow.order is not None or not _gates(graph, reader):
            return False
    return True


def channel_groups(graph: nx.DiGraph) -> list[Group]:
    """The channel-coupling groups of a graph, in the order their layers appear. The
    work is on arrays of every layer side's channels at once (a large network has
    millions of channel positions), in time proportional to them."""
    units, out, ins, inner, producers, _ = layouts(graph)
    roots = units.roots()  # each unit's class, found once
    fixed = {int(roots[u]) for u in units.fixed}
    # every layer side, in graph order (a node's output, then its inputs), and its channels' classes
    layers, chunks = [], []
    for node in nx.topological_sort(graph):
        if node in out and graph.nodes[node]["op"] != "input":
            layers.append((node, "out"))
            chunks.append(roots[out[node]])
        for k, layout in enumerate(ins.get(node, [])):
            layers.append((node, f"in{k}"))
            chunks.append(roots[layout])
        if node in inner:
            layers.append((node, "inner"))
            chunks.append(roots[inner[node]])
    cls_at = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    layer_at = np.repeat(np.arange(len(chunks)), [len(c) for c in chunks])
    pos_at = np.concatenate([np.arange(len(c)) for c in chunks]) if chunks else np.zeros(0, dtype=np.int64)
    # each class's places: a run of `order`, in graph order within it
    order = np.argsort(cls_at, kind="stable")
    found, starts, counts = np.unique(cls_at[order], return_index=True, return_counts=True)
    runs = dict(zip(found.tolist(), zip(starts.tolist(), (starts + counts).tolist())))
    # each class's signature: the layer sides it touches, from the distinct (class, layer) pairs
    width = max(1, len(layers))
    pairs = np.sort(cls_at * width + layer_at)  # sorted, then deduplicated: numpy's hashed unique is slower
    pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))] if len(pairs) else pairs
    pair_cls, pair_layer = pairs // width, (pairs % width).tolist()
    edges = np.flatnonzero(np.diff(pair_cls)) + 1
    bounds = zip(np.concatenate(([0], edges)).tolist(), np.concatenate((edges, [len(pairs)])).tolist())
    signatures = {c: tuple(pair_layer[a:b]) for c, (a, b) in zip(pair_cls[np.concatenate(([0], edges))].tolist()
                                                                  if len(pairs) else [], bounds)}
    # classes made by the same producer and touching the same layers form a group
    by_signature: dict = {}
    for node, layout in producers.items():
        for cls in roots[layout].tolist():
            entry = by_signature.setdefault(signatures[cls], {"name": node, "classes": {}})
            entry["classes"].setdefault(cls, None)
    groups, names = [], set()
    succ = {n: list(graph.successors(n)) for n in graph}  # plain lists: a search over them is ~10x faster
    ends = {a["op"]: n for n, a in graph.nodes(data=True) if a["op"] in ("input", "output")}
    for entry in by_signature.values():
        name, n = entry["name"], 1
        while name in names:  # one layer whose channels fall into several groups
            n += 1
            name = f"{entry['name']}#{n}"
        names.add(name)
        classes = list(entry["classes"])
        places = np.concatenate([order[slice(*runs[c])] for c in classes])
        channel = np.repeat(np.arange(len(classes)), [runs[c][1] - runs[c][0] for c in classes])
        layer, pos = layer_at[places], pos_at[places]
        o = np.lexsort((pos, channel, layer))  # by layer, then the group's channel, then position
        layer, pos = layer[o], pos[o]
        cuts = np.flatnonzero(np.diff(layer)) + 1
        member_list = tuple((*layers[int(ls[0])], tuple(ps.tolist()))
                            for ls, ps in zip(np.split(layer, cuts), np.split(pos, cuts)))
        prunable = not any(c in fixed for c in classes)
        groups.append(Group(name, len(classes), member_list, prunable, _disconnects(graph, out, member_list, succ, ends)))
    return groups


def _disconnects(graph, out, members, succ: dict, ends: dict) -> bool:
    """Whether removing every channel of the group leaves no path from input to output:
    the layers it empties are those whose every output channel it holds. `succ` is the
    graph's adjacency, `ends` its input and output nodes by op."""
    gone = {node for node, side, positions in members
            if side == "out" and len(positions) == len(out[node]) and graph.nodes[node]["op"] != "input"}
    if not gone:
        return False
    if len(ends) < 2 or ends["output"] in gone:
        return True
    seen, frontier = {ends["input"]}, [ends["input"]]
    while frontier:
        node = frontier.pop()
        for nxt in succ[node]:
            if nxt == ends["output"]:
                return False
            if nxt not in seen and nxt not in gone:
                seen.add(nxt)
                frontier.append(nxt)
    return True


# ---- pruning ------------------------------------------------------------------------------
def kept_positions(graph: nx.DiGraph, keep: dict):
    """{node: (output positions kept, [input positions kept per input], inner positions
    kept or None)} for a keep-set {group name: group channel indices to keep}; checks
    names and indices."""
    return _kept(graph, keep)[0]


def _kept(graph: nx.DiGraph, keep: dict):
    """kept_positions, the grids of `layouts`, and whether the keep-set removes anything."""
    groups = {g.name: g for g in channel_groups(graph)}
    units, out, ins, inner, _, grids = layouts(graph)
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
        # every member side holds each of the group's classes, its positions in the group's channel order
        node, side, positions = g.members[0]
        layout = out[node] if side == "out" else inner[node] if side == "inner" else ins[node][int(side[2:])]
        classes = list(dict.fromkeys(find(layout[p]) for p in positions))
        removed.update(c for i, c in enumerate(classes) if i not in set(indices))
    result = {}
    for node in graph.nodes:
        o = out.get(node)
        out_keep = None if o is None else [p for p, u in enumerate(o.tolist()) if find(u) not in removed]
        in_keep = [[p for p, u in enumerate(layout.tolist()) if find(u) not in removed] for layout in ins[node]]
        inner_keep = [p for p, u in enumerate(inner[node].tolist()) if find(u) not in removed] if node in inner else None
        result[node] = (out_keep, in_keep, inner_keep)
    for key, grid in grids.items():
        if isinstance(key, tuple):  # a parameter a plain op reads: its elements kept
            result[key] = ([p for p, u in enumerate(grid.reshape(-1).tolist()) if find(u) not in removed], [], None)
    return result, grids, bool(removed)


def prune(graph: nx.DiGraph, module, keep: dict):
    """A smaller copy of `module` (compiled or traced, with submodules named by the
    graph's node ids) keeping only `keep`'s channels of each named group; its
    outputs equal the original's wherever the removed channels were zero."""
    positions, grids, removes = _kept(graph, keep)
    pruned = copy.deepcopy(module)
    named = dict(pruned.named_modules())
    for node, a in graph.nodes(data=True):
        if holder(graph, node) not in named or a["op"] in JOINS or node in grids:
            continue  # (a node followed as a plain op: the parameters it reads are cut by their grids)
        out_keep, in_keep, inner_keep = positions[node]
        full_out = primitives.channel_count(a["shape"]) if a["shape"] else 0
        full_in = primitives.channel_count(a["in_shapes"][0]) if a["in_shapes"] and a["in_shapes"][0] else 0
        changed_out = out_keep is not None and len(out_keep) != full_out
        changed_in = bool(in_keep) and len(in_keep[0]) != full_in
        changed_inner = inner_keep is not None and len(inner_keep) != inner_width(graph, node)
        if changed_out or changed_in or changed_inner:
            with _held(named[holder(graph, node)], a.get("tensors")) as m:
                _slice(m, a["op"], in_keep[0] if in_keep else None, out_keep, node,
                       inner_keep if changed_inner else None)
    # a traced model's channel slices (`x[:, a:b]`, a split's items) of a tensor that loses channels:
    # their new bounds (every item of a split, so that no split of the old sizes stays)
    bounds = {}
    for node, a in graph.nodes(data=True):
        if a["op"] == "slice" and a.get("fx") and holder(graph, node) not in named:
            _, (in_keep,), _ = positions[node]
            if len(in_keep) < primitives.channel_count(a["in_shapes"][0]):
                start = sum(1 for c in in_keep if c < a["args"]["start"])
                bounds[a["fx"]] = (start, start + sum(1 for c in in_keep if a["args"]["start"] <= c < a["args"]["stop"]))
    sizes = _resized(graph, positions, grids) if removes else {}
    for key, grid in grids.items():
        if isinstance(key, tuple) and len(positions[key][0]) < grid.size:
            _cut_parameter(pruned, key[1], grid, positions[key][0])
    return _resliced(module, pruned, bounds, graph, sizes) if bounds or sizes else pruned


def _parameter_at(module, path: str):
    owner, _, name = path.rpartition(".")
    return (module.get_submodule(owner) if owner else module), name


def _cut_parameter(module, path: str, grid, kept: list) -> None:
    """A parameter that plain tensor ops read, cut to its kept elements along each axis."""
    import torch

    try:
        index = tensorops.kept_axes(grid, kept)
    except tensorops.Unsupported as err:
        raise NasError(f"parameter `{path}`: pruning cannot cut it: {err}") from None
    owner, name = _parameter_at(module, path)
    value = getattr(owner, name)
    with torch.no_grad():
        cut = value[np.ix_(*index)] if index else value
    setattr(owner, name, torch.nn.Parameter(cut.clone(), requires_grad=value.requires_grad))


def _resized(graph, positions, grids) -> dict:
    """{fx name: {argument position: value}}: the sizes a traced model's reshapes give
    along axes with channels (a head count in the code, a size read off a tensor), for
    a pruning that removes channels."""
    sizes = {}
    for node, grid in grids.items():
        if isinstance(node, tuple) or grid is None or isinstance(grid, list) or not graph.nodes[node].get("fx"):
            continue
        a = graph.nodes[node]
        try:
            call, _ = tensorops.with_parameters(a["call"])
            rewrite = tensorops.resized(call, tensorops.kept_lengths(grid, positions[node][0]))
        except tensorops.Unsupported as err:
            raise NasError(f"`{node}`: pruning cannot cut this `{a['call'].fn}`: {err}") from None
        if rewrite:
            sizes[a["fx"]] = rewrite
    return sizes


def _resliced(module, pruned, bounds: dict, traced: nx.DiGraph, sizes: dict | None = None):
    """`pruned` run by `module`'s torch.fx graph (the one `traced` was made from) in
    which each channel slice named in `bounds` (fx name -> (start, stop)) takes its new
    bounds and each call in `sizes` (fx name -> {argument position: value}) its new
    arguments: the sizes of a split or of a head are in the model's code, so the code
    is what changes."""
    import operator

    import torch.fx

    from .fxtrace import fx_trace

    # the trace's own graph: a model traced again may trace otherwise (a cache its forward filled)
    source = traced.graph.get("fx_graph") or fx_trace(module, traced.graph["input_shape"]).graph
    graph = torch.fx.Graph()
    graph.output(graph.graph_copy(source, {}))
    fx = {n.name: n for n in graph.nodes}
    for name, (start, stop) in bounds.items():
        node = fx[name]
        item = isinstance(node.args[1], int)  # of a split: slice the tensor it splits
        source = node.args[0].args[0] if item else node.args[0]
        with graph.inserting_before(node):
            new = graph.call_function(operator.getitem, (source, (slice(None), slice(start, stop))))
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    for name, changes in (sizes or {}).items():
        args = list(fx[name].args)
        for at, value in changes.items():
            if isinstance(at, tuple):  # inside a tuple argument
                inner = list(args[at[0]])
                inner[at[1]] = value
                args[at[0]] = type(args[at[0]])(inner)
            else:
                args[at] = value
        fx[name].args = tuple(args)
    for n in graph.nodes:  # the tensor constants this trace made on `module`, which `pruned` (copied before it) lacks
        if n.op == "get_attr":
            owner, name = _parameter_at(pruned, n.target)
            if not hasattr(owner, name):
                setattr(owner, name, getattr(_parameter_at(module, n.target)[0], name))
    result = torch.fx.GraphModule(pruned, graph, type(module).__name__)
    result.graph.eliminate_dead_code()
    result.recompile()
    return result


def zero_removed(graph: nx.DiGraph, module, keep: dict):
    """A copy of `module` in which the channels `prune` would remove are zero: the
    layers that create them output zeros there (weights, biases and norm scales
    zeroed). `prune(graph, module, keep)` computes the same function as this copy."""
    import torch

    positions, grids, _ = _kept(graph, keep)
    zeroed = copy.deepcopy(module)
    named = dict(zeroed.named_modules())
    with torch.no_grad():
        for key, grid in grids.items():  # a parameter that plain ops read: zero where removed units sit
            if isinstance(key, tuple) and len(positions[key][0]) < grid.size:
                owner, name = _parameter_at(zeroed, key[1])
                gone = np.ones(grid.size, dtype=bool)
                gone[positions[key][0]] = False
                getattr(owner, name).view(-1)[torch.as_tensor(np.flatnonzero(gone))] = 0
        for node, a in graph.nodes(data=True):
            out_keep, _, inner_keep = positions[node]
            if holder(graph, node) not in named or out_keep is None or not a["shape"] or a["op"] in JOINS \
                    or node in grids:
                continue
            with _held(named[holder(graph, node)], a.get("tensors")) as m:
                if inner_keep is not None:
                    count, where = _inner(graph, node)
                    if len(inner_keep) != count:
                        zero_inner(m, where, sorted(set(range(count)) - set(inner_keep)))
                width = primitives.channel_count(a["shape"])
                gone = sorted(set(range(width)) - set(out_keep))
                for name in ("weight", "bias") if gone else ():
                    p = getattr(m, name, None)
                    if isinstance(p, torch.nn.Parameter) and p.dim() >= 1 and p.shape[0] == width:
                        p[torch.as_tensor(gone, dtype=torch.long)] = 0
    return zeroed


@contextlib.contextmanager
def _held(module, names):
    """`module`; or, where a traced call reads only some of its tensors (`names`, see
    `nasdsl.compiler.trace`), a module holding just those, whose changes are written
    back: what the call's slicer cuts."""
    if not names:
        yield module
        return
    from torch import nn

    part = nn.Module()
    for name in names:
        t = getattr(module, name)
        if isinstance(t, nn.Parameter):
            part.register_parameter(name, t)
        else:
            part.register_buffer(name, t)
    yield part
    for name in names:
        setattr(module, name, getattr(part, name))


JOINS = ("input", "output", "gsum")  # nodes whose modules hold nothing per channel (a gsum: one gate per option)


def _slice(m, op, in_keep, out_keep, node, inner_keep=None):
    """Cut a module down to the kept input, output (and inner) channels, in place, by
    its primitive's slicer."""
    import torch

    prim = primitives.get(op)
    if prim is None or prim.slicer is None:
        if any(True for _ in m.parameters()):
            raise NasError(f"`{node}`: pruning does not know how to slice a {type(m).__name__}")
        return
    try:
        with torch.no_grad():
            if inner_keep is None:
                prim.slicer(m, in_keep, out_keep)
            else:
                prim.slicer(m, in_keep, out_keep, inner=inner_keep)
    except NasError as err:
        raise NasError(f"`{node}`: {err.message}") from None
