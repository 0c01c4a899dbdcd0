"""Channel units through the plain tensor ops a traced model runs between its layers:
reshapes, permutes, stacks, reductions, softmaxes, broadcast products and matmuls,
such as a selective-kernel attention's softmax over stacked paths or a head's
`q @ k.transpose(-2, -1)`.

nasdsl's primitives keep their channels on one axis of a conventional shape; these
ops move them to any axis. Here a tensor's channels are a *grid*: an integer array
of unit ids with the tensor's number of axes (the batch's included), each axis
either its full length or 1 where every position along it holds the same units (the
pixels of a map, the tokens of a sequence). A reshape is the array reshaped; a
permute, the array permuted; a product unites the units it multiplies, a matmul also
the ones it sums over, and a softmax or a sum the units along its axis, so a head
(every q, k and v channel that meets in one attention matrix) ends as one class.

Each rule also says whether the result is zero where a removed unit sits ("clean"),
given its inputs': a softmax is not, a product of a clean operand is. `groups` pins
units whose non-zero values would reach a layer that sums over channels.

The tracer records a call's arguments (`Call`): its tensors as `In(k)`, the k-th
graph input, or `Const` (a parameter or buffer), sizes computed from the input as
`Dyn`, and Python values as they are.
"""

from __future__ import annotations

import functools
import operator

import attrs
import numpy as np


@attrs.frozen
class In:
    """The call's k-th graph input."""

    k: int


@attrs.frozen
class Const:
    """A tensor that is no graph value: a parameter (at `path`), a buffer or a constant."""

    shape: tuple
    parameter: bool
    path: str = ""


@attrs.frozen
class Dyn:
    """A value computed from a tensor at run time (`x.size(0)`): it follows the pruned sizes."""


@attrs.frozen
class Call:
    """A traced call of one of `RULES`' ops: its arguments and the full shapes (batch
    included) of its graph inputs and its result."""

    fn: str
    args: tuple
    kwargs: dict = attrs.field(factory=dict, hash=False)
    full_in: tuple = ()
    full_out: tuple = ()

    def arg(self, index, name, default=None):
        return self.args[index] if len(self.args) > index else self.kwargs.get(name, default)


def with_parameters(call: Call) -> tuple:
    """(the call with each parameter it reads whole as one more graph input, those
    parameters' (path, shape)): a parameter's units are sliced like a layer's, along
    every axis where they vary (a relative-position table's heads)."""
    found = []
    if call.fn in _SHAPE_OF_SECOND:  # `x.reshape_as(weight)` reads only the weight's shape
        return call, found

    def convert(a):
        if isinstance(a, Const) and a.path:
            found.append((a.path, a.shape))
            return In(len(call.full_in) + len(found) - 1)
        if isinstance(a, (tuple, list)):
            return type(a)(convert(x) for x in a)
        if isinstance(a, slice):
            return slice(convert(a.start), convert(a.stop), convert(a.step))
        return a

    args = tuple(convert(a) for a in call.args)
    kwargs = {k: convert(v) for k, v in call.kwargs.items()}
    if not found:
        return call, []
    return attrs.evolve(call, args=args, kwargs=kwargs, full_in=(*call.full_in, *(s for _, s in found))), found


class Unsupported(Exception):
    """A call these rules do not follow: `groups` makes it a barrier."""


# ---- grids ----------------------------------------------------------------------------
def _channel_axis(shape) -> int:
    """Where a primitive's shape keeps its channels, counted from the end: the first of
    a map (C, H, W), the last of tokens, vectors and channels-last maps."""
    from .primitives import channels_last

    return -3 if len(shape) == 3 and not channels_last(shape) else -1


def grid_of(layout: np.ndarray, shape: tuple, ndim: int | None = None) -> np.ndarray | None:
    """A node's channel layout (its primitive's axis) as a grid of its full shape, of
    `ndim` axes (default: the shape's and the batch's)."""
    if not shape or not len(layout):
        return None  # a scalar: data, computed from channels kept whole
    ndim = len(shape) + 1 if ndim is None else ndim
    axis = ndim + _channel_axis(shape)
    if axis < 0:
        return None
    return np.asarray(layout).reshape([-1 if i == axis else 1 for i in range(ndim)])


