"""NNI 3.0's RandomOneShot on bench/spaces/oneshot_cell.nas, written as an NNI ModelSpace.

Run by bench/oneshot_nni.py in a venv of NNI's own (torch 2.14.1, nni 3.0,
pytorch-lightning), never in the project's `.venv`; it imports nothing from nasdsl.

    /work/nni-venv/bin/python bench/peers/nni_random_oneshot.py --data DATA.pt --out OUT.json
    /work/nni-venv/bin/python bench/peers/nni_random_oneshot.py --count     # sizes only, no training

The space, node for node the same as the .nas file: a stem (3x3 conv, BN) whose output
feeds both inputs of the first cell; `cells` cells, each preparing its two inputs
(k2, k1) with a 1x1 ReLU-conv-BN and holding 3 nodes; node j sums the operations on 2
of its candidate edges (an InputChoice with n_chosen=2 and sum), each candidate edge a
LayerChoice of the 6 operations with weights of its own; the cell's output concatenates
its nodes; then global average pooling and a linear layer.

A node's candidate edges are handed to its InputChoice as a lazy sequence that runs an
edge when the choice reads it (`_Edges`), so only the 2 sampled edges of a node are
computed, as in nasdsl's supernet. `--eager-edges` instead runs every candidate edge and
lets the InputChoice drop the unchosen ones, the plain way to write it (3 of a cell's
9 edges are then computed for nothing).

Timing is inside one Lightning fit: a callback notes the wall clock and the process's
CPU time at the start of every training epoch and after every training batch; an
epoch's time runs from its start to the end of its last batch, so it holds the
DataLoader's batches, RandomOneShot's resampling, forward, loss, the evaluator's
accuracy metric and logging, backward, the SGD step, and Lightning's per-batch hooks.
Import, the model space, NNI's supernet conversion and the Trainer's setup are left
out. Validation is switched off (`limit_val_batches=0`, no sanity check), so there is
none to leave out. Memory: the process's resident-set high-water mark
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`, KiB on Linux) at the end, and the
resident set just before `fit` (VmRSS), the same reading bench/oneshot_nni.py takes
for nasdsl.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence

T0 = time.perf_counter()
warnings.filterwarnings("ignore")

import nni  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace  # noqa: E402

OPS = ("sep_conv_3x3", "conv_3x3", "conv_5x5", "max_pool_3x3", "avg_pool_3x3", "skip_connect")
NODES = 3  # per cell
IMPORT_S = time.perf_counter() - T0


def relu_conv_bn(c_in: int, c: int, k: int) -> nn.Module:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c))


def op(name: str, c: int) -> nn.Module:
    if name == "sep_conv_3x3":  # nasdsl's sepconv: depthwise then pointwise, no bias, nothing between
        return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                             nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
    if name == "conv_3x3":
        return relu_conv_bn(c, c, 3)
    if name == "conv_5x5":
        return relu_conv_bn(c, c, 5)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    return nn.Identity()


class _Edges(Sequence):
    """A node's candidate edges, each run on its input when first read."""

    def __init__(self, edges, states):
        self.edges, self.states, self.done = edges, states, {}

    def __len__(self):
        return len(self.edges)

    def __getitem__(self, i):
        if i not in self.done:
            self.done[i] = self.edges[i](self.states[i])
        return self.done[i]


class Cell(nn.Module):
    def __init__(self, label: str, c_k2: int, c_k1: int, c: int, eager: bool):
        super().__init__()
        self.eager = eager
        self.p0, self.p1 = relu_conv_bn(c_k2, c, 1), relu_conv_bn(c_k1, c, 1)
        self.edges = nn.ModuleList()
        self.inputs = nn.ModuleList()
        for j in range(NODES):
            n = j + 2  # candidates: p0, p1 and the nodes before
            self.edges.append(nn.ModuleList(
                LayerChoice({name: op(name, c) for name in OPS}, label=f"{label}_n{j + 2}_e{i}") for i in range(n)))
            self.inputs.append(InputChoice(n, n_chosen=2, reduction="sum", label=f"{label}_n{j + 2}_pick"))

    def forward(self, k2, k1):
        states = [self.p0(k2), self.p1(k1)]
        for edges, pick in zip(self.edges, self.inputs):
            candidates = [e(s) for e, s in zip(edges, states)] if self.eager else _Edges(edges, states)
            states.append(pick(candidates))
        return k1, torch.cat(states[2:], 1)


