"""How the standard primitives' modules change width: the slicers pruning calls
(cut a module to kept input and output channels) and the adapters inheritance
calls (seed a tensor from a parent's of another shape). Each primitive names its
own in `nasdsl.compiler.primitives`, so neither analysis lists op names or module
classes. Torch is imported only when one runs.

A slicer is `(module, input channels kept, output channels kept)` and cuts the
module in place; it raises NasError (without a path: the caller adds it) for a
cut the module cannot take. An adapter is `(tensor name, parent's tensor,
child's tensor, parent args, child args)` and gives `(tensor, how many of its
elements came from the parent)`, or None where the parent's tensor cannot seed
the child's.
"""

from __future__ import annotations

from ..language.errors import NasError


def _idx(positions):
    import torch

    return torch.as_tensor(positions, dtype=torch.long)


# ---- slicers ---------------------------------------------------------------------------
def slice_conv(m, in_keep, out_keep):
    """An `nn.Conv2d`. A grouped one keeps its groups that keep output channels, each
    with as many input and as many output channels as the others (a depthwise one: the
    same input and output channels); a group keeping outputs but no inputs would
    compute a constant, which a grouped conv cannot say."""
    import torch
    from torch import nn

    g = m.groups
    if g == 1:
        w = m.weight[_idx(out_keep)][:, _idx(in_keep)]
    else:
        per_in, per_out = m.in_channels // g, m.out_channels // g
        ins = [[c - j * per_in for c in in_keep if c // per_in == j] for j in range(g)]
        outs = [[c for c in out_keep if c // per_out == j] for j in range(g)]
        live = [j for j in range(g) if outs[j]]
        if [j for j in range(g) if ins[j]] != live or len({len(ins[j]) for j in live}) > 1 \
                or len({len(outs[j]) for j in live}) > 1:
            raise NasError(f"a grouped conv must keep as many input and as many output channels in each of the "
                           f"{g} groups it keeps (kept {[len(i) for i in ins]} in, {[len(o) for o in outs]} out)")
        w = torch.cat([m.weight[_idx(outs[j])][:, _idx(ins[j])] for j in live])
        m.groups = len(live)
    m.in_channels, m.out_channels = len(in_keep), len(out_keep)
    m.weight = nn.Parameter(w.clone())
    if m.bias is not None:
        m.bias = nn.Parameter(m.bias[_idx(out_keep)].clone())


def slice_channel_slice(m, in_keep, out_keep):
    """A `ChannelSlice`: its bounds among the input channels kept."""
    m.start = sum(1 for c in in_keep if c < m.start)
    m.stop = m.start + len(out_keep)


def slice_linear(m, in_keep, out_keep):
    from torch import nn

    m.weight = nn.Parameter(m.weight[_idx(out_keep)][:, _idx(in_keep)].clone())
    m.in_features, m.out_features = len(in_keep), len(out_keep)
    if m.bias is not None:
        m.bias = nn.Parameter(m.bias[_idx(out_keep)].clone())


def slice_per_channel(m, in_keep, out_keep):
    """A module whose own tensors are all per channel along their first dimension
    (a norm's scale, shift and running statistics; scalars such as a batch count
    stay); its `num_features` or `num_channels`, if it has one, follows."""
    from torch import nn

    keep = _idx(out_keep)
    for name, p in list(m.named_parameters(recurse=False)):
        setattr(m, name, nn.Parameter(p[keep].clone()))
    for name, b in list(m.named_buffers(recurse=False)):
        if b.dim() >= 1:
            setattr(m, name, b[keep].clone())
    for count in ("num_features", "num_channels"):
        if hasattr(m, count):
            setattr(m, count, len(out_keep))


def slice_sepconv(m, in_keep, out_keep):
    """A sepconv's `Sequential(depthwise, pointwise)`."""
    slice_conv(m[0], in_keep, in_keep)
    slice_conv(m[1], in_keep, out_keep)


def slice_fact_reduce(m, in_keep, out_keep):
    """A FactorizedReduce: its inputs only (its output stays whole, see its Channels)."""
    for conv in (m.conv_1, m.conv_2):
        slice_conv(conv, in_keep, list(range(conv.out_channels)))


def slice_se(m, in_keep, out_keep):
    """A SqueezeExcitation: the channels it scales (its squeeze width stays)."""
    from torch import nn

    keep = _idx(in_keep)
    m.fc1.weight = nn.Parameter(m.fc1.weight[:, keep].clone())
    m.fc1.in_channels = len(in_keep)
    m.fc2.weight = nn.Parameter(m.fc2.weight[keep].clone())
    m.fc2.bias = nn.Parameter(m.fc2.bias[keep].clone())
    m.fc2.out_channels = len(in_keep)


def slice_groupnorm(m, in_keep, out_keep):
    """A GroupNorm with a group per channel (only that one is sliced: see its Channels)."""
    slice_per_channel(m, in_keep, out_keep)
    m.num_groups = len(out_keep)


def slice_last_dim(m, in_keep, out_keep):
    """A module whose own tensors hold one value per channel along their last dimension
    (a class token, a position embedding)."""
    from torch import nn

    for name, p in list(m.named_parameters(recurse=False)):
        setattr(m, name, nn.Parameter(p[..., _idx(out_keep)].clone()))


def slice_patch_embed(m, in_keep, out_keep):
    slice_conv(m.proj, in_keep, out_keep)


# where an Attention's and an Mlp's tensors hold their inner channels: (name, axis, blocks)
ATTENTION_INNER = (("qkv.weight", 0, 3), ("qkv.bias", 0, 3), ("proj.weight", 1, 1))
MLP_INNER = (("fc1.weight", 0, 1), ("fc1.bias", 0, 1), ("fc2.weight", 1, 1))


def _blocks(keep, width: int, blocks: int) -> list:
    """Positions `keep` of each of `blocks` equal parts of `width`, as positions of the whole."""
    return [b * (width // blocks) + k for b in range(blocks) for k in keep]


def slice_attention(m, in_keep, out_keep, inner=None):
    """An Attention (ours, or timm's, which calls its heads `num_heads`): the channels
    qkv reads and proj writes, and, with `inner`, its inner channels (head h holds
    h * head_dim ..). Whole heads go, or the same count from every head that stays;
    the scale stays, so the function is the one before."""
    heads = "heads" if hasattr(m, "heads") else "num_heads"
    count, per = getattr(m, heads), m.head_dim
    inner = range(count * per) if inner is None else list(inner)
    counts = [sum(1 for c in inner if c // per == h) for h in range(count)]
    live = [n for n in counts if n]
    if len(set(live)) != 1:
        raise NasError(f"an attention keeps whole heads or as many channels of each of its {count} heads "
                       f"(kept {counts})")
    slice_linear(m.qkv, in_keep, _blocks(inner, m.qkv.out_features, 3))
    slice_linear(m.proj, inner, out_keep)
    setattr(m, heads, len(live))
    m.head_dim = live[0]
    if hasattr(m, "attn_dim"):
        m.attn_dim = len(live) * live[0]
    if live[0] != per and getattr(m, "fused_attn", False):
        m.fused_attn = False  # timm's fused kernel would scale by the new head width; its own path keeps `scale`


def slice_mlp(m, in_keep, out_keep, inner=None):
    """An Mlp's input and output channels and, with `inner`, its hidden ones."""
    inner = range(m.fc1.out_features) if inner is None else inner
    slice_linear(m.fc1, in_keep, inner)
    slice_linear(m.fc2, inner, out_keep)


def zero_inner(m, where, gone) -> None:
    """Zero the inner channels `gone` in a module's tensors, `where` as a primitive's
    `inner` says: (name, axis, blocks) each; a tensor the module lacks (no bias) is skipped."""
    for name, axis, blocks in where:
        owner, _, attr = name.rpartition(".")
        t = getattr(m.get_submodule(owner) if owner else m, attr, None)
        if t is not None:
            t.index_fill_(axis, _idx(_blocks(gone, t.shape[axis], blocks)), 0)


def slice_convtranspose(m, in_keep, out_keep):
    """An `nn.ConvTranspose2d`, weight (in, out, kh, kw)."""
    from torch import nn

    m.weight = nn.Parameter(m.weight[_idx(in_keep)][:, _idx(out_keep)].clone())
    m.in_channels, m.out_channels = len(in_keep), len(out_keep)
    if m.bias is not None:
        m.bias = nn.Parameter(m.bias[_idx(out_keep)].clone())


def slice_zero(m, in_keep, out_keep):
    if m.out:
        m.out = len(out_keep)


# ---- adapters --------------------------------------------------------------------------
def resize(theirs, mine, blocks: int = 1) -> tuple:
    """(the child's tensor seeded from the parent's, how many of its elements came
    from the parent). Channel dims (0 and 1) take the parent's first k; spatial dims
    are aligned at the centre, with zeros where a larger kernel has no parent value.
    `blocks`: dim 0 is that many concatenated parts, each mapped to its own
    (FactorizedReduce's batch norm covers two convs' outputs)."""
    import torch

    if theirs.shape == mine.shape:
        return theirs.clone(), theirs.numel()
    out = mine.detach().clone()
    child_index, parent_index = [], []
    for d, (p, c) in enumerate(zip(theirs.shape, mine.shape)):
        if d >= 2:  # spatial: centre-aligned
            n = min(p, c)
            child_index.append(torch.arange(n) + (c - n) // 2)
            parent_index.append(torch.arange(n) + (p - n) // 2)
        elif d == 0 and blocks > 1 and p % blocks == 0 and c % blocks == 0:
            n = min(p, c) // blocks
            child_index.append(torch.cat([b * (c // blocks) + torch.arange(n) for b in range(blocks)]))
            parent_index.append(torch.cat([b * (p // blocks) + torch.arange(n) for b in range(blocks)]))
        else:  # channels: the first k
            n = min(p, c)
            child_index.append(torch.arange(n))
            parent_index.append(torch.arange(n))
    count = 1
    for index in child_index:
        count *= len(index)
    if count == 0:
        return out, 0
    device = mine.device
    child_index = [i.to(device) for i in child_index]
    parent_index = [i.to(device) for i in parent_index]
    if mine.dim() > 2 and tuple(theirs.shape[2:]) != tuple(mine.shape[2:]):
        # the shared channels' kernels become the parent's, zero-padded: clear them first
        channels = _grid(child_index[:2] + [torch.arange(n, device=device) for n in mine.shape[2:]])
        out[channels] = 0
    out[_grid(child_index)] = theirs[_grid(parent_index)]
    return out, count


def _grid(indices: list) -> tuple:
    """Index tensors that broadcast to the outer product of `indices` (numpy's ix_)."""
    n = len(indices)
    return tuple(index.view(*([1] * d), -1, *([1] * (n - d - 1))) for d, index in enumerate(indices))


# ---- supernet windows -------------------------------------------------------------------
def pieces(bank, shape, blocks: int = 1):
    """Where a derivation's tensor of `shape` lies in a supernet's larger bank tensor,
    aligned as `resize` aligns a child to its parent (channels first, kernels at the
    centre, `blocks` parts of dim 0 each its own): `[(view of the bank, index of the
    tensor it is)]`, one piece unless dim 0 has blocks; None where the bank is smaller."""
    shape = tuple(shape)
    if len(shape) != bank.dim() or any(c > p for c, p in zip(shape, bank.shape)):
        return None
    view = bank
    for d, (p, c) in enumerate(zip(bank.shape, shape)):
        if p != c and not (d == 0 and blocks > 1):
            view = view.narrow(d, (p - c) // 2 if d >= 2 else 0, c)
    if blocks == 1 or bank.dim() == 0 or bank.shape[0] == shape[0]:
        return [(view, ...)]
    p, c = bank.shape[0] // blocks, shape[0] // blocks
    return [(view.narrow(0, b * p, c), slice(b * c, (b + 1) * c)) for b in range(blocks)]


def window(pieces_of_it):
    """The tensor the pieces make: a view of the bank (gradients flow into it)."""
    import torch

    if len(pieces_of_it) == 1:
        return pieces_of_it[0][0]
    return torch.cat([view for view, _ in pieces_of_it])


def window_fact_reduce(name, bank, shape):
    """FactorizedReduce's batch norm: its two halves follow its two convs."""
    return pieces(bank, shape, blocks=2 if name.startswith("bn.") else 1)


def window_attention(name, bank, shape):
    """An attention's qkv rows are three parts, q, k and v: each keeps its own first heads
    (AutoFormer's weight entanglement); proj keeps the first heads' columns."""
    return pieces(bank, shape, blocks=3 if name.startswith("qkv.") else 1)


def adapt(name, theirs, mine, parent_args, child_args):
    """The standard adapter: `resize`."""
    return resize(theirs, mine)


def adapt_conv(name, theirs, mine, parent_args, child_args):
    """A conv's weight is fresh where its grouping changed: from or to grouped, or to
    another group width, its input channels do not line up."""
    if name == "weight":
        grouped_p, grouped_c = parent_args.get("groups", 1) > 1, child_args.get("groups", 1) > 1
        if grouped_p != grouped_c or (grouped_c and theirs.shape[1] != mine.shape[1]):
            return None
    return resize(theirs, mine)


def adapt_attention(name, theirs, mine, parent_args, child_args):
    """q, k and v each seed their own rows (see `window_attention`)."""
    return resize(theirs, mine, blocks=3 if name.startswith("qkv.") else 1)


def adapt_fact_reduce(name, theirs, mine, parent_args, child_args):
    """Its batch norm's two halves follow its two convs."""
    return resize(theirs, mine, blocks=2 if name.startswith("bn.") else 1)


# ---- inner channels ----------------------------------------------------------------------
def se_strongest_first(tensors: dict) -> dict:
    """A SqueezeExcitation's tensors with its squeeze channels strongest first
    (|fc1 row| x |fc2 column|); the order does not change what it computes."""
    import torch

    fc1, fc2 = tensors["fc1.weight"], tensors["fc2.weight"]
    strength = fc1.abs().flatten(1).sum(1) * fc2.abs().flatten(1).sum(0)
    order = torch.argsort(strength, descending=True, stable=True)
    return {**tensors, "fc1.weight": fc1[order], "fc1.bias": tensors["fc1.bias"][order], "fc2.weight": fc2[:, order]}
