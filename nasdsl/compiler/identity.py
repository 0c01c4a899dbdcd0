"""Functional identity: when two derivations build the same network.

Different derivations can build one function. In NAS-Bench-201, an edge set to `none`
makes whatever only it read irrelevant, a skip is a wire, and a cell's sum does not
depend on the order of its terms. `function_graph` reduces a dependency graph to what
decides its function:

1. Zeros propagate. A `zero` op is zero, and so is an op whose inputs are all zero
   when it maps zeros to zeros (`Primitive.zero_at_zero`: a bias-free conv, relu, a
   pool). bn is not such an op: its shift turns zeros into a learnable constant. An
   `add` drops its zero terms.
2. Constants collapse. A node that no path from the input reaches computes a
   constant (bn after a zero edge gives its shift); it becomes one `constant` node of
   its shape.
3. Wires vanish. `identity`, and an `add` or `concat` of a single input, pass their
   input on. Sums are opened: `(a + b) + c` is `a + b + c`. An op without weights
   that repeats another's op, arguments and inputs (two average pools of one node)
   is that other node.
4. Dead code goes: every node from which the output cannot be reached.

What remains is labelled by op, arguments and shape, never by path. The edges of an
ordered op carry the input's position; an `add`'s carry how often it reads the input.
Two derivations are functionally identical when their graphs are isomorphic under
these labels. `function_key` is a canonical form's hash where colour refinement
tells every node apart, and `Functions` settles the rest with VF2, so its counts
are exact.

The reduction is structural and conservative: it never merges two different
functions. It may still keep apart two that are equal as families, such as two
convs of one input summed against one conv read twice (separate weights, or one
set), or a concat whose branch order a later conv's weights could undo.
"""

from __future__ import annotations

import hashlib

import networkx as nx

from ..language import primitives as registry

ZERO, CONSTANT, LIVE = "zero", "constant", "live"
_WIRES = ("identity", "add", "concat")  # each passes its input on when it has only one


def _keeps_zero(op: str, args: dict) -> bool:
    primitive = registry.get(op)
    return primitive is not None and primitive.keeps_zero(args)


def _label(op, args, shape) -> str:
    return f"{op}({', '.join(f'{k}={args[k]!r}' for k in sorted(args))}){tuple(shape) if shape else ''}"


def function_graph(graph: nx.DiGraph, constants: bool = True) -> nx.DiGraph:
    """The graph of what `graph` computes (see the module's docstring): nodes labelled
    `label`, edges `at`; node ids are the original ids of the nodes kept.

    `constants=False` takes every op on zeros to give zeros, bn included: the
    convention of NAS-Bench-201's own isomorphism check, where a conv after a `none`
    edge counts as absent."""
    out = nx.DiGraph()
    kind: dict = {}  # original node -> ZERO, CONSTANT or LIVE
    stands: dict = {}  # a LIVE original node -> the reduced node that computes it
    weightless: dict = {}  # (label, inputs) of an op without weights -> its reduced node
    sums: dict = {}  # a reduced add -> its terms: {reduced node: how often}, no add among them

    def source(i):
        """The reduced node a reader of `i` reads: a wire's input, or `i`'s constant."""
        if kind[i] == LIVE:
            return stands[i]
        if i not in out:
            out.add_node(i, label=_label(kind[i], {}, graph.nodes[i]["shape"]))
        return i

    for n in nx.topological_sort(graph):
        a = graph.nodes[n]
        op, ins = a["op"], list(a["inputs"])
        if op == "input":
            kind[n], stands[n] = LIVE, n
            out.add_node(n, label=_label("input", {}, a["shape"]))
            continue
        if op == "add":
            ins = [i for i in ins if kind[i] != ZERO]
        kinds = [kind[i] for i in ins]
        if op == "zero" or not ins or (all(k == ZERO for k in kinds) and op != "output"
                                                and (not constants or _keeps_zero(op, a["args"]))):
            kind[n] = ZERO
        elif LIVE not in kinds and op != "output":
            kind[n] = CONSTANT
        elif len(ins) == 1 and op in _WIRES:
            kind[n], stands[n] = LIVE, source(ins[0])
        else:
            label = _label(op, a["args"], a["shape"])
            if op == "add":
                summed = _terms(ins, source, sums)
                if len(summed) == 1 and sum(summed.values()) == 1:  # a sum that flattened to one term
                    kind[n], stands[n] = LIVE, next(iter(summed))
                    continue
                sums[n] = summed
                at = {s: str(k) for s, k in summed.items()}
            else:
                at = {}
                for position, i in enumerate(ins):
                    at.setdefault(source(i), []).append(position)
                at = {s: str(tuple(p)) for s, p in at.items()}
            same = (label, frozenset(at.items()))
            if not a["params"] and same in weightless:  # computed already: one value, however often read
                kind[n], stands[n] = LIVE, weightless[same]
                continue
            weightless[same] = n
            kind[n], stands[n] = LIVE, n
            out.add_node(n, label=label)
            for s, how in at.items():
                out.add_edge(s, n, at=how)
    end = "output"
    kept = nx.ancestors(out, end) | {end}
    return out.subgraph(kept).copy()


