"""Sub-spaces: a finite set of a space's derivations, and the neighbourhoods that build them.

    near = space.neighbourhood(d, r=1)      # every derivation within distance 1 of d, d first
    pocket = SubSpace.of(space, near) | SubSpace.of(space, space.neighbourhood(e))
    pocket.count, e in pocket, pocket.sample(seed=0), list(pocket)

LISSNAS's shrunk spaces are such sets: pockets of good networks around seeds, grown
from neighbourhoods. A SubSpace keeps its members in the space's rank order, so its
enumeration, its sampling by seed and its text are reproducible.

A neighbourhood is found breadth-first. Each step changes one position of a
derivation: a value, or one of a scope's, an alternative's, a repetition's or a
pick's own choices, with everything inside kept where it is still valid (`changes`
in nasdsl.space.plan). Only derivations within distance r are kept.

Why this finds every derivation within r: change the outermost differing choice
first. What that change forces differs from d in every member with that choice, so
each derivation on the way is within r too. A step's distance is counted on the
subtree it changes. A derivation already at distance r is stepped only where it
holds paths that d lacks (a new copy, a new option's insides). Anywhere else, what a
change keeps within r is also one step from a derivation nearer d.
`tests/test_subspace.py` checks the result against brute force.
"""

from __future__ import annotations

import random

import attrs

from ..language import printer
from . import restrict as restriction
from .derivation import Derivation, choices_apart, flatten, replace_path
from .operations import positions

NEIGHBOURHOOD_LIMIT = 1_000_000  # members of one neighbourhood, refused beyond (a wide integer range)


def neighbourhood(space, d: Derivation, r: int = 1, limit: int = NEIGHBOURHOOD_LIMIT, seed: int = 0) -> list:
    """Every derivation of `space` within distance `r` of `d`, each once: `d` first,
    then by distance and by rank in the space. In a finite space, its members within r."""
    d = space.validate(d)
    near = neighbourhood_in(space.grammar_root, d, r, limit, seed)
    return [x for x in near if x in space] if space.finite else near


def neighbourhood_in(root, d: Derivation, r: int, limit: int = NEIGHBOURHOOD_LIMIT, seed: int = 0) -> list:
    """`neighbourhood` in the grammar whose plan is `root` (`d` one of its derivations)."""
    if not isinstance(r, int) or isinstance(r, bool) or r < 0:
        raise ValueError(f"a neighbourhood's radius is a whole number >= 0, got {r!r}")
    walk = _Walk(d.choices(), random.Random(seed))
    found = {d: 0}
    frontier = [(d, 0)]
    while frontier:
        reached = []
        for y, far in frontier:
            for z, z_far in walk.steps(root, y, far, r):
                if z not in found:
                    found[z] = z_far
                    reached.append((z, z_far))
                    if len(found) > limit:
                        raise ValueError(f"the neighbourhood of radius {r} has more than {limit:,} members")
        frontier = reached
    return sorted(found, key=lambda y: (found[y], root.rank(y.root)))


class _Walk:
    """One neighbourhood's steps. A step's distance is counted on the subtree it
    changes alone: the distance outside it does not move."""

    def __init__(self, own: dict, rng):
        self.own, self.rng = own, rng
        self._under: dict = {}  # prefix -> d's choices below it

    def under(self, prefix: str) -> dict:
        found = self._under.get(prefix)
        if found is None:
            dotted = prefix + "."
            found = self._under[prefix] = {p: v for p, v in self.own.items()
                                           if not prefix or p == prefix or p.startswith(dotted)}
        return found

    def steps(self, root, y: Derivation, far: int, r: int):
        """(derivation, its distance from d) for each change of one position of `y` within r."""
        for parts, plan, value in positions(root, y.root):
            prefix = ".".join(str(p) for p in parts)
            mine = self.under(prefix)
            here = dict(flatten(value, prefix))
            if far == r and here.keys() <= mine.keys():
                continue  # at the radius, only what d lacks (new copies, a new option's insides) may still change
            inside = choices_apart(here, mine)
            outside = far - inside
            for new in plan.changes(value, self.rng):
                total = outside + choices_apart(dict(flatten(new, prefix)), mine)
                if total <= r:
                    yield Derivation(replace_path(y.root, list(parts), new)), total


@attrs.frozen(eq=False)
class SubSpace:
    """A finite set of derivations of `space`, in its rank order.

    It counts, tests membership, enumerates and samples uniformly. `|` and `&` combine
    two sub-spaces of one space."""

    space: object
    members: tuple  # of Derivation, sorted by rank in `space`
    _ranks: dict = attrs.field(repr=False)  # Derivation -> its rank in `space`

    @classmethod
    def of(cls, space, derivations) -> "SubSpace":
        """The set of `derivations` (each validated against `space`; repeats count once)."""
        ranks = {}
        for d in derivations:
            if d not in ranks:
                ranks[d] = space.rank(d)  # a DerivationError for a non-member
        members = tuple(sorted(ranks, key=ranks.__getitem__))
        return cls(space, members, ranks)

    @property
    def count(self) -> int:
        return len(self.members)

    def __len__(self):
        return len(self.members)

    def __contains__(self, d) -> bool:
        return d in self._ranks

    def __iter__(self):
        return iter(self.members)

    def enumerate(self):
        return iter(self.members)

    def sample(self, seed=None, *, rng=None) -> Derivation:
        """One member, uniformly."""
        rng = rng if rng is not None else random.Random(seed)
        return self.members[rng.randrange(len(self.members))]

    def samples(self, n: int, seed=None) -> list:
        rng = random.Random(seed)
        return [self.sample(rng=rng) for _ in range(n)]

    def _same_space(self, other):
        if not isinstance(other, SubSpace) or other.space is not self.space:
            raise ValueError("sub-spaces combine only within one space")

    def __or__(self, other) -> "SubSpace":
        self._same_space(other)
        return SubSpace.of(self.space, self.members + other.members)

    def __and__(self, other) -> "SubSpace":
        self._same_space(other)
        return SubSpace.of(self.space, [d for d in self.members if d in other])

    def to_nas(self, radius_of: dict | None = None) -> str:
        """A self-contained `.nas` file whose derivations are exactly these: the space's
        grammar (imports inlined, parameters at their bound values) and one `only`
        statement per member. `radius_of` maps some members to a radius: their whole
        neighbourhood (in the space) is written as one `only within R of` statement,
        and the members it covers are not listed again."""
        covered, only = set(), []
        for d, r in (radius_of or {}).items():
            near = self.space.neighbourhood(d, r)
            if not set(near) <= set(self._ranks):
                raise ValueError(f"the neighbourhood of radius {r} of {d.text} is not inside this sub-space")
            covered.update(near)
            only.append((r, d.text))
        only.extend((0, d.text) for d in self.members if d not in covered)
        header, rules = restriction.grammar_of(self.space)
        return printer.module(header, rules, (), f"{self.space.name}: {self.count} derivations "
                              f"(a sub-space written by nasdsl)", only)

    def __eq__(self, other):
        return isinstance(other, SubSpace) and other.space is self.space and other.members == self.members

    def __hash__(self):
        return hash(self.members)

    def __repr__(self):
        return f"<SubSpace of {self.space.name}: {self.count} derivations>"
