"""The `nasdsl` command: check, count, sample, show, mutate, encode, restrict and compile space files,
trace PyTorch models, and (from nasdsl.runtime) search, trials, report, export and sparsify.

Every command computes one JSON-ready dict; `--json` prints it as is and the
human form renders the same dict with rich, so the two never disagree.
Exit codes: 0 ok, 1 bad input (a `NasError` or an unreadable file, printed as
`file:line:col: error: ...`), 2 bad usage, 3 an internal error, 130 Ctrl-C,
141 a closed pipe. Python tracebacks appear only with `--debug`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import sys
import threading
import traceback

from rich.table import Table
from rich.text import Text

from ..compiler import primitives
from ..compiler.limits import MAX_SUPERNET_PARAMS
from ..compiler.space import load
from ..language.errors import NasError
from ..language.expr import show
from ..language.primitives import load_plugins
from ..space.derivation import distance
from .common import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CommandParser,
    UsageError,
    emit,
    json_value,
    load_space,
    log_count,
    whole_number,
)


# ---- check ------------------------------------------------------------------------
def cmd_check(args) -> int:
    files = [check_file(path) for path in args.files]
    emit(args, {"files": files}, render_check)
    return EXIT_OK if all(f["ok"] for f in files) else EXIT_BAD_INPUT


def check_file(path: str) -> dict:
    """One file's result; a library is checked by loading it (it has no count)."""
    try:
        space = load(path)
        count = None if space.is_library else space.check().count
    except NasError as err:
        # an error that names no place (a missing file, an empty library) gets the file's name
        return {"file": path, "ok": False, "count": None, "error": str(err) if err.pos else f"{path}: {err}"}
    return {"file": path, "ok": True, "count": count, "error": None}


def render_check(console, data):
    for f in data["files"]:
        if f["ok"]:
            detail = "library" if f["count"] is None else f"count {f['count']}"
            console.print(Text.assemble(("ok", "green"), f" {f['file']} ({detail})"))
        else:
            print(f["error"], file=sys.stderr)
    failed = sum(not f["ok"] for f in data["files"])
    if failed and len(data["files"]) > 1:
        print(f"{failed} of {len(data['files'])} files failed", file=sys.stderr)


# ---- count ------------------------------------------------------------------------
def cmd_count(args) -> int:
    space = load_space(args)
    data = {"space": space.name, "count": space.count}
    if args.distinct:
        data["distinct"] = space.distinct()
    emit(args, data, render_count)
    return EXIT_OK


def render_count(console, data) -> None:
    line = f"{data['space']}: {log_count(data['count'])}"
    if "distinct" in data:
        line += f", {data['distinct']} distinct functions"
    console.print(line)


# ---- sample -----------------------------------------------------------------------
MAX_JSON_SAMPLES = 100_000  # one JSON object holds them all; plain lines stream, so -n is unbounded there


def cmd_sample(args) -> int:
    if args.json and args.n > MAX_JSON_SAMPLES:
        raise UsageError(f"-n {args.n} with --json: at most {MAX_JSON_SAMPLES} derivations go in one JSON "
                         "object; drop --json to stream them as lines")
    space = load_space(args)
    stream = space.iter_samples(args.n, seed=args.seed, method=args.method)
    if args.json:
        emit(args, {"derivations": [d.text for d in stream]}, None)
    else:
        for d in stream:  # plain lines as they are drawn, never wrapped, each one pastes back as --derivation
            print(d.text)
    return EXIT_OK


# ---- show -------------------------------------------------------------------------
def cmd_show(args) -> int:
    if args.primitives == (args.file is not None):
        raise UsageError("give a space FILE or --primitives (not both)")
    if args.markdown and not args.primitives:
        raise UsageError("--markdown goes with --primitives")
    if args.primitives:
        data = {"primitives": [primitive_info(p) for p in map(primitives.get, primitives.names())]}
        if args.markdown:
            print(primitives_markdown(data), end="")
        else:
            emit(args, data, render_primitives)
        return EXIT_OK
    space = load_space(args)
    counts = {} if space.is_library else space.rule_counts()
    data = {
        "space": space.name,
        "params": {k: json_value(v) for k, v in space.params.items()},
        "count": None if space.is_library else space.count,
        "rules": [rule_info(rule, counts.get(name, {})) for name, rule in space.rules.items()],
        "presets": space.presets,
    }
    emit(args, data, render_space)
    return EXIT_OK


