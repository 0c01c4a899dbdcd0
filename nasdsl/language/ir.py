"""The checked form of a space: rules with every name resolved and every choice
site named. `nasdsl.language.check` builds it from the syntax tree; `nasdsl.space.plan` derives
from it and the compiler walks it.

Site names are what derivation paths are made of. Inside one scope (a rule body,
an alternative's option, a repeated body, a dag node, a pick candidate) every
call, repetition, inline alternative, pick and `where` binding has a name: its
label (`as rest`, `where w = ...`), else the callee's name; names that repeat in
a scope are numbered in order (`conv1`, `conv2`, and `conv3x3_1` for names
ending in a digit), the way torchvision names `conv1`/`bn1`.

`children` / `walk` go through any ir node or value expression by its attrs
fields, so code that only looks for something (`calls`, `sites_in`) names no
node kinds and no fields.
"""

from __future__ import annotations

import attrs

from .errors import Pos


def _syntax():
    return attrs.field(default=None, eq=False, repr=False, kw_only=True)


# Choice sites inside value expressions (they replace ast.Choice / ast.Range).
@attrs.frozen
class VChoice:
    site: str
    values: tuple  # value expressions
    weights: tuple
    pos: Pos | None = _syntax()
    syntax: object = attrs.field(default=None, eq=False, repr=False, kw_only=True)



@attrs.frozen
class VRange:
    site: str
    lo: object
    hi: object
    step: object | None
    pos: Pos | None = _syntax()
    syntax: object = attrs.field(default=None, eq=False, repr=False, kw_only=True)



# Network expressions.
@attrs.frozen
class Seq:
    items: tuple


@attrs.frozen
class Opt:
    label: str
    weight: float
    body: object  # a scope body


@attrs.frozen
class Alt:
    site: str | None  # None: the whole body of its rule
    options: tuple  # of Opt
    pos: Pos | None = _syntax()
    syntax: object = attrs.field(default=None, eq=False, repr=False, kw_only=True)



@attrs.frozen
class RuleCall:
    site: str
    rule: str
    args: tuple  # one value expression per parameter of the rule, in order
    arg_sites: tuple  # names of the choice sites inside args (they live in the callee's node)
    shared: bool
    pos: Pos | None = _syntax()
    syntax: object = attrs.field(default=None, eq=False, repr=False, kw_only=True)



@attrs.frozen
class PrimCall:
    site: str
    prim: str
    args: tuple  # of (name, value expression), every argument of the primitive
    arg_sites: tuple
    pos: Pos | None = _syntax()
    syntax: object = attrs.field(default=None, eq=False, repr=False, kw_only=True)



@attrs.frozen
class NodeRef:
    """A dag input or node used as a value (identity) inside a dag."""

    name: str
    pos: Pos | None = _syntax()


@attrs.frozen
class Repeat:
    site: str
    body: object
    count: object  # a value expression; a VChoice / VRange when the count is chosen
    pos: Pos | None = _syntax()
    syntax: object = attrs.field(default=None, eq=False, repr=False, kw_only=True)



@attrs.frozen
class If:
    test: object
    then: object
    orelse: object
    pos: Pos | None = _syntax()


@attrs.frozen
class Branch:
    source: str | None  # a dag node name, or None for the merge's own input
    body: object | None  # None: the source itself


@attrs.frozen
class Pick:
    site: str
    k: object
    candidates: tuple  # of (label, Branch)
    pos: Pos | None = _syntax()
    syntax: object = attrs.field(default=None, eq=False, repr=False, kw_only=True)



@attrs.frozen
class Merge:
    kind: str
    branches: tuple  # of Branch | Pick


@attrs.frozen
class Dag:
    inputs: tuple
    nodes: tuple  # of (name, Branch)
    outputs: tuple  # of Branch
    syntax: object = attrs.field(default=None, eq=False, repr=False, kw_only=True)



@attrs.frozen
class Where:
    name: str
    value: object
    sites: tuple  # choice sites inside value
    syntax: object = attrs.field(default=None, eq=False, repr=False, kw_only=True)



@attrs.frozen
class Rule:
    name: str
    params: tuple  # of ast.Param (typed)
    body: object
    shared: bool
    wheres: tuple  # of Where
    requires: tuple  # value expressions
    file: str  # the file the rule comes from
    syntax: object = attrs.field(default=None, eq=False, repr=False)

    @property
    def pos(self):
        return self.syntax.pos if self.syntax is not None else None


# ---- walking ---------------------------------------------------------------------
_NOT_CHILDREN = ("syntax", "pos")  # back to the text, not part of the tree
_FIELDS: dict = {}  # node class -> the names of its fields that hold children


def children(node):
    """The nodes directly inside an ir node or a value expression, in field order
    (tuples looked through: `(label, Branch)` pairs, `(name, value)` arguments).

    One generic iterator, read off the attrs fields the way the syntax tree's walk
    in `nasdsl.language.check` is, so a new node kind needs no walker edited."""
    for name in _child_fields(type(node)):
        yield from _nodes(getattr(node, name))


def _child_fields(kind) -> tuple:
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = tuple(f.name for f in attrs.fields(kind) if f.name not in _NOT_CHILDREN)
    return names


def _nodes(value):
    if isinstance(value, tuple):
        for v in value:
            yield from _nodes(v)
    elif attrs.has(type(value)):
        yield value


def walk(node, into=None):
    """`node` and everything inside it, depth first, in field order; where
    `into(n)` is false, n is visited but not entered."""
    yield node
    if into is None or into(node):
        for child in children(node):
            yield from walk(child, into)


def renamed(node, names: dict):
    """A copy of `node` with every string that is a key of `names` replaced by its
    value (check's site placeholders by the final names); syntax is kept as is."""
    if isinstance(node, str):
        return names.get(node, node)
    if isinstance(node, tuple):
        new = tuple(renamed(n, names) for n in node)
        return new if any(a is not b for a, b in zip(new, node)) else node
    if not attrs.has(type(node)):
        return node
    changes = {}
    for name in _child_fields(type(node)):
        old = getattr(node, name)
        new = renamed(old, names)
        if new is not old:
            changes[name] = new
    return attrs.evolve(node, **changes) if changes else node


def calls(node):
    """The rule names called anywhere inside an ir expression, in the order written."""
    return (n.rule for n in walk(node) if type(n) is RuleCall)


def sites_in(expr) -> dict:
    """{site: VChoice / VRange} for the choice sites inside a value expression."""
    return {e.site: e for e in walk(expr, _not_a_choice) if type(e) is VChoice or type(e) is VRange}


def _not_a_choice(e) -> bool:
    return not (type(e) is VChoice or type(e) is VRange)
