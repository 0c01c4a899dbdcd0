"""Any torch module → the compiler's dependency graph, so the analyses written for
compiled derivations (shapes, params, MACs, channel groups, pruning) work on
published models too.

`trace(module, example)` runs `torch.fx.symbolic_trace` (`fx_trace`: a submodule that
branches on a traced shape is kept whole) and then the traced graph
on `example` (in eval mode, under torch's flop counter), and keeps `nasdsl.compiler.graph`'s
schema: one node per tensor operation, with `op`, `args`, `path`, `rules`,
`inputs`, `in_shapes`, `shape`, `params`, `macs` (and `fx`, the torch.fx node's name,
for rewiring the module: `nasdsl.compiler.erasing`; and `module` where a function
call works on one submodule's parameters, as timm's `BatchNormAct2d` calls
`F.batch_norm` and its `Linear` `F.linear`: that submodule's path, which pruning slices). A node's id is the submodule's
qualified name (`layer1.0.conv1`; a module called again gets `layer1.0.relu_1`)
or the fx name of a function call (`add_3`). An operation is named in nasdsl's
vocabulary (`conv`, `bn`, `relu`, `add`, `mul`, `concat`, ...) only where that
primitive reproduces its shape, parameter count and MACs; anything else is
`module:ClassName` or `function:name` with no arguments.

Shapes are per sample (the leading dimension dropped; where it holds more than the
batch, as a window attention's (B * windows, N, C), the extra is folded into the next
axis: (windows * N, C)). A node whose result is a tuple of tensors (`chunk`, `split`)
has shape None; the nodes reading its items list it as an input, with the item's
shape in `in_shapes` (of a plain tensor op's tuple, each item read is a node of its
own). A plain tensor op (a reshape, permute, softmax, matmul, ...) also keeps its
arguments in `call`, a `nasdsl.compiler.tensorops.Call`, whose rules carry channel
units through it on every axis. A result whose one tensor is
its first item (`nn.MultiheadAttention` without weights: `(out, None)`) is that
tensor.
Values that are not tensors (`x.size(0)`, shapes) are no operations: nodes
computed from them read only their tensor inputs. Each parameter counts once, at
the first operation that uses it (a module's first call, or the first operation
reading it as an attribute), so the total equals `module.parameters()`'s for
every parameter the forward pass uses.
"""

from __future__ import annotations

import itertools
import operator
from pathlib import Path

import networkx as nx
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..language.errors import NasError, did_you_mean
from . import primitives, tensorops
from .flops import flop_counter
from .fxtrace import fx_trace
from .graph import output_shape
from .known import describe
from .modules import LayerScale


def trace(module: nn.Module, example: torch.Tensor) -> nx.DiGraph:
    """The dependency graph of `module` (in eval mode) on the batch `example`."""
    name = type(module).__name__
    if not isinstance(example, torch.Tensor) or example.dim() < 1 or example.shape[0] < 1:
        raise NasError(f"tracing {name} needs an example batch (a tensor with a leading batch dimension)")
    modes = {m: m.training for m in module.modules()}
    module.eval()  # the graph of inference: no stochastic depth, no auxiliary heads
    try:
        gm = fx_trace(module, tuple(example.shape[1:]))
        with torch.no_grad(), flop_counter() as counter:
            probe = _Probe(gm, counter)
            try:
                probe.propagate(example)
            except _Failure as failure:
                where = failure.node.target if failure.node.op == "call_module" else failure.node.name
                err = failure.error
                raise NasError(f"{name} fails on an input of shape {tuple(example.shape)} at `{where}`: "
                               f"{type(err).__name__}: {err}") from err
    finally:
        for m, training in modes.items():
            m.training = training
    graph = _Builder(module, gm, probe.flops, example.shape[0]).graph
    graph.graph["fx_graph"] = gm.graph  # the code its nodes name, which a pruning rewrites
    return graph


def load_model(spec: str, num_classes: int | None = None) -> nn.Module:
    """The model `spec` names: `torchvision:NAME`, torchvision's classification model
    NAME, or `timm:NAME`, timm's, randomly initialised (nothing is ever downloaded),
    with `num_classes` outputs when given; or `module:PATH:NAME`, the `nn.Module` that
    NAME (a module, or a class or function called without arguments) is in the Python
    file PATH, which is run to find it (the user's own code, as with --plugin)."""
    source, sep, rest = spec.partition(":")
    if source == "module" and sep:
        return _user_model(spec, *rest.rpartition(":")[::2])
    if source == "timm" and sep:
        return _timm_model(rest, num_classes)
    if source != "torchvision" or not sep:
        raise NasError(f"expected a model as torchvision:NAME, timm:NAME or module:PATH:NAME, got `{spec}`", None,
                       "e.g. torchvision:resnet18, timm:mixnet_s or module:models.py:Net")
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if rest not in names:
        raise NasError(f"unknown torchvision model `{rest}`", None,
                       did_you_mean(rest, names) or f"the models are {', '.join(names)}")
    extra = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(rest, weights=None, **extra)


def _timm_model(name: str, num_classes: int | None) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise NasError(f"timm:{name} needs timm, which is not installed", None, "pip install timm") from None
    names = timm.list_models()
    if name not in names:
        raise NasError(f"unknown timm model `{name}`", None,
                       did_you_mean(name, names) or "`timm.list_models()` lists them")
    extra = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(name, pretrained=False, **extra)


def _user_model(spec: str, path: str, name: str) -> nn.Module:
    import importlib.util
    import sys

    if not path or not name:
        raise NasError(f"expected module:PATH:NAME, got `{spec}`", None, "e.g. module:models.py:Net")
    file = Path(path)
    if not file.is_file():
        raise NasError(f"{path}: no such Python file (in `{spec}`)")
    loaded = importlib.util.spec_from_file_location(f"nasdsl_user_{file.stem}", file)
    code = importlib.util.module_from_spec(loaded)
    sys.modules[loaded.name] = code  # its classes pickle (torch.save of the whole model) by their module's name
    try:
        loaded.loader.exec_module(code)
    except Exception as err:  # the user's file: its error, said as ours
        raise NasError(f"{path}: running it failed: {type(err).__name__}: {err}") from err
    found = getattr(code, name, None)
    if found is None:
        public = [n for n in vars(code) if not n.startswith("_")]
        raise NasError(f"{path} has no `{name}`", None, did_you_mean(name, public) or "name a class or function there")
    if not isinstance(found, nn.Module):
        try:
            found = found() if callable(found) else found
        except Exception as err:
            raise NasError(f"{path}: `{name}()` failed: {type(err).__name__}: {err}") from err
    if not isinstance(found, nn.Module):
        raise NasError(f"{path}: `{name}` is no torch.nn.Module, nor makes one without arguments "
                       f"(got {type(found).__name__})")
    return found


