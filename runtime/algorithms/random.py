"""Random search: the baseline every NAS method must beat."""

from __future__ import annotations

import attrs

from ..propose import Proposal, Proposer, trial_rng
from . import Algorithm, register


@register("random")
@attrs.frozen
class RandomSearch(Algorithm):
    """Uniform samples of the space, within the constraints."""

    def propose(self, proposer: Proposer, store, index: int, seed: int) -> Proposal:
        return Proposal(proposer.sample(trial_rng(seed, index)))
