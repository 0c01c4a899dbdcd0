"""Dynamic network shrinkage (HR-NAS, SuperTickets): a network trained with network
slimming loses the channels and the branches its batch-norm scales emptied, and what
is left is still a derivation of the space.

The network is `Shrunk` = a derivation and the channels it keeps: its module is
`space.compile(derivation)` cut by `compiler.groups.prune` to `keep` (group name ->
the full-width channel indices kept). A shrink step (`shrink`) reads the trained
module's |gamma| and

1. marks dead every kept channel whose |gamma| is below the threshold in all the
   batch norms of its group (a group without a batch norm never dies);
2. erases a branch of a summed pick (`add(pick k of [...])`: superresnet's unit
   branches, DARTS' edges) when one of its own groups has no live channel, or when
   every batch norm it hands to the sum has all scales below the threshold; the pick
   keeps the rest (its count follows: `branches=3`), and a pick left with none makes
   the alternative holding it take its cheapest other option (superresnet's slot,
   `skip`: a unit without branches is relu of its identity shortcut, which is the
   identity on non-negative input), or, with no such alternative, keeps the branch
   whose weakest batch norm has the largest scales;
3. zeroes what it removes (`mask`: gamma and beta of the dead channels and of the
   erased branches' batch norms), so the masked network computes what the smaller
   one does, and builds the smaller one once the MACs masked reach `min_macs` or a
   branch went (`rebuild`).

Weights, and anything else per weight (sparsity masks), cross a rebuild by
provenance and channel position: each tensor of a pruned module is a selection of
the full-width module's elements, found by cutting a full-width copy whose
elements hold their own indices (`positions`). Whatever a slicer does, an element
keeps its meaning.
"""

from __future__ import annotations

import attrs
import networkx as nx
import torch

from nasdsl.compiler.groups import channel_groups, prune
from nasdsl.compiler.module import build_module
from nasdsl.space.derivation import Alt, Derivation, Node, Picked, get_path, replace_path, split_path
from nasdsl.space.operations import positions as plan_positions
from nasdsl.space.plan import PAlt

from .slimming import group_costs, mixes


@attrs.frozen
class Shrunk:
    """A derivation and the channels kept of it: `keep` maps a channel group of
    `space.graph(derivation)` to its kept indices (only groups that lost some)."""

    derivation: Derivation
    keep: dict = attrs.field(factory=dict, eq=False)

    def to_json(self) -> dict:
        return {"derivation": self.derivation.text, "keep": {k: list(v) for k, v in sorted(self.keep.items())}}

    @classmethod
    def from_json(cls, space, data: dict) -> "Shrunk":
        return cls(space.parse(data["derivation"]), {k: tuple(v) for k, v in data["keep"].items()})


def build(space, shrunk: Shrunk, input_shape, seed: int | None = 0):
    """(graph of the full-width derivation, the pruned module)."""
    graph = space.graph(shrunk.derivation, input_shape)
    module = build_module(graph, seed)
    return graph, (prune(graph, module, shrunk.keep) if shrunk.keep else module)


def positions(graph: nx.DiGraph, keep: dict) -> dict[str, torch.Tensor]:
    """For each floating tensor of the pruned module, the flat index in the full-width
    tensor of every element it holds."""
    full = build_module(graph, seed=None).double()
    with torch.no_grad():
        for t in [*full.parameters(), *full.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.arange(t.numel(), dtype=torch.float64).view_as(t))
    cut = prune(graph, full, keep) if keep else full
    return {k: v.long().flatten() for k, v in cut.state_dict().items() if v.is_floating_point()}


def carry(old: dict, old_at: dict, new_at: dict, fresh: dict) -> dict:
    """`fresh` (a state of the new module) with every element the old state also held
    taken from `old`, matched by key and full-width position."""
    out = {}
    for key, value in fresh.items():
        if key not in old:
            out[key] = value
        elif key not in new_at:
            out[key] = old[key].clone()  # an integer buffer (a batch norm's step count)
        else:
            order = torch.argsort(old_at[key])
            where = order[torch.searchsorted(old_at[key][order], new_at[key])]
            out[key] = old[key].flatten()[where.to(old[key].device)].view_as(value).clone()
    return out


# ---- where a derivation's summed picks sit in the graph ----------------------------------
@attrs.frozen
class Branch:
    """A candidate of a summed pick: the pick's derivation path, the candidate's label,
    the node-id prefix of its layers and its outputs (what the sum reads)."""

    pick: str
    label: str
    prefix: str
    outputs: tuple


