"""Single-path supernets: one bank of weights that every derivation of a space runs on.

The bank holds a tensor at every `state_dict` key that a derivation's module can
have (the key is the provenance path, so every option of an alternative has its
own), as large as any derivation needs there. Its shapes come from the space's
cover derivations (`Space.cover`: every option, symbol and candidate in turn, with
the largest numbers and repetitions), elementwise largest, without enumerating the
space. A derivation's tensor is a window of the bank's (the primitive's `window`,
by default `channels.pieces`: leading channels, centred kernels, as inheritance
aligns a parent's tensor), so value choices share one tensor, as once-for-all does.

`forward(x, d)` runs `d` alone: its graph, op by op, each on a template module
(built once per op, arguments and input shapes, on the meta device) whose tensors
are, for that call, the windows of the bank; gradients flow into the bank.
`subnet(d)` is `space.compile(d)` carrying copies of the windows, and
`load_subnet(d, module)` writes a trained child back. A derivation that would need
more than the bank holds is a SupernetError naming the tensor, never a silent slice.
"""

from __future__ import annotations

import collections
import contextlib
import math

import attrs
import torch
from torch import nn

from ..language import primitives as registry
from . import channels
from .elaborate import SupernetError
from .graph import default_input_shape
from .limits import MAX_SUPERNET_PARAMS

DEFAULT_MAX_PARAMS = MAX_SUPERNET_PARAMS
PROGRAMS_KEPT = 256  # derivations whose programs stay built (a sampler's pool, an evolution's population)


@attrs.frozen
class Entry:
    """One tensor of the bank: its key, largest shape, whether it is trained, and how a
    derivation's tensor lies in it (`(bank, shape) -> pieces`, see `channels.pieces`)."""

    key: str
    shape: tuple
    dtype: torch.dtype
    trained: bool
    place: object = attrs.field(eq=False, repr=False)


@attrs.frozen
class Size:
    """What a supernet holds, known before it is allocated."""

    params: int  # trained numbers
    bytes: int  # parameters and buffers
    tensors: int


@attrs.frozen
class _Call:
    """One op of a derivation's program: its template and, per tensor, where it comes from."""

    node: str
    op: str
    inputs: tuple
    template: nn.Module | None  # None: input, output, `add`, `concat`, or an op without a module (identity)
    tensors: tuple  # of (owner module in the template, name, is a buffer, bank key, shape, place)
    free: tuple  # values no later op reads


