"""Regularized (aging) evolution, Real et al. 2019."""

from __future__ import annotations

import attrs

from nasdsl.language.errors import NasError

from ..propose import Proposal, Proposer, living_population, trial_rng
from . import Algorithm, first_generation_note, register, setting


@register("evolution")
@attrs.frozen
class RegularizedEvolution(Algorithm):
    """The first `population` trials are uniform samples; after that each proposal
    takes `sample_size` members of the living population at random, mutates the most
    accurate, and the child joins while the oldest member dies. The living
    population is simply the `population` most recently finished trials, so it is
    read from the store, never kept."""

    population: int = setting(16, "population size")
    sample_size: int = setting(4, "tournament size: members drawn to choose each parent")

    def __attrs_post_init__(self):
        if not 1 <= self.sample_size <= self.population:
            raise NasError(f"--sample-size must be between 1 and --population ({self.population}), "
                           f"got {self.sample_size}")

    def notes(self, search) -> list[str]:
        return first_generation_note("evolution", self.population, search.config.trials)

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
