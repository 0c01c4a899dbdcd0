"""The runtime's commands: `nasdsl search`, `nasdsl shrink`, `nasdsl trials`, `nasdsl report`, `nasdsl export`.

Registered by `nasdsl.cli.commands.build_parser`; torch and the runtime are imported only
when one of these commands runs, so `nasdsl count` stays quick.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import attrs
from rich.console import Console
from rich.table import Table

from ..language.errors import NasError
from .common import EXIT_OK, UsageError, emit, whole_number

FORMATS = ("onnx", "pt2", "py")  # what `nasdsl export` writes (`py` with its state_dict), and their files
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "py": ".py", "state_dict": ".state_dict.pt"}


def add_commands(command, space_parent, positive_int) -> None:
    """Add the four commands with `nasdsl.cli.commands`'s `command(name, run, help, parents)`."""
    search = command("search", cmd_search, "search a space: train proposed architectures, keep them in a store",
                     [space_parent])
    search.add_argument("file", metavar="SPACE", nargs="?", help="the space file (with --resume: the store's)")

    add_search_options(search, positive_int)

    shrink = command("shrink", cmd_shrink, "LISSNAS: shrink a space to pockets of good networks and write them "
                     "as a .nas file", [space_parent])
    shrink.add_argument("file", metavar="SPACE", nargs="?", help="the space file (with --resume: the store's)")
    shrink.add_argument("-o", "--out", required=True, metavar="SMALL.nas", help="where to write the shrunk space")
    add_search_options(shrink, positive_int)

    trials = command("trials", cmd_trials, "the trials in a store", [])
    trials.add_argument("--store", required=True, metavar="PATH", help="the SQLite trial store")
    trials.add_argument("--evaluations", action="store_true",
                        help="a one-shot search's shared-weight evaluations instead, best first")

    report = command("report", cmd_report, "write a search's Pareto front, progress plot and summary", [])
    report.add_argument("--store", required=True, metavar="PATH", help="the SQLite trial store")
    report.add_argument("--out", required=True, metavar="DIR", help="folder for pareto.png, progress.png, summary.md")

    export = command("export", cmd_export, "write a trial's trained network as ONNX, a torch.export program and "
                     "standalone Python with its state_dict", [])
    export.add_argument("--store", required=True, metavar="PATH", help="the SQLite trial store")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="the trial's id (`nasdsl trials`)")
    which.add_argument("--ticket", action="store_true", help="a supertickets search's final ticket: its derivation "
                       "cut to the kept channels, its pruned weights zero (superticket.*, with its masks)")
    export.add_argument("--out", required=True, metavar="DIR", help="folder for trial_N.onnx, .pt2, .py and "
                        ".state_dict.pt")
    export.add_argument("--formats", type=formats_arg, default=FORMATS, metavar="F,F",
                        help=f"which forms ({','.join(FORMATS)}; default all; py comes with its state_dict)")
    export.add_argument("--space", metavar="FILE", help="the search's space file, where it has moved since")


