"""The one-shot runtime: train one supernet, rank derivations on its shared weights,
retrain the best alone.

    OneShot.prepare(search)        before the search loop proposes anything
      ├─ train_supernet            epochs of single-path steps, one derivation per step from
      │                            the algorithm's `sampler`; after every epoch a checkpoint
      │                            (bank, optimizer, schedule, every random stream), so a
      │                            search killed at any instant resumes bit-identical
      ├─ algorithm.rank(...)       shared-weight accuracies (`SharedWeights`), each kept as
      │                            an `evaluations` row of the store
      └─ the ranking, kept in the store
    Search.run                     the ranking's first --trials derivations, retrained
                                   stand-alone as ordinary trials (pool or Ray executors)

An algorithm is one file: a subclass of `OneShot` giving `rank` (the search over
shared-weight accuracy) and, where it trains differently, `sampler` or `run` (NAO-V2's
phases). `OneShot` is a `TrainOnce`: one training before any trial, then its ranking's
first --trials retrained; an algorithm that trains something other than a shared-weight
bank (SuperTickets' network of summed branches, which shrinks and is pruned as it goes)
subclasses `TrainOnce` itself and gives `run`. Supernet training runs data-parallel under `torchrun` (`Ranks`): every rank
takes the lead's derivation and its share of each batch, and the summed gradients make
each step the global batch's step.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from pathlib import Path

import attrs
import torch
from torch import nn

from nasdsl.compiler.supernet import DEFAULT_MAX_PARAMS, Supernet
from nasdsl.language.errors import NasError

from .algorithms import Algorithm, setting
from .data import Split
from .propose import Proposal
from .train import TrainConfig, TrialFailed, device_of, make_optimizer, seed_everything, warmup_cosine
from .trial import CheckpointError, save_checkpoint

PHASE = "supernet"  # the single phase's name, and its checkpoint's, in the store's checkpoint folder
CHECKPOINT = f"{PHASE}.pt"
BN_METHODS = ("recalibrate", "train", "running")
SAMPLINGS = ("uniform", "params")


@attrs.frozen
class SupernetEpoch:
    epoch: int
    loss: float  # mean training loss over the epoch's steps (each its own derivation)
    acc: float  # training accuracy of those steps
    lr: float  # at the epoch's end
    seconds: float


# ---- the processes that train one supernet ----------------------------------------------------
@attrs.frozen
class Ranks:
    """The processes training one supernet with torch.distributed, or this one alone."""

    rank: int = 0
    world: int = 1

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        """Leave the process group once the supernet is trained: a rank that exits while
        gloo's threads still run aborts, and torchrun then stops the others."""
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def end_follower() -> None:
    """End a rank other than the lead once it has left the process group: its work is in
    the lead's hands. The process exits without the interpreter's finalization, in which
    gloo's worker threads can still abort it ("terminate called without an active
    exception", seen about once in ten runs on a loaded machine even after
    `destroy_process_group`), and torchrun would then stop the lead."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def ranks_from_environment() -> Ranks:
    """The ranks `torchrun` started (WORLD_SIZE, RANK), joined in one process group: gloo
    on CPU, NCCL on GPUs (one per rank, by LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def _broadcast(value, ranks: Ranks):
    """The lead's `value` on every rank (a derivation's text, a message)."""
    if ranks.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _sum_gradients(net: Supernet, d, ranks: Ranks) -> None:
    """All-reduce (sum) the gradients of the bank tensors `d` uses; a rank whose share
    of the batch was empty contributes zeros."""
    import torch.distributed as dist

    params = _used_parameters(net, d)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g)
        offset += g.numel()


def _used_parameters(net: Supernet, d) -> list:
    seen, used = set(), []
    for call in net.program(d):
        for _, _, is_buffer, key, _, _ in call.tensors:
            if not is_buffer and key not in seen:
                seen.add(key)
                used.append(net.tensor(key))
    return used


def _average_buffers(net: Supernet, ranks: Ranks) -> None:
    """Every rank's batch-norm statistics averaged, so the ranks' banks agree."""
    import torch.distributed as dist

    for b in net.bank.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b.div_(ranks.world)
        else:
            dist.broadcast(b, src=0)


