"""Restriction: the sub-space that keeps only some values at some paths, written
back out as a `.nas` file.

    sub = space.restrict({"cell.x2.op1": {"nor_conv_3x3", "skip_connect"},
                          "stage1.rest": {0, 1},                     # repetition counts
                          "stage1.rest.*.mbconv.expand": {3}})       # every copy
    sub.space.count      # exactly the original derivations that satisfy every entry
    sub.text             # a self-contained space file (imports inlined)

A path names a choice site of the derivation. Rules along the path are cloned
(`block` becomes `block_r1`, called `as block` so paths and derivation texts are
unchanged), so the restriction applies at that path only; `*` stands for every
copy of a repetition. Each entry is applied to the space the previous one left,
and the result is re-read and re-checked like any space file.

What can be kept at a path is read from the plan (`domain`), where every domain
is evaluated in its own context. Each entry's text is read once, and its space
borrows the previous space's plans for every rule the edit left alone, so only
the cloned rules are planned again.
"""

from __future__ import annotations

import attrs

from ..language import ast, ir, printer
from ..language.check import load_file, reachable, syntax_reachable
from ..language.errors import NasError, did_you_mean
from .derivation import scalar_text


@attrs.frozen
class Restriction:
    space: object  # the restricted Space
    text: str  # its .nas source


def restrict(space, keep: dict) -> Restriction:
    """`space` with only the `keep` values allowed at each path; the result is of
    `space`'s own class (the compiler's Space compiles, the space layer's does not).

    Each entry's text is read once: the next entry edits the space it gives
    (planned once, for its domains). The presets are the original's that set no
    parameters, kept where the restricted space reads them."""

    def loads(text, planned):
        return _reusing_plans(type(original).from_loaded(load_file(None, text, name=name)), planned)

    original = space
    name = f"<{original.name} restricted>" if keep else f"<{original.name}>"
    entries = list(keep.items())
    edited = _edited(space, {}, []) if not entries else None
    for i, (path, allowed) in enumerate(entries):
        edited = _restrict_once(space, path, allowed)
        if i < len(entries) - 1:
            space = loads(_text(edited, ()), space)
    presets = _presets(original)
    text = _text(edited, presets)
    space = loads(text, space)
    kept = [p for p in presets if _reads(space, p[0])]
    if len(kept) < len(presets):  # a preset outside the restricted space is dropped
        text = _text(edited, kept)
        space = loads(text, space)
    return Restriction(space.check(), text)


def _reusing_plans(space, planned):
    """`space` with the plans of `planned` for every rule that is the same in both,
    along with all it calls (rules off the restricted paths are not planned again).

    The plans are only lent when they build a non-empty space: the error for an
    empty one names the `require` met last, which a fresh planner finds."""
    if space.params != planned.params or space.is_library:
        return space
    same = {n for n, r in space.rules.items() if n in planned.rules and _same_rule(
        r, space._file, planned.rules[n], planned._file)}
    lent = {n for n in same if all(c in same for c in reachable(space.rules, n))}
    fresh = space.bind()
    space.planner.memo.update({key: plan for key, plan in planned.planner.memo.items() if key[0] in lent})
    try:
        space.root  # noqa: B018 -- plan it now, to fall back to a fresh planner on an error
    except NasError:
        return fresh
    return space


def _same_rule(a: ir.Rule, a_file: str, b: ir.Rule, b_file: str) -> bool:
    """Equal checked rules (positions aside) that see the space parameters alike."""
    return (a.params, a.body, a.shared, a.wheres, a.requires) == (b.params, b.body, b.shared, b.wheres, b.requires) \
        and (a.file == a_file) == (b.file == b_file)


def _presets(space) -> list:
    """(name, (), derivation text) for the presets that set no parameters."""
    out = []
    for name in space.presets:
        try:
            if not space.preset_params(name):
                out.append((name, (), space.preset(name).text))
        except NasError:
            continue
    return out