def add_search_options(parser, positive_int) -> None:
    """A search's flags, for `nasdsl search` and `nasdsl shrink`."""

    def option(*names, default=None, **kwargs):
        """A flag that is absent from `args` unless given, so that `--resume` can tell
        what was asked for now from the store's own settings; DEFAULTS keeps its default."""
        action = parser.add_argument(*names, default=argparse.SUPPRESS, **kwargs)
        DEFAULTS[action.dest] = default

    option("--dataset", default="fashion-mnist", metavar="NAME[:PATH]",
                        help="fashion-mnist (default), mnist:PATH, digits, cifar10:PATH or imagefolder:PATH")
    option("--trials", type=int, default=20, help="architectures to train in all (default 20)")
    option("--epochs", type=int, default=3, help="training epochs per trial (default 3)")
    parser.add_argument("--store", required=True, metavar="PATH", help="the SQLite trial store")
    parser.add_argument("--resume", action="store_true",
                        help="continue the search in --store, with its settings (flags given must agree)")
    option("--workers", type=positive_int, default=1, help="trials trained at once (default 1)")
    option("--executor", choices=("local", "ray"), default="local",
                        help="local process pool (default) or a Ray cluster")
    option("--address", metavar="HOST:PORT", help="the Ray cluster to join (default: start one here)")
    option("--max-macs", type=positive_int, metavar="M", help="propose only networks with at most M MACs")
    option("--max-params", type=positive_int, metavar="P", help="... and at most P parameters")
    option("--seed", type=int, default=0, help="random seed of proposals and training (default 0)")
    option("--data-seed", type=int, default=0,
                        help="seed of the train/validation split and of --limit's subset (default 0)")
    option("--limit", type=positive_int, metavar="N", help="train each trial on N training images")
    option("--batch-size", type=positive_int, default=64, help="training batch size (64)")
    option("--lr", type=float, default=0.1, help="peak learning rate (0.1)")
    option("--optimizer", choices=("sgd", "adamw"), default="sgd", help="sgd (default) or adamw")
    option("--bn-momentum", type=float, default=0.1, metavar="M",
                        help="batch-norm momentum while training (0.1; short trials need it)")
    option("--bn-l1", type=float, default=0.0, metavar="RHO",
           help="network slimming: FLOPs-aware L1 on batch-norm scales, weight RHO (0: off; try 1e-4)")
    option("--bn-l1-warmup", type=float, default=0.0, metavar="E",
           help="ramp --bn-l1 up linearly over the first E epochs (0)")
    option("--patience", type=positive_int, metavar="E",
                        help="stop a trial after E epochs without a better validation accuracy")
    option("--test-top", type=int, default=5, metavar="K",
                        help="evaluate the K best trials and the Pareto front on the test set at the end (5)")
    parser.add_later(lambda later: add_algorithm_flags(later, positive_int))


DEFAULTS: dict = {}  # the search flags' defaults, by dest (`option` above)
TRAINING = ("epochs", "batch_size", "optimizer", "lr", "patience", "bn_momentum", "bn_l1",
            "bn_l1_warmup")  # TrainConfig's flags


def add_algorithm_flags(search, positive_int) -> None:
    """`--algorithm` and one flag per setting of the registered algorithms, made from
    their config classes and grouped by the algorithms that take them: a setting
    several share (`--population`) is one flag. Each is absent from `args` unless given."""
    from nasdsl.runtime.algorithms import algorithms, flag

    known = algorithms()
    search.add_argument("--algorithm", default=argparse.SUPPRESS, metavar="NAME",
                        help=f"{', '.join(known)} (default evolution); their settings follow")
    DEFAULTS["algorithm"] = "evolution"
    takers: dict[str, list] = {}  # flag -> [(algorithm, field)]
    for name, cls in known.items():
        for field in attrs.fields(cls):
            takers.setdefault(flag(field), []).append((name, field))
    groups, dests = {}, {}
    for option, taken in takers.items():
        names = tuple(name for name, _ in taken)
        if names not in groups:
            groups[names] = search.add_argument_group(f"--algorithm {' or '.join(names)}")
        dests[option] = option.removeprefix("--").replace("-", "_")
        groups[names].add_argument(option, dest=dests[option], default=argparse.SUPPRESS,
                                   **flag_argument(taken, positive_int))
    search.set_defaults(setting_flags=dests)


def flag_argument(taken: list, positive_int) -> dict:
    """add_argument's keywords for a setting, by the type of its default: a bool's flag
    stores the opposite of its default, a tuple is a comma-separated list, and one
    without a default (None) is text, a path."""
    field = taken[0][1]
    help = field.metadata.get("help", "")
    if isinstance(field.default, bool):
        return {"action": "store_const", "const": not field.default, "help": help}
    shown = {name: ",".join(map(str, f.default)) if isinstance(f.default, tuple) else
             "none" if f.default is None else str(f.default) for name, f in taken}
    default = next(iter(shown.values())) if len(set(shown.values())) == 1 else \
        ", ".join(f"{name} {value}" for name, value in shown.items())
    parse = {int: positive_int if field.metadata.get("minimum", 1) >= 1 else whole_number(field.metadata["minimum"]),
             float: float,
             tuple: number_list, str: str, type(None): str}[type(field.default)]
    return {"type": parse, "metavar": field.metadata.get("metavar"), "choices": field.metadata.get("choices"),
            "help": f"{help} ({default})"}