# ---- training ---------------------------------------------------------------------------------
def train_supernet(net: Supernet, data, config: TrainConfig, sample, *, seed: int, checkpoint: Path | None,
                   start: Path | None = None, span: tuple[int, int] | None = None, stream: str = PHASE,
                   on_epoch=None, ranks: Ranks = Ranks(), device: torch.device | None = None) -> list[SupernetEpoch]:
    """`config.epochs` epochs of single-path training: each step draws a derivation with
    `sample(rng)` (on the lead; None elsewhere) and trains the part of the bank it uses.
    Continues from `checkpoint` where one is, and writes it (atomically) after every
    epoch; returns every epoch's record. `on_epoch(record, history)` follows each.

    A search that trains in phases (NAO's iterations) gives each phase its own
    `checkpoint` and `stream` (the name of its random streams), and `start`, the
    previous phase's checkpoint: its bank and optimizer carry over, the learning-rate
    schedule starts afresh; `span=(first, total)` places the phase's epochs inside one
    schedule of `total` epochs instead (a schedule that continues across phases)."""
    device = device or device_of()
    cuda = device.type == "cuda"
    net.to(device)
    net.set_bn_momentum(config.bn_momentum)
    seed_everything(seed)
    n = len(data.train.y)
    steps = math.ceil(n / config.batch_size)
    first, epochs = span or (0, config.epochs)
    total, warmup, offset = steps * epochs, int(config.warmup_epochs * steps), steps * first
    optimizer = make_optimizer(net, config, device)
    resuming = checkpoint is not None and checkpoint.exists()
    if start is not None and not resuming:
        _carry_over(start, net, optimizer, config, device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s + offset, total, warmup))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing, reduction="sum")
    rng = random.Random(f"{seed}:{stream}")  # the sampler's
    shuffle = torch.Generator(device="cpu").manual_seed(random.Random(f"{seed}:{stream}:order").randrange(2**63))
    history: list[SupernetEpoch] = []
    if resuming:
        history = _restore(checkpoint, net, optimizer, schedule, shuffle, rng, device)
    if ranks.world > 1:
        _same_bank(net)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    train_x, train_y = data.train.x, data.train.y
    for epoch in range(len(history), config.epochs):
        net.train()
        began = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        try:
            for i in range(0, n, config.batch_size):
                index = order[i:i + config.batch_size]
                d = net.space.parse(_broadcast(sample(rng).text if ranks.lead else None, ranks))
                mine = index[ranks.rank::ranks.world]
                optimizer.zero_grad(set_to_none=True)
                if len(mine):
                    x, y = train_x[mine].to(device, non_blocking=True), train_y[mine].to(device, non_blocking=True)
                    with autocast:
                        logits = net(x, d)
                        loss = loss_fn(logits.float(), y) / len(index)  # the global batch's mean
                    loss.backward()
                    loss_sum += loss.detach() * len(index)
                    correct += (logits.argmax(1) == y).sum()
                if ranks.world > 1:
                    _sum_gradients(net, d, ranks)
                optimizer.step()
                schedule.step()
        except torch.OutOfMemoryError as err:
            raise TrialFailed(f"CUDA out of memory training the supernet at batch size {config.batch_size}: "
                              f"{str(err).splitlines()[0]}") from None
        if ranks.world > 1:
            import torch.distributed as dist

            dist.all_reduce(loss_sum)
            dist.all_reduce(correct)
            _average_buffers(net, ranks)
        mean_loss = loss_sum.item() / n
        if not math.isfinite(mean_loss):
            raise TrialFailed(f"the supernet's loss became {mean_loss} in epoch {epoch + 1} (try a lower --lr)")
        record = SupernetEpoch(epoch + 1, mean_loss, correct.item() / n, schedule.get_last_lr()[0],
                               time.perf_counter() - began)
        history.append(record)
        if checkpoint is not None and ranks.lead:
            _save(checkpoint, net, optimizer, schedule, shuffle, rng, history)
        if on_epoch is not None:
            on_epoch(record, history)
    return history


def _save(path: Path, net, optimizer, schedule, shuffle, rng, history) -> None:
    state = {"bank": net.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "torch_rng": torch.get_rng_state(), "shuffle": shuffle.get_state(), "sampler": rng.getstate(),
             "history": [attrs.asdict(e) for e in history]}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    try:
        save_checkpoint(state, path)
    except CheckpointError as err:
        raise NasError(f"the search stopped after supernet epoch {len(history)}: {err}",
                       hint="free disk space (or make the folder writable), then run the same command with "
                            "--resume: the supernet continues from its last checkpoint") from None


