"""The erasing dependency graph: which parts of a network can be removed whole, how
they nest, and whether a network without some of them is still a network.

OTOv3's erasing mode (H2SPG) trains a super-network so that whole structures end at
zero and are erased. A *removal structure* is what one input of a sum (an `add`, or a
parallel supernet's gated sum `gsum`) is made of and nothing else uses: the nodes
whose every path to the output runs through that input, i.e. the input's subtree in
the graph's post-dominator tree. That one definition covers a residual body, a
candidate branch of a summed pick, a projection shortcut, a parallel supernet's
option and the whole mixed edge around it; since post-dominator subtrees are nested
or disjoint, structures are too, and a structure's `parent` is the smallest one that
holds it (erasing it erases its children).

A structure is listed when setting its variables to zero makes it output zero (its
`variables`): every parameter of its layers, where the last layers with parameters
(conv, linear, a per-channel norm) zero the output and what follows maps zero to
zero (relu yes, sigmoid no); in a gated sum the option's gate entry alone does it, so
a parameter-free option (a pool, a skip, `zero`) is removable there. A plain sum's
identity shortcut has nothing to zero and stays.

    erasing = erasing_graph(graph)                # the compiler's, the tracer's or a ParallelSupernet's
    erasing.structures                            # {name: Structure}, outer ones after their children
    erasing.check(["stage2.unit.pick.basic.basic.bn2", ...])   # Validity: ok, and why not
    erasing.variables(module, name)               # [(parameter name, index or None)]: what to zero
    erasing.erased(names)                         # the graph without them; erased_module(...) its module
    net.nearest(erasing.left(names))              # a parallel supernet's remainder as a derivation, how far

The graph may come from `build_graph`, `trace` (any torch module) or
`parallel_graph`; the node ids are module paths, so a structure's variables are
found by name. Channel sets (pruning mode) are `nasdsl.compiler.groups`.
"""

from __future__ import annotations

import attrs
import networkx as nx

from ..language.errors import NasError, did_you_mean
from . import channels as ch
from . import primitives
from .graph import holder

JOINS = ("add", "gsum")  # a sum keeps its shape with any non-empty subset of its inputs


@attrs.frozen
class Structure:
    """What input `position` of `join` is made of, and nothing else reads.

    name      the node the join reads (the structure's output)
    nodes     every node of it (its output included)
    params    how many parameters its layers hold
    gate      (gated sum, option index) when a parallel site joins it, else None
    parent    the smallest structure holding this one, or None
    children  the structures directly inside it
    """

    name: str
    join: str
    position: int
    nodes: frozenset
    params: int
    gate: tuple | None
    parent: str | None = None
    children: tuple = ()


@attrs.frozen
class Validity:
    """Whether a network without some structures is still a network, and why not."""

    ok: bool
    reasons: tuple = ()
    emptied: tuple = ()  # joins left with no input, erased with their structures

    def __bool__(self) -> bool:
        return self.ok


