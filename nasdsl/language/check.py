"""Syntax tree → checked rules (`nasdsl.language.ir`): imports resolved, names resolved,
arities and literal types checked, every choice site named, and rules that can
never finish deriving found before anything is counted.

The rules are built once, with a placeholder for each site; a separate pass
(`_Namer.assign`, then `ir.renamed`) gives the final names, which depend only on
each scope's own sites (see `_Namer`)."""

from __future__ import annotations

import collections
from pathlib import Path

import attrs

from . import ast, ir, primitives
from .errors import NasError, did_you_mean
from .syntax import parse_module, read_source

MAX_IMPORT_DEPTH = 32


def shipped_spaces_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("nasdsl.spaces")))


# ---- imports -------------------------------------------------------------------
@attrs.frozen
class Loaded:
    """A parsed file with the rules it sees (its own and imported)."""

    module: ast.Module
    path: Path | None
    rules: dict  # name -> (ast.Rule, owning Loaded's module)


def _resolve_import(imp: ast.Import, importer: Path | None) -> Path:
    rel = Path(imp.path)
    if rel.is_absolute() or imp.path.startswith("~"):
        raise NasError(f"import `{imp.path}` is an absolute path", imp.pos,
                       "imports are relative to the importing file or to the shipped spaces/ folder")
    if rel.suffix != ".nas":
        raise NasError(f"import `{imp.path}` is not a .nas file", imp.pos)
    bases = ([importer.parent] if importer is not None else []) + [shipped_spaces_dir()]
    for base in bases:
        base = base.resolve()
        candidate = (base / rel).resolve()
        if not candidate.is_relative_to(base):
            raise NasError(f"import `{imp.path}` leaves the folder it is resolved in", imp.pos,
                           "imports may name files beside the importing file (or below it) and in spaces/")
        if candidate.is_file():
            return candidate
    raise NasError(f"cannot find `{imp.path}`", imp.pos,
                   "looked beside the importing file and in the shipped spaces/ folder")


def load_file(path, text: str | None = None, _stack=(), name: str | None = None) -> Loaded:
    """Parse a file and, recursively, what it imports."""
    path = Path(path).resolve() if path is not None else None
    if name is None:
        name = str(path) if path is not None else "<string>"
    if path is not None and name == str(path):
        try:
            name = str(path.relative_to(Path.cwd()))
        except ValueError:
            pass
    if text is None:
        text = read_source(path, name)
    module = parse_module(text, name)
    rules: dict = {}
    for imp in module.imports:
        target = _resolve_import(imp, path)
        if target in _stack or target == path:
            chain = " -> ".join(p.name for p in (*_stack, path, target) if p is not None)
            raise NasError(f"import cycle: {chain}", imp.pos)
        if len(_stack) >= MAX_IMPORT_DEPTH:
            raise NasError("imports nest too deep", imp.pos)
        loaded = load_file(target, None, (*_stack, path) if path is not None else _stack)
        # `import "f.nas"` takes every rule but the file's `network`; `from ... import a, b`
        # takes those. Either way the rules they call come along, and a name may
        # only mean one rule.
        wanted = imp.names if imp.names is not None else tuple(
            r.name for r in loaded.module.rules if r.name != "network")
        for rule_name in wanted:
            if rule_name not in loaded.rules:
                raise NasError(f"`{imp.path}` has no rule `{rule_name}`", imp.pos,
                               did_you_mean(rule_name, loaded.rules))
        for rule_name in syntax_reachable({n: r for n, (r, _) in loaded.rules.items()}, wanted):
            entry = loaded.rules[rule_name]
            if rule_name in rules and rules[rule_name][0] is not entry[0]:
                raise NasError(f"two different rules named `{rule_name}` are imported "
                               f"({rules[rule_name][0].pos} and {entry[0].pos})", imp.pos)
            rules[rule_name] = entry
    for rule in module.rules:
        if rule.name in rules:
            first = rules[rule.name]
            what = "defined twice" if first[1] is module else "defined here and imported"
            raise NasError(f"rule `{rule.name}` is {what} (also at {first[0].pos})", rule.pos)
        rules[rule.name] = (rule, module)
    return Loaded(module, path, rules)


