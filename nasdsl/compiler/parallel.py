"""The parallel form of a supernet: at every alternative, every option runs and the
outputs are summed under the site's gate.

    net = ParallelSupernet(space, (3, 32, 32))       # every option of every alternative
    net.sites                                        # {site path: option labels}
    net.gates["cells.0.x1.op"]                       # its gate: one number per option
    net.derivation_of({site: {label}, ...})          # the surviving options as a derivation
    net.nearest({site: {labels left}, ...})          # the nearest derivation, and how far it is

The network is one elaborator walk (`nasdsl.compiler.elaborate`) with a chooser
that answers several options where a derivation answers one:

- an alternative: every live option, each under its own path (`site.label`), so its
  node ids and `state_dict` keys are those of a derivation that takes it (and the
  single-path `Supernet`'s bank keys);
- a pick in an `add`: every candidate (DARTS' mixed edges), summed under a gate; a
  pick in a `concat` keeps the base's candidates (the shapes would not agree);
- a value site the caller names (`values=["stage1.block.mbconv.depthwise.kernel"]`,
  `*` for any copy index): every value as its own branch (`kernel=5`, a `.` in a
  value written `_`), each with its own weights, as SuperTickets' parallel kernels;
- everything else from the base derivation (default: the space's first cover
  derivation, the largest numbers and repetitions); inside an option the base does
  not take, what the cover takes there (the largest numbers).

Branches are joined by a `gsum` node at the site's path (module `GatedSum`, tensor
`{site}.gate`): a gate is an ordinary parameter, so an optimizer trains it, a
parametrization reshapes it (DARTS' softmax), `torch.func.functional_call` or
`forward(x, gates=...)` overrides it for one call. A site whose options disagree in
shape is a SupernetError naming the site and the shapes.
"""

from __future__ import annotations

import attrs
import torch

from ..language.errors import did_you_mean
from ..space.derivation import Alt, Derivation, Node, Picked, replace_path, scalar_text, split_path
from ..space.plan import EMPTY, EMPTY_NODE, Covering, PAlt, PScope
from .elaborate import SupernetError, elaborate
from .graph import default_input_shape
from .module import _class_name, module_parts


@attrs.frozen
class Record:
    """What a parallel site is in the space: the derivation path of its choice (one for
    every place of a shared rule), its kind (`alt`, `pick`, `value`), how many options
    a derivation keeps there, and per option what the derivation then holds at `choice`
    (an Alt, a pick's candidate, or the scope's node with that value)."""

    choice: str
    kind: str
    k: int
    values: tuple
    name: str | None = None  # a value site's name in its scope's node


@attrs.frozen
class Site:
    """A parallel site of the network: its provenance path and options, in order."""

    path: str
    labels: tuple
    record: Record = attrs.field(repr=False)
    within: tuple = ()  # (site path, label) of every site this one sits in an option of


class _Context:
    """What every position of one parallel walk shares."""

    def __init__(self, patterns):
        self.patterns = [tuple(p.split(".")) for p in patterns]
        self.matched: set = set()
        self.shared: dict = {}
        self.largest: dict = {}  # id(scope plan) -> its node with the largest numbers

    def branching(self, path) -> bool:
        parts = tuple(str(p) for p in path)
        for pattern in self.patterns:
            if len(pattern) == len(parts) and all(a == "*" or a == b for a, b in zip(pattern, parts)):
                self.matched.add(".".join(pattern))
                return True
        return False

    def fill(self, scope):
        """The node of an option or candidate the base does not take: the largest numbers."""
        found = self.largest.get(id(scope))
        if found is None:
            found = self.largest[id(scope)] = scope.cover(Covering(), ())
        return found


def _path(parts) -> str:
    return ".".join(str(p) for p in parts)


def _value_label(name, value) -> str:
    return f"{name}={scalar_text(value).replace('.', '_')}"


