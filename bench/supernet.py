"""Step time of a single-path supernet against the stand-alone module, in the same run.

For each space, `derivations` seeded uniform samples; for each, one training step
(forward, loss, backward) of `Supernet.forward(x, d)` and of `space.compile(d)` on
the same batch, in the same process, the two arms alternating step by step so a
change in the machine's load hits both alike (CPU time on CPU, wall time on CUDA). The headline is the median over
derivations of `supernet / stand-alone` (target <= 1.15). The supernet's first
step of a derivation builds its program (graph and templates); `--cold` times
that step, the default times steady steps (a sampler's pool repeats derivations).
Also recorded: the supernet's parameters for every shipped space (from
`Supernet.measure`, nothing allocated), and whether it fits the default limit.

    .venv/bin/python bench/supernet.py [--device cuda] [--dtype bf16] [--batch 64] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import record  # bench/record.py, beside this script
import torch

import nasdsl
from nasdsl.compiler.supernet import DEFAULT_MAX_PARAMS, Supernet

ROOT = Path(__file__).resolve().parent.parent
TIMED = {  # the three, at sizes a CPU runs
    "nb201": ({}, (3, 32, 32)),
    "darts": ({"C": 16, "layers": 8}, (3, 32, 32)),
    "mobilenet3_mt": ({"width": 0.25, "resolution": 32, "num_classes": 10}, (3, 32, 32)),
}
SIZED = {"nb201": {}, "darts": {}, "hnb201": {}, "mobilenet3_mt": {"width": 0.25, "resolution": 32},
         "mobilenet3_mt@1.0": {}, "mobilenetv3": {}, "superresnet": {}, "tutorial": {}, "resnet": {}, "regnet": {}}


def step(fn, x, device) -> float:
    """Seconds of one training step: the process's CPU time on CPU (which other processes' load
    disturbs much less than the wall clock on a shared machine), the wall clock on CUDA."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    fn(x).float().square().mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def time_space(name, params, shape, args, device, dtype):
    space = nasdsl.load(ROOT / "spaces" / f"{name}.nas", params)
    net = Supernet(space, shape).to(device).train()
    x = torch.randn(args.batch, *shape, device=device)
    rows = []
    for d in space.samples(args.derivations, seed=0):
        alone = space.compile(d, shape).to(device).train()
        arms = {"supernet": lambda x, d=d: net(x, d), "alone": alone}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            cold = step(arms["supernet"], x, device)
            step(arms["alone"], x, device)
            times = {arm: [] for arm in arms}
            for _ in range(args.steps):
                for arm, fn in arms.items():
                    times[arm].append(step(fn, x, device))
        medians = {arm: statistics.median(t) for arm, t in times.items()}
        rows.append({"derivation": d.hash[:12], "params": sum(p.numel() for p in alone.parameters()),
                     "supernet_s": medians["supernet"], "alone_s": medians["alone"], "cold_s": cold,
                     "ratio": medians["supernet"] / medians["alone"], "cold_ratio": cold / medians["alone"]})
        net.zero_grad(set_to_none=True)
    return {"space": name, "params": params, "input_shape": list(shape), "supernet_params": net.size.params,
            "median_ratio": statistics.median(r["ratio"] for r in rows),
            "median_cold_ratio": statistics.median(r["cold_ratio"] for r in rows), "derivations": rows}


def sizes():
    out = []
    for label, params in SIZED.items():
        name = label.split("@")[0]
        size = Supernet.measure(nasdsl.load(ROOT / "spaces" / f"{name}.nas", params))
        out.append({"space": label, "params": params, "supernet_params": size.params, "bytes": size.bytes,
                    "fits_default": size.params <= DEFAULT_MAX_PARAMS})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--derivations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spaces", nargs="*", default=list(TIMED))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "supernet.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    result = {"machine": record.machine(), "device": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "dtype": args.dtype, "batch": args.batch, "steps": args.steps, "target": 1.15,
              "timed": [time_space(n, *TIMED[n], args, device, dtype) for n in args.spaces], "sizes": sizes()}
    for t in result["timed"]:
        print(f"{t['space']:>14}: supernet / stand-alone = {t['median_ratio']:.3f} "
              f"(first step of a derivation {t['median_cold_ratio']:.2f})")
    record.write(args.out, result)


if __name__ == "__main__":
    main()
