"""Errors that reach users: every one names where (file:line:col or a derivation
path) and what is wrong, and may carry a hint. The CLI prints them and exits 1;
nothing a user writes should ever surface as a Python traceback."""

from __future__ import annotations

import difflib
import unicodedata

import attrs


@attrs.frozen
class Source:
    """A text and the name it is reported under (a file path or `<string>`)."""

    name: str
    text: str = attrs.field(repr=False)

    def line(self, number: int) -> str:
        # lines end at "\n" only, as lark counts them (str.splitlines also splits at \f, \x1c, ...)
        lines = self.text.split("\n")
        return lines[number - 1].rstrip("\r") if 0 < number <= len(lines) else ""


@attrs.frozen
class Pos:
    """A position in a source, 1-based like editors and lark."""

    source: Source = attrs.field(repr=False)
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.source.name}:{self.line}:{self.column}"


class NasError(Exception):
    """A user-facing error: `FILE:LINE:COL: error: what` + the line, a caret, a hint."""

    def __init__(self, message: str, pos: Pos | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.hint = hint

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        """The error as a terminal shows it; control and bidi characters from the file
        are written as escapes (`\\x1b`, `\\u202e`), so a file cannot drive the terminal."""
        where = f"{self.pos}: " if self.pos else ""
        out = [printable(f"{where}error: {self.message}")]
        if self.pos:
            text = self.pos.source.line(self.pos.line)
            if text:
                shown, before = (printable(part) for part in _excerpt(text, self.pos.column - 1))
                out.append(f"    {shown}")
                # tabs stay tabs, so the caret lines up however wide a terminal draws them
                out.append("    " + "".join(c if c == "\t" else " " for c in before) + "^")
        if self.hint:
            out.append(printable(f"hint: {self.hint}"))
        return "\n".join(out)

    def to_json(self) -> dict:
        """The error as `--json` prints it."""
        pos = self.pos
        return {"message": self.message, "file": pos.source.name if pos else None,
                "line": pos.line if pos else None, "column": pos.column if pos else None, "hint": self.hint}


def printable(text: str) -> str:
    """`text` with control and format characters (ESC, U+202E, ...) escaped; tabs and
    newlines are kept."""
    return "".join(c if c in "\t\n" or unicodedata.category(c) not in ("Cc", "Cf")
                   else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in text)


MAX_SHOWN = 100  # characters of a long source line shown around the caret


def _excerpt(line: str, index: int) -> tuple[str, str]:
    """The part of `line` to show and the part of it before the caret at `index`."""
    if len(line) <= MAX_SHOWN:
        return line, line[:index]
    start = max(0, min(index - MAX_SHOWN // 2, len(line) - MAX_SHOWN))
    head = "..." if start > 0 else ""
    tail = "..." if start + MAX_SHOWN < len(line) else ""
    return head + line[start:start + MAX_SHOWN] + tail, head + line[start:index]


class DerivationError(NasError):
    """A derivation that is not a member of its space; the message names the path."""


def did_you_mean(name: str, candidates) -> str | None:
    """`did you mean `x`?` for the closest candidate, or None."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None