def _node_path(d: Derivation, path: str) -> str:
    """The node-id prefix of derivation path `path`: node ids also hold the label of
    each alternative on the way (`stage1.rest.0` taking `unit` -> `stage1.rest.0.unit`)."""
    parts, out = [str(p) for p in split_path(path)], []
    for i, part in enumerate(parts):
        out.append(part)
        value = get_path(d.root, ".".join(parts[:i + 1]))
        if isinstance(value, Alt):
            out.append(value.label)
    return ".".join(out)


def branches(graph: nx.DiGraph, d: Derivation) -> list[Branch]:
    """Every candidate of a pick whose layers feed only adds (a summed pick)."""
    found = []
    for path in d.choices():
        value = get_path(d.root, path)
        if not isinstance(value, Picked):
            continue
        base = _node_path(d, path)
        for alt in value.items:
            prefix = f"{base}.{alt.label}."
            inside = [n for n in graph if n.startswith(prefix)]
            outputs = tuple(n for n in inside if any(not s.startswith(prefix) for s in graph.successors(n)))
            if inside and all(graph.nodes[s]["op"] in ("add", "gsum") for n in outputs for s in graph.successors(n)
                              if not s.startswith(prefix)):
                found.append(Branch(path, alt.label, prefix, outputs))
    return found


# ---- one shrink step -------------------------------------------------------------------------
@attrs.frozen
class Step:
    """What a shrink step found: the network after it, the channels it masked
    ({batch-norm node: full-width channel indices}), the branches it erased, and the
    MACs the masked channels hold."""

    shrunk: Shrunk
    masked: dict
    erased: tuple
    masked_macs: float


def _scales(module, at: dict, node: str) -> dict[int, float]:
    """{full-width channel index: |gamma|} of a batch norm of the pruned module."""
    key = f"{node}.weight"
    return dict(zip(at[key].tolist(), module.get_parameter(key).detach().abs().cpu().tolist()))


def shrink(space, shrunk: Shrunk, graph: nx.DiGraph, module, threshold: float, at: dict | None = None) -> Step:
    """One step of dynamic shrinkage on a trained `module` of `shrunk` (see above);
    `at` is `positions(graph, shrunk.keep)` when already known."""
    at = at if at is not None else positions(graph, shrunk.keep)
    d = shrunk.derivation
    groups = [g for g in channel_groups(graph) if g.prunable]
    costs = group_costs(graph, groups)
    owners = branches(graph, d)
    dead_branches: set = set()
    keep, masked, masked_macs = {}, {}, 0.0
    for g in groups:
        kept = list(shrunk.keep.get(g.name, range(g.channels)))
        norms = [(n, pos) for n, side, pos in g.members
                 if side == "out" and graph.nodes[n]["op"] == "bn" and len(pos) == g.channels
                 and f"{n}.weight" in at]
        makers = [n for n, side, _ in g.members if side == "out" and mixes(graph, n)]
        if not norms or len(norms) < len(makers):
            continue  # a layer makes channels of the group that no batch norm scales: masking would not zero them
        scales = [_scales(module, at, n) for n, _ in norms]
        strength = {k: max(s[pos[k]] for s, (_, pos) in zip(scales, norms)) for k in kept}
        alive = [k for k in kept if strength[k] >= threshold]
        if not alive:
            owner = _owner(owners, [n for n, _, _ in g.members])
            if owner is not None:
                dead_branches.add(owner)
                if g.name in shrunk.keep:
                    keep[g.name] = shrunk.keep[g.name]
                continue
            alive = [max(kept, key=strength.get)]
        if len(alive) < len(kept):
            keep[g.name] = tuple(alive)
            gone = set(kept) - set(alive)
            for n, pos in norms:
                masked.setdefault(n, set()).update(pos[k] for k in gone)
            masked_macs += costs.get(g.name, 0.0) * len(gone)
        elif g.name in shrunk.keep:
            keep[g.name] = shrunk.keep[g.name]
    for b in owners:
        outs = [n for n in b.outputs if graph.nodes[n]["op"] == "bn" and f"{n}.weight" in at]
        if outs and len(outs) == len(b.outputs) and all(max(_scales(module, at, n).values()) < threshold
                                                            for n in outs):
            dead_branches.add(b)
    new_d, erased = erase_branches(space, d, graph, owners, dead_branches, lambda b: _mass(module, at, graph, b))
    for b in erased:
        for n in b.outputs:
            if graph.nodes[n]["op"] == "bn":
                masked.setdefault(n, set()).update(range(graph.nodes[n]["shape"][0]))
    if erased:
        gone = tuple(b.prefix for b in erased)
        new_graph = space.graph(new_d, graph.graph["input_shape"])
        keep = _renamed(keep, graph, new_graph, gone)
    return Step(Shrunk(new_d, keep), {n: sorted(v) for n, v in masked.items()}, tuple(erased), masked_macs)


