"""Hypothesis strategies: derivations of a space, and random space files.

Property tests over your own space:

    import nasdsl
    from hypothesis import given
    from nasdsl.space.strategies import derivations

    space = nasdsl.load("spaces/tutorial.nas")

    @given(derivations(space))
    def test_every_block_fits(d):
        assert space.parse(d.text) == d          # or: build it, check its shapes, ...

A failing derivation shrinks toward simple ones: each choice moves toward its
first option (the first alternative, the first value written, the fewest
repetition copies, the first candidates of a pick), skipping options that the
constraints leave empty. Hypothesis also prefers fewer choices in all, so an
alternative with fewer choices inside can win over the first one. Nothing to
keep, the end is `simplest(space)`, for most spaces `space.unrank(0)`.

`space_files()` draws small valid `.nas` texts for fuzzing the language itself;
with `counted=True` it also gives each file's number of derivations, computed by
a counter of its own (from the generator's description of what it wrote, not by
nasdsl's plans), so the two can be checked against each other:

    @given(space_files(counted=True))
    def test_count(file):
        assert nasdsl.loads(file.text).count == file.count()
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import attrs
from hypothesis import strategies as st

from .derivation import Derivation

__all__ = ["SpaceFile", "derivations", "simplest", "space_files"]


# ---- derivations of a space --------------------------------------------------------
def derivations(space) -> st.SearchStrategy[Derivation]:
    """Derivations of `space` (every one passes `space.validate`), shrinking toward
    simple ones (see the module's docstring). Raises NasError at once for an empty
    space or a library."""
    space.root  # noqa: B018 -- build the plan now, so a bad space fails here, not mid-test
    return _derivations(space)


def simplest(space) -> Derivation:
    """The derivation `derivations(space)` shrinks toward: every choice at its first
    option that has derivations, every repetition at its fewest copies. It is
    `space.unrank(0)` when chosen repetition counts are written in increasing order."""
    return Derivation(space.root.draw(lambda n: 0))  # every index at its minimum


@st.composite
def _derivations(draw, space):
    return Derivation(_draw_value(draw, space.root))


def _draw_value(draw, plan):
    """One derivation of a plan, one drawn index per choice site."""
    return plan.draw(lambda n: draw(st.integers(0, n - 1)))


# ---- random space files ------------------------------------------------------------
# The generator writes text and, beside each piece, how many derivations it has as
# a function of the integer names in scope (space parameter `n`, rule parameters,
# `where` names). Expressions are written in the common subset of Python and the
# language (ints, + *, comparisons, and/or/not), so `eval` computes them here.

@attrs.frozen
class _Value:
    """A value expression; `values(env)` has one entry per assignment of its choices."""

    text: str
    values: Callable[[dict], list]


# How loosely each kind of network expression binds: a position that takes at most
# level L parenthesises anything looser.
_LEVEL = {"call": 0, "merge": 0, "dag": 0, "repeat": 1, "labelled": 1, "if": 1, "seq": 2, "alts": 3}
_ATOM, _POSTFIX, _SEQ = 0, 1, 2
_N = 2  # the default of the generated space's parameter `n`


@attrs.frozen
class _Net:
    """A network expression and its number of derivations in `env`."""

    text: str
    count: Callable[[dict], int]
    kind: str  # a key of _LEVEL
    calls: frozenset = frozenset()  # rules named in it (for shared-rule reachability)

    def at(self, level: int) -> str:
        """The text for a position that takes expressions binding at most `level`."""
        return self.text if _LEVEL[self.kind] <= level else f"({self.text})"


@attrs.define
class _Rule:
    """A generated rule; its count per argument tuple is memoised."""

    name: str
    params: tuple  # of (name, default or None)
    body: _Net
    wheres: tuple = ()  # of (name, _Value)
    requires: tuple = ()  # of expression text
    shared: bool = False
    recursive: bool = False
    memo: dict = attrs.Factory(dict)

    def count(self, n: int, args: tuple) -> int:
        """Derivations for these arguments: `where` assignments that pass every
        `require`, each times the body's count."""
        if (n, args) not in self.memo:
            scope = {"n": n}
            for (name, default), arg in itertools.zip_longest(self.params, args):
                scope[name] = default if arg is None else arg
            self.memo[n, args] = sum(self.body.count(bound) for bound in self._bindings(scope, 0)
                                     if all(eval(r, {}, bound) for r in self.requires))  # noqa: S307
        return self.memo[n, args]

    def _bindings(self, scope, i):
        if i == len(self.wheres):
            yield scope
            return
        name, value = self.wheres[i]
        for v in value.values(scope):
            yield from self._bindings({**scope, name: v}, i + 1)

    def text(self) -> str:
        params = ", ".join(p if d is None else f"{p} = {d}" for p, d in self.params)
        head = ("shared " if self.shared else "") + (f"{self.name}({params})" if self.params else self.name)
        lines = [f"{head} = {self.body.text}"]
        if self.wheres:
            lines.append("    where " + ", ".join(f"{n} = {v.text}" for n, v in self.wheres))
        lines += [f"    require {r}" for r in self.requires]
        return "\n".join(lines)


def _followed(p: _Net) -> str:
    """`p`'s text where more of a sequence follows it: an `if` goes in brackets (each
    of its branches is one item, and the language refuses the unbracketed form)."""
    return f"({p.text})" if p.kind == "if" else p.at(_POSTFIX)


def _seq(parts: list[_Net]) -> _Net:
    texts = [_followed(p) for p in parts[:-1]] + [parts[-1].at(_POSTFIX)]
    return _Net(" ".join(texts), lambda env: math.prod(p.count(env) for p in parts),
                "seq", frozenset().union(*(p.calls for p in parts)))


def _merge(kind: str, branches, k=None, candidates=()) -> _Net:
    """`kind(b1, ..., pick k of [c1, ...])`: the branches' product, times the sum
    over k-subsets of the candidates of their product."""
    texts = [b.text for b in branches]
    if k is not None:
        texts.append(f"pick {k} of [{', '.join(c.text for c in candidates)}]")

    def count(env):
        picks = 1 if k is None else sum(math.prod(candidates[i].count(env) for i in subset)
                                        for subset in itertools.combinations(range(len(candidates)), k))
        return math.prod(b.count(env) for b in branches) * picks

    return _Net(f"{kind}({', '.join(texts)})", count, "merge",
                frozenset().union(*(n.calls for n in (*branches, *candidates))))


class _Writer:
    """Draws the pieces of one space file; names are unique per file."""

    PLAIN = ("relu", "bn", "identity", "zero", "hswish", "avgpool(kernel=3)")
    # primitives with one argument that is not an int: (argument, values to choose from)
    OTHER = {"act": ("kind", ("relu", "hswish", "silu")), "dropout": ("p", ("0.0", "0.5", "0.25")),
             "bn": ("affine", ("true", "false"))}
    # scalars of every type, no two equal (`1` and `true` would be)
    MIXED = ("1", "2.5", "-3", "-0.5", "false", '"true"', '"add"', '"if"', '"a b"', '""', "relu", "0.1 + 0.2",
             "1e300")

    def __init__(self, draw, max_rules: int):
        self.draw = draw
        self.max_rules = max_rules
        self.rules: dict[str, _Rule] = {}
        self.fresh = itertools.count(1)

    def pick(self, options):
        return self.draw(st.sampled_from(options))

    def chance(self) -> bool:
        return self.draw(st.booleans())

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self.fresh)}"

    # -- values
    def literal_choice(self, pool):
        """`{a, b @ w}`: distinct values, sometimes weighted."""
        values = self.draw(st.lists(st.sampled_from(pool), min_size=2, max_size=3, unique=True))
        weights = [self.pick(("", "", " @ 2", " @ 0.5")) for _ in values]
        return "{" + ", ".join(f"{v}{w}" for v, w in zip(values, weights)) + "}", values

    PLAIN_INTS = ("literal", "name", "arith", "choice")  # what may stand inside an expression (no range)

    def int_value(self, names, where: bool = False, forms=PLAIN_INTS + ("range",)) -> _Value:
        """A positive int: a literal, a name, a little arithmetic, a choice `{...}` or a
        range `lo..hi [step s]`; in a `where` also a choice inside arithmetic, or one
        inside an `if` (a choice only when its branch is taken)."""
        form = self.pick(forms + (("scaled", "conditional") if where else ()))
        if form == "literal":
            v = self.draw(st.integers(1, 4))
            return _Value(str(v), lambda env: [v])
        if form == "name":
            name = self.pick(names)
            return _Value(name, lambda env: [env[name]])
        if form == "arith":
            name, k, op = self.pick(names), self.draw(st.integers(1, 3)), self.pick(("+", "*"))
            text = f"{name} {op} {k}"
            return _Value(text, lambda env: [eval(text, {}, env)])  # noqa: S307
        if form == "range":
            lo, size, step = self.draw(st.integers(1, 3)), self.draw(st.integers(1, 3)), self.draw(st.integers(1, 2))
            hi = lo + (size - 1) * step + self.draw(st.integers(0, step - 1))
            values = list(range(lo, hi + 1, step))
            return _Value(f"{lo}..{hi}" + (f" step {step}" if step > 1 else ""), lambda env: values)
        if form == "conditional":
            test = self.condition(names)
            then, orelse = (self.int_value(names, forms=self.PLAIN_INTS) for _ in "ab")
            return _Value(f"if {test} then {then.text} else {orelse.text}",
                          lambda env: then.values(env) if eval(test, {}, env) else orelse.values(env))  # noqa: S307
        text, values = self.literal_choice(range(1, 6))
        if form == "scaled":
            k = self.draw(st.integers(2, 4))
            return _Value(f"{k} * {text}", lambda env: [k * v for v in values])
        return _Value(text, lambda env: values)

    def condition(self, names) -> str:
        """A boolean over integer names, e.g. `wa + p <= 4`."""
        a, b = self.pick(names), self.pick(names)
        k = self.draw(st.integers(1, 6))
        return self.pick((f"{a} != {b}", f"{a} + {b} <= {k}", f"{a} * {b} < {k}", f"{a} % 2 == 0",
                          f"not {a} == {k % 3 + 1}", f"{a} >= {k % 3 + 1} or {b} == 1"))

    # -- network expressions
    def primitive(self, names) -> _Net:
        form = self.pick(("plain", "conv", "act", "dropout", "bn", "dwconv", "maxpool"))
        if form == "plain":
            return _Net(self.pick(self.PLAIN), lambda env: 1, "call")
        if form in self.OTHER:
            key, pool = self.OTHER[form]
            text, values = self.literal_choice(pool)
            return _Net(f"{form}({key}={text})", lambda env: len(values), "call")
        if form == "dwconv":
            v = self.int_value(names)
            return _Net(f"dwconv(kernel={v.text})", lambda env: len(v.values(env)), "call")
        if form == "maxpool":
            text, values = self.literal_choice((3, 5))
            return _Net(f"maxpool(kernel={text})", lambda env: len(values), "call")
        out, kernel = self.int_value(names), self.int_value(names)
        return _Net(f"conv(out={out.text}, kernel={kernel.text})",
                    lambda env: len(out.values(env)) * len(kernel.values(env)), "call")

    def call(self, names) -> _Net:
        """A call of an earlier rule, with arguments that may hold choices."""
        rule = self.rules[self.pick(sorted(self.rules))]
        if rule.shared:
            return _Net(rule.name, lambda env: 1, "call", frozenset({rule.name}))
        if rule.recursive:  # keep the depth small
            args = [self.pick((_Value("0", lambda env: [0]), _Value("2", lambda env: [2]),
                               _Value("{1, 2}", lambda env: [1, 2])))]
        else:  # a parameter with a default may be left out
            args = [self.int_value(names) for _, default in rule.params if default is None or self.chance()]

        def count(env):
            return sum(rule.count(env["n"], combo) for combo in itertools.product(*(a.values(env) for a in args)))

        text = f"{rule.name}({', '.join(a.text for a in args)})" if args else rule.name
        return _Net(text, count, "call", frozenset({rule.name}))

    def leaf(self, names) -> _Net:
        return self.call(names) if self.rules and self.chance() else self.primitive(names)

    FORMS = ("leaf", "seq", "alts", "repeat", "merge", "labelled", "dag", "if")

    def net(self, names, depth: int, forms=FORMS) -> _Net:
        """A network expression of one of `forms`, at most `depth` constructs deep."""
        form = self.pick(forms) if depth > 0 else "leaf"
        if form == "leaf":
            return self.leaf(names)
        if form == "seq":
            return _seq([self.net(names, depth - 1) for _ in range(self.draw(st.integers(2, 3)))])
        if form == "alts":
            return self.alternatives(names, depth - 1)
        if form == "repeat":
            return self.repeat(names, depth - 1)
        if form == "merge":
            return self.merge(names, depth - 1)
        if form == "labelled":  # only calls, repetitions and alternatives can be labelled
            inner = self.net(names, depth, ("leaf", "alts", "repeat"))
            return _Net(f"{inner.at(_POSTFIX)} as {self.name('lab')}", inner.count, "labelled", inner.calls)
        if form == "dag":
            return self.dag(names)
        a, b = self.net(names, depth - 1), self.net(names, depth - 1)
        test = self.condition(names)
        return _Net(f"if {test} then {a.at(_ATOM)} else {b.at(_ATOM)}",
                    lambda env: a.count(env) if eval(test, {}, env) else b.count(env),  # noqa: S307
                    "if", a.calls | b.calls)

    def alternatives(self, names, depth) -> _Net:
        options = [self.net(names, depth) for _ in range(self.draw(st.integers(2, 3)))]
        texts = []
        for o in options:
            label = f"{self.name('opt')}: " if self.chance() else ""
            weight = self.pick(("", "", " @ 2", " @ 0.5"))
            texts.append(f"{label}{o.at(_SEQ)}{weight}")
        return _Net(" | ".join(texts), lambda env: sum(o.count(env) for o in options),
                    "alts", frozenset().union(*(o.calls for o in options)))

    def repeat(self, names, depth) -> _Net:
        body = self.net(names, depth)
        form = self.pick(("fixed", "name", "choice", "range"))
        if form == "fixed":
            k = self.draw(st.integers(0, 2))
            text, lengths = str(k), lambda env: [k]
        elif form == "name":
            name = self.pick(names)
            text, lengths = f"min({name}, 2)", lambda env: [min(env[name], 2)]
        elif form == "choice":
            text, values = self.literal_choice((0, 1, 2))
            lengths = lambda env: values  # noqa: E731
        else:
            lo = self.draw(st.integers(0, 1))
            text, lengths = f"{lo}..2", lambda env: list(range(lo, 3))
        # a repeated shared call gets its own site name: the shared rule's name is taken
        label = f" as {self.name('rep')}" if body.calls and self.chance() or self._shared_call(body) else ""
        return _Net(f"{body.at(_ATOM)} * {text}{label}",
                    lambda env: sum(body.count(env) ** k for k in lengths(env)), "repeat", body.calls)

    def _shared_call(self, net: _Net) -> bool:
        return net.text in self.rules and self.rules[net.text].shared

    def merge(self, names, depth) -> _Net:
        """`add(...)` / `concat(...)` of branches, sometimes with a `pick k of [...]`."""
        branches = [self.net(names, depth) for _ in range(self.draw(st.integers(1, 2)))]
        kind = self.pick(("add", "concat"))
        if len(branches) == 2 and self.chance():
            return _merge(kind, branches)
        candidates = [self.net(names, depth) for _ in range(self.draw(st.integers(2, 3)))]
        return _merge(kind, branches, self.draw(st.integers(0, len(candidates))), candidates)

    def dag(self, names) -> _Net:
        """A dag whose node i reads node i-1, and maybe the input, maybe through a pick."""
        source = self.name("x")
        lines, parts = [], []
        previous = source
        for _ in range(self.draw(st.integers(1, 3))):
            node = self.name("g")
            form = self.pick(("edge", "add", "pick") if previous != source else ("edge", "add"))
            if form == "edge":
                part = self.edge(previous, names)
            elif form == "add":
                part = _merge("add", [self.edge(previous, names), self.edge(source, names)])
            else:
                part = _merge("add", [self.edge(previous, names)], 1,
                              [self.edge(source, names), self.edge(previous, names)])
            lines.append(f"{node} = {part.text}")
            parts.append(part)
            previous = node
        body = "".join(f"\n        {line}" for line in lines)
        return _Net(f"dag {source} {{{body}\n        out {previous}\n    }}",
                    lambda env: math.prod(p.count(env) for p in parts), "dag",
                    frozenset().union(*(p.calls for p in parts)))

    def edge(self, source: str, names) -> _Net:
        net = self.leaf(names)
        return attrs.evolve(net, text=f"{source} > {net.text}")

    # -- rules
    def rule(self, index: int) -> _Rule:
        kind = self.pick(("plain", "plain", "plain", "shared", "recursive") if index else ("plain",))
        name = self.name("r")
        if kind == "shared":
            return _Rule(name, (), self.net(["n"], 2), shared=True)
        if kind == "recursive":  # bounded recursion: depth d counts down to 0
            base, step = self.net(["n"], 1), self.net(["n"], 1)
            me = {}
            body = _Net(f"if d == 0 then {base.at(_ATOM)} else ({_followed(step)} {name}(d - 1))",
                        lambda env: base.count(env) if env["d"] == 0
                        else step.count(env) * me["rule"].count(env["n"], (env["d"] - 1,)),
                        "if", base.calls | step.calls | {name})
            me["rule"] = _Rule(name, (("d", None),), body, recursive=True)
            return me["rule"]
        params = tuple((p, self.pick((None, None, 2))) for p in ("p", "q")[:self.draw(st.integers(0, 2))])
        params = tuple(sorted(params, key=lambda p: p[1] is not None))  # defaults last
        names = ["n"] + [p for p, _ in params]
        wheres = []
        for w in ("wa", "wb")[:self.draw(st.integers(0, 2))]:
            wheres.append((w, self.int_value(names, where=True)))
            names.append(w)
        requires = [self.condition(names) for _ in range(self.draw(st.integers(0, 2 if wheres else 1)))]
        body = self.net(names, 2)
        if self.chance():  # a `where` choice of symbols, floats or bools, passed to a primitive
            prim = self.pick(sorted(self.OTHER))
            key, pool = self.OTHER[prim]
            text, values = self.literal_choice(pool)
            wheres.append(("ws", _Value(text, lambda env: values)))
            body = _seq([body, _Net(f"{prim}({key}=ws)", lambda env: 1, "call")])
        elif self.chance():  # an unused `where` choice of scalars of every type
            text, values = self.literal_choice(self.MIXED)
            wheres.append(("wm", _Value(text, lambda env: values)))
        return _Rule(name, params, body, tuple(wheres), tuple(requires))

    def space(self, max_count: int) -> SpaceFile | None:
        """A file, or None when no network of 1..max_count derivations was kept
        (the biggest items of the network are dropped until it fits)."""
        for i in range(self.draw(st.integers(0, self.max_rules))):
            rule = self.rule(i)
            self.rules[rule.name] = rule
        items = [self.net(["n"], 2) for _ in range(self.draw(st.integers(1, 3)))]
        items += [self.call(["n"]) for _ in self.rules if self.chance()]
        items = [item for item in items if item.count({"n": _N})]
        while items and self.total(items, _N) > max_count:
            items.remove(max(items, key=lambda item: item.count({"n": _N})))
        if not items or not self.total(items, _N):
            return None
        text = "\n\n".join([f"space generated(n: int = {_N})", f"network = {_seq(items).text}"]
                            + [r.text() for r in self.rules.values()]) + "\n"
        return SpaceFile(text, lambda n: self.total(items, n))

    def total(self, items, n: int) -> int:
        """The network's count times that of each shared rule it reaches (once each)."""
        seen, todo = set(), set().union(*(item.calls for item in items))
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo |= self.rules[name].body.calls
        shared = math.prod(self.rules[r].count(n, ()) for r in seen if self.rules[r].shared)
        return _seq(items).count({"n": n}) * shared


@attrs.frozen
class SpaceFile:
    """A generated space file and its number of derivations, counted by the generator."""

    text: str
    counter: Callable[[int], int] = attrs.field(repr=False, eq=False)

    def count(self, n: int = _N) -> int:
        """The number of derivations with the space's parameter `n` (default 2)."""
        return self.counter(n)


def space_files(max_rules: int = 4, max_count: int = 2000, counted: bool = False) -> st.SearchStrategy:
    """Small valid space files: rules with labelled and weighted alternatives, value
    choices, ranges, repetitions (fixed or chosen counts), `where` bindings with
    `require` constraints, parameters with defaults, shared rules, bounded
    recursion, merges with picks and dags; one int parameter, `n`. Each has
    1..max_count derivations (with n at its default).

    Draws the text, or with `counted=True` a `SpaceFile`, whose `count(n)` is
    computed by the generator from what it wrote, independently of nasdsl."""

    @st.composite
    def files(draw):
        return _Writer(draw, max_rules).space(max_count)

    made = files().filter(lambda file: file is not None)
    return made if counted else made.map(lambda file: file.text)
