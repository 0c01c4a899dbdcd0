"""The one walk of a space's IR that builds a network: the *elaborator*.

At each choice site the elaborator asks a *chooser* what to take: which option of an
alternative, the values of `where` and argument choices, how many copies a repeat
makes, which candidates a pick keeps. `DerivationChooser` answers from one
derivation, which gives today's graphs. A chooser may answer several options at an
alternative, several candidates beyond what a pick takes (in an `add`), or several
values of a value site (`branches`): the walk then builds each under its own path
(`site.label`, `site.name=value`) and joins them in a `gsum` node at the site's path,
a sum under the site's gate (the parallel form, `nasdsl.compiler.parallel`).

The walk emits one graph node per operation (see `nasdsl.compiler.graph` for the
attributes). Scoping follows the planner's rules (`nasdsl.space.scope`): rules of the
main file see the space parameters, and `where` names are evaluated in order.
"""

from __future__ import annotations

from typing import Protocol

import networkx as nx

from ..language import ir
from ..language.errors import NasError
from ..language.expr import Scope, evaluate
from ..language.primitives import ShapeError
from ..space.derivation import Alt, Node, Rep
from ..space.plan import EMPTY_NODE
from ..space.scope import argument_value, rule_names
from . import primitives

_ABSENT = object()


class SupernetError(NasError):
    """A derivation or a space that a supernet cannot hold."""


class Chooser(Protocol):
    """What the elaborator asks at one position of the walk. Each answer that leads
    deeper is again a chooser, for the position below."""

    def at(self, site: str) -> "Chooser":
        """The position below a call or primitive site."""

    def values(self, sites) -> dict:
        """The chosen values of value-choice sites (where, argument and count choices)."""

    def branches(self, sites) -> list[tuple[str, "Chooser"]]:
        """Value sites among `sites` that run side by side: (label, the chooser with
        that value) per value of the first such site; empty where none does."""

    def option(self, site: str | None) -> list[tuple[str, "Chooser"]]:
        """The chosen alternatives at `site` (None: the rule's own body is the
        alternative): one for a derivation; several run side by side, summed."""

    def copies(self, site: str, count) -> list["Chooser"]:
        """One chooser per copy of a repeat; `count` evaluates a fixed count."""

    def picked(self, site: str, summed: bool) -> list[tuple[str, "Chooser"]]:
        """The chosen candidates of a pick, in order; in a sum (`summed`) a chooser
        may give more than the pick takes, and they are summed under a gate."""

    def record(self, site: str | None, kind: str):
        """What the joining node of a site that answered several keeps (`choice`)."""

    def shared(self, rule: str) -> "Chooser":
        """The position of a shared rule (derived once for all its uses)."""


class DerivationChooser:
    """The choices of one derivation: a view of it at one position."""

    __slots__ = ("value", "node", "_shared")  # one per site of every network built: kept small

    def __init__(self, value, shared: dict):
        self.value = value  # a Node, or an Alt where a rule's body is one alternative
        self.node = value if isinstance(value, Node) else EMPTY_NODE
        self._shared = shared

    def _below(self, value) -> "DerivationChooser":
        return DerivationChooser(value if value is not None else EMPTY_NODE, self._shared)

    def at(self, site):
        return self._below(self.node.get(site, EMPTY_NODE))

    def values(self, sites):
        # a choice in an `if` branch not taken is not in the node, and is not read
        return {s: v for s in sites if (v := self.node.get(s, _ABSENT)) is not _ABSENT}

    def branches(self, sites):
        return ()

    def option(self, site):
        alt = (self.value if isinstance(self.value, Alt) else self.node["alt"]) if site is None else self.node[site]
        return [(alt.label, self._below(alt.node))]

    def copies(self, site, count):
        rep = self.node.get(site)
        items = rep.items if isinstance(rep, Rep) else (EMPTY_NODE,) * count()
        return [self._below(item) for item in items]  # an item may be an Alt: a repeated rule's option

    def picked(self, site, summed):
        return [(chosen.label, self._below(chosen.node)) for chosen in self.node[site].items]

    def record(self, site, kind):
        return None

    def shared(self, rule):
        return self._below(self._shared.get(rule, EMPTY_NODE))


