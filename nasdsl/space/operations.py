"""Mutation and crossover of derivations, by walking a derivation beside its plan.

Both work on *positions*: places in a derivation where a choice was made, with
the plan that governs them. A mutation changes one position and keeps the rest
of the derivation wherever it is still valid; a crossover copies a subtree from
one parent into the other where both were derived from the same rule with the
same arguments (so the subtree is valid there by construction).
"""

from __future__ import annotations

import random

from .derivation import Alt, Derivation, Node, Picked, Rep, replace_path
from .plan import PAlt, PPick, PRepeat, PScope, PValue


def positions(plan, value, parts=()):
    """(parts, plan, value) for every choice site of a derivation, outermost first."""
    yield parts, plan, value
    kind = type(plan)
    if kind is PScope:
        for site in plan.variants[plan._variant_of(value)].sites:
            yield from positions(site.plan, value[site.name], (*parts, site.name))
    elif kind is PAlt:
        scope = plan.options[plan._index(value.label)].scope
        for site in scope.variants[0].sites:
            yield from positions(site.plan, value.node[site.name], (*parts, site.name))
    elif kind is PRepeat:
        for i, item in enumerate(value.items):
            yield from positions(plan.elem, item, (*parts, i))
    elif kind is PPick:
        for alt in value.items:
            scope = plan.candidates[plan.labels.index(alt.label)].scope
            for site in scope.variants[0].sites:
                yield from positions(site.plan, alt.node[site.name], (*parts, alt.label, site.name))


# ---- mutation -------------------------------------------------------------------
def mutate(space, d: Derivation, rng: random.Random, kind: str = "choice") -> Derivation:
    """A neighbour of `d` in `space`.

    kind="choice": one choice is changed (a value, an alternative, a repetition
    count, a pick, a `where` value); everything else is kept where still valid
    and drawn fresh where not (new copies, a new alternative's insides).
    kind="subtree": one site is resampled uniformly among its other derivations.
    A space with a single derivation returns `d` unchanged.
    """
    d = space.validate(d)
    if kind not in ("choice", "subtree"):
        raise ValueError(f"unknown mutation kind `{kind}` (choice, subtree)")
    candidates = [(parts, plan, value) for parts, plan, value in positions(space.root, d.root)
                  if _mutable(plan, kind)]
    if not candidates:
        return d
    parts, plan, value = candidates[rng.randrange(len(candidates))]
    new = _resample_other(plan, value, rng) if kind == "subtree" else _change_one(plan, value, rng)
    return Derivation(replace_path(d.root, list(parts), new))


def _mutable(plan, kind) -> bool:
    """A subtree with another derivation, or a choice with another live option."""
    if kind == "subtree" or type(plan) is PValue:
        return plan.count > 1
    return sum(1 for c in plan.counts if c) > 1  # variants, options, lengths or subsets


def _resample_other(plan, value, rng):
    """Uniform over the site's derivations other than `value`."""
    old = plan.rank(value)
    r = rng.randrange(plan.count - 1)
    return plan.unrank(r + 1 if r >= old else r)


def _other_index(counts, current, rng):
    live = [i for i, c in enumerate(counts) if c and i != current]
    return live[rng.randrange(len(live))]


def _change_one(plan, value, rng):
    kind = type(plan)
    if kind is PValue:
        i = plan.rank(value)
        j = rng.randrange(plan.count - 1)
        return plan.values[j + 1 if j >= i else j]
    if kind is PScope:  # another combination of the scope's `where` / argument values
        variant = plan.variants[_other_index(plan.counts, plan._variant_of(value), rng)]
        return Node(variant.assignment + tuple((s.name, conform(s.plan, value.get(s.name), rng))
                                               for s in variant.sites))
    if kind is PAlt:
        o = plan.options[_other_index(plan.counts, plan._index(value.label), rng)]
        return Alt(o.label, conform(o.scope, value.node, rng))
    if kind is PRepeat:
        i = _other_index(plan.counts, plan.lengths.index(len(value.items)), rng)
        n = plan.lengths[i]
        kept = [conform(plan.elem, item, rng) for item in value.items[:n]]
        return Rep(tuple(kept + [plan.elem.sample(rng) for _ in range(n - len(kept))]))
    if kind is PPick:  # swap one picked candidate for another (or pick anew if none fits)
        labels = plan.labels
        chosen = [labels.index(a.label) for a in value.items]
        swaps = [(out, inn) for out in chosen for inn in range(len(labels))
                 if inn not in chosen and plan.counts[plan.subsets.index(
                     tuple(sorted(set(chosen) - {out} | {inn})))]]
        if not swaps:
            return _resample_other(plan, value, rng)
        out, inn = swaps[rng.randrange(len(swaps))]
        old = {labels.index(a.label): a for a in value.items}
        items = []
        for j in sorted(set(chosen) - {out} | {inn}):
            c = plan.candidates[j]
            items.append(Alt(c.label, conform(c.scope, old[j].node, rng)) if j in old
                         else Alt(c.label, c.scope.sample(rng)))
        return Picked(tuple(items))
    raise TypeError(kind)


def conform(plan, old, rng):
    """A value of `plan` that keeps as much of `old` as is still valid."""
    kind = type(plan)
    if kind is PValue:
        try:
            plan.rank(old)
            return old
        except (ValueError, TypeError):
            return plan.sample(rng)
    if kind is PScope:
        if not isinstance(old, Node):
            return plan.sample(rng)
        try:
            v = plan._variant_of(old)
        except KeyError:
            v = None
        if v is None or not plan.counts[v]:
            return plan.sample(rng)
        variant = plan.variants[v]
        return Node(variant.assignment + tuple((s.name, conform(s.plan, old.get(s.name), rng))
                                               for s in variant.sites))
    if kind is PAlt:
        if isinstance(old, Alt):
            for i, o in enumerate(plan.options):
                if o.label == old.label and plan.counts[i]:
                    return Alt(o.label, conform(o.scope, old.node, rng))
        return plan.sample(rng)
    if kind is PRepeat:
        if isinstance(old, Rep) and len(old.items) in plan.lengths \
                and plan.counts[plan.lengths.index(len(old.items))]:
            return Rep(tuple(conform(plan.elem, item, rng) for item in old.items))
        return plan.sample(rng)
    if kind is PPick:
        labels = plan.labels
        if isinstance(old, Picked) and all(lab in labels for lab in old.labels()):
            subset = tuple(sorted(labels.index(lab) for lab in old.labels()))
            if subset in plan.subsets and plan.counts[plan.subsets.index(subset)]:
                return Picked(tuple(Alt(a.label, conform(plan.candidates[labels.index(a.label)].scope, a.node, rng))
                                    for a in sorted(old.items, key=lambda a: labels.index(a.label))))
        return plan.sample(rng)
    raise TypeError(kind)


# ---- crossover -------------------------------------------------------------------------
def crossover(space, a: Derivation, b: Derivation, rng: random.Random) -> Derivation:
    """A child of `a` that carries one subtree of `b`.

    The subtree is taken where `b` derived the same rule with the same arguments
    as `a` did at the receiving position (the same plan), so the child is in the
    space by construction; positions may differ (`b`'s block in stage 2 can
    replace `a`'s block in stage 3 when their arguments agree). When the parents
    share no such position with different contents, the child is `a`.
    """
    a, b = space.validate(a), space.validate(b)
    from_b: dict = {}
    for parts, plan, value in positions(space.root, b.root):
        if parts and type(plan) is not PValue:
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
    return Derivation(replace_path(a.root, list(parts), donor))
