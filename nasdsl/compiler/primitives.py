"""The standard primitives: shape, params, MACs and torch module of each, and
how channels flow through it, how its module is sliced and its weights adapted
(`nasdsl.compiler.channels`), and whether its output is kept for backward.

Shapes are per sample: `(C, H, W)` for feature maps, `(F,)` for vectors. MACs
count what `torch.utils.flop_counter` counts (convolutions and matrix products),
halved. Torch is imported only when a module is built. The registry itself (and
how users add to it) is `nasdsl.language.primitives`.
"""

from __future__ import annotations

import math

from ..language.expr import make_divisible
from ..language.primitives import (
    BARRIER,
    DEPTHWISE,
    PASS,
    PRODUCER,
    REQUIRED,
    TYPES,
    Arg,
    Channels,
    Primitive,
    ShapeError,
    get,
    names,
    register,
)
from . import channels as ch

__all__ = ["BARRIER", "DEPTHWISE", "PASS", "PRODUCER", "REQUIRED", "TYPES", "Arg", "Channels", "Primitive",
           "ShapeError", "get", "names", "register"]


# ---- shape helpers ----------------------------------------------------------------
def feature_map(shapes, name) -> tuple:
    if len(shapes[0]) != 3:
        raise ShapeError(f"`{name}` needs a feature map (C, H, W), got {_fmt(shapes[0])}")
    return shapes[0]


def _fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def same_padding(kernel, dilation, padding):
    return dilation * (kernel - 1) // 2 if padding < 0 else padding


def conv_out(size, kernel, stride, dilation, padding, name):
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise ShapeError(f"`{name}` with kernel {kernel}, stride {stride} cannot take a {size}-pixel side")
    return out


def _positive(args, name, *keys):
    for k in keys:
        if args[k] < 1:
            raise ShapeError(f"`{name}`: {k} must be at least 1, got {args[k]}")


# ---- convolutions -------------------------------------------------------------------
def _conv_shape(a, s):
    c, h, w = feature_map(s, "conv")
    _positive(a, "conv", "out", "kernel", "stride", "groups", "dilation")
    if c % a["groups"] or a["out"] % a["groups"]:
        raise ShapeError(f"`conv`: groups={a['groups']} must divide both {c} input and {a['out']} output channels")
    p = same_padding(a["kernel"], a["dilation"], a["padding"])
    return (a["out"], conv_out(h, a["kernel"], a["stride"], a["dilation"], p, "conv"),
            conv_out(w, a["kernel"], a["stride"], a["dilation"], p, "conv"))