def layout_of(grid: np.ndarray, shape: tuple) -> np.ndarray | None:
    """The channel layout a primitive reading a grid sees along its axis, or None where
    the grid's units vary along another axis (they are no channels of that primitive)."""
    from .primitives import channel_count

    if grid is None or not shape or grid.ndim < -_channel_axis(shape):
        return None
    axis = grid.ndim + _channel_axis(shape)
    if any(n != 1 for i, n in enumerate(grid.shape) if i != axis) or grid.shape[axis] not in (1, channel_count(shape)):
        return None
    return np.broadcast_to(grid, [channel_count(shape) if i == axis else 1 for i in range(grid.ndim)]).reshape(-1)


def _collapsed(a: np.ndarray) -> np.ndarray:
    """`a` with every axis along which it is constant cut to length 1."""
    for axis in range(a.ndim):
        if a.shape[axis] > 1 and (a == a.take([0], axis)).all():
            a = a.take([0], axis)
    return np.ascontiguousarray(a)


def _aligned(grid, ndim: int):
    return grid.reshape((1,) * (ndim - grid.ndim) + grid.shape)


def _unite_along(units, grid: np.ndarray, axis: int) -> None:
    """Unite the units along `axis` at every position of the other axes."""
    if grid.shape[axis] > 1:
        first = np.broadcast_to(grid.take([0], axis), grid.shape)
        units.union(first.reshape(-1), grid.reshape(-1))


def _unite(units, grids: list) -> np.ndarray:
    """Unite same-position units of broadcast grids; the first, broadcast to them all."""
    grids = np.broadcast_arrays(*grids)
    for other in grids[1:]:
        units.union(grids[0].reshape(-1), other.reshape(-1))
    return _collapsed(grids[0])


def _dim(d, ndim):
    if not isinstance(d, int):
        raise Unsupported(f"dim {d!r}")
    return d % ndim


def _dims(value, ndim) -> list:
    if value is None:
        return list(range(ndim))
    return [_dim(d, ndim) for d in (value if isinstance(value, (tuple, list)) else [value])]


def make_slices(units, grid: np.ndarray) -> None:
    """Unite units so that a grid's classes are slices along one axis: a pruning then
    keeps a product of index sets, so that each axis keeps a length and the reshapes
    between the grid's axes stay what they were (a channel shuffle's (2, C / 2) keeps
    the same channels of both halves). Where no axis is yet that, the longest one is
    kept free: its slices are the classes."""
    axes = [i for i, n in enumerate(grid.shape) if n > 1]
    if len(axes) < 2:
        return
    classes = np.array([units.find(u) for u in grid.reshape(-1).tolist()]).reshape(grid.shape)
    for j in axes:
        if all((classes == classes.take([0], i)).all() for i in axes if i != j):
            return
    free = max(axes, key=lambda i: grid.shape[i])
    for i in axes:
        if i != free:
            _unite_along(units, grid, i)


def kept_axes(grid: np.ndarray, kept: list) -> list:
    """Each axis's kept indices, for the kept positions of a grid, which `make_slices`
    makes a product of index sets; raises Unsupported where they are not one."""
    mask = np.zeros(grid.size, dtype=bool)
    mask[np.asarray(kept, dtype=np.int64)] = True
    mask = mask.reshape(grid.shape)
    per_axis = [mask.any(axis=tuple(j for j in range(mask.ndim) if j != i)) for i in range(mask.ndim)]
    grid_of_axes = [k.reshape([-1 if j == i else 1 for j in range(mask.ndim)]) for i, k in enumerate(per_axis)]
    if mask.size and not (mask == functools.reduce(np.logical_and, grid_of_axes)).all():
        raise Unsupported("the kept channels are no product of each axis's")
    return [np.flatnonzero(k) for k in per_axis]


def kept_lengths(grid: np.ndarray, kept: list) -> list:
    """Each axis's kept length (`kept_axes`); an axis without units keeps its length (None)."""
    return [None if n == 1 else len(k) for n, k in zip(grid.shape, kept_axes(grid, kept))]


