"""LISSNAS against operational pruning and the full space (issue 19), Fashion-MNIST.

For each seed, in one run:
1. `nasdsl shrink` (LISSNAS) on NAS-Bench-201 gives a shrunk space S.
2. Operational pruning gets the same measurements: round 0's sample, the first round
   LISSNAS trains. It drops, one at a time, the (site, operation) with the lowest mean
   accuracy, until its product space is no larger than S. That gives P.
3. Random search trains `--evals` networks in S, in P and in the full space. The
   full space also gets LISSNAS's own trials added to its budget, for an equal total.
4. SPOS (`--arms spos`) runs in S, in P and in the full space with equal budgets:
   `--supernet-epochs` of supernet training, the same evolution on shared weights,
   and its best `--spos-trials` retrained at the trials' own epochs and images, so
   their accuracies compare with random search's.

It reports each space's size, its diversity (mean pairwise distance, distinct values
per choice path), and the best and mean validation accuracy of its random search,
with the best network's test accuracy. Locality is the Spearman correlation between
distance and |accuracy difference| over all pairs of networks measured in the run.

    .venv/bin/python bench/lissnas.py --seeds 0,1,2 --out bench/results/lissnas.json

`--no-distinct-sample` shrinks as stores written before that setting did, which
reproduces an earlier run's shrunk spaces (and so its random-search arm) exactly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NASDSL = [sys.executable, "-m", "nasdsl"]

from nasdsl.runtime.algorithms.lissnas import diversity  # noqa: E402
from nasdsl.runtime.store import Store  # noqa: E402

import nasdsl  # noqa: E402
from nasdsl.space.derivation import distance, split_path  # noqa: E402


def run(argv, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([*NASDSL, *map(str, argv), "--json"], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured(store) -> list:
    with Store.open(store) as s:
        return [(t.derivation, t.val_acc, t.extra.get("round")) for t in s.trials() if t.status == "done"]


def operational_pruning(space, sample, target: int):
    """(the restricted space's text, its size): the worst (site, value) by mean accuracy
    over `sample` is dropped, one at a time, until the product space has <= target members."""
    kept = {p: set(space.root.domain(split_path(p), p)) for p in sample[0][0].choices()}
    while True:
        size = 1
        for values in kept.values():
            size *= len(values)
        if size <= target:
            break
        means = {}
        for path, values in kept.items():
            if len(values) > 1:
                for v in values:
                    accs = [a for d, a in sample if d.choices()[path] == v]
                    means[(path, v)] = statistics.fmean(accs) if accs else float("-inf")
        path, v = min(means, key=means.get)
        kept[path].discard(v)
    restricted = space.restrict(kept)
    return restricted.text, restricted.space.count


def spearman(xs, ys) -> float:
    def ranks(v):
        order = sorted(range(len(v)), key=v.__getitem__)
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def space_row(name, space, members, search: dict, seed: int) -> dict:
    spread, values = diversity(members, random.Random(seed))
    done = search["best"]
    return {"space": name, "size": space.count if name.startswith("full") else len(members),
            "mean_distance": spread, "values_per_path": values,
            "best_val_acc": max(t["val_acc"] for t in done), "test_acc_of_best": done[0]["test_acc"]}


def store_name(name: str, seed: int) -> str:
    return f"{name.replace(', ', '-').replace(' ', '-')}-{seed}.db"


def one_seed(seed: int, args, folder: Path) -> dict:
    common = ["--dataset", "fashion-mnist", "--epochs", args.epochs, "--limit", args.limit, "--seed", seed,
              "--workers", args.workers, "--test-top", 1, "--param", f"C={args.C}", "--param", "N=1"]
    small = folder / f"lissnas-{seed}.nas"
    start = time.perf_counter()
    shrink = run(["shrink", ROOT / "spaces/nb201.nas", *common, "--samples", args.samples, "--seeds", args.k,
                  "--rounds", args.rounds, "--trials", args.samples * args.rounds,
                  *(["--no-distinct-sample"] if args.no_distinct_sample else []),
                  "--store", folder / f"shrink-{seed}.db", "-o", small], args.threads)
    shrink_seconds = time.perf_counter() - start
    space = nasdsl.load(ROOT / "spaces/nb201.nas", params={"C": args.C, "N": 1, "num_classes": 10})
    lissnas_trials = measured(folder / f"shrink-{seed}.db")
    round0 = [(space.parse(t), a) for t, a, r in lissnas_trials if r == 0]
    shrunk = nasdsl.load(small)
    text, pruned_size = operational_pruning(space, round0, shrunk.count)
    pruned = folder / f"pruned-{seed}.nas"
    pruned.write_text(text)
    rows = []
    spaces = {"lissnas": small, "operational": pruned, "full": ROOT / "spaces/nb201.nas"}
    if "random" in args.arms:
        for name, path, evals in (*((n, p, args.evals) for n, p in spaces.items()),
                                  ("full, equal budget", spaces["full"], args.evals + len(lissnas_trials))):
            store = folder / store_name(name, seed)
            search = run(["search", path, *common, "--algorithm", "random", "--trials", evals,
                          "--store", store], args.threads)
            members = list(nasdsl.load(path).enumerate()) if name in ("lissnas", "operational") else \
                [space.parse(t) for t, _, _ in measured(store)]
            rows.append(space_row(name, space, members, search, seed))
    if "spos" in args.arms:
        for name, path in spaces.items():
            store = folder / store_name(f"{name}, spos", seed)
            search = run(["search", path, *common, "--algorithm", "spos", "--epochs", args.supernet_epochs,
                          "--retrain-epochs", args.epochs, "--trials", args.spos_trials, "--store", store],
                         args.threads)
            members = list(nasdsl.load(path).enumerate()) if name != "full" else \
                [space.parse(t) for t, _, _ in measured(store)]
            retrained = [a for _, a, _ in measured(store)]
            rows.append(space_row(f"{name}, spos", space, members, search, seed)
                        | {"retrained": len(retrained), "retrained_mean_val_acc": statistics.fmean(retrained)})
    # locality: every pair of networks measured in this seed's run
    seen: dict = {}
    for store in folder.glob(f"*-{seed}.db"):
        for t, a, _ in measured(store):
            seen[t] = a
    pairs = list(itertools.combinations([(space.parse(t), a) for t, a in seen.items()], 2))
    rng = random.Random(seed)
    pairs = rng.sample(pairs, min(len(pairs), 20000))
    locality = spearman([distance(x, y) for (x, _), (y, _) in pairs], [abs(a - b) for (_, a), (_, b) in pairs])
    by_distance = {}
    for (x, a), (y, b) in pairs:
        by_distance.setdefault(distance(x, y), []).append(abs(a - b))
    return {"seed": seed, "shrink_seconds": round(shrink_seconds, 1), "lissnas_trials": len(lissnas_trials),
            "rounds": shrink["rounds"], "chosen_round": shrink["chosen"], "pruned_size": pruned_size,
            "spaces": rows, "locality_spearman": locality,
            "mean_abs_difference_by_distance": {k: statistics.fmean(v) for k, v in sorted(by_distance.items())}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/lissnas.json")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--C", type=int, default=4, help="NAS-Bench-201 channels")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=1000, help="training images per trial")
    parser.add_argument("--samples", type=int, default=12, help="LISSNAS samples per round")
    parser.add_argument("--k", type=int, default=3, help="LISSNAS seeds per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--evals", type=int, default=12, help="random-search evaluations in each space")
    parser.add_argument("--arms", default="random,spos", help="searches run in each space: random, spos or both")
    parser.add_argument("--supernet-epochs", type=int, default=16, help="SPOS supernet epochs in each space")
    parser.add_argument("--spos-trials", type=int, default=2, help="SPOS's best, retrained stand-alone")
    parser.add_argument("--no-distinct-sample", action="store_true",
                        help="shrink with one derivation per text in round 0 (as before that setting)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one seed, tiny budgets")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.limit, args.samples, args.k, args.rounds, args.evals = "0", 200, 4, 2, 2, 2
        args.supernet_epochs, args.spos_trials = 1, 1
    args.arms = args.arms.split(",")
    if not args.arms or set(args.arms) - {"random", "spos"}:
        parser.error(f"--arms takes random, spos or random,spos, not {','.join(args.arms)}")
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        parser.error("Fashion-MNIST is not installed (/usr/share/datasets/fashion-mnist); `make debian-packages`")
    with tempfile.TemporaryDirectory() as tmp:
        seeds = [one_seed(int(s), args, Path(tmp)) for s in args.seeds.split(",")]
    summary = {}
    for name in dict.fromkeys(r["space"] for s in seeds for r in s["spaces"]):
        rows = [next(r for r in s["spaces"] if r["space"] == name) for s in seeds]
        summary[name] = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k != "space"}
    result = {"machine": platform.processor() or platform.machine(), "command": " ".join(
        ["bench/lissnas.py", *(argv if argv is not None else sys.argv[1:])]), "settings": vars(args) | {"out": None},
        "seeds": seeds, "mean_over_seeds": summary,
        "locality_spearman_mean": statistics.fmean(s["locality_spearman"] for s in seeds)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
