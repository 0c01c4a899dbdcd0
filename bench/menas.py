"""MENAS's three claims at small scale on Fashion-MNIST, each with several seeds:

    inherit   individual weight sharing. K parents (uniform samples) are trained
              --long-epochs; each gets one child (a one-choice mutation), trained
              (a) E epochs from the parent's inherited weights, (b) E epochs from
              scratch, (c) 2E epochs from scratch and (d) --long-epochs from scratch,
              the reference ranking. Reports mean accuracies and Kendall's tau of (a)
              and (b) against (d). The same run cuts lottery tickets (below) from the
              trained parents.
    tickets   the lottery-ticket step exactly as MENAS runs it
              (`runtime/algorithms/menas.py:lottery_ticket`): per ratio, params and MACs removed
              and the accuracy change after the brief fine-tune (and before it). `inherit`
              cuts them from its parents; the `tickets` command trains the same parents
              under network slimming (`--bn-l1 RHO,...`, runtime/slimming.py) first.
    search    MENAS against aging evolution and random search at an equal budget of
              trained epochs, plus MENAS with rho = 0 (the size-regulariser ablation).
    bn        the same few networks trained with the space's batch-norm momentum as
              shipped and with --bn-momentum, so the reason for the latter is on record.

Batch norm. mobilenet3_mt.nas (like torchvision) uses momentum 0.01 for its batch
norms; a trial of ~60 steps leaves the running statistics mostly at their initial
values, and every network then validates at chance (see `bn`). So the benchmark
compiles a copy of the space whose only change is the momentum (--bn-momentum,
default 0.1, PyTorch's default); `--bn-momentum shipped` uses the file as it is.

Equal budget (search): an epoch is one pass over the --limit training images. A MENAS
trial costs E epochs plus --finetune-epochs for its ticket (the candidates share that
epoch: each fine-tunes on its own slice of the training set), so MENAS runs
--menas-trials trials and the others as many trials as MENAS's total epochs divided
by E. The epochs actually trained are summed from each store and reported.

Identical trials are trained once: the first --population proposals of every search
at one seed are the same uniform samples with the same training seeds, so an
executor wrapper reuses the outcome of a trial it has already run (same function,
derivation, seed and training settings, no parent) and copies its checkpoints.
Training is deterministic on the CPU, so this changes only the wall time; the
number of reused trials is recorded.

    .venv/bin/python bench/menas.py inherit [--seeds 2] [--k 4] [--epochs 1] [--long-epochs 3]
    .venv/bin/python bench/menas.py tickets [--seeds 2] [--k 3] [--bn-l1 0,1e-4,5e-4,2e-3] [--bn-l1-warmup 1]
    .venv/bin/python bench/menas.py search [--seeds 3] [--menas-trials 8] [--population 4]
        [--retrain-epochs 3 --retrain-seeds 2]  (each search's best retrained from scratch, equal epochs)
    .venv/bin/python bench/menas.py bn

The recorded run (docs/menas.md): `inherit --seeds 2 --k 3` and `search --seeds 3
--menas-trials 6 --population 3` side by side, then `bn`; about 23 minutes on 2 shared cores.
Results: bench/results/menas_inherit.json (with the tickets), menas_search.json, menas_bn.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import attrs
import record  # bench/record.py, beside this script
import torch
from nasdsl.runtime import data as datasets
from nasdsl.runtime.algorithms.menas import lottery_ticket
from nasdsl.runtime.data import FASHION_MNIST_ROOT
from nasdsl.runtime.inherit import inherit
from nasdsl.runtime.propose import Proposer, living_population
from nasdsl.runtime.search import Search, SearchConfig, bind_to_data, pareto_front
from nasdsl.runtime.tickets import ticket_candidates
from nasdsl.runtime.train import TrainConfig, accuracy, train
from scipy.stats import kendalltau

from nasdsl import load
from nasdsl.compiler.module import build_module

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "spaces" / "mobilenet3_mt.nas"
IMPORTS = ("mobilenetv3.nas",)  # the files mobilenet3_mt.nas imports from
SHIPPED_MOMENTUM = "momentum=0.01"


# ---- shared ----------------------------------------------------------------------------
def space_file(momentum: str, folder: Path) -> Path:
    """The space to search: as shipped, or a copy whose batch norms use `momentum`."""
    if momentum == "shipped":
        return SPACE
    for path in (SPACE, *(SPACE.parent / name for name in IMPORTS)):
        text = path.read_text()
        if SHIPPED_MOMENTUM not in text and path == SPACE:
            sys.exit(f"{path}: no `{SHIPPED_MOMENTUM}` to replace; update bench/menas.py")
        (folder / path.name).write_text(text.replace(SHIPPED_MOMENTUM, f"momentum={float(momentum)}"))
    return folder / SPACE.name


def space_params(args) -> dict:
    return {"width": args.width, "max_depth": args.max_depth}


def load_data(args, seed: int = 0):
    return datasets.load("fashion-mnist", limit=args.limit, val_fraction=args.val_fraction, seed=seed)


def train_config(args, epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=args.batch_size)


def spread(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def tau(x: list, y: list) -> float | None:
    """Kendall's tau-b; None where it is undefined (fewer than 2 items or a constant list)."""
    if len(x) < 2:
        return None
    value = kendalltau(x, y).statistic
    return None if value != value else float(value)  # NaN: a constant list


