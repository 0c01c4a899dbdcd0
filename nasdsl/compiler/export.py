"""Graph → JSON (for machines) and Graphviz (for people: one cluster per rule);
module → the files a found network is used from: ONNX, a `torch.export` program,
standalone Python with its state_dict."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

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


def to_dot(graph: nx.DiGraph, fill: dict | None = None) -> str:
    """Graphviz source: nodes labelled `op(args)` and output shape, nested clusters
    following the provenance path (one per rule call, repetition copy, dag node);
    `fill` colours some nodes ({node: colour}: the structures a sparsify run erased)."""
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
            colour = f', fillcolor="{fill[node_id]}"' if fill and node_id in fill else ""
            lines.append(f'{indent}"{node_id}" [label="{_label(node_id, a)}"{colour}];')
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


def write_png(graph: nx.DiGraph, path: str, fill: dict | None = None) -> None:
    render_png(to_dot(graph, fill), path)


def render_png(source: str, path: str) -> None:
    """Graphviz source drawn as a PNG by `dot`."""
    dot = shutil.which("dot")
    if dot is None:
        raise NasError("drawing a PNG needs Graphviz's `dot`", None,
                       "install it (Debian: apt-get install graphviz), or write --dot FILE and render it elsewhere")
    result = subprocess.run([dot, "-Tpng", "-o", path], input=source, text=True, capture_output=True)
    if result.returncode != 0:
        raise NasError(f"dot could not draw {path}: {result.stderr.strip()}")


# ---- a module's files --------------------------------------------------------------
def require_onnx() -> None:
    """ONNX is written by torch.onnx's exporter, which needs `onnx` and `onnxscript` (the `onnx` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise NasError(f"writing ONNX needs the `onnx` extra ({err.name} is not installed)",
                       hint="pip install 'nasdsl[onnx]'") from None


def write_module(module, input_shape: tuple, files: dict, doc: str = "") -> None:
    """Write `module`, in eval mode, in the forms `files` maps to paths: `onnx`, `pt2`
    (`torch.export.save`), `py` (nasdsl.compiler.source; its `load()` reads the
    `state_dict` file, which must be beside it). The batch size stays free in ONNX and
    the program. Every file is written whole or not at all: if one form cannot be
    written (an op ONNX has no function for), none of them is."""
    import torch

    from .source import check_source, python_source

    if "py" in files and "state_dict" not in files:
        raise ValueError("the `py` form needs a `state_dict` file beside it")
    if "onnx" in files:
        require_onnx()
    module.eval()
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    contents = {}
    for form, path in files.items():
        if form == "py":
            source = python_source(module, input_shape, Path(files["state_dict"]).name, doc)
            check_source(source, module, example)
            contents[path] = source.text.encode()
        elif form == "state_dict":
            contents[path] = _saved(torch.save, module.state_dict())
        else:
            contents[path] = _exported(form, module, example)
    _write_all(contents)


def _exported(form: str, module, example) -> bytes:
    """The bytes of the ONNX model or torch.export program; an exporter's failure
    (an op it cannot take) is a NasError with the exporter's own reason."""
    import torch

    dynamic = ({0: torch.export.Dim("batch", min=1)},)  # the batch size stays free
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporters may print; stdout is --json's
            if form == "pt2":
                return _saved(torch.export.save, torch.export.export(module, (example,), dynamic_shapes=dynamic))
            program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=dynamic, verbose=False)
            return program.model_proto.SerializeToString()
    except Exception as err:
        name = {"onnx": "ONNX", "pt2": "a torch.export program"}[form]
        raise NasError(f"cannot export this network as {name}: {_reason(err)}",
                       hint="--debug shows the exporter's whole report") from err


def _reason(err: BaseException) -> str:
    """The exporter's reason: the first line of the innermost cause, without colours."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _saved(save, value) -> bytes:
    buffer = io.BytesIO()
    save(value, buffer)
    return buffer.getvalue()


def _write_all(contents: dict) -> None:
    """Each file to a hidden name beside it, then all renamed: none is left half-written."""
    written = []  # (partial, path)
    try:
        for path, data in contents.items():
            path = Path(path)
            written.append((path.with_name(f".{path.name}.partial"), path))
            try:
                written[-1][0].write_bytes(data)
            except OSError as err:
                raise NasError(f"cannot write {path}: {err.strerror or err}") from None
        for partial, path in written:
            try:
                os.replace(partial, path)
            except OSError as err:
                raise NasError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        for partial, _ in written:
            partial.unlink(missing_ok=True)