def number_list(text: str) -> tuple:
    """`0.1,0.2` -> (0.1, 0.2); range checks are the algorithm's (a clear error, exit 1)."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def algorithm_settings(args, algorithm: str) -> dict:
    """The settings given for `algorithm`, by field name; a flag of another algorithm
    is a usage error rather than silently ignored."""
    from nasdsl.runtime.algorithms import flag, lookup

    fields = {flag(f): f.name for f in attrs.fields(lookup(algorithm))}
    settings = {}
    for option, dest in args.setting_flags.items():
        if hasattr(args, dest):
            if option not in fields:
                raise UsageError(f"{option} is not a setting of --algorithm {algorithm} "
                                 f"({'its settings: ' + ', '.join(fields) if fields else 'it has none'})")
            settings[fields[option]] = getattr(args, dest)
    return settings


def cmd_search(args) -> int:
    _, data = run_search(args)
    emit(args, data, render_search)
    return EXIT_OK


def cmd_shrink(args) -> int:
    """`nasdsl search --algorithm lissnas`, then the shrunk space written to `--out`."""
    from nasdsl.runtime.algorithms.lissnas import summary, to_nas

    if getattr(args, "algorithm", "lissnas") != "lissnas":
        raise UsageError(f"nasdsl shrink runs --algorithm lissnas, not {args.algorithm}; use nasdsl search for that")
    args.algorithm = "lissnas"

    def conclude(search) -> dict:
        replay = search.algorithm.replay(search.proposer, search.store, search.config.seed)
        report = summary(search.algorithm, replay, search.space, search.config.seed)
        chosen = next(r for r in replay.rounds if r.index == report["chosen"])
        Path(args.out).write_text(to_nas(search.algorithm, chosen, search.space))
        return {**report, "out": str(args.out), "size": len(chosen.members)}

    _, data = run_search(args, conclude)
    emit(args, data, render_shrink)
    return EXIT_OK


def render_shrink(console: Console, data: dict) -> None:
    table = Table("round", "size", "measured", "mean val acc", "best val acc", "mean distance", "values per path",
                  "shrink index", title="LISSNAS rounds")
    for r in data["rounds"]:
        index = "" if r["shrink_index"] is None else f"{r['shrink_index']:.3f}"
        table.add_row(str(r["round"]) + (" (chosen)" if r["round"] == data["chosen"] else ""), f"{r['size']:,}",
                      str(r["measured"]), f"{r['mean_val_acc']:.4f}", f"{r['best_val_acc']:.4f}",
                      f"{r['mean_distance']:.2f}", f"{r['values_per_path']:.2f}", index)
    console.print(table)
    console.print(f"{data['size']} derivations written to {data['out']}; search them with: "
                  f"nasdsl search {data['out']} ...")


def run_search(args, conclude=None):
    """Open (or resume) the search the flags ask for, run it, test the best: (search,
    result), with what `conclude(search)` adds, while the store is open."""
    from nasdsl.runtime.executors import make_executor
    from nasdsl.runtime.oneshot import end_follower, ranks_from_environment
    from nasdsl.runtime.progress import Reporter
    from nasdsl.runtime.search import Search, pareto_front

    config = search_config(args)
    console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
    ranks = ranks_from_environment()  # torchrun's processes, or this one
    search = Search.open(config, args.store, resume=args.resume, ranks=ranks)
    if not ranks.lead:  # it trains the lead's supernet alongside it; the lead does everything else
        search.algorithm.follow(search)
        end_follower()
    with search.store:
        for note in filter(None, [search.data.note, *search.algorithm.notes(search)]):
            console.print(f"note: {note}")
        if not args.json:
            console.print(f"searching {search.space!r} with {config.algorithm} on {search.data.name} "
                          f"({len(search.data.train.y)} training images); store {args.store}")
        search.run(lambda: make_executor(config.executor, config.workers, config.address),
                   None if args.json else Reporter(console))
        best = search.test_best()
        for reason in search.untested:
            console.print(f"warning: not tested: {reason}")
        trials = search.store.trials()
        data = {"store": str(args.store),
                "finished": sum(t.status == "done" for t in trials),
                "failed": sum(t.status == "failed" for t in trials),
                "best": [t.to_json() for t in best],
                "pareto": [t.id for t in pareto_front([t for t in trials if t.status == "done"], "macs")]}
        if conclude is not None:
            data.update(conclude(search))
    return search, data


def search_config(args):
    """The search the flags ask for. A new search starts from the defaults; `--resume`
    starts from the store's own config, so `--store S --resume` alone continues it,
    and a flag given must agree with the store (the store says where it does not)."""
    from nasdsl.runtime.search import SearchConfig
    from nasdsl.runtime.store import Store

    given = {dest: getattr(args, dest) for dest in DEFAULTS if hasattr(args, dest)}
    if args.file is not None:
        given["space"] = args.file
    if args.param:
        given["params"] = dict(args.param)
    if args.resume:
        with Store.open(args.store) as store:
            base = SearchConfig.from_record(store.config)
    elif "space" not in given:
        raise UsageError("give the SPACE file to search (or --resume a --store)")
    else:
        base = SearchConfig(space=given["space"], **{k: v for k, v in DEFAULTS.items() if k not in TRAINING})
        base = attrs.evolve(base, train=attrs.evolve(base.train, **{k: DEFAULTS[k] for k in TRAINING}))
    algorithm = given.get("algorithm", base.algorithm)
    train = {k: given.pop(k) for k in TRAINING if k in given}
    return attrs.evolve(base, **given, train=attrs.evolve(base.train, **train),
                        settings={**base.settings, **algorithm_settings(args, algorithm)})


def render_search(console: Console, data: dict) -> None:
    console.print(f"{data['finished']} trials done, {data['failed']} failed")
    render_trials(console, {"trials": data["best"]}, title="best architectures (test accuracy measured once, at the end)",
                  pareto=set(data["pareto"]))
    if data["best"]:
        console.print(f"best: {data['best'][0]['derivation']}")
    console.print(f"store: {data['store']}   report: nasdsl report --store {data['store']} --out DIR")


def cmd_trials(args) -> int:
    from nasdsl.runtime.store import Store

    with Store.open(args.store) as store:
        if args.evaluations:
            rows = sorted(store.evaluations(), key=lambda e: (-e.epoch, -e.shared_acc, e.id))
            emit(args, {"evaluations": [e.to_json() for e in rows]}, render_evaluations)
            return EXIT_OK
        data = {"trials": [t.to_json() for t in store.trials()]}
        for state in ("supertickets", "sparsify"):  # a SuperTickets search or a sparsify run, epoch by epoch
            rows = store.get_state(state)
            if rows:
                data[state] = rows
    emit(args, data, render_trials)
    return EXIT_OK


def render_evaluations(console: Console, data: dict) -> None:
    table = Table(title="shared-weight evaluations (supernet epoch, batch norm, accuracy)")
    for column in ("id", "epoch", "bn", "shared acc", "params", "MACs"):
        table.add_column(column, no_wrap=True, justify="right")
    table.add_column("derivation", overflow="ellipsis", no_wrap=True, max_width=max(12, console.width - 70))
    for e in data["evaluations"]:
        table.add_row(str(e["id"]), str(e["epoch"]), e["method"], f"{e['shared_acc']:.4f}", f"{e['params']:,}",
                      f"{e['macs']:,}", e["derivation"])
    console.print(table)
    if not data["evaluations"]:
        console.print("no shared-weight evaluations: this store is not a one-shot search's")


def render_trials(console: Console, data: dict, title: str = "trials", pareto=frozenset()) -> None:
    table = Table(title=title)
    for column in ("id", "status", "val acc", "test acc", "params", "MACs", "parent"):
        table.add_column(column, no_wrap=True, justify="left" if column == "status" else "right")
    # the derivation gets what is left of the line; the full text is in --json
    table.add_column("derivation", overflow="ellipsis", no_wrap=True, max_width=max(12, console.width - 82))
    for t in data["trials"]:
        acc = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        size = lambda v: "-" if v is None else f"{v:,}"  # noqa: E731
        status = t["status"] if t["status"] != "failed" else f"failed: {t['reason']}"
        table.add_row(str(t["id"]) + (" *" if t["id"] in pareto else ""), status, acc(t["val_acc"]),
                      acc(t["test_acc"]), size(t["params"]), size(t["macs"]), str(t["parent"] or "-"),
                      t["derivation"])
    console.print(table)
    if pareto:
        console.print("* on the accuracy/MACs Pareto front")
    if data.get("supertickets"):
        render_supertickets(console, data["supertickets"])
    if data.get("sparsify"):
        render_sparsify_epochs(console, data["sparsify"])


def render_supertickets(console: Console, rows: list) -> None:
    table = Table(title="supertickets: the network epoch by epoch")
    for column in ("epoch", "val acc", "sparsity", "params", "nonzero", "MACs", "erased", "rebuilt"):
        table.add_column(column, no_wrap=True, justify="right")
    for r in rows:
        table.add_row(str(r["epoch"]), f"{r['val_acc']:.4f}", f"{r['sparsity']:.2f}", f"{r['params']:,}",
                      f"{r['nonzero_params']:,}", f"{r['macs']:,}", str(len(r["erased"])),
                      "yes" if r["rebuilt"] else "")
    console.print(table)


def render_sparsify_epochs(console: Console, rows: list) -> None:
    table = Table(title="sparsify: H2SPG epoch by epoch")
    for column in ("epoch", "loss", "val acc", "group sparsity", "groups at zero", "redundant"):
        table.add_column(column, no_wrap=True, justify="right")
    for r in rows:
        table.add_row(str(r["epoch"]), f"{r['loss']:.4f}", f"{r['val_acc']:.4f}", f"{r['group_sparsity']:.3f}",
                      str(r["zero_groups"]), str(r["redundant"]))
    console.print(table)


def cmd_report(args) -> int:
    from nasdsl.runtime.report import write_report
    from nasdsl.runtime.store import Store

    with Store.open(args.store) as store:
        written = write_report(store, args.out)
    emit(args, {"report": written}, lambda console, data: console.print(
        "wrote " + ", ".join(data["report"].values())))
    return EXIT_OK


def _ticket_export(store, space) -> tuple:
    """(file name, module, JSON fields with the masks, docstring) of a store's ticket."""
    from nasdsl.runtime.algorithms.supertickets import TICKET, load_ticket, ticket_masks

    summary = store.get_state("superticket")
    if summary is None:
        raise NasError(f"{store.path}: this store holds no SuperTickets ticket",
                       hint="--ticket exports a finished `--algorithm supertickets` search's; give --trial N otherwise")
    path = store.checkpoint_dir() / TICKET
    doc = (f"SuperTickets' ticket of {store.path}: space `{space.name}`, test accuracy {summary['test_acc']:.4f}, "
           f"{summary['params']:,} params ({summary['nonzero_params']:,} nonzero, sparsity "
           f"{summary['sparsity']:.2f}), {summary['macs']:,} MACs.\n\nDerivation: {summary['derivation']}")
    data = {"ticket": str(path), "derivation": summary["derivation"], "val_acc": summary["val_acc"],
            "test_acc": summary["test_acc"], "sparsity": summary["sparsity"], "masks": ticket_masks(path)}
    return "superticket", load_ticket(space, path), data, doc


