"""`nasdsl sparsify`: OTOv3 on any super-network (`runtime/algorithms/otov3.py`).

    nasdsl sparsify spaces/superresnet.nas --supernet supernet --target-sparsity 0.5 --store s.db
    nasdsl sparsify torchvision:resnet18 --input-shape 3,32,32 --target-sparsity 0.3 --store r.db
    nasdsl sparsify module:cells.py:SummedCell --store c.db --json

A run lives in its store like a search: the settings in its config, a row per epoch,
the result; `--resume` continues a killed run with the store's settings (a flag given
must agree), and `nasdsl report` draws it.
"""

from __future__ import annotations

import attrs
from rich.console import Console
from rich.table import Table

from ..language.errors import NasError
from .common import EXIT_OK, UsageError, emit, load

# the flags beside the algorithm's settings, and what a new run takes when one is not given
DEFAULTS = {"dataset": "fashion-mnist", "epochs": 10, "limit": None, "seed": 0, "data_seed": 0, "batch_size": 64,
            "lr": 0.1, "input_shape": None, "supernet": None, "param": None}


def add_sparsify(command, space_parent, positive_int, shape_arg) -> None:
    """Register `nasdsl sparsify` with `nasdsl.cli.commands`'s `command(...)`."""
    from nasdsl.runtime.algorithms import flag
    from nasdsl.runtime.algorithms.otov3 import Sparsify

    from .search import flag_argument

    sparsify = command("sparsify", cmd_sparsify, "OTOv3: train a super-network with H2SPG until whole structures "
                       "are zero, then build the compact sub-network (and, for a space, its derivation)",
                       [space_parent])
    sparsify.add_argument("model", metavar="MODEL", nargs="?",
                          help="a space file with --supernet, torchvision:NAME, timm:NAME, or module:PATH:NAME (a Python file "
                               "and the module, class or function there); with --resume: the store's")
    sparsify.add_argument("--supernet", metavar="FORM", help="for a space: `parallel` (every option of every "
                          "alternative, summed under gates) or a preset's name (that derivation compiled: "
                          "superresnet's `supernet`)")
    sparsify.add_argument("--store", required=True, metavar="PATH", help="the SQLite store of this run")
    sparsify.add_argument("--resume", action="store_true", help="continue the run in --store, with its settings")
    sparsify.add_argument("--dataset", metavar="NAME[:PATH]", help="as for `nasdsl search` (fashion-mnist)")
    sparsify.add_argument("--epochs", type=positive_int, help="training epochs (10)")
    sparsify.add_argument("--limit", type=positive_int, metavar="N", help="train on N training images")
    sparsify.add_argument("--seed", type=int, help="seed of the weights and the training order (0)")
    sparsify.add_argument("--data-seed", type=int, help="seed of the split and of --limit's subset (0)")
    sparsify.add_argument("--batch-size", type=positive_int, help="training batch size (64)")
    sparsify.add_argument("--lr", type=float, help="peak learning rate (0.1)")
    sparsify.add_argument("--input-shape", type=shape_arg, metavar="C,H,W",
                          help="the model's per-sample input (default: the data set's; 3,32,32 fits torchvision's "
                               "models to Fashion-MNIST, resized and its channel repeated)")
    for field in attrs.fields(Sparsify):
        option = sparsify.add_argument(flag(field), dest=field.name, **flag_argument([("otov3", field)], positive_int))
        option.default = None