def summary(model: str, graph: nx.DiGraph) -> dict:
    """The JSON-ready facts about a traced model that `nasdsl trace` prints."""
    from .erasing import erasing_graph
    from .groups import channel_groups

    groups = channel_groups(graph)
    return {"model": model, "input_shape": _json(graph.graph["input_shape"]),
            "output_shape": _json(output_shape(graph)), "params": graph.graph["params"],
            "macs": graph.graph["macs"], "nodes": graph.number_of_nodes(),
            "groups": len(groups), "prunable_groups": sum(g.prunable for g in groups),
            "removal_structures": len(erasing_graph(graph).structures)}


class _Failure(BaseException):
    """A node's error on its way past ShapeProp, which prints a traceback for every Exception."""

    def __init__(self, node: torch.fx.Node, error: Exception):
        super().__init__(node, error)
        self.node = node
        self.error = error


class _Guarded(torch.fx.Interpreter):
    def run_node(self, n):
        try:
            return super().run_node(n)
        except Exception as err:
            raise _Failure(n, err) from err


class _Probe(ShapeProp, _Guarded):
    """ShapeProp that also records the flops torch's counter sees in each node
    (and, through `_Guarded`, which comes after it, reports a failing node quietly)."""

    def __init__(self, gm, counter):
        super().__init__(gm)
        self.counter = counter
        self.flops: dict[torch.fx.Node, int] = {}

    def run_node(self, n):
        before = self.counter.get_total_flops()
        result = super().run_node(n)
        self.flops[n] = self.counter.get_total_flops() - before
        return result


