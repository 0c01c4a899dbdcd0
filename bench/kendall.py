"""Kendall tau of SPOS shared-weight accuracy against stand-alone accuracy: nb201 on
Fashion-MNIST, several seeds (issue 15).

One set of `--derivations` distinct uniform samples of nb201 (C=8, N=1 by default,
bound to Fashion-MNIST's 1x28x28 images and 10 classes) is drawn once and used at
every seed, so that the spread over seeds is the spread of training, not of which
derivations were drawn. Per seed s:

1. a SPOS supernet (`Supernet(space, shape, seed=s)`) trained for `--supernet-epochs`
   with single-path sampling (`train_supernet`): each step's derivation a uniform
   sample of the space, or with `--sampling params` drawn in proportion to its
   parameters (NAO-V2's balanced sampling); with `--pool`, drawn from the measured
   derivations only, as NAO-V2 trains each iteration's pool;
2. the shared-weight validation accuracy of every derivation with each batch-norm
   method of `shared_accuracy`: `recalibrate` (fresh statistics from
   `--calibration-batches` training batches, as `SharedWeights` takes them) and `train`
   (each evaluation batch's own statistics);
3. every derivation trained stand-alone from scratch (`space.compile(d, shape, seed=s)`
   and `train(..., seed=s)`) for `--alone-epochs`, its validation accuracy (`train`'s
   best epoch) the reference;
4. Kendall tau-b (`report.kendall_tau`) of shared against stand-alone, per method,
   beside its null spread at that n, and the share of parameter-free cells (no
   convolution) and of small ones (the third with the fewest parameters) among the 5
   best by each ranking.

Because every seed trains all derivations stand-alone again, the stand-alone runs of
two seeds give the noise of the reference itself: the per-derivation spread, and the
tau between two stand-alone runs, a ceiling on any measured tau. The data split is
the same at every seed (`--data-seed`). The JSON is rewritten after every supernet,
evaluation and stand-alone run; `--resume` continues a run from it (the supernets
from their per-epoch checkpoints in `--checkpoints`).

    .venv/bin/python bench/kendall.py [--seeds 3] [--derivations 20] [--supernet-epochs 10]
        [--alone-epochs 2] [--limit 8000] [--sampling uniform|params] [--pool] [--alone-from JSON]
        [--threads 1] [--resume] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import attrs
import record  # bench/record.py, beside this script
import torch
from nasdsl.runtime.data import FASHION_MNIST_ROOT, load
from nasdsl.runtime.oneshot import path_sampler, shared_accuracy, train_supernet
from nasdsl.runtime.propose import Proposer
from nasdsl.runtime.report import kendall_tau
from nasdsl.runtime.search import bind_to_data
from nasdsl.runtime.train import TrainConfig, train

import nasdsl
from nasdsl.compiler.supernet import Supernet

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "spaces" / "nb201.nas"
METHODS = ("recalibrate", "train")
CHANCE = 0.2  # a derivation whose mean stand-alone accuracy is below this learned nothing (10 classes)
TOP = 5  # the share of parameter-free and small cells among the best TOP, as NAO-V2 asks


def null_std(n: int) -> float:
    """Kendall tau's standard deviation between n values in independent random order."""
    return (2 * (2 * n + 5) / (9 * n * (n - 1))) ** 0.5


def top_share(scores, small: list[bool]) -> float | None:
    """The share of `small` derivations among the TOP best by `scores`."""
    ranked = sorted((i for i, v in enumerate(scores) if v is not None), key=lambda i: -scores[i])[:TOP]
    return sum(small[i] for i in ranked) / len(ranked) if ranked else None


def distinct_samples(space, n: int, seed: int) -> list:
    """`n` distinct uniform derivations, in the order drawn."""
    rng, found = random.Random(f"kendall:{seed}"), {}
    for _ in range(100 * n):
        d = space.sample(rng=rng)
        found.setdefault(d.hash, d)
        if len(found) == n:
            return list(found.values())
    raise SystemExit(f"the space has fewer than {n} derivations to draw")