def header(name: str, args) -> dict:
    settings = {k: v for k, v in vars(args).items() if k not in ("command", "out")}
    return {"benchmark": f"menas_{name}", "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {**record.machine(),
                        "threads": torch.get_num_threads(), "loadavg_before": list(os.getloadavg())},
            "settings": {**settings, "space": str(SPACE.relative_to(ROOT)), "dataset": "fashion-mnist"}}


def finish(result: dict, start: float, out: Path) -> None:
    result["total_s"] = round(time.perf_counter() - start, 1)
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    print(f"{result['total_s']:.0f} s in all")
    record.write(out, result)


def fit(module, data, args, epochs: int, seed: int, graph=None, bn_l1: float = 0.0) -> dict:
    """Train and summarise: the best epoch's validation accuracy and the curve; with
    `bn_l1`, under network slimming (its penalties from `graph`)."""
    config = attrs.evolve(train_config(args, epochs), bn_l1=bn_l1, bn_l1_warmup=args.bn_l1_warmup if bn_l1 else 0.0)
    r = train(module, data, config, seed=seed, graph=graph)
    return {"val_acc": r.val_acc, "curve": [round(e.val_acc, 4) for e in r.epochs], "train_s": round(r.train_time, 2),
            "state": r.state_dict}


# ---- inherit (and tickets) -------------------------------------------------------------
def pairs_of(args, path: Path):
    """(seed, k, data, space, parent, child, training seed) of every parent/child pair:
    a uniform sample and a one-choice mutation of it, the same in every command."""
    for seed in range(args.seeds):
        data = load_data(args, seed)
        space = bind_to_data(load(path, space_params(args)), data, {})
        proposer = Proposer(space, data.input_shape)
        for k in range(args.k):
            rng = random.Random(f"inherit:{seed}:{k}")
            parent = proposer.sample(rng)
            child = proposer.mutate(parent, rng)
            while child.hash == parent.hash:  # a mutation may land on the same derivation
                child = proposer.mutate(parent, rng)
            yield seed, k, data, space, parent, child, rng.randrange(2**31)


