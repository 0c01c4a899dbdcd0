"""The scoping rules that the planner and the compiler's elaborator share, so that
counting a space and building its networks read every rule the same way."""

from __future__ import annotations

from ..language.errors import NasError
from ..language.expr import SYMBOLIC, show, type_name


def coerce(value, type_: str, what: str, pos=None):
    """`value` as a declared `type_` (an int is a float where a float is declared)."""
    actual = type_name(value)
    if actual == type_ or (type_ == "float" and actual == "int"):
        return float(value) if type_ == "float" else value
    raise NasError(f"{what} must be {type_}, got `{show(value)}` ({actual})", pos)


def rule_names(space_params: dict, main_file: str, rule, args: tuple) -> dict:
    """The names a rule's body sees before its `where`s: the space parameters (in
    rules of the main file only; an imported library sees its own arguments) and
    its parameters bound to `args`, typed as declared."""
    names = dict(space_params) if rule.file == main_file else {}
    for p, a in zip(rule.params, args):
        if p.type is not None and a is not SYMBOLIC:
            a = coerce(a, p.type, f"parameter `{p.name}` of `{rule.name}`", rule.pos)
        names[p.name] = a
    return names


def argument_value(value, decl, prim: str, path: str):
    """A primitive argument's evaluated value as its declared type; a whole float is
    accepted for an int (`8 * 0.5`), anything else is an error naming the path."""
    actual = type_name(value)
    if actual == decl.type or (decl.type == "float" and actual == "int"):
        value = float(value) if decl.type == "float" else value
    elif decl.type == "int" and actual == "float" and value == int(value):
        value = int(value)
    else:
        raise NasError(f"`{path}`: argument `{decl.name}` of `{prim}` is {decl.type}, got `{show(value)}` ({actual})",
                       None, "round it: int(...), round(...) or make_divisible(...)" if decl.type == "int" else None)
    problem = decl.problem(value)
    if problem:
        raise NasError(f"`{path}`: argument `{decl.name}` of `{prim}` {problem}, got `{show(value)}`")
    return value