def _reads(space, preset: str) -> bool:
    try:
        space.preset(preset)
        return True
    except NasError:
        return False


def _literal(v):
    if isinstance(v, bool):
        return ast.Bool(v)
    if isinstance(v, (int, float)):
        return ast.Num(v)
    return ast.Var(v) if v.isidentifier() else ast.Str(v)


class _Edit:
    """Collects cloned rules and the syntax nodes to replace (by identity)."""

    def __init__(self, space):
        self.space = space
        self.replace: dict = {}  # output rule name -> {id(syntax node): new syntax node}
        self.clones: list = []  # (new name, original ir.Rule)
        self.taken = set(space.rules)

    def clone_name(self, name):
        n = 1
        while f"{name}_r{n}" in self.taken:
            n += 1
        self.taken.add(f"{name}_r{n}")
        return f"{name}_r{n}"


def _restrict_once(space, path: str, allowed) -> tuple:
    if isinstance(allowed, (str, int, float)):
        allowed = {allowed}
    allowed = set(allowed)
    parts = [p for p in path.split(".") if p]
    if not parts:
        raise NasError("a restriction needs a path, e.g. `cell.x2.op1`")
    edit = _Edit(space)
    edit.domain = space.root.domain(parts, path)
    unknown = [a for a in allowed if not any(a == v for v in edit.domain)]
    if unknown:
        shown = ", ".join(scalar_text(v) for v in edit.domain[:12])
        raise NasError(f"`{path}`: {scalar_text(unknown[0])} is not allowed here", None, f"allowed: {shown}")
    if not allowed:
        raise NasError(f"`{path}`: nothing would be kept")
    head = parts[0]
    root_rule = space.rules["network"]
    if head in space.shared_rules:
        # a shared rule is one derivation everywhere: restrict it in place
        _in_rule(edit, space.rules[head], parts[1:], allowed, path, in_place=True)
    else:
        _in_scope(edit, "network", root_rule, root_rule.body, root_rule.wheres, parts, allowed, path)
    return _edited(space, edit.replace, edit.clones)


def _sites(node):
    """Named things directly in a scope: (name, ir node), looking through transparent containers."""
    kind = type(node)
    if kind is ir.Seq:
        for i in node.items:
            yield from _sites(i)
    elif kind in (ir.RuleCall, ir.PrimCall, ir.Repeat, ir.Pick):
        yield node.site, node
    elif kind is ir.Alt:
        yield node.site, node
    elif kind is ir.If:
        yield from _sites(node.then)
        yield from _sites(node.orelse)
    elif kind is ir.Merge:
        for b in node.branches:
            yield from _sites(b)
    elif kind is ir.Branch:
        if node.body is not None:
            yield from _sites(node.body)
    elif kind is ir.Dag:
        for name, b in node.nodes:
            yield name, ("dagnode", b)
        for b in node.outputs:
            yield from _sites(b)


def _in_scope(edit, target, rule, body, wheres, parts, allowed, path):
    name, rest = parts[0], parts[1:]
    for w in wheres:
        if name in w.sites:
            if rest:
                raise NasError(f"`{path}`: `{name}` is a value; nothing lies below it")
            _restrict_value(edit, target, _find_site(w.value, name), allowed, path)
            return
    found = [node for site, node in _sites(body) if site == name]
    if isinstance(body, ir.Alt) and body.site is None:  # a rule that is one alternative
        found = [node for o in body.options for site, node in _sites(o.body) if site == name]
    if not found:
        names = [s for s, _ in _sites(body)] + [s for w in wheres for s in w.sites]
        raise NasError(f"`{path}`: no choice named `{name}` in rule `{rule.name}`", None,
                       did_you_mean(name, names) or f"names there: {', '.join(names) or 'none'}")
    for node in found:
        _in_node(edit, target, rule, node, rest, allowed, path)


