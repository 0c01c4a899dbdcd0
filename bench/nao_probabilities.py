"""The cost of NAO-V2's sampling probabilities, p(a) ∝ params(a), for a pool of
1,000 derivations: ours from the compiler's graph (`Proposer.cost`, no module
built) against building every network and summing its parameters, as the published
code does (`utils.py` instantiates each candidate to count it), in the same run.

Per space: `--derivations` distinct uniform samples, each sized both ways (the two
arms alternate derivation by derivation, so a change in the machine's load hits both
alike); the counts must agree exactly. CPU time of this process, one thread. The
headline is the ratio built / graph per space.

    .venv/bin/python bench/nao_probabilities.py [--derivations 1000] [--spaces nb201,darts]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import record  # bench/record.py, beside this script
import torch
from nasdsl.runtime.propose import Proposer

import nasdsl

ROOT = Path(__file__).resolve().parent.parent
SPACES = {  # at the published code's input size (CIFAR-10's 3x32x32); nb201 and darts at their benchmark widths
    "nb201": ({"C": 16, "N": 5}, (3, 32, 32)),
    "darts": ({}, (3, 32, 32)),
}


def distinct(space, n: int, seed: int) -> list:
    rng, found = random.Random(f"probabilities:{seed}"), {}
    while len(found) < n:
        d = space.sample(rng=rng)
        found.setdefault(d.hash, d)
    return list(found.values())


def measure(name: str, n: int) -> dict:
    params, shape = SPACES[name]
    space = nasdsl.load(ROOT / "spaces" / f"{name}.nas", params)
    pool = distinct(space, n, 0)
    proposer = Proposer(space, shape)  # fresh: no derivation is cached before it is timed
    graph_s = built_s = 0.0
    from_graph, from_module = [], []
    for d in pool:
        start = time.process_time()
        from_graph.append(proposer.cost(d).params)
        graph_s += time.process_time() - start
        start = time.process_time()
        module = space.compile(d, shape)
        from_module.append(sum(p.numel() for p in module.parameters()))
        built_s += time.process_time() - start
        del module
    if from_graph != from_module:
        raise SystemExit(f"{name}: graph and module disagree on {sum(a != b for a, b in zip(from_graph, from_module))}"
                         " derivations")
    total = sum(from_graph)
    probabilities = [p / total for p in from_graph]
    return {"space": name, "params": params, "input_shape": list(shape), "derivations": n,
            "graph_s": graph_s, "built_s": built_s, "ratio_built_over_graph": built_s / graph_s,
            "graph_ms_per_derivation": 1000 * graph_s / n, "built_ms_per_derivation": 1000 * built_s / n,
            "counts_agree": True, "params_min": min(from_graph), "params_max": max(from_graph),
            "probability_max_over_min": max(probabilities) / min(probabilities)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "nao_probabilities.json")
    parser.add_argument("--derivations", type=int, default=1000)
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--quick", action="store_true", help="20 derivations")
    args = parser.parse_args(argv)
    if args.quick:
        args.derivations = 20
    torch.set_num_threads(1)
    result = {"benchmark": "nao_probabilities", "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": {**record.machine(), "loadavg_before": list(os.getloadavg())}, "threads": 1, "spaces": []}
    for name in args.spaces.split(","):
        if name not in SPACES:
            parser.error(f"unknown space {name}; choose of {', '.join(SPACES)}")
        row = measure(name, args.derivations)
        result["spaces"].append(row)
        print(f"{name}: {args.derivations} derivations sized from the graph in {row['graph_s']:.2f} s, by building "
              f"each network in {row['built_s']:.2f} s: {row['ratio_built_over_graph']:.1f}x", flush=True)
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    record.write(args.out if not args.quick else args.out.with_name("nao_probabilities_quick.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
