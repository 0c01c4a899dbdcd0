"""OTOv3 on Fashion-MNIST (issue 18): H2SPG against its unchecked top-K ablation, the
sub-network against the supernet trained alike, and only-train-once's HESSO side by
side on the same images, several seeds, equal epochs.

Networks and arms, each seed (every arm `nasdsl sparsify ... --json`, one thread):

    superresnet   spaces/superresnet.nas C=8, preset `supernet` (every unit's four
                  branches summed: 453 k params, 19.0 M MACs at 1x28x28)
                    h2spg   --target-sparsity 0.5, hierarchical selection
                    topk    the same, --selection topk (the ablation)
                    dense   --target-sparsity 0: the supernet trained the same epochs
    resnet18      torchvision resnet18 at 3x32x32 (the images resized, the channel
                  repeated): h2spg at 0.3 of its 11 structures, hesso
    cell          bench/models/cells.py SummedCellNet (conv3 + conv5 + max pool
                  summed, three cells): h2spg at 0.5, hesso
    mixed         bench/models/cells.py MixedOpNet (DARTS's softmax-weighted mixed
                  op): h2spg at 0.5, hesso

HESSO (bench/peers/hesso.py in the peer venv, --hesso-python) gets the same training
images, the same epochs and batch size, and a target group sparsity that gives about
the parameters our sub-network of the same seed has (channel groups: params scale
about as (1 - s)^2, so s = 1 - sqrt(params_after / params_before)); its accuracy is on
the same 10,000 test images. A failure of HESSO is recorded as its error.

    .venv/bin/python bench/otov3.py [--seeds 0,1,2] [--epochs 8] [--limit 3000] \\
        [--hesso-python /tmp/oto-venv/bin/python] [--jobs 2]   # -> bench/results/otov3.json
    .venv/bin/python bench/otov3.py --quick                    # 1 seed, 1 epoch, 300 images

`--selection` measures the selection alone, without training (-> otov3_selection.json):
for each network and target, --draws random saliency orders (50), how often the top-K
groups leave an invalid network, or for a space one that is none of its derivations,
against H2SPG's hierarchical selection; the trained runs above give only one order
per seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import record  # bench/record.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "bench" / "models" / "cells.py"
SUPERRESNET = ["spaces/superresnet.nas", "--supernet", "supernet", "--param", "C=8", "--param", "in_channels=1",
               "--param", "resolution=28"]
NETWORKS = {  # name -> (sparsify's model arguments, the input shape, HESSO's --model and --branches)
    "superresnet": (SUPERRESNET, None, ("superresnet", None)),
    "resnet18": (["torchvision:resnet18", "--input-shape", "3,32,32"], (3, 32, 32),
                 ("torchvision:resnet18", r"^(layer\d\.\d)\.")),
    "cell": ([f"module:{CELLS}:SummedCellNet"], None, (f"module:{CELLS}:SummedCellNet", r"^(cells\.\d\.conv\d)\.")),
    "mixed": ([f"module:{CELLS}:MixedOpNet"], None, (f"module:{CELLS}:MixedOpNet", r"^(cells\.\d\.conv\d)\.")),
}
ARMS = [("superresnet", "h2spg", 0.5), ("superresnet", "topk", 0.5), ("superresnet", "dense", 0.0),
        ("resnet18", "h2spg", 0.3), ("cell", "h2spg", 0.5), ("mixed", "h2spg", 0.5)]


def ours(network: str, arm: str, target: float, seed: int, args, folder: Path) -> dict:
    model, _, _ = NETWORKS[network]
    store = folder / f"{network}-{arm}-{seed}.db"
    argv = [sys.executable, "-m", "nasdsl", "sparsify", *model, "--target-sparsity", str(target),
            "--epochs", str(args.epochs), "--limit", str(args.limit), "--seed", str(seed), "--store", str(store),
            "--json"] + (["--selection", "topk"] if arm == "topk" else [])
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    row = {"network": network, "arm": arm, "seed": seed, "target": target, "seconds": time.perf_counter() - began}
    if done.returncode:
        return {**row, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return {**row, "result": json.loads(done.stdout)}


def data_file(shape, args, folder: Path) -> Path:
    """The training images and the test set (as HESSO's `val`), at `shape`."""
    import torch
    from nasdsl.runtime.data import fitted, load

    data = load("fashion-mnist", limit=args.limit)
    data = fitted(data, shape or data.input_shape)
    path = folder / f"data-{'x'.join(map(str, data.input_shape))}.pt"
    if not path.exists():
        torch.save({"train_x": data.train.x, "train_y": data.train.y, "val_x": data.test.x, "val_y": data.test.y}, path)
    return path


def hesso(network: str, seed: int, target: float, args, folder: Path) -> dict:
    _, shape, (model, branches) = NETWORKS[network]
    out = folder / f"{network}-hesso-{seed}.json"
    argv = [args.hesso_python, str(ROOT / "bench" / "peers" / "hesso.py"), "--model", model,
            "--data", str(data_file(shape, args, folder)), "--out", str(out), "--epochs", str(args.epochs),
            "--target-group-sparsity", f"{target:.4f}", "--seed", str(seed), "--threads", "1", "--C", "8"]
    if branches:
        argv += ["--branches", branches]
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    row = {"network": network, "arm": "hesso", "seed": seed, "target": target, "seconds": time.perf_counter() - began}
    if not out.exists():
        return {**row, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return {**row, "peer": json.loads(out.read_text())}


def hesso_target(run: dict, before: dict | None = None) -> float:
    """The channel-group sparsity that gives about our sub-network's parameters: from
    (1 - s)^2, or, given HESSO's earlier run at the same seed (`before`), from the
    exponent p that run shows, params_after / params_before = (1 - s)^p (HESSO's
    groups differ in size, so p need not be 2: resnet18 showed 3.3)."""
    r = run["result"]
    want, power = r["params_after"] / r["params_before"], 2.0
    if before is not None and "error" not in before.get("peer", {"error": 1}):
        peer = before["peer"]
        power = math.log(peer["compressed"]["params"] / peer["full"]["params"]) / math.log(1 - before["target"])
    return min(0.9, max(0.05, 1 - want ** (1 / power)))


def summarise(runs: list) -> dict:
    summary: dict = {}
    for key in dict.fromkeys((r["network"], r["arm"]) for r in runs):
        rows = [r for r in runs if (r["network"], r["arm"]) == key]
        entry: dict = {"runs": len(rows), "errors": [r["error"] for r in rows if "error" in r]}
        fine = [r for r in rows if "error" not in r]
        if key[1].startswith("hesso"):
            done = [r["peer"] for r in fine if "error" not in r["peer"]]
            entry["errors"] += [r["peer"]["error"] for r in fine if "error" in r["peer"]]
            values = {"test_acc": [p["compressed"]["val_acc"] for p in done],
                      "full_test_acc": [p["full"]["val_acc"] for p in done],
                      "params": [p["compressed"]["params"] for p in done],
                      "macs": [p["compressed"]["macs"] for p in done],
                      "output_gap": [p["max_abs_logit_diff"] for p in done],
                      "graph_build_s": [p["graph_build_s"] for p in done],
                      "construct_s": [p["construct_subnet_s"] for p in done],
                      "branches_removed": [p["branches_removed"] for p in done],
                      "branches_total": [p["branches_total"] for p in done]}
        else:
            results = [r["result"] for r in fine]
            valid = [x for x in results if x["valid"]]
            entry["invalid"] = len(results) - len(valid)
            values = {"test_acc": [x["accuracy"]["subnet"]["test"] for x in valid],
                      "supernet_test_acc": [x["accuracy"]["supernet"]["test"] for x in results],
                      "group_sparsity": [x["group_sparsity"] for x in results],
                      "projected": [x["projected"] for x in results],
                      "params": [x["params_after"] for x in valid], "params_before": [x["params_before"] for x in results],
                      "macs": [x["macs_after"] for x in valid], "macs_before": [x["macs_before"] for x in results],
                      "output_gap": [x["output_gap"] for x in valid],
                      "distance": [x["distance"] for x in valid if "distance" in x],
                      "seconds": [r["seconds"] for r in fine]}
        for name, v in values.items():
            if v:
                entry[f"{name}_mean"] = statistics.mean(v)
                entry[f"{name}_std"] = statistics.stdev(v) if len(v) > 1 else None
        summary["/".join(key)] = entry
    return summary


def selection_study(draws: int) -> dict:
    """Invalid and not-a-derivation rates of top-K and hierarchical selection over
    random saliency orders (see the module's text)."""
    import random

    from nasdsl.runtime.algorithms.otov3 import load_subject, remainder
    from nasdsl.runtime.h2spg import H2SPG

    import nasdsl
    from nasdsl.compiler.erasing import erased_module

    space = nasdsl.load(ROOT / "spaces" / "superresnet.nas").bind(C=8, in_channels=1, resolution=28)
    made = {"superresnet (preset)": lambda: load_subject("superresnet", (1, 28, 28), 10, space=space,
                                                         supernet="supernet"),
            "superresnet (parallel)": lambda: load_subject("superresnet", (1, 28, 28), 10, space=space),
            "resnet18": lambda: load_subject("torchvision:resnet18", (3, 32, 32), 10),
            "cell": lambda: load_subject(f"module:{CELLS}:SummedCellNet", (1, 28, 28), 10),
            "mixed": lambda: load_subject(f"module:{CELLS}:MixedOpNet", (1, 28, 28), 10)}
    out: dict = {}
    for name, make in made.items():
        t = time.perf_counter()
        subject = make()  # the network built or traced, and its erasing graph
        graph_s = time.perf_counter() - t
        erasing = subject.erasing
        first = random.Random(0)
        names = H2SPG(subject.module, erasing, lr=0.1, target=0.5, admissible=subject.admissible()).select(
            {n: first.random() for n in erasing.structures})
        t = time.perf_counter()
        erased_module(erasing, subject.module, names)
        out[name] = {"graph_build_s": graph_s, "construct_s": time.perf_counter() - t}
        print(f"{name}: {out[name]}", flush=True)
        for target in (0.3, 0.5, 0.7):
            counts = {"topk": [0, 0], "hierarchical": [0, 0]}  # invalid, not a derivation
            selectors = {kind: H2SPG(subject.module, erasing, lr=0.1, target=target, admissible=subject.admissible(),
                                     hierarchical=kind == "hierarchical") for kind in counts}
            for draw in range(draws):
                rng = random.Random(draw)
                scores = {n: rng.random() for n in erasing.structures}
                for kind in counts:
                    names = selectors[kind].select(scores)
                    if not erasing.check(names):
                        counts[kind][0] += 1
                    elif subject.space is not None and not subject.parallel and remainder(subject, names)[1]:
                        counts[kind][1] += 1
            out[f"{name}@{target}"] = {"structures": len(erasing.structures), "draws": draws,
                                       **{f"{k}_invalid": v[0] / draws for k, v in counts.items()},
                                       **{f"{k}_not_a_derivation": v[1] / draws for k, v in counts.items()
                                          if subject.space is not None and not subject.parallel}}
            print(f"{name} @ {target}: {out[f'{name}@{target}']}", flush=True)
    return out


def rerun_hesso(args, networks: list, began: float) -> dict:
    """--hesso-from: HESSO again on `networks`, each seed's target recalibrated from the
    HESSO run the file holds; the other runs kept as they are."""
    previous = json.loads(args.hesso_from.read_text())
    runs = previous["runs"]
    kept = [{**r, "arm": "hesso-first-target"} if r["arm"] == "hesso" and r["network"] in networks else r
            for r in runs]  # the first target's runs stay, under another name
    before = {(r["network"], r["seed"]): r for r in runs if r["arm"] == "hesso"}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(hesso, r["network"], r["seed"], hesso_target(r, before.get((r["network"], r["seed"]))),
                            args, Path(tmp))
                for r in runs if r["arm"] == "h2spg" and r["network"] in networks and "error" not in r]
        kept += [j.result() for j in jobs]
    previous.update(summary=summarise(kept), runs=kept,
                    seconds=previous["seconds"] + time.perf_counter() - began,
                    hesso_recalibrated=sorted(networks))
    record.write(args.out, previous)
    return previous


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--limit", type=int, default=3000)
    p.add_argument("--jobs", type=int, default=2, help="arms run at once, one thread each")
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--hesso-python", help="the peer venv's python (HESSO's arms are skipped without it)")
    p.add_argument("--hesso-from", type=Path, metavar="JSON", help="rerun only HESSO on --networks against this "
                   "result's runs of ours, its target recalibrated from the HESSO run there (equal parameters)")
    p.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 300 images: the script runs")
    p.add_argument("--selection", action="store_true", help="the selection study alone (see the module's text)")
    p.add_argument("--draws", type=int, default=50, help="random saliency orders per network and target (50)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "otov3.json")
    args = p.parse_args(argv)
    if args.selection:
        began = time.perf_counter()
        result = {"draws": args.draws, "study": selection_study(args.draws), "machine": record.machine(),
                  "seconds": time.perf_counter() - began}
        record.write(args.out.with_name("otov3_selection.json") if args.out.name == "otov3.json" else args.out, result)
        return result
    if args.quick:
        args.seeds, args.epochs, args.limit = "0", 1, 300
    seeds = [int(s) for s in args.seeds.split(",")]
    networks = args.networks.split(",")
    began = time.perf_counter()
    if args.hesso_from:
        return rerun_hesso(args, networks, began)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        folder = Path(tmp)
        jobs = [pool.submit(ours, n, arm, target, seed, args, folder)
                for seed in seeds for n, arm, target in ARMS if n in networks]
        runs = [j.result() for j in jobs]
        for r in runs:
            print(json.dumps({k: r[k] for k in ("network", "arm", "seed")} | (
                {"error": r["error"]} if "error" in r else {"test": r["result"]["accuracy"].get("subnet")})),
                flush=True)
        if args.hesso_python:
            peers = [pool.submit(hesso, r["network"], r["seed"], hesso_target(r), args, folder) for r in runs
                     if r["arm"] == "h2spg" and r["network"] != "superresnet" and "error" not in r
                     and r["result"]["valid"]]
            runs += [j.result() for j in peers]
    result = {"settings": {"seeds": seeds, "epochs": args.epochs, "limit": args.limit, "dataset": "fashion-mnist",
                           "batch_size": 64, "test_images": 10000},
              "machine": record.machine(), "seconds": time.perf_counter() - began,
              "summary": summarise(runs), "runs": runs}
    record.write(args.out, result)
    return result


if __name__ == "__main__":
    main()