class ParallelChooser:
    """A position of the parallel walk: the base's choices there beside their plan, so
    that it can answer every option of an alternative and every value of a site."""

    __slots__ = ("plan", "value", "node", "path", "ctx", "pinned", "fork")

    def __init__(self, plan, value, path, ctx, pinned=frozenset(), fork=None):
        self.plan = plan if plan is not None else EMPTY
        self.value = value if value is not None else EMPTY_NODE
        self.node = self.value if isinstance(self.value, Node) else EMPTY_NODE
        self.path = path
        self.ctx = ctx
        self.pinned = pinned  # value sites this position already runs side by side
        self.fork = fork  # (site, labels, nodes) of the value fork this position is a branch of

    def _site_plan(self, name):
        return self.plan.site_plan(self.node, name) if isinstance(self.plan, PScope) else None

    def at(self, site):
        return ParallelChooser(self._site_plan(site), self.node.get(site, EMPTY_NODE), (*self.path, site), self.ctx)

    def values(self, sites):
        return {s: self.node[s] for s in sites if s in self.node.names()}

    def branches(self, sites):
        for s in sites:
            if s in self.pinned or s not in self.node.names() or not self.ctx.branching((*self.path, s)):
                continue
            nodes = {}
            for v in self.plan.domain((s,), _path((*self.path, s))):
                want = Node(tuple((n, v if n == s else x) for n, x in self.node.items))
                node = self.plan.nearest(want)  # `want` itself where the space allows it
                if scalar_text(node[s]) == scalar_text(v):
                    nodes[_value_label(s, v)] = node
            if len(nodes) < 2:
                continue
            fork = (s, tuple(nodes), tuple(nodes.values()))
            return [(label, ParallelChooser(self.plan, node, self.path, self.ctx, self.pinned | {s}, fork))
                    for label, node in nodes.items()]
        return ()

    def _alt(self, site):
        if site is None and isinstance(self.value, Alt):
            return self.plan, self.value, self.path
        name = site if site is not None else "alt"
        here = (*self.path, site) if site is not None else self.path
        return self._site_plan(name), self.node[name], here

    def _options(self, plan, alt):
        if not isinstance(plan, PAlt):
            return [(alt, None)]
        return [(alt if o.label == alt.label else Alt(o.label, self.ctx.fill(o.scope)), o.scope)
                for o, c in zip(plan.options, plan.counts) if c]

    def option(self, site):
        plan, alt, here = self._alt(site)
        return [(a.label, ParallelChooser(scope, a.node, here, self.ctx)) for a, scope in self._options(plan, alt)]

    def copies(self, site, count):
        rep = self.node.get(site)
        if rep is None:
            return [ParallelChooser(None, EMPTY_NODE, (*self.path, site, i), self.ctx) for i in range(count())]
        elem = self._site_plan(site).elem
        return [ParallelChooser(elem, item, (*self.path, site, i), self.ctx) for i, item in enumerate(rep.items)]

    def _candidates(self, site, summed):
        plan, picked = self._site_plan(site), self.node[site]
        taken = {a.label: a for a in picked.items}
        if not summed:
            return [(taken[c.label], c.scope) for c in plan.candidates if c.label in taken], plan
        return [(taken.get(c.label) or Alt(c.label, self.ctx.fill(c.scope)), c.scope)
                for c in plan.candidates if c.scope.count], plan

    def picked(self, site, summed):
        found, _ = self._candidates(site, summed)
        return [(a.label, ParallelChooser(scope, a.node, (*self.path, site, a.label), self.ctx))
                for a, scope in found]

    def record(self, site, kind):
        if kind == "value":
            name, _, nodes = self.fork
            return Record(_path(self.path), "value", 1, tuple(nodes), name)
        if kind == "pick":
            found, plan = self._candidates(site, True)
            return Record(_path((*self.path, site)), "pick", plan.k, tuple(a for a, _ in found))
        plan, alt, here = self._alt(site)
        return Record(_path(here), "alt", 1, tuple(a for a, _ in self._options(plan, alt)))

    def shared(self, rule):
        plan, value = self.ctx.shared.get(rule, (None, EMPTY_NODE))
        return ParallelChooser(plan, value, (rule,), self.ctx)


def parallel_graph(space, base=None, input_shape=None, values=()):
    """The dependency graph of the parallel form of `space` (see the module's text)."""
    base = space.validate(base) if base is not None else space.cover()[0]
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(space)
    ctx = _Context(values)
    root = space.root
    for name in space.shared_rules:
        if name in base.root.names():
            ctx.shared[name] = (root.site_plan(base.root, name), base.root[name])
    graph = elaborate(space, ParallelChooser(root, base.root, (), ctx), shape, base=base.text, form="parallel")
    missed = [p for p in values if p not in ctx.matched]
    if missed:
        raise SupernetError(f"`{missed[0]}` names no value choice of `{space.name}` that can run side by side",
                            hint="name a `where`, argument or primitive-argument choice by its derivation path "
                                 "(`*` for any copy), e.g. one of the keys of `d.choices()`")
    return graph, base


