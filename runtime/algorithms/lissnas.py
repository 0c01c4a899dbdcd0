"""LISSNAS (Gopal et al., IJCAI 2023): locality-based iterative search-space shrinkage.

Structurally similar networks perform similarly, so good networks come in pockets.
Each round trains a uniform sample of the current space, takes its best members as
seeds, and makes the next space the union of the seeds' neighbourhoods (every
derivation within `--radius`). By default round 0's sample, each neighbourhood and
each next space hold one derivation per function, so no two trials train the same
network under different texts (`--no-distinct`, `--no-distinct-sample`). Members already
measured below the round's median are dropped. Rounds go on while the sampled mean
accuracy rises by more than `--min-gain`. The result is the round with the best mean
(ties: the later, smaller one). It is a finite space, which `nasdsl shrink -o` writes
as a `.nas` file.

The rounds are replayed from the store at every proposal. A round's sample is
fixed by the search seed and the round, and a derivation measured in an earlier
round is reused, not trained again. So a killed search resumes where it stopped.

The paper leaves the formulas unverified (`shared/design/lissnas.md`), so here:
- diversity is the mean distance between members (over up to 2,000 random pairs),
  and the mean number of distinct values per choice path among them;
- the shrink index is (1 - log|S| / log|S0|) x (mean(S) - mean(S0)) / (best(S0) - mean(S0)):
  the share of the space's log-size removed, times how far the mean moved toward the
  best network sampled at the start (1 when the space shrinks to that network).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics

import attrs

from nasdsl.language.errors import NasError
from nasdsl.space.derivation import Derivation, distance

from ..propose import END, WAIT, Proposal
from . import Algorithm, register, setting

_NEIGHBOURHOODS: dict = {}  # (space, seed text, radius, distinct) -> tuple of Derivation: computed once per process


@attrs.frozen
class Round:
    """One round: its space (None: the whole space), the uniform sample trained, and
    the validation accuracy of each sampled member that trained (failed ones are absent)."""

    index: int
    members: tuple | None
    sample: tuple
    accuracy: dict
    seeds: tuple = ()  # whose neighbourhoods made `members`

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracy.values()) if self.accuracy else float("nan")

    @property
    def best(self) -> float:
        return max(self.accuracy.values(), default=float("nan"))


@attrs.frozen
class Replay:
    """Where the rounds stand: `action` is "propose" (the round and the derivation to
    train next), "wait" (the round's trials are running) or "end" (the rounds are over)."""

    action: str
    rounds: tuple
    round: int = 0
    derivation: Derivation | None = None


@register("lissnas")
@attrs.frozen
class Lissnas(Algorithm):
    samples: int = setting(24, "architectures sampled (and trained) per round")
    seeds: int = setting(4, "best members of a round whose neighbourhoods make the next space")
    radius: int = setting(1, "neighbourhood radius: how many choice paths may differ from a seed")
    rounds: int = setting(5, "most rounds (the first samples the whole space)", minimum=2)
    min_gain: float = setting(0.0, "end when a round's mean validation accuracy rises by no more than this")
    distinct: bool = setting(True, "keep every derivation of a neighbourhood, not one per function")
    distinct_sample: bool = setting(True, "draw round 0's sample and join the seeds' neighbourhoods one "
                                    "derivation per text, not per function", absent=False)

    def __attrs_post_init__(self):
        if self.seeds > self.samples:
            raise NasError(f"--seeds ({self.seeds}) must not exceed --samples ({self.samples})")

    def notes(self, search) -> list[str]:
        most = self.samples * self.rounds
        if search.config.trials < most:
            return [f"lissnas: --trials {search.config.trials} may end the rounds early "
                    f"(up to {self.samples} per round, {self.rounds} rounds: {most})"]
        return []

    def propose(self, proposer, store, index: int, seed: int):
        state = self.replay(proposer, store, seed)
        if state.action == "propose":
            return Proposal(state.derivation, extra={"round": state.round})
        return WAIT if state.action == "wait" else END

    # ---- the rounds, read back from the store
    def replay(self, proposer, store, seed: int) -> Replay:
        by_round: dict = {}
        for t in store.trials():
            if "round" in t.extra:
                by_round.setdefault(t.extra["round"], []).append(t)
        rounds: list = []
        members, seeds = None, ()
        measured: dict = {}  # derivation text -> its trial, from the rounds so far (never a later one)
        for r in range(self.rounds):
            sample = self._sample(proposer, members, seed, r)
            new = [d for d in sample if d.text not in measured]
            started = by_round.get(r, [])
            if len(started) < len(new):
                return Replay("propose", tuple(rounds), r, new[len(started)])
            if any(t.status not in ("done", "failed") for t in started):
                return Replay("wait", tuple(rounds), r)
            measured.update((t.derivation, t) for t in started)
            accuracy = {d: measured[d.text].val_acc for d in sample
                        if d.text in measured and measured[d.text].status == "done"}
            rounds.append(Round(r, members, tuple(sample), accuracy, seeds))
            if self._over(rounds):
                break
            seeds, nxt = self._next_space(proposer, rounds[-1], measured)
            if not nxt or nxt == members:
                break
            members = nxt
        return Replay("end", tuple(rounds))

    def _over(self, rounds) -> bool:
        if len(rounds) < 2:
            return False
        last, before = rounds[-1], rounds[-2]
        return not last.accuracy or not last.mean > before.mean + self.min_gain

    def _sample(self, proposer, members, seed: int, r: int) -> list:
        """The round's uniform sample: distinct members (of the whole space in round 0,
        one per function with `distinct_sample`)."""
        rng = random.Random(f"{seed}:lissnas:{r}")
        if members is not None:
            return rng.sample(members, min(self.samples, len(members)))
        drawn = self._once(proposer, (proposer.sample(rng) for _ in range(self.samples * 20)))
        return list(itertools.islice(drawn, self.samples))

    def _once(self, proposer, derivations):
        """Each derivation whose text, or with `distinct_sample` whose function, is new."""
        if self.distinct_sample:
            return proposer.space.one_per_function(derivations, proposer.input_shape)
        seen: set = set()
        return (d for d in derivations if not (d in seen or seen.add(d)))

    def _next_space(self, proposer, last: Round, measured) -> tuple:
        """(seeds, the union of their neighbourhoods without members measured below the
        round's median, in the space's rank order)."""
        pool = list(last.accuracy.items())
        if last.members is not None:  # every measured member of the space competes, not only this sample's
            known = {d: measured[d.text].val_acc for d in last.members
                     if d.text in measured and measured[d.text].status == "done"}
            pool = list({**known, **last.accuracy}.items())
        seeds = [d for d, _ in sorted(pool, key=lambda p: (-p[1], p[0].text))[:self.seeds]]
        median = statistics.median(last.accuracy.values())
        kept: dict = {}
        for d in self._once(proposer, (d for s in seeds for d in self.neighbourhood(proposer, s))):
            t = measured.get(d.text)
            if t is None or t.status != "done" or t.val_acc >= median or d in seeds:
                kept[d] = None
        return tuple(seeds), tuple(sorted(kept, key=proposer.space.rank))

    def neighbourhood(self, proposer, seed: Derivation) -> tuple:
        """The feasible members within the radius of a seed (one per function with `distinct`)."""
        key = (id(proposer.space), tuple(sorted(proposer.space.params.items())), seed.text, self.radius,
               self.distinct)
        if key not in _NEIGHBOURHOODS:
            near = proposer.space.neighbourhood(seed, self.radius, distinct=self.distinct,
                                                input_shape=proposer.input_shape)
            _NEIGHBOURHOODS[key] = tuple(d for d in near if proposer.feasible(d))
        return _NEIGHBOURHOODS[key]

    # ---- what a shrink reports
    def result(self, replay: Replay) -> Round:
        """The shrunk space: the round (after the first) with the best mean, the later on ties."""
        shrunk = [r for r in replay.rounds if r.members is not None and r.accuracy]
        if not shrunk:
            raise NasError("lissnas: no round after the first was measured, so nothing was shrunk",
                           hint="give more --trials (at least --samples more than the first round)")
        return max(reversed(shrunk), key=lambda r: r.mean)


def summary(algorithm: Lissnas, replay: Replay, space, seed: int = 0) -> dict:
    """Each round's size, accuracy, diversity and shrink index, and the round chosen."""
    chosen = algorithm.result(replay)  # first: it says why when no shrunk round was measured
    rounds = [r for r in replay.rounds if r.accuracy]
    first = rounds[0]
    rows = []
    for r in rounds:
        members = r.members if r.members is not None else r.sample
        spread, values = diversity(members, random.Random(f"{seed}:diversity:{r.index}"))
        size = len(r.members) if r.members is not None else space.count
        rows.append({"round": r.index, "size": size, "measured": len(r.accuracy), "mean_val_acc": r.mean,
                     "best_val_acc": r.best, "mean_distance": spread, "values_per_path": values,
                     "seeds": [d.text for d in r.seeds],
                     "shrink_index": None if r.members is None else
                     shrink_index(size, space.count, r.mean, first.mean, first.best)})
    return {"rounds": rows, "chosen": chosen.index}


def to_nas(algorithm: Lissnas, chosen: Round, space) -> str:
    """The chosen round's space as a `.nas` file: each seed whose whole neighbourhood it
    kept is one `only within R of` statement, the other members are listed."""
    sub = space.subspace(chosen.members)
    whole = {s: algorithm.radius for s in chosen.seeds if not algorithm.distinct
             and set(space.neighbourhood(s, algorithm.radius)) <= set(chosen.members)}
    return sub.to_nas(whole)


def diversity(members, rng: random.Random, pairs: int = 2000) -> tuple[float, float]:
    """(mean pairwise distance, mean distinct values per choice path) of a set of derivations."""
    members = list(members)
    if len(members) < 2:
        return 0.0, 1.0
    drawn = [tuple(rng.sample(members, 2)) for _ in range(pairs)] if len(members) > 64 else \
        [(a, b) for i, a in enumerate(members) for b in members[i + 1:]]
    values: dict = {}
    for d in members[:2000]:
        for path, v in d.choices().items():
            values.setdefault(path, set()).add(repr(v))
    return (statistics.fmean(distance(a, b) for a, b in drawn),
            statistics.fmean(len(v) for v in values.values()) if values else 1.0)


def shrink_index(size: int, full: int, mean: float, mean0: float, best0: float) -> float:
    """See the module's docstring: the log-size removed times the mean's move toward the best."""
    shrinkage = 1 - math.log(size) / math.log(full) if full > 1 else 0.0
    quality = (mean - mean0) / (best0 - mean0) if best0 > mean0 else 0.0
    return shrinkage * quality