def derivation_chooser(space, d) -> DerivationChooser:
    shared = {name: d.root[name] for name in space.shared_rules if name in d.root.names()}
    return DerivationChooser(d.root, shared)


def elaborate(space, choose: Chooser, input_shape: tuple, **attrs) -> nx.DiGraph:
    """The graph of the network that `choose` picks from `space`, for one input of
    `input_shape`; `attrs` go into `graph.graph` (the derivation's text, say)."""
    graph = nx.DiGraph(space=space.name, **attrs, input_shape=input_shape)
    walk = Elaborator(space, graph)
    graph.add_node("input", op="input", args={}, path="input", rules=(), inputs=[], in_shapes=[],
                   shape=input_shape, params=0, macs=0)
    outs = walk.rule(space.rules["network"], (), choose, ("input",), (), ())
    walk.add("output", "output", {}, outs, (), shapes=[graph.nodes[o]["shape"] for o in outs],
             shape=graph.nodes[outs[0]]["shape"] if len(outs) == 1 else None)
    graph.graph["outputs"] = list(outs)
    graph.graph["params"] = sum(a["params"] for _, a in graph.nodes(data=True))
    graph.graph["macs"] = sum(a["macs"] for _, a in graph.nodes(data=True))
    return graph


def _path(parts) -> str:
    return ".".join(str(p) for p in parts)


