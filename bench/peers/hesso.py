"""HESSO (only-train-once 3.0.1) on a super-network: what it prunes. The network is
nasdsl's SuperResNet (`--model superresnet`, the default), or any model
`nasdsl.compiler.trace.load_model` loads (`torchvision:NAME`, `module:PATH:NAME`).

Runs in the peer venv, never in the project's `.venv` (recipe: ../shared/peers/README.md,
"only-train-once 3.0.1"; nasdsl goes in with `pip install --no-deps -e /work/main` plus
its pure-python dependencies, so torch stays 2.14.1):

    /tmp/oto-venv/bin/python bench/peers/hesso.py --data DATA.pt --out OUT.json
    /tmp/oto-venv/bin/python bench/peers/hesso.py --data DATA.pt --out OUT.json \\
        --epochs 2 --C 8 --threads 1
    /tmp/oto-venv/bin/python bench/peers/hesso.py --model torchvision:resnet18 --data DATA.pt ...

DATA.pt is a `torch.save`d dict of already-normalised tensors: train_x [N,C,H,W] float
(the model's input shape), train_y [N] int64, val_x, val_y. A model OTO cannot handle
(its graph, its optimizer or its construction raising) is written as {"error": ...}.

The network is spaces/superresnet.nas bound to (C, blocks, in_channels=1, resolution=28,
num_classes=10), preset `supernet` (every unit holds all four branches basic, bottleneck,
sep5, dil3, summed with the shortcut), compiled by nasdsl to a torch.fx GraphModule.
OTO builds its pruning-dependency graph from that module, and HESSO (its SGD variant)
trains it with cross-entropy (label smoothing 0.1, as nasdsl's trainer), shuffled
mini-batches from a torch.Generator seeded with --seed, constant learning rate, momentum
0.9 and weight decay 5e-4 on every parameter (HESSO's own weight decay; nasdsl's trainer
exempts biases and batch-norm and uses Nesterov with a cosine schedule, this does not).

HESSO's schedule. `--start-pruning-step`, `--pruning-steps` take either an integer (a
step count) or a fraction of the total number of optimizer steps (`0.5` or `1/6`), so
the defaults scale with --epochs: pruning starts after 1/6 of the steps and runs over the
next 1/2 of them in `--pruning-periods` 3 periods (each zeroes a third of the target
groups, ramping their weights down over the period); the last third of training is
fine-tuning of what is left. Both are rounded to whole steps and kept >= 1.

What is measured and written to --out (JSON):
  - per epoch: mean training loss and validation accuracy of the network under training
    (eval mode); wall time and process CPU time (time.process_time) of each epoch's
    training loop, and their totals; HESSO's group sparsity at the end.
  - OTO's groups: how many prunable channel groups and channels there are, and the
    target number of zeroed channels.
  - after `oto.construct_subnet`: the full group-sparse model and the compressed model,
    each loaded back from OTO's files: validation accuracy, parameters (sum of numel),
    MACs (torch.utils.flop_counter.FlopCounterMode's total on one 1x1x28x28 input, / 2;
    it counts convolutions and matrix products, not batch-norm or additions), and the
    largest |full - compressed| logit on the first 16 validation images.
  - branch survival: a branch is a distinct module prefix matched by --branches (default
    `<...>.pick.<label>`, superresnet's) of the original network. For each, the out_channels of each of its convolutions originally
    and in the compressed model; `removed` when the prefix is gone from the compressed
    model or one of its convolutions kept 0 output or 0 input channels. Also, as a
    functional check, the spread (std over images, positions and channels) of the
    branch's output (its last module's output) in the compressed model on 64 validation
    images: a branch reduced to a constant has spread 0 even if its modules remain.
    The counts: branches in total, removed, and constant.

A one-line summary is printed at the end.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import re
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPACE = ROOT / "spaces" / "superresnet.nas"
OTO_SHIM = Path("/work/shared/peers/oto")

sys.path.insert(0, str(OTO_SHIM))
import oto_compat  # noqa: E402,F401  (must precede only_train_once: torch 2.14 moved the ONNX internals it uses)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from only_train_once import OTO  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import nasdsl  # noqa: E402

BRANCH = r"^(.*\.pick\.[^.]+)\."
INPUT_SHAPE = (1, 28, 28)  # superresnet's; another model takes the data's shape


def steps_arg(text: str):
    """An integer is a step count; a decimal or `a/b` is a fraction of the total steps."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    value = Fraction(text)  # accepts "1/6" and "0.5"
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a fraction of the steps must be in [0, 1], not {text}")
    return float(value)