def pinned(call: Call, units):
    """The result of a call on channels all kept whole (a weight standardised in the
    forward pass): one pinned unit stands for all of its units, item by item of a tuple."""
    one = units.new(1)
    units.fixed.update(one.tolist())
    if call.fn in TUPLES:
        return [one.reshape((1,) * len(call.full_out[0]))] * len(call.full_out)
    return one.reshape((1,) * len(call.full_out))


def resized(call: Call, lengths: list) -> dict:
    """{argument position (an int, or (int, int) inside a tuple argument): new value} for
    a call whose result keeps `lengths` of its axes (None: an axis without units, kept
    whole). A reshape's size along an axis with units becomes the kept length, whether
    the code writes it (a head count) or computes it from some tensor's size (which
    may be one that kept its length): such an axis holds channels, whose count the
    weights fix at any input size. Raises Unsupported where the call cannot follow."""
    if call.fn in ("view", "reshape", "expand"):
        packed = len(call.args) == 2 and isinstance(call.args[1], (tuple, list))
        sizes = call.args[1] if packed else call.args[1:]
        if len(sizes) != len(call.full_out):
            raise Unsupported("a reshape's sizes")
        new = {i: n for i, n in enumerate(lengths) if i > 0 and n is not None and
               (isinstance(sizes[i], Dyn) or (isinstance(sizes[i], int) and sizes[i] not in (-1, n)))}
        if lengths[0] is not None and lengths[0] != call.full_out[0]:
            # the batch's axis, heads folded into it (B * heads): its length is the batch's times
            # what it keeps, so -1 says it
            if -1 in sizes or call.fn == "expand":
                raise Unsupported("the batch's axis loses channels and another size is -1")
            new[0] = -1
        return {((1, i) if packed else i + 1): n for i, n in new.items()}
    shrunk = {i: n for i, n in enumerate(lengths) if n is not None and n != call.full_out[i]}
    if not shrunk:
        return {}
    if call.fn == "pad":
        pads = call.arg(1, "pad")
        padded = {len(call.full_out) - 1 - k // 2 for k in range(len(pads)) if pads[k] != 0}
        if padded & set(shrunk):
            raise Unsupported("padding an axis that loses channels")
        return {}
    if call.fn == "getitem":
        axes = []  # each output axis's index entry
        for i in _index(call):
            axes.extend([i] * len(i.shape) if isinstance(i, Const) else [] if isinstance(i, int) else [i])
        if any(axes[i] not in (None, slice(None)) for i in shrunk):
            raise Unsupported("indexing along an axis that loses channels")
        return {}
    if call.fn in _FOLLOWS_SIZES:
        return {}
    raise Unsupported(f"`{call.fn}` of an axis that loses channels")


# ---- rules: (call, input grids (None: no units), units) -> (grid or None, clean) ----------
def _reshape(call, grids, clean, units):
    """Any op that lays the same elements out in a new shape, in order."""
    g = grids[0]
    if g is None:
        return None, True
    full = np.broadcast_to(g, call.full_in[0]).reshape(call.full_out)
    return _collapsed(full), clean[0]


def _expand(call, grids, clean, units):
    g = grids[0]
    return (None if g is None else _aligned(g, len(call.full_out))), clean[0]


def _permute(call, grids, clean, units):
    g = grids[0]
    dims = call.args[1:] if call.args[1:] and isinstance(call.args[1], int) else call.arg(1, "dims")
    return (None if g is None else g.transpose([_dim(d, g.ndim) for d in dims])), clean[0]


def _transpose(call, grids, clean, units):
    g = grids[0]
    if g is None:
        return None, True
    a, b = _dim(call.arg(1, "dim0"), g.ndim), _dim(call.arg(2, "dim1"), g.ndim)
    return g.swapaxes(a, b), clean[0]


def _reduce(call, grids, clean, units):
    g = grids[0]
    if g is None:
        return None, True
    keep = call.arg(2, "keepdim", False)
    dims = _dims(call.arg(1, "dim"), g.ndim)
    for d in dims:
        _unite_along(units, g, d)
    out = g
    for d in sorted(dims, reverse=True):
        out = out.take([0], d) if keep else out.take(0, d)
    return np.ascontiguousarray(out), clean[0] and call.fn in _CLEAN_REDUCTIONS


def _along(call, grids, clean, units):
    """softmax, log_softmax, normalize: each output position reads every unit along `dim`."""
    g = grids[0]
    if g is None:
        return None, True
    dim = call.arg(2, "dim", 1) if call.fn == "normalize" else call.arg(1, "dim")
    _unite_along(units, g, _dim(dim, g.ndim))
    return g, clean[0] and call.fn == "normalize"


def _unary(call, grids, clean, units):
    return grids[0], clean[0] and call.fn in _CLEAN_UNARY


def _elementwise(call, grids, clean, units, operands=None, fn=None):
    """A broadcast add, product, difference or quotient. Operands meet unit by unit
    (a temperature per head meets every score of its head), except one broadcast along
    an axis where the others' units vary and with none of its own there (a spatial
    attention map over all channels), and a constant that varies where they do: those
    are pinned (a pruned tensor would not match them)."""
    ndim = len(call.full_out)
    operands, fn = list(call.args[:2] if operands is None else operands), fn or call.fn
    tensors = []
    for a in operands:
        if isinstance(a, In) and grids[a.k] is not None:
            full = (1,) * (ndim - len(call.full_in[a.k])) + tuple(call.full_in[a.k])
            tensors.append((_aligned(grids[a.k], ndim), clean[a.k], full))
    if not tensors:
        return None, True
    varying = {i for g, _, _ in tensors for i, n in enumerate(g.shape) if n > 1}

    def factor(t) -> bool:  # broadcast where the others' units vary, its own varying nowhere they do
        others = {i for g, _, _ in tensors if g is not t[0] for i, n in enumerate(g.shape) if n > 1}
        return any(t[2][i] == 1 for i in others) and not any(t[0].shape[i] > 1 for i in others)

    meeting = [t for t in tensors if not factor(t)]
    for g, _, _ in tensors:
        if not any(g is m[0] for m in meeting):
            units.fixed.update(g.reshape(-1).tolist())
    out = _unite(units, [g for g, _, _ in (meeting or tensors)])
    if not meeting:
        units.fixed.update(out.reshape(-1).tolist())
    for a in operands:
        shape = a.shape if isinstance(a, Const) else None
        if shape is not None and any(n > 1 and i in varying for i, n in
                                     enumerate((1,) * (ndim - len(shape)) + tuple(shape))):
            units.fixed.update(out.reshape(-1).tolist())
    cleans = [c for _, c, _ in meeting]
    if fn == "mul":
        return out, any(cleans)
    if fn in ("truediv", "div"):  # zero over anything is zero (over zero it is NaN, which a check sees)
        first = operands[0]
        return out, isinstance(first, In) and grids[first.k] is not None and clean[first.k] and \
            any(m[0] is tensors[0][0] for m in meeting)
    # add, sub: clean only where every operand is (no constant shifts it)
    return out, bool(meeting) and all(cleans) and len(meeting) == len(operands)


def _addcmul(call, grids, clean, units):
    """torch.addcmul(x, a, b) = x + a * b (timm's Affine: beta + alpha * x)."""
    if call.arg(3, "value", 1) == 0:
        raise Unsupported("addcmul by 0")
    product, product_clean = _elementwise(call, grids, clean, units, call.args[1:3], "mul")
    if product is None:
        return _elementwise(call, grids, clean, units, call.args[:1], "add")
    extended = attrs.evolve(call, full_in=(*call.full_in, call.full_out))
    return _elementwise(extended, [*grids, product], [*clean, product_clean], units,
                        (call.args[0], In(len(grids))), "add")


def _operand(call, grids, clean, a):
    """(grid or None, clean, number of axes) of an argument: a graph input or a constant."""
    if isinstance(a, In):
        return grids[a.k], clean[a.k], len(call.full_in[a.k])
    if isinstance(a, Const):
        return None, True, len(a.shape)
    raise Unsupported("an operand that is no tensor")


def _product(units, a, b, ndim: int):
    """The grid of `a @ b` over (..., n, k) x (..., k, m), of `ndim` axes: the units it
    multiplies and sums over are united, so every output position is one class with
    all it reads; None where neither has units."""
    if a is None and b is None:
        return None
    none = np.full((1,) * ndim, -1, dtype=np.int64)
    ea, eb = np.broadcast_arrays((none if a is None else _aligned(a, ndim))[..., :, :, None],
                                 (none if b is None else _aligned(b, ndim))[..., None, :, :])  # (..., n, k, m)
    real = [e for e, g in ((ea, a), (eb, b)) if g is not None]
    joined = np.broadcast_to(_unite(units, real) if len(real) > 1 else real[0], ea.shape)
    _unite_along(units, joined, ndim - 1)  # the k axis of (..., n, k, m)
    return _collapsed(joined.take(0, ndim - 1))


def _matmul(call, grids, clean, units):
    """`a @ b`; zero where a removed unit sits if either operand is."""
    (a, ca, na), (b, cb, nb) = (_operand(call, grids, clean, x) for x in call.args[:2])
    if min(na, nb) < 2:
        raise Unsupported("matmul of a vector")
    return _product(units, a, b, len(call.full_out)), (a is not None and ca) or (b is not None and cb)


def _attention(call, grids, clean, units):
    """F.scaled_dot_product_attention: softmax(q k^T * scale + mask) v. Its default scale
    reads the head width, which so keeps its length (heads are the classes)."""
    (q, _, nq), (k, _, _), (v, cv, _) = (_operand(call, grids, clean, x) for x in call.args[:3])
    mask = call.arg(3, "attn_mask")
    ndim = len(call.full_out)
    if nq < 2 or call.arg(4, "dropout_p", 0.0) or call.arg(5, "is_causal", False) or call.kwargs.get("enable_gqa"):
        raise Unsupported("attention with dropout, a causal mask or grouped queries")
    if q is not None and call.arg(6, "scale") is None:
        _unite_along(units, _aligned(q, ndim), ndim - 1)
    scores = _product(units, q, None if k is None else _aligned(k, ndim).swapaxes(-1, -2), ndim)
    if mask is not None:
        m, _, nm = _operand(call, grids, clean, mask)
        if m is not None:
            scores = _unite(units, [g for g in (scores, _aligned(m, ndim)) if g is not None])
        elif isinstance(mask, Const) and any(n > 1 for n in mask.shape[:-2]) and scores is not None and \
                any(n > 1 for n in scores.shape[:-2]):
            units.fixed.update(scores.reshape(-1).tolist())  # a buffer per head: the heads stay
    return _product(units, scores, v, ndim), v is not None and cv


def _linear(call, grids, clean, units):
    """A linear layer over the last axis of a tensor whose units lie on other axes
    (ResMLP's token mixing, on transposed tokens): they pass through, each row mixed
    by itself; its bias makes a removed row's result non-zero."""
    g = grids[0]
    if g is None:
        return None, True
    if g.shape[-1] != 1:
        raise Unsupported("a linear layer over an axis with units that also vary on others")
    bias = call.arg(2, "bias") if len(call.args) > 2 or "bias" in call.kwargs else call.arg(1, "bias")  # F.linear's
    return g, clean[0] and (bias is None or bias is False)  # or a module's: whether it has one


def _stack(call, grids, clean, units, cat=False):
    items = call.arg(0, "tensors")
    ndim = len(call.full_out)
    dim = _dim(call.arg(1, "dim", 0), ndim)
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, In) for i in items):
        raise Unsupported("a stack of constants")
    parts = []
    for item in items:
        g = grids[item.k]
        if g is None:
            raise Unsupported("a stack of a tensor without units")
        g = _aligned(g, ndim - (0 if cat else 1))
        if cat:
            g = np.broadcast_to(g, [call.full_in[item.k][i] if i == dim else n for i, n in enumerate(g.shape)])
        else:
            g = np.expand_dims(g, dim)
        parts.append(g)
    common = [max(p.shape[i] for p in parts) if i != dim else None for i in range(ndim)]
    parts = [np.broadcast_to(p, [p.shape[i] if i == dim else common[i] for i in range(ndim)]) for p in parts]
    return _collapsed(np.concatenate(parts, axis=dim)), all(clean[i.k] for i in items)


