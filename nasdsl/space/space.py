"""A checked space with bound parameters, and the operations on it.

    space = nasdsl.load("spaces/nb201.nas", params={"C": 8})
    space.count                      # exact, a Python int
    d = space.sample(seed=0)         # exactly uniform over derivations
    space.parse(d.text) == d         # the canonical text reads back
    space.unrank(space.rank(d)) == d
    child = space.mutate(d, seed=1)  # see nasdsl.space.operations
"""

from __future__ import annotations

import functools
import random

from ..language import ast, ir
from ..language.check import build_rules, reachable
from ..language.errors import DerivationError, NasError, Pos, Source, did_you_mean
from ..language.expr import SYMBOLIC, Scope, evaluate, show, type_name
from ..language.printer import value as expr_text
from ..language.syntax import parse_derivation_text
from . import encoding as encoding_
from . import operations
from . import plan as planning
from . import restrict as restriction
from . import subspace as subspaces
from .derivation import Derivation, Node, distance


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


def _parts(expr):
    """A value expression and every expression inside it (a choice's values are not entered)."""
    return ir.walk(expr, lambda e: not isinstance(e, (ir.VChoice, ir.VRange)))


def _start(expr):
    """Where an expression's text begins (a binary operation's own position is its operator)."""
    while isinstance(expr, ast.BinOp):
        expr = expr.left
    return expr.pos


def _literal(value) -> str:
    """A value as a space file writes it (strings quoted)."""
    return f'"{value}"' if isinstance(value, str) else show(value)


def _defaults(header: ast.Header) -> dict:
    """The space parameters' values written in the header (a default may use earlier ones)."""
    bound: dict = {}
    for p in header.params:
        if p.default is not None:
            bound[p.name] = convert_param(p, evaluate(p.default, Scope(dict(bound))), p.default.pos)
    return bound


def _parameter_scope(network, params: dict):
    """For each space parameter, and each `where` name of `network` computed from them
    without a choice: the parameters it reads, and its value."""
    reads, values = {name: {name} for name in params}, dict(params)
    for w in network.wheres:
        found = _reads(w.value, reads, network)
        if found is not None:
            try:
                values[w.name] = evaluate(w.value, Scope(dict(values)))
            except NasError:
                continue  # reported where it is planned, as before
            reads[w.name] = found
    return reads, values


def _reads(expr, reads: dict, network):
    """The space parameters `expr` reads, or None when it reads a choice or a name that
    depends on one. Names that are no parameter or `where` name are symbols (`relu`)."""
    found = set()
    local = {w.name for w in network.wheres}
    for e in _parts(expr):
        if isinstance(e, (ir.VChoice, ir.VRange)):
            return None
        if isinstance(e, ast.Var) and e.name in reads:
            found |= reads[e.name]
        elif isinstance(e, ast.Var) and e.name in local:
            return None
    return found


def _holds(require, values) -> bool:
    holds = evaluate(require, Scope(dict(values)))
    if not isinstance(holds, bool):
        raise NasError(f"`require` must be true or false, got `{show(holds)}`", _start(require))
    return holds


def check_parameter_requires(space: "Space"):
    """A `require` of `network` that reads space parameters and nothing chosen (directly,
    or through `where` names computed from them) is a condition on the parameters. It is
    checked when the space is bound, so a bad `--param` is named as such instead of
    leaving an empty space. Requires in other rules stay filters: those rules may be
    reached only under some `if` or alternative."""
    if space.is_library:
        return
    network = space.rules["network"]
    reads, values = _parameter_scope(network, space.params)
    for require in network.requires:
        params = _reads(require, reads, network)
        if params and not _holds(require, values):
            names = [p.name for p in space.header.params if p.name in params]
            raise _parameter_error(space, network, require, names)


