"""Compile time and forward speed of a network built from its preset, against
torchvision's own (`--model`: `mobilenet_v3_large`, the default, or `vit_b_16`,
`weights=None`), in the same run.

Compile: seconds per derivation (median over repetitions) for the graph alone and
for graph + module, with the space loaded and its plans built once beforehand (the
way a search compiles many derivations of one space); the targets are ratios
ours/torchvision <= 1.0. Forward: images/s in eval mode under no_grad, batch 32
(`--batch`) at 224x224, on the CPU with one thread per core and on CUDA where there is one, the
two models taking turns batch by batch, in a few fresh processes; the target is
ours/torchvision >= 0.98.
The load average before and after is recorded: on a shared machine, compare runs
only at a similar load. Where our compile is the slower (or with --profile), a
cProfile of it says where the time goes.

    .venv/bin/python bench/compile.py [--quick] [--out bench/results/compile.json]
    .venv/bin/python bench/compile.py --model vit_b_16 --batch 8   # → bench/results/compile_vit_b_16.json
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

import record  # bench/record.py, beside this script
import torch
import torchvision

import nasdsl

ROOT = Path(__file__).resolve().parent.parent
# --model: (space file, its preset, torchvision's constructor)
MODELS = {"mobilenet_v3_large": ("mobilenetv3.nas", "mobilenet_v3_large", "mobilenet_v3_large"),
          "vit_b_16": ("vit.nas", "vit_b_16", "vit_b_16")}
SHAPE = (3, 224, 224)


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def theirs(model: str):
    return getattr(torchvision.models, MODELS[model][2])(weights=None)


def ours(model: str):
    file, preset, _ = MODELS[model]
    space = nasdsl.load(ROOT / "spaces" / file)
    return space.preset_space(preset), space.preset(preset)


def compile_times(space, d, model: str, repeats: int) -> dict:
    graph_s = median_seconds(lambda: space.graph(d, SHAPE), repeats)
    module_s = median_seconds(lambda: space.compile(d, SHAPE), repeats)
    theirs_s = median_seconds(lambda: theirs(model), repeats)
    return {"repeats": repeats, "graph_s": graph_s, "graph_and_module_s": module_s, "torchvision_s": theirs_s,
            "graph_vs_torchvision": graph_s / theirs_s, "graph_and_module_vs_torchvision": module_s / theirs_s,
            "target": "<= 1.0"}


def profile_compile(space, d, calls: int, top: int = 25) -> dict:
    """cProfile of `calls` compiles: the functions with the most cumulative and own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        space.compile(d, SHAPE)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())

    def rows(key):
        stats.sort_stats(key)
        out = []
        for func in stats.fcn_list[:top]:
            n, _, own, cum, _ = stats.stats[func]
            out.append({"function": f"{Path(func[0]).name}:{func[1]}({func[2]})", "calls_per_compile": n / calls,
                        "own_ms_per_compile": 1e3 * own / calls, "cumulative_ms_per_compile": 1e3 * cum / calls})
        return out

    return {"compiles": calls, "by_cumulative": rows("cumulative"), "by_own_time": rows("tottime")}