def run_inherit(args) -> int:
    start = time.perf_counter()
    result = header("inherit", args)
    E, L = args.epochs, args.long_epochs
    result["arms"] = {"a": f"child, {E} epoch(s) from the parent's weights", "b": f"child, {E} epoch(s) from scratch",
                      "c": f"child, {2 * E} epoch(s) from scratch",
                      "d": f"child, {L} epoch(s) from scratch (reference)"}
    with tempfile.TemporaryDirectory() as folder:
        path = space_file(args.bn_momentum, Path(folder))
        pairs, tickets = [], []
        print(f"{'seed':>4} {'k':>2} {'params':>8} {'child':>8} {'inh%':>5} {'parent':>7} "
              f"{'(a)':>6} {'(b)':>6} {'(c)':>6} {'(d)':>6}")
        for seed, k, data, space, parent, child, train_seed in pairs_of(args, path):
            pg, cg = space.graph(parent, data.input_shape), space.graph(child, data.input_shape)
            parent_module = build_module(pg, seed=train_seed)
            p = fit(parent_module, data, args, L, train_seed)
            inherited = build_module(cg, seed=train_seed)
            got = inherit(pg, p["state"], cg, inherited)
            arms = {"a": fit(inherited, data, args, E, train_seed),
                    "b": fit(build_module(cg, seed=train_seed), data, args, E, train_seed),
                    "c": fit(build_module(cg, seed=train_seed), data, args, 2 * E, train_seed)}
            arms["d"] = (arms["c"] if L == 2 * E  # the same training: do not run it twice
                         else fit(build_module(cg, seed=train_seed), data, args, L, train_seed))
            pair = {"seed": seed, "k": k, "parent": parent.text, "child": child.text,
                    "parent_params": pg.graph["params"], "child_params": cg.graph["params"],
                    "child_macs": cg.graph["macs"], "inherited_fraction": got.fraction,
                    "adapted": len(got.adapted), "fresh": len(got.fresh), "parent_val_acc": p["val_acc"],
                    "parent_curve": p["curve"],
                    **{arm: {k2: v for k2, v in r.items() if k2 != "state"} for arm, r in arms.items()}}
            pairs.append(pair)
            print(f"{seed:>4} {k:>2} {pg.graph['params']:>8} {cg.graph['params']:>8} {100 * got.fraction:>5.1f} "
                  f"{p['val_acc']:>7.3f} " + " ".join(f"{arms[a]['val_acc']:>6.3f}" for a in "abcd"), flush=True)
            if args.tickets:
                tickets.append(cut_tickets(space, parent, parent_module, data, args, train_seed, p["val_acc"],
                                           f"parent {seed}/{k}"))
        result["pairs"] = pairs
        result["summary"] = summarise_inherit(pairs, args)
        print_inherit(result["summary"], args)
        if args.tickets:
            result["tickets"] = {"models": tickets, "summary": summarise_tickets(tickets, args)}
            print_tickets(result["tickets"]["summary"], args)
    finish(result, start, args.out)
    return 0


def summarise_inherit(pairs: list, args) -> dict:
    acc = {arm: [p[arm]["val_acc"] for p in pairs] for arm in "abcd"}
    out = {"n_pairs": len(pairs), "val_acc": {arm: spread(v) for arm, v in acc.items()},
           "a_minus_c": spread([a - c for a, c in zip(acc["a"], acc["c"])]),
           "a_minus_b": spread([a - b for a, b in zip(acc["a"], acc["b"])]),
           "a_reaches_c": sum(a >= c for a, c in zip(acc["a"], acc["c"])),
           "inherited_fraction": spread([p["inherited_fraction"] for p in pairs]),
           "tau_pooled": {arm: tau(acc[arm], acc["d"]) for arm in "abc"},
           "tau_per_seed": {}}
    for seed in sorted({p["seed"] for p in pairs}):
        mine = [p for p in pairs if p["seed"] == seed]
        out["tau_per_seed"][seed] = {arm: tau([p[arm]["val_acc"] for p in mine], [p["d"]["val_acc"] for p in mine])
                                     for arm in "abc"}
    return out


def print_inherit(s: dict, args) -> None:
    E = args.epochs
    print(f"\ninheritance: {s['n_pairs']} parent/child pairs; val accuracy (mean ± std) and Kendall tau vs (d)")
    labels = {"a": f"(a) inherited, {E} ep", "b": f"(b) scratch, {E} ep", "c": f"(c) scratch, {2 * E} ep",
              "d": f"(d) scratch, {args.long_epochs} ep"}
    for arm in "abcd":
        v = s["val_acc"][arm]
        t = s["tau_pooled"].get(arm)
        print(f"  {labels[arm]:<22} {v['mean']:.4f} ± {v['std']:.4f}   tau {'—' if t is None else f'{t:+.3f}'}")
    print(f"  (a) - (c): {s['a_minus_c']['mean']:+.4f} ± {s['a_minus_c']['std']:.4f}; (a) >= (c) in "
          f"{s['a_reaches_c']}/{s['n_pairs']} pairs; inherited share {s['inherited_fraction']['mean']:.3f}")


