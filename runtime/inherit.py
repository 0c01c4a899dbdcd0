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
                                        tensor rank, or a tensor the op's adapter
                                        refuses (a conv's weight whose grouping changed)

How a tensor is adapted is the op's: its primitive's `adapter`
(`nasdsl.compiler.channels`; fact_reduce maps its batch norm's halves to halves),
else the standard `resize` above. A primitive registered from Python inherits the
same way.

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

from nasdsl.compiler import channels, primitives
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
        seeded = None
        if theirs is not None and node is not None and _same_op(parent_graph, child_graph, node, theirs, mine):
            theirs = theirs.detach().to(device=mine.device, dtype=mine.dtype)
            seeded = _adapter(child_graph.nodes[node]["op"])(
                suffix, theirs, mine, parent_graph.nodes[node]["args"], child_graph.nodes[node]["args"])
        if seeded is None:
            fresh.append(key)
            new_state[key] = mine
            continue
        value, count = seeded
        new_state[key] = value
        if theirs.shape == mine.shape:
            copied.append(key)
        else:
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


def _same_op(parent_graph, child_graph, node, theirs, mine) -> bool:
    """Whether the parent has the node, with the child's op and a tensor of the same rank."""
    return (node in parent_graph.nodes and parent_graph.nodes[node]["op"] == child_graph.nodes[node]["op"]
            and theirs.dim() == mine.dim())


def _adapter(op: str):
    """The op's adapter: its primitive's, else the standard one (a traced op's too)."""
    prim = primitives.get(op)
    return prim.adapter if prim is not None and prim.adapter is not None else channels.adapt
