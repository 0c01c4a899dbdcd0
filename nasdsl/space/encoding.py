"""Derivations as fixed-length token sequences, for learned controllers (NAO's
encoder-decoder reads and writes them).

    enc = space.encoding()
    seq = enc.encode(d)               # a tuple of enc.length token ids
    enc.decode(seq) == d              # or a DerivationError naming the position
    enc.allowed(seq[:i])              # the tokens position i may hold after seq[:i]

Every position is one decision of a fixed layout: the pre-order walk of the space's
*largest shape*. Each plan kind gives its shape (`shape` in nasdsl.space.plan), and the
shapes of the plans that can stand at one place are merged: a repetition is laid out
at its most copies, a pick as k (candidate, its insides) pairs, an alternative as its
label then the union of its options' sites (by name, so `kernel` inside either of two
options is one position), a scope as its `where` / argument values then its sites. So
a position means the same decision in every derivation, as far as the grammar allows.
A decision with one possibility everywhere takes no position. Positions a derivation
does not use (copies it does not have, sites its option lacks) hold PAD (token 0).

One vocabulary serves every position: a token stands for one value of one named
choice (`op=nor_conv_3x3`, `kernel=5`, `len(rest)=2`, `pick[]=p0`), the same token
wherever such a choice sits; the position says where (`paths`).
"""

from __future__ import annotations

import operator

import attrs

from ..language.errors import DerivationError, NasError
from ..language.expr import type_name
from ..language.printer import scalar_text
from .derivation import Derivation

PAD = 0
MAX_VOCABULARY = 1_000_000  # tokens of one space (a range choice gives one per value)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _typed(value):
    """A value as a key that keeps 1, 1.0 and true apart."""
    return type_name(value), value


@attrs.frozen
class Slot:
    """One decision of the layout: its kind (value, alt, len, pick, where), the
    choice's name, every value it can take at this place, and whether any plan
    standing here has more than one (a slot without is no position)."""

    kind: str
    name: str
    values: tuple
    free: bool

    def key(self, value) -> tuple:
        return (self.kind, self.name, *_typed(value))


def slot(kind: str, name: str, values, free: bool) -> Slot:
    if len(values) > MAX_VOCABULARY:  # before listing them: a range may have 10**15
        raise NasError(f"choice `{name}` has {len(values)} values: too many to encode as tokens "
                       f"(at most {MAX_VOCABULARY})")
    return Slot(kind, name, tuple(values), free)


def _union(a: tuple, b: tuple) -> tuple:
    seen = {_typed(v) for v in a}
    return a + tuple(v for v in b if _typed(v) not in seen)


def _merge_slot(a: Slot, b: Slot) -> Slot:
    return Slot(a.kind, a.name, _union(a.values, b.values), a.free or b.free)


@attrs.frozen
class Shape:
    """The layout of one place: its own slots and, under keys, its children's shapes.

    value  (slot,)                        alt    (slot,) then children (the options' union)
    len    (slot,) then `copies` x child  pick   `copies` x (slot, children)
    scope  one slot per assigned name, then children (keyed by site name and kind)"""

    kind: str
    slots: tuple = ()
    children: tuple = ()  # of (key, Shape)
    copies: int = 1
    size: int = attrs.field(init=False)

    def __attrs_post_init__(self):
        own = sum(s.free for s in self.slots)
        inner = sum(shape.size for _, shape in self.children)
        size = own + inner if self.kind != "repeat" else own + self.copies * inner
        object.__setattr__(self, "size", size if self.kind != "pick" else self.copies * (own + inner))


def merge(a: Shape | None, b: Shape) -> Shape:
    """The shape both `a` and `b` fit in (None: no shape yet)."""
    if a is None or a is b:
        return b
    if a.kind == "scope":
        slots = dict((s.name, s) for s in a.slots)
        for s in b.slots:
            slots[s.name] = _merge_slot(slots[s.name], s) if s.name in slots else s
        slots = tuple(slots.values())
    else:
        slots = (_merge_slot(a.slots[0], b.slots[0]),)
    children = dict(a.children)
    for key, shape in b.children:
        children[key] = merge(children.get(key), shape)
    return Shape(a.kind, slots, tuple(children.items()), max(a.copies, b.copies))


