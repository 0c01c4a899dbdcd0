"""Mutation and crossover of derivations, by walking a derivation beside its plan.

Both work on *positions*: places in a derivation where a choice was made, with
the plan that governs them. A mutation changes one position and keeps the rest
of the derivation wherever it is still valid; a crossover copies a subtree from
one parent into the other where both were derived from the same rule with the
same arguments (so the subtree is valid there by construction).

What a position is, and how a value is changed or kept valid, each plan kind
says for itself (`positions`, `change_one`, `conform` in `nasdsl.space.plan`).
"""

from __future__ import annotations

import random

from .derivation import Derivation, distance, replace_path
from .plan import PValue, Splice


def positions(plan, value, parts=()):
    """(parts, plan, value) for every choice site of a derivation, outermost first."""
    return plan.positions(value, parts)


# ---- mutation -------------------------------------------------------------------
def mutate(space, d: Derivation, rng: random.Random, kind: str = "choice") -> Derivation:
    """A neighbour of `d` in `space`.

    kind="choice": one choice is changed (a value, an alternative, a repetition
    count, a pick, a `where` value); everything else is kept where still valid
    and drawn fresh where not (new copies, a new alternative's insides).
    kind="subtree": one site is resampled uniformly among its other derivations.
    A space with a single derivation returns `d` unchanged. In a finite space
    (`only` statements) the mutant is a member: one of the nearest others.
    """
    d = space.validate(d)
    if kind not in ("choice", "subtree"):
        raise ValueError(f"unknown mutation kind `{kind}` (choice, subtree)")
    if space.finite:
        return _mutate_member(space, d, rng, kind)
    candidates = [(parts, plan, value) for parts, plan, value in positions(space.root, d.root)
                  if _mutable(plan, kind)]
    if not candidates:
        return d
    parts, plan, value = candidates[rng.randrange(len(candidates))]
    new = plan.resample_other(value, rng) if kind == "subtree" else plan.change_one(value, rng)
    return Derivation(replace_path(d.root, list(parts), new))


def _mutate_member(space, d, rng, kind):
    """In a finite space a mutation stays among its members: one of the nearest others
    (kind="choice"), or any other (kind="subtree"), uniformly."""
    others = [Derivation(m) for m in space.root.members if m != d.root]
    if not others:
        return d
    if kind == "choice":
        far = [distance(d, o) for o in others]
        others = [o for o, f in zip(others, far) if f == min(far)]
    return others[rng.randrange(len(others))]


def _mutable(plan, kind) -> bool:
    """A subtree with another derivation, or a choice with another live option."""
    if kind == "subtree" or type(plan) is PValue:
        return plan.count > 1
    return sum(1 for c in plan.counts if c) > 1  # variants, options, lengths or subsets


def conform(plan, old, rng):
    """A value of `plan` that keeps as much of `old` as is still valid."""
    return plan.conform(old, rng)


# ---- crossover -------------------------------------------------------------------------
def crossover(space, a: Derivation, b: Derivation, rng: random.Random) -> Derivation:
    """A child of `a` that carries one subtree of `b`.

    The subtree is taken where `b` derived the same rule with the same arguments
    as `a` did at the receiving position (the same plan), so the child is in the
    space by construction; positions may differ (`b`'s block in stage 2 can
    replace `a`'s block in stage 3 when their arguments agree). When the parents
    share no such position with different contents, the child is `a`. In a finite
    space a child outside it is replaced by the member nearest it.
    """
    a, b = space.validate(a), space.validate(b)
    from_b: dict = {}
    for parts, plan, value in positions(space.root, b.root):
        if parts and type(plan) is not PValue and type(plan) is not Splice:
            from_b.setdefault(id(plan), []).append(value)
    pairs = []
    for parts, plan, value in positions(space.root, a.root):
        if not parts or type(plan) is PValue:
            continue
        for donor in from_b.get(id(plan), ()):
            if donor != value:
                pairs.append((parts, donor))
    if not pairs:
        return a
    parts, donor = pairs[rng.randrange(len(pairs))]
    child = Derivation(replace_path(a.root, list(parts), donor))
    if space.finite and child not in space:  # the member nearest the child the grammar allows
        return Derivation(space.root.nearest(child.root))
    return child