def calibration_batches(data, batches: int, batch_size: int, seed: int) -> list:
    """Training batches for recalibration, taken as `SharedWeights` takes them."""
    order = torch.randperm(len(data.train.y), generator=torch.Generator().manual_seed(seed))
    return [data.train.x[order[i:i + batch_size]] for i in range(0, min(len(order), batches * batch_size), batch_size)]


def tau(a, b):
    """Kendall tau-b over the positions where both lists have a value."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return kendall_tau([x for x, _ in pairs], [y for _, y in pairs]) if len(pairs) > 1 else None


def spread(values) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "values": values}


def summarise(result: dict) -> dict:
    """Taus and accuracies over whatever the run holds so far."""
    runs = result["seeds"]
    n = len(result["derivations"])
    alone = [[a["val_acc"] if a else None for a in run["alone"]] for run in runs]
    mean_alone = [statistics.mean(col) if all(v is not None for v in col) else None
                  for col in zip(*alone)] if alone else [None] * n
    live = [i for i, v in enumerate(mean_alone) if v is not None and v >= CHANCE]
    params = [d["params"] for d in result["derivations"]]
    # nb201's cells without a convolution add no parameters to the stem, reductions and head;
    # "small": the third of the derivations with the fewest parameters
    free = ["conv" not in d["text"] for d in result["derivations"]]
    small = [p <= sorted(params)[max(0, len(params) // 3 - 1)] for p in params]
    summary: dict = {"per_seed": [], "at_chance": [i for i, v in enumerate(mean_alone) if v is not None and v < CHANCE],
                     "tau_null_std": null_std(n) if n > 1 else None,
                     "parameter_free": sum(free), "small": sum(small)}
    for run, acc in zip(runs, alone):
        row = {"seed": run["seed"], "mean_alone_acc": spread(acc)["mean"] if spread(acc) else None,
               "tau_params_vs_alone": tau(params, acc),
               "top_free_share_alone": top_share(acc, free), "top_small_share_alone": top_share(acc, small)}
        for method in METHODS:
            shared = run["shared"][method]
            row[f"top_free_share_{method}"] = top_share(shared, free)
            row[f"top_small_share_{method}"] = top_share(shared, small)
            row[f"tau_{method}"] = tau(shared, acc)
            row[f"tau_{method}_vs_mean_alone"] = tau(shared, mean_alone)
            row[f"tau_{method}_above_chance"] = tau([shared[i] for i in live], [acc[i] for i in live])
            row[f"mean_shared_acc_{method}"] = spread(shared)["mean"] if spread(shared) else None
        summary["per_seed"].append(row)
    for key in [k for k in (summary["per_seed"][0] if runs else {}) if k != "seed"]:
        summary[key] = spread(row[key] for row in summary["per_seed"])
    # the reference's own noise: the same derivations trained alone at two seeds
    summary["tau_alone_between_seeds"] = spread(tau(a, b) for a, b in itertools.combinations(alone, 2))
    summary["tau_alone_between_seeds_above_chance"] = spread(
        tau([a[i] for i in live], [b[i] for i in live]) for a, b in itertools.combinations(alone, 2))
    per_derivation = [spread(col) for col in zip(*alone)] if alone else []
    stds = [s["std"] for s in per_derivation if s and s["std"] is not None]
    summary["alone_std_per_derivation"] = spread(stds)
    summary["alone_std_per_derivation_above_chance"] = spread(
        s["std"] for i, s in enumerate(per_derivation) if i in live and s and s["std"] is not None)
    summary["mean_alone_acc_per_derivation"] = mean_alone
    return summary


def reuse_alone(result: dict, earlier: dict, path: Path, parser) -> None:
    """The stand-alone accuracies of `earlier`, where it trained the same derivations the same way."""
    same = ("limit", "val_fraction", "data_seed", "alone_epochs", "batch_size", "train_config", "params")
    differ = [k for k in same if earlier["settings"].get(k) != result["settings"][k]]
    if differ or [d["hash"] for d in earlier["derivations"]] != [d["hash"] for d in result["derivations"]]:
        parser.error(f"{path} trained other derivations or trained them otherwise ({', '.join(differ) or 'derivations'})")
    by_seed = {run["seed"]: run["alone"] for run in earlier["seeds"]}
    for run in result["seeds"]:
        run["alone"] = list(by_seed.get(run["seed"], run["alone"]))
    full = path.resolve()
    result["alone_from"] = str(full.relative_to(ROOT) if full.is_relative_to(ROOT) else full)


def save(path: Path, result: dict) -> None:
    """The run so far, written whole or not at all."""
    result["summary"] = summarise(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(partial, path)


def run_seed(run: dict, result: dict, space, data, derivations, args, out: Path, checkpoints: Path) -> None:
    seed, shape = run["seed"], data.input_shape
    config = TrainConfig(epochs=args.supernet_epochs, batch_size=args.batch_size)
    net = Supernet(space, shape, seed=seed)
    if run["supernet"] is None or len(run["supernet"]["epochs"]) < args.supernet_epochs or \
            any(v is None for m in METHODS for v in run["shared"][m]):
        def progress(epoch, history):
            print(f"  seed {seed} supernet epoch {epoch.epoch}/{args.supernet_epochs}: loss {epoch.loss:.3f}, "
                  f"train acc {epoch.acc:.3f}, {epoch.seconds:.1f} s", flush=True)

        if args.pool:  # NAO-V2's pool: only the measured derivations are trained
            weights = [d["params"] for d in result["derivations"]] if args.sampling == "params" else None
            sample = lambda r: r.choices(derivations, weights=weights)[0]  # noqa: E731
        else:
            sample = path_sampler(args.sampling, space, Proposer(space, shape), net.size.params)
        history = train_supernet(net, data, config, sample, seed=seed,
                                 checkpoint=checkpoints / f"supernet-{seed}.pt", on_epoch=progress)
        run["supernet"] = {"epochs": [{"epoch": e.epoch, "loss": e.loss, "acc": e.acc, "lr": e.lr,
                                       "seconds": e.seconds} for e in history],
                           "seconds": sum(e.seconds for e in history)}
        save(out, result)
        calibration = calibration_batches(data, args.calibration_batches, args.batch_size, seed)
        start = time.perf_counter()
        for method in METHODS:
            for i, d in enumerate(derivations):
                if run["shared"][method][i] is None:
                    run["shared"][method][i] = shared_accuracy(net, d, data.val, method=method,
                                                               calibration=calibration,
                                                               batch_size=config.eval_batch_size)
        run["shared_seconds"] = (run.get("shared_seconds") or 0.0) + time.perf_counter() - start
        print(f"  seed {seed} shared accuracy of {len(derivations)} derivations, {run['shared_seconds']:.1f} s: "
              + ", ".join(f"{m} mean {statistics.mean(run['shared'][m]):.3f}" for m in METHODS), flush=True)
        save(out, result)
    del net
    alone_config = TrainConfig(epochs=args.alone_epochs, batch_size=args.batch_size)
    for i, d in enumerate(derivations):
        if run["alone"][i] is not None:
            continue
        start = time.perf_counter()
        trained = train(space.compile(d, shape, seed=seed), data, alone_config, seed=seed)
        run["alone"][i] = {"val_acc": trained.val_acc, "last_val_acc": trained.epochs[-1].val_acc,
                           "best_epoch": trained.best_epoch, "train_s": trained.train_time,
                           "seconds": time.perf_counter() - start}
        print(f"  seed {seed} alone {i + 1:>2}/{len(derivations)}: val {trained.val_acc:.3f} "
              f"(shared {run['shared']['recalibrate'][i]:.3f} recalibrate, {run['shared']['train'][i]:.3f} train), "
              f"{run['alone'][i]['seconds']:.1f} s", flush=True)
        save(out, result)
    run["tau"] = {m: tau(run["shared"][m], [a["val_acc"] for a in run["alone"]]) for m in METHODS}
    save(out, result)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/kendall.json (kendall_quick.json with --quick)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (supernet and stand-alone training)")
    parser.add_argument("--derivations", type=int, default=20)
    parser.add_argument("--derivation-seed", type=int, default=0, help="draws the derivations (the same at every seed)")
    parser.add_argument("--supernet-epochs", type=int, default=10)
    parser.add_argument("--alone-epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=8000, help="Fashion-MNIST training images")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share held out for validation (0.2: 2,000 images at --limit 8000)")
    parser.add_argument("--data-seed", type=int, default=0, help="the train/val split, the same at every seed")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--calibration-batches", type=int, default=4,
                        help="training batches that re-estimate batch norm (the one-shot runtime's default)")
    parser.add_argument("--C", type=int, default=8, help="nb201's channels")
    parser.add_argument("--N", type=int, default=1, help="nb201's cells per stage")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on this shared 2-core machine two threads under load ran up to "
                             "25x slower than one)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="where the supernets' per-epoch checkpoints go (removed after a whole run)")
    parser.add_argument("--sampling", choices=("uniform", "params"), default="uniform",
                        help="the supernet's training paths: uniform (SPOS) or in proportion to their parameters")
    parser.add_argument("--pool", action="store_true",
                        help="train the supernet on the measured derivations only, as NAO-V2 trains its pool, "
                             "rather than on the whole space")
    parser.add_argument("--alone-from", type=Path, metavar="JSON",
                        help="take the stand-alone accuracies from an earlier run of the same derivations, seeds "
                             "and stand-alone settings (they do not depend on the supernet)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run of a few seconds: 1 seed, 4 derivations, 1 epoch each, 600 images")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.derivations, args.supernet_epochs, args.alone_epochs, args.limit = 1, 4, 1, 1, 600
    name = ("kendall" + ("_pool" if args.pool else "") + ("" if args.sampling == "uniform" else f"_{args.sampling}")
            + ("_quick" if args.quick else ""))
    out = args.out or ROOT / "bench" / "results" / f"{name}.json"
    checkpoints = args.checkpoints or Path(tempfile.gettempdir()) / f"nasdsl-{out.stem}-checkpoints"
    if not FASHION_MNIST_ROOT.exists():  # no silent fallback to digits: the numbers would not compare
        parser.error(f"Fashion-MNIST is not installed ({FASHION_MNIST_ROOT}); `make debian-packages`")
    torch.set_num_threads(args.threads)

    data = load("fashion-mnist", limit=args.limit, seed=args.data_seed, val_fraction=args.val_fraction)
    space = bind_to_data(nasdsl.load(SPACE, {"C": args.C, "N": args.N}), data, {})
    derivations = distinct_samples(space, args.derivations, args.derivation_seed)
    settings = {"space": "spaces/nb201.nas", "params": {"C": args.C, "N": args.N, "num_classes": data.num_classes},
                "input_shape": list(data.input_shape), "dataset": "fashion-mnist", "limit": args.limit,
                "train_images": len(data.train.y), "val_images": len(data.val.y), "val_fraction": args.val_fraction,
                "data_seed": args.data_seed, "seeds": list(range(args.seeds)), "derivations": args.derivations,
                "derivation_seed": args.derivation_seed, "same_derivations_every_seed": True,
                "supernet_epochs": args.supernet_epochs, "alone_epochs": args.alone_epochs,
                "batch_size": args.batch_size, "calibration_batches": args.calibration_batches,
                "supernet_params": Supernet.measure(space, data.input_shape).params,
                "train_config": {k: v for k, v in attrs.asdict(TrainConfig()).items()
                                 if k not in ("epochs", "batch_size")},
                "sampling": ("single path, one of the measured derivations per step (NAO-V2's pool), "
                             if args.pool else "single path over the whole space, ")
                            + ("drawn uniformly" if args.sampling == "uniform" else
                               "drawn with p proportional to its parameters"),
                "bn_methods": list(METHODS),
                "alone_accuracy": "train()'s best epoch on the validation split", "threads": args.threads,
                "quick": args.quick}
    if args.resume and out.exists():
        result = json.loads(out.read_text())
        if result["settings"] != settings:
            parser.error(f"{out} holds a run with other settings; drop --resume or choose another --out")
        print(f"resuming {out}")
    else:
        shutil.rmtree(checkpoints, ignore_errors=True)
        result = {
            "benchmark": "kendall", "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {**record.machine(), "loadavg_before": list(os.getloadavg())},
            "settings": settings,
            "derivations": [{"index": i, "text": d.text, "hash": d.hash,
                             "params": (g := space.graph(d, data.input_shape)).graph["params"],
                             "macs": g.graph["macs"]} for i, d in enumerate(derivations)],
            "seeds": [{"seed": s, "supernet": None, "shared": {m: [None] * len(derivations) for m in METHODS},
                       "alone": [None] * len(derivations)} for s in range(args.seeds)],
            "seconds_before_resume": 0.0,
        }
    if args.alone_from is not None and not args.resume:
        reuse_alone(result, json.loads(args.alone_from.read_text()), args.alone_from, parser)
    start = time.perf_counter()
    print(f"nb201 C={args.C} N={args.N} on {len(data.train.y)} Fashion-MNIST images ({len(data.val.y)} val), "
          f"{args.derivations} derivations, seeds 0-{args.seeds - 1}, supernet {args.supernet_epochs} epochs, "
          f"stand-alone {args.alone_epochs}", flush=True)
    for run in result["seeds"]:
        print(f"seed {run['seed']}", flush=True)
        run_seed(run, result, space, data, derivations, args, out, checkpoints)
        print(f"seed {run['seed']}: tau " + ", ".join(f"{m} {t:+.3f}" if t is not None else f"{m} -"
                                                      for m, t in run["tau"].items()), flush=True)
    result["seconds_before_resume"] += time.perf_counter() - start
    result["total_s"] = result["seconds_before_resume"]
    result["durations"] = {
        "supernet_s": sum(r["supernet"]["seconds"] for r in result["seeds"]),
        "shared_eval_s": sum(r["shared_seconds"] for r in result["seeds"]),
        "alone_s": sum(a["seconds"] for r in result["seeds"] for a in r["alone"]),
    }
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    save(out, result)
    shutil.rmtree(checkpoints, ignore_errors=True)

    s = result["summary"]

    def show(x):
        return "-" if x is None else f"{x['mean']:+.3f} ± {x['std']:.3f}" if x["std"] is not None else f"{x['mean']:+.3f}"

    def num(x, width, sign=""):
        return f"{'-':>{width}}" if x is None else f"{x:>{sign}{width}.3f}"

    print(f"\n{'seed':>4} {'tau recal':>9} {'tau train':>9} {'alone acc':>9} {'shared recal':>12} {'shared train':>12}")
    for row in s["per_seed"]:
        print(f"{row['seed']:>4} {num(row['tau_recalibrate'], 9, '+')} {num(row['tau_train'], 9, '+')} "
              f"{num(row['mean_alone_acc'], 9)} {num(row['mean_shared_acc_recalibrate'], 12)} "
              f"{num(row['mean_shared_acc_train'], 12)}")
    print(f"tau recalibrate {show(s['tau_recalibrate'])}, train {show(s['tau_train'])}; "
          f"stand-alone against stand-alone (ceiling) {show(s['tau_alone_between_seeds'])}; "
          f"{result['total_s']:.0f} s in all")
    record.write(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
