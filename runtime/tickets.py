"""Lottery tickets as derivations: prune a trained network's channels, then find
the member of the space that has the pruned widths, and carry the weights over.

MENAS replaces every trained model by its best pruned sub-network ("lottery
ticket"), and the pruned network must again be a derivation so that it can be
mutated. For each pruning ratio r:

1. Importance. Every prunable channel group (nasdsl.compiler.groups) ranks its channels by
   the summed |gamma| of the batch norms on them (Network Slimming's measure: after
   a norm, gamma is the channel's scale); a group without a batch norm uses the L1
   norm of the weight rows of the layers that produce it (a conv, a linear: a
   primitive whose channels are plain "producer" ones and that has a `weight`).
2. Target. A group of width w keeps w - r * w channels, rounded half up (at least 1).
3. Controllers. The choices that set a group's width are found by probing, once per
   network: among the integer choices whose value equals the group's width, the
   smallest set that, changed together, changes the width of every layer of the
   group as one (a residual add couples a stage's width with the previous one's, so
   two choices may have to move together). Probing, not path matching, because
   which choices a width depends on is the grammar's business (a stage's width may
   be chosen in the rule that derives the next stage). A group that no choice moves
   stays whole; its name goes to `Ticket.uncontrolled`.
4. Snap. The targets are written into the derivation and every value is moved to
   the nearest allowed one (ties to the smaller), walking the space's plan outer
   choices first, so inner ranges that depend on outer choices are respected: a
   hidden width above 6x its block's new input width is clamped, a width below the
   smallest offered is raised to it. Nearest, not always down or up: on a grid of
   8s a 16-wide group would lose half its channels at r = 0.1 if always rounded
   down, and none at r = 0.4 if always rounded up.
5. Weights. Each group keeps its most important channels, as many as the snapped
   derivation gives it; `nasdsl.compiler.groups.prune` cuts the trained module to them (in
   their original order), and `inherit` copies that into the compiled derivation.
   Where a layer's inner width is smaller in the derivation than in the pruned
   module (a squeeze-excitation's, derived from the hidden width), its primitive's
   `strongest_first` first sorts those channels by importance, so the slice keeps
   the strongest.

The ticket computes what the pruned module computes unless an SE width changed,
or the new widths create or remove a residual (an add exists only where widths
agree), or a group no choice controls had to change.
"""

from __future__ import annotations

import attrs
import torch

from nasdsl.compiler import primitives
from nasdsl.compiler.groups import channel_groups, prune, side_width
from nasdsl.compiler.module import build_module
from nasdsl.language.errors import NasError
from nasdsl.space.derivation import Derivation, Rep, get_path, replace_path, split_path

from .inherit import inherit


@attrs.frozen
class Ticket:
    """One pruned candidate: its derivation, its weights (load them into
    `space.compile(derivation, input_shape)`), its size, and how it was cut.

    keep          group name -> the trained module's channels it kept (pruned groups only)
    uncontrolled  prunable groups whose width no choice sets: left whole
    """

    ratio: float
    derivation: Derivation
    state: dict = attrs.field(repr=False, eq=False)  # tensors: left out of == and hash
    params: int
    macs: int
    keep: dict = attrs.field(factory=dict, repr=False, eq=False)
    uncontrolled: tuple[str, ...] = ()

    @property
    def pruned(self) -> tuple[str, ...]:
        """The groups whose width shrank."""
        return tuple(self.keep)


def ticket_candidates(space, derivation, module, input_shape, ratios=(0.1, 0.2, 0.3, 0.5)) -> list[Ticket]:
    """One ticket per ratio (the fraction of each prunable group's channels to
    remove), in the order given; ratios that lead to the same derivation give one
    ticket (the first). `module` is `derivation`'s trained module."""
    ratios = _check_ratios(ratios)
    d = space.validate(derivation)
    input_shape = tuple(input_shape)
    graph = space.graph(d, input_shape)
    _check_module(graph, module)
    state = module.state_dict()
    groups, controls = _groups_and_controls(space, d, graph, input_shape)
    importance = {g.name: _importance(graph, state, g) for g in groups}
    uncontrolled = tuple(g.name for g in groups if not controls[g.name])
    tickets, seen = [], set()
    for r in ratios:
        wanted: dict = {}
        for g in groups:
            for path in controls[g.name]:  # a choice that sets several groups takes the widest target
                wanted[path] = max(wanted.get(path, 0), max(1, g.channels - int(r * g.channels + 0.5)))
        new = _snap(space, d, wanted)
        if new.hash in seen:
            continue
        seen.add(new.hash)
        tickets.append(_ticket(space, r, new, graph, module, groups, importance, input_shape, uncontrolled))
    return tickets


