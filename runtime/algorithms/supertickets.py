"""SuperTickets (You et al., "SuperTickets: Drawing Task-Agnostic Lottery Tickets from
Supernets via Jointly Architecture Searching and Parameter Pruning", ECCV 2022): one
training of a supernet whose branches run side by side both searches the
architecture and draws its lottery ticket.

    the supernet              the space's preset `supernet` (--base): every branch of
                              every summed pick, e.g. superresnet's four unit branches
    each step                 loss + the FLOPs-aware slimming term on batch-norm scales
                              (--bn-l1, --bn-l1-warmup; runtime/slimming.py), then the
                              weight masks and the masked channels are re-applied
    every --prune-every       global magnitude pruning of every conv and linear weight
      epochs                  to the schedule's sparsity (runtime/sparsity.py):
                              progressive (+--prune-step each time, SuperTickets') or
                              oneshot (all of --sparsity when progressive gets there);
                              --reactivate reset (the released code's reset_mask) or
                              regrow (RigL's gradient criterion, --regrow of the pruned)
    every --shrink-every      dynamic shrinkage (runtime/shrink.py): channels whose
      epochs                  |gamma| fell below --shrink-threshold are masked, branches
                              with none left are erased from the derivation, and the
                              smaller network is rebuilt (masks and weights carried over
                              by provenance and channel position)

The store's state `supertickets` holds one row per epoch (derivation, sparsity, params,
MACs, accuracy; `nasdsl trials --json`), and the checkpoint folder the final ticket:
`superticket.pt` (the derivation, its kept channels, weights and masks:
`load_ticket`) and `superticket.nas` (the derivation as a preset line). Then, as for
every one-shot algorithm, the ticket's derivation is retrained alone for
--retrain-epochs (`--trials 1`): the architecture's quality apart from its ticket.

Each epoch ends with a checkpoint of everything (network, masks, optimizer, schedule,
random streams), so a killed search resumes bit-identical.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import attrs
import torch
from torch import nn

from nasdsl.language.errors import NasError

from ..oneshot import TrainOnce
from ..shrink import Shrunk, build, carry, positions, shrink
from ..slimming import Slimming, penalties
from ..sparsity import Masks, sparsity_at
from ..train import (
    TrialFailed,
    accuracy,
    device_of,
    macs_of,
    make_optimizer,
    on_device,
    on_device_module,
    recalibrate,
    run_epoch,
    seed_everything,
    warmup_cosine,
)
from ..trial import CheckpointError, save_checkpoint
from . import register, setting

CHECKPOINT = "supertickets.pt"
TICKET = "superticket.pt"
SCHEDULES = ("progressive", "oneshot")
REACTIVATIONS = ("none", "reset", "regrow")


@register("supertickets")
@attrs.frozen
class SuperTickets(TrainOnce):
    base: str = setting("supernet", "the supernet: a preset of the space with every branch, `cover` (the space's "
                                    "largest derivation), or a derivation's text", metavar="PRESET")
    sparsity: float = setting(0.5, "unstructured sparsity of the ticket's conv and linear weights, in [0, 1)")
    prune_every: int = setting(2, "epochs between pruning steps")
    prune_step: float = setting(0.1, "sparsity added at each pruning step of the progressive schedule")
    prune_schedule: str = setting("progressive", "progressive (+--prune-step every --prune-every epochs) or oneshot "
                                                 "(all of --sparsity at the step where progressive reaches it)",
                                  choices=SCHEDULES)
    reactivate: str = setting("none", "after each pruning step but the last: none, reset (every weight back: the "
                                      "released code's reset_mask) or regrow (the pruned weights of largest gradient, "
                                      "RigL)", choices=REACTIVATIONS)
    regrow: float = setting(0.1, "share of the pruned weights regrown at each pruning step (--reactivate regrow)")
    shrink_every: int = setting(1, "epochs between shrink steps")
    shrink_threshold: float = setting(1e-2, "|gamma| below which a channel counts as removed")
    calibration_batches: int = setting(10, "training batches that re-estimate batch norm before each evaluation "
                                           "(the network changes too fast for running statistics)")
    shrink_macs: float = setting(0.0, "rebuild the smaller network once the masked channels hold this share of its "
                                      "MACs (an erased branch always rebuilds)")

    def __attrs_post_init__(self):
        self.at_least_one("retrain_epochs", "prune_every", "shrink_every", "calibration_batches")
        if not 0 <= self.sparsity < 1 or not 0 < self.prune_step <= 1 or not 0 <= self.regrow < 1:
            raise NasError(f"--sparsity must lie in [0, 1), --prune-step in (0, 1] and --regrow in [0, 1); got "
                           f"{self.sparsity}, {self.prune_step} and {self.regrow}")
        if self.shrink_threshold < 0 or not 0 <= self.shrink_macs < 1:
            raise NasError("--shrink-threshold must be at least 0 and --shrink-macs in [0, 1)")
        if self.prune_schedule not in SCHEDULES or self.reactivate not in REACTIVATIONS:
            raise NasError(f"--prune-schedule is one of {', '.join(SCHEDULES)} and --reactivate one of "
                           f"{', '.join(REACTIVATIONS)}")

    # ---- the schedule
    @property
    def full_at(self) -> int:
        """The epoch at which the progressive schedule reaches --sparsity (0: no pruning)."""
        return self.prune_every * math.ceil(round(self.sparsity / self.prune_step, 9)) if self.sparsity else 0

    def sparsity_after(self, epoch: int) -> float:
        """The target sparsity after `epoch` (1-based) epochs."""
        if self.prune_schedule == "oneshot":
            return self.sparsity if self.sparsity and epoch >= self.full_at else 0.0
        return min(self.sparsity, sparsity_at(epoch, every=self.prune_every, target=self.sparsity,
                                              step=self.prune_step))

    # ---- the search loop's hooks
    def notes(self, search) -> list[str]:
        notes = []
        if not search.config.train.bn_l1:
            notes.append("supertickets: without --bn-l1 no batch-norm scale is pushed to 0, so nothing is shrunk: "
                         "this is sparse training of the whole supernet (try --bn-l1 1e-3)")
        if self.full_at > search.config.train.epochs:
            notes.append(f"supertickets: --sparsity {self.sparsity} needs {self.full_at} epochs at one "
                         f"{self.prune_step} step every {self.prune_every}; --epochs {search.config.train.epochs} "
                         f"stops at {self.sparsity_after(search.config.train.epochs):.2f}")
        return notes

    def follow(self, search) -> None:
        raise NasError("--algorithm supertickets trains in one process", hint="run it without torchrun")

    def supernet(self, search) -> Shrunk:
        space = search.space
        if self.base == "cover":
            return Shrunk(space.cover()[0])
        if self.base not in space.presets and ("(" in self.base or "=" in self.base):  # a derivation's text
            return Shrunk(space.parse(self.base))
        if self.base not in space.presets:
            raise NasError(f"space `{space.name}` has no preset `{self.base}` to start SuperTickets from",
                           hint=f"give --base one of: {', '.join(space.presets) or 'none'}, cover, or a derivation")
        return Shrunk(space.preset(self.base))

    def run(self, search, net: Shrunk, reporter=None):
        """The joint training, then its derivations ranked by the validation accuracy
        the network had while it was each (the final ticket's last)."""
        history = train_supertickets(self, search, net, reporter)
        score = {}
        for row in history:
            score[row["derivation"]] = max(score.get(row["derivation"], 0.0), row["val_acc"])
        scored = lambda d: score[d.text]  # noqa: E731
        scored.measured = len(history)
        return [search.space.parse(text) for text in reversed(score)], scored

    def prunes_at(self, epoch: int, epochs: int) -> bool:
        """Whether a pruning step follows `epoch` (1-based): the schedule's steps, and
        with --reactivate regrow a swap every --prune-every epochs after them too (but
        not after the last epoch: regrown weights start at 0)."""
        if not self.sparsity or epoch % self.prune_every:
            return False
        if self.prune_schedule == "oneshot" and epoch < self.full_at:
            return False
        return epoch <= self.full_at or (self.reactivate == "regrow" and epoch < epochs)


# ---- the joint training ---------------------------------------------------------------------
class _Network:
    """The network being shrunk: its derivation and channels, module, graph, the
    full-width positions of its tensors, its weight masks and masked channels."""

    def __init__(self, space, shrunk: Shrunk, input_shape, config, device, seed, state=None, masks=None):
        self.space, self.shrunk, self.config, self.device = space, shrunk, config, device
        self.graph, module = build(space, shrunk, input_shape, seed)
        if state is not None:
            module.load_state_dict(state)
        self.module = on_device_module(module, config, device)
        self.at = positions(self.graph, shrunk.keep)
        self.masks = masks or Masks.dense(self.module)
        self.pending: dict = {}  # batch norm -> its local channel indices held at zero until the rebuild

    def rebuilt(self, shrunk: Shrunk, seed) -> "_Network":
        """The network of `shrunk` carrying this one's weights and masks."""
        new = _Network(self.space, shrunk, self.graph.graph["input_shape"], self.config, self.device, seed)
        fresh = new.module.state_dict()
        state = carry(self.module.state_dict(), self.at, new.at, fresh)
        new.module.load_state_dict(state)
        masks = carry({k: m.double() for k, m in self.masks.masks.items()}, self.at, new.at,
                      {k: torch.ones_like(m, dtype=torch.float64) for k, m in new.masks.masks.items()})
        new.masks = Masks({k: m > 0.5 for k, m in masks.items()})
        new.masks.apply(new.module)
        return new

    def mask_channels(self, masked: dict) -> None:
        """Hold the batch norms' `masked` channels (full-width indices) at zero."""
        self.pending = {}
        for node, full in masked.items():
            here = self.at[f"{node}.weight"].tolist()
            local = torch.tensor([here.index(i) for i in full if i in here], dtype=torch.long)
            if len(local):
                self.pending[node] = local
        self.zero_masked()

    @torch.no_grad()
    def zero_masked(self) -> None:
        for node, local in self.pending.items():
            bn = self.module.get_submodule(node)
            bn.weight[local.to(bn.weight.device)] = 0
            bn.bias[local.to(bn.bias.device)] = 0

    def after_step(self) -> None:
        self.masks.apply(self.module)
        self.zero_masked()

    def slimming(self, rho: float, warmup_steps: int) -> Slimming | None:
        if not rho:
            return None
        weights = {node: w[self.at[f"{node}.weight"]] for node, w in penalties(self.graph).items()}
        return Slimming(self.module, weights, rho, warmup_steps)

    def size(self) -> dict:
        params = sum(p.numel() for p in self.module.parameters())
        pruned = sum(int((~m).sum()) for m in self.masks.masks.values())
        return {"params": params, "nonzero_params": params - pruned, "macs": macs_of(self.module, self.graph)}


def _optimizer(net: _Network, config, device, total: int, warmup: int, done_steps: int):
    """A fresh optimizer for a (re)built network, its schedule going on from `done_steps`
    (the optimizer's state is per tensor, and the tensors changed shape)."""
    optimizer = make_optimizer(net.module, config, device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s + done_steps, total, warmup))
    schedule.offset = done_steps  # kept in the checkpoint
    return optimizer, schedule


