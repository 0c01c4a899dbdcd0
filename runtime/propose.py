"""What every search algorithm proposes with: the space seen through the constraints
(`Proposer`), a proposal, the random stream of the `index`-th proposal, and the
living population of aging evolution. Independent of the search loop, so the
algorithms (`runtime/algorithms/`) and the report can share it.

Constraints (`--max-macs`, `--max-params`) are respected when proposing --
`Proposer.sample` and `Proposer.mutate` only return derivations within them -- so
no training is spent on a network that would be thrown away.
"""

from __future__ import annotations

import random

import attrs

from nasdsl.language.errors import NasError
from nasdsl.space.derivation import Derivation

MAX_TRIES = 2000  # proposals drawn before a constraint is declared unsatisfiable


@attrs.frozen
class Proposal:
    derivation: Derivation
    parents: tuple[int, ...] = ()
    extra: dict = attrs.Factory(dict)  # stored with the trial (e.g. the generation)


# What `propose` may return instead of a Proposal: an algorithm that works in rounds
# waits for the running trials of a round (WAIT), and one with its own stopping rule
# ends the search before --trials (END).
WAIT = "wait"
END = "end"


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
