"""Unstructured weight sparsity: global magnitude pruning with masks, a progressive
schedule, and reactivation, for SuperTickets' lottery tickets drawn inside a
supernet's training.

Every convolution and linear weight gets a mask, keyed by the parameter's name (the
module path is the graph node id, the grammar path behind it):

    masks = Masks.dense(module)
    masks = masks.pruned(module, sparsity=0.3)      # global: the smallest |w| of all layers
    masks.apply(module)                              # after every optimizer step
    masks = masks.regrown(module, fraction=0.1)      # RigL: the largest |grad| among the pruned
    masks = masks.sliced(graph, module, keep)        # through a structured prune, as the weights are

Global magnitude pruning keeps the (1 - sparsity) share of all masked weights with
the largest magnitude, wherever they are (Frankle and Carbin's and SuperTickets'
`prune_loop(scope='global')`). The schedule (`sparsity_at`) adds `step` every
`every` epochs up to the target, as SuperTickets' progressive pruning does.
Reactivation: SuperTickets' released code only resets masks (`reset`); `regrown`
reactivates the pruned weights whose loss gradient is largest (RigL, Evci et al.
2020), at zero, a stated fraction of the pruned ones per call.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

PRUNABLE = (nn.Conv2d, nn.Linear)


def prunable_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every convolution's and linear layer's weight, by parameter name."""
    return {f"{name}.weight" if name else "weight": m.weight for name, m in module.named_modules()
            if isinstance(m, PRUNABLE) and m.weight is not None}


def sparsity_at(epoch: int, *, every: int, target: float, step: float = 0.1) -> float:
    """The sparsity after `epoch` epochs (1-based): `step` more every `every` epochs, at
    most `target`."""
    return min(target, step * (epoch // every)) if every > 0 else 0.0


class Masks:
    """Boolean masks (True: kept) over a module's prunable weights."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks

    @classmethod
    def dense(cls, module: nn.Module) -> "Masks":
        return cls({k: torch.ones_like(w, dtype=torch.bool) for k, w in prunable_weights(module).items()})

    # ---- what they hold
    def sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        return 1 - sum(int(m.sum()) for m in self.masks.values()) / total if total else 0.0

    def state_dict(self) -> dict:
        return {k: m.clone() for k, m in self.masks.items()}

    # ---- new masks
    def pruned(self, module: nn.Module, sparsity: float) -> "Masks":
        """Masks keeping the (1 - sparsity) share of all masked weights with the largest
        |w|; what is already pruned stays pruned."""
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        weights = self._weights(module)
        scores = torch.cat([(w.detach().abs() * m).flatten() for (w, m) in weights.values()])
        keep = scores.numel() - math.floor(sparsity * scores.numel())
        if keep >= scores.numel():
            return Masks(self.state_dict())
        threshold = torch.topk(scores, keep, sorted=True).values[-1]
        # ties at the threshold: keep exactly `keep`, the first ones in order
        above = scores > threshold
        at = (scores == threshold).nonzero().flatten()[:keep - int(above.sum())]
        kept = above.clone()
        kept[at] = True
        return self._split(kept)

    def regrown(self, module: nn.Module, fraction: float) -> "Masks":
        """Masks with `fraction` of the pruned weights reactivated: those with the
        largest |grad| of the last backward pass (RigL). Their weights are set to 0."""
        pruned = sum(int((~m).sum()) for m in self.masks.values())
        return self._regrow(module, math.floor(fraction * pruned))

    def _regrow(self, module: nn.Module, count: int) -> "Masks":
        weights = self._weights(module)
        if any(w.grad is None for w, _ in weights.values()):
            raise ValueError("regrowing needs the gradients of a backward pass")
        grads = torch.cat([(w.grad.detach().abs() * ~m).flatten() for w, m in weights.values()])
        pruned = torch.cat([~m.flatten() for _, m in weights.values()])
        kept = ~pruned
        if count:
            grads[~pruned] = -1.0  # only pruned weights compete
            kept[torch.topk(grads, count).indices] = True
        new = self._split(kept)
        with torch.no_grad():
            for k, (w, m) in weights.items():
                w[new.masks[k] & ~m] = 0.0
        return new

    def pruned_and_regrown(self, module: nn.Module, sparsity: float, fraction: float) -> "Masks":
        """RigL's swap at a pruning step: prune past `sparsity` by `fraction` of the
        weights it prunes, then regrow as many by gradient, so the pattern can change
        while the sparsity reaches `sparsity` (SuperTickets' iterative reactivation, with
        a criterion of our choice: the released code has none)."""
        total = sum(m.numel() for m in self.masks.values())
        target = math.floor(sparsity * total)
        extra = min(math.floor(fraction * target), total - target - 1)
        if extra <= 0:
            return self.pruned(module, sparsity)
        deeper = self.pruned(module, (target + extra) / total)
        return deeper._regrow(module, sum(int((~m).sum()) for m in deeper.masks.values()) - target)

    def reset(self) -> "Masks":
        """Every weight kept again (the released SuperTickets code's `reset_mask`)."""
        return Masks({k: torch.ones_like(m) for k, m in self.masks.items()})

    def sliced(self, graph, module: nn.Module, keep: dict) -> "Masks":
        """The masks of `compiler.groups.prune(graph, module, keep)`: a copy of `module`
        holding the masks as its weights is cut by the same slicers, so each mask stays
        on its weight whatever the layer."""
        from nasdsl.compiler.groups import prune

        shadow = copy.deepcopy(module)
        with torch.no_grad():
            for w, m in Masks(self.masks)._weights(shadow).values():
                w.copy_(m)
        cut = prune(graph, shadow, keep)
        return Masks({k: w.detach() > 0.5 for k, w in prunable_weights(cut).items()})

    # ---- on a module
    def apply(self, module: nn.Module) -> None:
        """Zero the pruned weights (after every optimizer step)."""
        with torch.no_grad():
            for w, m in self._weights(module).values():
                w.mul_(m)

    def _weights(self, module: nn.Module) -> dict:
        weights = prunable_weights(module)
        if set(weights) != set(self.masks):
            missing = sorted(set(self.masks) ^ set(weights))
            raise ValueError(f"the masks and the module disagree on {missing[0]} ({len(missing)} weights)")
        for k, w in weights.items():
            if w.shape != self.masks[k].shape:
                raise ValueError(f"the masks and the module disagree on the shape of {k}: "
                                 f"{tuple(self.masks[k].shape)} against {tuple(w.shape)}")
        return {k: (weights[k], self.masks[k].to(weights[k].device)) for k in self.masks}

    def _split(self, flat: torch.Tensor) -> "Masks":
        out, at = {}, 0
        for k, m in self.masks.items():
            out[k] = flat[at:at + m.numel()].view_as(m).cpu()
            at += m.numel()
        return Masks(out)

