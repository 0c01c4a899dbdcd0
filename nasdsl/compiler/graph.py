"""Derivation → dependency graph: a `networkx.DiGraph` with one node per operation.

Each node carries

    op        the primitive (or `input`, `output`, `add`, `concat`)
    args      its evaluated arguments
    path      its provenance: the derivation path of the choice that made it, with the
              chosen alternatives' labels (`stage1.cell.0.x2.op1.nor_conv_3x3.relu_conv_bn.conv`)
    rules     the grammar path behind it (`network`, `stage`, `cell`, `op`, `relu_conv_bn`)
    inputs    the nodes it reads, in order (edges carry the same, for graph algorithms)
    in_shapes, shape, params, macs

The walk itself is `nasdsl.compiler.elaborate`, choosing as derivation `d` does.
Shapes are inferred symbolically, per sample, without calling torch; a mismatch
names the path and the shapes. The node id is the path, so a module's submodule
names and `state_dict` keys mean the same thing in every derivation that has them.
"""

from __future__ import annotations

import networkx as nx

from ..language.errors import NasError
from ..space.derivation import Derivation
from .elaborate import derivation_chooser, elaborate


def default_input_shape(space) -> tuple:
    """(in_channels, resolution, resolution) from the space's parameters, else (3, 32, 32)."""
    c = space.params.get("in_channels", 3)
    r = space.params.get("resolution", 32)
    return (int(c), int(r), int(r))


def build_graph(space, d: Derivation, input_shape: tuple | None = None) -> nx.DiGraph:
    """The dependency graph of derivation `d` of `space` for one input of `input_shape`."""
    d = space.validate(d)
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(space)
    if any(not isinstance(n, int) or n < 1 for n in shape):
        raise NasError(f"an input shape is positive whole numbers, got {shape}")
    return elaborate(space, derivation_chooser(space, d), shape, derivation=d.text)


def holder(graph, node) -> str:
    """The path of the submodule that holds a node's weights: the node's id, or the
    module a traced function call works on (`module`, see `nasdsl.compiler.trace`)."""
    return graph.nodes[node].get("module", node)


def output_shape(graph) -> tuple:
    outs = graph.graph["outputs"]
    return graph.nodes[outs[0]]["shape"] if len(outs) == 1 else tuple(graph.nodes[o]["shape"] for o in outs)
