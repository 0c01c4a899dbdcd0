"""`torch.fx.symbolic_trace` that keeps whole what it cannot trace through: the one
tracing step that `nasdsl.compiler.trace` (a model's graph) and
`nasdsl.compiler.erasing` (rewiring the traced module) share."""

from __future__ import annotations

import contextlib
import copy
import operator
from pathlib import Path

import torch
import torch.fx
from torch import nn

from ..language.errors import NasError
from .known import describe

LEAF_TRIES = 32  # module classes that may become leaves before tracing gives up

class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, which also keeps whole the modules of `leaves` (classes) and
    those one nasdsl primitive describes (`nasdsl.compiler.known`)."""

    def __init__(self, leaves: set, known: set):
        super().__init__()
        self.leaves = leaves
        self.known = known  # ids of the described modules, found before tracing: reading a parameter while
        # tracing would put it into the graph

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in self.leaves or id(m) in self.known or super().is_leaf_module(m, qualname)


def example_of(shape) -> torch.Tensor:
    """The one example batch a specialised trace runs (`fx_trace`), the same for every
    trace of a model at this per-sample shape, so that re-tracing it gives its graph."""
    return torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))


def fx_trace(module: nn.Module, shape: tuple | None = None) -> torch.fx.GraphModule:
    """`torch.fx.symbolic_trace`, except where the model's code branches on a traced
    value (`if x.shape[-2] < k`, `math.ceil(h / p)`). Given the per-sample input `shape`,
    such code is traced specialised to it (`_Sized`: every size but the batch's is the
    example's number, and a branch goes the example's way), which keeps the layers
    inside visible. Otherwise, or where the specialised graph misses a parameter the
    model uses (one cached from a parameter in eval mode would be frozen), the
    submodule that branches is kept whole, a leaf: the graph has one node for it, with
    its parameters and MACs. Modules one nasdsl primitive describes (timm's
    attention, `nasdsl.compiler.known`) are leaves too. The model's own forward
    failing is an error naming the line."""
    known = {id(m) for m in module.modules() if describe(m) is not None}
    leafy, error = None, None
    try:
        with _untouched(module):
            leafy, leaves = _with_leaves(module, known)
        if not leaves:
            return leafy
    except NasError as err:
        error = err
    if shape is not None:
        try:
            with _untouched(module):
                gm = torch.fx.GraphModule(module, _Sized(known, example_of(shape)).trace(module),
                                          type(module).__name__)
            if leafy is None or _parameters(gm) >= _parameters(leafy):
                return gm
        except Exception:  # noqa: BLE001  a specialised trace that fails leaves the leaves
            pass
    if leafy is None:
        raise error
    return leafy


@contextlib.contextmanager
def _untouched(module: nn.Module):
    """Tracing runs the model's own Python, and what it stores on its modules (timm's
    tiny_vit caches attention biases per device) would hold proxies afterwards: each
    module's attributes, and the contents of its dicts, lists and sets, are put back.
    The tensors torch.fx adds to the root (`_tensor_constant0`, a constant the graph
    reads) stay."""
    saved = [(m, dict(vars(m))) for m in module.modules()]
    contents = {(id(m), k): copy.copy(v) for m, attrs in saved for k, v in attrs.items()
                if type(v) in (dict, list, set)}
    try:
        yield
    finally:
        for m, attrs in saved:
            now = vars(m)
            for k in [k for k in now if k not in attrs and not isinstance(now[k], torch.Tensor)]:
                del now[k]
            for k, v in attrs.items():
                now[k] = v
                if (id(m), k) in contents:
                    v.clear()
                    if isinstance(v, list):
                        v.extend(contents[id(m), k])
                    else:
                        v.update(contents[id(m), k])


def _with_leaves(module: nn.Module, known: set) -> tuple:
    """(graph module, leaf classes): traced with each class that branches on a traced value a leaf."""
    leaves: set = set()
    for _ in range(LEAF_TRIES):
        try:
            graph = _Tracer(leaves, known).trace(module)
            return torch.fx.GraphModule(module, graph, type(module).__name__), leaves
        except Exception as err:
            path, owner, where = _culprit(module, err)
            if owner is None or owner is module or type(owner) in leaves:
                raise NasError(f"cannot trace {type(module).__name__}{where}: {type(err).__name__}: "
                               f"{str(err).splitlines()[0]}", None,
                               "torch.fx.symbolic_trace needs control flow that does not depend on tensor values "
                               "or shapes (an `if x.shape[-1] < k`); rewrite that branch, or trace the submodules "
                               "around it") from err
            leaves.add(type(owner))
    raise NasError(f"cannot trace {type(module).__name__}: more than {LEAF_TRIES} kinds of submodule branch on "
                   "traced values")


def _parameters(gm: torch.fx.GraphModule) -> set:
    """The ids of the parameters a traced graph reads."""
    found = set()
    for n in gm.graph.nodes:
        if n.op == "call_module":
            found.update(id(p) for p in gm.get_submodule(n.target).parameters())
        elif n.op == "get_attr" and isinstance(value := operator.attrgetter(n.target)(gm), nn.Parameter):
            found.add(id(value))
    return found


class _SizedProxy(torch.fx.Proxy):
    """A proxy whose tensor's sizes (but the batch's), device and dtype are the example's."""

    def __getattr__(self, k):
        value = self.node.meta.get("example") if k in ("shape", "ndim", "device", "dtype", "is_cuda") else None
        if isinstance(value, torch.Tensor):
            return self.tracer.sizes(self) if k == "shape" else getattr(value, k)
        return super().__getattr__(k)


