"""Regularized evolution against random search at an equal training budget, over
spaces/tutorial.nas on Fashion-MNIST, for several search seeds.

Each (algorithm, seed) is one full search through the Search API (the same code
`nasdsl search` runs): the same number of trials, each trained for the same
number of epochs with no early stopping, so both spend the same budget of trained
epochs. Per search: the best validation accuracy found, and the test accuracy
(full 10,000-image test set) of that best trial; across seeds: mean, std, min and
max of both, and the per-seed difference evolution - random.

Two facts make the comparison paired: a search's seed also seeds its train/val
split, and the first `--population` proposals of evolution are the uniform samples
random search draws at the same indices (`trial_rng(seed, index)`), trained with
the same seeds. So at one seed both algorithms start from the same trials and
differ only in what comes after: mutations of tournament winners, or more uniform
samples. The mean accuracy of those later trials is recorded too.

Trials run on a local pool of warm worker processes (`--executor local`, one
thread each, kept across all the searches) or in this process (`--executor
inline`, deterministic: with two workers, evolution's population depends on the
order in which trials finish).

    .venv/bin/python bench/search_quality.py [--seeds 3] [--trials 16] [--epochs 1] [--limit 2000] [--executor local]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import record  # bench/record.py, beside this script
import torch
from nasdsl.runtime.data import FASHION_MNIST_ROOT
from nasdsl.runtime.executors import local_pool
from nasdsl.runtime.search import Search, SearchConfig
from nasdsl.runtime.train import TrainConfig, accuracy

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "spaces" / "tutorial.nas"
ALGORITHMS = ("random", "evolution")


class Inline(concurrent.futures.Executor):
    """Runs each trial in this process when it is submitted."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


class SharedPool:
    """One local pool for every search: a worker imports torch and loads the data once,
    not once per search. `Search.run` shuts down what it is given, so it gets a
    borrowed handle; a broken pool is replaced."""

    def __init__(self, workers: int):
        self.workers, self.pool = workers, None

    def __call__(self):
        if self.pool is None or getattr(self.pool, "_broken", False):
            self.pool = local_pool(self.workers)
        return Borrowed(self.pool)

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


class Borrowed(concurrent.futures.Executor):
    def __init__(self, pool):
        self.pool = pool

    def submit(self, fn, /, *args, **kwargs):
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait=True, *, cancel_futures=False):
        pass


