"""A compiled module as one Python file that needs only torch.

The file holds the source of every module class it uses that torch does not have,
one network class whose `__init__` builds each submodule at its provenance path
(so `state_dict` keys are the same) and whose `forward` is the GraphModule's
generated code, and `load()`, which reads the weights saved beside it.

`GraphModule.to_folder` pickles modules that are not torch's own, so its files
need nasdsl to load. Here each submodule is written as the constructor call that
makes it, its arguments read back from the module: torch's modules keep them as
attributes of the same names, and so must any other (nasdsl's own do). Reading
them back is a convention, not a guarantee, so `check_source` runs the text against
the module: a module that cannot be written back is an error, never a file that
computes something else.
"""

from __future__ import annotations

import ast
import inspect
import math
import sys
import textwrap

import attrs
import torch
from torch import nn

from ..language.errors import NasError

HINT = "a module is written as the call that constructs it: keep each constructor argument as an attribute " \
       "(or property) of the same name, as torch's modules do"

HEADER_IMPORTS = ("from pathlib import Path", "import torch", "from torch import nn")
PLACE = '''
def _place(root, path, module):
    """Put `module` at the dotted `path` under `root`, with plain containers on the way (as torch.fx does)."""
    *parents, name = path.split(".")
    for part in parents:
        if part not in root._modules:
            root.add_module(part, nn.Module())
        root = root._modules[part]
    root.add_module(name, module)
'''


@attrs.frozen
class Source:
    """A standalone Python file: its text, and the name of the network class in it."""

    text: str
    network: str


def python_source(module: torch.fx.GraphModule, input_shape: tuple, weights: str, doc: str = "") -> Source:
    """The file of `module`. `weights` is the name of the state_dict file `load()` reads
    by default, beside the Python file; `doc` opens the file's docstring."""
    targets = [node.target for node in module.graph.nodes if node.op == "call_module"]
    classes: dict[str, type] = {}
    calls = [(target, construction(module.get_submodule(target), classes)) for target in targets]
    for target in targets:  # classes that a module makes for itself need their source too
        for sub in module.get_submodule(target).modules():
            _need(type(sub), classes)
    name = type(module).__name__
    while name in classes or name in ("load", "INPUT_SHAPE", "WEIGHTS"):
        name += "Network"
    sources = [_class_source(cls) for cls in classes.values()]
    imports = sorted({line for cls in classes.values() for line in _imports(cls)} - set(HEADER_IMPORTS))
    built = "\n".join(f"            ({path!r}, {call})," for path, call in calls)
    forward = textwrap.indent(module.code.strip("\n"), "    ")
    doc = doc.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    parts = [
        f'"""{doc}\n\nWritten by nasdsl; it needs only torch. The weights are in {weights} beside it:\n\n'
        f"    model = load()       # {name} in eval mode, with those weights\n"
        f"    logits = model(torch.randn(1, *INPUT_SHAPE))\n" + '"""',
        "\n".join(["from __future__ import annotations", "", *HEADER_IMPORTS, *imports]),
        f"INPUT_SHAPE = {tuple(input_shape)!r}  # one sample's (C, H, W)\nWEIGHTS = {weights!r}",
        *sources,
        PLACE.strip("\n"),
        f"class {name}(nn.Module):\n"
        f"    def __init__(self):\n"
        f"        super().__init__()\n"
        f"        for path, module in (\n{built}\n        ):\n"
        f"            _place(self, path, module)\n\n{forward}",
        f"def load(path=None) -> {name}:\n"
        f'    """The network with the weights in `path` (default: WEIGHTS, beside this file), in eval mode."""\n'
        f"    path = Path(__file__).with_name(WEIGHTS) if path is None else path\n"
        f"    model = {name}()\n"
        f'    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))\n'
        f"    return model.eval()",
    ]
    text = "\n\n\n".join(parts) + "\n"
    _refuse_nasdsl(text)
    return Source(text, name)


def construction(m: nn.Module, classes: dict) -> str:
    """The constructor call that makes `m`, e.g. `nn.Conv2d(8, 16, (3, 3), padding=(1, 1), bias=False)`:
    each argument read from the attribute of its name (a child module as its own call),
    left out where it is the default. A `*args` takes the children in order (`nn.Sequential`)."""
    cls = type(m)
    reference = _need(cls, classes)
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        raise NasError(f"cannot write `{cls.__name__}` as Python: its constructor has no signature", hint=HINT) \
            from None
    args, keywords = [], False
    for p in parameters:
        if p.kind is p.VAR_POSITIONAL:
            args += [construction(child, classes) for child in m.children()]
            keywords = True
        elif p.kind is p.VAR_KEYWORD or p.name in ("device", "dtype"):
            keywords = True
        else:
            value = _argument(m, p, classes)
            if value is None:  # the default
                keywords = True
            elif p.default is p.empty and p.kind is not p.KEYWORD_ONLY and not keywords:
                args.append(value)
            else:
                args.append(f"{p.name}={value}")
                keywords = True
    return f"{reference}({', '.join(args)})"


