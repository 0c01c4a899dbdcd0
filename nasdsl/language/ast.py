"""The syntax tree of a space file: frozen values built from lark's parse tree.

Nothing here resolves names or checks types (that is `nasdsl.language.check`); every node
keeps its position so later stages can point at the text. Positions are left
out of equality, so two trees that say the same thing compare equal.
"""

from __future__ import annotations

import attrs

from .errors import Pos


def _pos():
    return attrs.field(default=None, eq=False, repr=False, kw_only=True)


# ---- value expressions ------------------------------------------------------
@attrs.frozen
class Num:
    value: int | float
    pos: Pos | None = _pos()


@attrs.frozen
class Str:
    value: str
    pos: Pos | None = _pos()


@attrs.frozen
class Bool:
    value: bool
    pos: Pos | None = _pos()


@attrs.frozen
class Var:
    """A name in a value position: a parameter, a binding, or else a symbol (`relu`)."""

    name: str
    pos: Pos | None = _pos()


@attrs.frozen
class Func:
    """A call of a built-in function (`max`, `make_divisible`, ...)."""

    name: str
    args: tuple
    pos: Pos | None = _pos()


@attrs.frozen
class BinOp:
    op: str
    left: object
    right: object
    pos: Pos | None = _pos()


@attrs.frozen
class Neg:
    operand: object
    pos: Pos | None = _pos()


@attrs.frozen
class Not:
    operand: object
    pos: Pos | None = _pos()


@attrs.frozen
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple
    pos: Pos | None = _pos()


@attrs.frozen
class Cond:
    test: object
    then: object
    orelse: object
    pos: Pos | None = _pos()


@attrs.frozen
class Choice:
    """`{3, 5, 7}`: one value chosen from a list (optionally weighted with `@ w`)."""

    values: tuple
    weights: tuple  # float per value (1.0 where not written)
    pos: Pos | None = _pos()


@attrs.frozen
class Range:
    """`lo..hi [step s]`: an integer chosen from an inclusive range."""

    lo: object
    hi: object
    step: object | None
    pos: Pos | None = _pos()


# ---- network expressions ----------------------------------------------------
@attrs.frozen
class Arg:
    name: str | None
    value: object
    pos: Pos | None = _pos()


@attrs.frozen
class Call:
    """`name` or `name(args)`: a rule, a primitive, or (inside a dag) a node."""

    name: str
    args: tuple  # of Arg
    pos: Pos | None = _pos()


@attrs.frozen
class Seq:
    items: tuple
    pos: Pos | None = _pos()


@attrs.frozen
class Option:
    label: str | None
    weight: float
    body: object
    pos: Pos | None = _pos()


@attrs.frozen
class Alts:
    options: tuple  # of Option
    pos: Pos | None = _pos()


@attrs.frozen
class Repeat:
    body: object
    count: object
    pos: Pos | None = _pos()


@attrs.frozen
class Labelled:
    body: object
    label: str
    pos: Pos | None = _pos()


@attrs.frozen
class NetIf:
    test: object
    then: object
    orelse: object
    pos: Pos | None = _pos()
    # written in brackets, `(if ... else b)`: then it may be followed in a sequence
    grouped: bool = attrs.field(default=False, eq=False, repr=False)


@attrs.frozen
class Branch:
    """One operand of a merge: `source > net` (inside a dag) or a plain `net`."""

    source: str | None
    body: object
    pos: Pos | None = _pos()


@attrs.frozen
class Pick:
    """`pick k of [b1, b2, ...]`: k distinct branches chosen among the candidates."""

    k: object
    candidates: tuple  # of Branch
    pos: Pos | None = _pos()


@attrs.frozen
class Merge:
    kind: str  # "add" | "concat"
    branches: tuple  # of Branch | Pick
    pos: Pos | None = _pos()


@attrs.frozen
class Dag:
    inputs: tuple  # of str
    nodes: tuple  # of (name, net)
    outputs: tuple  # of Branch
    pos: Pos | None = _pos()


# ---- statements --------------------------------------------------------------
@attrs.frozen
class Param:
    name: str
    type: str | None
    default: object | None
    pos: Pos | None = _pos()


@attrs.frozen
class Binding:
    name: str
    value: object
    pos: Pos | None = _pos()


@attrs.frozen
class Rule:
    name: str
    params: tuple  # of Param
    body: object
    shared: bool = False
    wheres: tuple = ()  # of Binding
    requires: tuple = ()  # of value expressions
    pos: Pos | None = _pos()


@attrs.frozen
class Preset:
    name: str
    params: tuple  # of (name, expr)
    value: object  # a raw derivation (RawNode, ...)
    pos: Pos | None = _pos()


@attrs.frozen
class Only:
    """`only [within R of] DERIVATION`: the space keeps this derivation (and all within R)."""

    value: object  # a raw derivation
    radius: int = 0
    pos: Pos | None = _pos()


@attrs.frozen
class Import:
    path: str
    names: tuple | None  # None: import every rule
    pos: Pos | None = _pos()


@attrs.frozen
class Header:
    name: str
    params: tuple  # of Param
    library: bool = False
    pos: Pos | None = _pos()


@attrs.frozen
class Module:
    """One parsed file."""

    header: Header | None
    imports: tuple
    rules: tuple
    presets: tuple
    source: object = attrs.field(default=None, eq=False, repr=False)
    only: tuple = ()  # of Only: a finite space's members


# ---- raw derivation text (read by the derivation grammar) --------------------
@attrs.frozen
class RawNode:
    items: tuple  # of (name, raw value, pos)
    pos: Pos | None = _pos()


@attrs.frozen
class RawList:
    items: tuple
    pos: Pos | None = _pos()


@attrs.frozen
class RawLabel:
    """A bare name (`relu`, `true`, an alternative's label) with optional choices."""

    name: str
    node: RawNode | None
    pos: Pos | None = _pos()


@attrs.frozen
class RawScalar:
    value: int | float | str
    pos: Pos | None = _pos()
