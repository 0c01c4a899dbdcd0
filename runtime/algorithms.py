"""Search algorithms: each proposes the next derivation to train, from what the
store already knows.

An algorithm keeps no state of its own between proposals: the population,
the history and the random stream are all read back from the store and the
trial's index, so a resumed search continues exactly where it stopped.
Constraints (`--max-macs`, `--max-params`) are respected when proposing --
`Proposer.sample` and `Proposer.mutate` only return derivations within them -- so
no training is spent on a network that would be thrown away.
"""

from __future__ import annotations

import random

import attrs

from nasdsl.language.errors import NasError
from nasdsl.space.derivation import Derivation

from .trial import run_trial

MAX_TRIES = 2000  # proposals drawn before a constraint is declared unsatisfiable


@attrs.frozen
class Proposal:
    derivation: Derivation
    parents: tuple[int, ...] = ()
    extra: dict = attrs.Factory(dict)  # stored with the trial (e.g. the generation)


@attrs.frozen
class Cost:
    params: int
    macs: int


class Proposer:
    """The space as the algorithms see it: costs from the compiler's graph, and
    sampling and mutation restricted to the constraints."""

    def __init__(self, space, input_shape, max_params: int | None = None, max_macs: int | None = None):
        self.space = space
        self.input_shape = tuple(input_shape)
        self.max_params, self.max_macs = max_params, max_macs
        self._costs: dict[str, Cost | None] = {}

    def cost(self, d: Derivation) -> Cost | None:
        """Params and MACs of `d` at the data set's input shape; None if `d` cannot take it."""
        key = d.hash
        if key not in self._costs:
            try:
                graph = self.space.graph(d, self.input_shape)
                self._costs[key] = Cost(graph.graph["params"], graph.graph["macs"])
            except NasError:
                self._costs[key] = None
        return self._costs[key]

    def feasible(self, d: Derivation) -> bool:
        cost = self.cost(d)
        return (cost is not None and (self.max_params is None or cost.params <= self.max_params)
                and (self.max_macs is None or cost.macs <= self.max_macs))

    def sample(self, rng: random.Random) -> Derivation:
        """A uniform sample of the feasible derivations (rejection keeps it uniform)."""
        return self._first_feasible(lambda: self.space.sample(rng=rng), "uniform samples")

    def mutate(self, parent: Derivation, rng: random.Random) -> Derivation:
        """A feasible one-choice mutation of `parent`."""
        return self._first_feasible(lambda: self.space.mutate(parent, rng=rng), "mutations of a parent")

    def _first_feasible(self, draw, what: str) -> Derivation:
        smallest = None
        for _ in range(MAX_TRIES):
            d = draw()
            if self.feasible(d):
                return d
            cost = self.cost(d)
            if cost and (smallest is None or (cost.macs, cost.params) < (smallest.macs, smallest.params)):
                smallest = cost
        limits = ", ".join(f"{flag} {value:,}" for flag, value in
                           (("--max-params", self.max_params), ("--max-macs", self.max_macs)) if value)
        seen = f"; the smallest seen has {smallest.params:,} params and {smallest.macs:,} MACs" if smallest else ""
        raise NasError(f"no derivation within {limits or 'the input shape'} among {MAX_TRIES} {what}{seen}",
                       hint="relax the constraint, or restrict the space to smaller choices")


def living_population(finished: list, size: int) -> list:
    """The `size` most recently finished members, a lottery ticket standing in for
    the model it was cut from: the population evolution selects parents from."""
    replaced = {t.extra["ticket_of"] for t in finished if t.extra.get("ticket_of")}
    return [t for t in finished if t.id not in replaced][-size:]


def trial_rng(seed: int, index: int, salt: str = "") -> random.Random:
    """The random stream of the `index`-th proposal: fixed by the search seed alone."""
    return random.Random(f"{seed}:{index}:{salt}")


class Algorithm:
    """What every algorithm shares: trials are trained by `run_trial` and need no
    settings beyond the derivation. MENAS overrides both (it inherits and prunes)."""

    @property
    def trial_function(self):
        return run_trial

    def job_settings(self, search, trial) -> dict:
        return {}


class RandomSearch(Algorithm):
    """Uniform samples of the space, within the constraints: the baseline every NAS
    method must beat."""

    name = "random"

    def settings(self) -> dict:
        return {}

    def propose(self, proposer: Proposer, store, index: int, seed: int) -> Proposal:
        return Proposal(proposer.sample(trial_rng(seed, index)))


@attrs.frozen
class RegularizedEvolution(Algorithm):
    """Aging evolution (Real et al. 2019). The first `population` trials are uniform
    samples; after that each proposal takes `sample_size` members of the living
    population at random, mutates the most accurate, and the child joins while the
    oldest member dies. The living population is simply the `population` most
    recently finished trials, so it is read from the store, never kept."""

    population: int = 16
    sample_size: int = 4
    name = "evolution"

    def settings(self) -> dict:
        return {"population": self.population, "sample_size": self.sample_size}

    def propose(self, proposer: Proposer, store, index: int, seed: int) -> Proposal:
        rng = trial_rng(seed, index)
        alive = living_population(store.finished_in_order(), self.population)
        if index < self.population or not alive:
            return Proposal(proposer.sample(rng), extra={"generation": 0})
        generation = (index - self.population) // self.population + 1  # a population's worth of children each
        contenders = rng.sample(alive, min(self.sample_size, len(alive)))
        parent = max(contenders, key=lambda t: (t.val_acc, -t.id))
        child = proposer.mutate(proposer.space.parse(parent.derivation), rng)
        return Proposal(child, (parent.id,), {"generation": generation})
