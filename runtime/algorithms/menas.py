"""MENAS (Wei et al., "Multi-trial Neural Architecture Search with Lottery Tickets",
arXiv 2203.04300): aging evolution where

- a child starts from its own parent's trained weights (individual weight sharing,
  `runtime/inherit.py`) instead of from scratch, and trains with early stopping;
- every trained model is replaced in the population by its lottery ticket: the
  pruned network, itself a derivation of the space, that keeps the most pruning
  within an accuracy tolerance after a short fine-tune (`runtime/tickets.py`); a
  model no cut keeps within the tolerance stays itself;
- parents are the `parents` most accurate members plus a share `rho` of the
  largest ones, so the population, which the tickets slim, is not trapped among
  tiny networks (rho = 0 is the ablation).

What the paper's public abstract states and what we chose is written out in
`../shared/design/menas.md`; the choices are flags here.

A trial and its ticket are two rows of the store: the ticket's `ticket_of` names
the trained trial, and the living population holds the ticket in its place.
"""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import torch

from nasdsl.compiler.module import build_module
from nasdsl.language.errors import NasError

from ..data import Dataset, Split
from ..inherit import inherit, load_state
from ..propose import Proposal, living_population, trial_rng
from ..tickets import best_ticket, ticket_candidates, width_controls
from ..train import train
from ..trial import never_raises, prepare, save_checkpoint, trained
from . import Algorithm, first_generation_note, register, setting


@register("menas")
@attrs.frozen
class Menas(Algorithm):
    population: int = setting(16, "population size")
    parents: int = setting(4, "the most accurate members that may be parents")
    rho: float = setting(0.1, "share of the population's largest members also kept as parents; 0 is the ablation")
    size: str = setting("params", "what `largest` measures for --rho", choices=("params", "macs"))
    ratios: tuple = setting((0.1, 0.2, 0.3, 0.5), "lottery-ticket pruning ratios tried, each in (0, 1)",
                            flag="--ticket-ratios", metavar="R1,R2,...", converter=tuple)
    tolerance: float = setting(0.005, "validation accuracy a ticket may lose, as a fraction: 0.005 is half a point",
                               flag="--ticket-tolerance")
    # split across the candidates: each sees 1/len(ratios) of the data per epoch
    finetune_epochs: int = setting(1, "fine-tuning epochs of the tickets, all candidates together")
    crossover: float = setting(0.0, "probability that a child is a crossover of two parents (then mutated)")
    inherit: bool = setting(True, "children train from scratch (the ablation of weight sharing)")

    def __attrs_post_init__(self):
        if not 0 <= self.rho <= 1:
            raise NasError(f"--rho must be between 0 and 1, got {self.rho}")
        if self.parents < 1 or self.population < 1:
            raise NasError("--parents and --population must be at least 1")
        if not all(0 < r < 1 for r in self.ratios):
            raise NasError(f"pruning ratios must lie in (0, 1), got {list(self.ratios)}",
                           hint="e.g. --ticket-ratios 0.1,0.2,0.3,0.5")
        if self.size not in ("params", "macs"):
            raise NasError(f"size is measured in params or macs, not {self.size}")

    # ---- the population
    def notes(self, search) -> list[str]:
        notes = first_generation_note("menas", self.population, search.config.trials)
        probes = search.space.samples(3, seed=0)
        if not any(any(width_controls(search.space, d, search.data.input_shape).values()) for d in probes):
            notes.append("menas: no width choice of this space sets a prunable channel group (3 samples probed), "
                         "so no lottery tickets will be cut: this is aging evolution with weight inheritance. "
                         "MENAS slims spaces whose widths are choices, e.g. spaces/mobilenet3_mt.nas")
        return notes

    def members(self, store) -> list:
        """The living population: the `population` most recently finished members, a
        ticket standing in for the model it was cut from."""
        return living_population(store.finished_in_order(), self.population)

    def parent_pool(self, members: list) -> list:
        """Top `parents` by validation accuracy, plus the ceil(rho * |members|) largest."""
        best = sorted(members, key=lambda t: (-t.val_acc, t.id))[:self.parents]
        largest = sorted(members, key=lambda t: (-getattr(t, self.size), t.id))[:math.ceil(self.rho * len(members))]
        return list({t.id: t for t in best + largest}.values())

    def propose(self, proposer, store, index: int, seed: int) -> Proposal:
        rng = trial_rng(seed, index)
        members = self.members(store)
        if index < self.population or not members:
            return Proposal(proposer.sample(rng), extra={"generation": 0, "inherited_from": None, "ticket_of": None})
        pool = self.parent_pool(members)
        parent = rng.choice(pool)
        start = proposer.space.parse(parent.derivation)
        if self.crossover and len(pool) > 1 and rng.random() < self.crossover:
            other = rng.choice([t for t in pool if t.id != parent.id])
            start = proposer.space.crossover(start, proposer.space.parse(other.derivation), rng=rng)
        child = proposer.mutate(start, rng)
        generation = (index - self.population) // self.population + 1
        return Proposal(child, (parent.id,), {"generation": generation, "ticket_of": None,
                                              "inherited_from": parent.id if self.inherit else None})

    # ---- what a worker needs
    @property
    def trial_function(self):
        return run_menas_trial

    def job_settings(self, search, trial) -> dict:
        settings = {"ratios": list(self.ratios), "tolerance": self.tolerance,
                    "finetune_epochs": self.finetune_epochs, "ticket_checkpoint": f"trial-{trial.id}-ticket.pt"}
        parent_id = trial.extra.get("inherited_from")
        if parent_id is not None:
            parent = search.store.trial(parent_id)
            settings["parent"] = {"id": parent.id, "derivation": parent.derivation,
                                  "checkpoint": str(search.store.path.parent / (parent.checkpoint or "missing"))}
        return settings