def _index(call) -> tuple:
    """A basic index (ints, slices, None, ...) written out over every input axis; a
    slice's bounds may be sizes (`x[:, :H]`), a `Const` index a tensor's (a gather)."""
    index = call.args[1] if isinstance(call.args[1], tuple) else (call.args[1],)
    if any(not (i is None or i is Ellipsis or isinstance(i, (int, slice, Const))) for i in index):
        raise Unsupported("indexing by a graph tensor")
    ndim = len(call.full_in[0])
    spread = sum(1 for i in index if i is not None and i is not Ellipsis)
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = (*index[:at], *(slice(None),) * (ndim - spread), *index[at + 1:])
    return (*index, *(slice(None),) * (ndim - sum(1 for i in index if i is not None)))


def _plain(i) -> bool:
    """Whether an index entry picks positions nasdsl can follow: an int or a slice of ints."""
    return isinstance(i, int) or (isinstance(i, slice) and
                                  all(v is None or isinstance(v, int) for v in (i.start, i.stop, i.step)))


def _getitem(call, grids, clean, units):
    """Basic indexing of a tensor, of its grid where units vary along the axis; a
    gather by a tensor of indices (a relative-position table's rows) unites the units
    along the axis it indexes."""
    g = grids[0]
    if g is None:
        return None, True
    index = _index(call)
    gathers = [k for k, i in enumerate(index) if isinstance(i, Const)]
    if gathers:  # one tensor index: the axes it indexes become its shape's, with no units along them
        if len(gathers) != 1 or any(i is None for i in index) or \
                any(i != slice(None) for k, i in enumerate(index) if k != gathers[0]):
            raise Unsupported("indexing by several tensors")
        k = gathers[0]
        _unite_along(units, g, k)
        picked = g.take([0], k).reshape(g.shape[:k] + (1,) * len(index[k].shape) + g.shape[k + 1:])
        return np.ascontiguousarray(picked), clean[0]
    picked, axis = [], 0
    for i in index:
        if i is None:
            picked.append(None)
            continue
        if g.shape[axis] == 1:  # no units vary along it: any part of it has the same
            picked.append(0 if isinstance(i, int) else slice(None))
        elif _plain(i):
            picked.append(i)
        else:
            raise Unsupported("indexing an axis with units by a size")
        axis += 1
    return np.ascontiguousarray(g[tuple(picked)]), clean[0]


