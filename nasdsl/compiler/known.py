"""Other libraries' modules that one nasdsl primitive describes whole: timm's
vision-transformer attention, MLP and patch embedding, and its TensorFlow-padded conv. The tracer keeps each such
module whole (`nasdsl.compiler.fxtrace`) and names it (`nasdsl.compiler.trace`), so
a traced ViT has the graph a compiled one has, with its heads and MLP widths as
channel groups, instead of the reshapes inside. A module is known only where its
reader accepts it; any other is traced through as before.

Keys are (module, class name), so that tracing imports none of those libraries.
"""

from __future__ import annotations

from torch import nn

from .primitives import activation_name


def describe(m: nn.Module) -> tuple | None:
    """(op, args) of a known module, else None."""
    op, read = KNOWN.get((type(m).__module__, type(m).__qualname__), (None, None))
    found = read(m) if read else None
    return None if found is None else (op, found)


def _identity(*parts) -> bool:
    return all(p is None or isinstance(p, (nn.Identity, nn.Dropout)) for p in parts)


def _attention(m):
    """timm's plain multi-head self-attention (no q/k norms, gate, or other output width)."""
    if not _identity(getattr(m, "q_norm", None), getattr(m, "k_norm", None), getattr(m, "norm", None)) or \
            getattr(m, "gate", None) is not None or m.proj.bias is None or \
            m.proj.out_features != m.qkv.in_features or abs(m.scale - m.head_dim ** -0.5) > 1e-12:
        return None
    return {"heads": m.num_heads, "head_dim": m.head_dim, "qkv_bias": m.qkv.bias is not None, "windows": 1}


def _mlp(m):
    """timm's Mlp of two biased Linears, an activation nasdsl names, no norm."""
    act = activation_name(m.act)
    if act is None or not all(type(f) is nn.Linear and f.bias is not None for f in (m.fc1, m.fc2)) or \
            not _identity(m.drop1, m.norm, m.drop2):
        return None
    return {"hidden": m.fc1.out_features, "act": act,
            "out": 0 if m.fc2.out_features == m.fc1.in_features else m.fc2.out_features}


def _patch_embed(m):
    """timm's PatchEmbed: a square patch conv with bias, flattened to tokens, no norm or padding."""
    conv = m.proj
    k = conv.kernel_size
    if type(conv) is not nn.Conv2d or k[0] != k[1] or tuple(conv.stride) != k or conv.padding != (0, 0) or \
            conv.bias is None or conv.groups != 1 or tuple(conv.dilation) != (1, 1) or \
            not getattr(m, "flatten", False) or getattr(m, "dynamic_img_pad", False) or not _identity(m.norm):
        return None
    return {"dim": conv.out_channels, "patch": k[0]}


def _conv_same(m):
    """timm's Conv2dSame: a square convolution padded as TensorFlow's SAME."""
    k, stride, d = (set(v) for v in (m.kernel_size, m.stride, m.dilation))
    if len(k) != 1 or len(stride) != 1 or len(d) != 1 or tuple(m.padding) != (0, 0) or m.padding_mode != "zeros":
        return None
    return {"out": m.out_channels, "kernel": k.pop(), "stride": stride.pop(), "groups": m.groups,
            "dilation": d.pop(), "bias": m.bias is not None}


KNOWN = {
    ("timm.layers.attention", "Attention"): ("attention", _attention),
    ("timm.layers.mlp", "Mlp"): ("mlp", _mlp),
    ("timm.layers.patch_embed", "PatchEmbed"): ("patch_embed", _patch_embed),
    ("timm.layers.conv2d_same", "Conv2dSame"): ("conv_same", _conv_same),
}