def _conv_params(a, s):
    return a["out"] * (s[0][0] // a["groups"]) * a["kernel"] ** 2 + (a["out"] if a["bias"] else 0)


def _conv_macs(a, s, o):
    return a["out"] * (s[0][0] // a["groups"]) * a["kernel"] ** 2 * o[1] * o[2]


def _conv_module(a, s):
    from torch import nn

    return nn.Conv2d(s[0][0], a["out"], a["kernel"], a["stride"], same_padding(a["kernel"], a["dilation"], a["padding"]),
                     a["dilation"], a["groups"], a["bias"])


def _conv_channels(a, s, o):
    """A plain conv makes new channels; a grouped one that keeps the width couples each
    output channel with its input channel; one that changes it cannot be sliced."""
    if a["groups"] == 1:
        return PRODUCER
    return DEPTHWISE if o[0] == s[0][0] else Channels("producer", whole=("in", "out"))


def _dw(a, s):
    """A depthwise conv's arguments as a conv's."""
    return {**a, "out": s[0][0], "groups": s[0][0]}


def _sep_parts(a, s):
    dw = {"out": s[0][0], "kernel": a["kernel"], "stride": a["stride"], "groups": s[0][0],
          "dilation": a["dilation"], "bias": False, "padding": -1}
    mid = _conv_shape(dw, s)
    pw = {"out": a["out"], "kernel": 1, "stride": 1, "groups": 1, "dilation": 1, "bias": False, "padding": 0}
    return dw, mid, pw


def _sep_shape(a, s):
    _, mid, pw = _sep_parts(a, s)
    return _conv_shape(pw, [mid])


def _sep_params(a, s):
    dw, mid, pw = _sep_parts(a, s)
    return _conv_params(dw, s) + _conv_params(pw, [mid])


def _sep_macs(a, s, o):
    dw, mid, pw = _sep_parts(a, s)
    return _conv_macs(dw, s, mid) + _conv_macs(pw, [mid], o)


def _sep_module(a, s):
    from torch import nn

    dw, mid, pw = _sep_parts(a, s)
    return nn.Sequential(_conv_module(dw, s), _conv_module(pw, [mid]))


def _fr_shape(a, s):
    c, h, w = feature_map(s, "fact_reduce")
    if a["out"] % 2 or a["out"] < 2:
        raise ShapeError(f"`fact_reduce` needs an even number of output channels, got {a['out']}")
    if h % 2 or w % 2:
        raise ShapeError(f"`fact_reduce` needs an even height and width, got {_fmt(s[0])}")
    return (a["out"], h // 2, w // 2)


def _fr_params(a, s):
    return 2 * s[0][0] * (a["out"] // 2) + 2 * a["out"]


def _fr_macs(a, s, o):
    return 2 * s[0][0] * (a["out"] // 2) * o[1] * o[2]


def _fr_module(a, s):
    from .modules import FactorizedReduce

    return FactorizedReduce(s[0][0], a["out"])


# ---- normalisation, activations, pooling ----------------------------------------------
def _norm_params(a, s):
    return 2 * s[0][0] if a["affine"] else 0


def _bn_module(a, s):
    from torch import nn

    cls = nn.BatchNorm2d if len(s[0]) == 3 else nn.BatchNorm1d
    return cls(s[0][0], eps=a["eps"], momentum=a["momentum"], affine=a["affine"])


_ACTIVATIONS = {"relu": "ReLU", "relu6": "ReLU6", "hswish": "Hardswish", "hsigmoid": "Hardsigmoid",
                "silu": "SiLU", "gelu": "GELU", "sigmoid": "Sigmoid", "mish": "Mish"}


def activation_module(kind: str):
    from torch import nn

    if kind == "identity":
        return nn.Identity()
    cls = getattr(nn, _ACTIVATIONS[kind])
    return cls(inplace=True) if kind in ("relu", "relu6", "hswish", "hsigmoid", "silu", "mish") else cls()


def _pool_shape(name):
    def shape(a, s):
        c, h, w = feature_map(s, name)
        _positive(a, name, "kernel", "stride")
        p = (a["kernel"] - 1) // 2 if a["padding"] < 0 else a["padding"]
        if 2 * p > a["kernel"]:
            raise ShapeError(f"`{name}`: padding {p} is more than half the kernel {a['kernel']}")
        return (c, *(_pooled(side, a["kernel"], a["stride"], p, a.get("ceil_mode", False), name) for side in (h, w)))

    return shape


def _pooled(size, kernel, stride, padding, ceil_mode, name):
    """A pooled side, as torch computes it: with `ceil_mode` the last window may hang over
    the edge, but must start inside the input or its left padding."""
    if not ceil_mode:
        return conv_out(size, kernel, stride, 1, padding, name)
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise ShapeError(f"`{name}` with kernel {kernel}, stride {stride} cannot take a {size}-pixel side")
    return out


def _maxpool_module(a, s):
    from torch import nn

    return nn.MaxPool2d(a["kernel"], a["stride"], (a["kernel"] - 1) // 2 if a["padding"] < 0 else a["padding"],
                        **({"ceil_mode": True} if a.get("ceil_mode") else {}))


def _avgpool_module(a, s):
    from torch import nn

    return nn.AvgPool2d(a["kernel"], a["stride"], (a["kernel"] - 1) // 2 if a["padding"] < 0 else a["padding"],
                        count_include_pad=a["count_include_pad"], **({"ceil_mode": True} if a.get("ceil_mode") else {}))


def se_squeeze(a, channels: int) -> int:
    return a["squeeze"] if a["squeeze"] > 0 else make_divisible(a["ratio"] * channels, a["divisor"])


def _se_params(a, s):
    c = s[0][0]
    q = se_squeeze(a, c)
    return c * q + q + q * c + c


def _se_module(a, s):
    from .modules import SqueezeExcitation

    return SqueezeExcitation(s[0][0], se_squeeze(a, s[0][0]), activation_module(a["act"]), activation_module(a["gate"]))


def _linear_shape(a, s):
    if len(s[0]) != 1:
        raise ShapeError(f"`linear` needs a vector (F,), got {_fmt(s[0])}; flatten first")
    _positive(a, "linear", "out")
    return (a["out"],)


def _linear_module(a, s):
    from torch import nn

    return nn.Linear(s[0][0], a["out"], a["bias"])


def _flatten_order(a, s):
    """Each channel repeated once per pixel (a pooled vector: once)."""
    import numpy as np

    return np.repeat(np.arange(s[0][0]), math.prod(s[0][1:]))


def _shuffle_order(a, s):
    import numpy as np

    c, g = s[0][0], a["groups"]
    return np.arange(c).reshape(g, c // g).T.reshape(-1)


def _zero_shape(a, s):
    c, h, w = feature_map(s, "zero")
    _positive(a, "zero", "stride")
    return (a["out"] or c, -(-h // a["stride"]), -(-w // a["stride"]))


def _shuffle_shape(a, s):
    c = feature_map(s, "shuffle")[0]
    if a["groups"] < 1 or c % a["groups"]:
        raise ShapeError(f"`shuffle`: {a['groups']} groups must divide {c} channels")
    return s[0]


def _module(factory_name, **fixed):
    """A factory for one of nasdsl.compiler.modules' classes."""

    def build(a, s):
        from . import modules

        return getattr(modules, factory_name)(**{k: (v(a, s) if callable(v) else v) for k, v in fixed.items()})

    return build


# ---- the standard set --------------------------------------------------------------
_ACTS = tuple(_ACTIVATIONS) + ("identity",)


def _no_bias(a) -> bool:
    return not a["bias"]


def _not_affine(a) -> bool:  # normalised zeros are zeros; the affine shift is not
    return not a["affine"]


def _p(name, *args, **semantics):
    register(Primitive(name, tuple(args), **semantics))


_p("conv", Arg("out", "int"), Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("groups", "int", 1),
   Arg("dilation", "int", 1), Arg("bias", "bool", False), Arg("padding", "int", -1),
   doc="2-d convolution; padding -1 keeps the size at stride 1: dilation * (kernel - 1) // 2",
   shape=_conv_shape, params=_conv_params, macs=_conv_macs, module=_conv_module,
   channels=_conv_channels, slicer=ch.slice_conv, adapter=ch.adapt_conv, keeps_output=False,
   zero_at_zero=_no_bias)
_p("dwconv", Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("dilation", "int", 1),
   Arg("bias", "bool", False), Arg("padding", "int", -1),
   doc="depthwise convolution (groups = channels); the channels pass through",
   shape=lambda a, s: _conv_shape(_dw(a, s), s), params=lambda a, s: _conv_params(_dw(a, s), s),
   macs=lambda a, s, o: _conv_macs(_dw(a, s), s, o), module=lambda a, s: _conv_module(_dw(a, s), s),
   channels=DEPTHWISE, slicer=ch.slice_conv, keeps_output=False,
   zero_at_zero=_no_bias)
_p("sepconv", Arg("out", "int"), Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("dilation", "int", 1),
   doc="depthwise then pointwise convolution (no norm or activation between)",
   shape=_sep_shape, params=_sep_params, macs=_sep_macs, module=_sep_module,
   channels=PRODUCER, slicer=ch.slice_sepconv, keeps_output=False,
   zero_at_zero=True)
_p("fact_reduce", Arg("out", "int"),
   doc="DARTS FactorizedReduce: relu, two stride-2 1x1 convs (one shifted by a pixel), concat, bn",
   shape=_fr_shape, params=_fr_params, macs=_fr_macs, module=_fr_module,
   channels=Channels("producer", whole=("out",)), slicer=ch.slice_fact_reduce, adapter=ch.adapt_fact_reduce,
   window=ch.window_fact_reduce, keeps_output=False)
_p("bn", Arg("affine", "bool", True), Arg("eps", "float", 1e-5, low=0), Arg("momentum", "float", 0.1, low=0, high=1),
   doc="batch norm over channels", params=_norm_params, module=_bn_module,
   channels=PASS, slicer=ch.slice_per_channel, keeps_output=False,
   zero_at_zero=_not_affine)
_p("instancenorm", Arg("affine", "bool", True), doc="instance norm over channels",
   shape=lambda a, s: feature_map(s, "instancenorm"), params=_norm_params,
   module=lambda a, s: __import__("torch").nn.InstanceNorm2d(s[0][0], affine=a["affine"]),
   channels=PASS, slicer=ch.slice_per_channel, keeps_output=False,
   zero_at_zero=_not_affine)
_p("layernorm", Arg("affine", "bool", True), doc="layer norm over (C, H, W) with a per-channel affine (GroupNorm(1, C))",
   shape=lambda a, s: feature_map(s, "layernorm"), params=_norm_params,
   module=lambda a, s: __import__("torch").nn.GroupNorm(1, s[0][0], affine=a["affine"]),
   # its statistics pool every channel: removing one changes the others, so none is removed
   channels=Channels("pass", whole=("in", "out")), slicer=ch.slice_per_channel, keeps_output=False,
   zero_at_zero=_not_affine)
_NONZERO_AT_ZERO = ("sigmoid", "hsigmoid")  # f(0) = 0.5


def _activation_channels(kind: str) -> Channels:
    return Channels("pass", zero=False) if kind in _NONZERO_AT_ZERO else PASS


for _act in _ACTIVATIONS:
    _p(_act, doc=f"{_act} activation", module=lambda a, s, k=_act: activation_module(k),
       channels=_activation_channels(_act), zero_at_zero=_act not in _NONZERO_AT_ZERO)
_p("leaky_relu", Arg("slope", "float", 0.01), doc="leaky relu: x if x > 0 else slope * x",
   module=lambda a, s: __import__("torch").nn.LeakyReLU(a["slope"]), channels=PASS, zero_at_zero=True)
_p("act", Arg("kind", "str", allowed=_ACTS), doc="an activation named by a value: act(kind={relu, hswish})",
   module=lambda a, s: activation_module(a["kind"]), channels=lambda a, s, o: _activation_channels(a["kind"]),
   zero_at_zero=lambda a: a["kind"] not in _NONZERO_AT_ZERO)
_p("se", Arg("ratio", "float", 0.25, low=0), Arg("divisor", "int", 8, low=1), Arg("squeeze", "int", 0, low=0),
   Arg("act", "str", "relu", allowed=_ACTS), Arg("gate", "str", "hsigmoid", allowed=_ACTS),
   doc="squeeze-and-excitation (torchvision's): squeeze channels = squeeze if > 0 else "
       "make_divisible(ratio * channels, divisor)",
   shape=lambda a, s: feature_map(s, "se"), params=_se_params,
   macs=lambda a, s, o: 2 * s[0][0] * se_squeeze(a, s[0][0]), module=_se_module,
   channels=PASS, slicer=ch.slice_se, strongest_first=ch.se_strongest_first,
   zero_at_zero=True)
_p("maxpool", Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("padding", "int", -1),
   Arg("ceil_mode", "bool", False), shape=_pool_shape("maxpool"), module=_maxpool_module, channels=PASS,
   zero_at_zero=True)
_p("avgpool", Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("padding", "int", -1),
   Arg("count_include_pad", "bool", False), Arg("ceil_mode", "bool", False), shape=_pool_shape("avgpool"),
   module=_avgpool_module,
   channels=PASS, keeps_output=False,
   zero_at_zero=True)
_p("gap", doc="global average pooling to 1x1", shape=lambda a, s: (feature_map(s, "gap")[0], 1, 1),
   module=lambda a, s: __import__("torch").nn.AdaptiveAvgPool2d(1), channels=PASS, keeps_output=False,
   zero_at_zero=True)
_p("spatial_mean", doc="the mean over H and W: (C, H, W) -> (C,), gap and flatten in one",
   shape=lambda a, s: (feature_map(s, "spatial_mean")[0],), module=_module("SpatialMean"), channels=PASS,
   keeps_output=False, zero_at_zero=True)
_p("adaptive_avgpool", Arg("size", "int", 1, low=1), doc="adaptive average pooling to size x size",
   shape=lambda a, s: (feature_map(s, "adaptive_avgpool")[0], a["size"], a["size"]),
   module=lambda a, s: __import__("torch").nn.AdaptiveAvgPool2d(a["size"]), channels=PASS, keeps_output=False,
   zero_at_zero=True)
_p("flatten", shape=lambda a, s: (math.prod(s[0]),), module=lambda a, s: __import__("torch").nn.Flatten(1),
   channels=Channels("pass", order=_flatten_order),
   zero_at_zero=True)
_p("linear", Arg("out", "int"), Arg("bias", "bool", True), shape=_linear_shape,
   params=lambda a, s: s[0][0] * a["out"] + (a["out"] if a["bias"] else 0),
   macs=lambda a, s, o: s[0][0] * a["out"], module=_linear_module,
   channels=PRODUCER, slicer=ch.slice_linear, keeps_output=False,
   zero_at_zero=_no_bias)
_p("scale", Arg("init", "float", 1.0), doc="a learnable scale per channel (layer scale), starting at init",
   params=lambda a, s: s[0][0], module=_module("LayerScale", channels=lambda a, s: s[0][0], init=lambda a, s: a["init"]),
   channels=PASS, slicer=ch.slice_per_channel, keeps_output=False, zero_at_zero=True)
_p("dropout", Arg("p", "float", 0.0, low=0, high=1), module=lambda a, s: __import__("torch").nn.Dropout(a["p"]), channels=PASS,
   zero_at_zero=True)
_p("identity", doc="passes its input through", channels=PASS,
   zero_at_zero=True)
_p("zero", Arg("stride", "int", 1, low=1), Arg("out", "int", 0, low=0),
   doc="zeros (an absent edge); out 0 keeps the channel count, stride subsamples",
   shape=_zero_shape, module=_module("Zero", stride=lambda a, s: a["stride"], out=lambda a, s: a["out"]),
   channels=lambda a, s, o: PRODUCER if a.get("out") else PASS, slicer=ch.slice_zero,
   zero_at_zero=True)
_p("shuffle", Arg("groups", "int"), doc="channel shuffle", shape=_shuffle_shape,
   module=_module("ChannelShuffle", groups=lambda a, s: a["groups"]), channels=Channels("pass", order=_shuffle_order),
   zero_at_zero=True)