def _sites(graph) -> list:
    found = [Site(node, a["args"]["labels"], a["args"]["choice"]) for node, a in graph.nodes(data=True)
             if a["op"] == "gsum"]
    by_path = {s.path: s for s in found}
    sites = []
    for s in found:
        within = []
        parts = s.path.split(".")
        for i in range(1, len(parts) - 1):
            outer = by_path.get(".".join(parts[:i]))
            if outer is not None and parts[i] in outer.labels:
                within.append((outer.path, parts[i]))
        sites.append(attrs.evolve(s, within=tuple(within)))
    return sorted(sites, key=lambda s: len(s.within))  # outer sites first


class ParallelSupernet(torch.fx.GraphModule):
    """The parallel form of `space` for inputs of `input_shape` (per sample): a torch.fx
    GraphModule whose `state_dict` keys are provenance paths (a gate at `{site}.gate`)."""

    def __init__(self, space, input_shape=None, *, base=None, values=(), seed: int | None = 0):
        graph, base = parallel_graph(space, base, input_shape, values)
        modules, fx = module_parts(graph, seed)
        super().__init__(modules, fx, class_name=_class_name(space.name) + "Parallel")
        self.space = space
        self.base = base
        self.network = graph  # the dependency graph (`graph` is torch.fx's)
        self._sites = _sites(graph)
        self._by_path = {s.path: s for s in self._sites}

    @property
    def sites(self) -> dict:
        """{site path: option labels, in order}, outer sites first."""
        return {s.path: s.labels for s in self._sites}

    @property
    def gates(self) -> dict:
        """{site path: its gate}, the module's own parameters (set them in place)."""
        return {s.path: self.get_parameter(f"{s.path}.gate") for s in self._sites}

    def run(self, x, gates: dict):
        """The network on `x` with `gates` ({site path: tensor}) in place of the stored
        ones for this call (gradients flow into them: DARTS' softmax weights)."""
        return torch.func.functional_call(self, {f"{self._site(p).path}.gate": g for p, g in gates.items()}, (x,))

    def set_gates(self, kept: dict):
        """Gates of one at the kept options and zero at the others, at every site in `kept`."""
        with torch.no_grad():
            for path, labels in kept.items():
                site = self._site(path)
                self._check_labels(site, labels)
                gate = self.get_parameter(f"{path}.gate")
                gate.copy_(torch.tensor([float(label in labels) for label in site.labels]))

    def _site(self, path):
        site = self._by_path.get(path)
        if site is None:
            hint = did_you_mean(path, self._by_path) or "the parallel sites are `net.sites`"
            raise SupernetError(f"`{path}` is not a parallel site of `{self.space.name}`", hint=hint)
        return site

    @staticmethod
    def _check_labels(site, labels):
        for label in labels:
            if label not in site.labels:
                raise SupernetError(f"`{site.path}` has no option `{label}`",
                                    hint=did_you_mean(label, site.labels) or f"options: {', '.join(site.labels)}")

    def _active(self, site, kept) -> bool:
        return all(label in kept.get(outer, ()) for outer, label in site.within)

    def derivation_of(self, kept: dict) -> Derivation:
        """The derivation of the space that keeps exactly the `kept` options ({site path:
        set of labels}) at every site they reach (sites inside an option not kept are
        not asked), and the base's choices elsewhere."""
        for path, labels in kept.items():
            self._check_labels(self._site(path), labels)
        root = self.base.root
        done: dict = {}  # choice path -> the site that set it (the places of a shared rule agree)
        for site in self._sites:
            if not self._active(site, kept):
                continue
            labels = set(kept.get(site.path, ()))
            r = site.record
            if not labels:
                raise SupernetError(f"`{site.path}` keeps no option; a derivation takes "
                                    f"{'one' if r.k == 1 else r.k} of {', '.join(site.labels)}")
            if len(labels) != r.k:
                what = "an alternative takes one" if r.kind == "alt" else (
                    "a value site takes one" if r.kind == "value" else f"the pick takes {r.k}")
                raise SupernetError(f"`{site.path}` keeps {len(labels)} options "
                                    f"({', '.join(sorted(labels))}); {what}")
            other = done.get((r.choice, r.name))
            if other is not None:
                if set(kept[other]) != labels:
                    raise SupernetError(f"`{other}` and `{site.path}` are one choice (`{r.choice}`, of a shared "
                                        f"rule) and keep different options",
                                        hint="keep the same options at every place of a shared rule")
                continue
            done[r.choice, r.name] = site.path
            chosen = [v for label, v in zip(site.labels, r.values) if label in labels]
            value = Picked(tuple(chosen)) if r.kind == "pick" else chosen[0]
            root = replace_path(root, split_path(r.choice), value)
        return self.space.validate(Derivation(root))

    def nearest(self, left: dict, scores: dict | None = None) -> tuple[Derivation, int]:
        """The derivation nearest to a network that keeps the `left` options ({site path:
        labels}; a site not named keeps all of them), and how far it is: the options it
        adds or drops, over every place (0: the network is that derivation). Where a site
        keeps other than a derivation's count, the options with the largest `scores` ({site
        path: one number per option}, default the gates' magnitudes) among those left come
        first, then the others in order; the places of a shared rule choose together."""
        scores = scores if scores is not None else {p: g.detach().abs() for p, g in self.gates.items()}
        for path, labels in left.items():
            self._check_labels(self._site(path), labels)
        kept: dict = {}
        distance = 0
        for site in self._sites:  # outer sites first: an option's inner sites are asked once it is kept
            if site.path in kept or not self._active(site, kept):
                continue
            r = site.record
            places = [s for s in self._sites if (s.record.choice, s.record.name) == (r.choice, r.name)
                      and self._active(s, kept)]
            here = {s.path: set(left.get(s.path, s.labels)) for s in places}
            weight = [sum(float(scores[s.path][i]) for s in places if label in here[s.path])
                      for i, label in enumerate(site.labels)]
            order = sorted(range(len(site.labels)), key=lambda i: (-weight[i], i))
            chosen = {site.labels[i] for i in order[:r.k]}
            for s in places:
                kept[s.path] = chosen
                distance += len(chosen ^ here[s.path])
        return self.derivation_of(kept), distance

    def kept(self, d) -> dict:
        """What derivation `d` keeps at each site it reaches: `derivation_of`'s inverse
        (a SupernetError where `d` differs from the base outside the parallel sites)."""
        d = self.space.validate(d)
        kept: dict = {}
        for site in self._sites:
            if not self._active(site, kept):
                continue
            r = site.record
            try:
                held = d[r.choice]
            except KeyError:
                raise SupernetError(f"derivation {d} has no choice at `{r.choice}` (site `{site.path}`): "
                                    "it leaves the parallel supernet's structure",
                                    hint="build the parallel supernet with base=d") from None
            if r.kind == "alt":
                kept[site.path] = {held.label}
            elif r.kind == "pick":
                kept[site.path] = set(held.labels())
            else:
                kept[site.path] = {_value_label(r.name, held[r.name])}
        if self.derivation_of(kept) != d:
            raise SupernetError(f"derivation {d} differs from the parallel supernet's base outside its parallel "
                                "sites", hint="build the parallel supernet with base=d, or name the value sites "
                                              "it differs at in values=")
        return kept

    def keys(self, d) -> dict:
        """{key of `space.compile(d)`'s state_dict: the key holding that tensor here}: the
        same key, less the value labels of the branches `d` takes (`kernel=5`)."""
        return self._keys(d, self.space.compile(d, self.network.graph["input_shape"], seed=None).state_dict())

    def _keys(self, d, state: dict) -> dict:
        kept = self.kept(d)
        found = {}
        for node, a in self.network.nodes(data=True):
            if a["op"] in ("input", "output", "gsum"):
                continue
            parts, own = node.split("."), []
            for i, part in enumerate(parts):
                site = self._by_path.get(".".join(parts[:i]))
                if site is not None and part in site.labels:
                    if part not in kept.get(site.path, ()):
                        break
                    if site.record.kind == "value":
                        continue
                own.append(part)
            else:
                found[".".join(own)] = node
        keys = {}
        for key in state:
            node, _, name = key.rpartition(".")
            while node not in found:  # a primitive's module may hold submodules (`fc1.weight`)
                if not node:
                    raise SupernetError(f"`{key}` of derivation {d}'s module has no tensor here")
                node, _, rest = node.rpartition(".")
                name = f"{rest}.{name}"
            keys[key] = f"{found[node]}.{name}"
        return keys

    def subnet(self, d) -> torch.fx.GraphModule:
        """`space.compile(d)` carrying copies of this module's weights for `d`."""
        child = self.space.compile(d, self.network.graph["input_shape"], seed=None)
        own = self.state_dict()
        child.load_state_dict({k: own[p].detach().clone() for k, p in self._keys(d, child.state_dict()).items()})
        return child.to(next(self.parameters()).device)

    def load_subnet(self, d, child: torch.nn.Module):
        """Write a trained child of `d` back into the branches `d` takes."""
        own = self.state_dict()
        keys = self._keys(d, child.state_dict())
        with torch.no_grad():
            for key, value in child.state_dict().items():
                own[keys[key]].copy_(value)