@attrs.frozen
class Erasing:
    graph: nx.DiGraph
    structures: dict  # {name: Structure}, in the graph's order of their outputs

    def removed_nodes(self, names) -> set:
        """Every node of the named structures."""
        return set().union(*(self._get(n).nodes for n in names))

    def check(self, names) -> Validity:
        """`is_valid_after_removal`: the input still reaches the output, every remaining
        operation keeps all its inputs, every sum keeps an input of its own shape (a sum
        left with none is erased too, and its readers are then checked)."""
        graph = self.graph
        gone = self.removed_nodes(names)
        reasons, emptied = [], []
        for node in nx.topological_sort(graph):
            a = graph.nodes[node]
            lost = [i for i in a["inputs"] if i in gone]
            if node in gone or not lost:
                continue
            kept = [s for i, s in zip(a["inputs"], a["in_shapes"]) if i not in gone]
            if a["op"] in JOINS and not kept:
                gone.add(node)
                emptied.append(node)
            elif a["op"] in JOINS and not any(tuple(s) == tuple(a["shape"]) for s in kept):
                reasons.append(f"`{node}` keeps only inputs that broadcast to its shape {tuple(a['shape'])}")
            elif a["op"] not in JOINS:
                reasons.append(f"`{node}` ({a['op']}) loses its input `{lost[0]}`")
        ends = _ends(graph)
        if ends["output"] in gone:
            reasons.append("nothing reaches the output")
        elif not reasons:
            rest = graph.subgraph(n for n in graph if n not in gone)
            if ends["output"] not in nx.descendants(rest, ends["input"]):
                reasons.append("the input no longer reaches the output")
        return Validity(not reasons, tuple(reasons), tuple(emptied))

    def variables(self, module, name: str) -> list[tuple[str, int | None]]:
        """(parameter name, index) pairs that zero structure `name` when set to zero:
        its gate entry in a gated sum, else every parameter of its layers (index None)."""
        self._get(name)
        return self.all_variables(module)[name]

    def all_variables(self, module) -> dict[str, list]:
        """`variables` of every structure, each parameter's owning node found once."""
        holders = {holder(self.graph, n): n for n in self.graph}
        owners = [(p, _owner(holders, p)) for p, _ in module.named_parameters()]
        return {name: [(f"{s.gate[0]}.gate", s.gate[1])] if s.gate is not None
                else [(p, None) for p, node in owners if node in s.nodes]
                for name, s in self.structures.items()}

    def erased(self, names) -> nx.DiGraph:
        """The graph without the named structures (and the sums they empty): each sum
        reads what is left; a gated sum's `kept` holds the option positions it keeps."""
        verdict = self.check(names)
        if not verdict:
            raise NasError(f"erasing these structures leaves no valid network: {verdict.reasons[0]}",
                           hint="`Erasing.check` names every reason; erase what reads a removed part too")
        gone = self.removed_nodes(names) | set(verdict.emptied)
        graph = self.graph.copy()  # not `subgraph`: a view of under half the nodes iterates them in set order,
        graph.remove_nodes_from(gone)  # and a module is built in the graph's (topological) node order
        for node in graph:
            a = graph.nodes[node]
            kept = [k for k, i in enumerate(a["inputs"]) if i not in gone]
            if len(kept) == len(a["inputs"]):
                continue
            a["inputs"] = [a["inputs"][k] for k in kept]
            a["in_shapes"] = [a["in_shapes"][k] for k in kept]
            if a["op"] == "gsum":
                labels = a["args"]["labels"]
                a["args"] = {**a["args"], "labels": tuple(labels[k] for k in kept),
                             "kept": tuple(a["args"].get("kept", range(len(labels)))[k] for k in kept)}
                a["params"] = len(kept)
        graph.graph["params"] = sum(a["params"] for _, a in graph.nodes(data=True))
        graph.graph["macs"] = sum(a["macs"] for _, a in graph.nodes(data=True))
        return graph

    def left(self, names) -> dict:
        """{gated sum: labels of its options still there} after erasing `names` (a
        parallel supernet's sites, for `ParallelSupernet.nearest`)."""
        gone = self.removed_nodes(names)
        out: dict = {}
        for node, a in self.graph.nodes(data=True):
            if a["op"] == "gsum":  # an erased sum keeps none
                out[node] = {label for label, i in zip(a["args"]["labels"], a["inputs"])
                             if node not in gone and i not in gone}
        return out

    def _get(self, name: str) -> Structure:
        if name not in self.structures:
            raise NasError(f"`{name}` is no removal structure of this network",
                           hint=did_you_mean(name, self.structures) or "see `erasing_graph(graph).structures`")
        return self.structures[name]


def erasing_graph(graph: nx.DiGraph) -> Erasing:
    """The removal structures of a dependency graph and their nesting."""
    ends = _ends(graph)
    if len(ends) < 2:
        raise NasError("the graph needs one `input` and one `output` node to find what can be erased")
    ipdom = nx.immediate_dominators(graph.reverse(copy=False), ends["output"])
    below: dict[str, list] = {}
    for node, up in ipdom.items():
        if node != up:
            below.setdefault(up, []).append(node)
    shared = {n: set(calls) for calls in graph.graph.get("shared_calls", {}).values() for n in calls}
    order = {n: k for k, n in enumerate(graph)}  # the build order, a topological one
    found = {}
    for join in graph:
        a = graph.nodes[join]
        if a["op"] not in JOINS or len(a["inputs"]) < 2:
            continue
        for position, source in enumerate(a["inputs"]):
            if source in found or list(graph.successors(source)) != [join] or a["inputs"].count(source) > 1:
                continue
            nodes = _subtree(below, source)
            gate = (join, position) if a["op"] == "gsum" else None
            if ends["input"] in nodes or (gate is None and not _zeroed(graph, nodes, source, shared, order)):
                continue
            found[source] = Structure(source, join, position, frozenset(nodes),
                                      sum(graph.nodes[n]["params"] for n in nodes), gate)
    return Erasing(graph, _nest(found, ipdom, graph))


def _subtree(below: dict, root) -> set:
    seen, frontier = {root}, [root]
    while frontier:
        for child in below.get(frontier.pop(), ()):
            seen.add(child)
            frontier.append(child)
    return seen