def layout(shape: Shape, path: str = ""):
    """(path, slot) for every position of `shape`, in the order plans encode them."""
    if shape.kind == "pick":
        for i in range(shape.copies):
            yield from _own(shape, _join(path, str(i)))
            yield from _children(shape, _join(path, str(i)))
        return
    yield from _own(shape, path)
    for i in range(shape.copies if shape.kind == "repeat" else 1):
        yield from _children(shape, _join(path, str(i)) if shape.kind == "repeat" else path)


def _own(shape, path):
    for s in shape.slots:
        if s.free:
            yield (_join(path, s.name) if shape.kind == "scope" else path), s


def _children(shape, path):
    for (name, kind), child in shape.children:  # a spliced group's items sit in its scope's node
        yield from layout(child, _join(path, name) if shape.kind == "scope" and kind != "splice" else path)


def _join(path, name):
    return f"{path}.{name}" if path else name


def meaning(key) -> str:
    kind, name, _, value = key
    if kind == "len":
        return f"len({name})={value}"
    if kind == "pick":
        return f"{name}[]={value}"
    return f"{name}={scalar_text(value)}"


def choose(ids: dict, s: Slot, keys):
    """A plan's decision at slot `s` among token `keys` (None is PAD): yields the
    allowed token ids, receives the token taken, returns its index in `keys`.
    A slot that is no position takes the only possibility, asking nothing."""
    if not s.free:
        return 0
    allowed = [PAD if k is None else ids[k] for k in keys]
    return allowed.index((yield allowed))


def pad(size: int):
    """A place the derivation does not use: PAD at each of its `size` positions."""
    for _ in range(size):
        yield _PAD_ONLY


_PAD_ONLY = [PAD]


class Decoder:
    """Decoding one position at a time, as a controller's decoder emits tokens:
    `allowed` is what the next position may hold (empty when done), `push` takes one."""

    def __init__(self, encoding: "Encoding"):
        self.encoding = encoding
        self.tokens: list = []
        self.derivation = None
        self._walk = encoding.space.root.decode(encoding.shape, encoding.ids)
        self._next(None)

    def _next(self, token):
        try:
            self._allowed = self._walk.send(token)
        except StopIteration as done:
            self._allowed = ()
            self.derivation = Derivation(done.value)

    @property
    def allowed(self) -> frozenset:
        return frozenset(self._allowed)

    @property
    def done(self) -> bool:
        return self.derivation is not None

    def push(self, token: int, repair: bool = False) -> int:
        """Take `token` at the next position (or, with `repair`, the allowed one nearest it);
        returns the token taken. A token not allowed is a DerivationError naming the position."""
        if self.done:
            raise DerivationError(f"the sequence is complete after {len(self.tokens)} tokens")
        token = self.encoding.token(token, len(self.tokens))
        if token not in self._allowed:
            if not repair:
                raise self.encoding.refused(len(self.tokens), token, self._allowed)
            token = self.encoding.nearest(token, self._allowed)
        self.tokens.append(token)
        self._next(token)
        return token