def cmd_sparsify(args) -> int:
    from nasdsl.runtime.algorithms.otov3 import load_subject, sparsify
    from nasdsl.runtime.data import load as load_data
    from nasdsl.runtime.progress import Reporter
    from nasdsl.runtime.store import Store
    from nasdsl.runtime.train import TrainConfig

    config = _config(args)
    console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
    space = None
    if config["model"].endswith(".nas"):
        if config["supernet"] is None:
            raise UsageError("a space is sparsified as a super-network: add --supernet parallel, or --supernet "
                             "PRESET for a preset of it that holds every branch")
        space = load(config["model"], params=dict(config["param"] or ()))
    elif config["supernet"] is not None:
        raise UsageError("--supernet is for a space file; torchvision:NAME, timm:NAME and module:PATH:NAME are the network")
    data = load_data(config["dataset"], seed=config["data_seed"], limit=config["limit"])
    shape = tuple(config["input_shape"] or data.input_shape)
    subject = load_subject(config["model"], shape, data.num_classes, space=space,
                           supernet=config["supernet"] or "parallel", seed=config["seed"])
    train = TrainConfig(**config["train"])
    from nasdsl.runtime.algorithms.otov3 import Sparsify

    settings = Sparsify(**config["settings"])
    store = Store.resume(args.store, config) if args.resume else Store.create(args.store, config)
    with store:
        if data.note:
            console.print(f"note: {data.note}")
        if not args.json:
            console.print(f"sparsifying {config['model']} ({len(subject.erasing.structures)} removal structures) "
                          f"to group sparsity {settings.target_sparsity} on {data.name} "
                          f"({len(data.train.y)} training images); store {args.store}")
        result = sparsify(subject, data, train, settings, store, seed=config["seed"],
                          reporter=None if args.json else Reporter(console))
    emit(args, {"store": str(args.store), **result}, render_sparsify)
    return EXIT_OK


def _config(args) -> dict:
    """The run the flags ask for: a new run fills what is not given from DEFAULTS and
    the settings' defaults; `--resume` from the store's config, a flag given being
    checked against it by `Store.resume`."""
    from nasdsl.runtime.algorithms.otov3 import Sparsify
    from nasdsl.runtime.store import Store

    given = {k: getattr(args, k) for k in (*DEFAULTS, "model") if getattr(args, k, None) is not None}
    settings_given = {f.name: getattr(args, f.name) for f in attrs.fields(Sparsify) if getattr(args, f.name) is not None}
    if args.resume:
        with Store.open(args.store) as store:
            stored = store.config
        if stored.get("command") != "sparsify":
            raise NasError(f"{args.store}: not a sparsify run's store", hint="resume it with `nasdsl search --resume`")
        base = {k: stored[k] for k in (*DEFAULTS, "model")}
        base["train"] = stored["train"]
        settings = {**stored["settings"], **settings_given}
    else:
        if "model" not in given:
            raise UsageError("name the network: a space file with --supernet, torchvision:NAME, timm:NAME or module:PATH:NAME")
        base = {**DEFAULTS}
        settings = attrs.asdict(Sparsify(**settings_given))
    base.update(given)
    if given.get("param") is not None:
        base["param"] = [list(p) for p in given["param"]]
    if given.get("input_shape") is not None:
        base["input_shape"] = list(given["input_shape"])
    train = {"epochs": base["epochs"], "batch_size": base["batch_size"], "lr": base["lr"]}
    return {"command": "sparsify", **base, "train": train, "settings": settings}


def render_sparsify(console: Console, d: dict) -> None:
    table = Table(show_header=False, box=None)
    table.add_row("groups zero", f"{d['zero_groups']} of {d['groups']} (group sparsity {d['group_sparsity']:.3f}, "
                                 f"target {d['target_sparsity']}; {d['projected']} by the projection before the end)")
    table.add_row("supernet", f"{d['params_before']:,} params, {d['macs_before']:,} MACs, val "
                              f"{d['accuracy']['supernet']['val']:.4f}, test {d['accuracy']['supernet']['test']:.4f}")
    if not d["valid"]:
        table.add_row("no sub-network", f"the selection left an invalid network: {d['reasons'][0]}")
    else:
        sub = d["accuracy"]["subnet"]
        table.add_row("sub-network", f"{d['params_after']:,} params, {d['macs_after']:,} MACs, val {sub['val']:.4f}, "
                                     f"test {sub['test']:.4f}; largest output gap {d['output_gap']:.2e}")
    if "derivation" in d:
        table.add_row("derivation", f"{d['derivation']} ({d['distance']} options from the sub-network)")
    table.add_row("store", d["store"])
    console.print(table)