def best_ticket(tickets, accuracies, baseline_acc: float, tolerance: float = 0.005) -> int:
    """The index of the ticket to keep: the one with the fewest parameters among
    those whose accuracy is within `tolerance` of the unpruned model's (ties: the
    more accurate); if none is, the most accurate (ties: the smaller)."""
    tickets, accuracies = list(tickets), list(accuracies)
    if not tickets or len(tickets) != len(accuracies):
        raise NasError(f"best_ticket needs one accuracy per ticket, got {len(tickets)} tickets and "
                       f"{len(accuracies)} accuracies")
    if tolerance < 0:
        raise NasError(f"the accuracy tolerance is at least 0, got {tolerance}")
    order = range(len(tickets))
    good = [i for i in order if accuracies[i] >= baseline_acc - tolerance]
    if good:
        return min(good, key=lambda i: (tickets[i].params, -accuracies[i], i))
    return min(order, key=lambda i: (-accuracies[i], tickets[i].params, i))


# ---- checks ---------------------------------------------------------------------------
def _check_ratios(ratios) -> tuple:
    ratios = (ratios,) if isinstance(ratios, (int, float, str)) else tuple(ratios)
    if not ratios:
        raise NasError("give at least one pruning ratio, e.g. 0.1, 0.2, 0.3, 0.5")
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
            raise NasError(f"a pruning ratio is the fraction of channels removed, strictly between 0 and 1; "
                           f"got {r!r}")
    return tuple(float(r) for r in ratios)


def _check_module(graph, module) -> None:
    have = sum(p.numel() for p in module.parameters())
    if have != graph.graph["params"]:
        raise NasError(f"the module has {have} parameters but the derivation's network has "
                       f"{graph.graph['params']}: pass the module compiled from this derivation and input shape")


# ---- controllers ----------------------------------------------------------------------
def width_controls(space, derivation, input_shape) -> dict:
    """{prunable channel group: the choices that set its width} for `derivation`; a
    space where no group of any derivation has one cannot be slimmed into tickets."""
    d = space.validate(derivation)
    graph = space.graph(d, tuple(input_shape))
    return _groups_and_controls(space, d, graph, tuple(input_shape))[1]


def _groups_and_controls(space, d, graph, input_shape) -> tuple[list, dict]:
    groups = [g for g in channel_groups(graph) if g.prunable]
    ints = _int_choices(d)
    return groups, {g.name: _controllers(space, d, graph, g, input_shape, ints) for g in groups}


def _int_choices(d: Derivation) -> list:
    """(path, value) of the derivation's integer values (not repetition lengths)."""
    out = []
    for path, value in d.choices().items():
        if type(value) is int and path and not isinstance(get_path(d.root, path), Rep):
            out.append((path, value))
    return out


