"""One bench script run from two source trees in turn, in one run: the new tree
(this checkout) against an old one (another checkout beside it, e.g. the main
before a refactor). Rounds alternate old, new, old, new, ... so both see the same
machine load; each number is the median over rounds, and `ratio` is new / old.

    git worktree add ../old <commit>
    .venv/bin/python bench/versus.py --old ../old --rounds 3 space_ops.py -- --seconds 0.5
    .venv/bin/python bench/versus.py --old ../old --rounds 3 compile.py

Each tree runs its own copy of the script with its own `nasdsl` first on the path,
so the script may differ between the trees (imports that moved); rows of a result
list are matched by their `file` (or `space`) key. Writes
bench/results/versus_<script>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import record  # bench/record.py, beside this script

ROOT = Path(__file__).resolve().parent.parent


def numbers(value, prefix: str = "") -> dict:
    """Every number in a JSON result as {dotted path: number}."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, (int, float)):
        return {prefix: value}
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((row.get("file", row.get("space", i)) if isinstance(row, dict) else i, row)
                 for i, row in enumerate(value))
    else:
        return {}
    out = {}
    for key, sub in items:
        out.update(numbers(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out


def run(tree: Path, script: str, args: list, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, str(tree / "bench" / script), "--out", str(out), *args],
                   cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return numbers(json.loads(out.read_text()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the other source tree (a checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("script", help="a script in bench/, e.g. space_ops.py")
    parser.add_argument("args", nargs="*", help="its arguments (after --)")
    args = parser.parse_args(argv)
    trees = {"old": args.old.resolve(), "new": ROOT}
    runs: dict = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(run(tree, args.script, args.args, Path(tmp) / f"{name}-{r}.json"))
                print(f"round {r + 1}/{args.rounds}: {name} done", flush=True)
    metrics = {}
    for key in runs["new"][0]:
        old = [run[key] for run in runs["old"] if key in run]
        new = [run[key] for run in runs["new"]]
        if not old:
            continue
        o, n = statistics.median(old), statistics.median(new)
        metrics[key] = {"old": o, "new": n, "ratio": round(n / o, 3) if o else None}
    commit = lambda tree: subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],  # noqa: E731
                                         capture_output=True, text=True).stdout.strip()
    result = {"benchmark": f"versus {args.script}", "old": commit(trees["old"]), "new": commit(ROOT),
              "rounds": args.rounds, "args": args.args, "machine": record.machine(), "metrics": metrics}
    record.write(ROOT / "bench" / "results" / f"versus_{Path(args.script).stem}.json", result)
    for key, m in metrics.items():
        print(f"{key:70} old {m['old']:>14,.4g}  new {m['new']:>14,.4g}  new/old {m['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