def forward_rates(device: str, model: str, batch: int, warmup: int, repeats: int, seconds: float) -> dict:
    """Images/s of both models on `device`, one value per repeat each; a repeat times
    as many batches as fill about `seconds` (one batch on a CPU), the two models
    taking turns, so drifting load hits both alike."""
    space, d = ours(model)
    models = {"ours": space.compile(d, SHAPE), "torchvision": theirs(model)}
    models = {name: m.to(device).eval() for name, m in models.items()}
    x = torch.randn(batch, *SHAPE, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed(m, iters: int) -> float:
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            m(x)
        sync()
        return time.perf_counter() - start

    with torch.no_grad():
        for _ in range(warmup):
            for m in models.values():
                m(x)
        iters = max(1, math.ceil(seconds / min(timed(m, 1) for m in models.values())))
        rates = {name: [] for name in models}
        for r in range(repeats):
            for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
                rates[name].append(batch * iters / timed(models[name], iters))
    return {"batches_per_repeat": iters, **rates}


def throughput(device: str, model: str, batch: int, threads: int, rounds: int, warmup: int, repeats: int,
               seconds: float) -> dict:
    """`forward_rates` in `rounds` fresh processes. A CPU process's speed depends on
    its allocator's state (which pages it returns and faults in again), and that
    differs from process to process by up to 10% on a small machine, so one process
    is one sample: the ratio is the median of the rounds' ratios."""
    runs = []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, __file__, "--worker", device, "--model", model, "--batch", str(batch),
                              "--threads", str(threads),
                              "--warmup", str(warmup), "--repeats", str(repeats), "--seconds", str(seconds)],
                             check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.splitlines()[-1]))
    ratios = [statistics.median(run["ours"]) / statistics.median(run["torchvision"]) for run in runs]
    ours = statistics.median(v for run in runs for v in run["ours"])
    theirs = statistics.median(v for run in runs for v in run["torchvision"])
    return {"batch": batch, "threads": threads if device == "cpu" else None, "rounds": rounds, "warmup": warmup,
            "repeats_per_round": repeats, "batches_per_repeat": [run["batches_per_repeat"] for run in runs],
            "ours_images_per_s": ours, "torchvision_images_per_s": theirs,
            "ours_vs_torchvision": statistics.median(ratios), "target": ">= 0.98", "ratio_per_round": ratios,
            "ours_all": [run["ours"] for run in runs], "torchvision_all": [run["torchvision"] for run in runs]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="mobilenet_v3_large")
    parser.add_argument("--batch", type=int, default=32, help="images per forward batch")
    parser.add_argument("--out", type=Path, help="default: bench/results/compile.json (compile_MODEL.json for others)")
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run, not a measurement")
    parser.add_argument("--profile", action="store_true", help="profile our compile even when it is the faster")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads for the forward passes (default: one per core)")
    for flag, kind in (("--worker", str), ("--warmup", int), ("--repeats", int), ("--seconds", float)):
        parser.add_argument(flag, type=kind, help=argparse.SUPPRESS)  # one round of forward passes
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    if args.out is None:
        name = "compile" if args.model == "mobilenet_v3_large" else f"compile_{args.model}"
        args.out = ROOT / "bench" / "results" / f"{name}.json"
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(forward_rates(args.worker, args.model, args.batch, args.warmup, args.repeats, args.seconds)))
        return 0
    compile_repeats, rounds, warmup, repeats, seconds = (5, 1, 1, 3, 0.1) if args.quick else (30, 5, 3, 10, 0.25)

    load_start = time.perf_counter()
    space, d = ours(args.model)
    graph = space.graph(d, SHAPE)  # builds the plans: a one-time cost per space
    load_s = time.perf_counter() - load_start

    cuda = torch.cuda.is_available()
    result = {
        "benchmark": "compile", "quick": args.quick, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**record.machine(),
                    "torchvision": torchvision.__version__,
                    "cuda": torch.cuda.get_device_name() if cuda else None,
                    "loadavg_before": list(os.getloadavg())},
        "model": {"space": f"spaces/{MODELS[args.model][0]}", "preset": MODELS[args.model][1],
                  "torchvision": MODELS[args.model][2], "input_shape": list(SHAPE),
                  "params": graph.graph["params"], "macs": graph.graph["macs"],
                  "nodes": graph.number_of_nodes()},
        "load_and_plan_s": load_s,
    }
    result["compile"] = compile_times(space, d, args.model, compile_repeats)
    print(json.dumps({"compile": result["compile"]}), flush=True)
    if args.profile or result["compile"]["graph_and_module_vs_torchvision"] > 1.0:
        result["compile_profile"] = profile_compile(space, d, compile_repeats)

    result["throughput"] = {}
    for device in ("cpu", "cuda") if cuda else ("cpu",):
        result["throughput"][device] = throughput(device, args.model, args.batch, args.threads, rounds, warmup,
                                                  repeats, seconds)
        print(json.dumps({device: {k: v for k, v in result["throughput"][device].items() if not k.endswith("_all")}}),
              flush=True)
    result["machine"]["loadavg_after"] = list(os.getloadavg())

    record.write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
