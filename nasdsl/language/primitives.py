"""The primitive registry: the terminals a space file may call.

A space file never runs code; every name it calls is a rule of the file or a
primitive registered here from Python. A primitive declares

    args     its arguments (name, type, default): what the language checks
    shape    how its output shape follows from its input shape(s) and arguments
    params   its parameter count        macs  its multiply-accumulates (per sample)
    module   a factory for the torch.nn.Module (None: the op passes its input on)

The language checks calls against the arguments alone; the rest is the compiler's,
which registers the standard set (`nasdsl.compiler.primitives`). Users register
their own the same way, before loading a space:

    from nasdsl import Arg, Primitive, register
    register(Primitive("double", (Arg("scale", "float", 2.0),), shape=lambda a, s: s[0],
                       module=lambda a, s: MyDouble(a["scale"])))
"""

from __future__ import annotations

from typing import Callable

import attrs

REQUIRED = object()
TYPES = ("int", "float", "bool", "str")


class ShapeError(ValueError):
    """A primitive cannot take its input; the compiler adds the path."""


@attrs.frozen
class Arg:
    name: str
    type: str  # one of TYPES
    default: object = REQUIRED
    allowed: tuple | None = None  # for "str": the symbols accepted

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _same(args, shapes):
    return shapes[0]


def _zero(args, shapes, out=None):
    return 0


@attrs.frozen
class Primitive:
    name: str
    args: tuple = ()
    doc: str = ""
    shape: Callable = _same
    params: Callable = _zero
    macs: Callable = _zero  # (args, in shapes, out shape) -> int
    module: Callable | None = None  # (args, in shapes) -> nn.Module; None: passes its input on

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)


_REGISTRY: dict[str, Primitive] = {}


def register(primitive: Primitive, *, replace: bool = False) -> Primitive:
    """Add a primitive; refuses to shadow an existing one unless `replace`."""
    if primitive.name in _REGISTRY and not replace:
        raise ValueError(f"primitive `{primitive.name}` is already registered")
    for a in primitive.args:
        if a.type not in TYPES:
            raise ValueError(f"primitive `{primitive.name}`: argument `{a.name}` has unknown type `{a.type}`")
    _REGISTRY[primitive.name] = primitive
    return primitive


def get(name: str) -> Primitive | None:
    return _REGISTRY.get(name)


def names() -> list[str]:
    return sorted(_REGISTRY)
