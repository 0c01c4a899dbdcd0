"""Functional identity and neighbourhoods over the shipped spaces (issue 19).

For each space (at the test suite's small sizes where it has one; sizes do not change
the counts):
- the exact number of distinct functions, where the space is small enough to
  enumerate (NAS-Bench-201, and RegNet's 20,058). NAS-Bench-201's is given under both
  zero conventions, beside two independent expression forms of the cell: the
  benchmark's own check and the same check with sums opened and zeros dropped;
- how often a uniform sampler draws a function it already drew (n draws);
- the radius-1 neighbourhood: its size, the time to build it (median of the
  samples), and the share of its members that compute a function another member
  already computes (what `neighbourhood(..., distinct=True)` drops).

    .venv/bin/python bench/identity.py --out bench/results/identity.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import SMALL, SPACES  # noqa: E402

import nasdsl  # noqa: E402
from nasdsl.compiler.identity import Functions, function_graph  # noqa: E402

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def benchmark_string(ops) -> str:
    """NAS-Bench-201's own isomorphism check (`to_unique_str(consider_zero=True)`, as its
    API describes it): a zero edge or a zero source gives `#`, a skip passes its source's
    string, terms are sorted and joined with `+`; `#` terms are kept."""
    nodes = {0: "0"}
    for t in (1, 2, 3):
        terms = []
        for (target, s), op in zip(NB201_EDGES, ops):
            if target == t:
                terms.append("#" if op == "none" or nodes[s] == "#" else nodes[s] if op == "skip_connect"
                             else f"({nodes[s]})@{op}")
        nodes[t] = "+".join(sorted(terms))
    return nodes[3]


def opened_string(ops):
    """The same with zeros dropped and sums opened (a term list, sorted)."""
    nodes = {0: ("0",)}
    for t in (1, 2, 3):
        terms = []
        for (target, s), op in zip(NB201_EDGES, ops):
            if target == t and op != "none" and nodes[s] is not None:
                terms.extend(nodes[s] if op == "skip_connect" else [(op, nodes[s])])
        nodes[t] = tuple(sorted(terms, key=repr)) if terms else None
    return nodes[3]


def nb201_counts() -> dict:
    space = nasdsl.load(SPACES / "nb201.nas", params=SMALL["nb201"])
    strict, convention = Functions(), Functions()
    classes = {}
    start = time.perf_counter()
    for d in space.enumerate():
        g = space.graph(d)
        c = strict.add(function_graph(g))
        convention.add(function_graph(g, constants=False))
        classes[c] = classes.get(c, 0) + 1
    seconds = time.perf_counter() - start
    archs = list(itertools.product(NB201_OPS, repeat=6))
    return {"derivations": space.count, "distinct": strict.count, "distinct_benchmark_convention": convention.count,
            "benchmark_string_forms": len({benchmark_string(a) for a in archs}),
            "opened_string_forms": len({opened_string(a) for a in archs}),
            "share_with_a_twin": sum(n for n in classes.values() if n > 1) / space.count,
            "seconds": round(seconds, 1)}


ENUMERABLE = 100_000  # spaces up to this size are enumerated for their exact distinct count


def sampled(name: str, draws: int, neighbourhoods: int) -> dict:
    space = nasdsl.load(SPACES / f"{name}.nas", params=SMALL.get(name, {}))
    functions = Functions()
    repeats = 0
    for d in space.samples(draws, seed=0):
        before = functions.count
        functions.add(space.canonical(d))
        repeats += functions.count == before
    sizes, times, twins = [], [], []
    for d in space.samples(neighbourhoods, seed=1):
        start = time.perf_counter()
        near = space.neighbourhood(d, 1)
        times.append(time.perf_counter() - start)
        sizes.append(len(near))
        kept = Functions()
        for x in near:
            kept.add(space.canonical(x))
        twins.append(1 - kept.count / len(near))
    exact = {}
    if name != "nb201" and space.count <= ENUMERABLE:  # nb201's exact counts are nb201_counts'
        start = time.perf_counter()
        exact = {"distinct": space.distinct(), "distinct_seconds": round(time.perf_counter() - start, 1)}
    return {"space": name, "count": space.count, **exact, "draws": draws, "uniform_repeat_share": repeats / draws,
            "neighbourhood_r1_size_median": statistics.median(sizes),
            "neighbourhood_r1_seconds_median": round(statistics.median(times), 3),
            "neighbourhood_r1_twin_share_mean": round(statistics.mean(twins), 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/identity.json")
    parser.add_argument("--draws", type=int, default=500, help="uniform draws per space")
    parser.add_argument("--neighbourhoods", type=int, default=3, help="radius-1 neighbourhoods per space")
    parser.add_argument("--spaces", default=",".join(sorted(p.stem for p in SPACES.glob("*.nas"))),
                        help="comma-separated shipped spaces (default: all)")
    parser.add_argument("--no-nb201-enumeration", action="store_true", help="skip the full enumeration")
    args = parser.parse_args(argv)
    result = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "command": " ".join(["bench/identity.py", *(argv if argv is not None else sys.argv[1:])]),
              "nb201": None if args.no_nb201_enumeration else nb201_counts(),
              "spaces": [sampled(n, args.draws, args.neighbourhoods) for n in args.spaces.split(",")]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