@never_raises
def run_menas_trial(job):
    """Inherit from the parent, train with early stopping, cut the lottery tickets,
    fine-tune them briefly, keep the best; the ticket comes back as a linked trial."""
    trial = prepare(job)
    settings = job.settings
    extra = {"inherited_fraction": 0.0}
    if "parent" in settings:
        parent = settings["parent"]
        parent_graph = trial.space.graph(trial.space.parse(parent["derivation"]), trial.data.input_shape)
        got = inherit(parent_graph, load_state(parent["checkpoint"]), trial.graph, trial.module)
        extra["inherited_fraction"] = round(got.fraction, 4)
    result = train(trial.module, trial.data, job.train, seed=job.seed, graph=trial.graph)
    ticket, ticket_extra = lottery_ticket(trial.space, trial.derivation, trial.module, trial.data, job,
                                          result.val_acc)
    linked = ()
    if ticket is not None:
        path = Path(job.checkpoint).with_name(settings["ticket_checkpoint"])
        save_checkpoint(ticket["state"], path)
        linked = ({"derivation": ticket["derivation"].text, "hash": ticket["derivation"].hash, "seed": job.seed,
                   "extra": {"ticket_of": job.trial_id, "ticket_ratio": ticket["ratio"],
                             "inherited_from": job.trial_id, "inherited_fraction": 1.0, "generation": None},
                   "val_acc": ticket["val_acc"], "params": ticket["params"], "macs": ticket["macs"],
                   "train_time": ticket["train_time"], "epochs": ticket["epochs"], "checkpoint": path.name},)
    return trained(job, trial.graph, result, {**extra, **ticket_extra}, linked)


def lottery_ticket(space, d, module, data: Dataset, job, baseline: float):
    """(the chosen ticket as a dict, or None when pruning changes nothing; fields for
    the trained trial's record). Each candidate is fine-tuned on its own slice of the
    training set, so all of them together cost `finetune_epochs` epochs."""
    settings = job.settings
    module = module.cpu()
    candidates = ticket_candidates(space, d, module, data.input_shape, settings["ratios"])
    candidates = [t for t in candidates if t.derivation.hash != d.hash]
    if not candidates:
        return None, {"ticket": "no prunable width in this derivation"}
    order = torch.randperm(len(data.train.y), generator=torch.Generator().manual_seed(job.seed))
    finetune = attrs.evolve(job.train, epochs=settings["finetune_epochs"], lr=job.train.lr * 0.1,
                            warmup_epochs=0.0, patience=None, bn_l1=0.0)  # the cut is made: no more push
    tuned = []
    for i, ticket in enumerate(candidates):
        part = order[i::len(candidates)]
        share = attrs.evolve(data, train=Split(data.train.x[part], data.train.y[part]))
        ticket_module = build_module(space.graph(ticket.derivation, data.input_shape), seed=job.seed)
        ticket_module.load_state_dict(ticket.state)
        tuned.append(train(ticket_module, share, finetune, seed=job.seed))
    chosen = best_ticket(candidates, [r.val_acc for r in tuned], baseline, settings["tolerance"])
    ticket, result = candidates[chosen], tuned[chosen]
    tried = {"ticket_candidates": [{"ratio": t.ratio, "params": t.params, "val_acc": round(r.val_acc, 4)}
                                   for t, r in zip(candidates, tuned)]}
    if result.val_acc < baseline - settings["tolerance"]:  # every cut costs too much: the model stays itself
        return None, {**tried, "ticket": f"none within {settings['tolerance']} of {baseline:.4f}"}
    return ({"derivation": ticket.derivation, "state": result.state_dict, "ratio": ticket.ratio,
             "val_acc": result.val_acc, "params": ticket.params, "macs": ticket.macs,
             "train_time": sum(r.train_time for r in tuned), "epochs": settings["finetune_epochs"]}, tried)

