"""The Space users hold: the space layer's `Space` (counting, sampling, operations)
with the compiler's two entry points added, so `space.compile(d)` reads as one step
while the space layer itself never imports the compiler."""

from __future__ import annotations

from ..language.check import load_file
from ..language.errors import NasError
from ..space import space as spaces
from ..space.subspace import NEIGHBOURHOOD_LIMIT
from . import primitives  # noqa: F401  (registers the standard primitives)


class Space(spaces.Space):
    """A checked, bound space that also builds graphs and modules."""

    def graph(self, d, input_shape=None):
        """The dependency graph (`networkx.DiGraph`) of `d`; see nasdsl.compiler.graph."""
        from .graph import build_graph  # networkx, and torch below, load only when used

        return build_graph(self, d, input_shape)

    def compile(self, d, input_shape=None, seed: int | None = 0):
        """The PyTorch module (`torch.fx.GraphModule`) of `d`; see nasdsl.compiler.module."""
        from .module import build_module

        return build_module(self.graph(d, input_shape), seed)

    # ---- functional identity (nasdsl.compiler.identity)
    def canonical(self, d, input_shape=None, constants: bool = True):
        """What `d` computes, as a graph: zeros, constants, wires and dead code reduced,
        nodes labelled by op, arguments and shape, never by path."""
        from .identity import function_graph

        return function_graph(self.graph(d, input_shape), constants)

    def function_hash(self, d, input_shape=None, constants: bool = True) -> str:
        """A hash that functionally identical derivations share. It is canonical unless
        it starts with `~` (a network with symmetric branches), when equal hashes may
        still differ: `Functions` settles those with VF2."""
        from .identity import function_key

        return function_key(self.canonical(d, input_shape, constants))

    def distinct(self, input_shape=None, constants: bool = True, limit: int = 1_000_000) -> int:
        """The exact number of distinct functions among all derivations (enumerated;
        a space of more than `limit` derivations is refused)."""
        from .identity import Functions

        if self.count > limit:
            raise NasError(f"space `{self.name}` has {self.count:,} derivations, too many to enumerate for "
                           f"distinct functions (the limit is {limit:,})", None,
                           "restrict it (`space.restrict`) or estimate on samples (bench/identity.py)")
        functions = Functions()
        for d in self.enumerate():
            functions.add(self.canonical(d, input_shape, constants))
        return functions.count

    def neighbourhood(self, d, r: int = 1, limit: int = NEIGHBOURHOOD_LIMIT, distinct: bool = False,
                      input_shape=None) -> list:
        """Every derivation within distance `r` of `d`, `d` first; with `distinct`, one per
        function (the nearest, then the first by rank), so none computes what another does."""
        near = super().neighbourhood(d, r, limit)
        return list(self.one_per_function(near, input_shape)) if distinct else near

    def one_per_function(self, derivations, input_shape=None, constants: bool = True):
        """The derivations (any iterable, read lazily) that compute something none before
        them computes: the first of each function, in order."""
        from .identity import Functions

        functions = Functions()
        for x in derivations:
            before = functions.count
            functions.add(self.canonical(x, input_shape, constants))
            if functions.count > before:
                yield x


def load(path, params: dict | None = None) -> Space:
    """Read, check and bind a space file (parameters override the file's defaults)."""
    return Space.from_loaded(load_file(path), params)


def loads(text: str, params: dict | None = None, name: str = "<string>", base=None) -> Space:
    """Like `load`, from text; imports resolve beside `base` (a file path) if given."""
    return Space.from_loaded(load_file(base, text, name=name), params)