def cut_tickets(space, d, module, data, args, seed: int, baseline: float, name: str) -> dict:
    """MENAS's lottery-ticket step on one trained model, plus each candidate's size and
    its accuracy before the fine-tune (the step itself reports the one after)."""
    job = types.SimpleNamespace(seed=seed, train=train_config(args, 1),
                                settings={"ratios": list(args.ratios), "tolerance": args.tolerance,
                                          "finetune_epochs": args.finetune_epochs})
    graph = space.graph(d, data.input_shape)
    chosen, extra = lottery_ticket(space, d, module, data, job, baseline)
    candidates = {t.ratio: t for t in ticket_candidates(space, d, module, data.input_shape, args.ratios)
                  if t.derivation.hash != d.hash}
    rows = []
    for c in extra.get("ticket_candidates", []):
        t = candidates[c["ratio"]]
        cut = build_module(space.graph(t.derivation, data.input_shape), seed=seed)
        cut.load_state_dict(t.state)
        rows.append({"ratio": t.ratio, "params": t.params, "macs": t.macs,
                     "params_removed": 1 - t.params / graph.graph["params"],
                     "macs_removed": 1 - t.macs / graph.graph["macs"],
                     "acc_before_finetune": accuracy(cut, data.val), "acc_after_finetune": c["val_acc"],
                     "delta_after": c["val_acc"] - baseline,
                     "chosen": chosen is not None and chosen["ratio"] == t.ratio})
    row = {"model": name, "params": graph.graph["params"], "macs": graph.graph["macs"], "val_acc": baseline,
           "candidates": rows, "note": extra.get("ticket")}
    if chosen is not None:
        row["chosen"] = {"ratio": chosen["ratio"], "params_removed": 1 - chosen["params"] / graph.graph["params"],
                         "macs_removed": 1 - chosen["macs"] / graph.graph["macs"],
                         "delta": chosen["val_acc"] - baseline}
    return row


def run_tickets(args) -> int:
    """`inherit`'s parents trained --long-epochs under network slimming at each --bn-l1
    value (0: exactly as `inherit` trains them), then MENAS's ticket step on each."""
    start = time.perf_counter()
    result = header("tickets", args)
    result["by_bn_l1"] = []
    with tempfile.TemporaryDirectory() as folder:
        path = space_file(args.bn_momentum, Path(folder))
        for rho in args.bn_l1:
            models = []
            for seed, k, data, space, parent, _, train_seed in pairs_of(args, path):
                graph = space.graph(parent, data.input_shape)
                module = build_module(graph, seed=train_seed)
                p = fit(module, data, args, args.long_epochs, train_seed, graph=graph, bn_l1=rho)
                models.append(cut_tickets(space, parent, module, data, args, train_seed, p["val_acc"],
                                          f"parent {seed}/{k}"))
                print(f"bn_l1 {rho:g} parent {seed}/{k}: val {p['val_acc']:.3f}", flush=True)
            summary = summarise_tickets(models, args)
            summary["val_acc"] = spread([m["val_acc"] for m in models])
            result["by_bn_l1"].append({"bn_l1": rho, "models": models, "summary": summary})
            print(f"\nbn_l1 {rho:g} (warm-up {args.bn_l1_warmup:g} epochs): parents' val acc "
                  f"{summary['val_acc']['mean']:.3f}", flush=True)
            print_tickets(summary, args)
    finish(result, start, args.out)
    return 0


def summarise_tickets(models: list, args) -> dict:
    per_ratio = {}
    for r in args.ratios:
        rows = [c for m in models for c in m["candidates"] if c["ratio"] == r]
        per_ratio[r] = {"n": len(rows), "params_removed": spread([c["params_removed"] for c in rows]),
                        "macs_removed": spread([c["macs_removed"] for c in rows]),
                        "delta_before_finetune": spread([c["acc_before_finetune"] - m["val_acc"]
                                                         for m in models for c in m["candidates"]
                                                         if c["ratio"] == r]),
                        "delta_after_finetune": spread([c["delta_after"] for c in rows]),
                        "within_tolerance": sum(c["delta_after"] >= -args.tolerance for c in rows),
                        "goal_met": sum(c["delta_after"] >= -0.005 and c["params_removed"] >= 0.30 for c in rows)}
    chosen = [m["chosen"] for m in models if "chosen" in m]
    return {"models": len(models), "per_ratio": per_ratio,
            "chosen": {"n": len(chosen), "params_removed": spread([c["params_removed"] for c in chosen]),
                       "macs_removed": spread([c["macs_removed"] for c in chosen]),
                       "delta": spread([c["delta"] for c in chosen]),
                       "ratios": [c["ratio"] for c in chosen],
                       "goal_met": sum(c["delta"] >= -0.005 and c["params_removed"] >= 0.30 for c in chosen)}}


