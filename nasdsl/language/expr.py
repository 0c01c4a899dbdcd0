"""Evaluation of value expressions (arithmetic, comparisons, built-in functions).

Values are Python ints (unbounded), floats, bools and strings (symbols such as
`relu`). A shared rule is derived once for all its uses, so while deriving it
its parameters are `SYMBOLIC`: arithmetic on them stays symbolic, and anything
that would let them shape the choices is an error (see `nasdsl.space.plan`).
"""

from __future__ import annotations

import math
import operator

from . import ast
from .errors import NasError


class _Symbolic:
    """The value of a shared rule's parameter while the rule is derived."""

    def __repr__(self):
        return "<symbolic>"


SYMBOLIC = _Symbolic()


def make_divisible(value, divisor=8, min_value=None):
    """Round `value` to a multiple of `divisor`, never more than 10% down
    (the rule MobileNet and EfficientNet use for channel counts)."""
    divisor = int(divisor)
    if divisor <= 0:
        raise ValueError("make_divisible needs a positive divisor")
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


MAX_ROUND_DIGITS = 1300  # more than the digits of any allowed int (MAX_INT_BITS) or float


def _round(x, ndigits=None):
    if ndigits is None:
        return round(x)
    if abs(ndigits) > MAX_ROUND_DIGITS:  # round(8, -10**9) would build 10**(10**9) first
        raise ValueError(f"ndigits must lie within ±{MAX_ROUND_DIGITS}")
    return round(x, int(ndigits))


def _log(x, base=None):
    return math.log(x) if base is None else math.log(x, base)


BUILTINS = {
    "log": _log,
    "exp": math.exp,
    "sqrt": math.sqrt,
    "min": min,
    "max": max,
    "abs": abs,
    "round": _round,
    "floor": math.floor,
    "ceil": math.ceil,
    "int": int,
    "float": float,
    "make_divisible": make_divisible,
}

_BINOPS = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}
MAX_INT_BITS = 4096  # arithmetic results beyond this are refused (2**10**9 would hang)


class Scope:
    """Names visible to an expression: parameters and bindings, plus the values
    chosen at choice sites (by site name) while a derivation is evaluated."""

    __slots__ = ("names", "choices")

    def __init__(self, names: dict, choices: dict | None = None):
        self.names = names
        self.choices = choices if choices is not None else {}


def type_name(value) -> str:
    if value is SYMBOLIC:
        return "symbolic"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def show(value) -> str:
    """A value as the language writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def evaluate(expr, scope: Scope):
    """The value of `expr` in `scope`; raises NasError pointing at the expression."""
    kind = type(expr)
    if kind is ast.Num or kind is ast.Str or kind is ast.Bool:
        return expr.value
    if kind is ast.Var:
        if expr.name in scope.names:
            return scope.names[expr.name]
        return expr.name  # an unbound name is a symbol: relu, on, off
    site = getattr(expr, "site", None)
    if site is not None:  # a choice site (nasdsl.language.ir.VChoice / VRange)
        try:
            return scope.choices[site]
        except KeyError:
            raise NasError(f"no value chosen for `{site}`", expr.pos) from None
    if kind is ast.BinOp:
        left = evaluate(expr.left, scope)
        right = evaluate(expr.right, scope)
        if left is SYMBOLIC or right is SYMBOLIC:
            return SYMBOLIC
        return _binop(expr, left, right)
    if kind is ast.Neg:
        v = evaluate(expr.operand, scope)
        if v is SYMBOLIC:
            return v
        _need_number(v, expr, "-")
        return -v
    if kind is ast.Not:
        v = evaluate(expr.operand, scope)
        return v if v is SYMBOLIC else not _truth(v, expr)
    if kind is ast.BoolOp:
        values = [evaluate(o, scope) for o in expr.operands]
        if any(v is SYMBOLIC for v in values):
            return SYMBOLIC
        truths = [_truth(v, o) for v, o in zip(values, expr.operands)]
        return all(truths) if expr.op == "and" else any(truths)
    if kind is ast.Cond:
        test = evaluate(expr.test, scope)
        if test is SYMBOLIC:
            return SYMBOLIC
        return evaluate(expr.then if _truth(test, expr.test) else expr.orelse, scope)
    if kind is ast.Func:
        fn = BUILTINS.get(expr.name)
        if fn is None:
            from .errors import did_you_mean

            raise NasError(f"unknown function `{expr.name}`", expr.pos, did_you_mean(expr.name, BUILTINS))
        args = [evaluate(a, scope) for a in expr.args]
        if any(a is SYMBOLIC for a in args):
            return SYMBOLIC
        for a in args:
            _need_number(a, expr, expr.name)
        try:
            result = fn(*args)
        except (TypeError, ValueError, OverflowError) as err:
            raise NasError(f"`{expr.name}` cannot take {', '.join(map(show, args))}: {err}", expr.pos) from None
        return _checked(result, expr)
    raise NasError(f"`{type(expr).__name__}` is not a value expression", getattr(expr, "pos", None))


def _truth(value, expr) -> bool:
    if isinstance(value, bool):
        return value
    raise NasError(f"expected true or false, got `{show(value)}` ({type_name(value)})", getattr(expr, "pos", None))


def _need_number(value, expr, op):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NasError(f"`{op}` needs numbers, got `{show(value)}` ({type_name(value)})", expr.pos)


def _checked(value, expr):
    if isinstance(value, float) and not math.isfinite(value):
        raise NasError(f"the result is {value}, not a finite number", expr.pos)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise NasError(f"the result has more than {MAX_INT_BITS} bits", expr.pos)
    return value


def _binop(expr, left, right):
    op = expr.op
    if op in ("==", "!="):
        return _BINOPS[op](left, right)
    _need_number(left, expr, op)
    _need_number(right, expr, op)
    if op == "**":
        if isinstance(right, int) and isinstance(left, int) and abs(right) * max(1, abs(left).bit_length()) > MAX_INT_BITS:
            raise NasError(f"`{show(left)} ** {show(right)}` is too large", expr.pos)
    try:
        return _checked(_BINOPS[op](left, right), expr)
    except ZeroDivisionError:
        raise NasError(f"division by zero in `{show(left)} {op} {show(right)}`", expr.pos) from None
    except OverflowError:
        raise NasError(f"`{show(left)} {op} {show(right)}` overflows", expr.pos) from None
