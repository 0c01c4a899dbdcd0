"""The primitive registry: the terminals a space file may call.

A space file never runs code; every name it calls is a rule of the file or a
primitive registered here from Python. A primitive declares its arguments (name,
type, default); the compiler adds each primitive's shape rule, cost and module
factory. Users register their own with `register` before loading a space:

    from nasdsl.primitives import Arg, Primitive, register
    register(Primitive("mish_conv", (Arg("out", "int"), Arg("kernel", "int", 3))))
"""

from __future__ import annotations

import attrs

REQUIRED = object()
TYPES = ("int", "float", "bool", "str")


@attrs.frozen
class Arg:
    name: str
    type: str  # one of TYPES
    default: object = REQUIRED
    allowed: tuple | None = None  # for "str": the symbols accepted

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@attrs.frozen
class Primitive:
    name: str
    args: tuple = ()
    doc: str = ""

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)


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


# ---- the standard set --------------------------------------------------------
def _p(name, *args, doc=""):
    register(Primitive(name, tuple(args), doc))


_ACTS = ("relu", "relu6", "hswish", "hsigmoid", "silu", "gelu", "sigmoid", "mish", "identity")

_p("conv", Arg("out", "int"), Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("groups", "int", 1),
   Arg("dilation", "int", 1), Arg("bias", "bool", False), Arg("padding", "int", -1),
   doc="2-d convolution; padding -1 means 'same' for stride 1: dilation * (kernel - 1) // 2")
_p("dwconv", Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("dilation", "int", 1),
   Arg("bias", "bool", False), Arg("padding", "int", -1),
   doc="depthwise convolution (groups = channels), channels pass through")
_p("sepconv", Arg("out", "int"), Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("dilation", "int", 1),
   doc="depthwise then pointwise convolution, no norm or activation between")
_p("fact_reduce", Arg("out", "int"),
   doc="DARTS FactorizedReduce: relu, two stride-2 1x1 convs (one shifted by a pixel), concat, bn")
_p("bn", Arg("affine", "bool", True), Arg("eps", "float", 1e-5), Arg("momentum", "float", 0.1),
   doc="batch norm over channels")
_p("instancenorm", Arg("affine", "bool", True), doc="instance norm over channels")
_p("layernorm", Arg("affine", "bool", True), doc="layer norm over (channels, height, width)")
for _act in _ACTS[:-1]:
    _p(_act, doc=f"{_act} activation")
_p("act", Arg("kind", "str", allowed=_ACTS), doc="an activation named by a value: act(kind={relu, hswish})")
_p("se", Arg("ratio", "float", 0.25), Arg("divisor", "int", 8), Arg("squeeze", "int", 0),
   Arg("act", "str", "relu", allowed=_ACTS), Arg("gate", "str", "hsigmoid", allowed=_ACTS),
   doc="squeeze-and-excitation; squeeze channels = squeeze if > 0 else make_divisible(ratio * channels, divisor)")
_p("maxpool", Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("padding", "int", -1))
_p("avgpool", Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("padding", "int", -1),
   Arg("count_include_pad", "bool", False))
_p("gap", doc="global average pooling to 1x1")
_p("flatten")
_p("linear", Arg("out", "int"), Arg("bias", "bool", True))
_p("dropout", Arg("p", "float", 0.0))
_p("identity", doc="passes its input through")
_p("zero", Arg("stride", "int", 1), Arg("out", "int", 0),
   doc="outputs zeros (an absent edge); out 0 keeps the channel count")
_p("shuffle", Arg("groups", "int"), doc="channel shuffle")