def resolve_steps(value, total: int) -> int:
    steps = value if isinstance(value, int) else round(value * total)
    return max(1, steps)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="superresnet", help="superresnet, torchvision:NAME or module:PATH:NAME")
    p.add_argument("--branches", default=BRANCH, help="regex whose group 1 is a branch's module prefix")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--target-group-sparsity", type=float, default=0.5)
    p.add_argument("--start-pruning-step", type=steps_arg, default=steps_arg("1/6"))
    p.add_argument("--pruning-steps", type=steps_arg, default=steps_arg("1/2"))
    p.add_argument("--pruning-periods", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def build_supernet(C: int, blocks: int, seed: int) -> nn.Module:
    space = nasdsl.load(str(SPACE)).bind(C=C, blocks=blocks, in_channels=1, resolution=28, num_classes=10)
    return space.compile(space.preset("supernet"), INPUT_SHAPE, seed=seed)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(model: nn.Module) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *INPUT_SHAPE))
    return counter.get_total_flops() // 2


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


def branch_convs(model: nn.Module) -> dict[str, list[tuple[str, nn.Conv2d]]]:
    """Each branch prefix -> its convolutions (name below the prefix, module), in order."""
    out: dict[str, list] = {}
    for name, module in model.named_modules():
        m = re.match(BRANCH, name + ".")
        if m:
            convs = out.setdefault(m.group(1), [])
            if isinstance(module, nn.Conv2d):
                convs.append((name[len(m.group(1)) + 1:], module))
    return out


@torch.no_grad()
def branch_spread(model: nn.Module, prefixes: list[str], x: torch.Tensor) -> dict[str, float]:
    """Std of each branch's output (its last leaf module under the prefix) on `x`."""
    modules = dict(model.named_modules())
    spread, hooks = {}, []
    for prefix in prefixes:
        leaves = [n for n, m in modules.items() if n.startswith(prefix + ".") and not list(m.children())]
        if not leaves:
            continue

        def hook(_m, _inp, out, prefix=prefix):
            spread[prefix] = out.float().std().item() if out.numel() > 1 else 0.0

        hooks.append(modules[leaves[-1]].register_forward_hook(hook))
    model.eval()
    model(x)
    for h in hooks:
        h.remove()
    return spread


def group_summary(oto: OTO) -> dict:
    groups = [g for g in oto._graph.get_param_groups() if g["is_prunable"] and not g["is_auxiliary"]]
    sizes = [g["num_groups"] for g in groups]
    return {"prunable_groups": len(groups), "prunable_channels": sum(sizes), "group_sizes": sorted(sizes)}


def main(argv=None) -> dict:
    global BRANCH
    args = parse_args(argv)
    BRANCH = args.branches
    try:
        return run(args)
    except Exception as err:  # what HESSO cannot do is a result, not a crash of the benchmark
        result = {"peer": "only-train-once HESSO", "model": args.model, "error": f"{type(err).__name__}: {err}"}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"HESSO {args.model}: failed: {result['error']}")
        return result