def _in_node(edit, target, rule, node, rest, allowed, path):
    if isinstance(node, tuple):  # a dag node: its own scope
        if not rest:
            raise NasError(f"`{path}`: a dag node is a scope; name a choice inside it")
        _in_scope(edit, target, rule, node[1], (), rest, allowed, path)
        return
    kind = type(node)
    if kind is ir.RuleCall:
        if rest and rest[0] in node.arg_sites:
            if rest[1:]:
                raise NasError(f"`{path}`: `{rest[0]}` is a value; nothing lies below it")
            _restrict_value(edit, target, _find_arg_site(node, rest[0]), allowed, path)
            return
        if node.shared:
            raise NasError(f"`{path}`: `{node.rule}` is shared; restrict it at `{node.rule}...` instead")
        clone = _in_rule(edit, edit.space.rules[node.rule], rest, allowed, path)
        edit.replace.setdefault(target, {})[id(node.syntax)] = ast.Labelled(ast.Call(clone, node.syntax.args, pos=node.syntax.pos),
                                                     node.site)
    elif kind is ir.PrimCall:
        if len(rest) != 1 or rest[0] not in node.arg_sites:
            raise NasError(f"`{path}`: `{node.prim}` has choices {', '.join(node.arg_sites) or 'none'}")
        _restrict_value(edit, target, _find_arg_site(node, rest[0]), allowed, path)
    elif kind is ir.Alt:
        if rest:
            for o in node.options:
                if any(site == rest[0] for site, _ in _sites(o.body)):
                    _in_scope(edit, target, rule, o.body, (), rest, allowed, path)
            return
        _restrict_alt(edit, target, node, allowed, path)
    elif kind is ir.Repeat:
        if not rest:
            if not isinstance(node.count, (ir.VChoice, ir.VRange)):
                raise NasError(f"`{path}`: this repetition's count is fixed; nothing to restrict")
            _restrict_value(edit, target, node.count, allowed, path)
            return
        if rest[0] != "*":
            raise NasError(f"`{path}`: restrict every copy of a repetition with `*` (e.g. `{rest[0]}` → `*`)")
        body = node.body
        if isinstance(body, ir.RuleCall):
            _in_node(edit, target, rule, body, rest[1:], allowed, path)
        else:
            _in_scope(edit, target, rule, body, (), rest[1:], allowed, path)
    elif kind is ir.Pick:
        if not rest:
            kept = tuple(c for (lab, _), c in zip(node.candidates, node.syntax.candidates) if lab in allowed)
            edit.replace.setdefault(target, {})[id(node.syntax)] = ast.Pick(node.syntax.k, kept, pos=node.syntax.pos)
            return
        for lab, branch in node.candidates:
            if lab == rest[0]:
                _in_scope(edit, target, rule, branch, (), rest[1:], allowed, path)
                return
        raise NasError(f"`{path}`: no candidate `{rest[0]}`", None,
                       did_you_mean(rest[0], [lab for lab, _ in node.candidates]))


def _in_rule(edit, rule, rest, allowed, path, in_place=False) -> str:
    """Restrict inside `rule` (a clone, unless in place); returns the name to call."""
    target = rule.name if in_place else edit.clone_name(rule.name)
    if not rest:  # the rule's own value: its top-level alternative
        if isinstance(rule.body, ir.Alt) and rule.body.site is None:
            _restrict_alt(edit, target, rule.body, allowed, path)
        else:
            raise NasError(f"`{path}`: rule `{rule.name}` is not one alternative; name a choice inside it")
    else:
        _in_scope(edit, target, rule, rule.body, rule.wheres, rest, allowed, path)
    if not in_place:
        edit.clones.append((target, rule))
    return target


def _restrict_alt(edit, target, node: ir.Alt, allowed, path):
    options = tuple(ast.Option(o.label, o.weight, s.body, pos=s.pos)
                    for o, s in zip(node.options, node.syntax.options) if o.label in allowed)
    edit.replace.setdefault(target, {})[id(node.syntax)] = ast.Alts(options, pos=node.syntax.pos)


