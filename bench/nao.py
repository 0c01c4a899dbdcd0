"""NAO-V2's whole loop on nb201 and Fashion-MNIST, several seeds (issue 16): how
independent each iteration's supernet training should be, what the controller
learns, and NAO-V2 against random search at an equal budget of epochs.

Every search is `--algorithm nao` through the Search API (what `nasdsl search`
runs), its first pool the 20 derivations of `--reference` (bench/kendall.py's JSON,
given as `--seed-archs`), so that their shared-weight accuracy after each iteration
can be set against the stand-alone accuracies that run already trained at the same
seed, on the same data split. Per seed, one search per mode:

- `restart`: each iteration's schedule restarted, the weights kept (the code);
- `reinit`: the weights re-initialised too (the paper's wording);
- `continue`: one schedule across every iteration;
- `uniform`: `restart` with the pool drawn uniformly, not in proportion to parameters.

Measured per search: Kendall tau of the reference derivations' shared-weight
accuracy against their stand-alone accuracy after every iteration; the
controller's pairwise accuracy on its held-out 10 % at every iteration (2 to 4
derivations here, so also by 5-fold cross-validation over the final ranking,
beside the parameter count as a predictor on the same folds); the share
of parameter-free and small cells among the 5 best of the final ranking (small: at
most the parameters of the reference's smallest third); the mean shared accuracy of
the derivations the controller generated against the random ones added beside them
(`--random-archs`), on the same weights.

Then, per seed, random search with at least the epochs the default NAO search
spent (supernet epochs plus its retrained trials' epochs), and the best of each
(by validation accuracy) retrained from scratch for `--final-epochs` at
`--final-seeds` seeds, tested on the 10,000 test images.

Every search keeps its SQLite store and every finished piece its JSON under
`--work`, so a run that stops resumes where it was (`nasdsl search --resume`
semantics); pieces of independent processes (`--modes restart` and `--modes
reinit` at once) are assembled by a last run.

    .venv/bin/python bench/nao.py [--seeds 3] [--modes restart,reinit,continue,uniform] [--iterations 3]
        [--epochs 3] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import record  # bench/record.py, beside this script
import torch
from kendall import null_std, spread, tau
from nasdsl.runtime.controller import Controller, ControllerConfig, pairwise_accuracy
from nasdsl.runtime.data import FASHION_MNIST_ROOT, load
from nasdsl.runtime.search import Search, SearchConfig, bind_to_data
from nasdsl.runtime.train import TrainConfig, accuracy, train
from search_quality import Inline

import nasdsl

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "spaces" / "nb201.nas"
MODES = {"restart": {}, "reinit": {"independent": "reinit"}, "continue": {"independent": "continue"},
         "uniform": {"sampling": "uniform"}}
TOP = 5


def show(x, spec: str = ".3f") -> str:
    """A number, a spread's mean, or `-` for none."""
    if isinstance(x, dict):
        x = x["mean"]
    return "-" if x is None else format(x, spec)


def write_json(path: Path, value) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(partial, path)


def cached(path: Path, make):
    """`make()`'s result, computed once and kept at `path`."""
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    write_json(path, value)
    return value


def search_config(args, algorithm: str, seed: int, settings: dict, trials: int, epochs: int) -> SearchConfig:
    return SearchConfig(space=str(SPACE), dataset="fashion-mnist", algorithm=algorithm, trials=trials,
                        params={"C": args.C, "N": args.N}, train=TrainConfig(epochs=epochs, batch_size=args.batch_size),
                        seed=seed, data_seed=args.data_seed, settings=settings, limit=args.limit,
                        val_fraction=args.val_fraction, test_top=1)


def run_search(config: SearchConfig, path: Path) -> Search:
    search = Search.open(config, path, resume=path.exists())
    search.run(Inline)
    return search