def run(args) -> dict:
    global INPUT_SHAPE
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    data = torch.load(args.data, weights_only=True)
    train_x, train_y = data["train_x"].float(), data["train_y"].long()
    val_x, val_y = data["val_x"].float(), data["val_y"].long()
    n_train = len(train_x)
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    total_steps = args.epochs * steps_per_epoch
    start = resolve_steps(args.start_pruning_step, total_steps)
    pruning_steps = resolve_steps(args.pruning_steps, total_steps)
    periods = max(1, min(args.pruning_periods, pruning_steps))

    INPUT_SHAPE = tuple(train_x.shape[1:])
    if args.model == "superresnet":
        model = build_supernet(args.C, args.blocks, args.seed)
    else:
        from nasdsl.compiler.trace import load_model

        model = load_model(args.model, 10)
    original = {p: [(n, c.in_channels, c.out_channels) for n, c in convs] for p, convs in branch_convs(model).items()}
    full_params_before = n_params(model)

    t = time.perf_counter()
    oto = OTO(model, torch.zeros(1, *INPUT_SHAPE))
    graph_s = time.perf_counter() - t
    groups = group_summary(oto)
    opt = oto.hesso(variant="sgd", lr=args.lr, first_momentum=args.momentum, weight_decay=args.weight_decay,
                    target_group_sparsity=args.target_group_sparsity, start_pruning_step=start,
                    pruning_steps=pruning_steps, pruning_periods=periods)
    groups["target_zero_channels"] = opt.target_num_redundant_groups

    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    gen = torch.Generator().manual_seed(args.seed)
    epochs = []
    for epoch in range(args.epochs):
        model.train()  # OTO leaves the model in eval mode, and accuracy() sets it too
        order = torch.randperm(n_train, generator=gen)
        loss_sum, wall0, cpu0 = 0.0, time.perf_counter(), time.process_time()
        for i in range(0, n_train, args.batch_size):
            idx = order[i:i + args.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(train_x[idx]), train_y[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        sparsity = opt.compute_group_sparsity_param_norm()[0]
        epochs.append({"epoch": epoch + 1, "train_loss": round(loss_sum / n_train, 4),
                       "val_acc": round(accuracy(model, val_x, val_y), 4),
                       "group_sparsity": round(sparsity, 4), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)})
        print(json.dumps(epochs[-1]), flush=True)

    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        oto.construct_subnet(out_dir=tmp)
        construct_s = time.perf_counter() - t
        full = torch.load(oto.full_group_sparse_model_path, weights_only=False).eval()
        small = torch.load(oto.compressed_model_path, weights_only=False).eval()

    with torch.no_grad():
        probe = val_x[:16]
        max_diff = (full(probe) - small(probe)).abs().max().item()

    kept = branch_convs(small)
    spread = branch_spread(small, list(original), val_x[:64])
    branches = {}
    for prefix, convs in original.items():
        now = {n: (c.in_channels, c.out_channels) for n, c in kept.get(prefix, [])}
        convs_out = [{"conv": n, "in": now.get(n, (0, 0))[0], "out": now.get(n, (0, 0))[1],
                      "in_original": cin, "out_original": cout} for n, cin, cout in convs]
        removed = prefix not in kept or any(c["out"] == 0 or c["in"] == 0 for c in convs_out)
        branches[prefix] = {
            "label": prefix.rsplit(".", 1)[1],
            "removed": removed,
            "first_conv_kept": convs_out[0]["out"], "first_conv_original": convs_out[0]["out_original"],
            # the widths inside the branch: every conv's output but the last (which is the unit's width)
            "inner_kept": [c["out"] for c in convs_out[:-1]] or [convs_out[0]["in"]],
            "inner_original": [c["out_original"] for c in convs_out[:-1]] or [convs_out[0]["in_original"]],
            "output_std": round(spread.get(prefix, 0.0), 5),
            "convs": convs_out,
        }

    by_label: dict[str, dict] = {}
    for b in branches.values():
        s = by_label.setdefault(b["label"], {"branches": 0, "removed": 0, "inner_kept": 0, "inner_original": 0})
        s["branches"] += 1
        s["removed"] += b["removed"]
        s["inner_kept"] += sum(b["inner_kept"])
        s["inner_original"] += sum(b["inner_original"])

    full_p, small_p = n_params(full), n_params(small)
    full_m, small_m = macs(full), macs(small)
    result = {
        "peer": "only-train-once HESSO",
        "model": args.model,
        "versions": {"torch": torch.__version__, "only_train_once": importlib.metadata.version("only-train-once"),
                     "python": sys.version.split()[0]},
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "n_train": n_train, "n_val": len(val_x), "steps_per_epoch": steps_per_epoch,
                     "total_steps": total_steps, "start_pruning_step_resolved": start,
                     "pruning_steps_resolved": pruning_steps, "pruning_periods_resolved": periods,
                     "optimizer": "HESSO sgd, constant lr"},
        "oto_groups": groups,
        "graph_build_s": round(graph_s, 2),
        "construct_subnet_s": round(construct_s, 2),
        "epochs": epochs,
        "train_wall_s": round(sum(e["wall_s"] for e in epochs), 2),
        "train_cpu_s": round(sum(e["cpu_s"] for e in epochs), 2),
        "final_group_sparsity": epochs[-1]["group_sparsity"] if epochs else None,
        "full": {"val_acc": round(accuracy(full, val_x, val_y), 4), "params": full_p, "macs": full_m},
        "compressed": {"val_acc": round(accuracy(small, val_x, val_y), 4), "params": small_p, "macs": small_m},
        "params_before_training": full_params_before,
        "param_ratio": round(small_p / full_p, 4),
        "mac_ratio": round(small_m / full_m, 4),
        "max_abs_logit_diff": max_diff,
        "branches_total": len(branches),
        "branches_removed": sum(b["removed"] for b in branches.values()),
        "branches_constant": sum(b["output_std"] < 1e-6 for b in branches.values()),
        "branches_by_label": by_label,
        "branches": branches,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"HESSO {args.model} epochs={args.epochs}: "
          f"val acc full {result['full']['val_acc']:.3f} / compressed {result['compressed']['val_acc']:.3f}, "
          f"params {full_p} -> {small_p} ({result['param_ratio']:.1%}), MACs {full_m} -> {small_m} "
          f"({result['mac_ratio']:.1%}), branches removed {result['branches_removed']}/{len(branches)}, "
          f"max |diff| {max_diff:.2e}, train {result['train_wall_s']:.0f} s wall")
    return result


if __name__ == "__main__":
    main()