def _load(path: Path, net, optimizer, device, doing: str, schedule=None) -> dict:
    """A checkpoint's state, its bank and optimizer (and `schedule`) loaded, or a clear error."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        net.load_state_dict(state["bank"])
        optimizer.load_state_dict(state["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(state["schedule"])
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise NasError(f"{path}: cannot {doing} from this checkpoint ({err})",
                       hint="it belongs to another search, or is damaged: start a new --store") from None
    return state


def _restore(path: Path, net, optimizer, schedule, shuffle, rng, device) -> list[SupernetEpoch]:
    state = _load(path, net, optimizer, device, "resume the supernet", schedule)
    torch.set_rng_state(state["torch_rng"].cpu())
    shuffle.set_state(state["shuffle"].cpu())
    version, internal, gauss = state["sampler"]
    rng.setstate((version, tuple(internal), gauss))
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return [SupernetEpoch(**e) for e in state["history"]]


def _carry_over(path: Path, net, optimizer, config: TrainConfig, device) -> None:
    """The bank and optimizer state a finished phase left, at the start of the next one
    (its learning rate back at the peak: the next phase's schedule sets it)."""
    _load(path, net, optimizer, device, "start the next supernet phase")
    for group in optimizer.param_groups:
        group["lr"] = config.lr
        group.pop("initial_lr", None)


def _same_bank(net: Supernet) -> None:
    """Every rank starts from the lead's bank (and the lead's resumed checkpoint)."""
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(net.bank.parameters()) + list(net.bank.buffers()):
            dist.broadcast(t, src=0)


def path_sampler(sampling: str, space, proposer, bound: int):
    """`rng -> derivation` per `sampling`: uniform, or in proportion to parameters (exact
    rejection sampling from the uniform sampler; `bound`, the bank's size, bounds them)."""
    if sampling == "uniform":
        return lambda rng: space.sample(rng=rng)
    return lambda rng: space.sample_weighted(lambda d: proposer.cost(d).params, bound, rng=rng)


def novel(draws, seen: dict, wanted: int) -> list:
    """Up to `wanted` of `draws` not in `seen` (hash -> derivation), each added to it."""
    found = []
    for d in draws:
        if d.hash not in seen:
            seen[d.hash] = d
            found.append(d)
            if len(found) == wanted:
                break
    return found


# ---- shared-weight evaluation ---------------------------------------------------------------
@torch.no_grad()
def shared_accuracy(net: Supernet, d, split: Split, *, method: str = "recalibrate", calibration=(),
                    batch_size: int = 1024) -> float:
    """Top-1 accuracy of `d` on `split` with the bank's weights. Batch norm: `recalibrate`
    re-estimates `d`'s statistics on the `calibration` batches first (and puts the bank's
    back afterwards), `train` uses each batch's own, `running` the bank's shared ones."""
    if method not in BN_METHODS:
        raise NasError(f"unknown batch-norm method `{method}`", hint=f"choose one of: {', '.join(BN_METHODS)}")
    net.eval()
    device = net.device
    kept = net.statistics_kept() if method == "recalibrate" else contextlib.nullcontext()
    with kept:
        if method == "recalibrate":
            net.recalibrate(d, [x.to(device) for x in calibration])
        correct = 0
        for i in range(0, len(split.y), batch_size):
            x, y = split.x[i:i + batch_size].to(device), split.y[i:i + batch_size].to(device)
            correct += (net(x, d, bn="train" if method == "train" else "running").argmax(1) == y).sum().item()
    return correct / max(1, len(split.y))


class SharedWeights:
    """The shared-weight accuracy of derivations after `epoch` supernet epochs, measured
    once each and kept as an `evaluations` row of the store, so a resumed search reads
    what it measured before instead of measuring it again."""

    def __init__(self, search, net: Supernet, epoch: int, method: str, calibration_batches: int,
                 eval_images: int):
        self.search, self.net, self.epoch, self.method = search, net, epoch, method
        data, batch = search.data, search.config.train.batch_size
        self.split = Split(data.val.x[:eval_images], data.val.y[:eval_images])
        order = torch.randperm(len(data.train.y), generator=torch.Generator().manual_seed(search.config.seed))
        self.calibration = [data.train.x[order[i:i + batch]]
                            for i in range(0, min(len(order), calibration_batches * batch), batch)]
        self.measured = 0  # evaluations made here, not read back
        self._known: dict = {}  # hash -> accuracy, of the rows read or written here

    def __call__(self, d) -> float:
        if d.hash not in self._known:
            self._known[d.hash] = self._measure(d)
        return self._known[d.hash]

    def _measure(self, d) -> float:
        store = self.search.store
        found = store.evaluations(hash=d.hash, epoch=self.epoch, method=self.method)
        if found:
            return found[0].shared_acc
        acc = shared_accuracy(self.net, d, self.split, method=self.method, calibration=self.calibration,
                              batch_size=self.search.config.train.eval_batch_size)
        cost = self.search.proposer.cost(d)
        store.add_evaluation(d.text, d.hash, epoch=self.epoch, method=self.method, shared_acc=acc,
                             params=cost.params, macs=cost.macs)
        self.measured += 1
        return acc


# ---- the algorithms' common part -----------------------------------------------------------------
@attrs.frozen
class TrainOnce(Algorithm):
    """What every algorithm that trains one network for the whole search shares (a
    supernet; SuperTickets' shrinking one): `--epochs` train it, `prepare` runs the
    search on it once and keeps its ranking in the store, and the first `--trials` of
    the ranking are retrained stand-alone for `--retrain-epochs`. A subclass gives
    `supernet(search)` and `run(search, net, reporter) -> (derivations, score)`, where
    `score(d)` is what ranks them (kept as each one's `shared_acc`) and says in
    `score.measured` how many it measured now."""

    retrain_epochs: int = setting(3, "epochs of each stand-alone retraining at the end (--epochs trains the "
                                     "supernet)")

    def at_least_one(self, *names: str) -> None:
        """Refuse a count setting below 1, naming its flag."""
        for name in names:
            if getattr(self, name) < 1:
                raise NasError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")

    def trial_train(self, train: TrainConfig) -> TrainConfig:
        return attrs.evolve(train, epochs=self.retrain_epochs, patience=None)

    def supernet(self, search):
        raise NotImplementedError

    def run(self, search, net, reporter=None) -> tuple[list, object]:
        raise NotImplementedError

    def prepare(self, search, reporter=None) -> None:
        """Train the supernet and rank on it, unless the store already holds the ranking."""
        store = search.store
        if store.get_state("ranking") is not None:
            _broadcast(None, search.ranks)  # no phase to train: the other ranks stop
            search.ranks.close()
            return
        net = self.supernet(search)
        ranked, evaluate = self.run(search, net, reporter)
        _broadcast(None, search.ranks)
        search.ranks.close()
        ranking, seen = [], set()
        for d in sorted(ranked, key=evaluate, reverse=True):  # stable: equals keep the algorithm's order
            if d.hash not in seen:
                seen.add(d.hash)
                ranking.append({"derivation": d.text, "shared_acc": evaluate(d)})
        if len(ranking) < search.config.trials:
            raise NasError(f"{self.name} ranked {len(ranking)} derivations, fewer than --trials "
                           f"{search.config.trials} to retrain", hint="lower --trials, or widen the search "
                                                                      "(--population, --generations)")
        if reporter:
            reporter.note(f"{self.name}: {len(ranking)} derivations ranked on the shared weights "
                          f"({evaluate.measured} measured now); retraining the best {search.config.trials}")
        store.set_state("ranking", ranking)

    def propose(self, proposer, store, index: int, seed: int) -> Proposal:
        ranking = store.get_state("ranking")
        if index >= len(ranking):
            raise NasError(f"the supernet's ranking holds {len(ranking)} derivations; --trials asks for more",
                           hint=f"resume with --trials {len(ranking)} or fewer")
        entry = ranking[index]
        return Proposal(proposer.space.parse(entry["derivation"]),
                        extra={"shared_acc": entry["shared_acc"], "shared_rank": index + 1})


@attrs.frozen
class OneShot(TrainOnce):
    """What every one-shot algorithm shares: a single-path supernet trained by
    `--sampling` and ranked on shared weights; a subclass gives
    `rank(search, evaluate, rng)` and may give its own `sampler`."""

    shared_bn: str = setting("recalibrate", "batch norm in shared-weight evaluation: recalibrate (fresh "
                                            "statistics per derivation), train (each batch's) or running",
                             choices=BN_METHODS)
    calibration_batches: int = setting(4, "training batches that re-estimate batch norm for each evaluation")
    eval_images: int = setting(1000, "validation images per shared-weight evaluation")
    max_supernet_params: int = setting(DEFAULT_MAX_PARAMS, "largest supernet built, in parameters")
    sampling: str = setting("uniform", "the supernet's training distribution: uniform over the space, or params "
                                       "(in proportion to each derivation's parameters: NAO-V2's balanced sampling)",
                            choices=SAMPLINGS)

    def __attrs_post_init__(self):
        self.at_least_one("retrain_epochs", "calibration_batches", "eval_images", "max_supernet_params")
        if self.sampling not in SAMPLINGS or self.shared_bn not in BN_METHODS:
            raise NasError(f"--sampling is one of {', '.join(SAMPLINGS)} and --shared-bn one of "
                           f"{', '.join(BN_METHODS)}; got {self.sampling} and {self.shared_bn}")

    # what a subclass gives
    def sampler(self, search, net: Supernet):
        """`rng -> derivation`: each supernet training step's, drawn per `--sampling`.
        Size-proportional draws are exact rejection sampling from the uniform sampler,
        bounded by the bank's size (no derivation holds more parameters than the bank)."""
        return path_sampler(self.sampling, search.space, search.proposer, net.size.params)

    def rank(self, search, evaluate, rng: random.Random) -> list:
        """Derivations worth retraining, measured with `evaluate(d) -> shared accuracy`."""
        raise NotImplementedError

    def notes(self, search) -> list[str]:
        if search.config.train.bn_l1:
            return [f"{self.name}: --bn-l1 slims the retrained trials; the supernet trains without it"]
        return []

    def supernet(self, search) -> Supernet:
        return Supernet(search.space, search.data.input_shape, seed=search.config.seed,
                        max_params=self.max_supernet_params)

    def follow(self, search) -> None:
        """On a rank other than the lead: train each phase of the supernet alongside it
        (the lead says which, and chooses every step's derivation), then stop."""
        net = self.supernet(search)
        while (phase := _broadcast(None, search.ranks)) is not None:
            self._train(search, net, phase, None)
        search.ranks.close()

    def run(self, search, net: Supernet, reporter=None) -> tuple[list, "SharedWeights"]:
        """The one-shot search: (derivations worth retraining, the evaluation that ranks
        them). Here one phase of `--epochs`, then `rank`; NAO-V2 alternates phases with
        its controller."""
        history = self.train_phase(search, net, reporter, sample=self.sampler(search, net))
        evaluate = self.evaluator(search, net, len(history))
        return self.rank(search, evaluate, random.Random(f"{search.config.seed}:rank")), evaluate

    def evaluator(self, search, net: Supernet, epoch: int) -> "SharedWeights":
        return SharedWeights(search, net, epoch, self.shared_bn, self.calibration_batches, self.eval_images)

    def train_phase(self, search, net: Supernet, reporter=None, *, sample, name: str = PHASE,
                    start: str | None = None, span=None, offset: int = 0) -> list:
        """One phase of supernet training (checkpoint `name`.pt, starting from phase
        `start`'s), told to the other ranks first so they train it alongside; the store's
        `supernet_epochs` gathers every phase's epochs (`offset`: the earlier phases')."""
        phase = {"checkpoint": name, "start": start, "span": span}
        _broadcast(phase, search.ranks)
        store = search.store
        earlier = store.get_state("supernet_epochs", [])[:offset]

        def recorded(record, history):
            store.set_state("supernet_epochs", earlier + [attrs.asdict(e) for e in history])
            if reporter:
                reporter.note(f"{name} epoch {record.epoch}/{search.config.train.epochs}: loss {record.loss:.4f}, "
                              f"train acc {record.acc:.4f}, {record.seconds:.1f} s")

        history = self._train(search, net, phase, sample, recorded)
        store.set_state("supernet_epochs", earlier + [attrs.asdict(e) for e in history])
        return history

    def _train(self, search, net, phase: dict, sample, on_epoch=None) -> list:
        folder = search.checkpoint_dir
        return train_supernet(net, search.data, search.config.train, sample,
                              seed=search.config.seed, checkpoint=folder / f"{phase['checkpoint']}.pt",
                              start=folder / f"{phase['start']}.pt" if phase["start"] else None,
                              span=phase["span"], stream=phase["checkpoint"], on_epoch=on_epoch, ranks=search.ranks)
