"""NAO-V2 (Luo, Qin, Chen, "Understanding and Improving One-shot Neural Architecture
Optimization", arXiv 1909.10815): one-shot NAO with balanced sampling, on any space.

    pool = --seed-pool random derivations
    for each of --iterations:
        train the supernet --epochs, every step a derivation of the pool drawn with
            p ∝ params (--sampling params; uniform is the ablation), each iteration's
            schedule restarted (--independent restart, as the published code does),
            the weights re-initialised (reinit, as the paper's wording suggests), or one
            schedule across every iteration (continue)
        measure every derivation seen so far on the shared weights
        train the controller (runtime/controller.py) on (tokens, accuracy) pairs
        pool = --new-archs novel derivations: gradient ascent in embedding space from
            the --top-seeds best, the step growing 1, 2, 3, ... (at most --max-step)
    retrain the best --trials stand-alone

Tokens are the space's own encoding (`space.encoding()`), decoded under its mask, so
every generated sequence is a member of the space; parameter counts come from the
graph, no network is built to size the sampling. What the code and the paper say, and
the defaults scaled down here, is written out in `../shared/design/nao_v2.md`.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import attrs
import torch

from nasdsl.language.errors import NasError

from ..controller import Controller, ControllerConfig, pairwise_accuracy
from ..oneshot import SAMPLINGS, OneShot, novel
from . import register, setting

INDEPENDENCE = ("restart", "reinit", "continue")


def _seed(seed: int, iteration: int, what: str) -> int:
    """A controller's initial weights: fixed by the search seed (Python's `hash` is not)."""
    return random.Random(f"{seed}:nao:{what}:{iteration}").randrange(2**31)


@register("nao")
@attrs.frozen
class NaoV2(OneShot):
    sampling: str = setting("params", "the supernet's training distribution over the pool: params (p ∝ each "
                                      "derivation's parameters, NAO-V2's balanced sampling) or uniform (the ablation)",
                            choices=SAMPLINGS)
    iterations: int = setting(3, "search iterations, each training the supernet --epochs (the code: 4)")
    independent: str = setting("restart", "between iterations: restart the schedule (the code), reinit the weights "
                                          "too (the paper's wording), or continue one schedule", choices=INDEPENDENCE)
    seed_pool: int = setting(50, "random derivations of the first pool (the code: 1000)")
    seed_archs: str | None = setting(None, "start the first pool from the derivations in FILE (one text per line, "
                                           "# comments), topped up with random ones to --seed-pool (the code's "
                                           "--child_arch_pool)", metavar="FILE")
    new_archs: int = setting(20, "derivations the controller generates per iteration (the code: 300)")
    random_archs: int = setting(5, "random derivations added to each generated pool, so that a controller which "
                                   "finds few novel ones still explores (NAO-WS's --controller_random_arch, 100 "
                                   "beside 300 generated; NAO-V2's code adds none)", minimum=0, absent=0)
    top_seeds: int = setting(10, "best derivations the generation ascends from (the code: 100)")
    max_step: int = setting(50, "largest gradient-ascent step in embedding space (the code: 50)")
    controller_epochs: int = setting(200, "controller training epochs per iteration (the code: 1000)")
    trade_off: float = setting(0.8, "the predictor's share of the controller's loss, lambda (the code: 0.8)")

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self.at_least_one("iterations", "seed_pool", "new_archs", "top_seeds", "max_step", "controller_epochs")
        if self.independent not in INDEPENDENCE:
            raise NasError(f"--independent is one of {', '.join(INDEPENDENCE)}, got {self.independent}")
        if self.random_archs < 0:
            raise NasError(f"--random-archs must be 0 or more, got {self.random_archs}")
        if not 0 <= self.trade_off <= 1:
            raise NasError(f"--trade-off must be between 0 and 1, got {self.trade_off}")

    def run(self, search, net, reporter=None):
        encoding = search.space.encoding()
        seed, epochs, proposer = search.config.seed, search.config.train.epochs, search.proposer
        rng = random.Random(f"{seed}:nao")
        seen: dict = {}  # hash -> derivation, in the order first met
        pool = self._seed(search, proposer, rng, seen)
        fresh = {k: v.clone() for k, v in net.state_dict().items()} if self.independent == "reinit" else None
        for i in range(self.iterations):
            if fresh is not None:
                net.load_state_dict(fresh)  # every iteration from the same initial weights
            sizes = [proposer.cost(d).params for d in pool]
            weights = sizes if self.sampling == "params" else None
            self.train_phase(
                search, net, reporter, sample=lambda r: r.choices(pool, weights=weights)[0], name=f"supernet-{i + 1}",
                offset=i * epochs,
                start=f"supernet-{i}" if i and self.independent != "reinit" else None,
                span=(i * epochs, self.iterations * epochs) if self.independent == "continue" else None)
            evaluate = self.evaluator(search, net, (i + 1) * epochs)  # rows name the epochs trained so far
            known = list(seen.values())
            accuracies = [evaluate(d) for d in known]
            if i + 1 == self.iterations:
                return known, evaluate
            controller, pairwise = self._controller(encoding, known, accuracies, seed, i)
            pool = self._generate(controller, encoding, known, accuracies, seen, proposer)
            explore = random.Random(f"{seed}:nao:random:{i}")  # its own stream: the same on a resumed run
            drawn = novel((proposer.sample(explore) for _ in range(self.random_archs * 20)), seen, self.random_archs)
            self._record(search, i, pairwise, len(known), pool, drawn, reporter)
            pool += drawn
            if not pool:
                if reporter:
                    reporter.note(f"nao: iteration {i + 1} generated no novel derivation; stopping early")
                return known, evaluate
        raise AssertionError("unreachable")

    def _seed(self, search, proposer, rng, seen: dict) -> list:
        """The first pool: --seed-archs' derivations, then random ones. It is kept in the
        store, so a resumed search starts from the same pool even if the file changed."""
        kept = search.store.get_state("nao_seed_pool")
        if kept is not None:
            return novel((search.space.parse(text) for text in kept), seen, len(kept))
        given = self._given(search.space, proposer) if self.seed_archs else []
        draws = itertools.chain(given, (proposer.sample(rng) for _ in range(self.seed_pool * 20)))
        pool = novel(draws, seen, max(self.seed_pool, len(given)))
        search.store.set_state("nao_seed_pool", [d.text for d in pool])
        return pool

    def _given(self, space, proposer) -> list:
        path = Path(self.seed_archs)
        try:
            text = path.read_text()
        except OSError as err:
            raise NasError(f"--seed-archs {path}: {err.strerror or err}") from None
        given = space.parse_lines(text, str(path))
        if not given:
            raise NasError(f"--seed-archs {path} lists no derivation", hint="one derivation text per line")
        over = [d for d in given if not proposer.feasible(d)]
        if over:
            raise NasError(f"--seed-archs {path}: {len(over)} of its derivations exceed --max-params/--max-macs, "
                           f"the first: {over[0].text}")
        return given

    # ---- the controller
    def _controller(self, encoding, known, accuracies, seed: int, i: int):
        """A controller trained on 90 % of the pairs, its pairwise accuracy on the rest
        (NAO's check), then retrained on all of them."""
        seqs = [encoding.encode(d) for d in known]
        config = ControllerConfig(epochs=self.controller_epochs, trade_off=self.trade_off)
        order = list(range(len(seqs)))
        random.Random(f"{seed}:nao:split:{i}").shuffle(order)
        held = order[:max(2, len(order) // 10)]
        train = [k for k in order if k not in held]
        pairwise = None
        if len(train) >= 2:
            torch.manual_seed(_seed(seed, i, "held-out"))
            probe = Controller(len(encoding.vocabulary), encoding.length, config)
            probe.fit([seqs[k] for k in train], [accuracies[k] for k in train], seed=seed)
            with torch.no_grad():
                predicted = probe.predict(torch.tensor([seqs[k] for k in held])).tolist()
            pairwise = pairwise_accuracy(predicted, [accuracies[k] for k in held])
        torch.manual_seed(_seed(seed, i, "controller"))
        controller = Controller(len(encoding.vocabulary), encoding.length, config)
        controller.fit(seqs, accuracies, seed=seed)
        return controller, pairwise

    def _generate(self, controller, encoding, known, accuracies, seen, proposer) -> list:
        """Novel, feasible derivations by ascent from the best, the step growing until
        there are --new-archs of them or it reaches --max-step."""
        best = [d for _, d in sorted(zip(accuracies, known), key=lambda p: -p[0])[:self.top_seeds]]
        seqs = [encoding.encode(d) for d in best]
        found: list = []
        for step in range(1, self.max_step + 1):
            for seq in controller.generate(seqs, encoding.allowed, step=float(step)):
                d = encoding.decode(seq)
                if d.hash not in seen and proposer.feasible(d):
                    seen[d.hash] = d
                    found.append(d)
                    if len(found) == self.new_archs:
                        return found
        return found

    @staticmethod
    def _record(search, i: int, pairwise, size: int, generated: list, drawn: list, reporter) -> None:
        """The controller's check, and the next pool by origin (`nasdsl trials` shows
        evaluations; this says which of them the controller proposed)."""
        log = search.store.get_state("nao_controller", [])[:i]
        log.append({"iteration": i + 1, "pairwise_held_out": pairwise, "trained_on": size,
                    "generated": [d.text for d in generated], "random": [d.text for d in drawn]})
        search.store.set_state("nao_controller", log)
        if reporter:
            shown = "-" if pairwise is None else f"{pairwise:.3f}"
            reporter.note(f"nao: iteration {i + 1}: controller trained on {size} derivations, pairwise accuracy "
                          f"on the held-out 10 %: {shown}; next pool: {len(generated)} generated, {len(drawn)} random")
