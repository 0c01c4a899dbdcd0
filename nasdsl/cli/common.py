"""What every `nasdsl` command shares: exit codes, loading the space a command
names, and printing one JSON-ready dict as JSON or as rich text."""

from __future__ import annotations

import argparse
import json
import math
import sys

from rich.console import Console

from ..compiler.space import load
from ..language.expr import SYMBOLIC

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_TERMINATED = 130, 141, 143  # 128 + SIGINT, SIGPIPE, SIGTERM


class UsageError(Exception):
    """Options that parse but do not make sense together (exit 2)."""


class CommandParser(argparse.ArgumentParser):
    """A command's parser that may add arguments only once the command is chosen
    (`add_later`), so that building every command's parser imports nothing heavy:
    `nasdsl search`'s algorithm flags come from the algorithms, which import torch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._later = []

    def add_later(self, add_arguments) -> None:
        self._later.append(add_arguments)

    def parse_known_args(self, args=None, namespace=None):
        while self._later:
            self._later.pop(0)(self)
        return super().parse_known_args(args, namespace)


def whole_number(minimum: int):
    """An argparse type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got `{text}`") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "positive_int" if minimum == 1 else f"int_from_{minimum}"  # argparse names it in errors
    return parse


def load_space(args):
    """The space named by `args.file`, bound to the `--param` values."""
    return load(args.file, params=dict(args.param or ()))


def emit(args, data: dict, render) -> None:
    """`data` as one JSON object with `--json`, else `render(console, data)`."""
    if args.json:
        print(json.dumps(data))
    else:
        # piped or logged output is not cut at 80 columns (rich's default without a terminal)
        width = None if sys.stdout.isatty() else 140
        render(Console(highlight=False, markup=False, soft_wrap=True, width=width), data)


def log_count(count: int) -> str:
    """`15625 (10^4.19)`: exact, and readable at a glance when huge."""
    return f"{count} (10^{math.log10(count):.2f})"


def json_value(value):
    """A parameter or argument value as JSON: native scalars; a shared rule's
    unbound (symbolic) parameter is null."""
    return None if value is SYMBOLIC else value

