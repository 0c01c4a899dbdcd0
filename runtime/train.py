"""One plain, fast training loop for every trial.

Data sets here are small enough to live in memory as tensors, so an epoch is a
random permutation and slices of it: no DataLoader, no worker processes, nothing
between the model and the arithmetic (`bench/train_throughput.py` measures the
loop against a hand-written one). On CUDA the whole split moves to the GPU once,
the model runs channels-last under autocast, and the optimiser step is fused.

A trial that cannot train (NaN/inf loss, CUDA out of memory) raises `TrialFailed`
with the reason, so the search records it and goes on.
"""

from __future__ import annotations

import contextlib
import math
import time

import attrs
import torch
from torch import nn

from .data import Dataset, Split
from .slimming import Slimming, penalties


class TrialFailed(Exception):
    """A trial that could not be trained; the message is the reason the store records."""


@attrs.frozen
class TrainConfig:
    """How one trial is trained; recorded in the store's config, so a resumed search
    trains its remaining trials the same way."""

    epochs: int = 3
    batch_size: int = 64
    optimizer: str = attrs.field(default="sgd", validator=attrs.validators.in_(("sgd", "adamw")))
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    patience: int | None = None  # stop after this many epochs without a better validation accuracy
    # batch-norm running-statistics momentum while training; None keeps the network's own.
    # Short trials need 0.1: MobileNetV3's 0.01 (torchvision's, for 600-epoch runs) leaves
    # the running statistics untrained after a few dozen steps, and validation at chance.
    bn_momentum: float | None = 0.1
    eval_batch_size: int = 1024
    # network slimming (runtime/slimming.py): rho of the FLOPs-aware L1 on batch-norm
    # scales, ramped up linearly over the first bn_l1_warmup epochs; 0 trains without it
    bn_l1: float = 0.0
    bn_l1_warmup: float = 0.0


@attrs.frozen
class Epoch:
    epoch: int
    train_loss: float
    train_acc: float
    val_acc: float
    seconds: float


@attrs.frozen
class TrainResult:
    val_acc: float  # the best epoch's; its weights are the ones returned
    best_epoch: int
    epochs: tuple[Epoch, ...]
    train_time: float  # seconds spent in training steps (evaluation excluded)
    images_per_s: float
    state_dict: dict = attrs.field(repr=False)


def device_of(name: str | None = None) -> torch.device:
    """The device a trial runs on: CUDA when present, else CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_optimizer(module: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # no weight decay on norms and biases (1-d tensors), as is standard for small CNNs
    decay = [p for p in module.parameters() if p.ndim > 1]
    rest = [p for p in module.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    # fused kernels on CUDA; on CPU the batched (foreach) step, ~1/3 cheaper than one tensor at a time
    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True, **fused)
    return torch.optim.AdamW(groups, lr=config.lr, **fused)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor at `step`: linear warm-up, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def on_device(split: Split, device: torch.device) -> Split:
    return Split(split.x.to(device), split.y.to(device)) if split.x.device != device else split


def on_device_module(module: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """`module` on `device`, ready to train: batch-norm momentum per `config`, and
    channels-last on CUDA."""
    module = module.to(device)
    if config.bn_momentum is not None:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = config.bn_momentum
    return module.to(memory_format=torch.channels_last) if device.type == "cuda" else module


def run_epoch(module: nn.Module, split: Split, order: torch.Tensor, optimizer, schedule, loss_fn,
              batch_size: int, *, penalty=None, on_step=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of steps over `split` in `order`: (summed loss, correct predictions),
    still on the device (reading them synchronises). `penalty(step)` is added to the
    loss at the epoch's step `step` (slimming), `on_step()` follows every optimizer step."""
    module.train()
    cuda = split.x.device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    try:
        for step, i in enumerate(range(0, len(order), batch_size)):
            index = order[i:i + batch_size]
            x, y = split.x[index], split.y[index]
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = module(x)
                loss = loss_fn(logits, y)
            objective = loss + penalty(step) if penalty else loss
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            if on_step:
                on_step()
            schedule.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
    except torch.OutOfMemoryError as err:
        raise TrialFailed(f"CUDA out of memory at batch size {batch_size}: {str(err).splitlines()[0]}") from None
    return loss_sum, correct