def formats_arg(text: str) -> tuple:
    """`--formats onnx,py`: some of FORMATS, each once, in the order given."""
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(FORMATS)}, got `{text}`")
    return chosen


def cmd_export(args) -> int:
    from nasdsl.compiler.export import require_onnx, write_module
    from nasdsl.runtime.search import stored_space, trained_module
    from nasdsl.runtime.store import Store

    if "onnx" in args.formats:
        require_onnx()  # before the store and the data set are read
    with Store.open(args.store) as store:
        space, input_shape = stored_space(store, args.space)
        if args.ticket:
            name, module, data, doc = _ticket_export(store, space)
        else:
            trial = store.trial(args.trial)
            module = trained_module(store, trial, space, input_shape)
            name, data = f"trial_{trial.id}", {"trial": trial.id, "derivation": trial.derivation,
                                               "val_acc": trial.val_acc}
            doc = (f"Trial {trial.id} of {args.store}: space `{space.name}`, validation accuracy "
                   f"{trial.val_acc:.4f}, {trial.params:,} params, {trial.macs:,} MACs.\n\n"
                   f"Derivation: {trial.derivation}")
    forms = [*args.formats, *(["state_dict"] if "py" in args.formats else [])]
    out = Path(args.out)
    files = {form: out / f"{name}{SUFFIXES[form]}" for form in forms}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NasError(f"cannot make {out}: {err.strerror or err}") from None
    write_module(module, input_shape, files, doc)
    if args.ticket:
        import torch

        files["masks"] = out / f"{name}.masks.pt"
        torch.save(data.pop("masks"), files["masks"])
    data = {**data, "space": space.name, "input_shape": list(input_shape),
            "files": {form: str(path) for form, path in files.items()}}
    emit(args, data, lambda console, d: console.print("wrote " + ", ".join(d["files"].values())))
    return EXIT_OK