class OneshotCell(ModelSpace):
    def __init__(self, C: int = 16, cells: int = 3, num_classes: int = 10, eager: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        widths, blocks = (C, C), []
        for i in range(cells):
            blocks.append(Cell(f"cell{i}", widths[0], widths[1], C, eager))
            widths = (widths[1], NODES * C)
        self.cells = nn.ModuleList(blocks)
        self.head = nn.Linear(widths[1], num_classes)

    def forward(self, x):
        k2 = k1 = self.stem(x)
        for cell in self.cells:
            k2, k1 = cell(k2, k1)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(k1, 1), 1))


def counts(space: ModelSpace) -> dict:
    """What NNI's own description of the space gives: its mutables, and the product of their sizes
    (the number of distinct samples), beside the number of distinct networks."""
    mutables = space.simplify()
    samples, networks = 1, 1
    for m in mutables.values():
        size = math.comb(len(m.values), m.n_chosen) if hasattr(m, "n_chosen") and m.n_chosen else len(m.values)
        samples *= size
    # distinct networks: only the 2 chosen edges of a node decide anything
    for label, m in mutables.items():
        if label.endswith("_pick"):
            networks *= math.comb(len(m.values), m.n_chosen) * len(OPS) ** m.n_chosen
    return {"mutables": len(mutables), "samples": str(samples), "networks": str(networks)}


def rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class EpochClock(pl.Callback):
    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, module):
        self.start = (time.perf_counter(), time.process_time())
        self.last = self.start
        self.steps = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.last = (time.perf_counter(), time.process_time())
        self.steps += 1

    def on_train_epoch_end(self, trainer, module):
        loss = trainer.callback_metrics.get("train_loss")
        self.epochs.append({"wall_s": self.last[0] - self.start[0], "cpu_s": self.last[1] - self.start[1],
                            "steps": self.steps, "last_loss": None if loss is None else float(loss)})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a .pt file of {'x', 'y'} training tensors (bench/oneshot_nni.py writes it)")
    parser.add_argument("--out", help="where the JSON result goes (else stdout)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--cells", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eager-edges", action="store_true")
    parser.add_argument("--count", action="store_true", help="print the space's sizes and exit")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)

    space = OneshotCell(args.channels, args.cells, eager=args.eager_edges)
    result = {"peer": "nni", "nni": nni.__version__, "torch": torch.__version__, "lightning": pl.__version__,
              "import_s": IMPORT_S, "eager_edges": args.eager_edges, "threads": args.threads,
              "space_params": sum(p.numel() for p in space.parameters()), **counts(space)}
    if args.count:
        print(json.dumps(result))
        return 0

    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.experiment import NasExperiment
    from nni.nas.strategy import RandomOneShot
    from torch.utils.data import TensorDataset

    data = torch.load(args.data)
    train = nni.trace(TensorDataset)(data["x"], data["y"])
    val = nni.trace(TensorDataset)(data["x"][:args.batch], data["y"][:args.batch])  # required, never run
    clock = EpochClock()
    evaluator = Classification(
        criterion=nn.CrossEntropyLoss, learning_rate=args.lr, weight_decay=0.0, optimizer=torch.optim.SGD,
        train_dataloaders=DataLoader(train, batch_size=args.batch, shuffle=True),
        val_dataloaders=DataLoader(val, batch_size=args.batch), max_epochs=args.epochs, num_classes=10,
        accelerator="cpu", devices=1, enable_progress_bar=False, logger=False, enable_checkpointing=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock])
    experiment = NasExperiment(space, evaluator, RandomOneShot())
    with tempfile.TemporaryDirectory(prefix="nni-experiment-") as workdir:  # not ~/nni-experiments
        experiment.config.experiment_working_directory = workdir
        result["rss_before_fit_kib"] = rss_kib()
        start = time.perf_counter()
        experiment.run()
        result["run_s"] = time.perf_counter() - start
        experiment.stop()  # now, not at exit, when it would write its checkpoint into the removed folder
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["supernet_params"] = sum(p.numel() for p in space.parameters())
    result["epochs"] = clock.epochs
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