def train_supertickets(algo: SuperTickets, search, start: Shrunk, reporter=None) -> list[dict]:
    """The joint training (see the module's text); returns the epochs' rows."""
    config, space, data = search.config.train, search.space, search.data
    seed, device = search.config.seed, device_of()
    seed_everything(seed)
    train_split, val_split = on_device(data.train, device), on_device(data.val, device)
    n = len(train_split.y)
    steps = math.ceil(n / config.batch_size)
    total, warmup = steps * config.epochs, int(config.warmup_epochs * steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    shuffle = torch.Generator(device="cpu").manual_seed(seed)
    picked = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    calibration = [train_split.x[index.to(device)]  # the same batches every time
                   for index in picked[:algo.calibration_batches * config.batch_size].split(config.batch_size)]
    checkpoint = search.checkpoint_dir / CHECKPOINT
    history: list[dict] = []
    if checkpoint.exists():
        net, optimizer, schedule, history = _resume(checkpoint, algo, space, data, config, device, seed, shuffle,
                                                    total, warmup, steps)
    else:
        net = _Network(space, start, data.input_shape, config, device, seed)
        optimizer, schedule = _optimizer(net, config, device, total, warmup, 0)
    slim = net.slimming(config.bn_l1, int(config.bn_l1_warmup * steps))
    store = search.store
    for epoch in range(len(history), config.epochs):
        began = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        penalty = (lambda step, first=epoch * steps: slim.loss(first + step)) if slim else None
        loss_sum, correct = run_epoch(net.module, train_split, order, optimizer, schedule, loss_fn,
                                      config.batch_size, penalty=penalty, on_step=net.after_step)
        loss = loss_sum.item() / n
        if not math.isfinite(loss):
            raise TrialFailed(f"the supernet's loss became {loss} in epoch {epoch + 1} (try a lower --lr)")
        done = epoch + 1
        row = {"epoch": done, "loss": loss, "train_acc": correct.item() / n}
        if algo.prunes_at(done, config.epochs):
            net.masks = _pruned(algo, net, algo.sparsity_after(done), last=done >= algo.full_at,
                                 final=done == config.epochs)
            net.masks.apply(net.module)
        row.update(erased=[], masked_channels=0, rebuilt=False)
        if done % algo.shrink_every == 0:
            step = shrink(space, net.shrunk, net.graph, net.module, algo.shrink_threshold, net.at)
            net.mask_channels(step.masked)
            current = macs_of(net.module, net.graph)
            row.update(erased=[b.prefix.rstrip(".") for b in step.erased],
                       masked_channels=sum(len(v) for v in step.masked.values()))
            if step.erased or (step.masked and step.masked_macs >= algo.shrink_macs * current):
                net = net.rebuilt(step.shrunk, seed)
                optimizer, schedule = _optimizer(net, config, device, total, warmup, done * steps)
                slim = net.slimming(config.bn_l1, int(config.bn_l1_warmup * steps))
                row["rebuilt"] = True
        recalibrate(net.module, calibration)
        row.update(val_acc=accuracy(net.module, val_split, config.eval_batch_size), sparsity=net.masks.sparsity(),
                   derivation=net.shrunk.derivation.text, seconds=time.perf_counter() - began, **net.size())
        history.append(row)
        _save(checkpoint, net, optimizer, schedule, shuffle, history)
        store.set_state("supertickets", history)
        if reporter:
            reporter.note(f"supertickets epoch {done}/{config.epochs}: val acc {row['val_acc']:.4f}, sparsity "
                          f"{row['sparsity']:.2f}, {row['macs']:,} MACs, {row['params']:,} params"
                          + (f", erased {len(row['erased'])} branches" if row["erased"] else ""))
    _write_ticket(search, net, history, data)
    return history


def _pruned(algo: SuperTickets, net: _Network, target: float, last: bool, final: bool) -> Masks:
    """The masks of a pruning step to `target` sparsity: with --reactivate regrow a RigL
    swap (unless after the final epoch), with reset every weight back unless it is the
    schedule's last step."""
    if algo.reactivate == "regrow" and not final:
        return net.masks.pruned_and_regrown(net.module, target, algo.regrow)
    masks = net.masks.pruned(net.module, target)
    if algo.reactivate == "reset" and not last:
        masks.apply(net.module)  # the pruned weights restart from 0, free to grow back
        return masks.reset()
    return masks


def _save(path: Path, net: _Network, optimizer, schedule, shuffle, history) -> None:
    state = {"shrunk": net.shrunk.to_json(), "state": net.module.state_dict(), "masks": net.masks.state_dict(),
             "pending": {k: v.tolist() for k, v in net.pending.items()}, "optimizer": optimizer.state_dict(),
             "schedule": schedule.state_dict(), "offset": schedule.offset, "shuffle": shuffle.get_state(),
             "torch_rng": torch.get_rng_state(),
             "history": history}
    try:
        save_checkpoint(state, path)
    except CheckpointError as err:
        raise NasError(f"the search stopped after supertickets epoch {len(history)}: {err}",
                       hint="free disk space, then run the same command with --resume") from None


def _resume(path, algo, space, data, config, device, seed, shuffle, total, warmup, steps):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        history = state["history"]
        net = _Network(space, Shrunk.from_json(space, state["shrunk"]), data.input_shape, config, device, seed,
                       state=state["state"], masks=Masks({k: m.bool() for k, m in state["masks"].items()}))
        net.pending = {k: torch.tensor(v, dtype=torch.long) for k, v in state["pending"].items()}
        optimizer, schedule = _optimizer(net, config, device, total, warmup, state["offset"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        shuffle.set_state(state["shuffle"])
        torch.set_rng_state(state["torch_rng"])
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise NasError(f"{path}: cannot resume supertickets from this checkpoint ({err})",
                       hint="it belongs to another search, or is damaged: start a new --store") from None
    return net, optimizer, schedule, history


# ---- the ticket ---------------------------------------------------------------------------------
def _write_ticket(search, net: _Network, history: list, data) -> None:
    folder = search.checkpoint_dir
    if (folder / TICKET).exists():
        return
    test = accuracy(net.module, on_device(data.test, net.device), search.config.train.eval_batch_size)
    summary = {**{k: history[-1][k] for k in ("val_acc", "sparsity", "params", "nonzero_params", "macs")},
               "test_acc": test, **net.shrunk.to_json(), "ticket": TICKET, "preset": "superticket.nas"}
    save_checkpoint({"shrunk": net.shrunk.to_json(), "state": net.module.state_dict(),
                     "masks": net.masks.state_dict(), "input_shape": list(data.input_shape)}, folder / TICKET)
    (folder / "superticket.nas").write_text(
        f"# SuperTickets' final architecture in space `{search.space.name}` (store {search.store.path.name}); its\n"
        f"# kept channels, weights and masks are {TICKET} (nasdsl.runtime.algorithms.supertickets.load_ticket).\n"
        f"preset superticket = {net.shrunk.derivation.text}\n")
    search.store.set_state("superticket", summary)


def _ticket_state(path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise NasError(f"{path}: cannot load the ticket ({err})",
                       hint="give the superticket.pt of a supertickets search") from None


def ticket_masks(path) -> dict:
    """The weight masks of the ticket saved at `path` (parameter name -> bool tensor)."""
    return {k: m.bool() for k, m in _ticket_state(path)["masks"].items()}


def load_ticket(space, path) -> nn.Module:
    """The ticket module saved at `path` (`superticket.pt`): the derivation compiled,
    cut to its kept channels, with its weights; its pruned weights are zero."""
    state = _ticket_state(path)
    try:
        shrunk = Shrunk.from_json(space, state["shrunk"])
        _, module = build(space, shrunk, tuple(state["input_shape"]), seed=None)
        module.load_state_dict(state["state"])
    except (RuntimeError, KeyError) as err:
        raise NasError(f"{path}: cannot load the ticket into space `{space.name}` ({err})",
                       hint="give the space the supertickets search ran on") from None
    Masks(ticket_masks(path)).apply(module)
    return module
