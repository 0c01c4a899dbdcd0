"""SuperTickets on Fashion-MNIST: the joint search-and-prune against the sequential
pipeline, its pruning schedule and reactivation ablated, and only-train-once's HESSO on
the same super-network, every arm on the same images in one run, several seeds.

The super-network is spaces/superresnet.nas (C=8, preset `supernet`: every unit holds
its four branches summed, 453,122 parameters, 19.0 M MACs at 1x28x28). Arms, each seed:

    joint        nasdsl search --algorithm supertickets: --epochs E of slimming (--bn-l1),
                 shrinking (--shrink-threshold) and progressive magnitude pruning to
                 --sparsity; the ticket is tested as it is, without retraining
    oneshot      joint, all of --sparsity pruned at the step where progressive gets there
    reset        joint, every weight back after each pruning step but the last (the
                 released code's reset_mask)
    regrow       joint, each pruning step a RigL swap (--regrow of the pruned)
    sequential   search, train, prune, retrain, in E epochs too: SPOS's supernet for
                 E/3 epochs, evolution on its shared weights, the best derivation trained
                 alone for E/3 under the same --bn-l1, then cut once to the joint
                 ticket's MACs (the joint run's shrink step at the smallest |gamma|
                 threshold that gets there: channels and branches), global magnitude
                 pruning to its sparsity, retrained the remaining epochs with the mask
                 (a derivation alone cannot reach the ticket's MACs: the widths are not
                 choices of the space, and its smallest derivations hold ~4 M MACs)
    hesso        (--hesso-python) HESSO on the whole super-network for E epochs at each
                 --hesso-sparsity, its compressed network tested (bench/peers/
                 hesso.py, in the peer venv of ../shared/peers/README.md)

Every arm reports test accuracy on the 10,000 test images, parameters (and nonzero
ones), MACs of one image (FlopCounterMode / 2), which branches survived, and its wall
time. The joint run also retrains its ticket's derivation alone, from scratch, for E
epochs (`--trials 1`): the architecture's quality apart from the ticket.

    .venv/bin/python bench/supertickets.py [--seeds 3] [--epochs 12] [--limit 4000] \\
        [--hesso-python /tmp/oto-venv/bin/python]          # -> bench/results/supertickets.json
    .venv/bin/python bench/supertickets.py --seed-list 0 --out A.json & ...   # seeds in parallel, then
    .venv/bin/python bench/supertickets.py --merge A.json B.json C.json
    .venv/bin/python bench/supertickets.py --quick         # 1 seed, 3 epochs, 300 images
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import record  # bench/record.py, beside this script
import torch
from nasdsl.runtime.data import FASHION_MNIST_ROOT, load
from nasdsl.runtime.search import stored_space, trained_module
from nasdsl.runtime.shrink import Shrunk, build, carry, positions, shrink
from nasdsl.runtime.sparsity import Masks
from nasdsl.runtime.store import Store
from nasdsl.runtime.train import TrainConfig, accuracy, macs_of, train

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "spaces" / "superresnet.nas"
JOINT = {"joint": [], "oneshot": ["--prune-schedule", "oneshot"], "reset": ["--reactivate", "reset"],
         "regrow": ["--reactivate", "regrow"]}


def search(argv: list, store: Path, threads: int) -> float:
    """One `nasdsl search` in its own process; its wall time."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nasdsl", "search", str(SPACE), "--store", str(store), "--json",
                           *argv], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        raise RuntimeError(f"nasdsl search failed ({' '.join(argv)}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - began


def common(args, seed: int) -> list:
    return ["--dataset", "fashion-mnist", "--limit", str(args.limit), "--param", f"C={args.C}", "--seed", str(seed),
            "--batch-size", str(args.batch_size), "--test-top", "1"]


def joint(arm: str, seed: int, args, folder: Path) -> dict:
    store = folder / f"{arm}-{seed}.db"
    retrain = args.epochs if arm == "joint" else 1  # the ablations' retraining is not read
    seconds = search([*common(args, seed), "--algorithm", "supertickets", "--epochs", str(args.epochs),
                      "--trials", "1", "--retrain-epochs", str(retrain), "--bn-l1", str(args.bn_l1),
                      "--bn-l1-warmup", str(args.bn_l1_warmup), "--sparsity", str(args.sparsity),
                      "--prune-every", str(args.prune_every), "--prune-step", str(args.prune_step),
                      "--shrink-threshold", str(args.shrink_threshold), *JOINT[arm]], store, args.threads)
    with Store.open(store) as s:
        ticket, rows, trial = s.get_state("superticket"), s.get_state("supertickets"), s.trials()[0]
    result = {"arm": arm, "seed": seed, "test_acc": ticket["test_acc"], "val_acc": ticket["val_acc"],
              "params": ticket["params"], "nonzero_params": ticket["nonzero_params"], "macs": ticket["macs"],
              "sparsity": ticket["sparsity"], "derivation": ticket["derivation"],
              "branches": _branches(ticket["derivation"]), "epochs": args.epochs,
              "macs_by_epoch": [r["macs"] for r in rows], "sparsity_by_epoch": [r["sparsity"] for r in rows],
              "erased_by_epoch": [len(r["erased"]) for r in rows], "training_seconds": sum(r["seconds"] for r in rows),
              "seconds": seconds}
    if arm == "joint":  # the architecture alone: its derivation from scratch, dense, E epochs
        result["alone"] = {"test_acc": trial.test_acc, "val_acc": trial.val_acc, "params": trial.params,
                           "macs": trial.macs, "epochs": trial.epochs}
    return result


def sequential(seed: int, args, folder: Path, macs: int, sparsity: float, data) -> dict:
    third = max(1, args.epochs // 3)
    store = folder / f"sequential-{seed}.db"
    seconds = search([*common(args, seed), "--algorithm", "spos", "--epochs", str(third), "--trials", "1",
                      "--retrain-epochs", str(third), "--bn-l1", str(args.bn_l1), "--bn-l1-warmup",
                      str(args.bn_l1_warmup), "--population", str(args.population), "--generations",
                      str(args.generations)], store, args.threads)
    with Store.open(store) as s:
        trial = s.trials()[0]
        space, shape = stored_space(s)
        module = trained_module(s, trial, space, shape)
    began = time.perf_counter()
    torch.set_num_threads(args.threads)
    shrunk, module, threshold = shrink_to(space, space.parse(trial.derivation), module, shape, macs)
    masks = Masks.dense(module).pruned(module, sparsity)
    masks.apply(module)
    retrain = args.epochs - 2 * third
    train(module, data, TrainConfig(epochs=retrain, batch_size=args.batch_size), seed=seed,
          on_step=lambda: masks.apply(module))
    params = sum(p.numel() for p in module.parameters())
    return {"arm": "sequential", "seed": seed, "test_acc": accuracy(module, data.test), "params": params,
            "nonzero_params": params - sum(int((~m).sum()) for m in masks.masks.values()),
            "macs": macs_of(module, space.graph(shrunk.derivation, shape)), "sparsity": masks.sparsity(),
            "derivation": shrunk.derivation.text, "branches": _branches(shrunk.derivation.text),
            "searched_derivation": trial.derivation, "searched_macs": trial.macs, "shrink_threshold": threshold,
            "epochs": {"supernet": third, "alone": third, "retrain": retrain}, "unpruned_test_acc": trial.test_acc,
            "seconds": seconds + time.perf_counter() - began}


def shrink_to(space, d, module, shape, macs: int, probes: int = 16) -> tuple:
    """The trained `module` of `d` cut once, after training, to at most `macs` MACs: the
    shrink step of the joint run (dead channels and branches by |gamma|) at the
    smallest threshold that gets there, found by bisection; (shrunk, module, threshold)."""
    graph = space.graph(d, shape)
    start, at = Shrunk(d), positions(graph, {})
    scales = [m.weight.detach().abs().max().item() for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    low, high, best = 0.0, max(scales), None

    def cut(threshold):
        step = shrink(space, start, graph, module, threshold, at)
        masked = copy.deepcopy(module)
        with torch.no_grad():
            for node, full in step.masked.items():
                bn = masked.get_submodule(node)
                bn.weight[full] = 0
                bn.bias[full] = 0
        small_graph, small = build(space, step.shrunk, shape, seed=None)
        small.load_state_dict(carry(masked.state_dict(), at, positions(small_graph, step.shrunk.keep),
                                    small.state_dict()))
        return step.shrunk, small

    for _ in range(probes):
        middle = (low + high) / 2
        shrunk, small = cut(middle)
        if macs_of(small, graph) <= macs:
            high, best = middle, (shrunk, small, middle)
        else:
            low = middle
    return best if best is not None else (*cut(high), high)


def hesso(seed: int, target: float, args, folder: Path, data_file: Path) -> dict:
    out = folder / f"hesso-{target}-{seed}.json"
    began = time.perf_counter()
    done = subprocess.run([args.hesso_python, str(ROOT / "bench" / "peers" / "hesso.py"), "--data",
                           str(data_file), "--out", str(out), "--C", str(args.C), "--epochs", str(args.epochs),
                           "--batch-size", str(args.batch_size), "--target-group-sparsity", str(target),
                           "--seed", str(seed), "--threads", str(args.threads)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"HESSO failed:\n{done.stderr[-3000:]}")
    peer = json.loads(out.read_text())
    return {"arm": f"hesso@{target}", "seed": seed, "peer": peer, "seconds": time.perf_counter() - began}


def _branches(text: str) -> int:
    """Branches kept over all units (a skipped slot keeps none)."""
    return sum(len(kept.split(",")) for kept in re.findall(r"pick=\[([^\]]*)\]", text))


def summarise(runs: list) -> dict:
    summary = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        rows = [r for r in runs if r["arm"] == arm]
        pick = (lambda r, k: r["peer"]["compressed"][k]) if arm.startswith("hesso") else (lambda r, k: r[k])
        entry = {}
        for key in ("test_acc", "params", "macs"):
            try:
                values = [pick(r, key if not arm.startswith("hesso") else {"test_acc": "val_acc"}.get(key, key))
                          for r in rows]
            except KeyError:
                continue
            entry[f"{key}_mean"] = statistics.mean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        if not arm.startswith("hesso"):
            entry["nonzero_params_mean"] = statistics.mean(r["nonzero_params"] for r in rows)
            entry["sparsity_mean"] = statistics.mean(r["sparsity"] for r in rows)
            entry["branches_mean"] = statistics.mean(r["branches"] for r in rows)
        entry["seconds_mean"] = statistics.mean(r["seconds"] for r in rows)
        summary[arm] = entry
    alone = [r["alone"]["test_acc"] for r in runs if r.get("alone")]
    if alone:
        summary["joint_alone"] = {"test_acc_mean": statistics.mean(alone),
                                  "test_acc_std": statistics.stdev(alone) if len(alone) > 1 else None}
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/supertickets.json")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed-list", default=None, help="these seeds instead of 0..--seeds-1 (e.g. 2, to run seeds "
                                                          "in parallel processes; --merge joins their files)")
    parser.add_argument("--merge", nargs="+", type=Path, default=None, help="join these result files into --out")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--limit", type=int, default=4000)
    parser.add_argument("--C", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bn-l1", type=float, default=1e-2)
    parser.add_argument("--bn-l1-warmup", type=float, default=1.0)
    parser.add_argument("--shrink-threshold", type=float, default=0.05)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--prune-every", type=int, default=1)
    parser.add_argument("--prune-step", type=float, default=0.1)
    parser.add_argument("--population", type=int, default=12, help="sequential: SPOS's evolution")
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--arms", default="joint,oneshot,reset,regrow,sequential",
                        help="which of joint,oneshot,reset,regrow,sequential (sequential needs joint)")
    parser.add_argument("--hesso-python", default=None, help="the peer venv's python (HESSO runs only with it)")
    parser.add_argument("--hesso-sparsity", default="0.4", help="HESSO's target group sparsities")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs, 300 images, small evolution")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.limit, args.population, args.generations = 1, 3, 300, 4, 1
    args.out = args.out or ROOT / "bench" / "results" / f"supertickets{'_quick' if args.quick else ''}.json"
    if not FASHION_MNIST_ROOT.exists():
        parser.error(f"Fashion-MNIST is not installed ({FASHION_MNIST_ROOT}); `make debian-packages`")
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        result = {**parts[0], "merged": [str(p) for p in args.merge],
                  "runs": sorted((r for p in parts for r in p["runs"]), key=lambda r: r["seed"])}
        result["summary"] = summarise(result["runs"])
        record.write(args.out, result)
        return 0
    arms = args.arms.split(",")
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    data = load("fashion-mnist", limit=args.limit, seed=0)  # what every search reads (--data-seed 0)
    result = {"benchmark": "supertickets", "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": {**record.machine(), "loadavg_before": list(os.getloadavg())},
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data_file = folder / "data.pt"  # HESSO's: the training images, and the test images as its validation
        torch.save({"train_x": data.train.x, "train_y": data.train.y, "val_x": data.test.x, "val_y": data.test.y},
                   data_file)
        for seed in seeds:
            def measured(arm: str, run) -> None:  # written after every arm: a long run stopped early keeps its arms
                try:
                    r = run()
                except RuntimeError as err:  # one arm failing leaves the others measured
                    result.setdefault("failed", []).append({"arm": arm, "seed": seed, "error": str(err)})
                    print(f"seed {seed} {arm} failed: {err}", flush=True)
                    return
                result["runs"].append(r)
                result["summary"] = summarise(result["runs"])
                record.write(args.out, result)
                c = r["peer"]["compressed"] if "peer" in r else r
                print(f"seed {seed} {r['arm']:<10} test {c.get('test_acc', c.get('val_acc')):.4f}  {c['macs']:,} MACs  "
                      f"{c['params']:,} params  {r['seconds']:.0f} s", flush=True)

            for arm in [a for a in JOINT if a in arms]:
                measured(arm, lambda: joint(arm, seed, args, folder))
            base = next((r for r in result["runs"] if r["arm"] == "joint" and r["seed"] == seed), None)
            if "sequential" in arms and base is not None:
                measured("sequential", lambda: sequential(seed, args, folder, base["macs"], base["sparsity"], data))
            for target in ([float(t) for t in args.hesso_sparsity.split(",")] if args.hesso_python else []):
                measured(f"hesso@{target}", lambda: hesso(seed, target, args, folder, data_file))
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    record.write(args.out, result)
    for arm, s in result["summary"].items():
        print(f"{arm:<14} " + "  ".join(f"{k} {v:.4g}" for k, v in s.items() if v is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
