"""Training speed of our trainer against a minimal hand-written PyTorch loop, in the same run.

`nasdsl.runtime.train.train` (arm `ours`) trains a derivation of
spaces/tutorial.nas (the `smallest` preset and one fixed uniform sample) for one
epoch on a Fashion-MNIST subset. The peer (`plain`) is the shortest loop that
trains the same network: plain SGD (no momentum, no weight decay, no schedule),
plain cross-entropy, `randperm` and slicing over the same in-memory tensors, the
same batch size; `ours / plain` is the headline ratio (target >= 0.95). A third
arm (`recipe`) is the same short loop doing what our trainer does per step
(its optimiser with Nesterov momentum and weight decay, the warm-up/cosine
schedule, label smoothing, the running loss and accuracy), so the gap splits
into the price of that recipe (`recipe / plain`) and the trainer's own overhead
(`ours / recipe`).

Every epoch starts from a model compiled fresh from the same seed; the arms take
turns in a rotating order, so a change in the machine's load hits all alike,
and each ratio is the median of the rounds' ratios. What is timed is the same
for every arm: one epoch of training steps, from the `randperm` to the loss
read back at its end. For our trainer that is exactly its own clock
(`TrainResult.train_time`), which leaves out its per-epoch validation and the
copy of the best weights (the whole call is recorded beside it). Each epoch is
timed on the wall clock (images/s as a user sees them) and on the process's
CPU-time clock, which other processes' load disturbs much less on a shared
machine. `--profile` (automatic below the target) adds a cProfile of one epoch of
`ours` and `plain`.

    .venv/bin/python bench/train_throughput.py [--threads 1] [--limit 3000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import record  # bench/record.py, beside this script
import torch
from nasdsl.runtime import data as datasets
from nasdsl.runtime import train as trainer
from nasdsl.runtime.train import TrainConfig, make_optimizer, train, warmup_cosine
from torch import nn

import nasdsl

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "spaces" / "tutorial.nas"
TARGET = 0.95
ARMS = ("ours", "plain", "recipe")


def plain_epoch(module: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, seed: int):
    """(wall, CPU) seconds of one epoch of the minimal loop; the optimiser is built before the clocks start."""
    optimizer = torch.optim.SGD(module.parameters(), lr=config.lr)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    module.train()
    n = len(y)
    start, start_cpu = time.perf_counter(), time.process_time()
    order = torch.randperm(n, generator=shuffle)
    for i in range(0, n, config.batch_size):
        index = order[i:i + config.batch_size]
        loss = loss_fn(module(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    loss.item()
    return time.perf_counter() - start, time.process_time() - start_cpu


def recipe_epoch(module: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, seed: int):
    """(wall, CPU) seconds of one epoch of the minimal loop doing our trainer's per-step work."""
    n = len(y)
    steps = math.ceil(n / config.batch_size)
    optimizer = make_optimizer(module, config, torch.device("cpu"))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, steps, int(config.warmup_epochs * steps)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    shuffle = torch.Generator().manual_seed(seed)
    module.train()
    start, start_cpu = time.perf_counter(), time.process_time()
    order = torch.randperm(n, generator=shuffle)
    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
    for i in range(0, n, config.batch_size):
        index = order[i:i + config.batch_size]
        xb, yb = x[index], y[index]
        logits = module(xb)
        loss = loss_fn(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += loss.detach() * len(yb)
        correct += (logits.argmax(1) == yb).sum()
    loss_sum.item()
    return time.perf_counter() - start, time.process_time() - start_cpu


class BothClocks:
    """Stands in for the `time` module inside runtime/train.py: the trainer reads
    `perf_counter()` exactly where an epoch's timing starts and ends, and this notes
    the process CPU time at the same points, so its own span is read on both clocks."""

    def __init__(self):
        self.cpu: list[float] = []

    def perf_counter(self) -> float:
        self.cpu.append(time.process_time())
        return time.perf_counter()


def ours_epoch(module: nn.Module, data, config: TrainConfig, seed: int) -> tuple[float, float, float]:
    """(wall, CPU) training seconds at the trainer's own clock points, and wall seconds of the whole call."""
    clocks = BothClocks()
    trainer.time, start = clocks, time.perf_counter()
    try:
        result = train(module, data, config, seed=seed, device=torch.device("cpu"))
    finally:
        trainer.time = time
    call = time.perf_counter() - start
    starts, ends = clocks.cpu[0::2], clocks.cpu[1::2]
    assert len(starts) == len(ends) == len(result.epochs), "train() no longer reads its clock twice an epoch"
    return result.train_time, sum(e - s for s, e in zip(starts, ends)), call


def run_arm(arm: str, module: nn.Module, data, config: TrainConfig, seed: int) -> tuple:
    """(wall, CPU, whole-call wall or None) seconds of one epoch of `arm`."""
    if arm == "ours":
        return ours_epoch(module, data, config, seed)
    epoch = plain_epoch if arm == "plain" else recipe_epoch
    return (*epoch(module, data.train.x, data.train.y, config, seed), None)


def measure(space, d, data, config: TrainConfig, rounds: int, seed: int) -> dict:
    n = len(data.train)
    seconds = {clock: {arm: [] for arm in ARMS} for clock in ("wall", "cpu")}
    calls = []
    for arm in ARMS:  # warm-up: first-touch pages, oneDNN's primitive cache
        run_arm(arm, space.compile(d, data.input_shape, seed=seed), data, config, seed)
    for r in range(rounds):
        for arm in ARMS[r % 3:] + ARMS[:r % 3]:
            wall, cpu, call = run_arm(arm, space.compile(d, data.input_shape, seed=seed), data, config, seed)
            seconds["wall"][arm].append(wall)
            seconds["cpu"][arm].append(cpu)
            if call is not None:
                calls.append(call)
    graph = space.graph(d, data.input_shape)
    row = {"derivation": d.text, "params": graph.graph["params"], "macs": graph.graph["macs"]}
    for clock, times in seconds.items():
        rates = {arm: [n / s for s in times[arm]] for arm in ARMS}
        row[clock] = {f"{arm}_images_per_s": statistics.median(rates[arm]) for arm in ARMS}
        for a, b in (("ours", "plain"), ("recipe", "plain"), ("ours", "recipe")):
            ratios = [x / y for x, y in zip(rates[a], rates[b])]
            row[clock][f"{a}_vs_{b}"] = statistics.median(ratios)
            row[clock][f"{a}_vs_{b}_per_round"] = ratios
        row[clock]["all_images_per_s"] = rates
    row["ours_whole_call_images_per_s"] = statistics.median(n / s for s in calls)
    return row


def python_profile(space, d, data, config: TrainConfig, seed: int, top: int = 40) -> dict:
    """cProfile of one epoch of `ours` and of `plain` (after a warm-up epoch each): the
    functions with the most cumulative time, in ms, so a slower trainer shows which of
    its steps costs."""
    out = {}
    for arm in ("ours", "plain"):
        def epoch():
            run_arm(arm, space.compile(d, data.input_shape, seed=seed), data, config, seed)

        epoch()
        profiler = cProfile.Profile()
        profiler.runcall(epoch)
        stats = pstats.Stats(profiler, stream=io.StringIO()).sort_stats("cumulative")
        rows = []
        for func in stats.fcn_list[:top]:
            calls, _, own, cumulative, _ = stats.stats[func]
            rows.append({"function": f"{Path(func[0]).name}:{func[1]}({func[2]})", "calls": calls,
                         "own_ms": round(1e3 * own, 1), "cumulative_ms": round(1e3 * cumulative, 1)})
        out[arm] = rows
    out["note"] = "our arm's whole train() call, so its validation pass (accuracy) and weight copy show too"
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_throughput.json")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: what each of two local workers gets on 2 cores)")
    parser.add_argument("--limit", type=int, default=3000, help="Fashion-MNIST training images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9, help="timed epochs per arm and derivation")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the fixed uniform sample")
    parser.add_argument("--seed", type=int, default=0, help="weights and shuffling seed")
    parser.add_argument("--profile", action="store_true", help="profile even when the target is met")
    args = parser.parse_args(argv)
    if not datasets.FASHION_MNIST_ROOT.exists():  # no silent fallback to digits: the numbers would not compare
        parser.error(f"Fashion-MNIST is not installed ({datasets.FASHION_MNIST_ROOT}); `make debian-packages`")
    torch.set_num_threads(args.threads)

    data = datasets.load("fashion-mnist", limit=args.limit, seed=args.seed)
    space = nasdsl.load(SPACE)
    config = TrainConfig(epochs=1, batch_size=args.batch_size)
    cases = {"smallest": space.preset("smallest"),
             f"sample(seed={args.sample_seed})": space.sample(seed=args.sample_seed)}
    result = {
        "benchmark": "train_throughput", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**record.machine(),
                    "torch_threads": torch.get_num_threads(), "loadavg_before": list(os.getloadavg())},
        "data": {"dataset": data.name, "note": data.note, "train_images": len(data.train),
                 "val_images": len(data.val), "input_shape": list(data.input_shape)},
        "settings": {"epochs_per_measurement": 1, "batch_size": args.batch_size, "rounds": args.rounds,
                     "ours": "train() with TrainConfig defaults: SGD lr 0.1, Nesterov momentum 0.9, weight "
                             "decay 5e-4 (not on 1-d tensors), label smoothing 0.1, warm-up + cosine",
                     "plain": "SGD lr 0.1, no momentum, no weight decay, plain cross-entropy",
                     "recipe": "the plain loop with ours' optimiser, schedule, label smoothing, running loss/acc"},
        "timed": "one epoch of training steps (randperm to the final loss read), validation excluded in "
                 "every arm; on the wall clock and on the process CPU-time clock",
        "target": f"ours_vs_plain >= {TARGET}",
        "results": {},
    }
    print(f"{data.name}: {len(data.train)} training images, batch {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s), {args.rounds} rounds")
    print(f"{'derivation':<16} {'clock':>5} {'ours':>6} {'plain':>6} {'recipe':>6}   {'ours/plain':>10} "
          f"{'recipe/plain':>12} {'ours/recipe':>11}  ours/plain per round")
    for name, d in cases.items():
        row = measure(space, d, data, config, args.rounds, args.seed)
        if args.profile or min(row["wall"]["ours_vs_plain"], row["cpu"]["ours_vs_plain"]) < TARGET:
            row["profile"] = python_profile(space, d, data, config, args.seed)
        result["results"][name] = row
        for clock in ("wall", "cpu"):
            m = row[clock]
            print(f"{name if clock == 'wall' else '':<16} {clock:>5} {m['ours_images_per_s']:>6.0f} "
                  f"{m['plain_images_per_s']:>6.0f} {m['recipe_images_per_s']:>6.0f}   {m['ours_vs_plain']:>10.3f} "
                  f"{m['recipe_vs_plain']:>12.3f} {m['ours_vs_recipe']:>11.3f}  "
                  + " ".join(f"{r:.2f}" for r in m["ours_vs_plain_per_round"]), flush=True)
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    record.write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
