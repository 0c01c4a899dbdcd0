"""torchvision and timm weights for nasdsl's presets of their networks.

A preset that *is* a torchvision or timm network (`resnet.nas`'s `resnet18`, `resnet50`,
`mobilenetv3.nas`'s `mobilenet_v3_large`, `mobilenet_v3_small`, `regnet.nas`'s
`regnetx_400mf`, `regnety_400mf`, `vit.nas`'s `vit_b_16`, `deit_tiny`) has the same
tensors, in the same execution order, under other names. The key mapping pairs them
in that order — ours from the compiled module's graph, theirs from the model's
torch.fx graph (or, where it cannot be traced, its registration order, which for the
CNNs is the order they run in) — and checks that every pair has the same shape (up
to leading 1s: a class token), so a mismatch is an error, never a silent misload.

The order matters most for RegNet: a block's 1x1 projection and the first 1x1 conv of
its F can have equal shapes, so there the shape check cannot tell them apart and the
order alone must. torchvision registers and runs the projection first (tests/test_regnet.py
checks that it runs its convs in registration order); `regnet.nas` writes it as the first
branch of the add.

    module = space.compile(space.preset("resnet18"))
    module.load_state_dict(from_torchvision(module, torchvision.models.resnet18()))

Any RegNet of `regnet.nas` loads the same way from torchvision's `RegNet` built with the
derivation's d, w0, wa, wm, g (and `bottleneck_multiplier=1 / b`, `se_ratio=0.25` for Y).
"""

from __future__ import annotations

import torch

from ...language.errors import NasError


def _in_order(graph: torch.fx.Graph, state: list[str]) -> list[str]:
    """The keys of `state` in the order a graph's ops reach them: a module's when it
    is first called, a bare tensor's (a class token) when it is first read; any the
    graph never reaches last, in registration order."""
    keys, seen = [], set()
    for node in graph.nodes:
        if node.op == "call_module":
            found = [k for k in state if k.startswith(node.target + ".")]
        elif node.op == "get_attr":
            found = [k for k in state if k == node.target or k.startswith(node.target + ".")]
        else:
            continue
        keys.extend(k for k in found if k not in seen)
        seen.update(found)
    return keys + [k for k in state if k not in seen]


def _theirs_in_order(model: torch.nn.Module) -> list[str]:
    """The other model's keys in execution order where torch.fx can trace it, else in
    registration order (for torchvision's CNNs the two agree)."""
    from ..fxtrace import fx_trace

    state = list(model.state_dict())
    try:
        return _in_order(fx_trace(model).graph, state)
    except Exception:  # untraceable: registration order, checked by shape below
        return state


def _same_shape(a: torch.Size, b: torch.Size) -> bool:
    """Equal up to leading 1s: timm's and torchvision's class tokens are (1, 1, D), ours (D,)."""
    def squeezed(s):
        s = tuple(s)
        while s and s[0] == 1 and len(s) > 1:
            s = s[1:]
        return s

    return squeezed(a) == squeezed(b)


def key_map(module: torch.fx.GraphModule, model: torch.nn.Module) -> dict:
    """{our state_dict key: the other model's key}, paired in execution order, shapes checked."""
    ours = _in_order(module.graph, list(module.state_dict()))
    theirs = _theirs_in_order(model)
    ours_state, their_state = module.state_dict(), model.state_dict()
    if len(ours) != len(theirs):
        raise NasError(f"the networks differ: {len(ours)} tensors here, {len(theirs)} in "
                       f"{type(model).__name__}", None, "is this the preset of that model?")
    for a, b in zip(ours, theirs):
        if not _same_shape(ours_state[a].shape, their_state[b].shape):
            raise NasError(f"`{a}` {tuple(ours_state[a].shape)} does not match {type(model).__name__}'s `{b}` "
                           f"{tuple(their_state[b].shape)}", None, "is this the preset of that model?")
    return dict(zip(ours, theirs))


def from_torchvision(module: torch.fx.GraphModule, model: torch.nn.Module) -> dict:
    """`model`'s state_dict (a torchvision or timm model) under `module`'s keys and
    shapes, ready for `module.load_state_dict`."""
    state, mine = model.state_dict(), module.state_dict()
    return {ours: state[theirs].reshape(mine[ours].shape) for ours, theirs in key_map(module, model).items()}