def calls_in_syntax(node):
    """Names called anywhere in a syntax tree."""
    if isinstance(node, ast.Call):
        yield node.name
    if isinstance(node, tuple):
        for n in node:
            yield from calls_in_syntax(n)
    elif attrs.has(type(node)):
        for field in attrs.fields(type(node)):
            yield from calls_in_syntax(getattr(node, field.name))


def syntax_reachable(rules: dict, start) -> list:
    """Rule names reachable from the names in `start` through calls, in `rules`' order."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen or name not in rules:
            continue
        seen.add(name)
        todo.extend(calls_in_syntax(rules[name]))
    return [n for n in rules if n in seen]


# ---- site naming -----------------------------------------------------------------
class _Namer:
    """Names sites: placeholders while the rules are built, final names after.

    A site's final name depends on every other site of its scope (`conv` is
    numbered `conv1` only if a second `conv` follows), so it is known only once
    the scope is built. The builder calls `name(base, explicit, pos)` for each
    site and gets a placeholder unique to that site; `assign` then gives each
    placeholder its final name, and `ir.renamed` writes them in. The invariant
    derivation paths rest on: a site's name depends only on the sites of its own
    scope, in the order they are written, never on the order the builder happens
    to visit scopes in (the rules are built once; nothing is visited twice and
    matched up by position). Sites in the two branches of one `if` never
    coexist, so they may share a name.
    """

    def __init__(self):
        self.collected: list[list] = []
        self.stack: list[list] = []
        self.scopes = 0
        self.branches: list = []  # (if id, side) on the way to the current site
        self.ifs = 0

    def enter(self):
        sid = self.scopes
        self.scopes += 1
        self.collected.append([])
        self.stack.append([sid, 0])

    def leave(self):
        self.stack.pop()

    def new_if(self) -> int:
        self.ifs += 1
        return self.ifs

    def name(self, base: str, explicit: bool, pos) -> str:
        """The placeholder of a new site of the current scope (no file can write it)."""
        sid, i = self.stack[-1]
        self.stack[-1][1] += 1
        self.collected[sid].append((base, explicit, pos, dict(self.branches)))
        return f"\0{sid}.{i}"

    @staticmethod
    def _coexist(a: dict, b: dict) -> bool:
        return all(b.get(k, side) == side for k, side in a.items())

    def assign(self) -> dict:
        """{placeholder: final name} for every site named so far."""
        return {f"\0{sid}.{i}": name for sid, entries in enumerate(self.collected)
                for i, name in enumerate(self._assign_scope(entries))}

    def _assign_scope(self, entries) -> list[str]:
        """Explicit names stay (two coexisting ones clash); an automatic name is its
        base, numbered from 1 with the smallest number no coexisting site has taken
        when other coexisting sites share the base. Sites are grouped by the `if`
        sides they sit under, so a long scope costs linear time."""
        sides = [tuple(sorted(branch.items())) for *_, branch in entries]
        groups = list(dict.fromkeys(sides))
        along = {a: [b for b in groups if self._coexist(dict(a), dict(b))] for a in groups}
        used: dict = {g: set() for g in groups}  # names given so far, by group
        names: list = [None] * len(entries)
        for i, (base, explicit, pos, _) in enumerate(entries):
            if explicit:
                if any(base in used[g] for g in along[sides[i]]):
                    raise NasError(f"two sites are named `{base}` in one scope", pos, "rename one of them (`as NAME`)")
                names[i] = base
                used[sides[i]].add(base)
        sharing = collections.Counter((base, side) for (base, *_), side in zip(entries, sides))
        next_number: dict = {}  # (base, group) -> the smallest number that may be free
        for i, (base, explicit, _, _) in enumerate(entries):
            if explicit:
                continue
            group = sides[i]
            if sum(sharing[base, g] for g in along[group]) == 1:
                names[i] = base
            else:
                sep = "_" if base[-1].isdigit() else ""
                n = next_number.get((base, group), 1)
                while any(f"{base}{sep}{n}" in used[g] for g in along[group]):
                    n += 1
                next_number[base, group] = n
                names[i] = f"{base}{sep}{n}"
            used[group].add(names[i])
        return names


# ---- rules → ir ----------------------------------------------------------------------
def _literal_type(expr):
    """The type of a literal expression, or None when it is not a literal."""
    if isinstance(expr, ast.Num):
        return "int" if isinstance(expr.value, int) else "float"
    if isinstance(expr, ast.Bool):
        return "bool"
    if isinstance(expr, (ast.Str,)):
        return "str"
    return None


def _check_literal(expr, type_: str, allowed, what: str, bound):
    """Refuse literals, choice values and symbols (names that are no parameter or
    binding in `bound`) that cannot have the declared type. Computed values are
    checked when the space is planned."""
    values = expr.values if isinstance(expr, ast.Choice) else [expr]
    for v in values:
        if isinstance(v, ast.Var):
            if v.name in bound:
                continue
            if type_ != "str":
                raise NasError(f"{what} takes {type_}, got `{v.name}`, which is not a parameter or a `where` name here",
                               v.pos, did_you_mean(v.name, bound))
            if allowed and v.name not in allowed:
                raise NasError(f"{what} takes one of {', '.join(allowed)}; got `{v.name}`", v.pos,
                               did_you_mean(v.name, [*allowed, *bound]))
            continue
        t = _literal_type(v)
        if t is None:
            continue
        if t == type_ or (type_ == "float" and t == "int"):
            continue
        raise NasError(f"{what} takes {type_}, got `{_show_literal(v)}` ({t})", v.pos)


def _show_literal(v):
    if isinstance(v, ast.Bool):
        return "true" if v.value else "false"
    return str(v.value)


def _body_label(body) -> str:
    """An alternative's automatic label: its callee names joined (`conv_bn_relu`)."""
    if isinstance(body, ast.Labelled):
        return body.label
    if isinstance(body, ast.Call):
        return body.name
    if isinstance(body, ast.Seq) and all(isinstance(i, ast.Call) for i in body.items):
        return "_".join(i.name for i in body.items)
    if isinstance(body, ast.Repeat):
        return _body_label(body.body)
    return "opt"