def _nest(found: dict, ipdom: dict, graph) -> dict:
    """Each structure's parent: the first structure output above its join in the
    post-dominator tree (the structure the join itself belongs to)."""
    parent = {}
    for name, s in found.items():
        up = s.join
        while up not in found and ipdom.get(up, up) != up:
            up = ipdom[up]
        parent[name] = up if up in found else None
    children: dict[str, list] = {}
    for name, p in parent.items():
        if p is not None:
            children.setdefault(p, []).append(name)
    order = [n for n in graph if n in found]  # a child's output comes before its parent's
    return {n: attrs.evolve(found[n], parent=parent[n], children=tuple(c for c in order if c in children.get(n, ())))
            for n in order}


def erased_module(erasing: Erasing, module, names):
    """The compact module without the named structures: it computes what `module` does
    with those structures' variables at zero. A compiled or parallel graph's is built
    anew from the erased graph (every tensor `module`'s, a gated sum's gate cut to its
    kept options); a traced module's is its own torch.fx graph with each sum that lost
    a branch replaced by the branch left and the dead code removed."""
    graph = erasing.erased(names)
    if any(a.get("fx") for _, a in erasing.graph.nodes(data=True)):
        return _erased_trace(erasing.graph, graph, module)
    from .module import build_module

    small = build_module(graph, seed=None)
    old = module.state_dict()
    state = {}
    for key in small.state_dict():
        node = key.rsplit(".", 1)[0]
        kept = graph.nodes[node]["args"].get("kept") if node in graph and graph.nodes[node]["op"] == "gsum" else None
        state[key] = old[key][list(kept)] if kept is not None else old[key]
    small.load_state_dict(state)
    return small


def _erased_trace(full: nx.DiGraph, graph: nx.DiGraph, module):
    import copy

    import torch.fx

    from .fxtrace import fx_trace

    gm = fx_trace(copy.deepcopy(module), full.graph.get("input_shape"))
    fx = {n.name: n for n in gm.graph.nodes}
    for join, a in graph.nodes(data=True):
        before = full.nodes[join]["inputs"]
        if a["op"] not in JOINS or a["inputs"] == before:
            continue
        node = fx[a["fx"]]
        read = []
        torch.fx.node.map_arg((node.args, node.kwargs), read.append)
        if len(read) != len(before) or len(a["inputs"]) != 1:
            raise NasError(f"cannot rewire `{join}` ({node.format_node()}) without its erased inputs",
                           hint="a traced sum is erased input by input when it reads exactly the tensors it sums")
        node.replace_all_uses_with(read[before.index(a["inputs"][0])])
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _ends(graph) -> dict:
    return {a["op"]: n for n, a in graph.nodes(data=True) if a["op"] in ("input", "output")}


def _zeroed(graph, nodes: set, output, shared: dict, order: dict) -> bool:
    """Whether zeroing every parameter of `nodes` makes `output` zero (conservative:
    an op nasdsl has no word for, or a layer whose weights are used elsewhere, is not)."""
    zero = {}
    for node in sorted(nodes, key=order.__getitem__):  # topological: the build order
        a = graph.nodes[node]
        if not shared.get(node, set()) <= nodes:
            return False  # a module called here and outside: its weights cannot be zeroed for this part alone
        prim = primitives.get(a["op"])
        flow = prim.channels_of(a["args"], a["in_shapes"], a["shape"]) if prim is not None else None
        inputs_zero = all(zero.get(i, False) for i in a["inputs"])
        if a["op"] == "zero" or (a["op"] == "gsum" and a["params"]):
            zero[node] = True  # zeros; or a gated sum, whose gate is zeroed with the rest
        elif a["params"] and flow is not None and (flow.flow in ("producer", "depthwise")
                                                  or prim.slicer is ch.slice_per_channel):
            zero[node] = True  # its weights (and bias, its norm's shift) are zero: so is its output
        elif a["params"]:
            zero[node] = False  # squeeze-and-excitation, an unknown module: not known to vanish
        elif a["op"] in JOINS or a["op"] == "concat":
            zero[node] = inputs_zero
        elif a["op"] == "mul":
            zero[node] = any(zero.get(i, False) for i in a["inputs"])
        else:
            zero[node] = flow is not None and flow.flow in ("pass", "depthwise") and flow.zero and inputs_zero
    return zero.get(output, False)


def _owner(holders: dict, parameter: str):
    """The node a parameter belongs to: the one whose module (`holders`: module path ->
    node) has the longest path its name starts with (a gated sum's module also holds
    its options' modules, under longer paths)."""
    parts = parameter.split(".")
    for k in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:k]) in holders:
            return holders[".".join(parts[:k])]
    return None
