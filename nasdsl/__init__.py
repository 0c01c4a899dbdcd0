"""nasdsl: a search-space language for neural architecture search.

text → AST (`nasdsl.syntax`) → checked rules (`nasdsl.check`) → Space
(`nasdsl.space`, plans in `nasdsl.plan`) → Derivation (`nasdsl.derivation`)
→ graph and module (compiler) → search (`nasdsl.runtime`).
"""

from .derivation import Derivation, distance
from .errors import DerivationError, NasError
from .space import Space, load, loads

__all__ = ["Derivation", "DerivationError", "NasError", "Space", "distance", "load", "loads"]
__version__ = "0.1.0"
