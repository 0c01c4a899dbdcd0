"""OTOv3 (Chen et al., "Towards Automatic Neural Architecture Search within General
Super-Networks", 2023): train any super-network with H2SPG until whole removal
structures are exactly zero, erase them, and keep the compact sub-network; for a
`.nas` space's parallel supernet, also the derivation that sub-network is.

    nasdsl sparsify spaces/superresnet.nas --supernet --target-sparsity 0.5 --store s.db
    nasdsl sparsify torchvision:resnet18 --input-shape 3,32,32 --target-sparsity 0.3 ...
    nasdsl sparsify module:cells.py:SummedCell ...

    load_subject          the network, its graph (compiled, parallel or traced) and its
                          removal structures (`nasdsl.compiler.erasing`)
    sparsify              epochs of H2SPG steps (`runtime/h2spg.py`): warm-up, one
                          hierarchical selection of the redundant groups, then hybrid
                          steps that push them to zero; a checkpoint and a store row
                          (`sparsify`) after every epoch, so a killed run resumes
                          bit-identical
    construct             the selected groups set to zero, batch norm recalibrated, the
                          erased sub-network built and checked against the sparse
                          network (the largest logit gap), both scored; the sub-network
                          saved (`subnet.pt`; for a space `subnet.nas`, a preset line)
                          and the erased structures drawn (`erased.dot`, the report's
                          `erased.png`)
    remainder             the space's derivation nearest the sub-network, and how far it
                          is (0: exactly it)

H2SPG is an optimizer on the shared training loop (`train.run_epoch`); this file only
says what is trained, when it is checkpointed and what is built at the end.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import attrs
import torch
from torch import nn

from nasdsl.compiler.erasing import erased_module, erasing_graph
from nasdsl.compiler.export import to_dot
from nasdsl.language.errors import NasError

from ..data import fitted
from ..h2spg import H2SPG
from ..shrink import alternatives, branches, erase_branches, holding
from ..train import (
    TrainConfig,
    TrialFailed,
    accuracy,
    device_of,
    macs_of,
    on_device,
    on_device_module,
    recalibrate,
    run_epoch,
    seed_everything,
    warmup_cosine,
)
from ..trial import CheckpointError, save_checkpoint
from . import setting

CHECKPOINT = "sparsify.pt"
SUBNET = "subnet.pt"
ERASED_COLOUR = "#f2b8b5"


@attrs.frozen
class Sparsify:
    """The settings of a sparsify run (each a `nasdsl sparsify` flag), kept in its store."""

    target_sparsity: float = setting(0.5, "share of the removal structures to zero (group sparsity), in [0, 1]",
                                     metavar="S")
    warmup: float = setting(0.25, "share of the epochs of plain steps before the redundant groups are chosen",
                            metavar="F")
    lam: float = setting(0.5, "group-lasso push on a redundant group, in units of its norm when chosen (raised while "
                              "the loss pulls it back): --lr times it is the share taken off per step")
    lam_amplify: float = setting(1.1, "how much more than the loss's pull the push becomes")
    lam_max: float = setting(10.0, "the push is at most LAM_MAX times --lam (DHSPG's 10)")
    epsilon: float = setting(0.0, "half-space projection's epsilon, in [0, 1): larger zeroes sooner")
    selection: str = setting("hierarchical", "hierarchical (never an invalid network; H2SPG) or topk (the most "
                                             "redundant, unchecked: the ablation)", choices=("hierarchical", "topk"))
    calibration_batches: int = setting(10, "training batches that re-estimate batch norm once the groups are zero")

    def __attrs_post_init__(self):
        if not 0 <= self.target_sparsity <= 1 or not 0 <= self.warmup < 1:
            raise NasError(f"--target-sparsity must lie in [0, 1] and --warmup in [0, 1); got "
                           f"{self.target_sparsity} and {self.warmup}")
        if self.lam < 0 or self.lam_amplify < 1 or self.lam_max < 1 or not 0 <= self.epsilon < 1:
            raise NasError("--lam must be at least 0, --lam-amplify and --lam-max at least 1, --epsilon in [0, 1)")


# ---- what is sparsified -------------------------------------------------------------------------
@attrs.frozen
class Subject:
    """The network to sparsify: its name, module, removal structures and input shape;
    for a `.nas` space also the space, and the preset derivation compiled (`base`) or
    the parallel supernet (`module` itself, `base` None)."""

    spec: str
    module: nn.Module = attrs.field(repr=False)
    erasing: object = attrs.field(repr=False)
    input_shape: tuple
    space: object = attrs.field(default=None, repr=False)
    base: object = attrs.field(default=None, repr=False)

    @property
    def parallel(self) -> bool:
        return self.space is not None and self.base is None

    def summed_picks(self) -> tuple[dict, set]:
        """({pick path: [(branch, its nodes)]} of the space's summed picks in this
        network, the picks no alternative holds: those must keep a branch)."""
        d = self.module.base if self.parallel else self.base
        graph = self.erasing.graph
        alts = alternatives(self.space, d)
        picks: dict = {}
        for b in branches(graph, d):
            picks.setdefault(b.pick, []).append((b, frozenset(n for n in graph if n.startswith(b.prefix))))
        return picks, {p for p in picks if holding(alts, p) is None}

    def admissible(self):
        """For a space, `names -> bool`: whether the network without them is still one of
        the space's (up to a parallel site that keeps several options): each erased
        structure is a summed pick's branch or a parallel site's option, and every pick
        that no alternative holds keeps a branch (superresnet's stage-first units:
        `branches = 1..4`). The graph alone would allow more (a unit of only its
        shortcut, a unit without its projection). None for a traced model."""
        if self.space is None:
            return None
        picks, must_keep = self.summed_picks()
        branch_nodes = {nodes for members in picks.values() for _, nodes in members}
        erasing = self.erasing

        def admissible(names) -> bool:
            for name in _outermost(erasing, names):
                s = erasing.structures[name]
                if s.gate is None and s.nodes not in branch_nodes:
                    return False
            gone = erasing.removed_nodes(names)
            return all(any(not nodes <= gone for _, nodes in picks[p]) for p in must_keep)

        return admissible


def load_subject(spec: str, input_shape, num_classes: int, *, space=None, supernet: str = "parallel",
                 seed: int = 0) -> Subject:
    """A `space` (a bound Space) as its parallel supernet (`supernet="parallel"`), its
    gates at 1/options (every site the mean of its options: summed at 1, superresnet's
    twelve skip-or-unit slots would double the signal twelve times), or as the preset
    `supernet` names, compiled; else the model `spec` names (`torchvision:NAME`,
    `timm:NAME`, `module:PATH:NAME`) traced on `input_shape`."""
    torch.manual_seed(seed)
    if space is not None and supernet == "parallel":
        from nasdsl.compiler.parallel import ParallelSupernet

        module = ParallelSupernet(space, tuple(input_shape), seed=seed)
        with torch.no_grad():
            for gate in module.gates.values():
                gate.fill_(1.0 / len(gate))
        return Subject(spec, module, erasing_graph(module.network), tuple(module.network.graph["input_shape"]), space)
    if space is not None:
        from nasdsl.compiler.module import build_module

        base = space.preset(supernet)
        graph = space.graph(base, tuple(input_shape))
        return Subject(spec, build_module(graph, seed=seed), erasing_graph(graph), tuple(graph.graph["input_shape"]),
                       space, base)
    from nasdsl.compiler.graph import output_shape
    from nasdsl.compiler.trace import load_model, trace

    module = load_model(spec, num_classes)
    graph = trace(module, torch.zeros(1, *input_shape))
    out = output_shape(graph)
    if tuple(out) != (num_classes,):
        raise NasError(f"{spec} outputs shape {tuple(out)} per image; the data set has {num_classes} classes",
                       hint="make the model end in as many logits as the data set has classes")
    return Subject(spec, module, erasing_graph(graph), tuple(input_shape))


# ---- the training -------------------------------------------------------------------------------
def sparsify(subject: Subject, data, config: TrainConfig, settings: Sparsify, store, *, seed: int = 0,
             reporter=None) -> dict:
    """Train `subject` with H2SPG for `config.epochs` (resuming from the store's
    checkpoint folder where a checkpoint is), then `construct`; returns the result (also
    the store's state `sparsify_result`), and keeps each epoch's row in state `sparsify`."""
    done = store.get_state("sparsify_result")
    if done is not None:
        return done
    data = fitted(data, subject.input_shape)
    device = device_of()
    seed_everything(seed)
    module = on_device_module(subject.module, config, device)
    train_split, val_split = on_device(data.train, device), on_device(data.val, device)
    n = len(train_split.y)
    steps = math.ceil(n / config.batch_size)
    total, warmup = steps * config.epochs, int(config.warmup_epochs * steps)
    optimizer = H2SPG(module, subject.erasing, lr=config.lr, momentum=config.momentum,
                      weight_decay=config.weight_decay, target=settings.target_sparsity,
                      warmup_steps=int(settings.warmup * total), lam=settings.lam, lam_amplify=settings.lam_amplify,
                      lam_max=settings.lam_max, epsilon=settings.epsilon,
                      hierarchical=settings.selection == "hierarchical", admissible=subject.admissible())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    shuffle = torch.Generator(device="cpu").manual_seed(seed)
    calibration = _calibration(train_split, settings.calibration_batches * config.batch_size, config.batch_size, seed)
    checkpoint = store.checkpoint_dir() / CHECKPOINT
    history: list[dict] = []
    if checkpoint.exists():
        history = _resume(checkpoint, module, optimizer, schedule, shuffle)
    for epoch in range(len(history), config.epochs):
        began = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum, correct = run_epoch(module, train_split, order, optimizer, schedule, loss_fn, config.batch_size)
        loss = loss_sum.item() / n
        if not math.isfinite(loss):
            raise TrialFailed(f"the loss became {loss} in epoch {epoch + 1} (try a lower --lr or --lam)")
        recalibrate(module, calibration)  # zeroed groups change what every later batch norm sees
        row = {"epoch": epoch + 1, "loss": loss, "train_acc": correct.item() / n,
               "val_acc": accuracy(module, val_split, config.eval_batch_size),
               "group_sparsity": optimizer.group_sparsity(), "zero_groups": len(optimizer.zero_groups()),
               "redundant": len(optimizer.redundant or ()), "seconds": time.perf_counter() - began}
        history.append(row)
        _save(checkpoint, module, optimizer, schedule, shuffle, history)
        store.set_state("sparsify", history)
        if reporter:
            reporter.note(f"sparsify epoch {row['epoch']}/{config.epochs}: loss {loss:.4f}, val acc "
                          f"{row['val_acc']:.4f}, group sparsity {row['group_sparsity']:.3f} "
                          f"({row['zero_groups']} of {len(optimizer.variables)} groups zero)")
    result = construct(subject, module, optimizer, data, config, settings, store.checkpoint_dir(), seed=seed)
    store.set_state("sparsify_result", result)
    return result


def _save(path: Path, module, optimizer, schedule, shuffle, history) -> None:
    state = {"state": module.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "shuffle": shuffle.get_state(), "torch_rng": torch.get_rng_state(), "history": history}
    try:
        save_checkpoint(state, path)
    except CheckpointError as err:
        raise NasError(f"sparsify stopped after epoch {len(history)}: {err}",
                       hint="free disk space, then run the same command with --resume") from None


def _resume(path: Path, module, optimizer, schedule, shuffle) -> list[dict]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        shuffle.set_state(state["shuffle"])
        torch.set_rng_state(state["torch_rng"])
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise NasError(f"{path}: cannot resume sparsify from this checkpoint ({err})",
                       hint="it belongs to another run, or is damaged: start a new --store") from None
    return state["history"]


# ---- the sub-network ----------------------------------------------------------------------------
def construct(subject: Subject, module, optimizer: H2SPG, data, config: TrainConfig, settings: Sparsify,
              folder: Path, *, seed: int = 0) -> dict:
    """The end of a run (see the module's text); returns its JSON-ready result."""
    erasing = subject.erasing
    projected = len(optimizer.zero)  # the groups the half-space projection zeroed before the end
    optimizer.zero_redundant()
    device = next(module.parameters()).device
    recalibrate(module, _calibration(on_device(data.train, device), settings.calibration_batches * config.batch_size,
                                     config.batch_size, seed))
    names = _outermost(erasing, optimizer.redundant or ())
    verdict = erasing.check(names)
    result = {"model": subject.spec, "input_shape": list(subject.input_shape), "groups": len(optimizer.variables),
              "target_sparsity": settings.target_sparsity, "selection": settings.selection,
              "group_sparsity": optimizer.group_sparsity(), "zero_groups": len(optimizer.zero_groups()),
              "projected": projected, "erased": list(names), "valid": verdict.ok, "reasons": list(verdict.reasons),
              "params_before": sum(p.numel() for p in module.parameters()),
              "macs_before": macs_of(module, input_shape=subject.input_shape),
              "accuracy": {"supernet": _scores(module, data, config)}}
    drawn = {n: ERASED_COLOUR for n in erasing.removed_nodes(names) | set(verdict.emptied)}
    (folder / "erased.dot").write_text(to_dot(erasing.graph, drawn))
    if not verdict.ok:  # the top-K ablation's failure: no sub-network to build
        return result
    module.eval()
    sub = erased_module(erasing, module, names).to(device).eval()
    x = data.val.x[:config.batch_size].to(device)
    with torch.no_grad():
        gap = float((module(x) - sub(x)).abs().max())
    result.update(params_after=sum(p.numel() for p in sub.parameters()),
                  macs_after=macs_of(sub, input_shape=subject.input_shape), output_gap=gap)
    result["accuracy"]["subnet"] = _scores(sub, data, config)
    saved = {"erased": list(names), "state_dict": sub.state_dict(), "input_shape": list(subject.input_shape)}
    if subject.space is not None:
        d, distance = remainder(subject, names)
        result.update(derivation=d.text, distance=distance)
        saved["derivation"] = d.text
        (folder / "subnet.nas").write_text(
            f"# OTOv3's sub-network of space `{subject.space.name}` ({distance} options from it; 0: exactly it);\n"
            f"# its weights are {SUBNET}\npreset subnet = {d.text}\n")
    save_checkpoint(saved, folder / SUBNET)
    return result


def _calibration(split, count: int, batch_size: int, seed: int) -> list:
    """The same `count` training images every time, in batches: what batch norm is
    re-estimated on."""
    picked = torch.randperm(len(split.y), generator=torch.Generator().manual_seed(seed))[:count]
    return [split.x[i.to(split.x.device)] for i in picked.split(batch_size)]


def _scores(module, data, config) -> dict:
    return {"val": accuracy(module, data.val, config.eval_batch_size),
            "test": accuracy(module, data.test, config.eval_batch_size)}


def _outermost(erasing, names) -> tuple:
    """The named structures that no other named one holds."""
    names = set(names)
    inside = set()
    for name in names:
        parent = erasing.structures[name].parent
        while parent is not None:
            if parent in names:
                inside.add(name)
                break
            parent = erasing.structures[parent].parent
    return tuple(n for n in erasing.structures if n in names and n not in inside)


def remainder(subject: Subject, names) -> tuple:
    """The derivation of the subject's space that is the network left after erasing
    `names`, and how far it is: the options its parallel sites add or drop
    (`ParallelSupernet.nearest`; a site left with several options takes one), the
    branches it keeps though they were erased (a pick no alternative holds keeps one),
    and the erased structures no derivation can drop (neither a branch nor an option);
    `admissible` selections leave only the first. A summed pick keeps the branches left
    (superresnet's `branches = 1..4`); one left with none makes the alternative around
    it take its cheapest option (a slot's `skip`, which is what the emptied unit
    computes: relu of its identity shortcut, on non-negative input)."""
    erasing = subject.erasing
    if subject.parallel:
        d, distance = subject.module.nearest(erasing.left(names))
    else:
        d, distance = subject.base, 0
    gone = erasing.removed_nodes(names)
    picks, _ = subject.summed_picks()
    branch_nodes = {nodes for members in picks.values() for _, nodes in members}
    owners = branches(erasing.graph, d)  # the summed picks of the derivation reached so far
    dead = {b for b in owners if {n for n in erasing.graph if n.startswith(b.prefix)} <= gone}
    d, erased = erase_branches(subject.space, d, erasing.graph, owners, dead, mass=lambda b: 0.0)
    loose = [n for n in _outermost(erasing, names)
             if erasing.structures[n].gate is None and erasing.structures[n].nodes not in branch_nodes]
    return d, distance + len(dead - set(erased)) + len(loose)
