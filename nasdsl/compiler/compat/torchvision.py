"""torchvision weights for nasdsl's presets of torchvision's networks.

A preset that *is* a torchvision network (`resnet.nas`'s `resnet18`, `resnet50`,
`mobilenetv3.nas`'s `mobilenet_v3_large`, `mobilenet_v3_small`, `regnet.nas`'s
`regnetx_400mf`, `regnety_400mf`) has the same tensors, in the same execution order,
under other names. The key mapping pairs them in that order — ours from the compiled
module's graph, torchvision's from its registration order, which for these networks
is the order they run in — and checks that every pair has the same shape, so a
mismatch is an error, never a silent misload.

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


def _ours_in_order(module: torch.fx.GraphModule) -> list[str]:
    """Our state_dict keys in the order the modules run (fx registers them by depth)."""
    state = list(module.state_dict())
    keys, seen = [], set()
    for node in module.graph.nodes:
        if node.op == "call_module" and node.target not in seen:
            seen.add(node.target)
            keys.extend(k for k in state if k.startswith(node.target + "."))
    return keys


def key_map(module: torch.fx.GraphModule, model: torch.nn.Module) -> dict:
    """{our state_dict key: torchvision's key}, paired in execution order, shapes checked."""
    ours = _ours_in_order(module)
    theirs = list(model.state_dict())
    ours_state, their_state = module.state_dict(), model.state_dict()
    if len(ours) != len(theirs):
        raise NasError(f"the networks differ: {len(ours)} tensors here, {len(theirs)} in "
                       f"{type(model).__name__}", None, "is this the preset of that torchvision model?")
    for a, b in zip(ours, theirs):
        if ours_state[a].shape != their_state[b].shape:
            raise NasError(f"`{a}` {tuple(ours_state[a].shape)} does not match torchvision's `{b}` "
                           f"{tuple(their_state[b].shape)}", None, "is this the preset of that torchvision model?")
    return dict(zip(ours, theirs))


def from_torchvision(module: torch.fx.GraphModule, model: torch.nn.Module) -> dict:
    """`model`'s state_dict under `module`'s keys, ready for `module.load_state_dict`."""
    state = model.state_dict()
    return {ours: state[theirs] for ours, theirs in key_map(module, model).items()}