class Elaborator:
    """Walks the IR from `network` and adds the operations to `graph`."""

    def __init__(self, space, graph: nx.DiGraph):
        self.space = space
        self.graph = graph
        self.env: list[dict] = []  # the named tensors of the dags being built, innermost last
        # one method per kind of network expression (a dict: singledispatch costs a third of the walk)
        self._walk = {ir.Seq: self._seq, ir.PrimCall: self._prim_call, ir.RuleCall: self._rule_call,
                      ir.Alt: self._alt, ir.Repeat: self._repeat, ir.If: self._if, ir.Merge: self._merge,
                      ir.Dag: self.dag, ir.NodeRef: self._node_ref}

    # -- nodes
    def add(self, node_id, op, args, inputs, rules, shapes=None, shape=None, params=0, macs=0):
        if node_id in self.graph:
            n = 1
            while f"{node_id}_{n}" in self.graph:
                n += 1
            node_id = f"{node_id}_{n}"
        shapes = shapes if shapes is not None else [self.graph.nodes[i]["shape"] for i in inputs]
        self.graph.add_node(node_id, op=op, args=args, path=node_id, rules=rules, inputs=list(inputs),
                            in_shapes=shapes, shape=shape, params=params, macs=macs)
        for src in inputs:
            self.graph.add_edge(src, node_id)
        return node_id

    # -- rules
    def rule(self, rule: ir.Rule, args: tuple, choose, ins, parts, rules):
        if rule.wheres:
            forks = choose.branches(tuple(s for w in rule.wheres for s in w.sites))
            if forks:
                return self.fork(forks, parts, rules, lambda c, here: self.rule(rule, args, c, ins, here, rules))
        names = rule_names(self.space.params, self.space._file, rule, args)
        for w in rule.wheres:
            names[w.name] = evaluate(w.value, Scope(names, choose.values(w.sites)))
        scope = Scope(names)
        rules = (*rules, rule.name)
        body = rule.body
        if isinstance(body, ir.Alt) and body.site is None:  # the rule is one alternative
            return self.option(body, None, scope, choose, ins, parts, rules)
        return self.net(body, scope, choose, ins, parts, rules)

    def option(self, alt: ir.Alt, site, scope, choose, ins, parts, rules):
        chosen = choose.option(site)
        bodies = {o.label: o.body for o in alt.options}
        if len(chosen) == 1:
            label, below = chosen[0]
            return self.net(bodies[label], scope, below, ins, (*parts, label), rules)
        outs = [self.net(bodies[label], scope, below, ins, (*parts, label), rules) for label, below in chosen]
        return (self.join(parts, [label for label, _ in chosen], outs, rules, choose.record(site, "alt")),)

    def fork(self, forks, parts, rules, build):
        """One branch per value of a value site, joined: `build(chooser, parts)` builds
        one (each branch's chooser knows the value it pins, and records the site)."""
        if not parts:
            raise SupernetError("a value choice of `network` itself cannot run side by side",
                                hint="move the choice into a rule that `network` calls")
        outs = [build(below, (*parts, label)) for label, below in forks]
        return (self.join(parts, [label for label, _ in forks], outs, rules, forks[0][1].record(None, "value")),)

    def join(self, parts, labels, outs, rules, choice):
        """The gated sum of a parallel site's branches (one tensor each, one shape)."""
        path = _path(parts)
        if "gate" in labels:
            raise SupernetError(f"`{path}`: an option labelled `gate` clashes with the site's gate",
                                hint="label the option otherwise")
        for label, out in zip(labels, outs):
            if len(out) != 1:
                raise SupernetError(f"`{path}`: option `{label}` gives {len(out)} tensors; a parallel site sums one")
        sources = [out[0] for out in outs]
        shapes = [self.graph.nodes[s]["shape"] for s in sources]
        if any(shape != shapes[0] for shape in shapes):
            found = ", ".join(f"`{label}` {_fmt(shape)}" for label, shape in zip(labels, shapes))
            raise SupernetError(f"`{path}`: the options disagree in shape ({found}); a parallel site sums them",
                                hint="only options of one output shape can run side by side; "
                                     "build the single-path `Supernet` for this space")
        # the gate's numbers are parameters; elementwise work counts no MACs, as for `add`
        return self.add(path, "gsum", {"labels": tuple(labels), "choice": choice}, sources, rules, shapes, shapes[0],
                        params=len(labels))

    # -- network expressions: each returns the output node ids (a tuple)
    def net(self, node, scope: Scope, choose, ins, parts, rules):
        return self._walk[type(node)](node, scope, choose, ins, parts, rules)

    def _seq(self, node: ir.Seq, scope, choose, ins, parts, rules):
        for item in node.items:
            ins = self.net(item, scope, choose, ins, parts, rules)
        return ins

    def _prim_call(self, node: ir.PrimCall, scope, choose, ins, parts, rules):
        return (self.prim(node, scope, choose.at(node.site), ins, (*parts, node.site), rules),)

    def _rule_call(self, node: ir.RuleCall, scope, choose, ins, parts, rules):
        return self.call(node, scope, choose.at(node.site), ins, (*parts, node.site), rules)

    def _alt(self, node: ir.Alt, scope, choose, ins, parts, rules):
        return self.option(node, node.site, scope, choose, ins, (*parts, node.site), rules)

    def _repeat(self, node: ir.Repeat, scope, choose, ins, parts, rules):
        copies = choose.copies(node.site, lambda: evaluate(node.count, scope))
        for i, item in enumerate(copies):
            here = (*parts, node.site, i)
            if isinstance(node.body, ir.RuleCall):  # a repeated call: the copy is the call
                ins = self.call(node.body, scope, item, ins, here, rules)
            else:
                ins = self.net(node.body, scope, item, ins, here, rules)
        return ins

    def _if(self, node: ir.If, scope, choose, ins, parts, rules):
        test = evaluate(node.test, scope)
        return self.net(node.then if test else node.orelse, scope, choose, ins, parts, rules)

    def _merge(self, node: ir.Merge, scope, choose, ins, parts, rules):
        return (self.merge(node, scope, choose, ins, parts, rules),)

    def _node_ref(self, node: ir.NodeRef, scope, choose, ins, parts, rules):
        return (self.env[-1][node.name],)

    def call(self, node: ir.RuleCall, scope, choose, ins, parts, rules):
        callee = self.space.rules[node.rule]
        if node.shared:
            choose = choose.shared(node.rule)
        if node.arg_sites:
            forks = choose.branches(node.arg_sites)
            if forks:
                return self.fork(forks, parts, rules,
                                 lambda c, here: self._called(node, callee, scope, c, ins, here, rules))
        return self._called(node, callee, scope, choose, ins, parts, rules)

    def _called(self, node, callee, scope, choose, ins, parts, rules):
        choices = choose.values(node.arg_sites) if node.arg_sites else {}
        args = tuple(evaluate(a, Scope(scope.names, choices)) for a in node.args)
        return self.rule(callee, args, choose, ins, parts, rules)

    def prim(self, node: ir.PrimCall, scope, choose, ins, parts, rules):
        if node.arg_sites:
            forks = choose.branches(node.arg_sites)
            if forks:
                return self.fork(forks, parts, rules, lambda c, here: (self.prim(node, scope, c, ins, here, rules),))[0]
        prim = primitives.get(node.prim)
        path = _path(parts)
        choices = choose.values(node.arg_sites)
        args = {}
        for (name, expr), decl in zip(node.args, prim.args):
            args[name] = argument_value(evaluate(expr, Scope(scope.names, choices)), decl, node.prim, path)
        if len(ins) != 1:
            raise NasError(f"`{path}`: `{node.prim}` takes one tensor, got {len(ins)}", node.pos,
                           "a dag with several outputs must be followed by a dag that takes them")
        shapes = [self.graph.nodes[ins[0]]["shape"]]
        try:
            shape = tuple(prim.shape(args, shapes))
            params = prim.params(args, shapes)
            macs = prim.macs(args, shapes, shape)
        except ShapeError as err:
            raise NasError(f"`{path}`: {err} (input from `{ins[0]}` has shape {_fmt(shapes[0])})", node.pos) from None
        return self.add(path, node.prim, args, ins, rules, shapes, shape, params, macs)

    def merge(self, node: ir.Merge, scope, choose, ins, parts, rules):
        sources = []
        for b in node.branches:
            if isinstance(b, ir.Pick):
                candidates = dict(b.candidates)
                chosen = choose.picked(b.site, node.kind == "add")
                outs = [self.branch(candidates[label], scope, below, ins, (*parts, b.site, label), rules)
                        for label, below in chosen]
                if node.kind == "add" and len(chosen) > 1 and len(chosen) != evaluate(b.k, scope):
                    sources.append(self.join((*parts, b.site), [label for label, _ in chosen], outs, rules,
                                             choose.record(b.site, "pick")))
                else:
                    for out in outs:
                        sources.extend(out)
            else:
                sources.extend(self.branch(b, scope, choose, ins, parts, rules))
        shapes = [self.graph.nodes[s]["shape"] for s in sources]
        path = _path((*parts, node.kind))
        shape = _merge_shape(node.kind, sources, shapes, path)
        return self.add(path, node.kind, {}, sources, rules, shapes, shape)

    def branch(self, b: ir.Branch, scope, choose, ins, parts, rules):
        start = (self.env[-1][b.source],) if b.source is not None else ins
        if b.body is None:
            return start
        return self.net(b.body, scope, choose, start, parts, rules)

    def dag(self, node: ir.Dag, scope, choose, ins, parts, rules):
        if len(ins) != len(node.inputs):
            raise NasError(f"`{_path(parts) or 'network'}`: the dag takes {len(node.inputs)} tensor(s) "
                           f"({', '.join(node.inputs)}), got {len(ins)}")
        self.env = [*self.env, dict(zip(node.inputs, ins))]
        try:
            for name, branch in node.nodes:
                outs = self.branch(branch, scope, choose.at(name), ins, (*parts, name), rules)
                if len(outs) != 1:
                    raise NasError(f"`{_path((*parts, name))}`: a dag node holds one tensor, got {len(outs)}")
                self.env[-1][name] = outs[0]
            outs = []
            for b in node.outputs:
                outs.extend(self.branch(b, scope, choose, ins, parts, rules))
            return tuple(outs)
        finally:
            self.env = self.env[:-1]


def _fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _merge_shape(kind, sources, shapes, path):
    if not shapes:
        raise NasError(f"`{path}`: nothing to {kind}")
    first = shapes[0]
    for src, shape in zip(sources[1:], shapes[1:]):
        same = shape == first if kind == "add" else (len(shape) == 3 and shape[1:] == first[1:])
        if not same:
            raise NasError(f"`{path}`: cannot {kind} `{sources[0]}` {_fmt(first)} and `{src}` {_fmt(shape)}",
                           None, "the branches must agree in shape" if kind == "add"
                           else "concat joins channels; heights and widths must agree")
    if kind == "add":
        return first
    return (sum(s[0] for s in shapes), first[1], first[2])