def _parameter_error(space: "Space", network, require, names: list) -> NasError:
    """`parameter `C` = 0 is not allowed: `require C >= 1` fails`, with a hint toward
    values that pass: the defaults, and for one parameter the require's own constants."""
    given = ", ".join(f"`{n}` = {_literal(space.params[n])}" for n in names)
    what = f"parameter {given} is" if len(names) == 1 else f"parameters {given} are"
    message, pos = f"{what} not allowed: `require {expr_text(require)}` fails", _start(require)
    defaults = _defaults(space.header)
    if all(n in defaults and space.params[n] == defaults[n] for n in names):
        return NasError(message, pos, "the file's defaults fail it: change them in the space header "
                                      "or relax the `require`")

    def passes(values: dict) -> bool:
        try:
            return _holds(require, _parameter_scope(network, {**space.params, **values})[1])
        except NasError:
            return False

    how = f"set {'it' if len(names) == 1 else 'them'} with " + " ".join(f"--param {n}=VALUE" for n in names)
    if len(names) > 1:
        good = all(n in defaults for n in names) and passes({n: defaults[n] for n in names})
        shown = ", ".join(f"{n}={_literal(defaults.get(n))}" for n in names)
        return NasError(message, pos, f"it holds for the defaults ({shown}); {how}" if good else how)
    name, decl = names[0], next(p for p in space.header.params if p.name == names[0])
    candidates = [defaults[name]] if name in defaults else []
    for e in _parts(require):  # the require's constants and symbols, or their neighbours where they fail
        if isinstance(e, ast.Var):
            candidates.append(e.name)
        elif isinstance(e, (ast.Num, ast.Str, ast.Bool)):
            candidates.append(e.value)
            if type(e.value) is int and not passes({name: e.value}):
                candidates += [e.value + 1, e.value - 1]
    found = []
    for v in candidates:
        try:
            v = convert_param(decl, v)
        except NasError:
            continue  # a constant of another type
        if v not in found and passes({name: v}):
            found.append(v)
    shown = ", ".join(_literal(v) + (" (the default)" if v == defaults.get(name) else "") for v in found[:4])
    return NasError(message, pos, f"it holds for `{name}` = {shown}; {how}" if found else how)


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
        self.only_syntax = getattr(module, "only", ())  # a finite space's `only` statements

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
        bound = _defaults(header)
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
        if header.library and module.only:
            raise NasError("a library keeps no derivations: `only` belongs in a `space` file", module.only[0].pos)
        space = cls(header.name, header, rules, bound, module.presets, module, header.library)
        space._file = file
        check_parameter_requires(space)
        return space

    def bind(self, **params) -> "Space":
        """The same space with some parameters changed."""
        new = dict(self.params)
        for name, value in params.items():
            new[name] = _override(self.header, name, value)
        space = type(self)(self.name, self.header, self.rules, new, tuple(self.preset_syntax.values()),
                      self.module, self.is_library)
        space._file = self._file
        check_parameter_requires(space)
        return space

    # ---- plans
    @functools.cached_property
    def planner(self) -> planning.Planner:
        return planning.Planner(self.rules, self.params, self._file)

    @functools.cached_property
    def shared_rules(self) -> list[str]:
        return [r for r in reachable(self.rules, "network") if self.rules[r].shared]

    @functools.cached_property
    def root(self):
        """The plan of the whole space: the grammar's, or for a finite space (`only`
        statements) the set they keep, a PFinite over the grammar's plan."""
        if not self.only_syntax:
            return self.grammar_root
        return planning.PFinite(self.grammar_root, self._kept())

    @property
    def finite(self) -> bool:
        """Whether `only` statements list the derivations (a sub-space)."""
        return bool(self.only_syntax)

    def _kept(self) -> list:
        """The members the `only` statements name, each neighbourhood found in the grammar."""
        grammar = self.grammar_root
        kept: dict = {}
        for only in self.only_syntax:
            try:
                d = Derivation(grammar.read(only.value, ""))
            except DerivationError as err:
                raise NasError(f"`only`: {err.message}", err.pos or only.pos, err.hint) from None
            try:
                near = subspaces.neighbourhood_in(grammar, d, only.radius) if only.radius else [d]
            except ValueError as err:
                raise NasError(f"`only within {only.radius}`: {err}", only.pos,
                               "a smaller radius, or list the derivations one by one") from None
            kept.update((x.root, None) for x in near)
        return sorted(kept, key=grammar.rank)

    @functools.cached_property
    def grammar_root(self) -> planning.PScope:
        """The grammar's plan: shared rules first, then `network`'s choices (a finite
        space's members are derivations of it)."""
        if self.is_library:
            raise NasError(f"`{self.name}` is a library: it has rules to import but no network", self.header.pos)
        shared = []
        for name in self.shared_rules:
            rule = self.rules[name]
            plan = planning._collapse(self.planner.rule_scope(name, (SYMBOLIC,) * len(rule.params), rule.pos))
            if plan is not planning.EMPTY:
                shared.append(planning.Site(name, plan))
        net = self.planner.rule_scope("network", (), self.rules["network"].pos)
        variants = []
        for v in net.variants:
            clash = {s.name for s in shared} & planning.variant_names(v)
            if clash:
                raise NasError(f"`network` has a choice named `{clash.pop()}`, like a shared rule",
                               self.rules["network"].pos)
            variants.append(planning.Variant(v.assignment, tuple(shared) + planning.named_alt(v.sites), v.weight,
                                             v.order))
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
        return list(self.iter_samples(n, seed, method))

    def iter_samples(self, n: int, seed=None, method: str = "uniform"):
        """`samples`, drawn one at a time: the same derivations, for streams too long to hold."""
        rng = random.Random(seed)
        for _ in range(n):
            yield self.sample(rng=rng, method=method)

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

    def cover(self, limit: int = 10_000) -> list[Derivation]:
        """Derivations that together take every option of every alternative, every
        candidate of every pick and every symbol or flag, at every place it can be
        taken, each with the largest numbers and repetitions: what a weight-sharing
        supernet is sized from, without enumerating the space. Each new derivation
        takes, at every place, what the ones before took least, until every
        (place, choice) is reached (at most `limit` derivations). In a finite space
        they are members: each next one the member taking the most (path, value)
        pairs not yet taken, until every pair some member takes is."""
        if self.finite:
            return self._cover_members(limit)
        wanted = planning.Wanted()
        self.root.choices((), wanted)
        state = planning.Covering()
        found: dict = {}
        while len(found) < limit:
            before = len(state.reached)
            d = Derivation(self.root.cover(state, ()))
            if d in found and len(state.reached) == before:
                break
            found[d] = None
            if wanted <= state.reached:
                break
        return list(found)

    def _cover_members(self, limit: int) -> list[Derivation]:
        pairs = {m: {(p, repr(v)) for p, v in Derivation(m).choices().items()} for m in self.root.members}
        missing = set().union(*pairs.values())
        found = []
        while missing and len(found) < limit:
            best = max(pairs, key=lambda m: len(pairs[m] & missing))
            found.append(Derivation(best))
            missing -= pairs.pop(best)
        return found

    def parse(self, text: str) -> Derivation:
        """Read a derivation's text; a DerivationError names the path and what is allowed."""
        raw = parse_derivation_text(text)
        return Derivation(self.root.read(raw, ""))

    def parse_lines(self, text: str, name: str = "<string>") -> list[Derivation]:
        """The derivations of a list, one text per line (blank lines and `#` comments
        skipped); an error names the line (`file:line:1`) and what is wrong with it."""
        found, source = [], Source(name, text)
        for number, line in enumerate(text.split("\n"), 1):
            line = line.split("#", 1)[0].strip()
            if line:
                try:
                    found.append(self.parse(line))
                except NasError as err:
                    raise NasError(err.message, Pos(source, number, 1), err.hint) from None
        return found

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

    # ---- token sequences (nasdsl.space.encoding)
    def encoding(self) -> encoding_.Encoding:
        """The space's fixed-length token layout and vocabulary, built once."""
        return self._encoding

    @functools.cached_property
    def _encoding(self) -> encoding_.Encoding:
        return encoding_.build(self)

    def encode(self, d: Derivation) -> tuple:
        """`d` as `encoding().length` token ids (see nasdsl.space.encoding)."""
        return self._encoding.encode(d)

    def decode(self, seq, repair: bool = False) -> Derivation:
        """The derivation a token sequence encodes; a DerivationError names the first
        position that is not allowed (or, with `repair`, the nearest allowed token is taken)."""
        return self._encoding.decode(seq, repair)

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
        if not params:
            return self
        try:
            return self.bind(**params)
        except NasError as err:  # the preset's values are what to fix: point there
            raise NasError(f"preset `{name}`: {err.message}", self._preset_syntax(name).pos,
                           f"see {err.pos}" if err.pos else err.hint) from None

    # ---- summaries
    def rule_counts(self) -> dict:
        """Per rule: the number of derivations for each argument tuple it was used with."""
        _ = self.root
        out: dict = {}
        for (rule, args), scope in self.planner.memo.items():
            out.setdefault(rule, {})[args] = scope.count
        return out

    # operations live in nasdsl.space.operations; thin methods keep the API in one place
    def mutate(self, d, seed=None, *, rng=None, kind: str = "choice"):
        return operations.mutate(self, d, self._rng(seed, rng), kind)

    def crossover(self, a, b, seed=None, *, rng=None):
        return operations.crossover(self, a, b, self._rng(seed, rng))

    def distance(self, a, b) -> int:
        return distance(self.validate(a), self.validate(b))

    def restrict(self, keep: dict):
        if self.finite:
            raise NasError(f"space `{self.name}` is a finite set (`only` statements): it is not restricted by paths",
                           self.only_syntax[0].pos, "take the members you want: `space.subspace(...)`")
        return restriction.restrict(self, keep)

    def neighbourhood(self, d, r: int = 1, limit: int = subspaces.NEIGHBOURHOOD_LIMIT) -> list:
        """Every derivation within distance `r` of `d`, each once, `d` first (see nasdsl.space.subspace)."""
        return subspaces.neighbourhood(self, d, r, limit)

    def subspace(self, derivations) -> "subspaces.SubSpace":
        """The finite set of `derivations` as a SubSpace (membership, count, sampling, enumeration)."""
        return subspaces.SubSpace.of(self, derivations)

    def __repr__(self):
        params = ", ".join(f"{k}={show(v)}" for k, v in self.params.items())
        return f"<Space {self.name}({params})>"


__all__ = ["Space", "Derivation", "Node"]  # load and loads: nasdsl.compiler.space (the Space that compiles)