class _RuleBuilder:
    def __init__(self, rules: dict, space_params: dict, namer: _Namer):
        self.rules = rules  # name -> (ast.Rule, module)
        self.space_params = space_params
        self.namer = namer

    # -- scopes and names
    def build_rule(self, rule: ast.Rule, module) -> ir.Rule:
        self.module = module
        self.rule = rule
        self.dag_names: list[set] = []
        own_params = {p.name for p in module.header.params} if module.header else set()
        self.foreign_params = own_params if module is not self.main_module else set()
        seen = set()
        for p in rule.params:
            if p.name in seen:
                raise NasError(f"parameter `{p.name}` is listed twice", p.pos)
            seen.add(p.name)
            if p.type is not None and p.type not in primitives.TYPES:
                raise NasError(f"unknown type `{p.type}`", p.pos, f"types are {', '.join(primitives.TYPES)}")
        self.bound = set(seen)
        if module is self.main_module:
            self.bound |= set(self.space_params)
        self.namer.enter()
        wheres = []
        for b in rule.wheres:
            if b.name in self.bound:
                raise NasError(f"`{b.name}` is already a parameter", b.pos)
            value, sites = self.value_with_sites(b.value, b.name)
            wheres.append(ir.Where(b.name, value, sites, syntax=b))
            self.bound.add(b.name)
        body = self.net(rule.body, top=True)
        self.namer.leave()
        requires = tuple(self.plain_value(r, "`require`") for r in rule.requires)
        return ir.Rule(rule.name, rule.params, body, rule.shared, tuple(wheres), requires,
                       module.source.name if module.source else "<string>", syntax=rule)

    def scope(self, fn, *args):
        self.namer.enter()
        try:
            return fn(*args)
        finally:
            self.namer.leave()

    # -- value expressions
    def value_with_sites(self, expr, base: str):
        """A value expression whose choices become named sites (in the current scope)."""
        sites = []

        def walk(e):
            if isinstance(e, ast.Choice):
                site = self.namer.name(base, False, e.pos)
                sites.append(site)
                values = tuple(self.plain_value(v, "a choice's value") for v in e.values)
                return ir.VChoice(site, values, e.weights, pos=e.pos, syntax=e)
            if isinstance(e, ast.Range):
                site = self.namer.name(base, False, e.pos)
                sites.append(site)
                parts = [self.plain_value(x, "a range bound") if x is not None else None
                         for x in (e.lo, e.hi, e.step)]
                return ir.VRange(site, *parts, pos=e.pos, syntax=e)
            return self.value(e, walk)

        return walk(expr), tuple(sites)

    def argument(self, expr, name: str, what: str):
        """A call's argument: a value, or a choice as a whole (its site is named after
        the argument and holds the argument's value). A choice inside an expression
        (`16 * {1, 2}`) would be recorded under the argument's name with a value that
        is not the argument's, so it must be bound with `where`."""
        if isinstance(expr, (ast.Choice, ast.Range)):
            return self.value_with_sites(expr, name)
        return self.plain_value(expr, what, "a choice inside an expression would be recorded as the argument's "
                                "value; bind it with `where NAME = {...}` and use NAME in the expression, "
                                "or make the whole argument the choice"), ()

    def count_site(self, e, site: str):
        """A repetition's count; when chosen, the choice is the repetition's own site."""
        if isinstance(e, ast.Choice):
            values = tuple(self.plain_value(v, "a repetition count") for v in e.values)
            return ir.VChoice(site, values, e.weights, pos=e.pos, syntax=e)
        if isinstance(e, ast.Range):
            parts = [self.plain_value(x, "a range bound") if x is not None else None for x in (e.lo, e.hi, e.step)]
            return ir.VRange(site, *parts, pos=e.pos, syntax=e)
        return self.plain_value(e, "a repetition count")

    def plain_value(self, expr, what: str, hint="bind the choice with `where NAME = {...}` and use NAME"):
        """A value expression in which choices are not allowed."""

        def walk(e):
            if isinstance(e, (ast.Choice, ast.Range)):
                raise NasError(f"{what} cannot contain a choice", e.pos, hint)
            return self.value(e, walk)

        return walk(expr)

    def value(self, e, walk):
        if isinstance(e, ast.Var):
            if e.name in self.foreign_params and e.name not in self.bound:
                raise NasError(f"imported rule `{self.rule.name}` uses its file's space parameter `{e.name}`",
                               e.pos, "rules meant for import take what they need as arguments")
            return e
        if isinstance(e, (ast.Num, ast.Str, ast.Bool)):
            return e
        if isinstance(e, ast.BinOp):
            return ast.BinOp(e.op, walk(e.left), walk(e.right), pos=e.pos)
        if isinstance(e, ast.Neg):
            return ast.Neg(walk(e.operand), pos=e.pos)
        if isinstance(e, ast.Not):
            return ast.Not(walk(e.operand), pos=e.pos)
        if isinstance(e, ast.BoolOp):
            return ast.BoolOp(e.op, tuple(walk(o) for o in e.operands), pos=e.pos)
        if isinstance(e, ast.Cond):
            return ast.Cond(walk(e.test), walk(e.then), walk(e.orelse), pos=e.pos)
        if isinstance(e, ast.Func):
            from .expr import BUILTINS

            if e.name not in BUILTINS:
                raise NasError(f"unknown function `{e.name}`", e.pos, did_you_mean(e.name, BUILTINS))
            return ast.Func(e.name, tuple(walk(a) for a in e.args), pos=e.pos)
        if isinstance(e, (ast.Choice, ast.Range)):
            return walk(e)
        raise NasError("expected a value here, not a network expression", getattr(e, "pos", None))

    # -- network expressions
    def net(self, e, top=False, label=None):
        if isinstance(e, ast.Labelled):
            return self.net(e.body, top=False, label=e.label)
        if isinstance(e, ast.Seq):
            if label is not None:
                raise NasError("only a call, a repetition, an alternative or a pick can be labelled", e.pos,
                               "put the sequence in a rule of its own")
            return ir.Seq(tuple(self.net(i) for i in e.items))
        if isinstance(e, ast.Call):
            return self.call(e, label)
        if isinstance(e, ast.Alts):
            site = None if top and label is None else self.namer.name(label or "alt", label is not None, e.pos)
            labels = self._option_labels(e.options)
            options = tuple(ir.Opt(lab, o.weight, self.scope(self.net, o.body)) for lab, o in zip(labels, e.options))
            return ir.Alt(site, options, pos=e.pos, syntax=e)
        if isinstance(e, ast.Repeat):
            base = label or (e.body.label if isinstance(e.body, ast.Labelled) else None)
            auto = _body_label(e.body) if isinstance(e.body, (ast.Call, ast.Labelled)) else "repeat"
            site = self.namer.name(base or auto, base is not None, e.pos)
            count = self.count_site(e.count, site)
            body = self.scope(self._repeat_body, e.body)
            return ir.Repeat(site, body, count, pos=e.pos, syntax=e)
        if isinstance(e, ast.NetIf):
            branch = self.namer.new_if()
            sides = []
            for side, body in (("then", e.then), ("else", e.orelse)):
                self.namer.branches.append((branch, side))
                try:
                    sides.append(self.net(body))
                finally:
                    self.namer.branches.pop()
            return ir.If(self.plain_value(e.test, "a condition"), *sides, pos=e.pos)
        if isinstance(e, ast.Merge):
            return ir.Merge(e.kind, tuple(self.branch_or_pick(b) for b in e.branches))
        if isinstance(e, ast.Dag):
            return self.dag(e, label)
        raise NasError("expected a network expression", getattr(e, "pos", None))

    def _repeat_body(self, body):
        # the repeated body's own names; a single call keeps its name inside
        return self.net(body)

    def _option_labels(self, options):
        bases = [o.label or _body_label(o.body) for o in options]
        explicit = [o.label is not None for o in options]
        used = set()  # the explicit labels, then the numbered ones
        for o, b, ex in zip(options, bases, explicit):
            if ex and b in used:
                raise NasError(f"two alternatives are labelled `{b}`", o.pos)
            if ex:
                used.add(b)
        counts = collections.Counter(bases)
        labels, numbered = [], {}
        for b, ex in zip(bases, explicit):
            if ex or counts[b] == 1:
                labels.append(b)
                used.add(b)
                continue
            sep = "_" if b[-1].isdigit() else ""
            n = numbered.get(b, 0)
            while True:
                n += 1
                cand = f"{b}{sep}{n}"
                if cand not in used:
                    break
            numbered[b] = n
            used.add(cand)
            labels.append(cand)
        return labels

    def call(self, e: ast.Call, label):
        for names in reversed(self.dag_names):
            if e.name in names:
                if e.args:
                    raise NasError(f"`{e.name}` is a dag node; it takes no arguments", e.pos)
                return ir.NodeRef(e.name, pos=e.pos)
        site = self.namer.name(label or e.name, label is not None, e.pos)
        if e.name in self.rules:
            return self.rule_call(e, site)
        prim = primitives.get(e.name)
        if prim is not None:
            return self.prim_call(e, prim, site)
        dag_hint = [n for names in self.dag_names for n in names]
        raise NasError(f"unknown rule or primitive `{e.name}`", e.pos,
                       did_you_mean(e.name, [*self.rules, *primitives.names(), *dag_hint]))

    def _bind_args(self, e: ast.Call, names: list[str], what: str):
        """Positional and keyword arguments → {name: Arg}; arity errors name the callee."""
        bound = {}
        positional = True
        for i, a in enumerate(e.args):
            if a.name is None:
                if not positional:
                    raise NasError("a positional argument follows a keyword argument", a.pos)
                if i >= len(names):
                    raise NasError(f"{what} takes {len(names)} argument{'s' if len(names) != 1 else ''}, "
                                   f"got {len(e.args)}", a.pos)
                bound[names[i]] = a
            else:
                positional = False
                if a.name not in names:
                    raise NasError(f"{what} has no argument `{a.name}`", a.pos,
                                   did_you_mean(a.name, names) or f"its arguments: {', '.join(names) or 'none'}")
                if a.name in bound:
                    raise NasError(f"argument `{a.name}` is given twice", a.pos)
                bound[a.name] = a
        return bound

    def rule_call(self, e: ast.Call, site: str):
        rule, _ = self.rules[e.name]
        names = [p.name for p in rule.params]
        bound = self._bind_args(e, names, f"rule `{e.name}`")
        args, arg_sites = [], []
        self.namer.enter()  # the callee's node: choices in the arguments are named there
        for p in rule.params:
            if p.name in bound:
                value, sites = self.argument(bound[p.name].value, p.name, f"argument `{p.name}` of `{e.name}`")
                if p.type is not None:
                    _check_literal(bound[p.name].value, p.type, None, f"parameter `{p.name}` of `{e.name}`",
                                   self.bound)
                arg_sites.extend(sites)
            elif p.default is not None:
                value = self.plain_value(p.default, "a default value")
            else:
                self.namer.leave()
                raise NasError(f"rule `{e.name}` needs argument `{p.name}`", e.pos,
                               f"`{e.name}` is defined at {rule.pos}")
            args.append(value)
        self.namer.leave()
        return ir.RuleCall(site, e.name, tuple(args), tuple(arg_sites), rule.shared, pos=e.pos, syntax=e)

    def prim_call(self, e: ast.Call, prim: primitives.Primitive, site: str):
        names = [a.name for a in prim.args]
        bound = self._bind_args(e, names, f"primitive `{e.name}`")
        args, arg_sites = [], []
        self.namer.enter()
        for a in prim.args:
            if a.name in bound:
                given = bound[a.name].value
                _check_literal(given, a.type, a.allowed, f"argument `{a.name}` of `{e.name}`", self.bound)
                value, sites = self.argument(given, a.name, f"argument `{a.name}` of `{e.name}`")
                arg_sites.extend(sites)
            elif a.required:
                self.namer.leave()
                raise NasError(f"primitive `{e.name}` needs argument `{a.name}`", e.pos,
                               f"{e.name}({', '.join(x.name for x in prim.args)})")
            else:
                value = _default_literal(a.default)
            args.append((a.name, value))
        self.namer.leave()
        return ir.PrimCall(site, e.name, tuple(args), tuple(arg_sites), pos=e.pos, syntax=e)

    def branch_or_pick(self, b):
        if isinstance(b, ast.Pick):
            site = self.namer.name("pick", False, b.pos)
            labels = []
            for c in b.candidates:
                labels.append(c.source if c.source is not None else _body_label(c.body))
            labels = self._option_labels([ast.Option(None, 1.0, c.body if c.source is None else ast.Call(c.source, ()), pos=c.pos)
                                          for c in b.candidates]) if len(set(labels)) != len(labels) else labels
            candidates = tuple((lab, self.scope(self.branch, c)) for lab, c in zip(labels, b.candidates))
            return ir.Pick(site, self.plain_value(b.k, "a pick's count"), candidates, pos=b.pos, syntax=b)
        return self.branch(b)

    def branch(self, b: ast.Branch):
        if b.source is not None:
            if not any(b.source in names for names in self.dag_names):
                raise NasError(f"`{b.source}` is not a node of this dag (or not defined before here)", b.pos,
                               did_you_mean(b.source, [n for names in self.dag_names for n in names]))
        return ir.Branch(b.source, self.net(b.body))

    def dag(self, e: ast.Dag, label):
        if label is not None:
            raise NasError("a dag cannot be labelled; its nodes are named", e.pos)
        names = set()
        for name in e.inputs:
            if name in names:
                raise NasError(f"dag input `{name}` is listed twice", e.pos)
            names.add(name)
        self.dag_names.append(names)
        nodes = []
        try:
            for name, branch in e.nodes:
                if name in names:
                    raise NasError(f"dag node `{name}` is defined twice", branch.pos)
                site = self.namer.name(name, True, branch.pos)
                nodes.append((site, self.scope(self.branch, branch)))
                names.add(name)
            outputs = tuple(self.branch(o) for o in e.outputs)
        finally:
            self.dag_names.pop()
        return ir.Dag(e.inputs, tuple(nodes), outputs, syntax=e)