class Supernet(nn.Module):
    """A single-path supernet of `space` for inputs of `input_shape` (per sample)."""

    def __init__(self, space, input_shape=None, *, cover=(), seed: int | None = 0,
                 max_params: int = DEFAULT_MAX_PARAMS):
        super().__init__()
        self.space = space
        self.input_shape = tuple(input_shape) if input_shape is not None else default_input_shape(space)
        self._templates: dict = {}
        self.bn_momentum: float | None = None  # batch-norm momentum while training; None keeps each op's
        self._programs: collections.OrderedDict = collections.OrderedDict()
        graphs = _cover_graphs(space, self.input_shape, cover)
        self._tensors = tensors = _bank_tensors(graphs, self._template)
        size = _size(tensors)
        if size.params > max_params:
            raise SupernetError(f"the supernet of `{space.name}` would hold {size.params:,} parameters "
                                f"({size.bytes / 2**20:,.0f} MiB); the limit is {max_params:,}",
                                hint="raise max_params (--max-supernet-params), or shrink the space "
                                     "(`nasdsl restrict`, smaller widths or depths)")
        self.size = size
        self.bank = nn.Module()  # its state_dict keys are the children's
        self._owners: dict = {}  # key -> (the module holding it, its name there)
        if seed is not None:
            torch.manual_seed(seed)
        initial = _initial_values(graphs, tensors)
        for t in tensors.values():
            holder, name = self._owners[t.key] = self._holder(t.key)
            value = initial[t.key]
            if t.trained:
                holder.register_parameter(name, nn.Parameter(value))
            else:
                holder.register_buffer(name, value)

    # ---- sizing -----------------------------------------------------------------------
    @staticmethod
    def measure(space, input_shape=None, cover=()) -> Size:
        """Parameters and bytes of the supernet, without allocating it."""
        shape = tuple(input_shape) if input_shape is not None else default_input_shape(space)
        templates: dict = {}
        return _size(_bank_tensors(_cover_graphs(space, shape, cover), lambda a: _template(templates, a)))

    def _template(self, attrs_):
        found = _template(self._templates, attrs_)
        if found is not None and self.bn_momentum is not None:
            for m in _norms(found):
                m.momentum = self.bn_momentum
        return found

    def set_bn_momentum(self, momentum: float | None) -> None:
        """The batch-norm momentum of every op while training (as `TrainConfig.bn_momentum`)."""
        self.bn_momentum = momentum
        if momentum is not None:
            for template in self._templates.values():
                for m in _norms(template) if template is not None else ():
                    m.momentum = momentum

    @contextlib.contextmanager
    def statistics_kept(self):
        """Every buffer (the batch-norm statistics) back as it was on exit, so that a
        recalibration made for one evaluation changes nothing the next one sees."""
        saved = [(b, b.clone()) for b in self.bank.buffers()]
        try:
            yield
        finally:
            with torch.no_grad():
                for b, value in saved:
                    b.copy_(value)

    def _holder(self, key: str):
        """The module that owns `key` in the bank (made on first use), and the tensor's name."""
        path, _, name = key.rpartition(".")
        module = self.bank
        for part in path.split("."):
            child = module._modules.get(part)
            if child is None:
                child = nn.Module()
                module.add_module(part, child)
            module = child
        return module, name

    def tensor(self, key: str) -> torch.Tensor:
        """The bank's tensor at `key` (looked up each time: moving the module replaces buffers)."""
        holder, name = self._owners[key]
        found = holder._parameters.get(name)
        return found if found is not None else holder._buffers[name]

    @property
    def device(self) -> torch.device:
        first = next(iter(self._owners), None)
        return self.tensor(first).device if first is not None else torch.device("cpu")

    # ---- one derivation -------------------------------------------------------------------
    def forward(self, x, d, bn: str = "running"):
        """Run derivation `d` on `x` with the bank's weights. `bn="train"`: batch norm
        uses the batch's statistics even in eval mode (and leaves the bank's running
        statistics alone), as one-shot evaluation often does."""
        if bn not in ("running", "train"):
            raise ValueError(f"bn must be `running` or `train`, got {bn!r}")
        program = self.program(d)
        values = {}
        for call in program:
            if call.template is None:
                values[call.node] = _combine(call, values, x)
            else:
                for owner, name, is_buffer, key, shape, place in call.tensors:
                    tensor = channels.window(place(self.tensor(key), shape))
                    if is_buffer and bn == "train" and not self.training:
                        tensor = tensor.clone()  # batch statistics: the bank's running ones stay as they are
                    (owner._buffers if is_buffer else owner._parameters)[name] = tensor
                _set_mode(call.template, self.training, bn == "train")
                values[call.node] = call.template(values[call.inputs[0]])
            for gone in call.free:
                values.pop(gone, None)
        return values["output"]

    def program(self, d) -> list:
        """The ops of `d` in order, with their templates and windows (built once per derivation)."""
        d = self.space.validate(d)
        found = self._programs.get(d)
        if found is not None:
            self._programs.move_to_end(d)
            return found
        program = _program(self.space.graph(d, self.input_shape), self._template, self._tensors)
        self._programs[d] = program
        if len(self._programs) > PROGRAMS_KEPT:
            self._programs.popitem(last=False)
        return program

    def subnet(self, d, seed: int | None = None) -> torch.fx.GraphModule:
        """`space.compile(d)` with copies of the bank's windows: a stand-alone child."""
        module = self.space.compile(d, self.input_shape, seed=seed)
        own = module.state_dict()
        self._check_keys(d, own)
        with torch.no_grad():
            module.load_state_dict({k: self._read(k, v.shape, own[k]) for k, v in own.items()})
        return module.to(self.device)

    def load_subnet(self, d, module: nn.Module):
        """Write a trained child of `d` (a module `subnet(d)` or `space.compile(d)` built) back into the bank."""
        own = module.state_dict()
        self._check_keys(d, own)
        with torch.no_grad():
            for key, value in own.items():
                self._write(key, value)

    def _check_keys(self, d, state: dict):
        expected = {key for call in self.program(d) for *_, key, _, _ in call.tensors}
        if set(state) != expected:
            extra, missing = sorted(set(state) - expected), sorted(expected - set(state))
            raise SupernetError(f"the module is not derivation {d}'s: "
                                + (f"unexpected {', '.join(extra[:3])}" if extra else f"missing {', '.join(missing[:3])}"))

    def _place(self, key, shape):
        return self._tensors[key].place(self.tensor(key), shape)

    def _read(self, key, shape, like):
        return channels.window(self._place(key, shape)).detach().clone().to(like.dtype)

    def _write(self, key, value):
        for view, index in self._place(key, value.shape):
            view.copy_(value[index])

    def recalibrate(self, d, batches):
        """Reset the batch-norm statistics `d` uses and estimate them afresh on `batches`
        (the bank's running statistics are shared by every derivation, so they fit none)."""
        program = self.program(d)
        norms = [m for call in program if call.template is not None for m in _norms(call.template)]
        with torch.no_grad():
            for call in program:
                for _, name, is_buffer, key, shape, place in call.tensors:
                    if is_buffer:
                        for view, _ in place(self.tensor(key), shape):
                            view.fill_(1 if name == "running_var" else 0)
            momenta = [m.momentum for m in norms]
            for m in norms:
                m.momentum = None  # a cumulative average over the batches
            was_training = self.training
            self.train()
            try:
                for x in batches:
                    self(x, d)
            finally:
                self.train(was_training)
                for m, momentum in zip(norms, momenta):
                    m.momentum = momentum


