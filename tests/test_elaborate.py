"""The elaborator is the one walk that builds networks; it asks its chooser at every
choice site. Recording the questions shows that the walk asks about exactly the
choices a derivation holds, under their own paths: nothing the derivation decides is
skipped, and nothing is read from anywhere else (so a supernet chooser, answering
the same questions, decides the whole network)."""

import pytest
from support import SMALL, SPACES

import nasdsl
from nasdsl.compiler.elaborate import DerivationChooser, derivation_chooser, elaborate
from nasdsl.compiler.graph import default_input_shape


class Recording:
    """A chooser that answers as `inner` and writes down the path of each question."""

    def __init__(self, inner: DerivationChooser, path: str, asked: set):
        self.inner, self.path, self.asked = inner, path, asked

    def _join(self, *parts):
        return ".".join(str(p) for p in (self.path, *parts) if p != "")

    def at(self, site):
        return Recording(self.inner.at(site), self._join(site), self.asked)

    def values(self, sites):
        self.asked.update(self._join(s) for s in sites)
        return self.inner.values(sites)

    def option(self, site):
        here = self._join(site) if site is not None else self.path
        self.asked.add(here)
        return [(label, Recording(below, here, self.asked)) for label, below in self.inner.option(site)]

    def copies(self, site, count):
        if site in self.inner.node.names():  # a chosen count (a fixed one is no choice)
            self.asked.add(self._join(site))
        return [Recording(c, self._join(site, i), self.asked) for i, c in enumerate(self.inner.copies(site, count))]

    def branches(self, sites):
        return self.inner.branches(sites)

    def picked(self, site, summed):
        self.asked.add(self._join(site))
        return [(label, Recording(below, self._join(site, label), self.asked))
                for label, below in self.inner.picked(site, summed)]

    def record(self, site, kind):
        return self.inner.record(site, kind)

    def shared(self, rule):
        return Recording(self.inner.shared(rule), rule, self.asked)


@pytest.mark.parametrize("name", sorted(p.stem for p in SPACES.glob("*.nas")))
def test_the_walk_asks_about_exactly_the_derivations_choices(name):
    space = nasdsl.load(SPACES / f"{name}.nas", params=SMALL.get(name, {}))
    for seed in range(8):
        d = space.sample(seed=seed)
        asked: set = set()
        graph = elaborate(space, Recording(derivation_chooser(space, d), "", asked), default_input_shape(space))
        assert asked == set(d.choices()), seed
        assert list(graph.nodes) == list(space.graph(d).nodes)