def one_search(algorithm: str, seed: int, args, make_executor, folder: Path) -> dict:
    config = SearchConfig(space=str(SPACE), dataset="fashion-mnist", algorithm=algorithm, trials=args.trials,
                          train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size), seed=seed,
                          data_seed=seed,  # as recorded: each seed also draws its own split
                          settings={"population": args.population, "sample_size": args.sample_size}
                          if algorithm == "evolution" else {}, limit=args.limit,
                          val_fraction=args.val_fraction, test_top=1,
                          workers=args.workers if args.executor == "local" else 1)
    start = time.perf_counter()
    search = Search.open(config, folder / f"{algorithm}-{seed}.db")
    search.run(make_executor)
    search_s = time.perf_counter() - start
    done = search.store.trials("done")
    failed = search.store.trials("failed")
    best = max(done, key=lambda t: (t.val_acc, -t.id))  # the first trial to reach the best accuracy
    # only the best is tested: test_best() would also test the whole Pareto front
    test_acc = accuracy(search.load_module(best), search.data.test)
    search.store.set_test_acc(best.id, test_acc)
    in_order = search.store.finished_in_order()
    curve, running = [], 0.0
    for t in in_order:
        running = max(running, t.val_acc if t.val_acc is not None else 0.0)
        curve.append(running)
    later = [t.val_acc for t in done if t.extra.get("index", 0) >= args.population]
    result = {
        "algorithm": algorithm, "seed": seed, "done": len(done), "failed": len(failed),
        "failures": [t.reason for t in failed],
        "best_val_acc": best.val_acc, "best_test_acc": test_acc, "best_trial": best.id,
        "best_derivation": best.derivation, "best_params": best.params, "best_macs": best.macs,
        "data_note": search.data.note,
        "mean_val_acc_after_population": statistics.mean(later) if later else None,
        "best_so_far": curve, "search_s": search_s, "test_s": time.perf_counter() - start - search_s,
        "train_s_total": sum(t.train_time for t in done), "epochs_trained": sum(t.epochs for t in done),
    }
    search.store.close()
    return result


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "search_quality.json")
    parser.add_argument("--seeds", type=int, default=3, help="search seeds 0..N-1")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    parser.add_argument("--limit", type=int, default=2000, help="Fashion-MNIST training images per trial")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="32, not the trainer's 64: one epoch of 2,000 images is then 63 steps, enough to learn")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share held out for validation (0.2: 500 images at --limit 2000, a less noisy choice)")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--sample-size", type=int, default=3)
    parser.add_argument("--executor", choices=("local", "inline"), default="local")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="local pool size")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process (inline trials, test evaluation)")
    args = parser.parse_args(argv)
    if not FASHION_MNIST_ROOT.exists():  # no silent fallback to digits: the numbers would not compare
        parser.error(f"Fashion-MNIST is not installed ({FASHION_MNIST_ROOT}); `make debian-packages`")
    torch.set_num_threads(args.threads)

    result = {
        "benchmark": "search_quality", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**record.machine(),
                    "loadavg_before": list(os.getloadavg())},
        "settings": {"space": "spaces/tutorial.nas", "dataset": "fashion-mnist", "seeds": args.seeds,
                     "trials": args.trials, "epochs": args.epochs, "limit": args.limit,
                     "batch_size": args.batch_size, "val_fraction": args.val_fraction, "population": args.population,
                     "sample_size": args.sample_size, "executor": args.executor,
                     "workers": args.workers if args.executor == "local" else 1,
                     "threads_per_trial": (max(1, (os.cpu_count() or 1) // args.workers)
                                           if args.executor == "local" else args.threads),
                     "budget_epochs_per_search": args.trials * args.epochs},
        "runs": [],
    }
    shared = SharedPool(args.workers) if args.executor == "local" else None
    make_executor = shared if shared else Inline
    start = time.perf_counter()
    print(f"{'algorithm':<10} {'seed':>4} {'best val':>9} {'its test':>9} {'later mean':>10} {'done':>5} {'s':>6}")
    try:
        with tempfile.TemporaryDirectory() as folder:
            for seed in range(args.seeds):  # seed-major: the workers' data cache holds one split at a time
                for algorithm in ALGORITHMS:
                    run = one_search(algorithm, seed, args, make_executor, Path(folder))
                    result["runs"].append(run)
                    later = run["mean_val_acc_after_population"]
                    print(f"{algorithm:<10} {seed:>4} {run['best_val_acc']:>9.4f} {run['best_test_acc']:>9.4f} "
                          f"{later if later is not None else float('nan'):>10.4f} {run['done']:>5} "
                          f"{run['search_s'] + run['test_s']:>6.0f}", flush=True)
    finally:
        if shared:
            shared.close()
    result["total_s"] = time.perf_counter() - start
    summary = {}
    for algorithm in ALGORITHMS:
        runs = [r for r in result["runs"] if r["algorithm"] == algorithm]
        later = [r["mean_val_acc_after_population"] for r in runs if r["mean_val_acc_after_population"] is not None]
        summary[algorithm] = {"best_val_acc": spread([r["best_val_acc"] for r in runs]),
                              "best_test_acc": spread([r["best_test_acc"] for r in runs]),
                              "mean_val_acc_after_population": spread(later) if later else None}
    by_seed = {(r["algorithm"], r["seed"]): r for r in result["runs"]}
    summary["evolution_minus_random"] = {
        key: spread([by_seed["evolution", s][key] - by_seed["random", s][key] for s in range(args.seeds)])
        for key in ("best_val_acc", "best_test_acc")}
    result["summary"] = summary
    result["machine"]["loadavg_after"] = list(os.getloadavg())

    print(f"\n{args.seeds} seeds, {args.trials} trials x {args.epochs} epoch(s), {args.limit} images; "
          f"{result['total_s']:.0f} s in all")
    print(f"{'':<22} {'mean':>7} {'std':>7} {'min':>7} {'max':>7}")
    for algorithm, label in (("random", "random"), ("evolution", "evolution"), ("evolution_minus_random", "evo - rnd")):
        for key in ("best_val_acc", "best_test_acc"):
            s = summary[algorithm][key]
            print(f"{label:<9} {key:<12} {s['mean']:>7.4f} {s['std']:>7.4f} {s['min']:>7.4f} {s['max']:>7.4f}")
    record.write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
