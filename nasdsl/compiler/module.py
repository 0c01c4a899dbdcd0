"""Dependency graph → PyTorch module: a `torch.fx.GraphModule` whose submodules
are named by provenance path, so `state_dict` keys mean the same thing in every
derivation that shares the path, and `print_readable()` is plain Python.

Weights are initialised in graph order after `torch.manual_seed(seed)`, so the
same derivation and seed give identical weights. An activation works in place
where its input is read by nothing else and its primitive declares that autograd
does not keep it (`keeps_output`).
"""

from __future__ import annotations

import operator

import networkx as nx
import torch
import torch.fx

from ..language.errors import NasError
from . import primitives
from .modules import GatedSum


def build_module(graph: nx.DiGraph, seed: int | None = 0) -> torch.fx.GraphModule:
    """The module of a graph from `nasdsl.compiler.graph.build_graph`."""
    modules, fx = module_parts(graph, seed)
    return torch.fx.GraphModule(modules, fx, class_name=_class_name(graph.graph.get("space", "Network")))


def module_parts(graph: nx.DiGraph, seed: int | None = 0) -> tuple[dict, torch.fx.Graph]:
    """The submodules (by node id) and the fx graph of a graph's module: what a
    `GraphModule`, or a subclass of it (the parallel supernet), is made of."""
    modules: dict[str, torch.nn.Module] = {}
    fx = torch.fx.Graph()
    values: dict[str, torch.fx.Node] = {}
    if seed is not None:
        torch.manual_seed(seed)
    for node_id in graph.nodes:  # the order the graph was built in: the derivation's order, a topological one
        attrs = graph.nodes[node_id]
        op = attrs["op"]
        inputs = [values[i] for i in attrs["inputs"]]
        if op == "input":
            values[node_id] = fx.placeholder("x")
        elif op == "output":
            fx.output(inputs[0] if len(inputs) == 1 else tuple(inputs))
        elif op == "add":
            # summing into the first operand saves an allocation where that is safe
            combine = operator.iadd if _may_overwrite(graph, attrs["inputs"][0]) else operator.add
            result = inputs[0]
            for other in inputs[1:]:
                result = fx.call_function(combine, (result, other))
                combine = operator.iadd  # the running sum is ours to overwrite
            values[node_id] = result
        elif op == "concat":
            values[node_id] = fx.call_function(torch.cat, (tuple(inputs),), {"dim": 1})
        elif op == "gsum":  # a parallel site: its branches' modules sit below it, by path
            _check_name(node_id)
            modules[node_id] = GatedSum(len(inputs))
            values[node_id] = fx.call_module(node_id, tuple(inputs))
        else:
            factory = primitives.get(op).module
            if factory is None:  # identity: the value passes on, nothing is built
                values[node_id] = inputs[0]
                continue
            _check_name(node_id)
            module = factory(attrs["args"], attrs["in_shapes"])
            if hasattr(module, "inplace"):
                module.inplace = _may_overwrite(graph, attrs["inputs"][0])
            modules[node_id] = module
            values[node_id] = fx.call_module(node_id, (inputs[0],))
    return modules, fx


def _check_name(node_id: str) -> None:
    """A submodule's path is its node id; a part of it that torch.nn.Module already has
    as an attribute (`double`, `train`, `to`) cannot name a submodule."""
    taken = [part for part in node_id.split(".") if hasattr(torch.nn.Module, part)]
    if taken:
        raise NasError(f"`{node_id}`: `{taken[0]}` names a method of torch.nn.Module, so it cannot name a submodule",
                       None, f"rename the rule or label `{taken[0]}`")


def _may_overwrite(graph, source: str) -> bool:
    """Whether an activation may work in place on `source`'s tensor: nothing else
    reads it (looking through identities, which pass the same tensor on) and its
    producer did not keep it for the backward pass (its primitive says; relu and
    sigmoid keep theirs, a merge does not)."""
    while graph.nodes[source]["op"] == "identity":
        source = graph.nodes[source]["inputs"][0]
    op = graph.nodes[source]["op"]
    prim = primitives.get(op)
    saved = prim.keeps_output if prim else op not in ("add", "concat", "gsum")
    return not saved and _readers(graph, source) == 1


def _readers(graph, node: str) -> int:
    count = 0
    for reader in graph.successors(node):
        a = graph.nodes[reader]
        count += _readers(graph, reader) if a["op"] == "identity" else a["inputs"].count(node)
    return count


def _class_name(space: str) -> str:
    return "".join(part.capitalize() for part in space.replace("-", "_").split("_")) or "Network"