def print_tickets(s: dict, args) -> None:
    print(f"\nlottery tickets of {s['models']} trained models (fine-tune {args.finetune_epochs} epoch shared by the "
          f"candidates); mean ± std; goal: >= 30% params removed at <= 0.5 pt loss")
    print(f"  {'ratio':>5} {'n':>3} {'params -%':>10} {'MACs -%':>9} {'Δacc before':>15} {'Δacc after':>15} "
          f"{'in tol':>6} {'goal':>5}")
    for r, v in s["per_ratio"].items():
        print(f"  {r:>5} {v['n']:>3} {100 * v['params_removed']['mean']:>10.1f} "
              f"{100 * v['macs_removed']['mean']:>9.1f} "
              f"{100 * v['delta_before_finetune']['mean']:>+7.2f} ± {100 * v['delta_before_finetune']['std']:>5.2f} "
              f"{100 * v['delta_after_finetune']['mean']:>+7.2f} ± {100 * v['delta_after_finetune']['std']:>5.2f} "
              f"{v['within_tolerance']:>6} {v['goal_met']:>5}")
    c = s["chosen"]
    if c["n"]:
        print(f"  chosen {c['n']:>3} {100 * c['params_removed']['mean']:>10.1f} "
              f"{100 * c['macs_removed']['mean']:>9.1f} {'':>15} {100 * c['delta']['mean']:>+7.2f} ± "
              f"{100 * c['delta']['std']:>5.2f} {'':>6} {c['goal_met']:>5}"
              f"   ratios {c['ratios']}")


# ---- search ----------------------------------------------------------------------------
class Reusing(concurrent.futures.Executor):
    """Runs trials in this process, and reuses the outcome of a trial already run with
    the same function, derivation, seed and settings and no parent (see the module
    docstring), copying its checkpoint files to the new trial's names."""

    def __init__(self, memory: dict):
        self.memory, self.reused, self.ran = memory, 0, 0

    def submit(self, fn, /, job):
        future = concurrent.futures.Future()
        future.set_result(self.run(fn, job))
        return future

    def run(self, fn, job):
        settings = {k: v for k, v in job.settings.items() if k != "ticket_checkpoint"}
        if "parent" in settings:
            self.ran += 1
            return fn(job)
        key = (fn.__name__, job.space, job.params, job.derivation, job.seed, job.dataset, job.val_fraction,
               job.split_seed, job.limit, job.train, repr(sorted(settings.items())))
        if key not in self.memory:
            self.ran += 1
            outcome = fn(job)
            self.memory[key] = (outcome, job) if outcome.ok else None
            return outcome
        if self.memory[key] is None:  # failed before: run it again, do not pretend
            self.ran += 1
            return fn(job)
        self.reused += 1
        old, old_job = self.memory[key]
        new_checkpoint = Path(job.checkpoint)
        new_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(old_job.checkpoint, new_checkpoint)
        linked = []
        for row in old.linked:  # a MENAS ticket: its own file and links to the trained trial
            name = job.settings["ticket_checkpoint"]
            shutil.copyfile(Path(old_job.checkpoint).with_name(row["checkpoint"]), new_checkpoint.with_name(name))
            extra = {**row["extra"], "ticket_of": job.trial_id, "inherited_from": job.trial_id}
            linked.append({**row, "extra": extra, "checkpoint": name})
        return attrs.evolve(old, trial_id=job.trial_id, linked=tuple(linked))

    def shutdown(self, wait=True, *, cancel_futures=False):
        pass


ARMS = ("random", "evolution", "menas", "menas_rho0")


