"""A checked space with bound parameters, and the operations on it.

    space = nasdsl.load("spaces/nb201.nas", params={"C": 8})
    space.count                      # exact, a Python int
    d = space.sample(seed=0)         # exactly uniform over derivations
    space.parse(d.text) == d         # the canonical text reads back
    space.unrank(space.rank(d)) == d
    child = space.mutate(d, seed=1)  # see nasdsl.operations
"""

from __future__ import annotations

import functools
import random

from . import ast, plan as planning
from .check import build_rules, load_file, reachable
from .derivation import Derivation, Node, distance
from .errors import DerivationError, NasError, Pos, did_you_mean
from .expr import SYMBOLIC, Scope, evaluate, show, type_name
from .syntax import parse_derivation_text


def load(path, params: dict | None = None) -> "Space":
    """Read, check and bind a space file (parameters override the file's defaults)."""
    return Space.from_loaded(load_file(path), params)


def loads(text: str, params: dict | None = None, name: str = "<string>", base=None) -> "Space":
    """Like `load`, from text; imports resolve beside `base` (a file path) if given."""
    return Space.from_loaded(load_file(base, text, name=name), params)


def convert_param(decl: ast.Param, value, pos=None):
    """A parameter value (from Python or a `--param NAME=VALUE` string) of the declared type."""
    type_ = decl.type or "str"
    if isinstance(value, str) and type_ != "str":
        text = value.strip()
        try:
            if type_ == "int":
                value = int(text)
            elif type_ == "float":
                value = float(text)
            elif type_ == "bool":
                if text not in ("true", "false"):
                    raise ValueError
                value = text == "true"
        except ValueError:
            raise NasError(f"parameter `{decl.name}` is {type_}; `{value}` is not", pos) from None
    actual = type_name(value)
    if actual == type_ or (type_ == "float" and actual == "int"):
        return float(value) if type_ == "float" else value
    raise NasError(f"parameter `{decl.name}` is {type_}; got `{show(value)}` ({actual})", pos)


def _refuse_repeats(declared, what: str):
    """A name declared twice (space parameters, presets) is an error at the second."""
    first: dict = {}
    for item in declared:
        if item.name in first:
            raise NasError(f"{what} `{item.name}` is defined twice (also at {first[item.name].pos})", item.pos)
        first[item.name] = item


def _override(header: ast.Header, name: str, value):
    """A parameter value given from outside the file (`params=`, `--param`); its
    errors point at the header, where the parameters are declared."""
    decls = {p.name: p for p in header.params}
    if name not in decls:
        raise NasError(f"space `{header.name}` has no parameter `{name}`", header.pos,
                       did_you_mean(name, decls) or f"its parameters: {', '.join(decls) or 'none'}")
    return convert_param(decls[name], value, decls[name].pos)