class _Builder:
    def __init__(self, root: nn.Module, gm: torch.fx.GraphModule, flops: dict, batch: int):
        self.root = root
        self.flops = flops
        self.batch = batch
        self.space = type(root).__name__
        self.graph = nx.DiGraph(space=self.space)
        self.values: dict[torch.fx.Node, tuple] = {}  # fx node → (graph node, per-sample shape) of a tensor
        self.tuples: dict[torch.fx.Node, str] = {}  # fx node → graph node of a tuple of tensors
        # a split of a tensor's channels read item by item: fx node → (its input's value, each item's
        # (start, stop)); each item read is a `slice` of that tensor, the split itself no node
        self.splits: dict[torch.fx.Node, tuple] = {}
        self.weights: set[str] = set()  # nodes computed from parameters and constants only
        self.last_axis: set[str] = set()  # nodes of more than three axes whose channels are their last
        self.firsts: set[torch.fx.Node] = set()  # fx nodes of a (tensor, None, ...) result, valued as the tensor
        # `x.flatten(2)` of a (C, H, W) map read only by a swap of its last two axes: that map's value,
        # so that the two are one `tokens` node
        self.flat: dict[torch.fx.Node, tuple] = {}
        # get_attr nodes that fetch a parameter or buffer, and reshapes of them: (its path, it, shape)
        self.attrs: dict[torch.fx.Node, tuple] = {}
        self.counted: set[int] = set()  # ids of the parameters already counted
        # a module's first call is named by its path, so a function call must not take a path, and a
        # later call of a module must take neither a path nor the name of a function call
        self.paths = {n.target for n in gm.graph.nodes if n.op == "call_module"}
        self.reserved = {"input", "output"} | self.paths
        self.reserved |= {n.name for n in gm.graph.nodes if n.op in ("call_function", "call_method")}
        # the graph's ends are `input` and `output` unless a submodule has that name
        self.ends = {}
        for end in ("input", "output"):
            self.ends[end] = self.fresh(end) if end in self.paths else end
            self.reserved.add(self.ends[end])  # a module's later call must not take it
        self.calls: dict[str, list[str]] = {}  # module path -> its calls' nodes, for modules with weights
        for n in gm.graph.nodes:
            self.visit(n)
        # a module with weights called more than once: its calls share them (channel groups couple them)
        self.graph.graph["shared_calls"] = {m: ids for m, ids in self.calls.items() if len(ids) > 1}
        self.graph.graph["params"] = sum(a["params"] for _, a in self.graph.nodes(data=True))
        self.graph.graph["macs"] = sum(a["macs"] for _, a in self.graph.nodes(data=True))

    def visit(self, n: torch.fx.Node):
        meta = n.meta.get("tensor_meta")
        if n.op == "placeholder":
            if isinstance(meta, TensorMetadata) and self.ends["input"] not in self.graph:
                shape = self.sample(meta)
                self.graph.graph["input_shape"] = shape
                self.add(self.ends["input"], "input", {}, (), [], [], shape)
                self.values[n] = (self.ends["input"], shape)
        elif n.op == "get_attr":
            value = _fetch(self.root, n.target)
            if isinstance(value, torch.Tensor):
                self.attrs[n] = (n.target, value, tuple(value.shape))
        elif self.reshapes_an_attribute(n) and isinstance(meta, TensorMetadata):
            # `self.gamma.view(1, -1, 1, 1)`: still that tensor, to the operation that reads it
            path, value, _ = self.attrs[n.args[0]]
            self.attrs[n] = (path, value, tuple(meta.shape))
        elif n.op == "output":
            ids, shapes, _ = self.reads(n)
            self.add(self.ends["output"], "output", {}, (), ids, shapes, shapes[0] if len(shapes) == 1 else None)
            self.graph.graph["outputs"] = ids
        elif n.target is operator.getitem and _node_in(n.args[0], self.firsts) and n.args[1] == 0:
            self.values[n] = self.values[n.args[0]]
        elif self.flattens_a_map(n, meta):
            self.flat[n] = self.values[n.args[0]]
        elif n.args and _node_in(n.args[0], self.flat):  # the swap flattens_a_map saw: the map's pixels as tokens
            map_id, map_shape = self.flat[n.args[0]]
            node_id = self.fresh(n.name) if n.name in self.paths or n.name in self.graph else n.name
            self.add(node_id, "tokens", {}, self.rules(n), [map_id], [map_shape], self.sample(meta), fx=n.name)
            self.values[n] = (node_id, self.sample(meta))
        elif self.splits_channels(n, meta):
            self.splits[n] = (self.values[n.args[0]], _ranges(meta))
        elif n.target is operator.getitem and _node_in(n.args[0], self.splits) and isinstance(n.args[1], int):
            (source, source_shape), ranges = self.splits[n.args[0]]
            start, stop = ranges[n.args[1]]
            node_id = self.fresh(n.name) if n.name in self.paths or n.name in self.graph else n.name
            self.add(node_id, "slice", {"start": start, "stop": stop}, self.rules(n), [source], [source_shape],
                     self.sample(meta), fx=n.name)
            self.values[n] = (node_id, self.sample(meta))
        elif n.target is operator.getitem and isinstance(n.args[0], torch.fx.Node) and n.args[0] in self.tuples:
            # an item of a tuple of tensors: its readers read the tuple's node, or, of a plain op's
            # tuple (`qkv.unbind(0)`), a node of its own that picks it
            tuple_node = self.graph.nodes[self.tuples[n.args[0]]]
            if isinstance(meta, TensorMetadata) and tuple_node.get("call") and isinstance(n.args[1], int):
                node_id = self.fresh(n.name) if n.name in self.paths or n.name in self.graph else n.name
                self.add(node_id, "function:getitem", {}, self.rules(n), [self.tuples[n.args[0]]], [None],
                         self.sample(meta), fx=n.name)
                self.graph.nodes[node_id]["call"] = tensorops.Call(
                    "item", (tensorops.In(0), n.args[1]), {}, (tuple_node["call"].full_out,), tuple(meta.shape))
                self.values[n] = (node_id, self.sample(meta))
            elif isinstance(meta, TensorMetadata):
                self.values[n] = (self.tuples[n.args[0]], self.sample(meta))
            elif _has_tensor(meta):
                self.tuples[n] = self.tuples[n.args[0]]
        elif n.op == "call_module" or _has_tensor(meta):
            self.operation(n, meta)

    def operation(self, n: torch.fx.Node, meta):
        ids, shapes, attrs = self.reads(n)
        used = [t for _, t, _ in attrs if isinstance(t, nn.Parameter)]
        if n.op == "call_module":
            module = self.root.get_submodule(n.target)
            used += module.parameters()
            node_id = self.fresh(n.target) if n.target in self.graph else n.target
            fallback = f"module:{type(module).__name__}"
        else:
            node_id = self.fresh(n.name) if n.name in self.paths or n.name in self.graph else n.name
            fallback = f"function:{getattr(n.target, '__name__', n.target)}"
        # a result computed from parameters alone (a weight standardised in the forward pass) has
        # no batch folded into its first axis
        data = any(a in self.values and self.values[a][0] not in self.weights or a in self.tuples
                   for a in n.all_input_nodes) or n.op == "call_module"
        if not data:
            self.weights.add(node_id)
        shape = (self.sample(meta) if data else tuple(meta.shape)[1:]) if isinstance(meta, TensorMetadata) \
            else _first_only(meta)
        macs = self.flops[n] // 2 // self.batch
        own = sum(p.numel() for p in used)
        op_args = self.vocabulary(n, shapes, shape)
        if op_args is None or not _agrees(*op_args, shapes, shape, own, macs):
            op_args = (fallback, {})
        shape = self.layout(n, op_args[0], shapes, shape)
        last_axis = self.keeps_last_axis(n, ids, shapes, shape)
        if last_axis and len(shape) == 3:
            shape = primitives.ChannelsLast(shape)
        params = sum(p.numel() for p in {id(p): p for p in used}.values() if id(p) not in self.counted)
        self.counted.update(id(p) for p in used)
        holder, tensors = None, None
        if n.op != "call_module" and attrs and primitives.get(op_args[0]):
            holder, tensors = self.holder(attrs, op_args[0] in _PER_TENSOR)
            if holder is None:  # a pruning could not slice what it reads
                op_args = (fallback, {})
        self.add(node_id, *op_args, self.rules(n), ids, shapes, shape, params, macs, fx=n.name, module=holder)
        if (call := self.call(n, meta)) is not None:  # named or not: for a plain op's grid rules
            self.graph.nodes[node_id]["call"] = call
        if tensors:
            self.graph.nodes[node_id]["tensors"] = tensors
        if n.op == "call_module" and any(True for _ in module.parameters()):
            self.calls.setdefault(n.target, []).append(node_id)
        if shape is None:
            self.tuples[n] = node_id
            return
        self.values[n] = (node_id, shape)
        if not isinstance(meta, TensorMetadata):
            self.firsts.add(n)
        if last_axis and len(shape) > 3:
            self.last_axis.add(node_id)
        if self.in_place(n) and isinstance(n.args[0], torch.fx.Node) and n.args[0] in self.values:
            self.values[n.args[0]] = (node_id, shape)  # later reads of the tensor it changed read this node

    def keeps_last_axis(self, n, ids, shapes, shape) -> bool:
        """Whether a plain tensor op keeps its input's channels on the last axis, where
        tokens, channels-last maps and the windows made of them hold theirs (swin's
        window partition and reverse): a reshape, permute or element-wise op that leaves
        the last axis as it is. A wrong guess costs a barrier, never a wrong group: the
        channel groups check the units on every axis (`nasdsl.compiler.tensorops`)."""
        if shape is None or len(shape) < 3 or not ids or shapes[0] is None or not shapes[0] or \
                shapes[0][-1] != shape[-1]:
            return False
        if not (len(shapes[0]) == 2 or primitives.channels_last(shapes[0]) or ids[0] in self.last_axis):
            return False
        name = n.target if n.op == "call_method" else tensorops.function_name(n.target)
        if name in ("permute", "transpose"):
            dims = [a for a in (*n.args[1:], *n.kwargs.values()) if isinstance(a, int)]
            rank = len(n.meta["tensor_meta"].shape)
            return (name == "permute" and dims and dims[-1] % rank == rank - 1) or \
                (name == "transpose" and rank - 1 not in [d % rank for d in dims])
        return name in tensorops.KEEPS_LAST

    def sample(self, meta: TensorMetadata) -> tuple:
        """A result's per-sample shape. One whose first axis holds more than the batch
        (a window attention's (B * windows, N, C)) has the extra folded into its next
        axis, (windows * N, C): the ops on each token see the tokens of all windows; of
        two axes, (B * N, C), the extra is the tokens, (N, C)."""
        shape = tuple(meta.shape)
        if len(shape) >= 2 and shape[0] != self.batch and shape[0] % self.batch == 0:
            fold = shape[0] // self.batch
            return (fold, *shape[1:]) if len(shape) == 2 else (fold * shape[1], *shape[2:])
        return shape[1:]

    def call(self, n, meta) -> tensorops.Call | None:
        """A plain tensor op's arguments for `nasdsl.compiler.tensorops`, if its rules know
        the op and it makes one tensor of tensors (no tuple's items)."""
        if n.op == "call_method":
            fn = n.target if n.target in tensorops.RULES else None
        elif n.op == "call_function":
            fn = tensorops.function_name(n.target)
        else:
            fn = _MODULE_CALLS.get(type(self.root.get_submodule(n.target)))
        items = fn in tensorops.TUPLES and isinstance(meta, (tuple, list)) and \
            all(isinstance(m, TensorMetadata) for m in meta)
        if fn is None or not (isinstance(meta, TensorMetadata) or items):
            return None
        inputs, full = [], []

        def convert(arg):
            if arg in self.values:
                inputs.append(arg)
                full.append(tuple(arg.meta["tensor_meta"].shape) if "tensor_meta" in arg.meta else None)
                return tensorops.In(len(inputs) - 1)
            if arg in self.attrs:
                path, value, shape = self.attrs[arg]  # the path only of a parameter as it is, not a view of it
                parameter = isinstance(value, nn.Parameter)
                return tensorops.Const(shape, parameter, path if parameter and shape == tuple(value.shape) else "")
            return tensorops.Dyn()

        if any(a in self.tuples for a in n.all_input_nodes):
            return None
        args = torch.fx.node.map_arg(n.args, convert)
        kwargs = dict(torch.fx.node.map_arg(n.kwargs, convert))
        if n.op == "call_module" and fn == "softmax":
            args = (*args, self.root.get_submodule(n.target).dim)
        if n.op == "call_module" and fn == "linear":
            args = (*args, self.root.get_submodule(n.target).bias is not None)
        if None in full or not isinstance(full and full[0], (tuple, list)):
            return None
        out = tuple(tuple(m.shape) for m in meta) if items else tuple(meta.shape)
        return tensorops.Call(fn, tuple(args), kwargs, tuple(full), out)

    def layout(self, n, op, shapes, shape):
        """`shape`, as a `ChannelsLast` map where its channels are its last axis: after
        `permute(0, 2, 3, 1)` of a feature map; where a named op (linear, layernorm, an
        activation, an add) or a barrier reads channels-last maps and keeps three axes
        (a plain tensor op: where `keeps_last_axis` says so). Only `permute(0, 3, 1, 2)`
        turns one back: ops on channels-first maps refuse the others, so a wrong guess
        costs a barrier, never a wrong group."""
        if shape is None or len(shape) != 3:
            return shape
        dims = _permutation(n)
        if dims == (0, 2, 3, 1) and len(shapes) == 1 and shapes[0] and len(shapes[0]) == 3 \
                and not primitives.channels_last(shapes[0]):
            return primitives.ChannelsLast(shape)
        plain = (n.target if n.op == "call_method" else tensorops.function_name(n.target)) in tensorops.RULES
        if dims != (0, 3, 1, 2) and not (plain and primitives.get(op) is None) and any(primitives.channels_last(s) for s in shapes if s is not None):
            if primitives.get(op) is None or all(primitives.channels_last(s) for s in shapes if s is not None):
                return primitives.ChannelsLast(shape)
        return shape

    def splits_channels(self, n, meta) -> bool:
        """Whether `n` splits the channels of a feature map or vector into items of its
        channels (`torch.split`, `chunk`, `tensor_split`: told by the items' shapes),
        and only item reads (`x[k]`) read it."""
        if n.op not in ("call_method", "call_function") or _name(n) not in ("split", "chunk", "tensor_split") \
                or not n.args or not _node_in(n.args[0], self.values) or not isinstance(meta, (tuple, list)) \
                or not meta or not all(isinstance(m, TensorMetadata) for m in meta):
            return False
        shape = self.values[n.args[0]][1]
        if len(shape) not in (1, 3) or primitives.channels_last(shape):
            return False
        items = [_per_sample(m) for m in meta]
        return all(i[1:] == shape[1:] and i[0] > 0 for i in items) and sum(i[0] for i in items) == shape[0] and \
            all(u.target is operator.getitem and len(u.args) == 2 and isinstance(u.args[1], int) for u in n.users)

    def reshapes_an_attribute(self, n) -> bool:
        return (n.op in ("call_method", "call_function") and _name(n) in _RESHAPES and bool(n.args)
                and n.args[0] in self.attrs and not any(a in self.values or a in self.tuples for a in n.args[1:]))

    def holder(self, attrs, per_tensor: bool) -> tuple:
        """(path, None) of the one submodule whose tensors a function call reads, if it
        reads all of them (its own, not its children's): a pruning slices them all, per
        channel. Where the operation's slicer cuts each tensor alone (`per_tensor`: a
        class token, a position embedding), also some of them: (path, their names).
        Else (None, None)."""
        owners = {path.rpartition(".")[0] for path, _, _ in attrs}
        if len(owners) != 1:
            return None, None
        owner = owners.pop()
        module = self.root.get_submodule(owner)
        own = {name for name, t in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))
               if t.dim() >= 1}
        read = {path.rpartition(".")[2] for path, _, _ in attrs}
        if read == own:
            return owner, None
        return (owner, tuple(sorted(read))) if per_tensor and read <= own else (None, None)

    def attribute_op(self, merge, n, shape):
        """A class token put before the tokens (`cat([token.expand(b, -1, -1), x], 1)`)
        or a position embedding added to them (`x + pos`): ("cls_token" or "pos_embed", {}),
        else None."""
        if shape is None or len(shape) != 2:
            return None
        if merge == "concat":
            items = n.args[0]
            if not (isinstance(items, (list, tuple)) and len(items) == 2 and set(n.kwargs) <= {"dim"}
                    and _arg(n, 1, "dim", 0) in (1, -2) and items[0] in self.attrs and items[1] in self.values):
                return None
            _, value, full = self.attrs[items[0]]
            fits = full[-2:] == (1, shape[1]) and value.numel() == shape[1]
            return ("cls_token", {}) if fits and isinstance(value, nn.Parameter) else None
        if merge == "add" and len(n.args) == 2 and not n.kwargs:
            factor = [a for a in n.args if a in self.attrs]
            if len(factor) == 1 and any(a in self.values for a in n.args):
                _, value, full = self.attrs[factor[0]]
                if isinstance(value, nn.Parameter) and full == (1, *shape):
                    return ("pos_embed", {})
        return None

    def flattens_a_map(self, n, meta) -> bool:
        """Whether `n` flattens a (C, H, W) map to (C, H * W) for its one reader, which
        swaps the last two axes: the map's pixels as tokens, (H * W, C)."""
        if n.op not in ("call_method", "call_function") or not n.args or not _node_in(n.args[0], self.values) \
                or _name(n) not in ("flatten", "reshape", "view") or not isinstance(meta, TensorMetadata):
            return False
        c, *side = self.values[n.args[0]][1]
        if len(side) != 2 or _per_sample(meta) != (c, side[0] * side[1]) or len(n.users) != 1:
            return False
        swap = next(iter(n.users))
        dims = tuple(a % 3 for a in (*swap.args[1:], *swap.kwargs.values()) if isinstance(a, int))
        swapped = (_name(swap) == "transpose" and sorted(dims) == [1, 2]) or \
            (_name(swap) == "permute" and dims == (0, 2, 1))
        out = swap.meta.get("tensor_meta")
        return swapped and swap.args[0] is n and isinstance(out, TensorMetadata) and \
            _per_sample(out) == (side[0] * side[1], c)

    def scale(self, n, shape):
        """`x * gamma` with one parameter per channel of x (layer scale), else None."""
        if len(n.args) != 2 or n.kwargs or shape is None:
            return None
        tensor = [a for a in n.args if a in self.values]
        factor = [a for a in n.args if a in self.attrs]
        if len(tensor) != 1 or len(factor) != 1:
            return None
        _, value, full = self.attrs[factor[0]]
        shape = self.values[tensor[0]][1]  # the input's, which says its layout
        aligned = (1,) * (len(shape) + 1 - len(full)) + full
        channels = primitives.channel_count(shape)
        axis = len(shape) if len(shape) == 2 or primitives.channels_last(shape) else 1  # of the batch's shape
        # the parameter itself per channel along its first dimension, as its slicer cuts it
        if not isinstance(value, nn.Parameter) or len(aligned) != len(shape) + 1 or value.numel() != channels or \
                value.shape[0] != channels or \
                aligned[axis] != channels or any(k != 1 for i, k in enumerate(aligned) if i != axis):
            return None
        return ("scale", {"init": 1.0})  # a traced scale's arguments say nothing of its trained values

    def in_place(self, n) -> bool:
        """Whether `n` overwrites its first argument (`x.add_(y)`, `nn.ReLU(inplace=True)`)."""
        if not n.args:
            return False
        if n.op == "call_module":
            return getattr(self.root.get_submodule(n.target), "inplace", False) is True
        name = n.target if n.op == "call_method" else getattr(n.target, "__name__", "")
        return n.kwargs.get("inplace") is True or (name.endswith("_") and not name.endswith("__"))

    def add(self, node_id, op, args, rules, inputs, in_shapes, shape, params=0, macs=0, fx=None, module=None):
        # `fx`: the torch.fx node's name, so a later symbolic_trace of the module finds it (erasing.py)
        self.graph.add_node(node_id, op=op, args=args, path=node_id, rules=rules, inputs=list(inputs),
                            in_shapes=list(in_shapes), shape=shape, params=params, macs=macs, fx=fx)
        if module is not None:
            self.graph.nodes[node_id]["module"] = module
        for source in inputs:
            self.graph.add_edge(source, node_id)

    def reads(self, n):
        """(node ids, per-sample shapes) of the tensors `n` reads, in order, and the parameters it fetches."""
        ids, shapes, attrs = [], [], []

        def read(arg):
            if arg in self.values:
                ids.append(self.values[arg][0])
                shapes.append(self.values[arg][1])
            elif arg in self.tuples:
                ids.append(self.tuples[arg])
                shapes.append(None)
            elif arg in self.attrs:
                attrs.append(self.attrs[arg])
            return arg

        torch.fx.node.map_arg((n.args, n.kwargs), read)
        return ids, shapes, attrs

    def fresh(self, base: str) -> str:
        k = 1
        while f"{base}_{k}" in self.reserved or f"{base}_{k}" in self.graph:
            k += 1
        return f"{base}_{k}"

    def rules(self, n) -> tuple:
        """The classes of the modules the operation runs in, from the root down."""
        stack = n.meta.get("nn_module_stack", {}).values()
        owners = [cls for path, cls in stack if not (n.op == "call_module" and path == n.target)]
        return (self.space, *(c.__name__ if isinstance(c, type) else str(c).rsplit(".", 1)[-1] for c in owners))

    def vocabulary(self, n, shapes, shape):
        """(op, args) in nasdsl's words, if one describes `n`; else None."""
        if n.op == "call_module":
            module = self.root.get_submodule(n.target)
            if type(module) not in _MODULES:
                found = describe(module)
                if found and found[0] == "attention" and n.args and isinstance(n.args[0], torch.fx.Node):
                    # tokens folded into the batch (MobileViT's (B * patches, N, C)): attention per window
                    rows = n.args[0].meta["tensor_meta"].shape[0]
                    found = (found[0], {**found[1], "windows": rows // self.batch if rows % self.batch == 0 else 0})
                return found
            op, read = _MODULES[type(module)]
            if op == "bn" and shapes and shapes[0] and len(shapes[0]) == 2 and \
                    len(n.args[0].meta["tensor_meta"].shape) != 2:
                return None  # BatchNorm1d of (B, C, L): its channels are no tokens'
            return _tokens_only(_named(op, read(module) if read else None), shapes)
        if not isinstance(n.target, str) and not _hashable(n.target):
            return None
        merge = _MERGES.get(n.target)
        if merge == "mul" and (scaled := self.scale(n, shape)):
            return scaled
        if merge in ("concat", "add") and (embedding := self.attribute_op(merge, n, shape)):
            return embedding
        if merge is not None:
            return (merge, {}) if self.merges(merge, n, shapes, shape) else None
        op, read = _FUNCTIONS.get(n.target, None) or _BY_NAME.get(
            (getattr(n.target, "__module__", None), getattr(n.target, "__name__", None)), (None, None))
        return _tokens_only(_named(op, read(n) if read else None), shapes)

    def merges(self, kind, n, shapes, shape) -> bool:
        """Whether `n` is nasdsl's merge: its tensors are all graph values, and they
        agree as `nasdsl.compiler.graph` requires (add: same shape; concat: channels of (C, H, W))."""
        if kind == "concat":
            tensors = n.args[0]
            return (isinstance(tensors, (list, tuple)) and len(tensors) > 0 and self.all_values(tensors)
                    and set(n.kwargs) <= {"dim"} and _arg(n, 1, "dim", 0) in (1, -3)
                    and all(len(s) == 3 for s in shapes))
        if len(n.args) != 2 or n.kwargs or not self.all_values(n.args) or any(len(s) > 3 for s in shapes):
            return False  # beyond maps, tokens and vectors: a plain op (`tensorops`)
        if primitives.channels_last(shapes[0]) != primitives.channels_last(shapes[1]):
            return False  # one layout: a unit is the same channel on both sides
        return kind == "mul" or shapes[0] == shapes[1] == shape

    def all_values(self, args) -> bool:
        return all(isinstance(a, torch.fx.Node) and a in self.values for a in args)


def _named(op, found):
    """(op, args) from a reader's answer: its arguments (None: no such op), or, where the
    table's op is None, the reader's own (op, args)."""
    if found is None:
        return None
    return found if op is None else (op, found)


def _tokens_only(found, shapes):
    """torch's layer norm over the last axis is nasdsl's `layernorm` on tokens, vectors
    and channels-last maps only: on a (C, H, W) map nasdsl's pools all three axes."""
    if found and found[0] == "layernorm" and not (len(shapes) == 1 and shapes[0] and (
            len(shapes[0]) <= 2 or primitives.channels_last(shapes[0]))):
        return None
    return found


def _agrees(op, args, shapes, shape, params, macs) -> bool:
    """Whether primitive `op` (if it is one) computes this shape, parameter count and MACs."""
    prim = primitives.get(op)
    if prim is None:
        return True
    if len(shapes) != 1 or shapes[0] is None or shape is None:
        return False
    try:
        return (tuple(prim.shape(args, shapes)) == shape and prim.params(args, shapes) == params
                and prim.macs(args, shapes, shape) == macs)
    except primitives.ShapeError:
        return False


# ---- what nasdsl calls torch's operations ----------------------------------------------
def _square(value):
    """An int, or the one value of an all-equal tuple; else None."""
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, int) and v == value[0] for v in value):
        return value[0]
    return None


