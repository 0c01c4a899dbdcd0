"""Derivation → dependency graph: a `networkx.DiGraph` with one node per operation.

Each node carries

    op        the primitive (or `input`, `output`, `add`, `concat`)
    args      its evaluated arguments
    path      its provenance: the derivation path of the choice that made it, with the
              chosen alternatives' labels (`stage1.cell.0.x2.op1.nor_conv_3x3.relu_conv_bn.conv`)
    rules     the grammar path behind it (`network`, `stage`, `cell`, `op`, `relu_conv_bn`)
    inputs    the nodes it reads, in order (edges carry the same, for graph algorithms)
    in_shapes, shape, params, macs

Shapes are inferred symbolically, per sample, without calling torch; a mismatch
names the path and the shapes. The node id is the path, so a module's submodule
names and `state_dict` keys mean the same thing in every derivation that has them.
"""

from __future__ import annotations

import networkx as nx

from ..language import ir
from ..language.errors import NasError
from ..language.expr import Scope, evaluate, show, type_name
from ..space.derivation import Alt, Derivation, Node, Rep
from ..space.plan import EMPTY_NODE
from . import primitives


def default_input_shape(space) -> tuple:
    """(in_channels, resolution, resolution) from the space's parameters, else (3, 32, 32)."""
    c = space.params.get("in_channels", 3)
    r = space.params.get("resolution", 32)
    return (int(c), int(r), int(r))


def build_graph(space, d: Derivation, input_shape: tuple | None = None) -> nx.DiGraph:
    """The dependency graph of derivation `d` of `space` for one input of `input_shape`."""
    d = space.validate(d)
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(space)
    if any(not isinstance(n, int) or n < 1 for n in shape):
        raise NasError(f"an input shape is positive whole numbers, got {shape}")
    graph = nx.DiGraph(space=space.name, derivation=d.text, input_shape=shape)
    builder = _Builder(space, d, graph)
    graph.add_node("input", op="input", args={}, path="input", rules=(), inputs=[], in_shapes=[],
                   shape=shape, params=0, macs=0)
    network = space.rules["network"]
    outs = builder.rule(network, (), d.root, ("input",), (), ())
    builder.add("output", "output", {}, outs, (), shapes=[graph.nodes[o]["shape"] for o in outs],
                shape=graph.nodes[outs[0]]["shape"] if len(outs) == 1 else None)
    graph.graph["outputs"] = list(outs)
    graph.graph["params"] = sum(a["params"] for _, a in graph.nodes(data=True))
    graph.graph["macs"] = sum(a["macs"] for _, a in graph.nodes(data=True))
    return graph


def output_shape(graph) -> tuple:
    outs = graph.graph["outputs"]
    return graph.nodes[outs[0]]["shape"] if len(outs) == 1 else tuple(graph.nodes[o]["shape"] for o in outs)


def _path(parts) -> str:
    return ".".join(str(p) for p in parts)


