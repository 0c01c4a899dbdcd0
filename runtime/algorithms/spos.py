"""SPOS, single path one-shot (Guo et al., "Single Path One-Shot Neural Architecture
Search with Uniform Sampling", ECCV 2020):

1. train the supernet one uniformly sampled path per step, so every derivation's
   weights are trained alike (`OneShot.sample`, uniform over the whole space);
2. evolve a population on shared-weight accuracy, within --max-params/--max-macs
   (the constraint is the search's, not the training's): each generation keeps the
   --parents best and fills up with children, a share --crossover of them crossovers
   of two parents, every child a one-choice mutation;
3. retrain the best --trials stand-alone.

It is the baseline the other one-shot algorithms compare against.
"""

from __future__ import annotations

import attrs

from nasdsl.language.errors import NasError

from ..oneshot import OneShot, novel
from . import register, setting

TRIES = 50  # draws for a child not yet seen, before a generation is left smaller


@register("spos")
@attrs.frozen
class Spos(OneShot):
    population: int = setting(16, "population size")
    generations: int = setting(4, "generations of evolution on shared-weight accuracy after the first")
    parents: int = setting(4, "the most accurate members that may be parents")
    crossover: float = setting(0.5, "probability that a child is a crossover of two parents (then mutated)")

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        if not 1 <= self.parents <= self.population:
            raise NasError(f"--parents must be between 1 and --population ({self.population}), got {self.parents}")
        if not 0 <= self.crossover <= 1:
            raise NasError(f"--crossover must be between 0 and 1, got {self.crossover}")

    def rank(self, search, evaluate, rng) -> list:
        proposer = search.proposer
        seen: dict = {}  # hash -> derivation, in the order measured

        def one_novel(draw) -> list:
            return novel((draw() for _ in range(TRIES)), seen, 1)

        population = [d for _ in range(self.population) for d in one_novel(lambda: proposer.sample(rng))]
        for _ in range(self.generations):
            best = sorted(population, key=evaluate, reverse=True)[:self.parents]

            def child():
                parent = rng.choice(best)
                if len(best) > 1 and rng.random() < self.crossover:
                    other = rng.choice([p for p in best if p is not parent])
                    parent = proposer.space.crossover(parent, other, rng=rng)
                return proposer.mutate(parent, rng)

            population = best + [d for _ in range(self.population - len(best)) for d in one_novel(child)]
        return list(seen.values())