def _controllers(space, d, graph, group, input_shape, ints) -> tuple:
    """The choices that set `group`'s width (see the module docstring, step 3)."""
    w = group.channels
    candidates = [path for path, value in ints if value == w]
    if not candidates or not _full_members(graph, group):
        return ()

    def moves(paths) -> bool:
        for probe in (max(1, w // 2), 2 * w):  # down, else up (a width at its floor)
            try:
                new_graph = space.graph(_snap(space, d, {p: probe for p in paths}), input_shape)
            except NasError:
                continue
            u = _new_width(graph, new_graph, group)
            if u is not None and u != w:
                return True
        return False

    if not moves(candidates):  # changing them all breaks the group apart: one of them alone?
        return next(((p,) for p in candidates if moves([p])), ())
    chosen = list(candidates)
    for path in candidates:  # drop the ones the group does not need
        rest = [p for p in chosen if p != path]
        if rest and moves(rest):
            chosen = rest
    return tuple(chosen)


def _full_members(graph, group) -> list:
    """(node, side) of the group's layers whose channels are exactly the group's."""
    return [(node, side) for node, side, positions in group.members
            if side_width(graph, node, side) == group.channels == len(positions)]


def _new_width(graph, new_graph, group):
    """The group's width in `new_graph`: the one width all its full layers have
    there, or None if they disagree or are gone."""
    widths = set()
    for node, side in _full_members(graph, group):
        if node not in new_graph.nodes or not side_width(new_graph, node, side):
            return None
        widths.add(side_width(new_graph, node, side))
    return widths.pop() if len(widths) == 1 else None


# ---- snapping -------------------------------------------------------------------------
def _snap(space, d: Derivation, wanted: dict) -> Derivation:
    """`d` with the `wanted` values, every value then moved to the nearest allowed."""
    root = d.root
    for path, value in wanted.items():
        root = replace_path(root, split_path(path), value)
    return space.validate(Derivation(nearest(space.root, root)))


def nearest(plan, want):
    """The member of `plan` closest to `want` (a derivation tree that may break the
    plan's rules): equal values are kept, a number goes to the nearest allowed one
    (ties to the smaller; a positive wish goes to 0 or below only if nothing positive
    is allowed), other values are kept where allowed, missing parts take the first
    allowed value. Outer choices are settled first, so inner ones see the outer
    values they depend on."""
    return plan.nearest(want)


# ---- importance and weights -----------------------------------------------------------
def _importance(graph, state, group) -> torch.Tensor:
    """Per channel of the group: summed |gamma| of its batch norms, else summed L1
    norms of the conv/linear rows that produce it, else zeros (keeps the first)."""
    score = torch.zeros(group.channels)
    outs = [(node, list(positions)) for node, side, positions in group.members
            if side == "out" and len(positions) == group.channels]
    found = False
    for node, positions in outs:
        gamma = state.get(f"{node}.weight")
        if graph.nodes[node]["op"] == "bn" and gamma is not None:
            score += gamma.detach().float().abs().cpu()[positions]
            found = True
    if found:
        return score
    for node, positions in outs:
        weight = state.get(f"{node}.weight")
        if weight is not None and _produces(graph.nodes[node]):
            score += weight.detach().float().abs().flatten(1).sum(1).cpu()[positions]
    return score


def _produces(a) -> bool:
    """Whether the layer makes its output channels from all its input channels, one weight row each."""
    prim = primitives.get(a["op"])
    return prim is not None and prim.channels_of(a["args"], a["in_shapes"], a["shape"]) == primitives.PRODUCER


def _ticket(space, ratio, new, graph, module, groups, importance, input_shape, uncontrolled) -> Ticket:
    new_graph = space.graph(new, input_shape)
    keep = {}
    for g in groups:
        u = _new_width(graph, new_graph, g)
        if u is not None and u < g.channels:
            best = torch.argsort(importance[g.name], descending=True, stable=True)[:u]
            keep[g.name] = sorted(best.tolist())
    pruned_state = dict(prune(graph, module, keep).state_dict() if keep else module.state_dict())
    with torch.random.fork_rng(devices=[]):  # seeded for determinism, without reseeding the caller's stream
        child = build_module(new_graph, seed=0)
    _strongest_first(new_graph, pruned_state, child)
    inherit(graph, pruned_state, new_graph, child)
    state = {k: v.detach().clone() for k, v in child.state_dict().items()}
    return Ticket(ratio, new, state, new_graph.graph["params"], new_graph.graph["macs"], keep, uncontrolled)


def _strongest_first(new_graph, state: dict, child) -> None:
    """Where a layer of the child is narrower than the pruned one inside (an SE's
    squeeze), order its inner channels strongest first, in `state`, by its
    primitive's `strongest_first`; the reordering does not change what it computes."""
    modules = dict(child.named_modules())
    for node, a in new_graph.nodes(data=True):
        prim = primitives.get(a["op"])
        if prim is None or prim.strongest_first is None or node not in modules:
            continue
        mine = modules[node].state_dict()
        if not all(f"{node}.{name}" in state for name in mine):
            continue
        theirs = {name: state[f"{node}.{name}"] for name in mine}
        if not any(m < t for name in mine for m, t in zip(mine[name].shape, theirs[name].shape)):
            continue
        for name, value in prim.strongest_first(theirs).items():
            state[f"{node}.{name}"] = value
