"""The import contract: language < space < compiler < runtime < cli. A module imports
only modules of its own layer or below, not even inside a function, and no modules
import each other in a cycle. Read from the source (every `import` statement, at any
depth), so a hidden function-level import counts as much as one at the top."""

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["language", "space", "compiler", "runtime", "cli"]
# the front door (`nasdsl/__init__.py`) gathers the language, space and compiler
FRONT_DOOR_LAYER = "compiler"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = ("nasdsl", *rel.parts[1:]) if rel.parts[0] == "runtime" else rel.parts
    name = ".".join(parts).removesuffix(".py")
    if rel.parts[0] == "runtime":
        name = "nasdsl.runtime" + name.removeprefix("nasdsl")
    return name.removesuffix(".__init__")


def sources() -> dict[str, Path]:
    files = [*(ROOT / "nasdsl").rglob("*.py"), *(ROOT / "runtime").rglob("*.py")]
    return {module_name(p): p for p in files}


def layer(module: str) -> str | None:
    if module in ("nasdsl", "nasdsl.__main__"):
        return FRONT_DOOR_LAYER if module == "nasdsl" else "cli"
    part = module.split(".")[1]
    return part if part in LAYERS else None


def imports(module: str, path: Path, known: set) -> set[str]:
    """The project modules `module` imports, resolved to the longest known name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != module:
                found.add(t)
    return found


def import_graph() -> nx.DiGraph:
    mods = sources()
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for name, path in mods.items():
        for target in imports(name, path, set(mods)):
            if not name.startswith(target + "."):  # a module's own packages are not its dependencies
                graph.add_edge(name, target)
    return graph


def test_every_module_is_in_a_layer():
    assert [m for m in sources() if layer(m) is None] == []


def test_no_lower_layer_imports_a_higher_one():
    order = {name: i for i, name in enumerate(LAYERS)}
    wrong = [f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, b in import_graph().edges
             if order[layer(b)] > order[layer(a)]]
    assert wrong == []


def test_no_import_cycles():
    assert sorted(nx.simple_cycles(import_graph())) == []


def test_the_contract_sees_function_level_imports(tmp_path):
    """The reader finds an import inside a function, relative ones included."""
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from ..compiler import graph\n    import nasdsl.runtime.store\n")
    known = {"nasdsl.compiler.graph", "nasdsl.runtime.store", "nasdsl.space.x"}
    assert imports("nasdsl.space.x", path, known) == {"nasdsl.compiler.graph", "nasdsl.runtime.store"}