def _conv(m: nn.Conv2d):
    """`conv` where kernel, stride, dilation and padding are square, else `conv2d`."""
    if m.padding_mode != "zeros":
        return None
    k, s, d = _square(m.kernel_size), _square(m.stride), _square(m.dilation)
    square = None not in (k, s, d) and (isinstance(m.padding, str) or _square(m.padding) is not None)
    if not square:
        if isinstance(m.padding, str):  # "same" or "valid" with a rectangular kernel: not worked out here
            return None
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = m.kernel_size, m.stride, m.padding, m.dilation
        return ("conv2d", {"out": m.out_channels, "kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw,
                           "padding_h": ph, "padding_w": pw, "dilation_h": dh, "dilation_w": dw,
                           "groups": m.groups, "bias": m.bias is not None})
    if m.padding == "same":
        p = d * (k - 1) // 2 if d * (k - 1) % 2 == 0 else None
    else:
        p = 0 if m.padding == "valid" else _square(m.padding)
    if p is None:
        return None
    return ("conv", {"out": m.out_channels, "kernel": k, "stride": s, "groups": m.groups, "dilation": d,
                     "bias": m.bias is not None, "padding": p})


def _bn(m):
    if not m.track_running_stats or m.momentum is None:
        return None
    return {"affine": m.affine, "eps": float(m.eps), "momentum": float(m.momentum)}


