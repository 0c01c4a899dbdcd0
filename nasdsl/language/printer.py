"""Syntax tree → space-file text, the inverse of `nasdsl.language.syntax` up to layout.

Used to write restricted spaces back out as `.nas` files; what it prints reads
back to an equal syntax tree (a property the tests check).
"""

from __future__ import annotations

import re

from . import ast

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# names that derivation text does not read as a string: booleans, and the merge
# keywords (`syntax.KEYWORD_CALLS`)
_NOT_STRINGS = frozenset({"true", "false", "add", "concat"})


def scalar_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if ("." in text or "e" in text or "inf" in text or "nan" in text) else text + ".0"
    if isinstance(value, str):  # quoted unless it reads back as the same string
        return value if _IDENT.match(value) and value not in _NOT_STRINGS else '"' + value + '"'
    raise TypeError(f"not a derivation scalar: {value!r}")


INDENT = "    "

# ---- value expressions: precedence, loosest first ---------------------------------
_COND, _OR, _AND, _NOT, _CMP, _ADD, _MUL, _NEG, _POW, _ATOM = range(10)
_BINARY = {"==": _CMP, "!=": _CMP, "<": _CMP, "<=": _CMP, ">": _CMP, ">=": _CMP,
           "+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "//": _MUL, "%": _MUL, "**": _POW}


def value(e, at: int = _COND) -> str:
    """An expression, parenthesised where its context (precedence `at`) needs it."""
    text, prec = _value(e)
    return f"({text})" if prec < at else text


def _value(e):
    kind = type(e)
    if kind is ast.Num:
        text = scalar_text(e.value)
        return text, (_NEG if e.value < 0 else _ATOM)
    if kind is ast.Bool:
        return ("true" if e.value else "false"), _ATOM
    if kind is ast.Str:
        return f'"{e.value}"', _ATOM
    if kind is ast.Var:
        return e.name, _ATOM
    if kind is ast.Func:
        return f"{e.name}({', '.join(value(a) for a in e.args)})", _ATOM
    if kind is ast.Choice:
        items = [value(v) + (f" @ {scalar_text(w)}" if w != 1.0 else "") for v, w in zip(e.values, e.weights)]
        return "{" + ", ".join(items) + "}", _ATOM
    if kind is ast.Range:
        text = f"{value(e.lo, _ATOM)}..{value(e.hi, _ATOM)}"
        if e.step is not None:
            text += f" step {value(e.step, _ATOM)}"
        return text, _COND - 1  # only where a whole argument stands
    if kind is ast.BinOp:
        prec = _BINARY[e.op]
        if e.op == "**":  # right-associative; its base binds tighter than unary minus
            return f"{value(e.left, _ATOM)} ** {value(e.right, _NEG)}", prec
        if prec == _CMP:
            return f"{value(e.left, _ADD)} {e.op} {value(e.right, _ADD)}", prec
        return f"{value(e.left, prec)} {e.op} {value(e.right, prec + 1)}", prec
    if kind is ast.Neg:
        return f"-{value(e.operand, _NEG)}", _NEG
    if kind is ast.Not:
        return f"not {value(e.operand, _NOT)}", _NOT
    if kind is ast.BoolOp:
        prec = _AND if e.op == "and" else _OR
        return f" {e.op} ".join(value(o, prec + 1) for o in e.operands), prec
    if kind is ast.Cond:
        return f"if {value(e.test)} then {value(e.then)} else {value(e.orelse)}", _COND
    raise TypeError(f"not a value expression: {kind.__name__}")


def argument(e) -> str:
    return value(e, _COND - 1)


# ---- network expressions ------------------------------------------------------------
_ALTS, _SEQ, _POSTFIX, _NATOM = range(4)


def net(e, at: int = _ALTS, indent: str = "") -> str:
    text, prec = _net(e, indent)
    return f"({text})" if prec < at else text


def _net(e, indent):
    kind = type(e)
    if kind is ast.Alts:
        parts = []
        for o in e.options:
            text = net(o.body, _SEQ, indent)
            if o.label is not None:
                text = f"{o.label}: {text}"
            if o.weight != 1.0:
                text += f" @ {scalar_text(o.weight)}"
            parts.append(text)
        return " | ".join(parts), _ALTS
    if kind is ast.Seq:
        return " ".join(net(i, _POSTFIX, indent) for i in e.items), _SEQ
    if kind is ast.Repeat:
        count = e.count
        count_text = value(count, _COND - 1) if isinstance(count, ast.Range) else value(count, _ATOM)
        return f"{net(e.body, _POSTFIX, indent)} * {count_text}", _POSTFIX
    if kind is ast.Labelled:
        return f"{net(e.body, _POSTFIX, indent)} as {e.label}", _POSTFIX
    if kind is ast.Call:
        if not e.args:
            return e.name, _NATOM
        args = ", ".join((f"{a.name}={argument(a.value)}" if a.name else argument(a.value)) for a in e.args)
        return f"{e.name}({args})", _NATOM
    if kind is ast.NetIf:
        return (f"(if {value(e.test)} then {net(e.then, _NATOM, indent)} "
                f"else {net(e.orelse, _NATOM, indent)})"), _NATOM
    if kind is ast.Merge:
        return f"{e.kind}({', '.join(_branch(b, indent) for b in e.branches)})", _NATOM
    if kind is ast.Dag:
        inner = indent + INDENT
        lines = [f"dag {', '.join(e.inputs)} {{"]
        for name, b in e.nodes:
            lines.append(f"{inner}{name} = {_branch(b, inner)}")
        lines.append(f"{inner}out {', '.join(_branch(b, inner) for b in e.outputs)}")
        lines.append(f"{indent}}}")
        return "\n".join(lines), _NATOM
    raise TypeError(f"not a network expression: {kind.__name__}")


def _branch(b, indent) -> str:
    if isinstance(b, ast.Pick):
        return f"pick {value(b.k, _ATOM)} of [{', '.join(_branch(c, indent) for c in b.candidates)}]"
    if b.source is not None:
        return f"{b.source} > {net(b.body, _ALTS, indent)}"
    return net(b.body, _ALTS, indent)


# ---- statements ---------------------------------------------------------------------
def param(p: ast.Param) -> str:
    text = p.name
    if p.type is not None:
        text += f": {p.type}"
    if p.default is not None:
        text += f" = {value(p.default)}"
    return text


def rule(r: ast.Rule) -> str:
    head = ("shared " if r.shared else "") + r.name
    if r.params:
        head += f"({', '.join(param(p) for p in r.params)})"
    lines = [f"{head} = {net(r.body, indent=INDENT)}"]
    for b in r.wheres:
        lines.append(f"{INDENT}where {b.name} = {argument(b.value)}")
    for req in r.requires:
        lines.append(f"{INDENT}require {value(req)}")
    return "\n".join(lines)


def header(h: ast.Header) -> str:
    if h.library:
        return f"library {h.name}"
    return f"space {h.name}({', '.join(param(p) for p in h.params)})"


def module(h: ast.Header, rules, presets=(), comment: str = "", only=()) -> str:
    """A whole file: comment lines, header, rules, presets (given as (name, params, text)),
    then a finite space's `only` statements (given as (radius, text))."""
    out = [f"# {line}" if line else "#" for line in comment.splitlines()]
    out.append(header(h))
    out.append("")
    out.extend(rule(r) for r in rules)
    for name, params, text in presets:
        args = f"({', '.join(f'{k}={value(v)}' for k, v in params)})" if params else ""
        out.append(f"preset {name}{args} = {text}")
    if only:
        out.append("")
    for radius, text in only:
        out.append(f"only within {radius} of {text}" if radius else f"only {text}")
    return "\n".join(out) + "\n"