class _Sized(_Tracer):
    """A tracer that also runs the example through each operation it records (the
    node's `example` value), so that sizes are numbers and branches go its way."""

    def __init__(self, known: set, example: torch.Tensor):
        super().__init__(set(), known)
        self.example = example

    def proxy(self, node):
        return _SizedProxy(node, self)

    def sizes(self, p) -> tuple:
        """`x.shape` of the example: its batch a traced size (batches vary), the rest numbers."""
        batch = super().create_proxy("call_method", "size", (p, 0), {})
        batch.node.meta["example"] = p.node.meta["example"].shape[0]
        return (batch, *p.node.meta["example"].shape[1:])

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
        value = args[0].node.meta.get("example") if args and isinstance(args[0], torch.fx.Proxy) else None
        if kind == "call_method" and target in ("size", "dim") and isinstance(value, torch.Tensor):
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if target == "dim":
                return value.dim()
            if dim is None:
                return self.sizes(args[0])
            if isinstance(dim, int) and dim % value.dim() != 0:
                return value.shape[dim]
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        proxy.node.meta["example"] = self.run(kind, target, args, kwargs)
        return proxy

    def run(self, kind, target, args, kwargs):
        """The operation's value on the example (None where it cannot be computed)."""
        import torch.fx._symbolic_trace as symbolic

        def value(a):
            return a.node.meta.get("example") if isinstance(a, torch.fx.Proxy) else a

        args, kwargs = torch.fx.node.map_aggregate(args, value), torch.fx.node.map_aggregate(kwargs, value)
        try:
            with torch.no_grad():
                if kind == "placeholder":
                    return self.example
                if kind == "get_attr":
                    found = self.root
                    for part in target.split("."):  # past torch.fx's patched Module.__getattr__
                        try:
                            found = object.__getattribute__(found, part)
                        except AttributeError:
                            found = symbolic._orig_module_getattr(found, part)
                    return found
                if kind == "call_module":  # a leaf, called as itself, not through the tracer
                    patched = nn.Module.__call__, nn.Module.__getattr__
                    nn.Module.__call__, nn.Module.__getattr__ = symbolic._orig_module_call, symbolic._orig_module_getattr
                    try:
                        return self.root.get_submodule(target)(*args, **kwargs)
                    finally:
                        nn.Module.__call__, nn.Module.__getattr__ = patched
                if kind == "call_method":
                    return getattr(args[0], target)(*args[1:], **kwargs)
                if kind == "call_function":
                    return target(*args, **kwargs)
        except Exception:  # noqa: BLE001  no value: a branch on it fails as in a plain trace
            return None
        return None

    # a branch on a number (one computed from the batch size) goes the example's way; one on a
    # tensor's values (`if x.sum() > 0`) depends on the data, and fails as in a plain trace
    def to_bool(self, obj):
        value = obj.node.meta.get("example")
        return bool(value) if isinstance(value, (bool, int, float)) else super().to_bool(obj)

    def iter(self, obj):
        value = obj.node.meta.get("example")
        return (obj[i] for i in range(len(value))) if isinstance(value, (tuple, list)) else super().iter(obj)


def _culprit(root: nn.Module, err: BaseException) -> tuple:
    """(path, module, ` in `path` (Class.forward, file:line)`) of the failure: the
    innermost submodule whose code is on the stack, and the innermost line outside
    torch, the model's own code that branched on a traced value (path and module None
    where no submodule's code is on the stack)."""
    names = {id(m): path for path, m in root.named_modules()}
    torch_dir = str(Path(torch.__file__).parent)
    ours = {__file__, str(Path(__file__).with_name("trace.py"))}  # the tracer's own frames
    line, owner, tb = None, None, err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if not frame.f_code.co_filename.startswith(torch_dir) and frame.f_code.co_filename not in ours:
            line = (frame, tb.tb_lineno)
            me = frame.f_locals.get("self")
            if isinstance(me, nn.Module) and id(me) in names:
                owner = me
        tb = tb.tb_next
    if line is None:
        return None, None, ""
    frame, number = line
    at = f"{frame.f_code.co_name}, {Path(frame.f_code.co_filename).name}:{number}"
    if owner is None or owner is root:
        return ("", root, f" ({at})") if owner is root else (None, None, f" ({at})")
    path = names[id(owner)]
    return path, owner, f" in `{path}` ({type(owner).__name__}, {at})"