def rule_info(rule, counts: dict) -> dict:
    pos = rule.pos
    return {
        "name": rule.name,
        "params": [p.name for p in rule.params],
        "shared": rule.shared,
        "file": rule.file,
        "line": pos.line if pos else None,
        "counts": [{"args": [json_value(a) for a in args], "count": n} for args, n in counts.items()],
    }


def render_space(console, data):
    params = ", ".join(f"{k}={show(v)}" for k, v in data["params"].items())
    console.print(Text.assemble(("space ", "bold"), (data["space"], "bold cyan"), f"({params})"))
    if data["count"] is not None:
        console.print(f"count {log_count(data['count'])}")
    table = Table("rule", "params", "shared", "defined at", "count by arguments")
    table.columns[3].no_wrap = True
    for r in data["rules"]:
        uses = [f"({', '.join('*' if a is None else show(a) for a in u['args'])}) {u['count']}"
                if u["args"] else str(u["count"]) for u in r["counts"]]
        table.add_row(r["name"], ", ".join(r["params"]), "shared" if r["shared"] else "",
                      f"{r['file']}:{r['line']}", "\n".join(uses) or "unused")
    console.print(table)
    console.print(f"presets: {', '.join(data['presets']) or 'none'}")


def primitive_info(p) -> dict:
    return {
        "name": p.name,
        "args": [{"name": a.name, "type": a.type, "required": a.required,
                  "default": None if a.required else a.default,
                  "allowed": list(a.allowed) if a.allowed else None, "low": a.low, "high": a.high}
                 for a in p.args],
        "doc": p.doc,
    }


def render_primitives(console, data):
    table = Table("primitive", "arguments", "about")
    for p in data["primitives"]:
        table.add_row(p["name"], "\n".join(map(_argument_text, p["args"])), p["doc"])
    console.print(table)


def _argument_text(a: dict) -> str:
    text = f"{a['name']}: {a['type']}" + ("" if a["required"] else f" = {show(a['default'])}")
    if a["low"] is not None and a["high"] is not None:
        text += f" in [{show(a['low'])}, {show(a['high'])}]"
    elif a["low"] is not None or a["high"] is not None:
        text += f" >= {show(a['low'])}" if a["low"] is not None else f" <= {show(a['high'])}"
    return text + (f" in {{{', '.join(a['allowed'])}}}" if a["allowed"] else "")