def _split(call, grids, clean, units):
    """unbind, split or chunk: a tuple of grids."""
    g = grids[0]
    dim = _dim(call.arg(2 if call.fn != "unbind" else 1, "dim", 0), len(call.full_in[0]))
    if g is None:
        return [None] * len(call.full_out), True
    if g.shape[dim] == 1:
        item = g.take(0, dim) if call.fn == "unbind" else g
        return [item] * len(call.full_out), clean[0]
    if call.fn == "unbind":
        return [np.ascontiguousarray(g.take(k, dim)) for k in range(g.shape[dim])], clean[0]
    # a split of an axis with units (q, k and v of each head): its sizes are in the code, so
    # the axis keeps its length: its units are one class
    _unite_along(units, g, dim)
    stops = np.cumsum([shape[dim] for shape in call.full_out])
    return [np.ascontiguousarray(g.take(range(a, b), dim)) for a, b in zip([0, *stops[:-1]], stops)], clean[0]


def _item(call, grids, clean, units):
    return grids[0][call.args[1]], clean[0]


def _pad(call, grids, clean, units):
    """F.pad: on an axis where units vary, the new positions are units of their own,
    which later ops join to the classes they meet (linear attention pads each head's
    values with a column of ones); the padded axis keeps its length (`resized`)."""
    g = grids[0]
    pads = call.arg(1, "pad")
    if g is None:
        return None, True
    if not isinstance(pads, (tuple, list)):
        raise Unsupported("padding by a size")
    if (call.arg(2, "mode", "constant") or "constant") != "constant":
        raise Unsupported("a padding mode other than constant")
    for k in range(0, len(pads), 2):
        axis = g.ndim - 1 - k // 2
        before, after = pads[k], pads[k + 1]
        if g.shape[axis] == 1:  # no units along it: any padding (one computed from sizes too)
            continue
        if not isinstance(before, int) or not isinstance(after, int):
            raise Unsupported("padding an axis with units by a size")
        if before or after:
            if before < 0 or after < 0:
                raise Unsupported("a crop of an axis with units")
            shape = list(g.shape)
            shape[axis] = before
            head = units.new(int(np.prod(shape))).reshape(shape)
            shape[axis] = after
            tail = units.new(int(np.prod(shape))).reshape(shape)
            g = np.concatenate([head, g, tail], axis=axis)
    return g, clean[0]


