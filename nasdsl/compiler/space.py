"""The Space users hold: the space layer's `Space` (counting, sampling, operations)
with the compiler's two entry points added, so `space.compile(d)` reads as one step
while the space layer itself never imports the compiler."""

from __future__ import annotations

from ..language.check import load_file
from ..space import space as spaces
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


def load(path, params: dict | None = None) -> Space:
    """Read, check and bind a space file (parameters override the file's defaults)."""
    return Space.from_loaded(load_file(path), params)


def loads(text: str, params: dict | None = None, name: str = "<string>", base=None) -> Space:
    """Like `load`, from text; imports resolve beside `base` (a file path) if given."""
    return Space.from_loaded(load_file(base, text, name=name), params)
