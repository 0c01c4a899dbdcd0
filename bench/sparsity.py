"""Unstructured pruning during training, at an equal number of epochs (issue 17's
ablations, on one stand-alone network before the supernet): progressive against
one-shot magnitude pruning to the same sparsity, and progressive with reactivation.

One nb201 network (every edge `nor_conv_3x3`, the space's largest: C=8, N=1, on
1x28x28 Fashion-MNIST) is trained `--epochs` epochs per arm and seed, the masks
(`runtime/sparsity.py`) re-applied after every optimizer step:

    dense         no pruning (the reference)
    one-shot      pruned to --sparsity after epoch 1, trained on
    progressive   +--step every epoch until --sparsity (SuperTickets' schedule), trained on
    regrow        progressive, each step a RigL swap: --regrow of the pruned count pruned
                  further by magnitude, as many regrown by gradient (the criterion
                  SuperTickets' released code leaves out)

Every pruning arm ends at exactly --sparsity of the conv and linear weights. Reported:
the last epoch's validation accuracy and the test accuracy of the final weights
(not train()'s best epoch, which may be an earlier, denser one).

    .venv/bin/python bench/sparsity.py [--seeds 3] [--epochs 6] [--sparsity 0.6] [--step 0.15] [--limit 4000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import record  # bench/record.py, beside this script
import torch
from nasdsl.runtime.data import FASHION_MNIST_ROOT, load
from nasdsl.runtime.search import bind_to_data
from nasdsl.runtime.sparsity import Masks, sparsity_at
from nasdsl.runtime.train import TrainConfig, accuracy, train

import nasdsl

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("dense", "one-shot", "progressive", "regrow")
LARGEST = "(cell=(x1=(op=nor_conv_3x3), x2=(op1=nor_conv_3x3, op2=nor_conv_3x3), " \
          "x3=(op1=nor_conv_3x3, op2=nor_conv_3x3, op3=nor_conv_3x3)))"


def run(arm: str, seed: int, space, data, args) -> dict:
    d = space.parse(LARGEST)
    module = space.compile(d, data.input_shape, seed=seed)
    holder = {"masks": Masks.dense(module)}
    final: dict = {}

    def target(epoch: int) -> float:
        if arm == "one-shot":
            return args.sparsity if epoch >= 1 else 0.0
        return sparsity_at(epoch, every=1, target=args.sparsity, step=args.step) if arm != "dense" else 0.0

    def on_epoch(e):
        wanted = target(e.epoch)
        masks = holder["masks"]
        if wanted > masks.sparsity() + 1e-9:
            holder["masks"] = (masks.pruned_and_regrown(module, wanted, args.regrow) if arm == "regrow"
                               else masks.pruned(module, wanted))
            holder["masks"].apply(module)
        if e.epoch == args.epochs:  # train() returns its best epoch's weights; these are the last
            final["state"] = {k: v.detach().clone() for k, v in module.state_dict().items()}
            final["val_acc"] = e.val_acc

    start = time.perf_counter()
    train(module, data, TrainConfig(epochs=args.epochs, batch_size=args.batch_size), seed=seed,
          on_epoch=on_epoch, on_step=lambda: holder["masks"].apply(module))
    module.load_state_dict(final["state"])
    return {"arm": arm, "seed": seed, "sparsity": holder["masks"].sparsity(), "last_val_acc": final["val_acc"],
            "test_acc": accuracy(module, data.test), "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/sparsity.json "
                                                                 "(sparsity_quick.json with --quick)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--sparsity", type=float, default=0.6)
    parser.add_argument("--step", type=float, default=0.15, help="progressive: sparsity added per epoch")
    parser.add_argument("--regrow", type=float, default=0.1, help="regrow: share of the pruned swapped per step")
    parser.add_argument("--limit", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, 400 images")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.limit, args.step = 1, 2, 400, args.sparsity
    args.out = args.out or ROOT / "bench" / "results" / f"sparsity{'_quick' if args.quick else ''}.json"
    if not FASHION_MNIST_ROOT.exists():
        parser.error(f"Fashion-MNIST is not installed ({FASHION_MNIST_ROOT}); `make debian-packages`")
    torch.set_num_threads(args.threads)
    data = load("fashion-mnist", limit=args.limit, seed=0, val_fraction=0.2)
    space = bind_to_data(nasdsl.load(ROOT / "spaces" / "nb201.nas", {"C": 8, "N": 1}), data, {})
    result = {"benchmark": "sparsity", "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": {**record.machine(), "loadavg_before": list(os.getloadavg())},
              "settings": {**{k: v for k, v in vars(args).items() if k != "out"}, "derivation": LARGEST,
                           "space": "spaces/nb201.nas", "params": {"C": 8, "N": 1}}, "runs": []}
    for seed in range(args.seeds):
        for arm in ARMS:
            r = run(arm, seed, space, data, args)
            result["runs"].append(r)
            print(f"seed {seed} {arm:<12} sparsity {r['sparsity']:.3f}  last val {r['last_val_acc']:.4f}  "
                  f"test {r['test_acc']:.4f}  {r['seconds']:.0f} s", flush=True)
    summary = {}
    for arm in ARMS:
        rows = [r for r in result["runs"] if r["arm"] == arm]
        test = [r["test_acc"] for r in rows]
        summary[arm] = {"test_acc_mean": statistics.mean(test),
                        "test_acc_std": statistics.stdev(test) if len(test) > 1 else None,
                        "sparsity": statistics.mean(r["sparsity"] for r in rows)}
        print(f"{arm:<12} test {summary[arm]['test_acc_mean']:.4f}"
              + (f" ± {summary[arm]['test_acc_std']:.4f}" if summary[arm]["test_acc_std"] is not None else ""))
    result["summary"] = summary
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    record.write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