def one_search(arm: str, seed: int, args, space_path: Path, executor: Reusing, folder: Path) -> dict:
    E = args.epochs
    menas_budget = args.menas_trials * (E + args.finetune_epochs)
    algorithm = "menas" if arm.startswith("menas") else arm
    trials = args.menas_trials if algorithm == "menas" else max(1, round(menas_budget / E))
    settings = {}
    if algorithm == "evolution":
        settings = {"population": args.population, "sample_size": args.sample_size}
    if algorithm == "menas":
        settings = {"population": args.population, "parents": args.parents,
                    "rho": 0.0 if arm == "menas_rho0" else args.rho, "ratios": tuple(args.ratios),
                    "tolerance": args.tolerance, "finetune_epochs": args.finetune_epochs}
    config = SearchConfig(space=str(space_path), dataset="fashion-mnist", algorithm=algorithm, trials=trials,
                          params=space_params(args), train=train_config(args, E), seed=seed,
                          settings=settings, limit=args.limit, val_fraction=args.val_fraction, test_top=1)
    reused_before, ran_before = executor.reused, executor.ran
    start = time.perf_counter()
    search = Search.open(config, folder / f"{arm}-{seed}.db")
    search.run(lambda: executor)
    seconds = time.perf_counter() - start
    done, failed = search.store.trials("done"), search.store.trials("failed")
    models = [t for t in done if not t.extra.get("ticket_of")]
    best = max(done, key=lambda t: (t.val_acc, -t.id))
    alive = living_population(search.store.finished_in_order(), args.population)  # random: the last ones
    children = [t for t in models if t.extra.get("index", 0) >= args.population]
    front = pareto_front(done, "params")
    out = {"arm": arm, "seed": seed, "trials": trials, "done": len(done), "failed": len(failed),
           "failures": [t.reason for t in failed], "epochs_trained": sum(t.epochs for t in done),
           "best_val_acc": best.val_acc, "best_params": best.params, "best_derivation": best.derivation,
           "best_is_ticket": bool(best.extra.get("ticket_of")),
           "front": [[t.params, round(t.val_acc, 4)] for t in front],
           "population_mean_params": statistics.mean(t.params for t in alive),
           "population_mean_val_acc": statistics.mean(t.val_acc for t in alive),
           "children_mean_params": statistics.mean(t.params for t in children) if children else None,
           "children_mean_val_acc": statistics.mean(t.val_acc for t in children) if children else None,
           "mean_params_all": statistics.mean(t.params for t in done), "max_params_all": max(t.params for t in done),
           "seconds": round(seconds, 1), "trials_reused": executor.reused - reused_before,
           "trials_run": executor.ran - ran_before}
    if algorithm == "menas":
        out["tickets"] = sum(1 for t in done if t.extra.get("ticket_of"))
        out["inherited_fraction"] = spread([t.extra.get("inherited_fraction") for t in children])
        out["ticket_params_removed"] = spread([1 - t.params / search.store.trial(t.extra["ticket_of"]).params
                                               for t in done if t.extra.get("ticket_of")])
        out["ticket_delta"] = spread([t.val_acc - search.store.trial(t.extra["ticket_of"]).val_acc
                                      for t in done if t.extra.get("ticket_of")])
    search.store.close()
    return out


def retrain_bests(runs: list, args, space_path: Path) -> None:
    """Each search's best derivation (a ticket is one too) trained from scratch for
    --retrain-epochs at --retrain-seeds seeds and tested: architecture quality apart from
    the inherited training that picked it, at equal epochs for every algorithm."""
    for r in runs:
        data = load_data(args, r["seed"])
        space = bind_to_data(load(space_path, space_params(args)), data, {})
        r["retrained"] = []
        for s in range(args.retrain_seeds):
            module = build_module(space.graph(space.parse(r["best_derivation"]), data.input_shape), seed=1000 + s)
            trained = train(module, data, train_config(args, args.retrain_epochs), seed=1000 + s)
            r["retrained"].append({"seed": 1000 + s, "val_acc": trained.val_acc,
                                   "test_acc": accuracy(module, data.test)})
        print(f"  retrained {r['arm']:<11} seed {r['seed']}: test "
              + ", ".join(f"{x['test_acc']:.4f}" for x in r["retrained"]), flush=True)


def front_area(front: list, lo: float, hi: float) -> float:
    """The accuracy a front guarantees, averaged over log10(params) from lo to hi: the
    area under its step function (0 below the smallest member), normalised."""
    area, a, b = 0.0, math.log10(lo), math.log10(hi)
    steps = sorted(front)
    for i, (params, acc) in enumerate(steps):
        left = max(a, math.log10(params))
        right = min(b, math.log10(steps[i + 1][0])) if i + 1 < len(steps) else b
        if right > left:
            area += acc * (right - left)
    return area / (b - a)