@attrs.frozen(eq=False)
class Encoding:
    """A space's token layout: `length` positions, `vocabulary[t]` the meaning of token t
    (`vocabulary[0]` is `<pad>`), `paths[i]` the place position i decides."""

    space: object
    shape: Shape
    paths: tuple
    slots: tuple
    vocabulary: tuple
    ids: dict  # token key -> id
    keys: tuple  # id - 1 -> token key

    @property
    def length(self) -> int:
        return len(self.paths)

    def encode(self, d: Derivation) -> tuple:
        out: list = []
        self.space.root.encode(self.space.validate(d).root, self.shape, out)
        return tuple(PAD if k is None else self.ids[k] for k in out)

    def decode(self, seq, repair: bool = False) -> Derivation:
        """The derivation `seq` encodes; a DerivationError names the first position
        whose token is not allowed there, unless `repair` takes the nearest allowed."""
        decoder, seq = Decoder(self), self._checked(seq)
        for token in seq:
            decoder.push(token, repair)
        if not decoder.done:  # the layout and the plans' decoders disagree
            raise AssertionError(f"decoding stopped short after {len(seq)} tokens")
        d = decoder.derivation
        if self.space.finite and d not in self.space:  # the tokens follow the grammar, not the member list
            return Derivation(self.space.root.nearest(d.root)) if repair else self.space.validate(d)
        return d

    def allowed(self, prefix) -> frozenset:
        """The tokens position len(prefix) may hold after `prefix` (empty when complete);
        what a decoder masks with, one position at a time."""
        decoder = Decoder(self)
        for token in self._checked(prefix, prefix=True):
            decoder.push(token)
        return decoder.allowed

    def decoder(self) -> Decoder:
        """A step-by-step decoder: `allowed`, `push(token)`, then `derivation`."""
        return Decoder(self)

    def describe(self, seq) -> list:
        """`path=meaning` for each position (`cell.x2.op1=nor_conv_3x3`)."""
        seq = self._checked(seq)
        return [f"{path}: {self.vocabulary[t]}" for path, t in zip(self.paths, seq)]

    def _checked(self, seq, prefix=False) -> tuple:
        seq = tuple(seq)
        if len(seq) > self.length or (not prefix and len(seq) != self.length):
            raise DerivationError(f"expected {'at most ' if prefix else ''}{self.length} tokens, got {len(seq)}")
        return seq

    def token(self, t, pos: int) -> int:
        """`t` as a token id (numpy and torch integers are fine), else an error naming `pos`."""
        try:
            given, t = t, None if isinstance(t, bool) else operator.index(t)
        except TypeError:
            t = None
        if t is None or not 0 <= t < len(self.vocabulary):
            raise DerivationError(f"position {pos}: `{given!r}` is no token "
                                  f"(tokens are 0..{len(self.vocabulary) - 1})")
        return t

    def refused(self, pos, token, allowed) -> DerivationError:
        shown = ", ".join(f"{t} ({self.vocabulary[t]})" for t in sorted(allowed)[:12])
        more = ", ..." if len(allowed) > 12 else ""
        return DerivationError(f"position {pos} (`{self.paths[pos] or '(root)'}`): token {token} "
                               f"({self.vocabulary[token]}) is not allowed here after the earlier tokens",
                               None, f"allowed: {shown}{more}")

    def nearest(self, token, allowed) -> int:
        """The allowed token nearest `token`: the same choice's closest number, else the
        same value of another choice, else the first allowed."""
        keys = {t: k for t, k in self.keys_of(allowed)}
        want = self.key_of(token)
        if want is not None:
            same = [t for t, k in keys.items() if k is not None and k[:2] == want[:2]]
            numbers = [t for t in same if _number(keys[t][3])]
            if numbers and _number(want[3]):
                return min(numbers, key=lambda t: (abs(keys[t][3] - want[3]), keys[t][3]))
            for t, k in keys.items():
                if k is not None and k[2:] == want[2:]:
                    return t
        return min(allowed)

    def key_of(self, token):
        return None if token == PAD else self.keys[token - 1]

    def keys_of(self, tokens):
        return [(t, self.key_of(t)) for t in tokens]


def build(space) -> Encoding:
    """The encoding of `space`; a space with a single derivation has nothing to encode."""
    root = space.root
    if root.count == 1:
        raise NasError(f"space `{space.name}` has a single derivation: there is no choice to encode",
                       space.header.pos, "an encoding needs at least one alternative, value or repetition "
                                         "with more than one possibility")
    try:
        shape = root.shape("", {})
    except NasError as err:
        raise NasError(f"space `{space.name}`: {err.message}", err.pos or space.header.pos, err.hint) from None
    paths, slots, ids = [], [], {}
    for path, s in layout(shape):
        paths.append(path)
        slots.append(s)
        for v in s.values:
            ids.setdefault(s.key(v), len(ids) + 1)
    if len(ids) > MAX_VOCABULARY:
        raise NasError(f"space `{space.name}` needs {len(ids)} tokens; at most {MAX_VOCABULARY}",
                       space.header.pos)
    vocabulary = ("<pad>", *(meaning(k) for k in ids))
    return Encoding(space, shape, tuple(paths), tuple(slots), vocabulary, ids, tuple(ids))