def _restrict_value(edit, target, site, allowed, path):
    """Replace a choice's syntax by the kept values (as literals, in their order)."""
    values = edit.domain
    keep = [v for v in values if any(v == a and type(v) is type(a) or (isinstance(v, float) and v == a)
                                     for a in allowed)]
    weights = dict(zip(values, site.weights)) if isinstance(site, ir.VChoice) else {}
    edit.replace.setdefault(target, {})[id(site.syntax)] = ast.Choice(tuple(_literal(v) for v in keep),
                                               tuple(weights.get(v, 1.0) for v in keep), pos=site.syntax.pos)


def _find_site(expr, name):
    return ir.sites_in(expr).get(name)


def _find_arg_site(node, name):
    args = node.args if isinstance(node, ir.RuleCall) else [v for _, v in node.args]
    for a in args:
        found = _find_site(a, name)
        if found is not None:
            return found
    raise KeyError(name)


# ---- writing ---------------------------------------------------------------------------
def _rewrite(node, replace: dict):
    """A copy of a syntax tree with some nodes (by identity) replaced."""
    hit = replace.get(id(node))
    if hit is not None:
        return _rewrite(hit, {k: v for k, v in replace.items() if k != id(node)}) if hit is not node else hit
    if isinstance(node, tuple):
        return tuple(_rewrite(n, replace) for n in node)
    if attrs.has(type(node)):
        changes = {}
        for field in attrs.fields(type(node)):
            old = getattr(node, field.name)
            new = _rewrite(old, replace)
            if new is not old:
                changes[field.name] = new
        node = attrs.evolve(node, **changes) if changes else node
        if isinstance(node, ast.Labelled) and isinstance(node.body, ast.Labelled):
            node = attrs.evolve(node, body=node.body.body)  # a renamed call keeps its one label
    return node


def _pinned_names(rule: ir.Rule) -> dict:
    """{id(syntax): site} for the sites of a rule whose name is numbered (`op2`).

    An edited rule labels them explicitly, so the edit (a call renamed to a
    clone, an option dropped) cannot renumber its siblings and change paths."""
    pinned = {}
    for node in ir.walk(rule.body):
        # (a pick cannot carry `as NAME` in the syntax: its names come from its place alone)
        if isinstance(node, (ir.RuleCall, ir.PrimCall, ir.Repeat, ir.Alt)) and node.site \
                and node.syntax is not None and node.site != (getattr(node, "rule", None) or getattr(node, "prim", None)):
            pinned[id(node.syntax)] = ast.Labelled(node.syntax, node.site)
    return pinned


def _edits(rule: ir.Rule, replace: dict) -> dict:
    return {**_pinned_names(rule), **replace} if replace else {}


def _edited(space, replace: dict, clones: list):
    """(header, rules): the space's rules with the edits of each (cloned) rule
    applied, its parameters' bound values as the defaults."""
    out = {name: _rewrite(r.syntax, _edits(r, replace.get(name, {}))) for name, r in space.rules.items()}
    for name, original in clones:
        out[name] = attrs.evolve(_rewrite(original.syntax, _edits(original, replace.get(name, {}))), name=name)
    # keep only what the network still reaches (clones replace their originals on the path)
    ordered = [out[n] for n in syntax_reachable(out, ["network"])]
    header = attrs.evolve(space.header, params=tuple(
        attrs.evolve(p, default=_literal(space.params[p.name])) for p in space.header.params))
    return header, ordered


def grammar_of(space):
    """(header, rules): `space`'s grammar as one self-contained file would hold it
    (imports inlined, parameters at their bound values, only what `network` reaches)."""
    return _edited(space, {}, [])


def _text(edited, presets) -> str:
    header, rules = edited
    return printer.module(header, rules, presets, f"{header.name}, restricted (written by nasdsl)")