def _pool(kind, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, count_include_pad=True,
          divisor_override=None, return_indices=False):
    """The arguments of a max or average pooling, if nasdsl's pooling computes the same."""
    k, s, p = _square(kernel_size), _square(kernel_size if stride is None else stride), _square(padding)
    if None in (k, s, p) or _square(dilation) != 1 or divisor_override or return_indices:
        return None
    if kind == "maxpool":
        return {"kernel": k, "stride": s, "padding": p, "ceil_mode": bool(ceil_mode)}
    return {"kernel": k, "stride": s, "padding": p, "count_include_pad": bool(count_include_pad),
            "ceil_mode": bool(ceil_mode)}


def _plain(_):
    return {}


def _upsample(scale, mode, align_corners=None):
    """nasdsl's `upsample` for a whole scale factor, nearest or bilinear (align_corners false)."""
    whole = isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale == int(scale) and scale >= 1
    return {"scale": int(scale), "mode": mode} if whole and mode in ("nearest", "bilinear") and not align_corners \
        else None


def _interpolate(n):
    """F.interpolate to a size or by a factor (ghostnetv2, hrnet), read from its input's
    and output's sizes: `upsample` where they are a whole multiple, the same on both axes."""
    names = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias")
    given = dict(zip(names, n.args[1:]), **n.kwargs)
    source, meta = n.args[0].meta.get("tensor_meta") if n.args else None, n.meta.get("tensor_meta")
    if set(given) - set(names) or given.get("antialias") or not isinstance(source, TensorMetadata) or \
            not isinstance(meta, TensorMetadata) or len(meta.shape) != 4:
        return None
    (h, w), (oh, ow) = source.shape[-2:], meta.shape[-2:]
    if oh % h or ow % w or oh // h != ow // w:
        return None
    return _upsample(oh // h, given.get("mode", "nearest"), given.get("align_corners"))


_MODULES = {
    nn.Conv2d: (None, _conv),
    nn.BatchNorm2d: ("bn", _bn),
    nn.BatchNorm1d: ("bn", _bn),
    nn.GroupNorm: ("groupnorm", lambda m: {"groups": m.num_groups, "affine": m.affine, "eps": float(m.eps)}),
    nn.LayerNorm: ("layernorm", lambda m: {"affine": m.elementwise_affine, "eps": float(m.eps)}
                   if len(m.normalized_shape) == 1 and (m.bias is not None or not m.elementwise_affine) else None),
    nn.ReLU: ("relu", _plain),
    nn.ReLU6: ("relu6", _plain),
    nn.Hardswish: ("hswish", _plain),
    nn.Hardsigmoid: ("hsigmoid", _plain),
    nn.SiLU: ("silu", _plain),
    nn.GELU: ("gelu", lambda m: {} if m.approximate == "none" else None),
    nn.Sigmoid: ("sigmoid", _plain),
    nn.Mish: ("mish", _plain),
    nn.LeakyReLU: ("leaky_relu", lambda m: {"slope": float(m.negative_slope)}),
    nn.MaxPool2d: ("maxpool", lambda m: _pool("maxpool", m.kernel_size, m.stride, m.padding, m.dilation,
                                              m.ceil_mode, return_indices=m.return_indices)),
    nn.AvgPool2d: ("avgpool", lambda m: _pool("avgpool", m.kernel_size, m.stride, m.padding, 1, m.ceil_mode,
                                              m.count_include_pad, m.divisor_override)),
    nn.AdaptiveAvgPool2d: (None, lambda m: _adaptive(m.output_size)),
    nn.Flatten: ("flatten", lambda m: {} if (m.start_dim, m.end_dim) == (1, -1) else None),
    nn.Linear: ("linear", lambda m: {"out": m.out_features, "bias": m.bias is not None}),
    nn.Dropout: ("dropout", lambda m: {"p": float(m.p)}),
    nn.Identity: ("identity", _plain),
    nn.Upsample: ("upsample", lambda m: _upsample(m.scale_factor, m.mode, m.align_corners) if m.size is None
                  else None),
    LayerScale: ("scale", lambda m: {"init": float(m.init)}),
}


def _arg(n, index, name, default=None):
    """Argument `name` of a call, given by position (`index`, counting the tensor) or keyword."""
    return n.args[index] if len(n.args) > index else n.kwargs.get(name, default)


def _fn_pool(kind, names):
    def read(n):
        given = dict(zip(names, n.args[1:]), **n.kwargs)
        return _pool(kind, **given) if set(given) <= set(names) and "kernel_size" in given else None

    return read


def _mean(n):
    """A mean over H and W: `gap` with keepdim, else `spatial_mean`; over the tokens:
    `token_pool`."""
    dims = _arg(n, 1, "dim")
    if dims in (1, (1,), [1]) and _arg(n, 2, "keepdim", False) is False and set(n.kwargs) <= {"dim", "keepdim"}:
        return ("token_pool", {"mode": "mean"})
    if not isinstance(dims, (tuple, list)) or not all(isinstance(d, int) for d in dims) or \
            sorted(d % 4 for d in dims) != [2, 3] or set(n.kwargs) - {"dim", "keepdim"}:
        return None
    return ("gap", {}) if _arg(n, 2, "keepdim", False) is True else ("spatial_mean", {})


def _adaptive(size):
    """An adaptive average pool to a square `size`: `gap` to 1x1, else `adaptive_avgpool`."""
    k = _square(size)
    return None if k is None else ("gap", {}) if k == 1 else ("adaptive_avgpool", {"size": k})


def _fn_bn(n):
    """F.batch_norm in eval mode on a module's running statistics (timm's BatchNormAct2d)."""
    names = ("running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    given = dict(zip(names, n.args[1:]), **n.kwargs)
    weight, bias = given.get("weight"), given.get("bias")
    if given.get("training", False) is not False or not all(
            isinstance(given.get(k), torch.fx.Node) for k in ("running_mean", "running_var")) or \
            (weight is None) != (bias is None):
        return None
    momentum, eps = given.get("momentum", 0.1), given.get("eps", 1e-5)
    if not isinstance(momentum, (int, float)) or not isinstance(eps, (int, float)):
        return None
    return {"affine": weight is not None, "eps": float(eps), "momentum": float(momentum)}


def _fn_layernorm(n):
    """F.layer_norm over the last axis (timm's LayerNorm, and nn.LayerNorm's subclasses)."""
    names = ("normalized_shape", "weight", "bias", "eps")
    given = dict(zip(names, n.args[1:]), **n.kwargs)
    normalized, weight, bias, eps = (given.get(k) for k in names)
    eps = 1e-5 if eps is None else eps
    if not isinstance(normalized, (list, tuple)) or len(normalized) != 1 or (weight is None) != (bias is None) \
            or not isinstance(eps, (int, float)):
        return None
    return {"affine": weight is not None, "eps": float(eps)}


def _fn_linear(n):
    """F.linear on a module's weight and bias (timm's `Linear`); its width is its result's last axis."""
    meta = n.meta.get("tensor_meta")
    weight, bias = _arg(n, 1, "weight"), _arg(n, 2, "bias")
    if not isinstance(meta, TensorMetadata) or not isinstance(weight, torch.fx.Node) or \
            not (bias is None or isinstance(bias, torch.fx.Node)):
        return None
    return {"out": int(meta.shape[-1]), "bias": bias is not None}


def _getitem(n):
    """`x[:, 0]`: the class token, `token_pool(mode=cls)`; `x[:, a:b]` (then only `:` or
    `...`): channels a..b-1, `slice`."""
    if len(n.args) != 2 or n.kwargs or not isinstance(n.args[1], tuple) or len(n.args[1]) < 2:
        return None
    whole, channels, *rest = n.args[1]
    if whole != slice(None):
        return None
    if channels == 0 and not rest:
        return ("token_pool", {"mode": "cls"})
    meta = n.args[0].meta.get("tensor_meta") if isinstance(n.args[0], torch.fx.Node) else None
    if not isinstance(channels, slice) or not isinstance(meta, TensorMetadata) or len(meta.shape) < 2 or \
            not all(i is None or isinstance(i, int) for i in (channels.start, channels.stop, channels.step)) or \
            not all(r == slice(None) or r is Ellipsis for r in rest):
        return None
    start, stop, step = channels.indices(meta.shape[1])
    return ("slice", {"start": start, "stop": stop}) if step == 1 and stop > start else None


def _dropout(n):
    """F.dropout is nn.Dropout in eval mode only where it is told so (its `training` defaults to True)."""
    p = _arg(n, 1, "p", 0.5)
    return {"p": float(p)} if isinstance(p, (int, float)) and _arg(n, 2, "training", True) is False else None


# call_function targets and call_method names → (op, argument reader); the
# reshapes are `flatten` only where the shape check finds (C*H*W,)
_FUNCTIONS = {
    **{target: ("relu", _plain) for target in (F.relu, F.relu_, torch.relu, torch.relu_, "relu", "relu_")},
    F.relu6: ("relu6", _plain),
    F.hardswish: ("hswish", _plain),
    F.hardsigmoid: ("hsigmoid", _plain),
    F.silu: ("silu", _plain),
    F.mish: ("mish", _plain),
    F.leaky_relu: ("leaky_relu", lambda n: {"slope": float(_arg(n, 1, "negative_slope", 0.01))}
                   if isinstance(_arg(n, 1, "negative_slope", 0.01), (int, float)) else None),
    F.gelu: ("gelu", lambda n: {} if _arg(n, 1, "approximate", "none") == "none" else None),
    **{target: ("sigmoid", _plain) for target in (torch.sigmoid, F.sigmoid, "sigmoid", "sigmoid_")},
    **{target: ("flatten", _plain) for target in (torch.flatten, torch.reshape, "flatten", "view", "reshape")},
    F.adaptive_avg_pool2d: (None, lambda n: _adaptive(_arg(n, 1, "output_size"))),
    "mean": (None, _mean),
    torch.mean: (None, _mean),
    F.max_pool2d: ("maxpool", _fn_pool("maxpool", ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                                   "return_indices"))),
    F.avg_pool2d: ("avgpool", _fn_pool("avgpool", ("kernel_size", "stride", "padding", "ceil_mode",
                                                   "count_include_pad", "divisor_override"))),
    F.dropout: ("dropout", _dropout),
    F.batch_norm: ("bn", _fn_bn),
    F.layer_norm: ("layernorm", _fn_layernorm),
    F.linear: ("linear", _fn_linear),
    F.interpolate: ("upsample", _interpolate),
    operator.getitem: (None, _getitem),
}

# modules that are plain tensor ops to `nasdsl.compiler.tensorops` (on tensors beyond maps and tokens)
_MODULE_CALLS = {nn.Softmax: "softmax", nn.Dropout: "clone", nn.Identity: "clone", nn.Linear: "linear",
                 nn.ReLU: "relu", nn.ReLU6: "relu6",
                 nn.GELU: "gelu", nn.SiLU: "silu", nn.Hardswish: "hardswish", nn.Sigmoid: "sigmoid",
                 nn.Hardsigmoid: "hardsigmoid"}

# ops whose slicer cuts each tensor the call reads by itself, so the call may read some of its
# module's tensors (a ViT's class token and position embedding, both the model's own; a block's
# two layer scales)
_PER_TENSOR = ("cls_token", "pos_embed", "scale")

# functions of other libraries, by (module, name), so that tracing imports none of them
_BY_NAME = {
    # torchvision's stochastic depth (efficientnet, convnext, swin, ...): the identity in eval mode
    ("torchvision.ops.stochastic_depth", "stochastic_depth"):
        ("identity", lambda n: {} if _arg(n, 3, "training", True) is False else None),
}

# of a parameter: still one per channel (`expand`: a class token, once per sample)
_RESHAPES = ("view", "reshape", "unsqueeze", "squeeze", "flatten", "expand")

_MERGES = {
    **{target: "add" for target in (operator.add, torch.add, "add", "add_")},
    **{target: "mul" for target in (operator.mul, torch.mul, "mul", "mul_")},
    **{target: "concat" for target in (torch.cat, torch.concat, torch.concatenate)},
}


# ---- small helpers ------------------------------------------------------------------------
def _per_sample(meta: TensorMetadata) -> tuple:
    return tuple(meta.shape)[1:]


def _ranges(items) -> list:
    """Each item's (start, stop) in the channels a split divides, from its items' metadata."""
    stops = list(itertools.accumulate(_per_sample(m)[0] for m in items))
    return list(zip([0, *stops[:-1]], stops))


def _first_only(meta):
    """The per-sample shape of a result whose one tensor is its first item, else None."""
    if isinstance(meta, (tuple, list)) and meta and isinstance(meta[0], TensorMetadata) and \
            all(m is None for m in meta[1:]):
        return _per_sample(meta[0])
    return None


def _node_in(arg, table) -> bool:
    """Whether a call's argument is an fx node that `table` holds (an argument may be a list)."""
    return isinstance(arg, torch.fx.Node) and arg in table


def _permutation(n) -> tuple | None:
    """The dims of `x.permute(...)` / `torch.permute(x, dims)`, else None."""
    if _name(n) != "permute" or len(n.args) < 2:
        return None
    dims = n.args[1] if len(n.args) == 2 and isinstance(n.args[1], (list, tuple)) else n.args[1:]
    return tuple(d % 4 for d in dims) if len(dims) == 4 and all(isinstance(d, int) for d in dims) else None


def _name(n) -> str | None:
    """A call's function or method name."""
    return n.target if n.op == "call_method" else getattr(n.target, "__name__", None)


def _has_tensor(meta) -> bool:
    """Whether ShapeProp's record of a result holds a tensor (it is a tensor, or a tuple, list or dict of some)."""
    if isinstance(meta, dict):
        meta = list(meta.values())
    return isinstance(meta, TensorMetadata) or (isinstance(meta, (tuple, list)) and any(map(_has_tensor, meta)))


def _json(shape):
    """A shape (or a tuple of them) as JSON lists."""
    return [_json(s) for s in shape] if isinstance(shape, tuple) else shape


def _fetch(root: nn.Module, target: str):
    value = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
