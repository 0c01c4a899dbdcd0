"""Per-kernel CPU time of MobileNetV3-Large's forward pass, ours (compiled from the
`mobilenet_v3_large` preset) against torchvision's, in one process with the torch
profiler. Each model is warmed up and profiled in turn, torchvision twice (first
and last), so an ordering effect shows up as a difference between its two runs.

    .venv/bin/python bench/forward_profile.py [--out bench/results/forward_profile.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import record  # bench/record.py, beside this script
import torch
import torchvision
from torch.profiler import ProfilerActivity, profile

import nasdsl

ROOT = Path(__file__).resolve().parent.parent


def kernel_times(model, x, warmup: int, runs: int) -> dict:
    """{aten op: self CPU ms} over `runs` forward passes."""
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(x)
    return {e.key: e.self_cpu_time_total / 1000 for e in prof.key_averages()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "forward_profile.json")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    space = nasdsl.load(ROOT / "spaces" / "mobilenetv3.nas")
    ours = space.preset_space("mobilenet_v3_large").compile(space.preset("mobilenet_v3_large"), (3, 224, 224)).eval()
    theirs = torchvision.models.mobilenet_v3_large(weights=None).eval()
    x = torch.randn(args.batch, 3, 224, 224)
    first = kernel_times(theirs, x, 2, 3)
    mine = kernel_times(ours, x, 2, 3)
    last = kernel_times(theirs, x, 2, 3)
    top = sorted(mine, key=lambda k: -mine[k])[:8]
    result = {"benchmark": "forward_profile", "batch": args.batch, "threads": args.threads, "runs": 3,
              "total_ms": {"torchvision_first": round(sum(first.values()), 1), "ours": round(sum(mine.values()), 1),
                           "torchvision_last": round(sum(last.values()), 1)},
              "top_kernels_ms": {k: {"ours": round(mine[k], 1), "torchvision_first": round(first.get(k, 0), 1),
                                     "torchvision_last": round(last.get(k, 0), 1)} for k in top}}
    print(json.dumps(result["total_ms"]))
    record.write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