class Space:
    """A space file checked and bound to parameter values."""

    def __init__(self, name, header, rules, params, presets, module, is_library=False):
        self.name = name
        self.header = header
        self.rules = rules  # name -> ir.Rule
        self.params = params  # name -> bound value
        self.preset_syntax = {p.name: p for p in presets}
        self.module = module
        self.is_library = is_library

    # ---- construction
    @classmethod
    def from_loaded(cls, loaded, params: dict | None = None) -> "Space":
        module = loaded.module
        header = module.header
        if header is None:
            pos = module.rules[0].pos if module.rules else Pos(module.source, 1, 1)
            raise NasError("a space file starts with `space NAME(...)` (or `library NAME`)", pos,
                           "e.g. `space tiny(num_classes: int = 10)`")
        rules = build_rules(loaded)
        _refuse_repeats(header.params, "space parameter")
        _refuse_repeats(module.presets, "preset")
        decls = {p.name: p for p in header.params}
        for p in header.params:
            if p.type is None:
                raise NasError(f"space parameter `{p.name}` needs a type", p.pos, "e.g. `C: int = 16`")
            if p.type not in ("int", "float", "bool", "str"):
                raise NasError(f"unknown type `{p.type}`", p.pos, "types are int, float, bool, str")
        bound = {}
        for p in header.params:
            if p.default is not None:
                value = evaluate(p.default, Scope(dict(bound)))
                bound[p.name] = convert_param(p, value, p.default.pos)
        for name, value in (params or {}).items():
            bound[name] = _override(header, name, value)
        missing = [p.name for p in header.params if p.name not in bound]
        if missing:
            raise NasError(f"parameter `{missing[0]}` has no default; give it with --param {missing[0]}=VALUE",
                           decls[missing[0]].pos)
        file = module.source.name if module.source else "<string>"
        if not header.library:
            if "network" not in rules:
                raise NasError(f"space `{header.name}` has no `network` rule (the start symbol)", header.pos,
                               "add `network = ...`")
            if rules["network"].params:
                raise NasError("`network` takes no parameters; use the space's parameters", rules["network"].pos)
        space = cls(header.name, header, rules, bound, module.presets, module, header.library)
        space._file = file
        return space

    def bind(self, **params) -> "Space":
        """The same space with some parameters changed."""
        new = dict(self.params)
        for name, value in params.items():
            new[name] = _override(self.header, name, value)
        space = Space(self.name, self.header, self.rules, new, tuple(self.preset_syntax.values()),
                      self.module, self.is_library)
        space._file = self._file
        return space

    # ---- plans
    @functools.cached_property
    def planner(self) -> planning.Planner:
        return planning.Planner(self.rules, self.params, self._file)

    @functools.cached_property
    def shared_rules(self) -> list[str]:
        return [r for r in reachable(self.rules, "network") if self.rules[r].shared]

    @functools.cached_property
    def root(self) -> planning.PScope:
        """The plan of the whole space: shared rules first, then `network`'s choices."""
        if self.is_library:
            raise NasError(f"`{self.name}` is a library: it has rules to import but no network", self.header.pos)
        shared = []
        for name in self.shared_rules:
            rule = self.rules[name]
            plan = planning._collapse(self.planner.rule_scope(name, (SYMBOLIC,) * len(rule.params), rule.pos))
            if plan is not planning.EMPTY:
                shared.append((name, plan))
        net = self.planner.rule_scope("network", (), self.rules["network"].pos)
        variants = []
        for assignment, sites, weight in net.variants:
            clash = {n for n, _ in shared} & ({n for n, _ in assignment} | {n for n, _ in sites})
            if clash:
                raise NasError(f"`network` has a choice named `{clash.pop()}`, like a shared rule",
                               self.rules["network"].pos)
            sites = tuple(("alt", s) if n is None else (n, s) for n, s in sites)
            variants.append((assignment, tuple(shared) + sites, weight))
        root = planning.PScope(tuple(variants), key=("network", ()))
        if root.count == 0:
            pos = getattr(self.planner.rejected_by, "pos", None) or self.header.pos
            raise NasError(f"space `{self.name}` is empty: its constraints exclude every derivation", pos,
                           "relax a `require`, or check the parameters")
        return root

    @property
    def count(self) -> int:
        """The exact number of derivations."""
        return self.root.count

    def check(self) -> "Space":
        """Build every plan and read every preset: all static errors surface here."""
        if not self.is_library:
            _ = self.root
            for name in self.preset_syntax:
                self.preset(name)
        return self

    # ---- derivations
    def _rng(self, seed=None, rng=None):
        return rng if rng is not None else random.Random(seed)

    def sample(self, seed=None, *, rng=None, method: str = "uniform") -> Derivation:
        """One derivation: `uniform` over all derivations (exact), or `per-choice`
        (each choice drawn on its own, by the weights written in the file)."""
        rng = self._rng(seed, rng)
        if method == "uniform":
            return Derivation(self.root.sample(rng))
        if method == "per-choice":
            return Derivation(self.root.sample_per_choice(rng))
        raise ValueError(f"unknown sampling method `{method}` (uniform, per-choice)")

    def samples(self, n: int, seed=None, method: str = "uniform") -> list[Derivation]:
        rng = random.Random(seed)
        return [self.sample(rng=rng, method=method) for _ in range(n)]

    def sample_weighted(self, weight, max_weight: float, seed=None, *, rng=None, max_tries: int = 100_000):
        """A derivation drawn with probability proportional to `weight(d)`.

        Exact rejection sampling from the uniform sampler; `max_weight` must bound
        `weight` from above (e.g. the largest model's size for size-proportional
        sampling, as NAO-V2's balanced sampling needs)."""
        rng = self._rng(seed, rng)
        if not max_weight > 0:
            raise ValueError("max_weight must be positive")
        for _ in range(max_tries):
            d = self.sample(rng=rng)
            w = weight(d)
            if w < 0 or w > max_weight * (1 + 1e-9):
                raise ValueError(f"weight {w} is outside [0, max_weight={max_weight}]")
            if rng.random() * max_weight < w:
                return d
        raise RuntimeError(f"no sample accepted in {max_tries} tries; is max_weight far too large?")

    def unrank(self, rank: int) -> Derivation:
        """The derivation at `rank` in the space's canonical order (0 <= rank < count)."""
        if not 0 <= rank < self.count:
            raise IndexError(f"rank {rank} is outside 0..{self.count - 1}")
        return Derivation(self.root.unrank(rank))

    def rank(self, d: Derivation) -> int:
        try:
            return self.root.rank(d.root)
        except (KeyError, ValueError, IndexError, TypeError, AttributeError):
            return self.root.rank(self.validate(d).root)

    def enumerate(self):
        """All derivations, lazily, in rank order."""
        for node in self.root.iterate():
            yield Derivation(node)

    def __iter__(self):
        return self.enumerate()

    def parse(self, text: str) -> Derivation:
        """Read a derivation's text; a DerivationError names the path and what is allowed."""
        raw = parse_derivation_text(text)
        return Derivation(self.root.read(raw, ""))

    def validate(self, d: Derivation) -> Derivation:
        """`d` if it is a member of this space, else a DerivationError."""
        if not isinstance(d, Derivation):
            raise TypeError(f"expected a Derivation, got {type(d).__name__}")
        try:
            self.root.rank(d.root)  # a structural walk: fast, and fails on any non-member
            return d
        except (KeyError, ValueError, IndexError, TypeError, AttributeError):
            return self.parse(d.text)  # slow path: names the path and what is allowed

    def __contains__(self, d) -> bool:
        try:
            self.validate(d)
        except DerivationError:
            return False
        return True

    # ---- presets
    @property
    def presets(self) -> list[str]:
        return list(self.preset_syntax)

    def preset_params(self, name: str) -> dict:
        syntax = self._preset_syntax(name)
        return {k: evaluate(v, Scope(dict(self.params))) for k, v in syntax.params}

    def _preset_syntax(self, name):
        try:
            return self.preset_syntax[name]
        except KeyError:
            raise NasError(f"space `{self.name}` has no preset `{name}`", None,
                           did_you_mean(name, self.preset_syntax) or
                           f"presets: {', '.join(self.preset_syntax) or 'none'}") from None

    def preset(self, name: str) -> Derivation:
        """A named derivation of the file; if the preset sets parameters, it belongs to
        `space.bind(**space.preset_params(name))` (`preset_space` gives that space)."""
        syntax = self._preset_syntax(name)
        space = self.preset_space(name)
        try:
            return Derivation(space.root.read(syntax.value, ""))
        except DerivationError as err:
            raise NasError(f"preset `{name}`: {err.message}", err.pos or syntax.pos, err.hint) from None

    def preset_space(self, name: str) -> "Space":
        params = self.preset_params(name)
        return self.bind(**params) if params else self

    # ---- summaries
    def rule_counts(self) -> dict:
        """Per rule: the number of derivations for each argument tuple it was used with."""
        _ = self.root
        out: dict = {}
        for (rule, args), scope in self.planner.memo.items():
            out.setdefault(rule, {})[args] = scope.count
        return out

    # operations live in nasdsl.operations; thin methods keep the API in one place
    def mutate(self, d, seed=None, *, rng=None, kind: str = "choice"):
        from .operations import mutate

        return mutate(self, d, self._rng(seed, rng), kind)

    def crossover(self, a, b, seed=None, *, rng=None):
        from .operations import crossover

        return crossover(self, a, b, self._rng(seed, rng))

    def distance(self, a, b) -> int:
        return distance(self.validate(a), self.validate(b))

    def restrict(self, keep: dict):
        from .restrict import restrict

        return restrict(self, keep)

    # the compiler: derivation → graph → module
    def graph(self, d, input_shape=None):
        """The dependency graph (`networkx.DiGraph`) of `d`; see nasdsl.graph."""
        from .graph import build_graph

        return build_graph(self, d, input_shape)

    def compile(self, d, input_shape=None, seed: int | None = 0):
        """The PyTorch module (`torch.fx.GraphModule`) of `d`; see nasdsl.module."""
        from .module import build_module

        return build_module(self.graph(d, input_shape), seed)

    def __repr__(self):
        params = ", ".join(f"{k}={show(v)}" for k, v in self.params.items())
        return f"<Space {self.name}({params})>"


__all__ = ["Space", "load", "loads", "Derivation", "Node"]
