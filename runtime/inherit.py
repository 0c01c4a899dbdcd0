"""Weight inheritance by provenance: a child network starts from its parent's
trained weights wherever the two share a layer.

The compiler names every module by its provenance path (the derivation path that
made it), so a layer of the child and a layer of the parent at the same path come
from the same place in the grammar. For each of the child's tensors:

    same path, same op, same shape      copied
    same path, same op, other shape     adapted: channels (dims 0 and 1) keep the
                                        parent's first k, the child's extra channels
                                        keep their fresh initialisation (so a batch
                                        norm's new channels keep weight 1, bias 0,
                                        mean 0, var 1); kernels (dims 2 and up) are
                                        centre-cropped, or centre-pasted into zeros,
                                        so a 3x3 kernel grown to 5x5 computes the same
    otherwise                           fresh: no node at the path, another op, another
                                        grouping of a conv, another tensor rank

Taking the first k channels everywhere keeps channel j of every layer meaning
channel j of the parent's, which is exact along chains and residual adds. It is
only positional across a concat whose inputs changed width, a flatten that spreads
a feature map (not a pooled vector), and a grouped conv whose group width changed
(the last is treated as fresh); no shipped space varies those.

Used by MENAS (a child inherits from its own parent) and usable by any method
that moves weights between derivations of one space.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import networkx as nx
import torch

from nasdsl.language.errors import NasError


@attrs.frozen
class Inheritance:
    """What the child got: `fraction` is the share of its parameters (by element
    count, buffers excluded) whose values came from the parent; the tuples name
    `state_dict` entries (buffers included)."""

    fraction: float
    copied: tuple[str, ...]
    adapted: tuple[str, ...]
    fresh: tuple[str, ...]


def load_state(path) -> dict:
    """A saved `state_dict` (name -> tensor), read onto the CPU; a missing or
    unreadable file is a NasError naming it."""
    path = Path(path)
    if not path.is_file():
        raise NasError(f"{path}: no checkpoint there", hint="was the parent trial trained and its checkpoint kept?")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NasError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise NasError(f"{path}: not a state_dict (expected a mapping of names to tensors)")
    return state


def inherit(parent_graph: nx.DiGraph, parent_state: dict, child_graph: nx.DiGraph, child_module) -> Inheritance:
    """Initialise `child_module` (compiled from `child_graph`) in place from the
    parent's `state_dict`. Only the parent graph's node ids, ops and arguments are
    read, not its shapes, so the state may be a pruned copy of that graph's module."""
    _same_space(parent_graph, child_graph)
    child_state = child_module.state_dict()
    params = {name: p.numel() for name, p in child_module.named_parameters()}
    nodes = set(child_graph.nodes)
    new_state, copied, adapted, fresh = {}, [], [], []
    inherited = 0
    for key, mine in child_state.items():
        node, suffix = _owner(key, nodes)
        theirs = parent_state.get(key)
        if theirs is None or node is None or not _compatible(parent_graph, child_graph, node, suffix, theirs, mine):
            fresh.append(key)
            new_state[key] = mine
            continue
        theirs = theirs.detach().to(device=mine.device, dtype=mine.dtype)
        if theirs.shape == mine.shape:
            new_state[key] = theirs.clone()
            copied.append(key)
            inherited += params.get(key, 0)
            continue
        value, count = _adapt(theirs, mine, halves=child_graph.nodes[node]["op"] == "fact_reduce"
                              and suffix.startswith("bn."))
        new_state[key] = value
        (adapted if count else fresh).append(key)
        inherited += count if key in params else 0
    child_module.load_state_dict(new_state)
    total = sum(params.values())
    return Inheritance(inherited / total if total else 1.0, tuple(copied), tuple(adapted), tuple(fresh))


def _same_space(parent_graph, child_graph) -> None:
    parent, child = parent_graph.graph.get("space"), child_graph.graph.get("space")
    if parent is None or child is None:
        raise NasError("weights are inherited between graphs of one space; a graph here carries no space name",
                       hint="build both graphs with space.graph(...)")
    if parent != child:
        raise NasError(f"cannot inherit weights from a `{parent}` network into a `{child}` network: provenance "
                       f"paths mean the same layer only within one space")


def _owner(key: str, nodes) -> tuple:
    """(graph node, tensor name within it) of a state_dict key: the longest node id
    that is a prefix of the key (a module's own tensors may sit in sub-modules,
    `se.fc1.weight`, `bn.running_mean`)."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        node = ".".join(parts[:cut])
        if node in nodes:
            return node, ".".join(parts[cut:])
    return None, key


def _compatible(parent_graph, child_graph, node, suffix, theirs, mine) -> bool:
    """Whether the parent's tensor at the same name can seed the child's."""
    if node not in parent_graph.nodes:
        return False
    p, c = parent_graph.nodes[node], child_graph.nodes[node]
    if p["op"] != c["op"] or theirs.dim() != mine.dim():
        return False
    if c["op"] == "conv" and suffix == "weight":
        grouped_p, grouped_c = p["args"].get("groups", 1) > 1, c["args"].get("groups", 1) > 1
        if grouped_p != grouped_c:
            return False
        if grouped_c and theirs.shape[1] != mine.shape[1]:  # another group width: channels do not line up
            return False
    return True


def _adapt(theirs: torch.Tensor, mine: torch.Tensor, halves: bool = False) -> tuple:
    """(the child's tensor seeded from the parent's, how many of its elements came
    from the parent). Channel dims take the parent's first k; spatial dims are
    aligned at the centre, with zeros where a larger kernel has no parent value.
    `halves`: dim 0 is two concatenated halves (FactorizedReduce's batch norm)."""
    out = mine.detach().clone()
    child_index, parent_index = [], []
    for d, (p, c) in enumerate(zip(theirs.shape, mine.shape)):
        if d >= 2:  # spatial: centre-aligned
            n = min(p, c)
            child_index.append(torch.arange(n) + (c - n) // 2)
            parent_index.append(torch.arange(n) + (p - n) // 2)
        elif d == 0 and halves and p % 2 == 0 and c % 2 == 0:
            n = min(p, c) // 2
            child_index.append(torch.cat([torch.arange(n), c // 2 + torch.arange(n)]))
            parent_index.append(torch.cat([torch.arange(n), p // 2 + torch.arange(n)]))
        else:  # channels: the first k
            n = min(p, c)
            child_index.append(torch.arange(n))
            parent_index.append(torch.arange(n))
    count = 1
    for index in child_index:
        count *= len(index)
    if count == 0:
        return out, 0
    device = mine.device
    child_index = [i.to(device) for i in child_index]
    parent_index = [i.to(device) for i in parent_index]
    if mine.dim() > 2 and tuple(theirs.shape[2:]) != tuple(mine.shape[2:]):
        # the shared channels' kernels become the parent's, zero-padded: clear them first
        channels = _grid(child_index[:2] + [torch.arange(n, device=device) for n in mine.shape[2:]])
        out[channels] = 0
    out[_grid(child_index)] = theirs[_grid(parent_index)]
    return out, count


def _grid(indices: list) -> tuple:
    """Index tensors that broadcast to the outer product of `indices` (numpy's ix_)."""
    n = len(indices)
    return tuple(index.view(*([1] * d), -1, *([1] * (n - d - 1))) for d, index in enumerate(indices))