def train(module: nn.Module, data: Dataset, config: TrainConfig, *, seed: int = 0,
          device: torch.device | None = None, on_epoch=None, on_step=None, graph=None) -> TrainResult:
    """Train `module` on `data.train`, select the epoch by `data.val`; returns the best
    epoch's weights. `on_epoch(Epoch)` is called after every epoch, `on_step()` after
    every optimizer step (sparsity masks re-applied there). With `config.bn_l1` the
    loss has the slimming term, its penalties read off `graph` (the module's)."""
    device = device or device_of()
    cuda = device.type == "cuda"
    seed_everything(seed)
    module = on_device_module(module, config, device)
    train_split, val_split = on_device(data.train, device), on_device(data.val, device)
    n = len(train_split.y)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)
    optimizer = make_optimizer(module, config, device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total, warmup))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    slim = None
    if config.bn_l1:
        if graph is None:
            raise ValueError("training with bn_l1 needs the module's graph (its channel groups and MACs)")
        slim = Slimming(module, penalties(graph), config.bn_l1, int(config.bn_l1_warmup * steps_per_epoch))
    shuffle = torch.Generator(device="cpu").manual_seed(seed)

    history, best, best_state = [], -1.0, None
    train_time, seen = 0.0, 0
    for epoch in range(config.epochs):
        start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        penalty = (lambda step, first=epoch * steps_per_epoch: slim.loss(first + step)) if slim else None
        loss_sum, correct = run_epoch(module, train_split, order, optimizer, schedule, loss_fn, config.batch_size,
                                      penalty=penalty, on_step=on_step)
        mean_loss = loss_sum.item() / n  # one synchronisation per epoch
        if not math.isfinite(mean_loss):
            raise TrialFailed(f"loss became {mean_loss} in epoch {epoch + 1} (try a lower --lr)")
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        train_time += seconds
        seen += n
        val = accuracy(module, val_split, config.eval_batch_size)
        record = Epoch(epoch + 1, mean_loss, correct.item() / n, val, seconds)
        history.append(record)
        if on_epoch:
            on_epoch(record)
        if val > best:
            best = val
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        elif config.patience is not None and epoch + 1 - _best_epoch(history) >= config.patience:
            break
    module.load_state_dict(best_state)
    return TrainResult(best, _best_epoch(history), tuple(history), train_time,
                       seen / train_time if train_time else 0.0, best_state)


def _best_epoch(history) -> int:
    return max(history, key=lambda e: e.val_acc).epoch  # the first of equals: max keeps the earliest


@torch.no_grad()
def recalibrate(module: nn.Module, batches) -> None:
    """Estimate every batch norm's running statistics afresh, as the average over
    `batches` (a network that changed fast, one being slimmed and cut, has statistics
    that no longer fit it: HR-NAS and SuperTickets recalibrate before evaluating)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    was_training = module.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    module.train()
    try:
        for x in batches:
            module(x)
    finally:
        module.train(was_training)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


@torch.no_grad()
def accuracy(module: nn.Module, split: Split, batch_size: int = 1024) -> float:
    """Top-1 accuracy of `module` on `split` (eval mode)."""
    device = next(module.parameters(), torch.empty(0)).device
    split = on_device(split, device)
    cuda = device.type == "cuda"
    module.eval()
    correct = torch.zeros((), device=device, dtype=torch.long)
    with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
        for i in range(0, len(split.y), batch_size):
            x = split.x[i:i + batch_size]
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            correct += (module(x).argmax(1) == split.y[i:i + batch_size]).sum()
    return correct.item() / max(1, len(split.y))


def macs_of(module: nn.Module, graph=None, input_shape=None) -> int:
    """Multiply-accumulates of one image through `module` (FlopCounterMode's FLOPs / 2),
    of `input_shape` (C, H, W) or else `graph`'s."""
    from nasdsl.compiler.flops import flop_counter

    shape = input_shape if input_shape is not None else graph.graph["input_shape"]
    x = torch.zeros(1, *shape, device=next(module.parameters()).device)
    was = module.training
    module.eval()
    with flop_counter() as counter, torch.no_grad():
        module(x)
    module.train(was)
    return counter.get_total_flops() // 2