def run_search(args) -> int:
    start = time.perf_counter()
    result = header("search", args)
    result["budget"] = {"epochs_per_search": args.menas_trials * (args.epochs + args.finetune_epochs),
                        "menas_trials": args.menas_trials,
                        "other_trials": max(1, round(args.menas_trials * (args.epochs + args.finetune_epochs)
                                                     / args.epochs))}
    runs = []
    print(f"{'arm':<11} {'seed':>4} {'trials':>6} {'epochs':>6} {'best val':>8} {'its params':>10} "
          f"{'pop params':>10} {'front':>5} {'reused':>6} {'s':>5}")
    with tempfile.TemporaryDirectory() as folder:
        space_path = space_file(args.bn_momentum, Path(folder))
        for seed in range(args.seeds):
            executor = Reusing({})  # per seed: no two seeds share a trial
            for arm in args.arms:
                run = one_search(arm, seed, args, space_path, executor, Path(folder))
                runs.append(run)
                print(f"{arm:<11} {seed:>4} {run['trials']:>6} {run['epochs_trained']:>6} {run['best_val_acc']:>8.4f} "
                      f"{run['best_params']:>10} {run['population_mean_params']:>10.0f} {len(run['front']):>5} "
                      f"{run['trials_reused']:>6} {run['seconds']:>5.0f}", flush=True)
        if args.retrain_epochs:
            retrain_bests(runs, args, space_path)
    result["runs"] = runs
    lo = min(p for r in runs for p, _ in r["front"])  # the cheapest trial of any search
    hi = max(r["max_params_all"] for r in runs)
    for r in runs:
        r["front_area"] = front_area(r["front"], lo, hi)
    result["front_area_range"] = [lo, hi]
    summary = {}
    for arm in args.arms:
        mine = [r for r in runs if r["arm"] == arm]
        summary[arm] = {key: spread([r[key] for r in mine]) for key in
                        ("best_val_acc", "best_params", "population_mean_params", "children_mean_params",
                         "children_mean_val_acc", "epochs_trained", "front_area")}
        summary[arm]["front_params"] = [[p for p, _ in r["front"]] for r in mine]
    by = {(r["arm"], r["seed"]): r for r in runs}
    for a, b in (("menas", "evolution"), ("menas", "random"), ("evolution", "random"), ("menas", "menas_rho0")):
        if a in args.arms and b in args.arms:
            summary[f"{a}_minus_{b}"] = {key: spread([by[a, s][key] - by[b, s][key] for s in range(args.seeds)])
                                         for key in ("best_val_acc", "front_area", "population_mean_params")}
    if args.retrain_epochs:
        for arm in args.arms:
            summary[arm]["retrained_test_acc"] = spread([x["test_acc"] for r in runs if r["arm"] == arm
                                                         for x in r["retrained"]])
        for a, b in (("menas", "evolution"), ("menas", "random"), ("evolution", "random")):
            if a in args.arms and b in args.arms:
                summary[f"{a}_minus_{b}"]["retrained_test_acc"] = spread([
                    statistics.mean(x["test_acc"] for x in by[a, s]["retrained"])
                    - statistics.mean(x["test_acc"] for x in by[b, s]["retrained"]) for s in range(args.seeds)])
        print("\nbest of each search retrained from scratch, "
              f"{args.retrain_epochs} epochs x {args.retrain_seeds} seeds, test accuracy:")
        for arm in args.arms:
            t = summary[arm]["retrained_test_acc"]
            print(f"  {arm:<11} {t['mean']:.4f} ± {t['std']:.4f}")
    result["summary"] = summary
    print_search(summary, args, result["budget"])
    finish(result, start, args.out)
    return 0


def print_search(summary: dict, args, budget: dict) -> None:
    print(f"\nsearch: {args.seeds} seeds, {budget['epochs_per_search']} epochs each (MENAS {budget['menas_trials']} "
          f"trials x ({args.epochs} + {args.finetune_epochs} fine-tune), others {budget['other_trials']} x "
          f"{args.epochs}); mean ± std over seeds")
    print(f"  {'arm':<11} {'best val acc':>16} {'params of best':>16} {'front area':>16} {'end pop. params':>18} "
          f"{'epochs':>7}")
    for arm in args.arms:
        s = summary[arm]
        print(f"  {arm:<11} {s['best_val_acc']['mean']:>8.4f} ± {s['best_val_acc']['std']:.4f} "
              f"{s['best_params']['mean']:>9.0f} ± {s['best_params']['std']:>5.0f} "
              f"{s['front_area']['mean']:>8.4f} ± {s['front_area']['std']:.4f} "
              f"{s['population_mean_params']['mean']:>10.0f} ± {s['population_mean_params']['std']:>6.0f} "
              f"{s['epochs_trained']['mean']:>7.1f}")
    for key, value in summary.items():
        if "_minus_" in key:
            d = value["best_val_acc"]
            print(f"  {key:<22} best val {d['mean']:+.4f} ± {d['std']:.4f} (per seed: min {d['min']:+.4f}, "
                  f"max {d['max']:+.4f})")


