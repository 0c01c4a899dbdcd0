"""The `nasdsl` command (`main`): language and compiler commands in `main`, the
search commands (search, trials, report) in `search`."""

from .commands import main

__all__ = ["main"]