def _terms(ins, source, sums) -> dict:
    """The terms of a sum, with any sum among them opened (addition is associative)."""
    summed: dict = {}
    for i in ins:
        s = source(i)
        for term, k in (sums[s].items() if s in sums else ((s, 1),)):
            summed[term] = summed.get(term, 0) + k
    return summed


def function_key(fgraph: nx.DiGraph) -> str:
    """A hash of a `function_graph` that isomorphic graphs share.

    Colour refinement (Weisfeiler-Lehman, over inputs and readers, edge positions
    included) runs until the colours stop splitting. When every node ends with a
    colour of its own, the graph written in those colours is a canonical form, and
    the key is its hash: equal keys then mean isomorphic graphs. Otherwise (two
    identical branches of one sum) the key starts with `~`, and only VF2
    (`same_function`) can tell."""
    colour, discrete = _refined(fgraph)
    if discrete:
        edges = sorted((colour[u], colour[v], at) for u, v, at in fgraph.edges(data="at"))
        return _digest(repr((sorted(colour.values()), edges)))
    return "~" + _digest(repr(sorted(colour.values())))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _refined(g: nx.DiGraph):
    """Colours that isomorphisms keep: each node's expression from the input (in build
    order) and towards the output (in reverse), refined until no class splits."""
    order = list(nx.topological_sort(g))
    label = dict(g.nodes(data="label"))
    down, up = {}, {}
    for n in order:
        down[n] = _digest(repr((label[n], sorted((at, down[p]) for p, _, at in g.in_edges(n, data="at")))))
    for n in reversed(order):
        up[n] = _digest(repr((label[n], sorted((at, up[r]) for _, r, at in g.out_edges(n, data="at")))))
    colour = {n: _digest(down[n] + up[n]) for n in order}
    classes = len(set(colour.values()))
    while classes < len(g):
        colour = {n: _digest(repr((colour[n], sorted((at, colour[p]) for p, _, at in g.in_edges(n, data="at")),
                                   sorted((at, colour[r]) for _, r, at in g.out_edges(n, data="at")))))
                  for n in order}
        now = len(set(colour.values()))
        if now == classes:
            break
        classes = now
    return colour, classes == len(g)


def same_function(a: nx.DiGraph, b: nx.DiGraph) -> bool:
    """Whether two function graphs are isomorphic, labels and edge positions kept (VF2)."""
    return (a.number_of_nodes() == b.number_of_nodes() and a.number_of_edges() == b.number_of_edges()
            and nx.is_isomorphic(a, b, node_match=_same_label, edge_match=_same_at))


def _same_label(x, y) -> bool:
    return x["label"] == y["label"]


def _same_at(x, y) -> bool:
    return x["at"] == y["at"]


class Functions:
    """The distinct functions seen so far: `add` gives a graph's class number (new
    classes are numbered in order). A canonical key decides at once; a `~` key (a
    graph with symmetries) is settled by VF2 against the graphs that share it."""

    def __init__(self):
        self.classes: dict = {}  # key -> class number, or [(class number, graph)] for a `~` key
        self.count = 0

    def add(self, fgraph: nx.DiGraph) -> int:
        key = function_key(fgraph)
        if not key.startswith("~"):
            if key not in self.classes:
                self.classes[key] = self._new()
            return self.classes[key]
        bucket = self.classes.setdefault(key, [])
        for number, seen in bucket:
            if same_function(seen, fgraph):
                return number
        bucket.append((self._new(), fgraph))
        return bucket[-1][0]

    def _new(self) -> int:
        self.count += 1
        return self.count - 1