# ---- bn ----------------------------------------------------------------------------------
def run_bn(args) -> int:
    start = time.perf_counter()
    result = header("bn", args)
    data = load_data(args)
    rows = []
    print(f"{'momentum':>9} {'sample':>6} {'epochs':>6} {'val acc':>8} {'train acc':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for momentum in ("shipped", args.bn_momentum):
            sub = Path(folder) / momentum
            sub.mkdir()
            space = bind_to_data(load(space_file(momentum, sub), space_params(args)), data, {})
            for i in range(args.samples):
                d = space.sample(rng=random.Random(f"bn:{i}"))
                module = build_module(space.graph(d, data.input_shape), seed=i)
                r = train(module, data, train_config(args, args.epochs), seed=i)
                rows.append({"momentum": "0.01 (shipped)" if momentum == "shipped" else momentum, "sample": i,
                             "epochs": args.epochs, "val_acc": r.val_acc, "train_acc": r.epochs[-1].train_acc})
                print(f"{rows[-1]['momentum']:>9} {i:>6} {args.epochs:>6} {r.val_acc:>8.4f} "
                      f"{r.epochs[-1].train_acc:>9.4f}", flush=True)
    result["rows"] = rows
    finish(result, start, args.out)
    return 0


# ---- command line ------------------------------------------------------------------------
def ratios(text: str) -> list:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("inherit", "tickets", "search", "bn"))
    parser.add_argument("--out", type=Path, help="default: bench/results/menas_COMMAND.json")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (inherit: 2, search: 3)")
    parser.add_argument("--width", type=float, default=0.25, help="mobilenet3_mt.nas `width` parameter")
    parser.add_argument("--max-depth", type=int, default=2, help="mobilenet3_mt.nas `max_depth` parameter")
    parser.add_argument("--bn-momentum", default="0.1", help="batch-norm momentum, or `shipped` (0.01)")
    parser.add_argument("--limit", type=int, default=1000, help="Fashion-MNIST training images")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="0.2: 250 validation images at --limit 1000")
    parser.add_argument("--batch-size", type=int, default=16, help="16: an epoch of 1,000 images is 63 steps")
    parser.add_argument("--epochs", type=int, default=1, help="E: epochs of a trial (search) or a child (inherit)")
    parser.add_argument("--long-epochs", type=int, default=3, help="inherit: parents and the reference (d)")
    parser.add_argument("--k", type=int, default=4, help="inherit: parent/child pairs per seed")
    parser.add_argument("--no-tickets", dest="tickets", action="store_false",
                        help="inherit: skip cutting lottery tickets from the parents")
    parser.add_argument("--ratios", type=ratios, default=[0.1, 0.2, 0.3, 0.5], help="lottery-ticket pruning ratios")
    parser.add_argument("--tolerance", type=float, default=0.005, help="accuracy a ticket may lose")
    parser.add_argument("--finetune-epochs", type=int, default=1, help="a ticket's fine-tune, shared by candidates")
    parser.add_argument("--menas-trials", type=int, default=8, help="search: MENAS trials (others get equal epochs)")
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--sample-size", type=int, default=2, help="evolution's tournament size")
    parser.add_argument("--parents", type=int, default=2, help="MENAS: most accurate members that may be parents")
    parser.add_argument("--rho", type=float, default=0.25, help="MENAS: share of the largest kept among parents")
    parser.add_argument("--arms", type=lambda s: s.split(","), default=list(ARMS), help=",".join(ARMS))
    parser.add_argument("--samples", type=int, default=3, help="bn: networks trained per momentum")
    parser.add_argument("--retrain-epochs", type=int, default=0,
                        help="search: retrain each search's best from scratch this many epochs (0: not)")
    parser.add_argument("--retrain-seeds", type=int, default=2, help="search: seeds of that retraining")
    parser.add_argument("--bn-l1", type=ratios, default=[0.0, 1e-4, 5e-4, 2e-3],
                        help="tickets: network-slimming rho values, comma-separated")
    parser.add_argument("--bn-l1-warmup", type=float, default=1.0, help="tickets: epochs rho ramps up over")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    if not FASHION_MNIST_ROOT.exists():  # no silent fallback to digits: the numbers would not compare
        parser.error(f"Fashion-MNIST is not installed ({FASHION_MNIST_ROOT})")
    if any(a not in ARMS for a in args.arms):
        parser.error(f"--arms takes {','.join(ARMS)}")
    args.seeds = args.seeds or {"inherit": 2, "tickets": 2, "search": 3, "bn": 1}[args.command]
    args.out = args.out or ROOT / "bench" / "results" / f"menas_{args.command}.json"
    torch.set_num_threads(args.threads)
    return {"inherit": run_inherit, "tickets": run_tickets, "search": run_search, "bn": run_bn}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