def _owner(owners: list, nodes: list):
    """The innermost branch holding every node."""
    holding = [b for b in owners if all(n.startswith(b.prefix) for n in nodes)]
    return max(holding, key=lambda b: len(b.prefix), default=None)


def erase_branches(space, d: Derivation, graph, owners: list, dead: set, mass) -> tuple[Derivation, list]:
    """`d` without the `dead` branches (of `owners`, `branches(graph, d)`; see the
    module's text), and the branches erased (those of an erased unit included). A pick
    that must keep one, and has no alternative around it to fall back on, keeps the
    branch of largest `mass(branch)`. Shrinkage and OTOv3's sub-network both use it."""
    if not dead:
        return d, []
    root, erased = d.root, []
    by_pick: dict = {}
    for b in owners:
        by_pick.setdefault(b.pick, []).append(b)
    alts = alternatives(space, d)
    gone_prefixes: list = []
    for pick, members in sorted(by_pick.items(), key=lambda kv: kv[0].count(".")):  # outer picks first
        if any(members[0].prefix.startswith(p) for p in gone_prefixes):
            continue  # inside a unit already erased
        live = [b for b in members if b not in dead]
        if len(live) == len(members):
            continue
        picked = get_path(root, pick)
        if live:
            labels = {b.label for b in live}
            root = replace_path(root, split_path(pick), Picked(tuple(a for a in picked.items if a.label in labels)))
            erased.extend(b for b in members if b in dead)
            continue
        holder = holding(alts, pick)
        if holder is None:  # the pick must keep one: the branch with the largest scales stays
            best = max(members, key=mass)
            root = replace_path(root, split_path(pick), Picked(tuple(a for a in picked.items if a.label == best.label)))
            erased.extend(b for b in members if b is not best)
            continue
        current = get_path(root, holder).label
        others = [o.label for o, c in zip(alts[holder].options, alts[holder].counts) if c and o.label != current]
        options = [Derivation(space.root.nearest(replace_path(root, split_path(holder), Alt(label, Node()))))
                   for label in others]
        choice = min(options, key=lambda o: space.graph(o, graph.graph["input_shape"]).graph["macs"])
        root = choice.root
        unit = _node_path(d, holder) + "."
        gone_prefixes.append(unit)
        erased.extend(b for b in owners if b.prefix.startswith(unit))
    return space.validate(Derivation(space.root.nearest(root))), erased


def alternatives(space, d: Derivation) -> dict:
    """{derivation path: its alternative's plan} for every alternative `d` passes."""
    return {".".join(map(str, parts)): plan for parts, plan, value in plan_positions(space.root, d.root)
            if isinstance(plan, PAlt)}


def holding(alts: dict, pick: str) -> str | None:
    """The innermost of `alts` around derivation path `pick` (None: no alternative
    holds it, so the pick must keep a branch)."""
    return max((p for p in alts if pick.startswith(p + ".")), key=len, default=None)


def _mass(module, at, graph, b: Branch) -> float:
    """How alive a branch is: the summed |gamma| of its weakest batch norm (0 when one
    of them is emptied)."""
    return min((sum(_scales(module, at, n).values()) for n in graph if n.startswith(b.prefix)
                and graph.nodes[n]["op"] == "bn" and f"{n}.weight" in at), default=0.0)


def _renamed(keep: dict, graph, new_graph, gone: tuple) -> dict:
    """`keep` for the groups of `new_graph`: a group is the old one sharing a layer
    with it outside the erased branches (group names follow their first layer, which
    may have been erased)."""
    old_by_member = {}
    for g in channel_groups(graph):
        for n, side, _ in g.members:
            if not n.startswith(gone):
                old_by_member.setdefault((n, side), g.name)
    out = {}
    for g in channel_groups(new_graph):
        for n, side, _ in g.members:
            old = old_by_member.get((n, side))
            if old is not None:
                if old in keep:
                    out[g.name] = keep[old]
                break
    return out
