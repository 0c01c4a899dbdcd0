"""The standard primitives: shape, params, MACs and torch module of each, and
how channels flow through it, how its module is sliced and its weights adapted
(`nasdsl.compiler.channels`), and whether its output is kept for backward.

Shapes are per sample: `(C, H, W)` for feature maps, `(F,)` for vectors and
`(N, D)` for a sequence of N tokens of D channels (`channel_count` says which axis
holds the channels). MACs count what `torch.utils.flop_counter` counts
(convolutions and matrix products, attention's included), halved. Torch is
imported only when a module is built. The registry itself (and
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
class ChannelsLast(tuple):
    """A per-sample map (H, W, C) whose channels are its last axis, as convnext's and
    swin's blocks hold them between two permutes: linear layers, layer norms and
    element-wise ops act on it as on tokens; ops on channels-first maps refuse it. Only
    the tracer makes them (`nasdsl.compiler.trace`)."""

    __slots__ = ()

    def __reduce__(self):
        return ChannelsLast, (tuple(self),)


def channels_last(shape) -> bool:
    return isinstance(shape, ChannelsLast)


def feature_map(shapes, name) -> tuple:
    if len(shapes[0]) != 3 or channels_last(shapes[0]):
        raise ShapeError(f"`{name}` needs a feature map (C, H, W), got {_fmt(shapes[0])}"
                         + (" with its channels last" if channels_last(shapes[0]) else ""))
    return shapes[0]


def tokens_of(shapes, name) -> tuple:
    if len(shapes[0]) != 2:
        raise ShapeError(f"`{name}` needs tokens (N, D), got {_fmt(shapes[0])}; `tokens` or `patch_embed` make them")
    return shapes[0]


def channel_count(shape) -> int:
    """The channels of a per-sample shape: the last axis of tokens (N, D) and of a
    channels-last map, where linear layers and layer norms act, and the first of a
    feature map or vector."""
    return shape[-1] if len(shape) == 2 or channels_last(shape) else shape[0]


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
def _conv_shape_of(name, side, *sized):
    """A convolution's shape rule; `side(args, size, axis)` is its output's side along
    axis "h" or "w"; `sized` are the arguments that must be at least 1."""
    def shape(a, s):
        c, h, w = feature_map(s, name)
        _positive(a, name, "out", "groups", *sized)
        if c % a["groups"] or a["out"] % a["groups"]:
            raise ShapeError(f"`{name}`: groups={a['groups']} must divide both {c} input and {a['out']} output "
                             "channels")
        return (a["out"], side(a, h, "h"), side(a, w, "w"))

    return shape


_conv_shape = _conv_shape_of("conv", lambda a, size, axis: conv_out(
    size, a["kernel"], a["stride"], a["dilation"], same_padding(a["kernel"], a["dilation"], a["padding"]), "conv"),
    "kernel", "stride", "dilation")
_conv_same_shape = _conv_shape_of("conv_same", lambda a, size, axis: -(-size // a["stride"]),
                                  "kernel", "stride", "dilation")
_conv2d_shape = _conv_shape_of("conv2d", lambda a, size, axis: conv_out(
    size, a[f"kernel_{axis}"], a[f"stride_{axis}"], a[f"dilation_{axis}"], a[f"padding_{axis}"], "conv2d"),
    "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w")


def _kernel_area(a) -> int:
    return a["kernel"] ** 2 if "kernel" in a else a["kernel_h"] * a["kernel_w"]


def _conv_params(a, s):
    return a["out"] * (s[0][0] // a["groups"]) * _kernel_area(a) + (a["out"] if a["bias"] else 0)


def _conv_macs(a, s, o):
    return a["out"] * (s[0][0] // a["groups"]) * _kernel_area(a) * o[1] * o[2]


def _conv_module(a, s):
    from torch import nn

    return nn.Conv2d(s[0][0], a["out"], a["kernel"], a["stride"], same_padding(a["kernel"], a["dilation"], a["padding"]),
                     a["dilation"], a["groups"], a["bias"])


def _conv2d_module(a, s):
    from torch import nn

    return nn.Conv2d(s[0][0], a["out"], (a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"]),
                     (a["padding_h"], a["padding_w"]), (a["dilation_h"], a["dilation_w"]), a["groups"], a["bias"])


def _conv_same_module(a, s):
    from .modules import Conv2dSame

    return Conv2dSame(s[0][0], a["out"], a["kernel"], a["stride"], 0, a["dilation"], a["groups"], a["bias"])


def _conv_channels(a, s, o):
    """A plain or grouped conv makes new channels (a grouped one's slicer keeps as many
    in each group); a depthwise one, one filter per input channel, couples each output
    channel with its input channel, or, where it multiplies them, cannot be sliced."""
    if a["groups"] == 1 or a["groups"] < s[0][0]:
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
    return 2 * channel_count(s[0]) if a["affine"] else 0


def _bn_module(a, s):
    from torch import nn

    from .modules import TokenBatchNorm

    if len(s[0]) == 2 or channels_last(s[0]):
        cls = TokenBatchNorm
    else:
        cls = nn.BatchNorm2d if len(s[0]) == 3 else nn.BatchNorm1d
    return cls(channel_count(s[0]), eps=a["eps"], momentum=a["momentum"], affine=a["affine"])


_ACTIVATIONS = {"relu": "ReLU", "relu6": "ReLU6", "hswish": "Hardswish", "hsigmoid": "Hardsigmoid",
                "silu": "SiLU", "gelu": "GELU", "sigmoid": "Sigmoid", "mish": "Mish"}


def activation_name(module) -> str | None:
    """The activation kind a torch module is (`nn.GELU()` → "gelu"), else None."""
    from torch import nn

    if type(module) is nn.Identity:
        return "identity"
    if type(module) is nn.GELU and module.approximate != "none":
        return None
    return next((kind for kind, cls in _ACTIVATIONS.items() if type(module) is getattr(nn, cls)), None)


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
    if len(s[0]) not in (1, 2) and not channels_last(s[0]):
        raise ShapeError(f"`linear` needs a vector (F,) or tokens (N, D), got {_fmt(s[0])}; flatten first")
    _positive(a, "linear", "out")
    out = (*s[0][:-1], a["out"])
    return ChannelsLast(out) if channels_last(s[0]) else out


def _layernorm_shape(a, s):
    if len(s[0]) not in (1, 2, 3):
        raise ShapeError(f"`layernorm` needs tokens, a vector or a feature map, got {_fmt(s[0])}")
    return s[0]


def _layernorm_module(a, s):
    from torch import nn

    if len(s[0]) == 3 and not channels_last(s[0]):
        return nn.GroupNorm(1, s[0][0], eps=a["eps"], affine=a["affine"])
    return nn.LayerNorm(s[0][-1], eps=a["eps"], elementwise_affine=a["affine"])


def _groupnorm_shape(a, s):
    c = feature_map(s, "groupnorm")[0]
    if c % a["groups"]:
        raise ShapeError(f"`groupnorm`: {a['groups']} groups must divide {c} channels")
    return s[0]


def _linear_module(a, s):
    from torch import nn

    return nn.Linear(channel_count(s[0]), a["out"], a["bias"])


def _flatten_order(a, s):
    """Each channel repeated once per pixel (a pooled vector: once); the channels of
    tokens and of a channels-last map once per token or pixel, one after another."""
    import numpy as np

    if len(s[0]) == 2 or channels_last(s[0]):
        return np.tile(np.arange(s[0][-1]), math.prod(s[0][:-1]))
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


def _slice_shape(a, s):
    if len(s[0]) not in (1, 3) or channels_last(s[0]):
        raise ShapeError(f"`slice` needs a feature map (C, H, W) or a vector (F,), got {_fmt(s[0])}")
    if not 0 <= a["start"] < a["stop"] <= s[0][0]:
        raise ShapeError(f"`slice`: channels {a['start']}..{a['stop'] - 1} are not within {s[0][0]}")
    return (a["stop"] - a["start"], *s[0][1:])


def _slice_order(a, s):
    import numpy as np

    return np.arange(a["start"], a["stop"])


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
_p("conv2d", Arg("out", "int"), Arg("kernel_h", "int"), Arg("kernel_w", "int"), Arg("stride_h", "int", 1),
   Arg("stride_w", "int", 1), Arg("padding_h", "int", 0, low=0), Arg("padding_w", "int", 0, low=0),
   Arg("dilation_h", "int", 1), Arg("dilation_w", "int", 1), Arg("groups", "int", 1), Arg("bias", "bool", False),
   doc="2-d convolution with a kernel, stride, padding and dilation per axis (inception's 1x7 and 7x1), "
       "as nn.Conv2d; `conv` is the square one",
   shape=_conv2d_shape, params=_conv_params, macs=_conv_macs, module=_conv2d_module,
   channels=_conv_channels, slicer=ch.slice_conv, adapter=ch.adapt_conv, keeps_output=False,
   zero_at_zero=_no_bias)
_p("conv_same", Arg("out", "int"), Arg("kernel", "int", 3), Arg("stride", "int", 1), Arg("groups", "int", 1),
   Arg("dilation", "int", 1), Arg("bias", "bool", False),
   doc="2-d convolution with TensorFlow's SAME padding (EfficientNet's TF ports, timm's Conv2dSame): each side "
       "ceil(size / stride), padded for that from the input's size, the odd pixel at the bottom and right",
   shape=_conv_same_shape, params=_conv_params, macs=_conv_macs, module=_conv_same_module,
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
   doc="batch norm over channels; of tokens or a channels-last map, each channel over all of them (LeViT's)",
   params=_norm_params, module=_bn_module,
   channels=PASS, slicer=ch.slice_per_channel, keeps_output=False,
   zero_at_zero=_not_affine)
_p("instancenorm", Arg("affine", "bool", True), doc="instance norm over channels",
   shape=lambda a, s: feature_map(s, "instancenorm"), params=_norm_params,
   module=lambda a, s: __import__("torch").nn.InstanceNorm2d(s[0][0], affine=a["affine"]),
   channels=PASS, slicer=ch.slice_per_channel, keeps_output=False,
   zero_at_zero=_not_affine)
# a norm whose statistics pool channels: removing one changes the others, so none is removed
_POOLED = Channels("pass", whole=("in", "out"))
_p("layernorm", Arg("affine", "bool", True), Arg("eps", "float", 1e-5, low=0),
   doc="layer norm: each token over its D channels (nn.LayerNorm(D)); a vector over its features; a feature "
       "map over all of (C, H, W) with a per-channel affine, which is `groupnorm(groups=1)`",
   shape=_layernorm_shape, params=_norm_params, module=_layernorm_module,
   channels=_POOLED, slicer=ch.slice_per_channel, keeps_output=False,
   zero_at_zero=_not_affine)
_p("groupnorm", Arg("groups", "int", 1, low=1), Arg("affine", "bool", True), Arg("eps", "float", 1e-5, low=0),
   doc="group norm over a feature map (nn.GroupNorm): groups 1 is a layer norm over (C, H, W), groups = C an "
       "instance norm", shape=_groupnorm_shape, params=_norm_params,
   module=lambda a, s: __import__("torch").nn.GroupNorm(a["groups"], s[0][0], eps=a["eps"], affine=a["affine"]),
   channels=lambda a, s, o: PASS if a["groups"] == s[0][0] else _POOLED, slicer=ch.slice_groupnorm,
   keeps_output=False, zero_at_zero=_not_affine)
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
   doc="a fully connected layer on a vector, or on each token",
   params=lambda a, s: s[0][-1] * a["out"] + (a["out"] if a["bias"] else 0),
   macs=lambda a, s, o: math.prod(s[0]) * a["out"], module=_linear_module,
   channels=PRODUCER, slicer=ch.slice_linear, keeps_output=False,
   zero_at_zero=_no_bias)
_p("scale", Arg("init", "float", 1.0), doc="a learnable scale per channel (layer scale), starting at init",
   params=lambda a, s: channel_count(s[0]),
   module=_module("LayerScale", channels=lambda a, s: channel_count(s[0]), init=lambda a, s: a["init"],
                  last=lambda a, s: len(s[0]) == 2 or channels_last(s[0])),
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
_p("slice", Arg("start", "int", low=0), Arg("stop", "int", low=1),
   doc="channels start..stop-1 of a feature map or vector (`x[:, start:stop]`; a split's item)",
   shape=_slice_shape, module=_module("ChannelSlice", start=lambda a, s: a["start"], stop=lambda a, s: a["stop"]),
   channels=Channels("pass", order=_slice_order), slicer=ch.slice_channel_slice, zero_at_zero=True)
_p("shuffle", Arg("groups", "int"), doc="channel shuffle", shape=_shuffle_shape,
   module=_module("ChannelShuffle", groups=lambda a, s: a["groups"]), channels=Channels("pass", order=_shuffle_order),
   zero_at_zero=True)


# ---- tokens: transformers --------------------------------------------------------------
def _patch_shape(a, s):
    c, h, w = feature_map(s, "patch_embed")
    _positive(a, "patch_embed", "dim", "patch")
    p = a["patch"]
    return (conv_out(h, p, p, 1, 0, "patch_embed") * conv_out(w, p, p, 1, 0, "patch_embed"), a["dim"])


def _patch_conv(a, s):
    """patch_embed's convolution, as a conv's arguments."""
    return {"out": a["dim"], "kernel": a["patch"], "stride": a["patch"], "groups": 1, "dilation": 1, "bias": True,
            "padding": 0}


def _to_map_shape(a, s):
    n, d = tokens_of(s, "to_map")
    h = a["height"] or math.isqrt(n)
    if h < 1 or n % h or (not a["height"] and h * h != n):
        how = f"a map of height {h}" if a["height"] else "a square map; give its height"
        raise ShapeError(f"`to_map` cannot lay {n} tokens out as {how}")
    return (d, h, n // h)


def _heads(a, s):
    """(heads, head width, the attention's inner width heads x head width)."""
    d = tokens_of(s, "attention")[1]
    _positive(a, "attention", "heads")
    if not a["head_dim"] and d % a["heads"]:
        raise ShapeError(f"`attention`: {a['heads']} heads must divide the {d} channels; or give head_dim")
    hd = a["head_dim"] or d // a["heads"]
    return a["heads"], hd, a["heads"] * hd


def _attention_shape(a, s):
    _heads(a, s)
    _positive(a, "attention", "windows")
    if s[0][0] % a["windows"]:
        raise ShapeError(f"`attention`: {a['windows']} windows must divide the {s[0][0]} tokens")
    return s[0]


def _attention_params(a, s):
    d = s[0][1]
    _, _, inner = _heads(a, s)
    return d * 3 * inner + (3 * inner if a["qkv_bias"] else 0) + inner * d + d


def _attention_macs(a, s, o):
    n, d = s[0]
    heads, hd, inner = _heads(a, s)
    # qkv, q k^T and attention x v within each window, proj
    return n * d * 3 * inner + 2 * heads * n * (n // a["windows"]) * hd + n * inner * d


def _mlp_out(a, s):
    return a["out"] or channel_count(s[0])


def _mlp_shape(a, s):
    if len(s[0]) not in (1, 2) and not channels_last(s[0]):
        raise ShapeError(f"`mlp` needs tokens (N, D), a vector (F,) or a channels-last map, got {_fmt(s[0])}")
    _positive(a, "mlp", "hidden")
    out = (*s[0][:-1], _mlp_out(a, s))
    return ChannelsLast(out) if channels_last(s[0]) else out


def _mlp_params(a, s):
    d, h, o = s[0][-1], a["hidden"], _mlp_out(a, s)
    return d * h + h + h * o + o


def _pool_tokens(a, s):
    n, d = tokens_of(s, "token_pool")
    return (d,)


def _upsample_shape(a, s):
    c, h, w = feature_map(s, "upsample")
    _positive(a, "upsample", "scale")
    return (c, h * a["scale"], w * a["scale"])


def _convt_shape(a, s):
    c, h, w = feature_map(s, "convtranspose")
    _positive(a, "convtranspose", "out", "kernel", "stride")
    if a["output_padding"] >= a["stride"]:
        raise ShapeError(f"`convtranspose`: output_padding {a['output_padding']} must be less than the stride")
    side = [(x - 1) * a["stride"] - 2 * a["padding"] + a["kernel"] + a["output_padding"] for x in (h, w)]
    if min(side) < 1:
        raise ShapeError(f"`convtranspose` with padding {a['padding']} leaves no output of a {h}x{w} map")
    return (a["out"], *side)


def _convt_module(a, s):
    from torch import nn

    return nn.ConvTranspose2d(s[0][0], a["out"], a["kernel"], a["stride"], a["padding"], a["output_padding"],
                              bias=a["bias"])


_p("patch_embed", Arg("dim", "int"), Arg("patch", "int", 16),
   doc="a feature map cut into patch x patch squares, each projected to a dim-channel token (a strided conv "
       "with bias): (C, H, W) -> (H/patch * W/patch, dim)",
   shape=_patch_shape, params=lambda a, s: _conv_params(_patch_conv(a, s), s),
   macs=lambda a, s, o: _conv_macs(_patch_conv(a, s), s, (a["dim"], o[0], 1)),
   module=_module("PatchEmbed", proj=lambda a, s: _conv_module(_patch_conv(a, s), s)),
   channels=PRODUCER, slicer=ch.slice_patch_embed, keeps_output=False)
_p("tokens", doc="a feature map read as its pixels, one token each: (C, H, W) -> (H * W, C)",
   shape=lambda a, s: (lambda c, h, w: (h * w, c))(*feature_map(s, "tokens")), module=_module("Tokens"),
   channels=PASS, zero_at_zero=True)
_p("to_map", Arg("height", "int", 0, low=0),
   doc="tokens laid back out as a feature map, row by row: (N, D) -> (D, height, N / height); height 0: square",
   shape=_to_map_shape, module=_module("ToMap", height=lambda a, s: _to_map_shape(a, s)[1]),
   channels=PASS, zero_at_zero=True)
_p("cls_token", doc="a learned class token put before the tokens: (N, D) -> (N + 1, D)",
   shape=lambda a, s: (lambda n, d: (n + 1, d))(*tokens_of(s, "cls_token")), params=lambda a, s: s[0][1],
   module=_module("ClsToken", dim=lambda a, s: s[0][1]),
   # the token is not zero where a removed channel is: the channels stay whole
   channels=Channels("pass", zero=False), slicer=ch.slice_last_dim, keeps_output=False)
_p("pos_embed", doc="a learned position embedding added to the tokens", shape=lambda a, s: tokens_of(s, "pos_embed"),
   params=lambda a, s: math.prod(s[0]), module=_module("PosEmbed", tokens=lambda a, s: s[0][0], dim=lambda a, s: s[0][1]),
   channels=Channels("pass", zero=False), slicer=ch.slice_last_dim, keeps_output=False)
_p("attention", Arg("heads", "int"), Arg("head_dim", "int", 0, low=0), Arg("qkv_bias", "bool", True),
   Arg("windows", "int", 1),
   doc="multi-head self-attention over tokens: one qkv projection to heads x head_dim (0: D / heads) per q, k "
       "and v, scaled dot-product attention per head within each of `windows` runs of consecutive tokens "
       "(MobileViT's patches), an output projection back to D",
   shape=_attention_shape, params=_attention_params, macs=_attention_macs,
   module=_module("Attention", dim=lambda a, s: s[0][1], heads=lambda a, s: _heads(a, s)[0],
                  head_dim=lambda a, s: _heads(a, s)[1], qkv_bias=lambda a, s: a["qkv_bias"],
                  windows=lambda a, s: a["windows"]),
   channels=PRODUCER, slicer=ch.slice_attention, adapter=ch.adapt_attention, window=ch.window_attention,
   inner=lambda a, s: (_heads(a, s)[2], ch.ATTENTION_INNER), keeps_output=False)
_p("mlp", Arg("hidden", "int"), Arg("act", "str", "gelu", allowed=_ACTS), Arg("out", "int", 0, low=0),
   doc="a transformer's feed-forward layer on each token: linear to hidden, activation, linear to out "
       "(0: the input's width)",
   shape=_mlp_shape, params=_mlp_params,
   macs=lambda a, s, o: math.prod(s[0][:-1]) * a["hidden"] * (s[0][-1] + _mlp_out(a, s)),
   module=_module("Mlp", dim=lambda a, s: s[0][-1], hidden=lambda a, s: a["hidden"], out=_mlp_out,
                  act=lambda a, s: activation_module(a["act"])),
   channels=PRODUCER, slicer=ch.slice_mlp, inner=lambda a, s: (a["hidden"], ch.MLP_INNER), keeps_output=False)
_p("token_pool", Arg("mode", "str", "mean", allowed=("mean", "cls")),
   doc="tokens to one vector: their mean, or the class token (the first): (N, D) -> (D,)",
   shape=_pool_tokens, module=_module("TokenPool", mode=lambda a, s: a["mode"]), channels=PASS, keeps_output=False,
   zero_at_zero=True)


# ---- decoders: upsampling ---------------------------------------------------------------
_p("upsample", Arg("scale", "int", 2), Arg("mode", "str", "nearest", allowed=("nearest", "bilinear")),
   doc="a feature map scaled up by an integer factor (bilinear: align_corners false, as nn.Upsample)",
   shape=_upsample_shape,
   module=lambda a, s: __import__("torch").nn.Upsample(scale_factor=a["scale"], mode=a["mode"]),
   channels=PASS, zero_at_zero=True)
_p("convtranspose", Arg("out", "int"), Arg("kernel", "int", 2), Arg("stride", "int", 2), Arg("padding", "int", 0, low=0),
   Arg("output_padding", "int", 0, low=0), Arg("bias", "bool", False),
   doc="transposed convolution: side (n - 1) * stride - 2 * padding + kernel + output_padding",
   shape=_convt_shape, params=lambda a, s: s[0][0] * a["out"] * a["kernel"] ** 2 + (a["out"] if a["bias"] else 0),
   macs=lambda a, s, o: s[0][0] * a["out"] * a["kernel"] ** 2 * s[0][1] * s[0][2], module=_convt_module,
   channels=PRODUCER, slicer=ch.slice_convtranspose, keeps_output=False,
   zero_at_zero=_no_bias)
