"""The primitive registry: the terminals a space file may call.

A space file never runs code; every name it calls is a rule of the file or a
primitive registered here from Python. A primitive declares

    args     its arguments (name, type, default): what the language checks
    shape    how its output shape follows from its input shape(s) and arguments
    params   its parameter count        macs  its multiply-accumulates (per sample)
    module   a factory for the torch.nn.Module (None: the op passes its input on)

and what the analyses of a built network need to know about the op, so that none
of them keeps a list of op names:

    channels     how its output channels follow from its input's (`Channels`):
                 channel groups and pruning read it; undeclared, a barrier
    slicer       cuts its module to kept input and output channels (pruning)
    inner        channels inside its module that no other layer sees (an attention's
                 heads x head_dim, an MLP's hidden width): a channel group of their
                 own, cut by the slicer's `inner=` and zeroed in the tensors named
    adapter      seeds one of its tensors from a parent's of another shape
                 (weight inheritance); None: the standard one
    keeps_output whether autograd keeps its output for the backward pass: if not,
                 the activation after it may work in place
    strongest_first  orders its inner channels (those no group covers, an SE's
                 squeeze) strongest first, so a ticket's narrower copy keeps the best

The language checks calls against the arguments alone; the rest is the compiler's,
which registers the standard set (`nasdsl.compiler.primitives`, with the slicers
and adapters of `nasdsl.compiler.channels`). Users register their own the same
way, before loading a space:

    from nasdsl import Arg, Channels, Primitive, register
    register(Primitive("double", (Arg("scale", "float", 2.0),), shape=lambda a, s: s[0],
                       module=lambda a, s: MyDouble(a["scale"]), channels=Channels("pass")))
"""

from __future__ import annotations

from typing import Callable

import attrs

from .errors import NasError

REQUIRED = object()
TYPES = ("int", "float", "bool", "str")


class ShapeError(ValueError):
    """A primitive cannot take its input; the compiler adds the path."""


@attrs.frozen
class Arg:
    name: str
    type: str  # one of TYPES
    default: object = REQUIRED
    allowed: tuple | None = None  # for "str": the symbols accepted
    low: float | None = None  # for numbers: the least value accepted (inclusive)
    high: float | None = None  # ... and the greatest

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def problem(self, value) -> str | None:
        """Why `value` (already of the declared type) is not accepted, or None."""
        if self.allowed and value not in self.allowed:
            return f"takes one of {', '.join(self.allowed)}"
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            low = "" if self.low is None else f"at least {self.low:g}"
            high = "" if self.high is None else f"at most {self.high:g}"
            return f"must be {' and '.join(filter(None, (low, high)))}"
        return None


def _same(args, shapes):
    return shapes[0]


def _zero(args, shapes, out=None):
    return 0


@attrs.frozen
class Channels:
    """How an op's output channels follow from its first input's.

    flow   "producer"   new channels, each computed from all input channels (conv, linear)
           "pass"       the input's channels, in order (bn, relu, pooling), or rearranged by `order`
           "depthwise"  the input's channels, each through its own filter (dwconv): as
                        "pass", but the op names their group where no layer before it made them
           "barrier"    unknown: the channels on both sides stay whole
    whole  the sides ("in", "out") whose channels must stay whole, e.g. fact_reduce's
           output, whose two halves come from two convs
    order  for "pass": (args, in shapes) -> the input position of each output position
           (a channel shuffle permutes, a flatten repeats each channel per pixel)
    zero   for "pass": whether a zero channel stays zero (a sigmoid makes it 0.5, so a
           channel removed before it would still reach a layer that sums channels)
    """

    flow: str
    whole: tuple = ()
    order: Callable | None = None
    zero: bool = True

    def __attrs_post_init__(self):
        if self.flow not in FLOWS:
            raise ValueError(f"channel flow `{self.flow}` is not one of {', '.join(FLOWS)}")
        if not set(self.whole) <= {"in", "out"}:
            raise ValueError(f"the sides kept whole are \"in\" and \"out\", got {self.whole}")


FLOWS = ("producer", "pass", "depthwise", "barrier")
PRODUCER, PASS, DEPTHWISE, BARRIER = (Channels(f) for f in FLOWS)


