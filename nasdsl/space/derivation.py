"""Derivations: one architecture of a space, as an immutable tree of choices.

    Node     the choices inside one scope (a rule, an option, a dag node), by site name
    Alt      the label of the chosen alternative, with the choices inside it
    Rep      a repetition: one value per copy (its length is the chosen count)
    Picked   a pick: the chosen candidates, each an Alt (label + its choices)
    scalars  int, float, bool, str: the value chosen at a value site

Every choice has a stable path (`stage.rest.1.conv.kernel`) made of site names
and copy indices; the compiler names modules and weights by the same paths.
The text form is canonical (one text per derivation, read back exactly) and the
content hash is the SHA-256 of that text. A derivation knows nothing of its
space: `Space.parse` checks text against a space, `Space.validate` a value.
"""

from __future__ import annotations

import hashlib

import attrs

from ..language.printer import scalar_text


@attrs.frozen
class Node:
    items: tuple = ()  # of (site name, value)

    def __getitem__(self, name: str):
        for key, value in self.items:
            if key == name:
                return value
        raise KeyError(name)

    def get(self, name: str, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def names(self) -> tuple:
        return tuple(k for k, _ in self.items)


@attrs.frozen
class Alt:
    label: str
    node: Node = Node()


@attrs.frozen
class Rep:
    items: tuple = ()

    def __len__(self):
        return len(self.items)


@attrs.frozen
class Picked:
    items: tuple = ()  # of Alt

    def labels(self) -> tuple:
        return tuple(a.label for a in self.items)


@attrs.frozen
class Derivation:
    """One architecture: the root scope's choices (shared rules first)."""

    root: Node

    @property
    def text(self) -> str:
        return to_text(self.root)

    def __str__(self) -> str:
        return self.text

    @property
    def hash(self) -> str:
        """A stable content hash: SHA-256 of the canonical text (hex)."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def __getitem__(self, path: str):
        return get_path(self.root, path)

    def choices(self) -> dict:
        """Every choice as {path: value}; see `flatten`."""
        return dict(flatten(self.root))


# ---- text ------------------------------------------------------------------------
def to_text(value) -> str:
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value, out: list):
    kind = type(value)
    if kind is Node:
        out.append("(")
        for i, (name, v) in enumerate(value.items):
            if i:
                out.append(", ")
            out.append(name)
            out.append("=")
            _write(v, out)
        out.append(")")
    elif kind is Alt:
        out.append(value.label)
        if value.node.items:
            _write(value.node, out)
    elif kind is Rep or kind is Picked:
        out.append("[")
        for i, v in enumerate(value.items):
            if i:
                out.append(", ")
            _write(v, out)
        out.append("]")
    else:
        out.append(scalar_text(value))


# ---- paths -------------------------------------------------------------------------
def flatten(value, prefix: str = ""):
    """(path, leaf) pairs that determine a derivation within its space.

    An Alt gives its label at its own path and its choices below it; a Rep gives
    its length and its copies at `path.i`; a Picked gives its labels and each
    candidate's choices at `path.label`. Two derivations of one space are equal
    exactly when these maps are equal, which makes `distance` a metric.
    """
    kind = type(value)
    if kind is Node:
        for name, v in value.items:
            yield from flatten(v, f"{prefix}.{name}" if prefix else name)
    elif kind is Alt:
        yield prefix, value.label
        yield from flatten(value.node, prefix)
    elif kind is Rep:
        yield prefix, len(value.items)
        for i, v in enumerate(value.items):
            yield from flatten(v, f"{prefix}.{i}")
    elif kind is Picked:
        yield prefix, value.labels()
        for a in value.items:
            yield from flatten(a.node, f"{prefix}.{a.label}")
    else:
        yield prefix, value


def split_path(path: str) -> list:
    return [int(p) if p.isdigit() else p for p in path.split(".")] if path else []


def get_path(value, path: str):
    """The value at `path` (`stage.rest.1.conv.kernel`); KeyError if absent."""
    for part in split_path(path):
        value = _step(value, part, path)
    return value


def _step(value, part, path):
    if isinstance(value, Alt):
        value = value.node
    if isinstance(value, Node) and isinstance(part, str):
        return value[part]
    if isinstance(value, Rep) and isinstance(part, int) and part < len(value.items):
        return value.items[part]
    if isinstance(value, Picked) and isinstance(part, str):
        for a in value.items:
            if a.label == part:
                return a
    raise KeyError(path)


def replace_path(value, parts: list, new):
    """A copy of `value` with the value at `parts` replaced by `new`."""
    if not parts:
        return new
    head, rest = parts[0], parts[1:]
    if isinstance(value, Alt):
        return Alt(value.label, replace_path(value.node, parts, new))
    if isinstance(value, Node):
        return Node(tuple((k, replace_path(v, rest, new) if k == head else v) for k, v in value.items))
    if isinstance(value, Rep):
        items = list(value.items)
        items[head] = replace_path(items[head], rest, new)
        return Rep(tuple(items))
    if isinstance(value, Picked):
        return Picked(tuple(replace_path(a, rest, new) if a.label == head else a for a in value.items))
    raise KeyError(head)


def distance(a: Derivation, b: Derivation) -> int:
    """Edit distance: how many choice paths differ (a path only one side has counts).

    It is the Hamming distance between the two `flatten` maps over the union of
    their paths, so it is a metric: zero only for equal derivations, symmetric,
    and it obeys the triangle inequality.
    """
    return choices_apart(a.choices(), b.choices())


def choices_apart(fa: dict, fb: dict) -> int:
    """How many paths two choice maps (`flatten`'s) differ on: `distance`, on maps."""
    return sum(1 for p in fa.keys() | fb.keys() if fa.get(p, _MISSING) != fb.get(p, _MISSING)
               or type(fa.get(p)) is not type(fb.get(p)))


_MISSING = object()
