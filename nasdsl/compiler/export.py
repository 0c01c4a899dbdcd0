"""Graph → JSON (for machines) and Graphviz (for people: one cluster per rule)."""

from __future__ import annotations

import shutil
import subprocess

import networkx as nx

from ..language.errors import NasError


def to_json(graph: nx.DiGraph) -> dict:
    nodes = []
    for node_id in nx.topological_sort(graph):
        a = graph.nodes[node_id]
        nodes.append({"id": node_id, "op": a["op"], "args": a["args"], "rules": list(a["rules"]),
                      "inputs": a["inputs"], "in_shapes": [list(s) for s in a["in_shapes"]],
                      "shape": list(a["shape"]) if a["shape"] is not None else None,
                      "params": a["params"], "macs": a["macs"]})
    meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in graph.graph.items()}
    return {**meta, "nodes": nodes}


def _label(node_id, a) -> str:
    if a["op"] in ("input", "output"):
        shape = a["shape"] if a["shape"] is not None else ""
        return f"{a['op']}\\n{shape}"
    args = ", ".join(f"{k}={v}" for k, v in a["args"].items() if k in ("out", "kernel", "stride", "groups", "kind", "p"))
    head = f"{a['op']}({args})" if args else a["op"]
    return f"{head}\\n{'x'.join(map(str, a['shape']))}"


def to_dot(graph: nx.DiGraph) -> str:
    """Graphviz source: nodes labelled `op(args)` and output shape, nested clusters
    following the provenance path (one per rule call, repetition copy, dag node)."""
    lines = [f'digraph "{graph.graph.get("space", "network")}" {{', "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontname="Helvetica", fontsize=10];']
    tree: dict = {}
    for node_id, a in graph.nodes(data=True):
        parts = node_id.split(".")[:-1] if a["op"] not in ("input", "output") else []
        level = tree
        for p in parts:
            level = level.setdefault(p, {})
        level.setdefault("", []).append(node_id)
    counter = [0]

    def emit(level, indent, prefix):
        for node_id in level.get("", []):
            a = graph.nodes[node_id]
            lines.append(f'{indent}"{node_id}" [label="{_label(node_id, a)}"];')
        for name, sub in level.items():
            if name == "":
                continue
            counter[0] += 1
            lines.append(f"{indent}subgraph cluster_{counter[0]} {{")
            lines.append(f'{indent}  label="{name}"; style=rounded; color="#999999"; fontsize=9;')
            emit(sub, indent + "  ", f"{prefix}.{name}")
            lines.append(f"{indent}}}")

    emit(tree, "  ", "")
    for u, v in graph.edges():
        lines.append(f'  "{u}" -> "{v}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_png(graph: nx.DiGraph, path: str) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise NasError("drawing a PNG needs Graphviz's `dot`", None,
                       "install it (Debian: apt-get install graphviz), or write --dot FILE and render it elsewhere")
    result = subprocess.run([dot, "-Tpng", "-o", path], input=to_dot(graph), text=True, capture_output=True)
    if result.returncode != 0:
        raise NasError(f"dot could not draw {path}: {result.stderr.strip()}")