def _argument(m: nn.Module, p: inspect.Parameter, classes: dict) -> str | None:
    """One argument's code, or None where the module has the default."""
    cls = type(m).__name__
    if p.name in m._modules:
        return construction(m._modules[p.name], classes)
    try:
        value = getattr(m, p.name)
    except AttributeError:
        raise NasError(f"cannot write `{cls}` as Python: it keeps no attribute `{p.name}` for that argument of "
                       "its constructor", hint=HINT) from None
    if isinstance(p.default, bool) and (value is None or isinstance(value, torch.Tensor)):
        value = value is not None  # `bias=False` is kept as `self.bias = None`
    if not _literal(value):
        raise NasError(f"cannot write `{cls}` as Python: its `{p.name}` is a {type(value).__name__}, not a value "
                       "a constructor call can spell", hint=HINT)
    return None if p.default is not p.empty and _same(value, p.default) else repr(value)


def _literal(value) -> bool:
    if isinstance(value, (tuple, list)):
        return type(value) in (tuple, list) and all(map(_literal, value))
    return value is None or type(value) in (bool, int, str) or (type(value) is float and math.isfinite(value))


def _same(value, default) -> bool:
    """Whether `value` is what the default gives: equal and of one type, or a tuple of it
    (`stride=1` is kept as `(1, 1)`)."""
    if type(value) is tuple and type(default) is not tuple:
        return bool(value) and all(_same(v, default) for v in value)
    return type(value) is type(default) and value == default


def _need(cls: type, classes: dict) -> str:
    """How the file names `cls`: torch's own by their torch name; any other by its own
    name, recorded in `classes` with its bases (bases first) for its source."""
    if cls.__module__.split(".")[0] == "torch":
        return f"nn.{cls.__name__}" if getattr(nn, cls.__name__, None) is cls else f"{cls.__module__}.{cls.__qualname__}"
    for base in reversed(cls.__mro__[1:]):
        if base is not object and base.__module__.split(".")[0] != "torch":
            _need(base, classes)
    if classes.setdefault(cls.__name__, cls) is not cls:
        raise NasError(f"cannot write the network as Python: two module classes are named `{cls.__name__}` "
                       f"({classes[cls.__name__].__module__} and {cls.__module__})")
    return cls.__name__


def _class_source(cls: type) -> str:
    try:
        return textwrap.dedent(inspect.getsource(cls)).strip("\n")
    except (OSError, TypeError):
        raise NasError(f"cannot write the network as Python: the source of `{cls.__name__}` ({cls.__module__}) "
                       "cannot be found", hint="define module classes in a .py file") from None


def _imports(cls: type) -> list[str]:
    """Import lines for the modules a class's source names (`F`, `math`), as its own file imports them."""
    scope = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
    names = {n.id for n in ast.walk(ast.parse(_class_source(cls))) if isinstance(n, ast.Name)}
    lines = []
    for name in sorted(names):
        value = scope.get(name)
        if inspect.ismodule(value):
            full = value.__name__
            if full == name:
                lines.append(f"import {full}")
            elif "." in full and full.rpartition(".")[2] == name:
                lines.append(f"from {full.rpartition('.')[0]} import {name}")
            else:
                lines.append(f"import {full} as {name}")
    return lines


def _refuse_nasdsl(text: str) -> None:
    for node in ast.walk(ast.parse(text)):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(m.split(".")[0] == "nasdsl" for m in modules):
            raise NasError("cannot write the network as Python that needs only torch: a module class imports nasdsl",
                           hint="module classes of your own primitives should need only torch")


def check_source(source: Source, module: nn.Module, example: torch.Tensor) -> None:
    """Run the file (in a namespace of its own) and refuse it unless its network, given
    `module`'s weights, computes what `module` does on `example`."""
    namespace = {"__name__": "nasdsl_exported"}
    try:
        exec(compile(source.text, "<exported network>", "exec"), namespace)
        network = namespace[source.network]()
        network.load_state_dict(module.state_dict())
        with torch.no_grad():
            mine, theirs = network.eval()(example), module.eval()(example)
    except Exception as err:
        raise NasError(f"the Python written for this network does not run: {type(err).__name__}: {err}",
                       hint=HINT) from err
    for a, b in zip(_flat(mine), _flat(theirs)):
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
            raise NasError("the Python written for this network computes something else than the network", hint=HINT)


def _flat(output) -> list:
    return list(output) if isinstance(output, (tuple, list)) else [output]