# ---- building ---------------------------------------------------------------------------------
def _cover_graphs(space, input_shape, extra) -> list:
    """The graphs the bank is sized from: the space's cover derivations and any `extra`."""
    return [space.graph(d, input_shape) for d in list(space.cover()) + [space.validate(d) for d in extra]]


def _template(cache: dict, a: dict):
    """The module of one op for its arguments and input shapes, on the meta device."""
    key = _op_key(a)
    found = cache.get(key)
    if found is None:
        factory = registry.get(a["op"]).module
        with torch.device("meta"):
            found = cache[key] = factory(a["args"], a["in_shapes"]) if factory is not None else None
        if found is not None and hasattr(found, "inplace"):
            found.inplace = False  # one template serves many nodes
    return found


def _op_key(a: dict) -> tuple:
    """What makes one op's module: the primitive, its arguments and its input shapes."""
    return a["op"], tuple(sorted(a["args"].items())), tuple(tuple(s) for s in a["in_shapes"])


def _tensors_of(template: nn.Module):
    """(owner, name, is a buffer, dotted name) for every tensor of a template."""
    for prefix, owner in template.named_modules():
        for name in owner._parameters:
            if owner._parameters[name] is not None:
                yield owner, name, False, f"{prefix}.{name}" if prefix else name
        for name in owner._buffers:
            if owner._buffers[name] is not None:
                yield owner, name, True, f"{prefix}.{name}" if prefix else name


def _window_function(op: str):
    custom = registry.get(op).window
    if custom is None:
        return lambda name: channels.pieces
    return lambda name: (lambda bank, shape: custom(name, bank, shape))


def _bank_tensors(graphs, template) -> dict:
    """Every key of every graph's module with its largest shape."""
    tensors: dict = {}
    for graph in graphs:
        for node, a in graph.nodes(data=True):
            if a["op"] in _PLUMBING:
                continue
            module = template(a)
            if module is None:
                continue
            window_for = _window_function(a["op"])
            for owner, name, is_buffer, dotted in _tensors_of(module):
                key, t = f"{node}.{dotted}", getattr(owner, name)
                shape = tuple(t.shape)
                seen = tensors.get(key)
                if seen is not None and len(seen.shape) != len(shape):
                    raise SupernetError(f"`{key}` is a {len(seen.shape)}-d tensor in one derivation and "
                                        f"{len(shape)}-d in another: a supernet shares tensors by path",
                                        hint="give the two operations different labels (`as NAME`)")
                if seen is not None:
                    shape = tuple(max(a_, b_) for a_, b_ in zip(seen.shape, shape))
                tensors[key] = Entry(key, shape, t.dtype, not is_buffer, window_for(dotted))
    return tensors


