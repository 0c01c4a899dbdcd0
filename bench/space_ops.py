"""Speed of the space operations on every shipped space, with a floor in the same run.

For each space: time to load and count (plans built from scratch), uniform and
per-choice samples/s, mutations/s, rank/s and unrank/s. The floor is a
hand-written loop of `random.choice` over exactly the choices one derivation
makes (pre-extracted, so the loop does nothing else); `uniform_vs_floor` is how
many times slower our sampler is than that floor (the target is <= 5).

    .venv/bin/python bench/space_ops.py --out bench/results/space_ops.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

import record  # bench/record.py, beside this script

import nasdsl
from nasdsl.space.operations import positions
from nasdsl.space.plan import PAlt, PPick, PRepeat, PScope, PValue

ROOT = Path(__file__).resolve().parent.parent


def rate(fn, seconds: float) -> float:
    """Calls per second of `fn`, measured for about `seconds` (after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def domains(space, d) -> list:
    """The option lists one derivation chose from: what a random.choice loop would draw."""
    out = []
    for _, plan, _ in positions(space.root, d.root):
        if isinstance(plan, PValue):
            out.append(list(plan.values))
        elif isinstance(plan, PAlt):
            out.append([option.label for option in plan.options])
        elif isinstance(plan, PRepeat) and len(plan.lengths) > 1:
            out.append(list(plan.lengths))
        elif isinstance(plan, PPick):
            out.append(plan.subsets)
        elif isinstance(plan, PScope) and len(plan.variants) > 1:
            out.append(plan.variants)
    return out


# Beside the shipped spaces: a deep, wide space of 10**400 derivations (40 stages of
# 10 blocks, each 5 kernels x 2 activations), to show counting and sampling at scale.
BIG = """space big
network = stage * 40
stage = block * 10
block = conv(out=8, kernel={1, 3, 5, 7, 9}) (relu | hswish)
"""


def measure(label: str, load, seconds: float) -> dict:
    start = time.perf_counter()
    space = load()
    count = space.count
    count_s = time.perf_counter() - start

    rng = random.Random(0)
    sample = lambda: space.sample(rng=rng)  # noqa: E731
    samples = [space.sample(rng=rng) for _ in range(200)]
    ranks = [space.rank(d) for d in samples]

    choice_lists = [domains(space, d) for d in samples]
    floor_rng = random.Random(0)
    cursor = [0]

    def floor():
        lists = choice_lists[cursor[0] % len(choice_lists)]
        cursor[0] += 1
        return [floor_rng.choice(options) for options in lists]

    k = [0]

    def mutate():
        k[0] += 1
        return space.mutate(samples[k[0] % len(samples)], rng=rng)

    def do_rank():
        k[0] += 1
        return space.rank(samples[k[0] % len(samples)])

    def do_unrank():
        k[0] += 1
        return space.unrank(ranks[k[0] % len(ranks)])

    uniform = rate(sample, seconds)
    floor_rate = rate(floor, seconds)
    return {
        "space": space.name,
        "file": label,
        "count": str(count),
        "log10_count": round(math.log10(count), 2),
        "choices_per_derivation": round(sum(map(len, choice_lists)) / len(choice_lists), 1),
        "load_and_count_s": round(count_s, 4),
        "uniform_samples_per_s": round(uniform),
        "per_choice_samples_per_s": round(rate(lambda: space.sample(rng=rng, method="per-choice"), seconds)),
        "floor_random_choice_per_s": round(floor_rate),
        "uniform_vs_floor": round(floor_rate / uniform, 2),
        "mutations_per_s": round(rate(mutate, seconds)),
        "rank_per_s": round(rate(do_rank, seconds)),
        "unrank_per_s": round(rate(do_unrank, seconds)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "space_ops.json")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("spaces", nargs="*", type=Path, help="default: every file in spaces/")
    args = parser.parse_args(argv)
    paths = args.spaces or sorted((ROOT / "spaces").glob("*.nas"))
    cases = [(str(p.resolve().relative_to(ROOT)), lambda p=p: nasdsl.load(p)) for p in paths
             if not nasdsl.load(p).is_library]
    if not args.spaces:
        cases.append(("bench/space_ops.py:BIG", lambda: nasdsl.loads(BIG, name="big")))
    rows = []
    for label, load in cases:
        rows.append(measure(label, load, args.seconds))
        print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "space_ops", "python": sys.version.split()[0], "machine": platform.machine(),
              "processor": platform.processor() or platform.machine(), "results": rows}
    record.write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