class _Builder:
    def __init__(self, space, d, graph):
        self.space = space
        self.graph = graph
        self.shared = {name: d.root[name] for name in space.shared_rules if name in d.root.names()}
        self.main_file = space._file
        self.env: list[dict] = []  # the named tensors of the dags being built, innermost last

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
    def rule(self, rule: ir.Rule, args: tuple, value, ins, parts, rules):
        names = dict(self.space.params) if rule.file == self.main_file else {}
        names.update(zip((p.name for p in rule.params), args))
        node = value if isinstance(value, Node) else EMPTY_NODE
        for w in rule.wheres:
            choices = {s: node[s] for s in w.sites}
            names[w.name] = evaluate(w.value, Scope(names, choices))
        scope = Scope(names)
        rules = (*rules, rule.name)
        body = rule.body
        if isinstance(body, ir.Alt) and body.site is None:  # the rule is one alternative
            alt = value if isinstance(value, Alt) else node["alt"]
            return self.option(body, alt, scope, ins, parts, rules)
        return self.net(body, scope, node, ins, parts, rules)

    def option(self, alt: ir.Alt, chosen: Alt, scope, ins, parts, rules):
        opt = next(o for o in alt.options if o.label == chosen.label)
        return self.net(opt.body, scope, chosen.node, ins, (*parts, chosen.label), rules)

    # -- network expressions: return the output node ids (a tuple)
    def net(self, node, scope: Scope, value: Node, ins, parts, rules):
        kind = type(node)
        if kind is ir.Seq:
            for item in node.items:
                ins = self.net(item, scope, value, ins, parts, rules)
            return ins
        if kind is ir.PrimCall:
            return (self.prim(node, scope, value.get(node.site, EMPTY_NODE), ins, (*parts, node.site), rules),)
        if kind is ir.RuleCall:
            return self.call(node, scope, value.get(node.site), ins, (*parts, node.site), rules)
        if kind is ir.Alt:
            return self.option(node, value[node.site], scope, ins, (*parts, node.site), rules)
        if kind is ir.Repeat:
            return self.repeat(node, scope, value, ins, parts, rules)
        if kind is ir.If:
            test = evaluate(node.test, scope)
            return self.net(node.then if test else node.orelse, scope, value, ins, parts, rules)
        if kind is ir.Merge:
            return (self.merge(node, scope, value, ins, parts, rules),)
        if kind is ir.Dag:
            return self.dag(node, scope, value, ins, parts, rules)
        if kind is ir.NodeRef:
            return (self.env[-1][node.name],)
        raise TypeError(kind)

    def call(self, node: ir.RuleCall, scope, value, ins, parts, rules):
        callee = self.space.rules[node.rule]
        if node.shared:
            value = self.shared.get(node.rule, EMPTY_NODE)
        choices = {s: value[s] for s in node.arg_sites} if node.arg_sites else {}
        args = tuple(evaluate(a, Scope(scope.names, choices)) for a in node.args)
        return self.rule(callee, args, value if value is not None else EMPTY_NODE, ins, parts, rules)

    def prim(self, node: ir.PrimCall, scope, value: Node, ins, parts, rules):
        prim = primitives.get(node.prim)
        path = _path(parts)
        choices = {s: value[s] for s in node.arg_sites}
        args = {}
        for (name, expr), decl in zip(node.args, prim.args):
            v = evaluate(expr, Scope(scope.names, choices))
            args[name] = _typed(v, decl, node.prim, path)
        if len(ins) != 1:
            raise NasError(f"`{path}`: `{node.prim}` takes one tensor, got {len(ins)}", node.pos,
                           "a dag with several outputs must be followed by a dag that takes them")
        shapes = [self.graph.nodes[ins[0]]["shape"]]
        try:
            shape = tuple(prim.shape(args, shapes))
            params = prim.params(args, shapes)
            macs = prim.macs(args, shapes, shape)
        except primitives.ShapeError as err:
            raise NasError(f"`{path}`: {err} (input from `{ins[0]}` has shape {_fmt(shapes[0])})", node.pos) from None
        return self.add(path, node.prim, args, ins, rules, shapes, shape, params, macs)

    def repeat(self, node: ir.Repeat, scope, value: Node, ins, parts, rules):
        rep = value.get(node.site)
        if isinstance(rep, Rep):
            items = rep.items
        else:
            items = (EMPTY_NODE,) * evaluate(node.count, scope)
        for i, item in enumerate(items):
            here = (*parts, node.site, i)
            if isinstance(node.body, ir.RuleCall):  # a repeated call: the copy is the call
                ins = self.call(node.body, scope, item, ins, here, rules)
            else:
                ins = self.net(node.body, scope, item if isinstance(item, Node) else EMPTY_NODE, ins, here, rules)
        return ins

    def merge(self, node: ir.Merge, scope, value: Node, ins, parts, rules):
        sources = []
        for b in node.branches:
            if isinstance(b, ir.Pick):
                picked = value[b.site]
                for chosen in picked.items:
                    branch = dict(b.candidates)[chosen.label]
                    sources.extend(self.branch(branch, scope, chosen.node, ins, (*parts, b.site, chosen.label), rules))
            else:
                sources.extend(self.branch(b, scope, value, ins, parts, rules))
        shapes = [self.graph.nodes[s]["shape"] for s in sources]
        path = _path((*parts, node.kind))
        shape = _merge_shape(node.kind, sources, shapes, path)
        return self.add(path, node.kind, {}, sources, rules, shapes, shape)

    def branch(self, b: ir.Branch, scope, value, ins, parts, rules):
        start = (self.env[-1][b.source],) if b.source is not None else ins
        if b.body is None:
            return start
        return self.net(b.body, scope, value, start, parts, rules)

    def dag(self, node: ir.Dag, scope, value: Node, ins, parts, rules):
        if len(ins) != len(node.inputs):
            raise NasError(f"`{_path(parts) or 'network'}`: the dag takes {len(node.inputs)} tensor(s) "
                           f"({', '.join(node.inputs)}), got {len(ins)}")
        self.env = [*self.env, dict(zip(node.inputs, ins))]
        try:
            for name, branch in node.nodes:
                outs = self.branch(branch, scope, value.get(name, EMPTY_NODE), ins, (*parts, name), rules)
                if len(outs) != 1:
                    raise NasError(f"`{_path((*parts, name))}`: a dag node holds one tensor, got {len(outs)}")
                self.env[-1][name] = outs[0]
            outs = []
            for b in node.outputs:
                outs.extend(self.branch(b, scope, value, ins, parts, rules))
            return tuple(outs)
        finally:
            self.env = self.env[:-1]


def _typed(value, decl, prim, path):
    actual = type_name(value)
    if actual == decl.type or (decl.type == "float" and actual == "int"):
        return float(value) if decl.type == "float" else value
    if decl.type == "int" and actual == "float" and value == int(value):
        return int(value)
    raise NasError(f"`{path}`: argument `{decl.name}` of `{prim}` is {decl.type}, got `{show(value)}` ({actual})",
                   None, "round it: int(...), round(...) or make_divisible(...)" if decl.type == "int" else None)


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
