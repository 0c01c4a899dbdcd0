"""Supernet training against NNI 3.0's RandomOneShot on the same cell space, side by side.

One small DARTS-like space is written twice: bench/spaces/oneshot_cell.nas for nasdsl
and an NNI ModelSpace with LayerChoice/InputChoice in bench/peers/nni_random_oneshot.py
(the same modules, so the same 252,330 supernet parameters at C=16, and the same
5.9e17 networks; the script checks both and records them). Both train on the very same
Fashion-MNIST images (`nasdsl.runtime.data.load` with `--limit`, saved to a temporary
.pt file that each process loads), through a torch DataLoader with the same batch size
and shuffling, with plain SGD at the same learning rate, one uniformly sampled path per
step, for the same number of epochs, on `--threads` torch threads.

- ours: a plain loop in this project's venv, per step `d = space.sample(rng=rng)`,
  `CE(net(x, d), y)`, backward, SGD step, on `nasdsl.compiler.supernet.Supernet`;
- nni: `NasExperiment(space, Classification(...), RandomOneShot()).run()` in NNI's own
  venv (`--nni-python`; see ../shared/peers/README.md for the recipe).

Every run is a fresh process of its own, one at a time (ours and NNI's alternating,
starting side swapped each repetition), so each process's memory is its own. An
epoch's time runs from the start of the epoch to the end of its last training step
(the batches, the sampling, forward, loss, backward, SGD; for NNI also its accuracy
metric, logging and Lightning's hooks), on the wall clock and the process's CPU
clock; import, building the supernet and the Trainer's setup are left out, and
neither side validates. Memory: the resident-set high-water mark of each process
(`getrusage(RUSAGE_SELF).ru_maxrss`) and the resident set just before training
(VmRSS), the same reading on both sides; the difference is what training added. The
first epoch is reported apart (it includes first-call costs); "s/epoch" is the median
over the later epochs of all repetitions.

    .venv/bin/python bench/oneshot_nni.py [--eager-edges] [--probes]   # -> bench/results/oneshot_nni.json
    .venv/bin/python bench/oneshot_nni.py --threads 1 --quiet 1 ...    # on a machine others keep busy
    .venv/bin/python bench/oneshot_nni.py --ours-only --quick          # no NNI needed (the test's run)

By default each run waits (up to --patience seconds) for other processes to leave the
CPUs idle (--quiet), and records how busy they kept the CPUs while it ran
(`others_cpu_share`); on a machine that is never quiet, read the CPU times at one thread
(docs/benchmarks.md says why).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import record  # bench/record.py, beside this script
import torch
from torch import nn

import nasdsl
from nasdsl.compiler.supernet import Supernet

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "bench" / "spaces" / "oneshot_cell.nas"
PEER = ROOT / "bench" / "peers" / "nni_random_oneshot.py"
NNI_PYTHON = ROOT.parent / "nni-venv" / "bin" / "python"


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_share(seconds: float = 2.0) -> float:
    """The share of all CPUs busy over the next `seconds` (this process sleeps meanwhile)."""
    b0, t0 = cpu_jiffies()
    time.sleep(seconds)
    b1, t1 = cpu_jiffies()
    return (b1 - b0) / max(t1 - t0, 1)


def wait_quiet(threshold: float, patience: float) -> float:
    """Wait (up to `patience` seconds) until other processes keep less than `threshold` of
    the CPUs busy, so that a run has the machine to itself; returns the last share seen."""
    deadline = time.monotonic() + patience
    share = busy_share()
    while share > threshold and time.monotonic() < deadline:
        print(f"  machine busy ({share:.0%} of the CPUs); waiting", flush=True)
        time.sleep(10)
        share = busy_share()
    return share


def ours(args) -> dict:
    """One run of our side, in this process (started fresh by `main`)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = torch.load(args.data)
    space = nasdsl.load(SPACE, {"C": args.channels, "cells": args.cells})
    net = Supernet(space, tuple(data["x"].shape[1:])).train()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data["x"], data["y"]),
                                         batch_size=args.batch, shuffle=True,
                                         generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    rng = random.Random(args.seed)
    result = {"peer": "ours", "torch": torch.__version__, "threads": args.threads,
              "supernet_params": sum(p.numel() for p in net.parameters()), "count": str(space.count),
              "rss_before_fit_kib": rss_kib(), "epochs": []}
    for _ in range(args.epochs):
        start, start_cpu, steps = time.perf_counter(), time.process_time(), 0
        for x, y in loader:
            d = space.sample(rng=rng)
            loss = loss_fn(net(x, d), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        result["epochs"].append({"wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - start_cpu,
                                 "steps": steps, "last_loss": loss.item()})
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result


def ours_checks(space, shape, bank_params: int, seed: int) -> dict:
    """Our counterparts of the NNI probes that need no training: size-weighted sampling
    (`space.sample_weighted`, bounded by the bank's size, which bounds every derivation's)
    and a seeded, repeatable sequence of paths."""
    rng = random.Random(seed)
    params = {}

    def size(d):
        if d.hash not in params:
            params[d.hash] = space.graph(d, shape).graph["params"]
        return params[d.hash]

    uniform = [size(space.sample(rng=rng)) for _ in range(100)]
    start = time.perf_counter()
    weighted = [size(space.sample_weighted(size, bank_params, rng=rng)) for _ in range(100)]
    per_sample = (time.perf_counter() - start) / len(weighted)
    again = []
    for _ in range(2):
        stream = random.Random(seed)
        again.append([space.sample(rng=stream).hash for _ in range(8)])
    return {"uniform_mean_params": statistics.mean(uniform), "size_weighted_mean_params": statistics.mean(weighted),
            "size_weighted_s_per_sample": per_sample, "bound": bank_params,
            "expected_size_weighted_mean": statistics.mean(w * w for w in uniform) / statistics.mean(uniform),
            "seeded_paths_repeat": again[0] == again[1], "resumes_bit_identical": resumes_bit_identical(seed)}


def resumes_bit_identical(seed: int) -> bool:
    """A supernet loop's whole state is the bank, the optimizer and the sampler's stream: 3 steps,
    a save, 3 more; then a fresh process-alike (new supernet, new optimizer) restored from the
    save runs the same 3 steps. True when both end with the same bank to the bit."""
    space = nasdsl.load(SPACE, {"C": 4, "cells": 1})
    x, y = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(seed)), torch.arange(8) % 10

    def fresh():
        torch.manual_seed(seed)
        net = Supernet(space, (1, 28, 28)).train()
        return net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)

    def steps(net, optimizer, rng, n):
        for _ in range(n):
            loss = nn.functional.cross_entropy(net(x, space.sample(rng=rng)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    net, optimizer = fresh()
    rng = random.Random(seed)
    steps(net, optimizer, rng, 3)
    saved = {"bank": {k: v.clone() for k, v in net.state_dict().items()},
             "optimizer": copy.deepcopy(optimizer.state_dict()), "rng": rng.getstate()}
    steps(net, optimizer, rng, 3)
    again, optimizer2 = fresh()
    again.load_state_dict(saved["bank"])
    optimizer2.load_state_dict(saved["optimizer"])
    rng2 = random.Random()
    rng2.setstate(saved["rng"])
    steps(again, optimizer2, rng2, 3)
    return all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def probes(args) -> list[dict]:
    """bench/peers/nni_probes.py's findings, one dict per probe."""
    done = subprocess.run([str(args.nni_python), str(PEER.parent / "nni_probes.py"), "all"], capture_output=True,
                          text=True, cwd=ROOT, timeout=1800)
    return [json.loads(line[len("PROBE "):]) for line in done.stdout.splitlines() if line.startswith("PROBE ")]


def run_side(side: str, args, data: Path, tmp: Path, rep: int) -> dict:
    out = tmp / f"{side}-{rep}.json"
    common = ["--data", str(data), "--out", str(out), "--epochs", str(args.epochs), "--batch", str(args.batch),
              "--lr", str(args.lr), "--channels", str(args.channels), "--cells", str(args.cells),
              "--seed", str(args.seed + rep), "--threads", str(args.threads)]
    if side == "ours":
        command = [sys.executable, __file__, "--worker", *common]
    else:
        command = [str(args.nni_python), str(PEER), *common] + (["--eager-edges"] if side == "nni_eager" else [])
    quiet = wait_quiet(args.quiet, args.patience) if args.quiet < 1 else None
    load = os.getloadavg()[0]
    busy0, child0 = cpu_jiffies()[0], resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    wall = time.perf_counter() - start
    busy1, child1 = cpu_jiffies()[0], resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
    others = ((busy1 - busy0) / os.sysconf("SC_CLK_TCK") - own) / (wall * os.cpu_count())
    result = json.loads(out.read_text())
    # others_cpu_share: the CPUs' busy time during the run that was not this run's process, as a share of
    # all CPUs (about 0 when the run had the machine to itself; the driver itself sleeps meanwhile)
    result.update(process_s=wall, load_before=load, busy_before=quiet, others_cpu_share=max(others, 0.0))
    return result


def summary(runs: list[dict]) -> dict:
    later = [e for r in runs for e in r["epochs"][1:]] or [e for r in runs for e in r["epochs"]]
    first = [r["epochs"][0] for r in runs]
    return {"runs": len(runs), "steps_per_epoch": runs[0]["epochs"][0]["steps"],
            "epoch_wall_s": statistics.median(e["wall_s"] for e in later),
            "epoch_cpu_s": statistics.median(e["cpu_s"] for e in later),
            "first_epoch_wall_s": statistics.median(e["wall_s"] for e in first),
            "first_epoch_cpu_s": statistics.median(e["cpu_s"] for e in first),
            "peak_rss_mib": statistics.median(r["peak_rss_kib"] for r in runs) / 1024,
            "rss_before_fit_mib": statistics.median(r["rss_before_fit_kib"] for r in runs) / 1024,
            "training_rss_mib": statistics.median(r["peak_rss_kib"] - r["rss_before_fit_kib"] for r in runs) / 1024,
            "process_s": statistics.median(r["process_s"] for r in runs),
            "others_cpu_share_max": max(r["others_cpu_share"] for r in runs),
            "last_loss": statistics.median(r["epochs"][-1]["last_loss"] for r in runs)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=2000, help="training images (Fashion-MNIST, stratified)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--cells", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nni-python", type=Path, default=NNI_PYTHON, help="python of a venv with nni 3.0")
    parser.add_argument("--eager-edges", action="store_true",
                        help="also time NNI with every candidate edge computed (the plain way to write InputChoice)")
    parser.add_argument("--ours-only", action="store_true", help="no NNI: only our side")
    parser.add_argument("--probes", action="store_true",
                        help="also run bench/peers/nni_probes.py (what RandomOneShot does with weights, seeds, "
                             "top-k, resume, unsupported modules) and keep its findings")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 128 images, 1 epoch, 1 repetition, C=4")
    parser.add_argument("--quiet", type=float, default=0.15,
                        help="before each run, wait until other processes keep less than this share of the CPUs "
                             "busy (1 never waits)")
    parser.add_argument("--patience", type=float, default=900, help="seconds to wait for a quiet machine, per run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "oneshot_nni.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a killed run still removes its temporary folder
    if args.worker:
        result = ours(args)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if args.quick:
        args.limit, args.epochs, args.reps, args.channels, args.batch, args.quiet = 128, 1, 1, 4, 32, 1.0
    sides = ["ours"] + ([] if args.ours_only else ["nni"] + (["nni_eager"] if args.eager_edges else []))
    if not args.ours_only and not args.nni_python.exists():
        parser.error(f"{args.nni_python}: no such python; make NNI's venv as ../shared/peers/README.md says, "
                     "point at it with --nni-python, or run with --ours-only")

    from nasdsl.runtime import data as datasets

    dataset = datasets.load("fashion-mnist", val_fraction=0.1, seed=args.seed, limit=args.limit)
    space = nasdsl.load(SPACE, {"C": args.channels, "cells": args.cells})
    result = {"machine": record.machine(), "space": str(SPACE.relative_to(ROOT)),
              "settings": {k: v for k, v in vars(args).items() if k not in ("out", "worker", "data", "nni_python")},
              "dataset": dataset.name, "note": dataset.note, "train_images": len(dataset.train),
              "input_shape": list(dataset.input_shape), "count": str(space.count),
              "supernet_params": Supernet.measure(space, dataset.input_shape).params}
    result["ours_checks"] = ours_checks(space, dataset.input_shape, result["supernet_params"], args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "train.pt"
        torch.save({"x": dataset.train.x.contiguous(), "y": dataset.train.y.contiguous()}, data)
        del dataset
        if "nni" in sides:
            count = subprocess.run([str(args.nni_python), str(PEER), "--count", "--channels", str(args.channels),
                                    "--cells", str(args.cells)], check=True, capture_output=True, text=True)
            nni = json.loads(count.stdout.strip().splitlines()[-1])
            result["nni_space"] = {k: nni[k] for k in ("nni", "lightning", "space_params", "mutables", "samples",
                                                       "networks")}
            result["same_params"] = nni["space_params"] == result["supernet_params"]
            result["same_count"] = nni["networks"] == result["count"]
            print(f"supernet parameters: ours {result['supernet_params']:,}, NNI {nni['space_params']:,}; "
                  f"networks: ours {int(result['count']):.3e}, NNI {int(nni['networks']):.3e} "
                  f"(NNI's samples, counting the choices on unchosen edges: {int(nni['samples']):.3e})", flush=True)
        runs: dict = {side: [] for side in sides}
        for rep in range(args.reps):
            order = sides if rep % 2 == 0 else sides[::-1]
            for side in order:
                runs[side].append(run_side(side, args, data, tmp, rep))
                s = runs[side][-1]
                print(f"rep {rep + 1}/{args.reps} {side}: epochs "
                      + ", ".join(f"{e['wall_s']:.2f}" for e in s["epochs"])
                      + f" s wall; peak RSS {s['peak_rss_kib'] / 1024:.0f} MiB; others kept "
                      f"{s['others_cpu_share']:.0%} of the CPUs busy", flush=True)
    result["runs"] = runs
    if args.probes and not args.ours_only:
        result["nni_probes"] = probes(args)
    result["summary"] = {side: summary(r) for side, r in runs.items()}
    if "nni" in runs:
        o, n = result["summary"]["ours"], result["summary"]["nni"]
        result["ratios_ours_over_nni"] = {k: o[k] / n[k] for k in (
            "epoch_wall_s", "epoch_cpu_s", "first_epoch_wall_s", "peak_rss_mib", "training_rss_mib")}
        r = result["ratios_ours_over_nni"]
        print(f"ours / NNI: s/epoch {r['epoch_wall_s']:.3f} wall, {r['epoch_cpu_s']:.3f} CPU; "
              f"peak RSS {r['peak_rss_mib']:.3f}; RSS added by training {r['training_rss_mib']:.3f}")
    for side, s in result["summary"].items():
        print(f"{side:>9}: {s['epoch_wall_s']:.2f} s/epoch wall ({s['epoch_cpu_s']:.2f} CPU), first epoch "
              f"{s['first_epoch_wall_s']:.2f} s; peak RSS {s['peak_rss_mib']:.0f} MiB "
              f"({s['training_rss_mib']:.0f} MiB added by training)")
    record.write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