def _roll(call, grids, clean, units):
    g = grids[0]
    shifts, dims = call.arg(1, "shifts"), call.arg(2, "dims")
    if g is None:
        return None, True
    if dims is None or not isinstance(shifts, (int, tuple, list)):
        raise Unsupported("a roll of the flattened tensor")
    shifts = shifts if isinstance(shifts, (tuple, list)) else [shifts]
    dims = dims if isinstance(dims, (tuple, list)) else [dims]
    for s, d in zip(shifts, dims):
        d = _dim(d, g.ndim)
        if g.shape[d] > 1:
            if not isinstance(s, int):
                raise Unsupported("a roll by a size")
            g = np.roll(g, s, axis=d)
    return g, clean[0]


_CLEAN_UNARY = ("contiguous", "float", "to", "type_as", "clone", "detach", "neg", "abs", "relu", "relu6", "square",
                "gelu", "silu", "hardswish", "leaky_relu", "mish",
                "half", "double", "bfloat16")
_CLEAN_REDUCTIONS = ("sum", "mean", "amax", "amin")
_RESHAPES = ("view", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze", "view_as", "reshape_as")

RULES = {
    **{fn: _reshape for fn in _RESHAPES},
    "expand": _expand, "expand_as": _expand,
    "permute": _permute, "transpose": _transpose,
    **{fn: _reduce for fn in ("sum", "mean", "amax", "amin", "logsumexp")},
    **{fn: _along for fn in ("softmax", "log_softmax", "normalize")},
    **{fn: _unary for fn in (*_CLEAN_UNARY, "exp", "sigmoid", "tanh", "sqrt", "rsqrt", "cos", "sin", "log",
                             "reciprocal", "pow", "clamp", "hardsigmoid")},
    **{fn: _elementwise for fn in ("add", "sub", "mul", "truediv", "div")}, "addcmul": _addcmul,
    "matmul": _matmul, "bmm": _matmul, "scaled_dot_product_attention": _attention,
    "stack": _stack, "cat": lambda *a: _stack(*a, cat=True),
    "getitem": _getitem, "pad": _pad, "roll": _roll,
    "unbind": _split, "split": _split, "chunk": _split, "item": _item, "linear": _linear,
}
TUPLES = ("unbind", "split", "chunk")  # rules whose result is a tuple of grids, read by "item"
# ops after which a tensor whose channels were its last axis still has them there, if that axis keeps its length
KEEPS_LAST = (*_RESHAPES, *_CLEAN_UNARY, "pad", "roll", "getitem", "add", "sub", "mul", "truediv", "div", "addcmul")

# ops whose second tensor gives only its shape or type
_SHAPE_OF_SECOND = ("reshape_as", "view_as", "expand_as", "type_as")

# ops that take the sizes their inputs have, whatever they are
_FOLLOWS_SIZES = set(RULES) - {"view", "reshape", "expand", "getitem", "roll", "unflatten", "split", "chunk", "pad"}

# call_function targets by what they are (a method call is named by its method)
FUNCTIONS = {operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.truediv: "truediv",
             operator.matmul: "matmul", operator.getitem: "getitem", operator.neg: "neg"}


def function_name(target) -> str | None:
    """The rule name of a call_function target: an operator, or torch's or
    torch.nn.functional's function of that name."""
    import torch
    import torch.nn.functional as F

    if target in FUNCTIONS:
        return FUNCTIONS[target]
    name = getattr(target, "__name__", None)
    if name in RULES and (getattr(torch, name, None) is target or getattr(F, name, None) is target):
        return name
    return None


def propagate(call: Call, grids: list, clean: list, units) -> tuple:
    """(output grid or None, clean) of a call; raises Unsupported for a call the rules
    do not follow."""
    try:
        return RULES[call.fn](call, grids, clean, units)
    except (ValueError, IndexError, TypeError) as err:  # a shape the rule cannot lay out
        raise Unsupported(str(err)) from None