@attrs.frozen
class Primitive:
    name: str
    args: tuple = ()
    doc: str = ""
    shape: Callable = _same
    params: Callable = _zero
    macs: Callable = _zero  # (args, in shapes, out shape) -> int
    module: Callable | None = None  # (args, in shapes) -> nn.Module; None: passes its input on
    channels: Channels | Callable = BARRIER  # or (args, in shapes, out shape) -> Channels
    slicer: Callable | None = None  # (module, input channels kept, output channels kept): cuts it in place
    # (args, in shapes) -> (count, ((tensor name, axis, blocks), ...)) | None: its inner channels, and
    # where each tensor holds them (along `axis`, in `blocks` equal parts: q, k and v of a qkv)
    inner: Callable | None = None
    # (tensor name, parent's, child's, parent args, child args) -> (tensor, count) | None
    adapter: Callable | None = None
    # (tensor name, supernet bank tensor, shape) -> [(bank view, index into the tensor)]; None: `channels.pieces`
    window: Callable | None = None
    keeps_output: bool = True  # False lets a following activation overwrite the output
    strongest_first: Callable | None = None  # (its tensors by name) -> the same, inner channels strongest first
    # whether an all-zero input gives an all-zero output, or (args) -> that: functional
    # identity (nasdsl.compiler.identity) lets a zero edge's zeros through such an op
    zero_at_zero: bool | Callable = False

    def keeps_zero(self, args: dict) -> bool:
        return self.zero_at_zero if isinstance(self.zero_at_zero, bool) else bool(self.zero_at_zero(args))

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)

    def inner_of(self, args: dict, in_shapes) -> tuple | None:
        """(how many inner channels, where its tensors hold them), or None."""
        return self.inner(args, in_shapes) if self.inner else None

    def channels_of(self, args: dict, in_shapes, shape) -> Channels:
        """The op's channel flow for these arguments and shapes."""
        return self.channels if isinstance(self.channels, Channels) else self.channels(args, in_shapes, shape)


_REGISTRY: dict[str, Primitive] = {}


def register(primitive: Primitive, *, replace: bool = False) -> Primitive:
    """Add a primitive; refuses to shadow an existing one unless `replace`."""
    if primitive.name in _REGISTRY and not replace:
        raise ValueError(f"primitive `{primitive.name}` is already registered")
    for a in primitive.args:
        if a.type not in TYPES:
            raise ValueError(f"primitive `{primitive.name}`: argument `{a.name}` has unknown type `{a.type}`")
    _REGISTRY[primitive.name] = primitive
    return primitive


def get(name: str) -> Primitive | None:
    return _REGISTRY.get(name)


def names() -> list[str]:
    return sorted(_REGISTRY)


PLUGINS_VARIABLE = "NASDSL_PLUGINS"  # carries --plugin to the search's worker processes


def load_plugins(names) -> None:
    """Import what `--plugin` names: a module name (`mylab.primitives`) or a `.py`
    file. Code runs only because the user asked for it on the command line; a space
    file can never ask for it. The names are kept in the environment, so that the
    worker processes of a search import them too (`nasdsl.runtime.executors`), and `plugins_of_this_run` gives them back."""
    import importlib
    import importlib.util
    import os
    from pathlib import Path

    for name in names:
        try:
            if name.endswith(".py"):
                path = Path(name).resolve()
                spec = importlib.util.spec_from_file_location(f"nasdsl_plugin_{path.stem}", path)
                if spec is None or not path.is_file():
                    raise ImportError(f"no file {path}")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except Exception as err:  # a plugin is the user's code: any failure is theirs to see
            raise NasError(f"--plugin {name}: cannot import it: {type(err).__name__}: {err}",
                           hint="give an importable module name or the path of a .py file") from None
    if names:
        known = plugins_of_this_run()
        resolved = [str(Path(n).resolve()) if n.endswith(".py") else n for n in names]
        os.environ[PLUGINS_VARIABLE] = os.pathsep.join(dict.fromkeys(known + resolved))


def plugins_of_this_run() -> list[str]:
    """The plugins `load_plugins` imported in this process or its parent search."""
    import os

    return [n for n in os.environ.get(PLUGINS_VARIABLE, "").split(os.pathsep) if n]