def nao_search(args, mode: str, seed: int, reference: dict, seeds_file: Path, work: Path) -> dict:
    settings = {"seed_archs": str(seeds_file), "seed_pool": len(reference["derivations"]),
                "iterations": args.iterations, "new_archs": args.new_archs, "random_archs": args.random_archs,
                "top_seeds": args.top_seeds,
                "controller_epochs": args.controller_epochs, "retrain_epochs": args.retrain_epochs,
                "eval_images": args.eval_images, **MODES[mode]}
    start = time.perf_counter()
    search = run_search(search_config(args, "nao", seed, settings, args.trials, args.epochs),
                        work / f"nao-{mode}-{seed}.db")
    seconds = time.perf_counter() - start
    store, space = search.store, search.space
    hashes = [d["hash"] for d in reference["derivations"]]
    alone = [a["val_acc"] for a in next(r for r in reference["seeds"] if r["seed"] == seed)["alone"]]
    rows = store.evaluations()
    by_epoch: dict = {}
    for e in rows:
        by_epoch.setdefault(e.epoch, {})[e.hash] = e
    iterations = []
    for i, epoch in enumerate(sorted(by_epoch)):
        measured = by_epoch[epoch]
        shared = [measured[h].shared_acc for h in hashes]
        # the pools the controller made so far, by origin, measured on this iteration's weights
        made = store.get_state("nao_controller", [])[:i]
        origin = {space.parse(t).hash: kind for c in made for kind in ("generated", "random") for t in c[kind]}

        def mean_of(kind):
            values = [e.shared_acc for h, e in measured.items() if origin.get(h) == kind]
            return statistics.mean(values) if values else None

        iterations.append({"iteration": i + 1, "epoch": epoch, "tau_reference": tau(shared, alone),
                           "measured": len(measured), "mean_shared_acc_reference": statistics.mean(shared),
                           "mean_shared_acc_generated": mean_of("generated"),
                           "mean_shared_acc_random": mean_of("random")})
    # the final ranking: every derivation seen, on the last iteration's weights
    final = by_epoch[max(by_epoch)]
    limit = sorted(d["params"] for d in reference["derivations"])[max(0, len(hashes) // 3 - 1)]
    best = sorted(final.values(), key=lambda e: -e.shared_acc)[:TOP]
    trials = store.trials("done")
    winner = max(trials, key=lambda t: (t.val_acc, -t.id))
    folds = controller_folds(args, search.space, list(final.values()), seed)
    supernet_epochs = len(store.get_state("supernet_epochs"))
    result = {
        "mode": mode, "seed": seed, "settings": search.algorithm.settings(), "seconds": seconds,
        "iterations": iterations, "controller": store.get_state("nao_controller"), "controller_folds": folds,
        "top_free_share": sum("conv" not in e.derivation for e in best) / len(best),
        "top_small_share": sum(e.params <= limit for e in best) / len(best),
        "top_params_mean": statistics.mean(e.params for e in best),
        "seen_params_mean": statistics.mean(e.params for e in final.values()),
        "seen": len(final), "supernet_epochs": supernet_epochs,
        "retrained": [{"derivation": t.derivation, "val_acc": t.val_acc, "params": t.params,
                       "shared_rank": t.extra.get("shared_rank")} for t in trials],
        "best": {"derivation": winner.derivation, "val_acc": winner.val_acc, "params": winner.params},
        "budget_epochs": supernet_epochs + sum(t.epochs for t in trials),
    }
    store.close()
    return result


def controller_folds(args, space, rows, seed: int, folds: int = 5) -> dict:
    """The controller's pairwise accuracy by `folds`-fold cross-validation over a
    search's final shared-weight accuracies (what NAO-V2 trains it on), against the
    parameter count as a predictor on the same folds: is it better than "bigger is
    better"?"""
    encoding = space.encoding()
    seqs = [encoding.encode(space.parse(e.derivation)) for e in rows]
    accs, params = [e.shared_acc for e in rows], [e.params for e in rows]
    order = list(range(len(rows)))
    random.Random(f"nao-bench:{seed}").shuffle(order)
    scores, baseline = [], []
    for k in range(folds):
        held = order[k::folds]
        kept = [i for i in order if i not in held]
        torch.manual_seed(seed * folds + k)
        controller = Controller(len(encoding.vocabulary), encoding.length,
                                ControllerConfig(epochs=args.controller_epochs))
        controller.fit([seqs[i] for i in kept], [accs[i] for i in kept], seed=seed)
        with torch.no_grad():
            predicted = controller.predict(torch.tensor([seqs[i] for i in held])).tolist()
        scores.append(pairwise_accuracy(predicted, [accs[i] for i in held]))
        baseline.append(pairwise_accuracy([params[i] for i in held], [accs[i] for i in held]))
    def mean(values):  # over the folds holding a pair of different accuracies
        values = [v for v in values if not math.isnan(v)]
        return statistics.mean(values) if values else None

    return {"folds": folds, "derivations": len(rows), "pairwise": mean(scores),
            "pairwise_per_fold": scores, "params_pairwise": mean(baseline)}


def random_search(args, seed: int, budget: int, work: Path) -> dict:
    trials = math.ceil(budget / args.retrain_epochs)
    start = time.perf_counter()
    search = run_search(search_config(args, "random", seed, {}, trials, args.retrain_epochs),
                        work / f"random-{seed}.db")
    done = search.store.trials("done")
    winner = max(done, key=lambda t: (t.val_acc, -t.id))
    result = {"seed": seed, "trials": trials, "budget_epochs": sum(t.epochs for t in done),
              "seconds": time.perf_counter() - start,
              "best": {"derivation": winner.derivation, "val_acc": winner.val_acc, "params": winner.params}}
    search.store.close()
    return result


def retrain(args, space, data, text: str, seed: int) -> dict:
    module = space.compile(space.parse(text), data.input_shape, seed=seed)
    trained = train(module, data, TrainConfig(epochs=args.final_epochs, batch_size=args.batch_size), seed=seed)
    return {"seed": seed, "val_acc": trained.val_acc, "test_acc": accuracy(module, data.test),
            "train_s": trained.train_time}


def summarise(runs: list[dict], randoms: list[dict], finals: dict, n: int) -> dict:
    summary: dict = {"tau_null_std": null_std(n), "modes": {}}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        if not mine:
            continue
        depth = min(len(r["iterations"]) for r in mine)
        pairwise = [c["pairwise_held_out"] for r in mine for c in r["controller"] if c["pairwise_held_out"] is not None]
        summary["modes"][mode] = {
            "seeds": [r["seed"] for r in mine],
            "tau_reference_per_iteration": [spread(r["iterations"][i]["tau_reference"] for r in mine)
                                            for i in range(depth)],
            "pairwise_held_out": spread(pairwise),
            "pairwise_cross_validated": spread(r["controller_folds"]["pairwise"] for r in mine),
            "params_pairwise_cross_validated": spread(r["controller_folds"]["params_pairwise"] for r in mine),
            "top_free_share": spread(r["top_free_share"] for r in mine),
            "top_small_share": spread(r["top_small_share"] for r in mine),
            "generated_per_iteration": spread(len(c["generated"]) for r in mine for c in r["controller"]),
            "generated_minus_random_shared_acc": spread(
                it["mean_shared_acc_generated"] - it["mean_shared_acc_random"] for r in mine for it in r["iterations"]
                if it["mean_shared_acc_generated"] is not None and it["mean_shared_acc_random"] is not None),
            "best_retrained_val_acc": spread(r["best"]["val_acc"] for r in mine),
            "budget_epochs": [r["budget_epochs"] for r in mine],
        }
    if finals:
        nao, rnd = finals["nao"], finals["random"]
        summary["final"] = {
            "nao_test_acc": spread(x["test_acc"] for per in nao for x in per["runs"]),
            "random_test_acc": spread(x["test_acc"] for per in rnd for x in per["runs"]),
            "nao_minus_random_per_search_seed": [
                statistics.mean(x["test_acc"] for x in a["runs"]) - statistics.mean(x["test_acc"] for x in b["runs"])
                for a, b in zip(nao, rnd)],
            "budget_epochs_nao": [r["budget_epochs"] for r in runs if r["mode"] == "restart"],
            "budget_epochs_random": [r["budget_epochs"] for r in randoms],
        }
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/nao.json")
    parser.add_argument("--reference", type=Path, default=ROOT / "bench" / "results" / "kendall.json",
                        help="bench/kendall.py's JSON: the first pool and its stand-alone accuracies")
    parser.add_argument("--work", type=Path, default=None, help="stores and finished pieces (kept for resuming)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of " + ", ".join(MODES))
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="supernet epochs per iteration")
    parser.add_argument("--new-archs", type=int, default=10)
    parser.add_argument("--random-archs", type=int, default=5)
    parser.add_argument("--top-seeds", type=int, default=5)
    parser.add_argument("--controller-epochs", type=int, default=200)
    parser.add_argument("--trials", type=int, default=3, help="the best by shared weights retrained per search")
    parser.add_argument("--retrain-epochs", type=int, default=2, help="also random search's epochs per trial")
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--final-epochs", type=int, default=4)
    parser.add_argument("--final-seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, tiny budgets (no reference taus "
                                                             "worth reading)")
    args = parser.parse_args(argv)
    if not FASHION_MNIST_ROOT.exists():
        parser.error(f"Fashion-MNIST is not installed ({FASHION_MNIST_ROOT}); `make debian-packages`")
    reference = json.loads(args.reference.read_text())
    given = reference["settings"]
    args.C, args.N = given["params"]["C"], given["params"]["N"]
    args.limit, args.val_fraction, args.data_seed = given["limit"], given["val_fraction"], given["data_seed"]
    args.batch_size = given["batch_size"]
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"unknown mode {unknown[0]}; choose of {', '.join(MODES)}")
    if args.quick:
        args.seeds, args.iterations, args.epochs, args.controller_epochs, args.final_epochs = 1, 2, 1, 20, 1
        args.new_archs, args.trials, args.retrain_epochs, args.final_seeds = 4, 1, 1, 1
        args.limit, args.eval_images = 600, 200
    if args.seeds > len(reference["seeds"]):
        parser.error(f"{args.reference} has stand-alone accuracies for {len(reference['seeds'])} seeds")
    name = "nao_quick" if args.quick else "nao"
    out = args.out or ROOT / "bench" / "results" / f"{name}.json"
    work = args.work or Path(tempfile.gettempdir()) / f"nasdsl-bench-{name}"
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    seeds_file = work / "reference.txt"
    seeds_file.write_text("".join(d["text"] + "\n" for d in reference["derivations"]))
    tag = f"i{args.iterations}e{args.epochs}n{args.new_archs}x{args.random_archs}t{args.trials}r{args.retrain_epochs}"

    start = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        for mode in modes:
            r = cached(work / f"nao-{mode}-{seed}-{tag}.json",
                       lambda: nao_search(args, mode, seed, reference, seeds_file, work))
            taus = " ".join(show(it["tau_reference"], "+.2f") for it in r["iterations"])
            pairwise = " ".join(show(c["pairwise_held_out"], ".2f") for c in r["controller"])
            made = "/".join(str(len(c["generated"])) for c in r["controller"])
            folds = r["controller_folds"]
            print(f"nao {mode:<8} seed {seed}: tau per iteration {taus}; controller pairwise {pairwise} "
                  f"(5-fold {show(folds['pairwise'], '.2f')}, params {show(folds['params_pairwise'], '.2f')}); "
                  f"generated {made}; "
                  f"best retrained {r['best']['val_acc']:.3f}; {r['budget_epochs']} epochs, {r['seconds']:.0f} s",
                  flush=True)
            runs.append(r)
    randoms, finals = [], {}
    defaults = [r for r in runs if r["mode"] == "restart"]
    if defaults:
        data = load("fashion-mnist", limit=args.limit, seed=args.data_seed, val_fraction=args.val_fraction)
        space = bind_to_data(nasdsl.load(SPACE, {"C": args.C, "N": args.N}), data, {})
        finals = {"nao": [], "random": []}
        for r in defaults:
            seed = r["seed"]
            rnd = cached(work / f"random-{seed}-{tag}.json", lambda: random_search(args, seed, r["budget_epochs"], work))
            print(f"random seed {seed}: best {rnd['best']['val_acc']:.3f} of {rnd['trials']} trials, "
                  f"{rnd['budget_epochs']} epochs", flush=True)
            randoms.append(rnd)
            for who, best in (("nao", r["best"]), ("random", rnd["best"])):
                per = {"search_seed": seed, "derivation": best["derivation"], "params": best["params"], "runs": [
                    cached(work / f"final-{who}-{seed}-{s}-{tag}-f{args.final_epochs}.json",
                           lambda: retrain(args, space, data, best["derivation"], 100 + s))
                    for s in range(args.final_seeds)]}
                finals[who].append(per)
                print(f"  {who:<6} best retrained {args.final_epochs} epochs: test "
                      + ", ".join(f"{x['test_acc']:.3f}" for x in per["runs"]), flush=True)
    result = {
        "benchmark": "nao", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": record.machine(),
        "settings": {"space": "spaces/nb201.nas", "params": {"C": args.C, "N": args.N}, "dataset": "fashion-mnist",
                     "limit": args.limit, "val_fraction": args.val_fraction, "data_seed": args.data_seed,
                     "reference": str(args.reference.resolve().relative_to(ROOT)
                                      if args.reference.resolve().is_relative_to(ROOT) else args.reference),
                     "reference_alone_epochs": given["alone_epochs"], "seeds": args.seeds, "modes": modes,
                     "iterations": args.iterations, "epochs_per_iteration": args.epochs,
                     "new_archs": args.new_archs, "random_archs": args.random_archs, "top_seeds": args.top_seeds,
                     "controller_epochs": args.controller_epochs, "trials": args.trials,
                     "retrain_epochs": args.retrain_epochs, "eval_images": args.eval_images,
                     "final_epochs": args.final_epochs, "final_seeds": [100 + s for s in range(args.final_seeds)],
                     "threads": args.threads, "quick": args.quick},
        "runs": runs, "random": randoms, "final": finals,
        "summary": summarise(runs, randoms, finals, len(reference["derivations"])),
        "seconds_this_run": time.perf_counter() - start,
    }
    s = result["summary"]
    for mode, m in s["modes"].items():
        taus = ", ".join(show(t, "+.3f") for t in m["tau_reference_per_iteration"])
        print(f"{mode:<8} tau per iteration {taus} (null std {s['tau_null_std']:.3f}); controller pairwise "
              f"{show(m['pairwise_cross_validated'])} (5-fold; params alone "
              f"{show(m['params_pairwise_cross_validated'])}); small in top {TOP} {show(m['top_small_share'], '.2f')}")
    if "final" in s:
        f = s["final"]
        print(f"best retrained: NAO test {show(f['nao_test_acc'], '.4f')}, random {show(f['random_test_acc'], '.4f')}")
    record.write(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