def primitives_markdown(data: dict) -> str:
    """docs/primitives.md: the registry as a table (`nasdsl show --primitives --markdown`;
    a test keeps the file equal to it, so the list cannot drift from the code)."""
    lines = ["# Primitives", "",
             "The terminals a space file may call, as registered (`nasdsl show --primitives`).",
             "Written by `nasdsl show --primitives --markdown > docs/primitives.md`; add your own",
             "as [docs/language.md](language.md#your-own-primitives) shows.", "",
             "| primitive | arguments | about |", "|---|---|---|"]
    for p in data["primitives"]:
        args = "<br>".join(f"`{_argument_text(a)}`" for a in p["args"]) or "-"
        lines.append(f"| `{p['name']}` | {args} | {p['doc'].replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"


# ---- mutate -----------------------------------------------------------------------
def cmd_mutate(args) -> int:
    space = load_space(args)
    if args.derivation is not None:
        parent = space.parse(args.derivation)
    elif args.preset is not None:
        space = space.preset_space(args.preset)  # a preset may set parameters
        parent = space.preset(args.preset)
    else:
        parent = space.sample(seed=args.seed_sample)
    rng = random.Random(args.seed)  # one stream for all children: deterministic per --seed
    children = [space.mutate(parent, rng=rng, kind=args.kind) for _ in range(args.n)]
    data = {"parent": parent.text, "children": [c.text for c in children],
            "distances": [distance(parent, c) for c in children]}
    emit(args, data, render_mutate)
    return EXIT_OK


def render_mutate(console, data):
    print(f"parent {data['parent']}")
    for child, dist in zip(data["children"], data["distances"]):
        print(f"d={dist}  {child}")


# ---- encode ------------------------------------------------------------------------
def cmd_encode(args) -> int:
    space = load_space(args)
    if args.preset is not None:
        space = space.preset_space(args.preset)
    enc = space.encoding()
    data = {"space": space.name, "length": enc.length, "vocabulary_size": len(enc.vocabulary)}
    if args.vocabulary:
        data["vocabulary"] = list(enc.vocabulary)
        data["positions"] = list(enc.paths)
    if args.tokens is not None:
        chosen = [space.decode(args.tokens, repair=args.repair)]
    elif args.derivation is not None:
        chosen = [space.parse(args.derivation)]
    elif args.preset is not None:
        chosen = [space.preset(args.preset)]
    elif args.sample is not None:
        chosen = space.samples(args.sample, seed=args.seed)
    else:
        chosen = []
    data["sequences"] = [{"derivation": d.text, "tokens": list(enc.encode(d)),
                          "meanings": [enc.vocabulary[t] for t in enc.encode(d)]} for d in chosen]
    emit(args, data, lambda console, d: render_encode(d, enc.paths))
    return EXIT_OK


def render_encode(data, paths):
    print(f"{data['space']}: {data['length']} positions, {data['vocabulary_size']} tokens (0 is <pad>)")
    if "vocabulary" in data:
        for t, meaning in enumerate(data["vocabulary"]):
            print(f"token {t:>5}  {meaning}")
        for i, path in enumerate(data["positions"]):
            print(f"position {i:>5}  {path}")
    for seq in data["sequences"]:
        print(" ".join(map(str, seq["tokens"])))
        if len(data["sequences"]) == 1:  # one derivation: each position beside its meaning
            print(seq["derivation"])
            for i, (t, meaning) in enumerate(zip(seq["tokens"], seq["meanings"])):
                print(f"{i:>5}  {t:>5}  {paths[i] or '(root)'}: {meaning}")


def token_list(text: str) -> list:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected token ids like `3,0,7`, got `{text}`") from None


# ---- compile -----------------------------------------------------------------------
def cmd_compile(args) -> int:
    space = load_space(args)
    if args.preset is not None:
        space = space.preset_space(args.preset)
        d = space.preset(args.preset)
    elif args.derivation is not None:
        d = space.parse(args.derivation)
    else:
        d = space.sample(seed=args.seed)
    from ..compiler.graph import output_shape

    graph = space.graph(d, args.input_shape)
    data = {"space": space.name, "derivation": d.text, "hash": d.hash,
            "input_shape": list(graph.graph["input_shape"]), "output_shape": list(output_shape(graph)),
            "params": graph.graph["params"], "macs": graph.graph["macs"], "nodes": graph.number_of_nodes()}
    files = {form: path for form, path in (("onnx", args.onnx), ("pt2", args.export)) if path}
    if args.code or files:
        from ..compiler.module import build_module

        module = build_module(graph)
        if args.code:
            data["code"] = module.code.strip("\n")
        if files:
            from ..compiler.export import write_module

            write_module(module, graph.graph["input_shape"], files)
    if args.dot or args.png:
        from ..compiler.export import to_dot, write_png

        if args.dot:
            _write(args.dot, to_dot(graph))
        if args.png:
            write_png(graph, args.png)
    emit(args, data, render_compile)
    return EXIT_OK


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as err:
        raise NasError(f"cannot write {path}: {err.strerror or err}") from None


def render_compile(console, data):
    table = Table(show_header=False, box=None)
    for key in ("space", "derivation", "input_shape", "output_shape", "params", "macs", "nodes"):
        value = data[key]
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
    if "code" in data:
        print(data["code"])


def shape_arg(text: str) -> tuple:
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (whole numbers), got `{text}`") from None
    if not shape or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(f"expected positive sizes, got `{text}`")
    return shape


# ---- restrict ------------------------------------------------------------------------
def cmd_restrict(args) -> int:
    space = load_space(args)
    restricted = space.restrict(dict(args.keep))
    data = {"space": space.name, "count": restricted.space.count, "original_count": space.count,
            "file": args.output, "text": None if args.output else restricted.text}
    if args.output:
        try:
            with open(args.output, "w") as f:
                f.write(restricted.text)
        except OSError as err:
            raise NasError(f"cannot write {args.output}: {err.strerror or err}") from None
    emit(args, data, render_restrict)
    return EXIT_OK


def render_restrict(console, data):
    if data["text"] is not None:
        print(data["text"], end="")
    kept = f"{data['count']} of {data['original_count']} derivations kept"
    print(f"wrote {data['file']}: {kept}" if data["file"] else f"# {kept}", file=sys.stderr)


def keep_pair(text: str) -> tuple[str, set]:
    """`--keep PATH=V1,V2`: values read as ints, floats, true/false, else labels."""
    path, sep, values = text.partition("=")
    if not sep or not path.strip() or not values.strip():
        raise argparse.ArgumentTypeError(f"expected PATH=VALUE[,VALUE...], got `{text}`")
    return path.strip(), {_scalar(v.strip()) for v in values.split(",") if v.strip()}


def _scalar(text: str):
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


# ---- trace ---------------------------------------------------------------------------
def cmd_trace(args) -> int:
    import torch

    from ..compiler.trace import load_model, summary, trace

    graph = trace(load_model(args.model), torch.zeros(1, *args.input_shape))

    def render(console, data):
        table = Table(show_header=False, box=None)
        for key, value in data.items():
            table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
        console.print(table)

    emit(args, summary(args.model, graph), render)
    return EXIT_OK


# ---- the parser -------------------------------------------------------------------
def param_pair(text: str) -> tuple[str, str]:
    """`--param NAME=VALUE`; the loader converts VALUE by the parameter's declared type."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got `{text}`")
    return name.strip(), value


positive_int = whole_number(1)


# ---- supernet ---------------------------------------------------------------------
def cmd_supernet(args) -> int:
    """A space's single-path supernet, measured without allocating it."""
    from ..compiler.graph import default_input_shape
    from ..compiler.supernet import Supernet

    space = load_space(args)
    shape = args.input_shape or default_input_shape(space)
    cover = space.cover()
    size = Supernet.measure(space, shape)
    emit(args, {"space": space.name, "input_shape": list(shape), "cover": len(cover), "params": size.params,
                "bytes": size.bytes, "tensors": size.tensors, "max_params": args.max_supernet_params,
                "fits": size.params <= args.max_supernet_params}, render_supernet)
    return EXIT_OK


def render_supernet(console, d):
    fits = "fits" if d["fits"] else f"does not fit (limit {d['max_params']:,})"
    console.print(f"{d['space']}: a supernet of {d['params']:,} parameters ({d['bytes'] / 2**20:,.1f} MiB, "
                  f"{d['tensors']:,} tensors) for inputs {tuple(d['input_shape'])}, sized from {d['cover']} "
                  f"cover derivations: {fits}")


def build_parser() -> argparse.ArgumentParser:
    # --debug is accepted before or after the command; SUPPRESS keeps a subcommand
    # from resetting a --debug given before it
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show Python tracebacks")
    debug.add_argument("--plugin", action="append", default=argparse.SUPPRESS, metavar="MODULE",
                       help="import MODULE (a module name or a .py file) first, e.g. to register primitives "
                            "(repeatable)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    space = argparse.ArgumentParser(add_help=False)
    space.add_argument("--param", action="append", type=param_pair, metavar="NAME=VALUE",
                       help="set a space parameter (repeatable)")

    parser = argparse.ArgumentParser(prog="nasdsl", description="Check, count, sample and explore NAS search spaces.")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE (a module name or a .py file) first, e.g. to register primitives")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=CommandParser)

    def command(name, run, help, parents):
        sub = commands.add_parser(name, help=help, description=help, parents=[debug, output, *parents])
        sub.set_defaults(run=run)
        return sub

    check = command("check", cmd_check, "check space files (all of them; exit 1 if any is bad)", [])
    check.add_argument("files", nargs="+", metavar="FILE")

    count = command("count", cmd_count, "the exact number of derivations", [space])
    count.add_argument("file", metavar="FILE")
    count.add_argument("--distinct", action="store_true",
                       help="also count the distinct functions (enumerates the space: up to 1,000,000 derivations)")

    sample = command("sample", cmd_sample, "draw derivations (deterministic per --seed)", [space])
    sample.add_argument("file", metavar="FILE")
    sample.add_argument("-n", type=positive_int, default=1, help="how many (default 1)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--method", choices=("uniform", "per-choice"), default="uniform",
                        help="uniform over derivations (default), or each choice by its weights")

    show_ = command("show", cmd_show, "a space's parameters, rules, counts and presets", [space])
    show_.add_argument("file", nargs="?", metavar="FILE")
    show_.add_argument("--primitives", action="store_true", help="list the registered primitives instead")
    show_.add_argument("--markdown", action="store_true", help="with --primitives: as docs/primitives.md has it")

    mutate = command("mutate", cmd_mutate, "mutate a derivation and report each child's distance", [space])
    mutate.add_argument("file", metavar="FILE")
    source = mutate.add_mutually_exclusive_group(required=True)
    source.add_argument("--derivation", metavar="TEXT", help="the parent, as derivation text")
    source.add_argument("--preset", metavar="NAME", help="the parent: a preset of the file")
    source.add_argument("--seed-sample", type=int, metavar="S", help="the parent: the uniform sample with seed S")
    mutate.add_argument("--seed", type=int, default=0, help="random seed for the mutations (default 0)")
    mutate.add_argument("-n", type=positive_int, default=1, help="how many children (default 1)")
    mutate.add_argument("--kind", choices=("choice", "subtree"), default="choice",
                        help="change one choice (default) or re-draw one subtree")

    encode = command("encode", cmd_encode, "derivations as token sequences for learned controllers, and back",
                     [space])
    encode.add_argument("file", metavar="FILE")
    which = encode.add_mutually_exclusive_group()
    which.add_argument("--derivation", metavar="TEXT", help="encode this derivation")
    which.add_argument("--preset", metavar="NAME", help="encode a preset of the file")
    which.add_argument("--sample", type=positive_int, metavar="N", help="encode N uniform samples")
    which.add_argument("--tokens", type=token_list, metavar="T,T,...", help="decode these tokens")
    encode.add_argument("--seed", type=int, default=0, help="random seed for --sample (default 0)")
    encode.add_argument("--repair", action="store_true",
                        help="with --tokens: take the nearest allowed token where one is not allowed")
    encode.add_argument("--vocabulary", action="store_true", help="also list every token and position")

    compile_ = command("compile", cmd_compile, "compile a derivation: params, MACs, output shape, graph, code", [space])
    compile_.add_argument("file", metavar="FILE")
    which = compile_.add_mutually_exclusive_group()
    which.add_argument("--preset", metavar="NAME", help="compile a preset of the file")
    which.add_argument("--derivation", metavar="TEXT", help="compile this derivation")
    which.add_argument("--seed", type=int, default=0, help="compile the uniform sample with this seed (default 0)")
    compile_.add_argument("--input-shape", type=shape_arg, metavar="C,H,W",
                          help="per-sample input shape (default: the space's in_channels and resolution, else 3,32,32)")
    compile_.add_argument("--code", action="store_true", help="also print the generated module's forward code")
    compile_.add_argument("--dot", metavar="FILE", help="write the graph as Graphviz source")
    compile_.add_argument("--png", metavar="FILE", help="draw the graph as a PNG (needs Graphviz's dot)")
    compile_.add_argument("--onnx", metavar="FILE", help="write the module (its seeded weights) as ONNX "
                          "(needs the onnx extra)")
    compile_.add_argument("--export", metavar="FILE", help="write the module as a torch.export program (.pt2)")

    restrict = command("restrict", cmd_restrict,
                       "keep some values at some paths; print (or write) the sub-space as a .nas file", [space])
    restrict.add_argument("file", metavar="FILE")
    restrict.add_argument("--keep", action="append", type=keep_pair, required=True, metavar="PATH=V1,V2",
                          help="keep only these values at PATH (`*` for every copy of a repetition); repeatable")
    restrict.add_argument("-o", "--output", metavar="OUT", help="write the restricted space here")

    supernet = command("supernet", cmd_supernet, "the size of a space's weight-sharing supernet (nothing allocated)",
                       [space])
    supernet.add_argument("file", metavar="FILE")
    supernet.add_argument("--input-shape", type=shape_arg, metavar="C,H,W",
                          help="per-sample input shape (default: the space's in_channels and resolution, else 3,32,32)")
    supernet.add_argument("--max-supernet-params", type=positive_int, default=MAX_SUPERNET_PARAMS, metavar="N",
                          help=f"the most parameters a supernet may hold (default {MAX_SUPERNET_PARAMS:,})")

    trace_ = command("trace", cmd_trace, "trace a PyTorch model into nasdsl's graph: params, MACs, output shape", [])
    trace_.add_argument("model", metavar="MODEL", help="torchvision:NAME or timm:NAME, a torchvision or timm "
                        "classification model (random weights), or module:PATH:NAME, the module, class or function "
                        "NAME of Python file PATH")
    trace_.add_argument("--input-shape", type=shape_arg, default=(3, 224, 224), metavar="C,H,W",
                        help="per-sample input shape (default 3,224,224)")

    from .search import add_commands  # search, trials, report
    from .sparsify import add_sparsify

    add_commands(command, space, positive_int)
    add_sparsify(command, space, positive_int, shape_arg)
    return parser


# ---- the entry point --------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script exits with it)."""
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)  # counts are exact and may have thousands of digits
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # argparse: --help (0) or a usage error (2)
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    on_main_thread = threading.current_thread() is threading.main_thread()  # where signals can be set
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        load_plugins(args.plugin)
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe must show up here, not at interpreter exit
        return code
    except Terminated:
        return EXIT_TERMINATED
    except UsageError as err:
        return _failed(args, EXIT_USAGE, f"nasdsl {args.command}: error: {err}", NasError(str(err)))
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except NasError as err:
        _debug_traceback(args)
        return _failed(args, EXIT_BAD_INPUT, str(err), err)
    except OSError as err:
        _debug_traceback(args)
        return _failed(args, EXIT_BAD_INPUT, str(err), NasError(str(err)))
    except sqlite3.DatabaseError as err:  # a store damaged where a query reads it (opening it went well)
        _debug_traceback(args)
        store = getattr(args, "store", None) or "the store"
        err = NasError(f"{store}: the store is damaged ({err})",
                       hint="`sqlite3 STORE .recover` saves what is left of it into a new file")
        return _failed(args, EXIT_BAD_INPUT, str(err), err)
    except Exception as err:
        _debug_traceback(args)
        message = f"internal error: {type(err).__name__}: {err}"
        return _failed(args, EXIT_INTERNAL, f"nasdsl: {message} (rerun with --debug)",
                       NasError(message, hint="rerun with --debug"))
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM: unwinds like Ctrl-C (workers shut down, the store closed), exit 143.
    A BaseException, so that no `except Exception` on the way swallows it."""


def _terminate(signum, frame):
    raise Terminated


def _failed(args, code: int, text: str, err: NasError) -> int:
    """Report a failed command: the text on stderr and, with `--json`, the error as
    `{"error": {message, file, line, column, hint}}` on stdout; returns `code`."""
    print(text, file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": err.to_json()}), flush=True)
    return code


def _debug_traceback(args) -> None:
    if args.debug:
        traceback.print_exc()


def _discard_stdout() -> None:
    """Point stdout at /dev/null so Python's final flush does not fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (e.g. captured by a test)
        pass