def _default_literal(value):
    if isinstance(value, bool):
        return ast.Bool(value)
    if isinstance(value, (int, float)):
        return ast.Num(value)
    return ast.Str(value) if not (isinstance(value, str) and value.isidentifier()) else ast.Var(value)


def build_rules(loaded: Loaded) -> dict[str, ir.Rule]:
    """Every rule of a loaded file (own and imported) in checked form."""
    header = loaded.module.header
    space_params = {p.name: p for p in header.params} if header else {}
    for rule_name, (rule, _) in loaded.rules.items():
        if primitives.get(rule_name) is not None:
            raise NasError(f"rule `{rule_name}` has the name of a primitive", rule.pos,
                           "rename the rule; primitives are listed by `nasdsl show --primitives`")
    namer = _Namer()
    builder = _RuleBuilder(loaded.rules, space_params, namer)
    builder.main_module = loaded.module
    built = {name: builder.build_rule(rule, module) for name, (rule, module) in loaded.rules.items()}
    names = namer.assign()
    result = {name: ir.renamed(rule, names) for name, rule in built.items()}
    _check_productive(result)
    return result


# ---- static checks ----------------------------------------------------------------
def reachable(rules: dict, start: str) -> list[str]:
    seen, todo = [], [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in rules:
            continue
        seen.append(name)
        todo.extend(ir.calls(rules[name].body))
    return seen


def _productive(node, ok: set) -> bool:
    if isinstance(node, ir.RuleCall):
        return node.rule in ok
    if isinstance(node, ir.Seq):
        return all(_productive(i, ok) for i in node.items)
    if isinstance(node, ir.Alt):
        return any(_productive(o.body, ok) for o in node.options)
    if isinstance(node, ir.Repeat):
        return True if _count_may_be_zero(node.count) else _productive(node.body, ok)
    if isinstance(node, ir.If):
        return _productive(node.then, ok) or _productive(node.orelse, ok)
    if isinstance(node, ir.Merge):
        return all(_productive(b, ok) for b in node.branches)
    if isinstance(node, ir.Pick):
        return any(_productive(c, ok) for _, c in node.candidates)
    if isinstance(node, ir.Branch):
        return node.body is None or _productive(node.body, ok)
    if isinstance(node, ir.Dag):
        return all(_productive(b, ok) for _, b in node.nodes) and all(_productive(b, ok) for b in node.outputs)
    return True


def _count_may_be_zero(count) -> bool:
    if isinstance(count, ast.Num):
        return count.value == 0
    return True  # chosen or computed: decided when derived


def _check_productive(rules: dict):
    ok: set = set()
    changed = True
    while changed:
        changed = False
        for name, rule in rules.items():
            if name not in ok and _productive(rule.body, ok):
                ok.add(name)
                changed = True
    if len(ok) == len(rules):
        return
    # Every stuck rule calls a stuck rule, so following those calls from any of them
    # ends in a cycle: report the cycle's first rule, the one to fix.
    path = [next(name for name in rules if name not in ok)]
    while True:
        stuck = next(r for r in ir.calls(rules[path[-1]].body) if r not in ok)
        if stuck in path:
            cycle = path[path.index(stuck):] + [stuck]
            break
        path.append(stuck)
    rule = rules[stuck]
    raise NasError(f"rule `{stuck}` can never finish deriving: every alternative leads back to it "
                   f"({' -> '.join(cycle)})", rule.pos,
                   "give it an alternative that does not recurse, or bound the recursion with a parameter")
