"""Plans: the choice structure of a space, specialised to concrete arguments.

For every rule and argument tuple the planner builds (once, memoised) a tree of
choice sites with exact counts. One mechanism then serves every operation:

    PValue   a value site (`kernel={3, 5}`)          count = number of values
    PScope   a scope: variants (the values of its `where` and argument choices,
             filtered by `require`), each a product of sites; a rule's independent
             groups of `where` choices are scopes spliced into its node (`split_rule`)
    PAlt     alternatives                             count = sum over options
    PRepeat  a repetition of one element plan         count = sum over n of c**n
    PPick    k distinct of n candidates               count = sum over subsets of products

Their parts are frozen values, named rather than indexed: a scope's `Variant`s
hold `Site`s, an alternative's `Option`s and a pick's `Candidate`s hold scopes.

Each plan counts, samples uniformly (top-down by counts), samples per choice,
ranks, unranks, enumerates lazily and reads a raw derivation back (validation).
Counting is dynamic programming over (rule, arguments); counts are Python ints.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random

import attrs

from ..language import ast, ir, primitives
from ..language.errors import DerivationError, NasError, did_you_mean
from ..language.expr import SYMBOLIC, Scope, evaluate, show, type_name
from .derivation import Alt, Derivation, Node, Picked, Rep, distance, scalar_text
from .encoding import Shape, choose, merge, pad, slot
from .scope import coerce, rule_names

MAX_REPEAT = 1000  # copies in one repetition
MAX_ENUMERATED = 100_000  # values of one enumerated choice / combinations of a scope
MAX_DEPTH = 100  # nested levels of rules and expressions while planning (each costs a few Python frames)
MAX_RANGE = 10**15  # values of one integer range (a range's len() must fit a machine word)
MAX_COUNT_BITS = 200_000  # about 10**60000 derivations


def _cumulative(counts):
    return list(itertools.accumulate(counts))


def _pick_index(cum, rng):
    """An index drawn with probability proportional to its count."""
    return bisect.bisect_right(cum, rng.randrange(cum[-1]))


def _weight_cum(weights, counts=None):
    """Cumulative weights for per-choice draws; options without derivations weigh 0."""
    return list(itertools.accumulate(w if counts is None or c else 0.0 for w, c in
                                     zip(weights, counts if counts is not None else weights)))


def _pick_weighted(cum, rng):
    """An index drawn with probability proportional to its weight (see _weight_cum)."""
    return bisect.bisect_right(cum, rng.random() * cum[-1])


def _fmt_values(values, limit=12) -> str:
    values = list(itertools.islice(values, limit + 1))
    shown = ", ".join(scalar_text(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _suggest(given, candidates, lead: str) -> str:
    """`did you mean `x`? allowed: a, b, c`: the candidates, and the closest one when
    something was misspelt (never scanning a range: it may be huge)."""
    strings = [c for c in candidates if isinstance(c, str)] if isinstance(given, str) and isinstance(
        candidates, (tuple, list)) else []
    close = did_you_mean(given, strings) if strings else None
    return (f"{close} " if close else "") + lead + _fmt_values(candidates)


def _err(path, message, hint=None, raw=None):
    return DerivationError(f"`{path or '(root)'}`: {message}", getattr(raw, "pos", None), hint)


def _located(read):
    """Point a DerivationError at the innermost raw text it concerns."""

    def wrapper(self, raw, path):
        try:
            return read(self, raw, path)
        except DerivationError as err:
            if err.pos is None and getattr(raw, "pos", None) is not None:
                err.pos = raw.pos
            raise

    return wrapper


def _join(path, name):
    return f"{path}.{name}" if path else str(name)


@attrs.frozen
class Site:
    """A named choice site of a scope and its plan (name None: a rule's whole-body alternative).

    A spliced site is a group of a rule's choices that are independent of its other
    choices (see `Planner._build_rule`): its plan is a PScope whose items sit in the
    enclosing scope's node itself, not under a name of their own."""

    name: str | None
    plan: object
    spliced: bool = False


@attrs.frozen
class Variant:
    """One way a scope's `where` and argument choices can be set: their values,
    and the sites that remain to choose."""

    assignment: tuple  # of (name, value), as in the derivation's Node
    sites: tuple  # of Site
    weight: float
    order: dict | None = attrs.field(default=None, eq=False)  # with spliced sites: name -> place in the node


@attrs.frozen
class Option:
    """An alternative of a PAlt: its label, its written weight and its scope."""

    label: str
    weight: float
    scope: object  # PScope


@attrs.frozen
class Candidate:
    """A candidate of a PPick: its label and its scope."""

    label: str
    scope: object  # PScope


EMPTY_NODE = Node()
TABLE_MAX = 2048  # a site with at most this many derivations samples from a table of them


class _Plan:
    """What every plan kind shares. Each kind answers for itself (sampling, ranking,
    reading, and the operations beside a derivation: `positions`, `conform`,
    `change_one`, `nearest`, `draw`, `domain`), so a new kind is one class here."""

    __slots__ = ()

    def resample_other(self, value, rng):
        """Uniform over the plan's derivations other than `value`."""
        old = self.rank(value)
        r = rng.randrange(self.count - 1)
        return self.unrank(r + 1 if r >= old else r)

    def shape(self, name, memo):
        """The token layout of this place (see nasdsl.space.encoding), once per plan and name."""
        key = (id(self), name)
        found = memo.get(key)
        if found is None:
            found = memo[key] = self._shape(name, memo)
        return found


class _Tabled(_Plan):
    """Uniform sampling of a small site: one draw from the list of all its
    derivations (built on first use), instead of a walk down its tree."""

    __slots__ = ()

    def sample(self, rng):
        if self.count > TABLE_MAX:
            return self._sample(rng)
        table = self._table
        if table is None:
            table = self._table = tuple(self.iterate())
        return table[rng.randrange(self.count)]


class PValue(_Plan):
    __slots__ = ("values", "weights", "count", "weight_cum")

    def __init__(self, values, weights):
        self.values = values  # a tuple, or a range for integer ranges
        self.weights = weights
        self.count = len(values)
        self.weight_cum = _weight_cum(weights) if weights is not None else None

    def sample(self, rng):
        return self.values[rng.randrange(self.count)]

    def sample_per_choice(self, rng):
        if self.weights is None:
            return self.sample(rng)
        return self.values[_pick_weighted(self.weight_cum, rng)]

    def unrank(self, r):
        return self.values[r]

    def rank(self, value):
        i = self.values.index(value)
        if type_name(self.values[i]) != type_name(value):
            raise ValueError(f"{value!r} has the wrong type")
        return i

    def iterate(self):
        return iter(self.values)

    # -- operations beside a derivation (mutation, crossover, hypothesis, tickets, restriction)
    def positions(self, value, parts):
        yield parts, self, value

    def conform(self, old, rng):
        try:
            self.rank(old)
            return old
        except (ValueError, TypeError):
            return self.sample(rng)

    def change_one(self, value, rng):
        i = self.rank(value)
        j = rng.randrange(self.count - 1)
        return self.values[j + 1 if j >= i else j]

    def changes(self, value, rng):
        """Every value of the site but `value` (what a neighbourhood steps through)."""
        i = self.rank(value)
        return (self.values[j] for j in range(self.count) if j != i)

    def nearest(self, want):
        return _nearest_value(self.values, want)

    def draw(self, index):
        return self.values[index(self.count) if self.count > 1 else 0]

    # -- tokens (nasdsl.space.encoding)
    kind = "value"

    def _shape(self, name, memo):
        return Shape("value", (slot("value", name, self.values, self.count > 1),))

    def encode(self, value, shape, out):
        _emit(out, shape.slots[0], value)

    def decode(self, shape, ids):
        s = shape.slots[0]
        return self.values[(yield from choose(ids, s, [s.key(v) for v in self.values]))]

    def cover(self, state, parts):
        """A value for a cover derivation (see `Space.cover`): the largest number, or the
        value least taken here so far (symbols and flags may steer an `if`: each in turn)."""
        if isinstance(self.values, range):
            return self.values[-1]
        if all(_number(v) for v in self.values):
            return max(self.values)
        return state.take(parts, self.values)

    def choices(self, parts, out):
        if out.visited(self, parts):
            return
        """Every (place, value) a cover must reach: a value that the largest cannot stand for."""
        if not isinstance(self.values, range) and not all(_number(v) for v in self.values):
            out.update((parts, _hashable(v)) for v in self.values)

    def domain(self, parts, path):
        if not parts:
            return list(self.values)
        raise _no_choice(self, parts, path)

    @_located
    def read(self, raw, path):
        if isinstance(raw, ast.RawScalar):
            value = raw.value
        elif isinstance(raw, ast.RawLabel) and raw.node is None:
            value = {"true": True, "false": False}.get(raw.name, raw.name)
        else:
            raise _err(path, "expected a value", f"allowed: {_fmt_values(self.values)}")
        for v in (self.values if not isinstance(self.values, range) else ()):
            if v == value and type_name(v) == type_name(value) or (
                    isinstance(v, float) and isinstance(value, int) and not isinstance(value, bool) and v == value):
                return v
        if isinstance(self.values, range) and isinstance(value, int) and not isinstance(value, bool) \
                and value in self.values:
            return value
        raise _err(path, f"{scalar_text(value)} is not allowed here", _suggest(value, self.values, "allowed: "))


class PScope(_Tabled):
    """Variants of one scope (see Variant)."""

    __slots__ = ("variants", "counts", "cum", "count", "key", "names", "name_set", "_site_names", "_site_plans",
                 "_spliced", "_table", "_assigned", "_by_assignment", "_values_of", "weight_cum")

    def __init__(self, variants, key=None):
        self.variants = variants  # tuple of Variant
        self.counts = [math.prod(s.plan.count for s in v.sites) for v in variants]
        self.cum = _cumulative(self.counts)
        self.count = self.cum[-1] if self.cum else 0
        self._table = None
        self.key = key  # (rule, args) for a rule's scope: crossover swaps equal keys
        self._by_assignment = None
        self.weight_cum = _weight_cum([v.weight for v in variants], self.counts)
        self._site_names = [tuple(s.name for s in v.sites) for v in variants]
        self._site_plans = [tuple(s.plan for s in v.sites) for v in variants]
        self._spliced = [any(s.spliced for s in v.sites) for v in variants]
        names = {}
        for v in variants:
            for n, _ in v.assignment:
                names[n] = None
            for s in v.sites:
                names.update(dict.fromkeys(s.plan.names) if s.spliced else {s.name: None})
        self.names = tuple(names)
        self.name_set = frozenset(names)

    @property
    def empty(self):
        return len(self.variants) == 1 and not self.variants[0].assignment and not self.variants[0].sites

    def _node(self, variant, values):
        assignment = self.variants[variant].assignment
        if self._spliced[variant]:
            return self._merged(variant, values)
        if not values and not assignment:
            return EMPTY_NODE
        return Node(assignment + tuple(zip(self._site_names[variant], values)))

    def _merged(self, variant, values):
        """A node with spliced groups: their items go in among the others, in the rule's written order."""
        v = self.variants[variant]
        items = list(v.assignment)
        for site, value in zip(v.sites, values):
            if site.spliced:
                items.extend(value.items)
            else:
                items.append((site.name, value))
        return _in_order(items, v.order)

    def _sample(self, rng):
        v = 0 if len(self.variants) == 1 else _pick_index(self.cum, rng)
        return self._node(v, [s.sample(rng) for s in self._site_plans[v]])

    def sample_per_choice(self, rng):
        if len(self.variants) == 1:
            v = 0
        else:
            v = _pick_weighted(self.weight_cum, rng)
        return self._node(v, [s.sample_per_choice(rng) for s in self._site_plans[v]])

    def unrank(self, r):
        v = bisect.bisect_right(self.cum, r)
        r -= self.cum[v - 1] if v else 0
        digits = []
        for s in reversed(self._site_plans[v]):
            r, d = divmod(r, s.count)
            digits.append(s.unrank(d))
        return self._node(v, digits[::-1])

    def rank(self, node):
        """The rank of `node`; raises KeyError / ValueError when it is not a member."""
        if type(node) is not Node:
            raise ValueError("expected a Node")
        v = self._variant_of(node)
        variant = self.variants[v]
        r = 0
        if self._spliced[v]:
            size = len(variant.assignment)
            for s in variant.sites:
                part = _part(s, node)
                size += len(part.items) if s.spliced else 1
                r = r * s.plan.count + s.plan.rank(part)
            if len(node.items) != size:
                raise KeyError("unexpected choices")
        else:
            if len(node.items) != len(variant.assignment) + len(variant.sites):
                raise KeyError("unexpected choices")
            for s in variant.sites:
                r = r * s.plan.count + s.plan.rank(node[s.name])
        return r + (self.cum[v - 1] if v else 0)

    def _index(self):
        """The variants by their assignment (a dict lookup: a scope may have thousands of
        variants, e.g. widths x kernels x flags). An assignment may leave a name out
        (a choice in an `if` branch that was not taken)."""
        self._assigned = tuple(dict.fromkeys(n for v in self.variants for n, _ in v.assignment))
        self._by_assignment = {_key(self._assigned, dict(v.assignment)): i for i, v in enumerate(self.variants)}
        values: dict = {}
        for v in self.variants:
            for n, x in v.assignment:
                values.setdefault(n, {})[type_name(x), x] = x
        self._values_of = {n: tuple(found.values()) for n, found in values.items()}

    def _variant_of(self, node):
        """The variant whose assignment `node` carries."""
        if len(self.variants) == 1:
            return 0
        if self._by_assignment is None:
            self._index()
        try:
            return self._by_assignment[_key(self._assigned, node)]
        except (KeyError, TypeError):
            raise KeyError("no variant") from None

    def site_plan(self, node, name):
        """The plan of site `name` in `node` (a node of this scope), looking into spliced
        groups (a rule's whole-body alternative is `alt`); None where `name` holds an
        assigned value or nothing: what a walk beside a derivation descends into."""
        for site in self.variants[self._variant_of(node)].sites:
            if site.spliced:
                found = site.plan.site_plan(_project(node, site.plan), name)
                if found is not None:
                    return found
            elif site.name == name or (site.name is None and name == "alt"):
                return site.plan
        return None

    def iterate(self):
        for v, plans in enumerate(self._site_plans):
            if self.counts[v]:
                for values in _product(plans):
                    yield self._node(v, values)

    # -- operations beside a derivation
    def positions(self, value, parts):
        yield parts, self, value
        yield from self._site_positions(self.variants[self._variant_of(value)], value, parts)

    def inner_positions(self, node, parts):
        """The positions inside a one-variant scope (an option's, a candidate's), not its own."""
        return self._site_positions(self.variants[0], node, parts)

    @staticmethod
    def _site_positions(variant, node, parts):
        for site in variant.sites:
            if site.spliced:  # the group's own position changes its items in this node
                inner = site.plan.positions(_part(site, node), parts)
                next(inner)
                yield parts, Splice(site.plan, variant.order), node
                yield from inner
            else:
                yield from site.plan.positions(node[site.name], (*parts, site.name))

    def _conformed(self, v, old, rng):
        return self._node(v, [s.plan.conform(_part(s, old) if s.spliced else old.get(s.name), rng)
                              for s in self.variants[v].sites])

    def conform(self, old, rng):
        if not isinstance(old, Node):
            return self.sample(rng)
        try:
            v = self._variant_of(old)
        except KeyError:
            v = None
        if v is None or not self.counts[v]:
            return self.sample(rng)
        return self._conformed(v, old, rng)

    def change_one(self, value, rng):
        """Another setting of the scope's `where` / argument values: one value changed
        where the scope allows it (uniform over such neighbours), else any other setting."""
        return self._conformed(self._neighbour(self._variant_of(value), rng), value, rng)

    def changes(self, value, rng):
        """Every other setting of the scope's own values, the rest kept where still valid."""
        v = self._variant_of(value)
        return (self._conformed(i, value, rng) for i, c in enumerate(self.counts) if c and i != v)

    def _neighbour(self, v, rng) -> int:
        if self._by_assignment is None:
            self._index()
        current = dict(self.variants[v].assignment)
        near = []
        for name, x in current.items():
            for y in self._values_of[name]:
                if not _same(x, y):
                    i = self._by_assignment.get(_key(self._assigned, {**current, name: y}))
                    if i is not None and self.counts[i]:
                        near.append(i)
        return near[rng.randrange(len(near))] if near else _other_index(self.counts, v, rng)

    def nearest(self, want):
        node = want if isinstance(want, Node) else Node()
        v = self._nearest_variant(node)
        return self._node(v, [s.plan.nearest(_part(s, node) if s.spliced else node.get(s.name))
                              for s in self.variants[v].sites])

    def _nearest_variant(self, node: Node) -> int:
        missing = object()

        def picks_off(i) -> int:
            """Wanted picks whose size the variant's count does not give."""
            return sum(1 for s in self.variants[i].sites if isinstance(s.plan, PPick)
                       and isinstance(w := node.get(s.name, missing), Picked) and len(w.items) != s.plan.k)

        try:
            v = self._variant_of(node)
            if self.counts[v] and not picks_off(v):
                return v
        except KeyError:
            pass

        def cost(i):
            mismatched, crossed, distance, size = picks_off(i), 0, 0.0, 0.0
            for name, value in self.variants[i].assignment:
                w = node.get(name, missing)
                if w is missing or _same(value, w):
                    continue
                if _number(value) and _number(w):
                    c, d = _off(value, w)
                    crossed, distance, size = crossed + c, distance + d, size + value
                else:
                    mismatched += 1
            return mismatched, crossed, distance, size, i

        return min((i for i, c in enumerate(self.counts) if c), key=cost)

    def draw(self, index):
        v = _draw_live(index, self.counts)
        return self._node(v, [s.draw(index) for s in self._site_plans[v]])

    # -- tokens: the assigned values (one slot per name), then the sites, keyed by name and kind
    kind = "scope"

    def _shape(self, name, memo):
        live = [v for v, c in zip(self.variants, self.counts) if c]
        assigned = [dict(v.assignment) for v in live]
        slots = []
        for n in dict.fromkeys(n for v in live for n, _ in v.assignment):
            values = tuple({_hashable(a[n]): a[n] for a in assigned if n in a}.values())
            missing = any(n not in a for a in assigned)
            slots.append(slot("where", n, values, len(values) + missing > 1))
        children: dict = {}
        for v in live:
            for s in v.sites:
                key = _site_key(s)
                children[key] = merge(children.get(key), s.plan.shape(key[0], memo))
        return Shape("scope", tuple(slots), tuple(children.items()))

    def encode(self, node, shape, out):
        variant = self.variants[self._variant_of(node)]
        assigned = dict(variant.assignment)
        for s in shape.slots:
            _emit(out, s, assigned.get(s.name, _NONE))
        sites = {_site_key(s): s for s in variant.sites}
        for key, child in shape.children:
            site = sites.get(key)
            if site is None:
                out.extend([None] * child.size)
            else:
                site.plan.encode(_part(site, node), child, out)

    def decode(self, shape, ids):
        """The variant, one assigned name at a time (the values still possible with the
        earlier ones), then its sites; a site of the shape it lacks is padding."""
        live = [(i, dict(v.assignment)) for i, (v, c) in enumerate(zip(self.variants, self.counts)) if c]
        for s in shape.slots:
            keys = list({_token_key(s, a.get(s.name, _NONE)): None for _, a in live})
            chosen = keys[(yield from choose(ids, s, keys))]
            live = [(i, a) for i, a in live if _token_key(s, a.get(s.name, _NONE)) == chosen]
        v = live[0][0]
        sites = {_site_key(s): s for s in self.variants[v].sites}
        values = {}
        for key, child in shape.children:
            site = sites.get(key)
            if site is None:
                yield from pad(child.size)
            else:
                values[key] = yield from site.plan.decode(child, ids)
        return self._node(v, [values[_site_key(s)] for s in self.variants[v].sites])

    def cover(self, state, parts):
        v = self._covering_variant(state, parts) if len(self.variants) > 1 else 0
        for n, x in self.variants[v].assignment:
            if not _number(x):
                state.taken((*parts, n), x)
        return self._node(v, [s.plan.cover(state, parts if s.spliced else (*parts, s.name))
                              for s in self.variants[v].sites])

    def _covering_variant(self, state, parts) -> int:
        """The live variant nearest what a cover wants of each name (the largest number,
        the symbol least taken), ties to the larger numbers."""
        if self._by_assignment is None:
            self._index()
        wanted = {n: max(xs) if all(_number(x) for x in xs) else state.least((*parts, n), xs)
                  for n, xs in self._values_of.items()}

        def score(i):
            assignment = self.variants[i].assignment
            return (sum(_same(x, wanted[n]) for n, x in assignment),
                    sum(x for _, x in assignment if _number(x)), -i)

        return max((i for i, c in enumerate(self.counts) if c), key=score)

    def choices(self, parts, out):
        if out.visited(self, parts):
            return
        for v, c in zip(self.variants, self.counts):
            if c:
                for n, x in v.assignment:
                    if not _number(x):
                        out.add(((*parts, n), _hashable(x)))
                for s in v.sites:
                    s.plan.choices(parts if s.spliced else (*parts, s.name), out)

    def domain(self, parts, path):
        if not parts:
            raise NasError(f"`{path}` is a scope; name a choice inside it")
        head, rest = parts[0], parts[1:]
        values = []
        for variant in self.variants:
            for n, v in variant.assignment:
                if n == head and not rest and v not in values:
                    values.append(v)
            for s in variant.sites:
                if s.spliced and head in s.plan.name_set:
                    return s.plan.domain(parts, path)
                if s.name == head:
                    return s.plan.domain(rest, path)
        if values:
            return values
        raise _no_choice(self, parts, path)

    @_located
    def read(self, raw, path):
        if raw is None:
            raw = ast.RawNode(())
        if not isinstance(raw, ast.RawNode):
            raise _err(path, "expected the choices of a scope, `(name=value, ...)`",
                       f"names here: {', '.join(self.names)}" if self.names else "write `()`")
        given = {}
        for name, value, pos in raw.items:
            if name in given:
                raise _err(_join(path, name), "is given twice", raw=ast.RawNode((), pos=pos))
            if name not in self.name_set:
                raise _err(_join(path, name), "is not a choice of this scope",
                           did_you_mean(name, self.names) or (f"names here: {', '.join(self.names)}"
                                                             if self.names else "this scope has no choices"),
                           raw=ast.RawNode((), pos=pos))
            given[name] = value
        chosen = next((i for i, variant in enumerate(self.variants)
                       if all(n in given and _reads_as(given[n], v) for n, v in variant.assignment)), None)
        if chosen is None:
            self._read_each_assigned(given, path)
            names = self.variants[0].assignment if self.variants else ()
            allowed = "; ".join(", ".join(f"{n}={scalar_text(v)}" for n, v in variant.assignment)
                                for variant in self.variants[:8])
            if not self.variants:
                raise _err(path, "no derivation exists here (the constraints exclude every choice)")
            raise _err(path, "these values are not allowed together: " + ", ".join(
                f"{n}={_raw_text(given[n]) if n in given else '?'}" for n, _ in names),
                f"allowed: {allowed}" + ("; ..." if len(self.variants) > 8 else ""))
        variant = self.variants[chosen]
        expected = {n for n, _ in variant.assignment}
        for s in variant.sites:
            expected |= s.plan.name_set if s.spliced else {s.name}
        for name in given:
            if name not in expected:
                raise _err(_join(path, name), "is not a choice here (with the other values given)")
        values = []
        for s in variant.sites:
            if s.spliced:
                values.append(s.plan.read(ast.RawNode(tuple(i for i in raw.items if i[0] in s.plan.name_set),
                                                      pos=raw.pos), path))
                continue
            if s.name not in given:
                raise _err(_join(path, s.name), "is missing", _missing_hint(s.plan))
            values.append(s.plan.read(given[s.name], _join(path, s.name)))
        return self._node(chosen, values)

    def _read_each_assigned(self, given, path):
        """A value that no variant has for its name is an error about that name alone."""
        if self._by_assignment is None:
            self._index()
        for name, values in self._values_of.items():
            if name in given:
                PValue(values, None).read(given[name], _join(path, name))


class Splice:
    """A spliced group's own choice, seen from the node it sits in: a mutation of it
    replaces the group's items in that node (see Site)."""

    __slots__ = ("group", "order")

    def __init__(self, group: PScope, order: dict):
        self.group = group
        self.order = order

    @property
    def count(self):
        return self.group.count

    @property
    def counts(self):
        return self.group.counts

    def _replaced(self, node, part):
        kept = [item for item in node.items if item[0] not in self.group.name_set]
        return _in_order(kept + list(part.items), self.order)

    def change_one(self, node, rng):
        return self._replaced(node, self.group.change_one(_project(node, self.group), rng))

    def changes(self, node, rng):
        return (self._replaced(node, g) for g in self.group.changes(_project(node, self.group), rng))

    def resample_other(self, node, rng):
        return self._replaced(node, self.group.resample_other(_project(node, self.group), rng))


def _project(node, group: PScope) -> Node:
    """The items of `node` that belong to a spliced group."""
    return Node(tuple(item for item in node.items if item[0] in group.name_set))


def _part(site: Site, node):
    """What a site holds in `node`: its value, or for a spliced group its items."""
    return _project(node, site.plan) if site.spliced else node[site.name]


def _in_order(items, order) -> Node:
    """Items sorted by their place in the written rule (names not placed come first, as given)."""
    items.sort(key=lambda item: order.get(item[0], -1))
    return Node(tuple(items)) if items else EMPTY_NODE


def _site_key(site: Site) -> tuple:
    """Where a site's positions sit in its scope's shape: its name and plan kind."""
    return site.name or "alt", "splice" if site.spliced else site.plan.kind


def _token_key(s, value):
    """A value's token key at slot `s` (None: PAD, for a name the variant does not assign)."""
    return None if value is _NONE else s.key(value)


def _emit(out, s, value):
    if s.free:
        out.append(_token_key(s, value))


def _key(names, values) -> tuple:
    """A variant's assignment as a dict key; `values` maps names (a Node's `get` or a dict)."""
    return tuple((n, type_name(x), x) for n in names for x in (values.get(n, _NONE),))


_NONE = object()


def _reads_as(raw, value) -> bool:
    """Whether raw derivation text denotes `value`."""
    try:
        PValue((value,), None).read(raw, "")
        return True
    except DerivationError:
        return False


def _raw_text(raw):
    if isinstance(raw, ast.RawScalar):
        return scalar_text(raw.value)
    if isinstance(raw, ast.RawLabel):
        return raw.name
    return "..."


def _missing_hint(site):
    if isinstance(site, PValue):
        return f"allowed: {_fmt_values(site.values)}"
    if isinstance(site, PAlt):
        return f"choose one of: {', '.join(o.label for o in site.options)}"
    return None


class PAlt(_Tabled):
    __slots__ = ("options", "counts", "cum", "count", "leaves", "all_leaves", "_table", "weight_cum")

    def __init__(self, options):
        self.options = options  # tuple of Option
        self.counts = [o.scope.count for o in options]
        self.cum = _cumulative(self.counts)
        self.count = self.cum[-1] if self.cum else 0
        self._table = None
        self.weight_cum = _weight_cum([o.weight for o in options], self.counts)
        # options without choices inside are constant values: build them once
        self.leaves = tuple(Alt(o.label, EMPTY_NODE) if o.scope.empty else None for o in options)
        self.all_leaves = all(leaf is not None for leaf in self.leaves)

    def _sample(self, rng):
        if self.all_leaves:
            return self.leaves[rng.randrange(len(self.leaves))]
        i = _pick_index(self.cum, rng)
        if self.leaves[i] is not None:
            return self.leaves[i]
        o = self.options[i]
        return Alt(o.label, o.scope.sample(rng))

    def sample_per_choice(self, rng):
        o = self.options[_pick_weighted(self.weight_cum, rng)]
        return Alt(o.label, o.scope.sample_per_choice(rng))

    def unrank(self, r):
        i = bisect.bisect_right(self.cum, r)
        o = self.options[i]
        return Alt(o.label, o.scope.unrank(r - (self.cum[i - 1] if i else 0)))

    def _index(self, label):
        for i, o in enumerate(self.options):
            if o.label == label:
                return i
        raise KeyError(label)

    def rank(self, alt):
        if type(alt) is not Alt:
            raise ValueError("expected an Alt")
        i = self._index(alt.label)
        return self.options[i].scope.rank(alt.node) + (self.cum[i - 1] if i else 0)

    def iterate(self):
        for o in self.options:
            for node in o.scope.iterate():
                yield Alt(o.label, node)

    # -- operations beside a derivation
    def positions(self, value, parts):
        yield parts, self, value
        yield from self.options[self._index(value.label)].scope.inner_positions(value.node, parts)

    def conform(self, old, rng):
        if isinstance(old, Alt):
            for i, o in enumerate(self.options):
                if o.label == old.label and self.counts[i]:
                    return Alt(o.label, o.scope.conform(old.node, rng))
        return self.sample(rng)

    def change_one(self, value, rng):
        o = self.options[_other_index(self.counts, self._index(value.label), rng)]
        return Alt(o.label, o.scope.conform(value.node, rng))

    def changes(self, value, rng):
        """Every other option, its insides kept where still valid."""
        current = self._index(value.label)
        return (Alt(o.label, o.scope.conform(value.node, rng))
                for i, o in enumerate(self.options) if self.counts[i] and i != current)

    def nearest(self, want):
        live = [i for i, c in enumerate(self.counts) if c]
        i = next((i for i in live if isinstance(want, Alt) and self.options[i].label == want.label), live[0])
        o = self.options[i]
        return Alt(o.label, o.scope.nearest(want.node if isinstance(want, Alt) else None))

    def draw(self, index):
        o = self.options[_draw_live(index, self.counts)]
        return Alt(o.label, o.scope.draw(index))

    # -- tokens: the label, then the union of the options' scopes
    kind = "alt"

    def _live(self):
        return [o for o, c in zip(self.options, self.counts) if c]

    def _shape(self, name, memo):
        inner = None
        for o in self._live():
            inner = merge(inner, o.scope.shape("", memo))
        return Shape("alt", (slot("alt", name, [o.label for o in self._live()], len(self._live()) > 1),),
                     ((("", "scope"), inner),))

    def encode(self, alt, shape, out):
        _emit(out, shape.slots[0], alt.label)
        self.options[self._index(alt.label)].scope.encode(alt.node, shape.children[0][1], out)

    def decode(self, shape, ids):
        s, live = shape.slots[0], self._live()
        o = live[(yield from choose(ids, s, [s.key(o.label) for o in live]))]
        return Alt(o.label, (yield from o.scope.decode(shape.children[0][1], ids)))

    def cover(self, state, parts):
        label = state.take(parts, tuple(o.label for o, c in zip(self.options, self.counts) if c))
        o = self.options[self._index(label)]
        return Alt(o.label, o.scope.cover(state, (*parts, o.label)))

    def choices(self, parts, out):
        if out.visited(self, parts):
            return
        for o, c in zip(self.options, self.counts):
            if c:
                out.add((parts, _hashable(o.label)))
                o.scope.choices((*parts, o.label), out)

    def domain(self, parts, path):
        if not parts:
            return [o.label for o in self.options]
        for o in self.options:
            if parts[0] in o.scope.names:
                return o.scope.domain(parts, path)
        raise _no_choice(self, parts, path)

    @_located
    def read(self, raw, path):
        labels = [o.label for o in self.options]
        if not isinstance(raw, ast.RawLabel):
            raise _err(path, "expected an alternative's label", f"choose one of: {', '.join(labels)}")
        try:
            i = self._index(raw.name)
        except KeyError:
            raise _err(path, f"`{raw.name}` is not an alternative here",
                       _suggest(raw.name, labels, "choose one of: ")) from None
        o = self.options[i]
        if o.scope.count == 0:
            raise _err(path, f"alternative `{o.label}` has no derivation here (its constraints exclude it)")
        return Alt(o.label, o.scope.read(raw.node, path))


class PRepeat(_Tabled):
    __slots__ = ("lengths", "weights", "elem", "counts", "cum", "count", "_table", "weight_cum")

    def __init__(self, lengths, weights, elem):
        self.lengths = lengths
        self.weights = weights
        self.elem = elem
        self.counts = [elem.count ** n for n in lengths]
        self.cum = _cumulative(self.counts)
        self.count = self.cum[-1] if self.cum else 0
        self._table = None
        self.weight_cum = _weight_cum(weights or [1.0] * len(lengths), self.counts)

    def _sample(self, rng):
        n = self.lengths[0] if len(self.lengths) == 1 else self.lengths[_pick_index(self.cum, rng)]
        return Rep(tuple(self.elem.sample(rng) for _ in range(n)))

    def sample_per_choice(self, rng):
        n = self.lengths[_pick_weighted(self.weight_cum, rng)]
        return Rep(tuple(self.elem.sample_per_choice(rng) for _ in range(n)))

    def unrank(self, r):
        i = bisect.bisect_right(self.cum, r)
        r -= self.cum[i - 1] if i else 0
        items = []
        for _ in range(self.lengths[i]):
            r, d = divmod(r, self.elem.count)
            items.append(self.elem.unrank(d))
        return Rep(tuple(reversed(items)))

    def rank(self, rep):
        if type(rep) is not Rep:
            raise ValueError("expected a Rep")
        i = self.lengths.index(len(rep.items))
        r = 0
        for item in rep.items:
            r = r * self.elem.count + self.elem.rank(item)
        return r + (self.cum[i - 1] if i else 0)

    def iterate(self):
        for n, c in zip(self.lengths, self.counts):
            if c:
                for values in _product([self.elem] * n):
                    yield Rep(tuple(values))

    # -- operations beside a derivation
    def positions(self, value, parts):
        yield parts, self, value
        for i, item in enumerate(value.items):
            yield from self.elem.positions(item, (*parts, i))

    def conform(self, old, rng):
        if isinstance(old, Rep) and len(old.items) in self.lengths \
                and self.counts[self.lengths.index(len(old.items))]:
            return Rep(tuple(self.elem.conform(item, rng) for item in old.items))
        return self.sample(rng)

    def change_one(self, value, rng):
        """Another number of copies: the first ones kept, new ones drawn."""
        n = self.lengths[_other_index(self.counts, self.lengths.index(len(value.items)), rng)]
        kept = [self.elem.conform(item, rng) for item in value.items[:n]]
        return Rep(tuple(kept + [self.elem.sample(rng) for _ in range(n - len(kept))]))

    def changes(self, value, rng):
        """Every other number of copies: the first ones kept, new ones drawn."""
        current = self.lengths.index(len(value.items))
        for i, n in enumerate(self.lengths):
            if self.counts[i] and i != current:
                kept = [self.elem.conform(item, rng) for item in value.items[:n]]
                yield Rep(tuple(kept + [self.elem.sample(rng) for _ in range(n - len(kept))]))

    def nearest(self, want):
        items = want.items if isinstance(want, Rep) else ()
        live = [n for n, c in zip(self.lengths, self.counts) if c]
        n = min(live, key=lambda n: (abs(n - len(items)), n))
        return Rep(tuple(self.elem.nearest(items[i] if i < len(items) else None) for i in range(n)))

    def draw(self, index):
        n = self.lengths[_draw_live(index, self.counts, key=self.lengths.__getitem__)]
        return Rep(tuple(self.elem.draw(index) for _ in range(n)))

    # -- tokens: the number of copies, then the most copies of the element (padding beyond the chosen)
    kind = "repeat"

    def _shape(self, name, memo):
        live = [n for n, c in zip(self.lengths, self.counts) if c]
        return Shape("repeat", (slot("len", name, live, len(live) > 1),),
                     (((name, self.elem.kind), self.elem.shape(name, memo)),), max(live))

    def encode(self, rep, shape, out):
        _emit(out, shape.slots[0], len(rep.items))
        for i in range(shape.copies):
            for key, child in shape.children:
                if i < len(rep.items) and key[1] == self.elem.kind:
                    self.elem.encode(rep.items[i], child, out)
                else:
                    out.extend([None] * child.size)

    def decode(self, shape, ids):
        s = shape.slots[0]
        live = [n for n, c in zip(self.lengths, self.counts) if c]
        n = live[(yield from choose(ids, s, [s.key(n) for n in live]))]
        items = []
        for i in range(shape.copies):
            for key, child in shape.children:
                if i < n and key[1] == self.elem.kind:
                    items.append((yield from self.elem.decode(child, ids)))
                else:
                    yield from pad(child.size)
        return Rep(tuple(items))

    def cover(self, state, parts):
        return Rep(tuple(self.elem.cover(state, (*parts, i)) for i in range(self._longest())))

    def choices(self, parts, out):
        if out.visited(self, parts):
            return
        for i in range(self._longest()):
            self.elem.choices((*parts, i), out)

    def _longest(self) -> int:
        return max(n for n, c in zip(self.lengths, self.counts) if c)

    def domain(self, parts, path):
        if not parts:
            return list(self.lengths)
        if parts[0] == "*":
            return self.elem.domain(parts[1:], path)
        raise _no_choice(self, parts, path)

    @_located
    def read(self, raw, path):
        if not isinstance(raw, ast.RawList):
            raise _err(path, "expected a list of copies, `[...]`",
                       f"allowed lengths: {_fmt_values(self.lengths)}")
        if len(raw.items) not in self.lengths:
            raise _err(path, f"{len(raw.items)} copies are not allowed here",
                       f"allowed lengths: {_fmt_values(self.lengths)}")
        i = self.lengths.index(len(raw.items))
        if self.counts[i] == 0:
            raise _err(path, f"{len(raw.items)} copies have no derivation here")
        return Rep(tuple(self.elem.read(item, _join(path, k)) for k, item in enumerate(raw.items)))


class PPick(_Tabled):
    __slots__ = ("k", "candidates", "labels", "subsets", "counts", "cum", "count", "_table")

    def __init__(self, k, candidates):
        self.k = k
        self.candidates = candidates  # tuple of Candidate
        self.labels = [c.label for c in candidates]
        self.subsets = tuple(itertools.combinations(range(len(candidates)), k))
        self.counts = [math.prod(candidates[i].scope.count for i in s) for s in self.subsets]
        self.cum = _cumulative(self.counts)
        self.count = self.cum[-1] if self.cum else 0
        self._table = None

    def _picked(self, subset, make):
        return Picked(tuple(Alt(self.candidates[i].label, make(self.candidates[i].scope)) for i in subset))

    def _sample(self, rng):
        return self._picked(self.subsets[_pick_index(self.cum, rng)], lambda s: s.sample(rng))

    def sample_per_choice(self, rng):
        live = [i for i, c in enumerate(self.counts) if c]
        return self._picked(self.subsets[live[rng.randrange(len(live))]], lambda s: s.sample_per_choice(rng))

    def unrank(self, r):
        i = bisect.bisect_right(self.cum, r)
        r -= self.cum[i - 1] if i else 0
        subset = self.subsets[i]
        digits = []
        for j in reversed(subset):
            scope = self.candidates[j].scope
            r, d = divmod(r, scope.count)
            digits.append(scope.unrank(d))
        digits.reverse()
        return Picked(tuple(Alt(self.candidates[j].label, v) for j, v in zip(subset, digits)))

    def rank(self, picked):
        if type(picked) is not Picked:
            raise ValueError("expected a Picked")
        labels = self.labels
        subset = tuple(labels.index(a.label) for a in picked.items)
        i = self.subsets.index(subset)
        r = 0
        for j, a in zip(subset, picked.items):
            scope = self.candidates[j].scope
            r = r * scope.count + scope.rank(a.node)
        return r + (self.cum[i - 1] if i else 0)

    def iterate(self):
        for subset, c in zip(self.subsets, self.counts):
            if c:
                for values in _product([self.candidates[j].scope for j in subset]):
                    yield Picked(tuple(Alt(self.candidates[j].label, v) for j, v in zip(subset, values)))

    # -- operations beside a derivation
    def positions(self, value, parts):
        yield parts, self, value
        for alt in value.items:
            scope = self.candidates[self.labels.index(alt.label)].scope
            yield from scope.inner_positions(alt.node, (*parts, alt.label))

    def conform(self, old, rng):
        labels = self.labels
        if isinstance(old, Picked) and all(lab in labels for lab in old.labels()):
            subset = tuple(sorted(labels.index(lab) for lab in old.labels()))
            if subset in self.subsets and self.counts[self.subsets.index(subset)]:
                return Picked(tuple(Alt(a.label, self.candidates[labels.index(a.label)].scope.conform(a.node, rng))
                                    for a in sorted(old.items, key=lambda a: labels.index(a.label))))
        return self.sample(rng)

    def change_one(self, value, rng):
        """One picked candidate swapped for another (or a new pick if no swap fits)."""
        labels = self.labels
        chosen = [labels.index(a.label) for a in value.items]
        swaps = [(out, inn) for out in chosen for inn in range(len(labels))
                 if inn not in chosen and self.counts[self.subsets.index(
                     tuple(sorted(set(chosen) - {out} | {inn})))]]
        if not swaps:
            return self.resample_other(value, rng)
        out, inn = swaps[rng.randrange(len(swaps))]
        old = {labels.index(a.label): a for a in value.items}
        items = []
        for j in sorted(set(chosen) - {out} | {inn}):
            c = self.candidates[j]
            items.append(Alt(c.label, c.scope.conform(old[j].node, rng)) if j in old
                         else Alt(c.label, c.scope.sample(rng)))
        return Picked(tuple(items))

    def changes(self, value, rng):
        """Every other subset: the candidates it keeps keep their insides, new ones are drawn."""
        labels = self.labels
        old = {labels.index(a.label): a for a in value.items}
        current = tuple(sorted(old))
        for i, subset in enumerate(self.subsets):
            if self.counts[i] and subset != current:
                yield Picked(tuple(Alt(self.candidates[j].label, self.candidates[j].scope.conform(old[j].node, rng))
                                   if j in old else Alt(self.candidates[j].label, self.candidates[j].scope.sample(rng))
                                   for j in subset))

    def nearest(self, want):
        return self.conform(want, random.Random(0))

    def draw(self, index):
        subset = self.subsets[_draw_live(index, self.counts)]
        return Picked(tuple(Alt(c.label, c.scope.draw(index)) for c in (self.candidates[i] for i in subset)))

    # -- tokens: k times (a candidate, in the written order, then the union of the candidates' scopes)
    kind = "pick"

    def _shape(self, name, memo):
        live = [s for s, c in zip(self.subsets, self.counts) if c]
        used = sorted({i for s in live for i in s})
        inner = None
        for i in used:
            inner = merge(inner, self.candidates[i].scope.shape("", memo))
        return Shape("pick", (slot("pick", name, [self.labels[i] for i in used], len(live) > 1),),
                     ((("", "scope"), inner or Shape("scope")),), self.k)

    def encode(self, picked, shape, out):
        inner = shape.children[0][1]
        for a in picked.items:
            _emit(out, shape.slots[0], a.label)
            self.candidates[self.labels.index(a.label)].scope.encode(a.node, inner, out)
        out.extend([None] * (shape.size - (shape.size // shape.copies) * self.k if shape.copies else 0))

    def decode(self, shape, ids):
        """Candidates one at a time, each after the one before (a pick's order is the written one)."""
        s, inner = shape.slots[0], shape.children[0][1]
        live = [sub for sub, c in zip(self.subsets, self.counts) if c]
        chosen, items = (), []
        for j in range(self.k):
            following = sorted({sub[j] for sub in live if sub[:j] == chosen})
            i = following[(yield from choose(ids, s, [s.key(self.labels[x]) for x in following]))]
            chosen += (i,)
            c = self.candidates[i]
            items.append(Alt(c.label, (yield from c.scope.decode(inner, ids))))
        yield from pad(shape.size - (shape.size // shape.copies) * self.k if shape.copies else 0)
        return Picked(tuple(items))

    def cover(self, state, parts):
        """The live subset of the candidates least taken here so far."""
        live = [i for i, c in enumerate(self.counts) if c]
        best = min(live, key=lambda i: (sum(state.times(parts, self.labels[j]) for j in self.subsets[i]), i))
        for j in self.subsets[best]:
            state.taken(parts, self.labels[j])
        return Picked(tuple(Alt(self.labels[j], self.candidates[j].scope.cover(state, (*parts, self.labels[j])))
                            for j in self.subsets[best]))

    def choices(self, parts, out):
        if out.visited(self, parts):
            return
        for i, c in enumerate(self.counts):
            if c:
                for j in self.subsets[i]:
                    out.add((parts, _hashable(self.labels[j])))
                    self.candidates[j].scope.choices((*parts, self.labels[j]), out)

    def domain(self, parts, path):
        if not parts:
            return list(self.labels)
        for c in self.candidates:
            if c.label == parts[0]:
                return c.scope.domain(parts[1:], path)
        raise _no_choice(self, parts, path)

    @_located
    def read(self, raw, path):
        labels = self.labels
        if not isinstance(raw, ast.RawList) or not all(isinstance(i, ast.RawLabel) for i in raw.items):
            raise _err(path, f"expected a list of {self.k} chosen candidates", f"candidates: {', '.join(labels)}")
        if len(raw.items) != self.k:
            raise _err(path, f"pick {self.k}, got {len(raw.items)}", f"candidates: {', '.join(labels)}")
        chosen = []
        for item in raw.items:
            if item.name not in labels:
                raise _err(path, f"`{item.name}` is not a candidate here",
                           did_you_mean(item.name, labels) or f"candidates: {', '.join(labels)}")
            chosen.append((labels.index(item.name), item))
        if len({i for i, _ in chosen}) != len(chosen):
            raise _err(path, "a candidate is picked twice; picks are distinct")
        chosen.sort(key=lambda t: t[0])
        return Picked(tuple(Alt(labels[i], self.candidates[i].scope.read(item.node, _join(path, labels[i])))
                            for i, item in chosen))


class Covering:
    """What the cover derivations have taken so far at each place (see `Space.cover`):
    each new one takes, everywhere, what was taken least."""

    def __init__(self):
        self.counts: dict = {}
        self.reached: set = set()

    def times(self, place, value) -> int:
        return self.counts.get((place, _hashable(value)), 0)

    def least(self, place, values):
        return min(values, key=lambda v: self.times(place, v))

    def taken(self, place, value):
        key = (place, _hashable(value))
        self.counts[key] = self.counts.get(key, 0) + 1
        self.reached.add(key)

    def take(self, place, values):
        value = self.least(place, values)
        self.taken(place, value)
        return value


class Wanted(set):
    """The (place, choice) pairs a cover must reach; each plan is walked once per place."""

    def __init__(self):
        super().__init__()
        self._seen: set = set()

    def visited(self, plan, parts) -> bool:
        key = (id(plan), parts)
        if key in self._seen:
            return True
        self._seen.add(key)
        return False


def _hashable(value):
    """A value as a set member that keeps 1, 1.0 and true apart."""
    return type_name(value), value


def _other_index(counts, current, rng):
    """A live index other than `current`, drawn uniformly."""
    live = [i for i, c in enumerate(counts) if c and i != current]
    return live[rng.randrange(len(live))]


def _draw_live(index, counts, key=None) -> int:
    """The index of an option that has derivations, in the order of `key` (else as
    written), from `index(n)` (0 <= it < n; asked only when there is a choice)."""
    live = sorted((i for i, c in enumerate(counts) if c), key=key)
    return live[index(len(live))] if len(live) > 1 else live[0]


def _no_choice(plan, parts, path):
    """The error for a restriction path that names nothing here."""
    head = parts[0]
    names = getattr(plan, "names", ())
    return NasError(f"`{path}`: no choice `{head}` here", None,
                    did_you_mean(str(head), names) or (f"names here: {', '.join(names)}" if names else None))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(a, b) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool) and isinstance(a, str) == isinstance(b, str)


def _off(value, want) -> tuple:
    """How far a number is from the wished one: crossing to 0 or below from a
    positive wish first (a width of 0 means "no layer"), then relative distance."""
    return int(want > 0 and value <= 0), abs(value - want) / max(abs(want), 1)


def _nearest_value(values, want):
    """The allowed value nearest `want` (see `nasdsl.runtime.tickets.nearest`)."""
    if want is None:
        return values[0]
    if isinstance(values, range) and type(want) is int and want in values:
        return want
    if not isinstance(values, range):
        for v in values:
            if _same(v, want):
                return v
    if not _number(want):
        return values[0]
    if isinstance(values, range):  # the grid points either side of `want`, clamped
        k = math.floor((want - values.start) / values.step)
        candidates = {values[min(max(i, 0), len(values) - 1)] for i in (k, k + 1)}
    else:
        candidates = [v for v in values if _number(v)]
    if not candidates:
        return values[0]
    return min(candidates, key=lambda v: (*_off(v, want), v))


def _product(sites):
    """Lazy cartesian product of the sites' enumerations, the last site varying
    fastest. Each level gets a fresh iterator; a loop rather than recursion, since a
    repetition may have a thousand copies."""
    if not sites:
        yield []
        return
    iterators, values = [sites[0].iterate()], []
    while iterators:
        for v in iterators[-1]:
            values.append(v)
            if len(values) == len(sites):
                yield list(values)
                values.pop()
                continue
            iterators.append(sites[len(values)].iterate())
            break
        else:  # this level is exhausted: advance the one above
            iterators.pop()
            if values:
                values.pop()


EMPTY = PScope((Variant((), (), 1.0),))  # a scope without choices (and count 1)


# ---- building plans -----------------------------------------------------------------
class Planner:
    """Builds and memoises plans for one space with bound parameters."""

    def __init__(self, rules: dict, params: dict, main_file: str):
        self.rules = rules
        self.params = params
        self.main_file = main_file
        self.memo: dict = {}
        self.active: list = []  # (rule, args) being planned, outermost first
        self.depth = 0  # nesting of `sites` calls
        self.rejected_by = None  # the last `require` that excluded something
        self._sites_in: dict = {}  # id(value expression) -> its choice sites (the rules hold the expressions)
        self._splits: dict = {}  # rule name -> split_rule(rule)

    # -- rules
    def rule_scope(self, name: str, args: tuple, pos) -> PScope:
        key = (name, args)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        rule = self.rules[name]
        if key in self.active:
            shown = ", ".join(show(a) for a in args)
            raise NasError(f"rule `{name}({shown})` derives itself again with the same arguments: "
                           f"the space would be infinite", pos,
                           "bound the recursion with a parameter that shrinks, e.g. `depth - 1`")
        self.active.append(key)
        try:
            plan = self._build_rule(rule, args)
        finally:
            self.active.pop()
        self.memo[key] = plan
        return plan

    def _build_rule(self, rule: ir.Rule, args: tuple) -> PScope:
        """A rule's scope. Its `where` choices fall into independent groups (`split_rule`):
        with one group, every setting of it is a variant, as a scope's variants always
        are; with several, each group is a spliced site of its own, so that the rule
        counts as their product and a mutation changes one group."""
        names = rule_names(self.params, self.main_file, rule, args)
        key = (rule.name, args)
        split = self._split(rule)
        if len(split.groups) < 2:
            return PScope(self._variants(rule, rule.wheres, rule.requires, names, (rule.body,)), key=key)
        settings = self._settings(rule, split.plain_wheres, split.plain_requires, names)
        if not settings:
            return PScope((), key=key)
        bound = settings[0][2].names
        sites = []
        for i, group in enumerate(split.groups):
            plan = PScope(self._variants(rule, group.wheres, group.requires, bound, group.units))
            if not plan.count:
                return PScope((), key=key)
            sites.append(Site(f"group {i}", plan, spliced=True))
        for unit in split.free_units:
            sites.extend(self.sites(unit, Scope(bound)))
        self._check_bits(rule, sites)
        return PScope((Variant((), named_alt(sites), 1.0, split.order),), key=key)

    def _variants(self, rule, wheres, requires, names, units) -> tuple:
        """A variant per setting of the `where` choices, with the sites of `units` under it."""
        variants = []
        for assignment, weight, scope in self._settings(rule, wheres, requires, names):
            sites = [site for unit in units for site in self.sites(unit, scope)]
            if assignment and sites and sites[0].name is None:
                sites = [Site("alt", sites[0].plan)] + sites[1:]
            if math.prod(s.plan.count for s in sites) == 0:
                continue
            self._check_bits(rule, sites)
            variants.append(Variant(assignment, tuple(sites), weight))
        return tuple(variants)

    @staticmethod
    def _check_bits(rule, sites):
        # the product's bits are at most the sum of its factors': refuse before multiplying
        # (a rule using another twice doubles the digits; 40 such rules would not finish)
        if sum(s.plan.count.bit_length() for s in sites) > MAX_COUNT_BITS + len(sites):
            raise NasError(f"rule `{rule.name}` has more than 10**{int(MAX_COUNT_BITS * 0.30103)} derivations",
                           rule.pos, "a rule that uses another twice squares its count; "
                           "is a chain of such rules meant?")

    def _split(self, rule: ir.Rule) -> "Split":
        found = self._splits.get(rule.name)
        if found is None:
            found = self._splits[rule.name] = split_rule(rule)
        return found

    def _settings(self, rule, wheres, requires, names):
        """(assignment, weight, scope) for every setting of the choices in `wheres` that
        passes `requires`. A choice is made only where evaluating the `where`s reaches
        it: one in the branch of an `if` that is not taken is no choice (and no count)."""
        written = {s: i for i, s in enumerate(s for w in rule.wheres for s in w.sites)}
        found = []
        todo = [({}, 1.0)]
        while todo:
            chosen, weight = todo.pop()
            bound = dict(names)
            try:
                for w in wheres:
                    value = evaluate(w.value, Scope(bound, _Choosing(chosen)))
                    if value is SYMBOLIC and w.sites:
                        raise NasError(f"`where {w.name}` depends on a parameter of shared rule "
                                       f"`{rule.name}`", rule.pos, "a shared rule is derived once for all its uses")
                    bound[w.name] = value
            except _Unchosen as unchosen:  # the evaluation reached a choice: one branch per value
                values, weights = self.domain(self.sites_in(w.value)[unchosen.site], Scope(bound, chosen),
                                              enumerated=True)
                for i in reversed(range(len(values))):
                    todo.append(({**chosen, unchosen.site: values[i]}, weight * (weights[i] if weights else 1.0)))
                if len(found) + len(todo) > MAX_ENUMERATED:
                    raise NasError(f"rule `{rule.name}`: more than {MAX_ENUMERATED} combinations of "
                                   f"`where` choices that depend on each other", rule.pos,
                                   "choices used together (in one `where`, `require` or call) are enumerated "
                                   "together; a choice used on its own counts as a factor")
                continue
            scope = Scope(bound)
            if self._requires_hold(rule, requires, scope):
                found.append((tuple(sorted(chosen.items(), key=lambda item: written[item[0]])), weight, scope))
        return found

    def _requires_hold(self, rule, requires, scope) -> bool:
        for r in requires:
            value = evaluate(r, scope)
            if value is SYMBOLIC:
                raise NasError(f"`require` in shared rule `{rule.name}` depends on its parameters",
                               getattr(r, "pos", None), "a shared rule is derived once for all its uses")
            if not isinstance(value, bool):
                raise NasError(f"`require` must be true or false, got `{show(value)}`", getattr(r, "pos", None))
            if not value:
                self.rejected_by = r
                return False
        return True

    # -- choice domains
    def domain(self, site, scope: Scope, enumerated: bool):
        """The values of a VChoice / VRange site, evaluated in `scope`."""
        if isinstance(site, ir.VChoice):
            values = tuple(evaluate(v, scope) for v in site.values)
            for v, expr in zip(values, site.values):
                if v is SYMBOLIC:
                    raise NasError("a choice's values cannot depend on a shared rule's parameters",
                                   getattr(expr, "pos", None) or site.pos,
                                   "a shared rule is derived once for all its uses")
            seen: dict = {}  # equal values hash alike, so one lookup finds 1.0 after 1
            for v, expr in zip(values, site.values):
                pos = getattr(expr, "pos", None) or site.pos
                if isinstance(v, float) and not math.isfinite(v):  # no derivation text reads back as inf or nan
                    raise NasError(f"a choice's value must be a finite number, got `{show(v)}`", pos)
                # equal values of different types (1, 1.0, true) would make derivations that
                # compare equal but read and rank differently: they are one value
                same = seen.get(v, _NONE)
                if same is not _NONE:
                    raise NasError(f"the choice lists `{show(v)}` twice" if show(same) == show(v) else
                                   f"the choice lists `{show(same)}` and `{show(v)}`, which are equal", pos)
                seen[v] = v
            return values, site.weights
        lo, hi = evaluate(site.lo, scope), evaluate(site.hi, scope)
        step = evaluate(site.step, scope) if site.step is not None else 1
        for v in (lo, hi, step):
            if v is SYMBOLIC:
                raise NasError("a range cannot depend on a shared rule's parameters", site.pos)
            if isinstance(v, bool) or not isinstance(v, int):
                raise NasError(f"a range needs integer bounds, got `{show(v)}` ({type_name(v)})", site.pos)
        if step <= 0:
            raise NasError(f"a range's step must be positive, got {step}", site.pos)
        if hi < lo:
            raise NasError(f"the range {lo}..{hi} is empty", site.pos)
        if (hi - lo) // step >= MAX_RANGE:
            raise NasError(f"the range {lo}..{hi} has more than {MAX_RANGE} values", site.pos)
        values = range(lo, hi + 1, step)
        if enumerated and len(values) > MAX_ENUMERATED:
            raise NasError(f"the range {lo}..{hi} has {len(values)} values; at most {MAX_ENUMERATED} "
                           f"can feed rule arguments or `where` bindings", site.pos)
        return values, None

    def sites_in(self, expr) -> dict:
        """`ir.sites_in`, once per expression: it is asked again for every argument tuple."""
        found = self._sites_in.get(id(expr))
        if found is None:
            found = self._sites_in[id(expr)] = ir.sites_in(expr)
        return found

    def _combinations(self, sites, scope: Scope, what: str, pos):
        """Every assignment of value sites as ({site: value}, weight), refused before
        it is built when there would be more than MAX_ENUMERATED."""
        combos = [({}, 1.0)]
        for site in sites:
            values, weights = self.domain(site, scope, enumerated=True)
            if len(combos) * len(values) > MAX_ENUMERATED:
                raise NasError(f"more than {MAX_ENUMERATED} combinations of {what}", pos or site.pos)
            combos = [({**c, site.site: v}, w * (weights[i] if weights else 1.0))
                      for c, w in combos for i, v in enumerate(values)]
        return combos

    # -- network expressions → site lists
    def sites(self, node, scope: Scope) -> list:
        """The Sites of a network expression. Every recursion of the
        planner passes through here, so this is where its depth is bounded."""
        if self.depth >= MAX_DEPTH:
            name, args = self.active[-1]
            call = f"{name}({', '.join(show(a) for a in args)})" if args else name
            raise NasError(f"derivations nest more than {MAX_DEPTH} levels deep (in `{call}`)",
                           getattr(node, "pos", None) or self.rules[name].pos,
                           "is a recursion unbounded? a recursive rule needs an argument that moves "
                           "toward a case without recursion")
        self.depth += 1
        try:
            return self._sites(node, scope)
        finally:
            self.depth -= 1

    def _sites(self, node, scope: Scope) -> list:
        kind = type(node)
        if kind is ir.Seq or kind is ir.Merge:  # transparent: their sites are the scope's
            out = []
            for item in node.items if kind is ir.Seq else node.branches:
                out.extend(self.sites(item, scope))
            return out
        if kind is ir.RuleCall:
            if node.shared:
                return []
            plan = self.call_plan(node, scope)
            return [] if plan is EMPTY or (isinstance(plan, PScope) and plan.empty) else [Site(node.site, plan)]
        if kind is ir.PrimCall:
            prim = primitives.get(node.prim)
            found, direct = {}, {}
            for arg_name, value in node.args:
                inside = self.sites_in(value)
                found.update(inside)
                if not inside:  # no choice inside: its value is known now
                    _check_arg(prim.arg(arg_name), node.prim, evaluate(value, scope), value)
                elif isinstance(value, (ir.VChoice, ir.VRange)):
                    direct[value.site] = prim.arg(arg_name)
            values = []
            for name in node.arg_sites:
                vals, weights = self.domain(found[name], scope, enumerated=False)
                if name in direct:
                    for v in vals if isinstance(vals, tuple) else vals[:1]:
                        _check_arg(direct[name], node.prim, v, found[name])
                values.append(Site(name, PValue(vals, weights)))
            return [Site(node.site, PScope((Variant((), tuple(values), 1.0),)))] if values else []
        if kind is ir.NodeRef:
            return []
        if kind is ir.Alt:
            options = tuple(Option(o.label, o.weight, self.scope_plan(o.body, scope)) for o in node.options)
            return [Site(node.site, PAlt(options))]
        if kind is ir.Repeat:
            return self.repeat(node, scope)
        if kind is ir.If:
            test = evaluate(node.test, scope)
            if test is SYMBOLIC:
                if self._has_choices(node.then) or self._has_choices(node.orelse):
                    raise NasError("this condition depends on a shared rule's parameters and its branches "
                                   "hold choices", node.pos, "a shared rule is derived once for all its uses")
                return []
            if not isinstance(test, bool):
                raise NasError(f"a condition must be true or false, got `{show(test)}`", node.pos)
            return self.sites(node.then if test else node.orelse, scope)
        if kind is ir.Branch:
            return self.sites(node.body, scope) if node.body is not None else []
        if kind is ir.Pick:
            return [Site(node.site, self.pick(node, scope))]
        if kind is ir.Dag:
            out = []
            for name, branch in node.nodes:
                plan = self.scope_plan(branch, scope)
                if not plan.empty:
                    out.append(Site(name, plan))
            for b in node.outputs:
                out.extend(self.sites(b, scope))
            return out
        raise TypeError(kind)

    def scope_plan(self, body, scope: Scope) -> PScope:
        sites = tuple(self.sites(body, scope))
        if not sites:
            return EMPTY
        return PScope((Variant((), sites, 1.0),))

    def call_plan(self, node: ir.RuleCall, scope: Scope):
        rule = self.rules[node.rule]
        if not node.arg_sites:
            args = tuple(evaluate(a, scope) for a in node.args)
            return _collapse(self.rule_scope(node.rule, args, node.pos))
        variants = []
        for choices, weight in self._arg_assignments(node, scope):
            args = tuple(evaluate(a, Scope(scope.names, choices)) for a in node.args)
            callee = self.rule_scope(node.rule, args, node.pos)
            own = tuple((s, choices[s]) for s in node.arg_sites)
            for v in callee.variants:
                clash = {n for n, _ in own} & variant_names(v)
                if clash:
                    raise NasError(f"`{node.rule}` has a choice named `{clash.pop()}`, like its parameter",
                                   node.pos, f"rename the site inside `{rule.name}` (`as NAME`)")
                variants.append(Variant(own + v.assignment, named_alt(v.sites), weight * v.weight, v.order))
        return PScope(tuple(variants))

    def _arg_assignments(self, node, scope):
        found = {site: e for a in node.args for site, e in self.sites_in(a).items()}
        return self._combinations([found[name] for name in node.arg_sites], scope, "argument choices", node.pos)

    def repeat(self, node: ir.Repeat, scope: Scope):
        if isinstance(node.count, (ir.VChoice, ir.VRange)):
            lengths, weights = self.domain(node.count, scope, enumerated=True)
        else:
            n = evaluate(node.count, scope)
            if n is SYMBOLIC:
                if self._has_choices(node.body):
                    raise NasError("this repetition's count depends on a shared rule's parameters and its "
                                   "body holds choices", node.pos)
                return []
            lengths, weights = (n,), None
        for n in lengths:
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise NasError(f"a repetition count must be a whole number >= 0, got `{show(n)}`", node.pos)
            if n > MAX_REPEAT:
                raise NasError(f"a repetition of {n} copies; at most {MAX_REPEAT} are allowed", node.pos)
        body = node.body
        if isinstance(body, ir.RuleCall):
            elem = EMPTY if body.shared else self.call_plan(body, scope)
        else:
            elem = self.scope_plan(body, scope)
        if isinstance(elem, PScope) and elem.empty and len(lengths) == 1:
            return []
        if elem.count > 1 and max(lengths) * elem.count.bit_length() > MAX_COUNT_BITS:
            raise NasError(f"this repetition alone has more than 10**{int(MAX_COUNT_BITS * 0.30103)} "
                           f"derivations", node.pos)
        return [Site(node.site, PRepeat(tuple(lengths), tuple(weights) if weights else None, elem))]

    def pick(self, node: ir.Pick, scope: Scope):
        k = evaluate(node.k, scope)
        if isinstance(k, bool) or not isinstance(k, int):
            raise NasError(f"pick needs a whole number, got `{show(k)}`", node.pos)
        n = len(node.candidates)
        if not 0 <= k <= n:
            raise NasError(f"cannot pick {k} of {n} candidates", node.pos)
        if math.comb(n, k) > MAX_ENUMERATED:
            raise NasError(f"picking {k} of {n} gives {math.comb(n, k)} subsets; at most {MAX_ENUMERATED}",
                           node.pos)
        candidates = tuple(Candidate(label, self.scope_plan(branch, scope)) for label, branch in node.candidates)
        return PPick(k, candidates)

    def _has_choices(self, node) -> bool:
        return has_choices(node, self._rules_with_choices)

    @functools.cached_property
    def _rules_with_choices(self) -> set:
        """The rules whose derivations can hold choices: those with choices of their
        own, then their callers (a worklist, so a long chain of rules is no recursion)."""
        callers: dict = {name: set() for name in self.rules}
        found = set()
        for name, rule in self.rules.items():
            for callee in ir.calls(rule.body):
                callers[callee].add(name)
            if any(w.sites for w in rule.wheres) or has_choices(rule.body, set()):
                found.add(name)
        todo = list(found)
        while todo:
            for caller in callers[todo.pop()]:
                if caller not in found:
                    found.add(caller)
                    todo.append(caller)
        return found


# ---- independent groups of a rule's choices ------------------------------------------
class _Unchosen(Exception):
    """Evaluating reached a choice not made yet (see Planner._settings)."""

    def __init__(self, site):
        self.site = site


class _Choosing(dict):
    """The choices made so far; reading one not made raises _Unchosen."""

    def __missing__(self, site):
        raise _Unchosen(site)


@attrs.frozen
class Group:
    """`where` choices that depend on each other, and what reads them."""

    wheres: tuple  # the `where`s whose values depend on the group's choices, in written order
    requires: tuple  # the `require`s that read them
    units: tuple  # the parts of the body that read them, in written order


@attrs.frozen
class Split:
    """A rule's choices in independent groups (see `split_rule`)."""

    groups: tuple  # of Group, by their first choice as written
    plain_wheres: tuple  # `where`s without choices
    plain_requires: tuple  # `require`s that read no choice
    free_units: tuple  # parts of the body that read no `where` choice
    order: dict = attrs.field(eq=False)  # site name -> its place in the rule's node: `where` choices, then the body's


def split_rule(rule: ir.Rule) -> Split:
    """Two `where` choices belong to one group when one expression reads both: a
    `where` (through the names it reads), a `require`, or one part of the body (an
    item of its sequence or merge). Choices of different groups are independent,
    so the rule's count is a product over groups instead of a sum over every joint
    setting, and ten 3-way choices are thirty values, not 59,049 variants."""
    root: dict = {}

    def find(site):
        while root[site] != site:
            root[site] = site = root[root[site]]
        return site

    def join(sites):
        sites = sorted(sites, key=written.__getitem__)
        for site in sites[1:]:
            root[find(site)] = find(sites[0])

    written = {site: i for i, site in enumerate(site for w in rule.wheres for site in w.sites)}
    depends: dict = {}  # where name -> the choices its value depends on
    for w in rule.wheres:
        for site in w.sites:
            root[site] = site
        depends[w.name] = frozenset(w.sites).union(*(depends.get(n, ()) for n in _names_read(w.value)))
        join(depends[w.name])

    def reads(node) -> frozenset:
        return frozenset().union(*(depends.get(n, ()) for n in _names_read(node)))

    requires = [(r, reads(r)) for r in rule.requires]
    units = [(u, reads(u)) for u in _units(rule.body)]
    for _, sites in requires + units:
        join(sites)
    firsts = sorted({find(site) for site in written}, key=written.__getitem__)

    def of(first, pairs):
        return tuple(x for x, sites in pairs if sites and find(next(iter(sites))) == first)

    groups = tuple(Group(of(first, [(w, depends[w.name]) for w in rule.wheres]), of(first, requires),
                         of(first, units)) for first in firsts)
    order = dict(written)
    for unit, _ in units:
        for name in _scope_site_names(unit):
            order.setdefault(name, len(order))
    return Split(groups, tuple(w for w in rule.wheres if not depends[w.name]),
                 tuple(r for r, sites in requires if not sites), tuple(u for u, sites in units if not sites), order)


def _names_read(node) -> set:
    return {n.name for n in ir.walk(node) if type(n) is ast.Var}


def _units(node):
    """The parts of a body whose sites sit side by side in its node (what `Planner._sites` concatenates)."""
    kind = type(node)
    if kind is ir.Seq or kind is ir.Merge:
        for item in node.items if kind is ir.Seq else node.branches:
            yield from _units(item)
    elif kind is ir.Branch:
        if node.body is not None:
            yield from _units(node.body)
    else:
        yield node


def _scope_site_names(node):
    """The names of the sites a body part can put in its scope's node, as written."""
    kind = type(node)
    if kind is ir.Seq or kind is ir.Merge or kind is ir.Branch:
        for unit in _units(node):
            yield from _scope_site_names(unit)
    elif kind is ir.If:
        yield from _scope_site_names(node.then)
        yield from _scope_site_names(node.orelse)
    elif kind is ir.Dag:
        for name, _ in node.nodes:
            yield name
        for branch in node.outputs:
            yield from _scope_site_names(branch)
    elif kind is ir.Alt:
        yield node.site if node.site is not None else "alt"
    elif kind in (ir.RuleCall, ir.PrimCall, ir.Repeat, ir.Pick):
        yield node.site


def variant_names(v: Variant) -> set:
    """The names a variant puts in its node."""
    names = {n for n, _ in v.assignment}
    for s in v.sites:
        names |= s.plan.name_set if s.spliced else {s.name}
    return names


def named_alt(sites) -> tuple:
    """A callee's whole-body alternative (name None) as a site among others: `alt`."""
    return tuple(Site("alt", s.plan) if s.name is None else s for s in sites)


def _collapse(scope: PScope):
    """A rule whose whole body is one alternative is represented by that Alt."""
    if len(scope.variants) == 1:
        v = scope.variants[0]
        if not v.assignment and len(v.sites) == 1 and v.sites[0].name is None:
            return v.sites[0].plan
    if scope.empty:
        return EMPTY
    return scope


def _check_arg(arg: primitives.Arg, prim: str, value, expr):
    """A primitive's argument must have its declared type, and be an allowed symbol or
    within its declared range (what the module would otherwise fail on)."""
    if value is SYMBOLIC:
        return
    what = f"argument `{arg.name}` of `{prim}`"
    pos = getattr(expr, "pos", None)
    value = coerce(value, arg.type, what, pos)
    problem = arg.problem(value)
    if problem:
        raise NasError(f"{what} {problem}; got `{show(value)}`", pos,
                       did_you_mean(value, arg.allowed) if arg.allowed else None)


def has_choices(node, rules_with_choices: set) -> bool:
    """Whether an ir expression can hold choice sites (shared calls hold none here)."""
    return any(_is_choice(n, rules_with_choices) for n in ir.walk(node, _not_a_call))


def _not_a_call(node) -> bool:
    """A call's arguments are its own business: `_is_choice` answers for them."""
    return type(node) is not ir.RuleCall and type(node) is not ir.PrimCall


def _is_choice(node, rules_with_choices: set) -> bool:
    kind = type(node)
    if kind is ir.Alt or kind is ir.Pick or kind is ir.VChoice or kind is ir.VRange:
        return True
    if kind is ir.PrimCall:
        return bool(node.arg_sites)
    if kind is ir.RuleCall:
        return not node.shared and (bool(node.arg_sites) or node.rule in rules_with_choices)
    return False


class PFinite(_Plan):
    """A finite space's plan: the derivations its `only` statements keep, in the
    grammar's rank order. It counts, ranks, samples, reads and draws among them. The
    rest (positions, token layout, a supernet's sizing) is the grammar's, since every
    member is a derivation of it."""

    __slots__ = ("grammar", "members", "count", "_ranks")

    def __init__(self, grammar, members):
        self.grammar = grammar
        self.members = tuple(members)  # of Node, sorted by the grammar's rank
        self.count = len(self.members)
        self._ranks = {m: i for i, m in enumerate(self.members)}

    def __getattr__(self, name):  # what is not about membership is the grammar's
        return getattr(self.grammar, name)

    def sample(self, rng):
        return self.members[rng.randrange(self.count)]

    sample_per_choice = sample  # a finite set has no per-choice weights

    def unrank(self, r):
        return self.members[r]

    def rank(self, node):
        return self._ranks[node]

    def iterate(self):
        return iter(self.members)

    def draw(self, index):
        return self.members[index(self.count) if self.count > 1 else 0]

    def nearest(self, want):
        node = self.grammar.nearest(want)
        if node in self._ranks:
            return node
        target = Derivation(node)
        return min(self.members, key=lambda m: distance(Derivation(m), target))

    @_located
    def read(self, raw, path):
        node = self.grammar.read(raw, path)
        if node not in self._ranks:
            raise _err(path, f"is not one of the {self.count} derivations this space keeps",
                       "its `only` statements list them (`nasdsl sample` draws one)", raw)
        return node