def _size(tensors: dict) -> Size:
    params = sum(math.prod(t.shape) for t in tensors.values() if t.trained)
    size = sum(math.prod(t.shape) * t.dtype.itemsize for t in tensors.values())
    return Size(params, size, len(tensors))


def _initial_values(graphs, tensors: dict) -> dict:
    """The bank's first values: each op's own initialisation (its module built for real,
    in graph order after the seed), the larger over the smaller; a bank tensor larger
    than any one op's is tiled from the largest first."""
    values: dict = {}
    done: set = set()
    builds = []
    for graph in graphs:
        for node, a in graph.nodes(data=True):
            prim = registry.get(a["op"])
            key = (node, _op_key(a))
            if prim is None or prim.module is None or key in done:
                continue
            done.add(key)
            module = prim.module(a["args"], a["in_shapes"])
            builds.extend((f"{node}.{dotted}", t) for dotted, t in module.state_dict().items())
    builds.sort(key=lambda b: b[1].numel())
    for key, t in builds:
        bank = values.get(key)
        if bank is None:
            shape = tensors[key].shape
            reps = [math.ceil(p / c) if c else 1 for p, c in zip(shape, t.shape)]
            bank = values[key] = t.repeat(*reps)[tuple(slice(0, p) for p in shape)].clone() if t.dim() else t.clone()
        for view, index in tensors[key].place(bank, t.shape):
            view.copy_(t[index])
    return values


def _program(graph, template, bank: dict) -> list:
    """A derivation's ops in build order, each with its template and bank windows."""
    last_read: dict = {}
    order = list(graph.nodes)
    for i, node in enumerate(order):
        for source in graph.nodes[node]["inputs"]:
            last_read[source] = i
    frees: dict = collections.defaultdict(list)
    for source, i in last_read.items():
        frees[i].append(source)
    program = []
    for i, node in enumerate(order):
        a = graph.nodes[node]
        module = template(a) if a["op"] not in _PLUMBING else None
        tensors = []
        if module is not None:
            for owner, name, is_buffer, dotted in _tensors_of(module):
                key, shape = f"{node}.{dotted}", tuple(getattr(owner, name).shape)
                held = bank.get(key)
                if held is None:
                    raise SupernetError(f"`{key}` is in no derivation the supernet was sized from",
                                        hint="pass this derivation in `cover=` when building the supernet")
                if len(held.shape) != len(shape) or any(c > p for c, p in zip(shape, held.shape)):
                    raise SupernetError(f"`{key}` needs a tensor of {list(shape)}; the bank holds {list(held.shape)}",
                                        hint="pass this derivation in `cover=` when building the supernet")
                tensors.append((owner, name, is_buffer, key, shape, held.place))
        program.append(_Call(node, a["op"], tuple(a["inputs"]), module, tuple(tensors), tuple(frees.get(i, ()))))
    return program


_PLUMBING = ("input", "output", "add", "concat")


def _combine(call: _Call, values: dict, x):
    """An op without a template: the input, a sum, a concatenation, the output, or a pass-through."""
    if call.op == "input":
        return x
    inputs = [values[i] for i in call.inputs]
    if call.op == "add":
        total = inputs[0]
        for other in inputs[1:]:
            total = total + other
        return total
    if call.op == "concat":
        return torch.cat(inputs, dim=1)
    return inputs[0] if len(inputs) == 1 else tuple(inputs)  # the output, or an op that passes its input on


def _set_mode(module: nn.Module, training: bool, batch_statistics: bool):
    """Train or eval mode for one call; batch norms use batch statistics if asked, even in eval."""
    if module.training != training:
        module.train(training)
    if not training:
        for m in _norms(module):
            m.training = batch_statistics


def _norms(module: nn.Module) -> list:
    found = getattr(module, "_nasdsl_norms", None)
    if found is None:
        found = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        module._nasdsl_norms = found
    return found
