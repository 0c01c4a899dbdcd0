"""`torch.fx.symbolic_trace` that keeps whole what it cannot trace through: the one
tracing step that `nasdsl.compiler.trace` (a model's graph) and
`nasdsl.compiler.erasing` (rewiring the traced module) share."""

from __future__ import annotations

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


def fx_trace(module: nn.Module) -> torch.fx.GraphModule:
    """`torch.fx.symbolic_trace`, except that a submodule whose own forward branches on
    a traced value (`if x.shape[-1] < k`, timm's dynamic "same" padding) is kept whole,
    a leaf: the graph then has one node for it, with its parameters and MACs, and the
    rest of the model is traced as usual. So is a module one nasdsl primitive
    describes (timm's attention, `nasdsl.compiler.known`). The model's own forward
    failing is an error naming the line."""
    leaves: set = set()
    known = {id(m) for m in module.modules() if describe(m) is not None}
    for _ in range(LEAF_TRIES):
        try:
            graph = _Tracer(leaves, known).trace(module)
            return torch.fx.GraphModule(module, graph, type(module).__name__)
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
