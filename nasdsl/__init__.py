"""nasdsl: a search-space language for neural architecture search.

The sub-packages follow the data flow:

    language/  text → AST → checked rules (IR)      nasdsl.language
    space/     rules → Space → Derivation           nasdsl.space
    compiler/  Derivation → graph → torch module    nasdsl.compiler
    runtime/   graphs → trained trials → search     nasdsl.runtime
    cli/       the `nasdsl` command                 nasdsl.cli

A lower layer never imports a higher one (tests/test_layers.py).
"""

from .compiler.space import Space, load, loads
from .language.errors import DerivationError, NasError
from .language.primitives import Arg, Channels, Primitive, register
from .space.derivation import Derivation, distance

__all__ = ["Arg", "Channels", "Derivation", "DerivationError", "NasError", "Primitive", "Space", "distance", "load",
           "loads", "register"]
__version__ = "0.1.0"
