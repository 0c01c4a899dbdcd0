"""Text → syntax tree. Lark reads the grammars in `grammars/`; a small post-lexer
decides which newlines end a statement; a transformer builds `nasdsl.language.ast` nodes.
Lark's errors become `NasError`s that point at the offending character."""

from __future__ import annotations

import functools
import math
import re
from importlib import resources
from pathlib import Path

import attrs
import lark
from lark import Token, Transformer_NonRecursive, v_args

from . import ast
from .errors import DerivationError, NasError, Pos, Source

KEYWORD_CALLS = {"add": "ADD", "concat": "CONCAT"}
BLOCK_OPENERS = {"dag"}


def grammar_text(name: str) -> str:
    return resources.files("nasdsl.grammars").joinpath(name).read_text()


class _Layout:
    """Post-lexer: newlines end statements only where the layout says so.

    Outside brackets a newline counts when the next line starts at column 1; an
    indented line continues the statement. Inside ( ) and [ ] newlines never count;
    inside a `dag { }` block every new line starts a node. A newline token holds
    the whole run of blank and comment lines, ending with the next line's
    indentation, so the decision needs no look-ahead (lark's contextual lexer
    picks the next token's lexer from the parser state, which must be current).
    """

    always_accept = ("_NL",)

    def process(self, stream):
        stack: list[str] = []  # "(", "[", "{" (value choice) or "block" (dag body)
        block_next = False
        previous = None
        for tok in stream:
            if tok.type == "_NL":
                inner = stack[-1] if stack else None
                indented = tok.value.rsplit("\n", 1)[-1] != ""
                counts = inner == "block" or (inner is None and not indented)
                if counts and previous is not None and previous.type != "_NL":
                    previous = tok
                    yield tok
                continue
            if tok.type in ("NAME", "CALLNAME") and tok.value in KEYWORD_CALLS:
                tok = Token.new_borrow_pos(KEYWORD_CALLS[tok.value], tok.value, tok)
            if tok.type == "DAG":
                block_next = True
            if tok.type in ("LPAR", "LSQB"):
                stack.append(tok.value)
            elif tok.type == "LBRACE":
                stack.append("block" if block_next else "{")
                block_next = False
            elif tok.type in ("RPAR", "RSQB", "RBRACE") and stack:
                stack.pop()
            previous = tok
            yield tok


@functools.cache
def _parser(start: str) -> lark.Lark:
    tokens = grammar_text("tokens.lark")
    derivation = grammar_text("derivation.lark")
    if start == "space":
        text = grammar_text("nas.lark") + "\n" + derivation + "\n" + tokens
        start_rule = "start"
    else:
        text = "dstart: dvalue\n" + derivation + "\n" + tokens
        start_rule = "dstart"
    return lark.Lark(
        text,
        start=start_rule,
        parser="lalr",
        lexer="contextual",
        postlex=_Layout(),
        propagate_positions=True,
        maybe_placeholders=True,
    )


# ---- errors -----------------------------------------------------------------
_TOKEN_WORDS = {
    "NAME": "a name", "CALLNAME": "a call", "INT": "a number", "FLOAT": "a number",
    "STRING": "a quoted path", "_NL": "a new line", "$END": "the end of the file",
    "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`", "RSQB": "`]`", "LBRACE": "`{`",
    "RBRACE": "`}`", "COMMA": "`,`", "EQUAL": "`=`", "COLON": "`:`", "VBAR": "`|`",
    "STAR": "`*`", "GT": "`>`", "AT": "`@`", "MINUS": "`-`", "PLUS": "`+`",
    "ADD": "`add(`", "CONCAT": "`concat(`", "DOT": "`.`",
}


@functools.cache
def _literal_words() -> dict:
    """Each literal terminal (keyword or operator: `else`, `//`, `..`) as it is written."""
    return {t.name: f"`{t.pattern.value}`" for t in _parser("space").terminals if t.pattern.type == "str"}


def _describe_expected(expected) -> str:
    words = []
    for name in sorted(expected):
        word = _TOKEN_WORDS.get(name) or _literal_words().get(name, name)
        if word not in words:
            words.append(word)
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", ".join(words)


def _show_char(ch: str) -> str:
    return f"`{ch}`" if ch.isprintable() else repr(ch)


_ARGUMENT_TOKENS = {"EQUAL", "COMMA", "INT", "FLOAT", "MINUS", "LBRACE", "STRING"}


def _spaced_callee(text: str, offset: int) -> str | None:
    """The name in `conv (out=3)`: the innermost `(` open before `offset` follows a name
    and a space, so the parser read a call and then a group, not a call's arguments."""
    depth = 0
    for i in range(offset - 1, -1, -1):
        if text[i] in ")]}":
            depth += 1
        elif text[i] in "([{":
            if depth > 0:
                depth -= 1
                continue
            end = i
            while end > 0 and text[end - 1] in " \t":
                end -= 1
            start = end
            while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
                start -= 1
            if text[i] == "(" and end < i and start < end and not text[start].isdigit():
                return text[start:end]
            return None
    return None


def _end_of_text(source: Source) -> tuple[int, int]:
    """The line and column just after the last non-blank character."""
    body = source.text.rstrip()
    return body.count("\n") + 1, len(body) - body.rfind("\n")


def _token_hint(err: lark.exceptions.UnexpectedToken, source: Source) -> str | None:
    tok, text = err.token, source.text
    callee = _spaced_callee(text, tok.start_pos) if tok.type in _ARGUMENT_TOKENS else None
    if callee:
        return f"to pass arguments to `{callee}`, write `{callee}(` with no space before `(`"
    line_start = text.rfind("\n", 0, tok.start_pos) + 1 if tok.type != "$END" else 0
    if "EQUAL" in err.expected and re.fullmatch(r"[A-Za-z_]\w*[ \t]*", text[line_start:tok.start_pos] or "-"):
        return "a line that starts at column 1 begins a new statement; indent it to continue the one above"
    expected = _describe_expected(err.expected)
    hint = f"expected {expected}" if expected else None
    if tok.type == "_NL":
        hint = (hint + "; " if hint else "") + "indent a line to continue the statement above"
    return hint


def _syntax_error(err: lark.exceptions.LarkError, source: Source, error=NasError) -> NasError:
    line = getattr(err, "line", None) or 1
    column = getattr(err, "column", None) or 1
    hint = None
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        ch = source.text[err.pos_in_stream]
        message = f"unexpected character {_show_char(ch)}"
        if ch == '"':
            message, hint = "unterminated string", 'a string ends with `"` on the same line'
    elif isinstance(err, lark.exceptions.UnexpectedToken):
        tok = err.token
        message = "unexpected " + {"$END": "end of file", "_NL": "end of line"}.get(tok.type, f"`{tok.value}`")
        hint = _token_hint(err, source)
        if tok.type == "$END":
            line = -1
    elif isinstance(err, lark.exceptions.UnexpectedEOF):
        message, line = "unexpected end of file", -1
    else:
        message = str(err).splitlines()[0]
    if line < 0:  # the end of the text (lark may report -1, or the last token's place)
        line, column = _end_of_text(source)
    return error(message, Pos(source, line, column), hint)


# ---- parse tree → ast --------------------------------------------------------
def _pos_of(meta, source):
    if meta is None or getattr(meta, "empty", True):
        return None
    return Pos(source, meta.line, meta.column)


def _tok_pos(tok: Token, source: Source) -> Pos:
    return Pos(source, tok.line, tok.column)


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Parse tree → ast, without recursion: derivation texts nest as deep as their space."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _p(self, meta):
        return _pos_of(meta, self.source)

    # statements
    def start(self, meta, items):
        header, imports, rules, presets, only = None, [], [], [], []
        for item in items:
            if item is None:
                continue
            if isinstance(item, ast.Header):
                if header is not None:
                    raise NasError("a file has one `space` or `library` header", item.pos)
                header = item
            elif isinstance(item, ast.Import):
                imports.append(item)
            elif isinstance(item, ast.Rule):
                rules.append(item)
            elif isinstance(item, ast.Preset):
                presets.append(item)
            elif isinstance(item, ast.Only):
                only.append(item)
        return ast.Module(header, tuple(imports), tuple(rules), tuple(presets), source=self.source, only=tuple(only))

    def space_header(self, meta, items):
        name, *params = items
        return ast.Header(str(name), tuple(p for p in params if p is not None), pos=self._p(meta))

    def space_header_bare(self, meta, items):
        return ast.Header(str(items[0]), (), pos=self._p(meta))

    def library_header(self, meta, items):
        return ast.Header(str(items[0]), (), library=True, pos=self._p(meta))

    def param(self, meta, items):
        name, type_, default = items
        return ast.Param(str(name), str(type_) if type_ is not None else None, default, pos=self._p(meta))

    def import_all(self, meta, items):
        return ast.Import(str(items[0])[1:-1], None, pos=self._p(meta))

    def import_some(self, meta, items):
        return ast.Import(str(items[0])[1:-1], tuple(str(n) for n in items[1:]), pos=self._p(meta))

    def rule_params(self, meta, items):
        return tuple(p for p in items if p is not None)

    def rule(self, meta, items):
        shared, name = items[0], items[1]
        params = items[2] if isinstance(items[2], tuple) else ()
        rest = items[2:] if not isinstance(items[2], tuple) and items[2] is not None else items[3:]
        body, *clauses = rest
        wheres, requires = [], []
        for kind, value in clauses:
            if kind == "where":
                wheres.extend(value)
            else:
                requires.append(value)
        return ast.Rule(str(name), params, body, shared is not None, tuple(wheres), tuple(requires),
                        pos=_tok_pos(name, self.source))

    def where(self, meta, items):
        return ("where", tuple(items))

    def require(self, meta, items):
        return ("require", items[0])

    def binding(self, meta, items):
        return ast.Binding(str(items[0]), items[1], pos=self._p(meta))

    def preset(self, meta, items):
        name = items[0]
        params = items[1] if isinstance(items[1], tuple) else ()
        value = items[-1]
        return ast.Preset(str(name), params, value, pos=_tok_pos(name, self.source))

    def only(self, meta, items):
        radius, value = items
        return ast.Only(value, int(radius) if radius is not None else 0, pos=self._p(meta))

    def preset_params(self, meta, items):
        return tuple(i for i in items if i is not None)

    def kwarg(self, meta, items):
        return (str(items[0]), items[1])

    # network expressions
    def alts(self, meta, items):
        if len(items) == 1 and items[0].label is None and items[0].weight == 1.0:
            body = items[0].body
            # an `if` alone in brackets may stand in a sequence (see `seq`)
            return attrs.evolve(body, grouped=True) if isinstance(body, ast.NetIf) else body
        return ast.Alts(tuple(items), pos=self._p(meta))

    def option(self, meta, items):
        label, body, weight = items
        return ast.Option(str(label) if label is not None else None, self._weight(weight), body, pos=self._p(meta))

    @staticmethod
    def _weight(number):
        """`@ w` (1 when not written): a positive, finite number."""
        if number is None:
            return 1.0
        if not 0 < number.value < math.inf:
            raise NasError(f"a weight must be a positive number, got {number.value}", number.pos)
        return float(number.value)

    def seq(self, meta, items):
        for item in items[:-1]:
            if isinstance(item, ast.NetIf) and not item.grouped:
                raise NasError("an `if` branch is one item, so what follows the `else` branch here is not in it",
                               item.pos, "write `if ... then a else (b c)` for a longer branch, or "
                               "`(if ... then a else b) c` to follow the `if`")
        return items[0] if len(items) == 1 else ast.Seq(tuple(items), pos=self._p(meta))

    def repeat(self, meta, items):
        body, _star, count = items
        return ast.Repeat(body, count, pos=self._p(meta))

    def labelled(self, meta, items):
        return ast.Labelled(items[0], str(items[1]), pos=self._p(meta))

    def net_if(self, meta, items):
        return ast.NetIf(*items, pos=self._p(meta))

    def merge(self, meta, items):
        kind, branches = items
        return ast.Merge(str(kind), branches, pos=self._p(meta))

    def call(self, meta, items):
        name, *args = items
        return ast.Call(str(name), tuple(a for a in args if a is not None), pos=_tok_pos(name, self.source))

    def arg(self, meta, items):
        name, value = items
        return ast.Arg(str(name) if name is not None else None, value, pos=self._p(meta))

    def branches(self, meta, items):
        return tuple(items)

    def edge(self, meta, items):
        source, _gt, body = items
        return ast.Branch(str(source), body, pos=self._p(meta))

    def local(self, meta, items):
        return ast.Branch(None, items[0], pos=self._p(meta))

    def pick(self, meta, items):
        k, *candidates = items
        return ast.Pick(k, tuple(candidates), pos=self._p(meta))

    def dag(self, meta, items):
        names, nodes, outputs = [], [], []
        for item in items:
            if isinstance(item, Token):
                names.append(str(item))
            elif isinstance(item, tuple):
                nodes.append(item)
            elif isinstance(item, ast.Branch):
                outputs.append(item)
        return ast.Dag(tuple(names), tuple(nodes), tuple(outputs), pos=self._p(meta))

    def dag_node(self, meta, items):
        return (str(items[0]), items[1])

    # value expressions
    def range(self, meta, items):
        lo, hi, step = items
        return ast.Range(lo, hi, step, pos=self._p(meta))

    def cond(self, meta, items):
        return ast.Cond(*items, pos=self._p(meta))

    def or_(self, meta, items):
        return ast.BoolOp("or", tuple(items), pos=self._p(meta))

    def and_(self, meta, items):
        return ast.BoolOp("and", tuple(items), pos=self._p(meta))

    def not_(self, meta, items):
        return ast.Not(items[0], pos=self._p(meta))

    def binop(self, meta, items):
        left, op, right = items
        return ast.BinOp(str(op), left, right, pos=_tok_pos(op, self.source))

    def neg(self, meta, items):
        operand = items[-1]
        if isinstance(operand, ast.Num):
            return ast.Num(-operand.value, pos=self._p(meta))
        return ast.Neg(operand, pos=self._p(meta))

    def pow(self, meta, items):
        return ast.BinOp("**", items[0], items[1], pos=self._p(meta))

    def string(self, meta, items):
        return ast.Str(str(items[0])[1:-1], pos=self._p(meta))

    def var(self, meta, items):
        return ast.Var(str(items[0]), pos=self._p(meta))

    def func(self, meta, items):
        name, *args = items
        return ast.Func(str(name), tuple(a for a in args if a is not None), pos=self._p(meta))

    def true(self, meta, items):
        return ast.Bool(True, pos=self._p(meta))

    def false(self, meta, items):
        return ast.Bool(False, pos=self._p(meta))

    def choice(self, meta, items):
        values = tuple(v for v, _ in items)
        weights = tuple(w for _, w in items)
        return ast.Choice(values, weights, pos=self._p(meta))

    def choice_item(self, meta, items):
        value, weight = items
        return (value, self._weight(weight))

    def int(self, meta, items):
        return ast.Num(int(items[0]), pos=self._p(meta))

    def float(self, meta, items):
        return ast.Num(float(items[0]), pos=self._p(meta))

    # derivation text
    def dnode(self, meta, items):
        return ast.RawNode(tuple(i for i in items if i is not None), pos=self._p(meta))

    def ditem(self, meta, items):
        name, value = items
        return (str(name), value, _tok_pos(name, self.source))

    def dlist(self, meta, items):
        return ast.RawList(tuple(i for i in items if i is not None), pos=self._p(meta))

    def dlabel(self, meta, items):
        name = items[0]
        node = items[1] if len(items) > 1 else None
        return ast.RawLabel(str(name), node, pos=_tok_pos(name, self.source))

    def dstring(self, meta, items):
        return ast.RawScalar(str(items[0])[1:-1], pos=self._p(meta))

    def dint(self, meta, items):
        return ast.RawScalar(int(items[0]), pos=self._p(meta))

    def dfloat(self, meta, items):
        return ast.RawScalar(float(items[0]), pos=self._p(meta))

    def dneg_int(self, meta, items):
        return ast.RawScalar(-int(items[-1]), pos=self._p(meta))

    def dneg_float(self, meta, items):
        return ast.RawScalar(-float(items[-1]), pos=self._p(meta))

    def dstart(self, meta, items):
        return items[0]


# Characters read at most. Lark parses some 50-150 KB a second, and a space file is a
# few KB (the shipped ones are under 10 KB); a derivation of a large space may be long.
MAX_CHARS = {"space": 200_000, "derivation": 2_000_000}
MAX_NESTING = 150  # levels of a space file's parse tree; the checker and planner recurse over it
# parse-tree levels that every network expression has (an option of alternatives, a
# sequence): not levels a reader sees, so `(relu)` nests one level, as `(8)` does
_WRAPPERS = {"option", "seq"}


def _check_nesting(tree: lark.Tree, source: Source):
    """Refuse a space file nested deeper than MAX_NESTING (brackets, `a * 1 * 1 ...`,
    `not not ...`) before the checker and the planner recurse into it; the error
    points at the first place in the text that is too deep."""
    stack = [(tree, 1, None)]
    while stack:
        node, depth, pos = stack.pop()
        pos = _pos_of(node.meta, source) or pos
        if depth > MAX_NESTING:
            raise NasError(f"the text nests more than {MAX_NESTING} levels deep", pos,
                           "move the inner part into a rule of its own")
        step = 0 if node.data in _WRAPPERS else 1
        stack.extend((child, depth + step, pos) for child in reversed(node.children) if isinstance(child, lark.Tree))


def _tree(source: Source, start: str, error) -> lark.Tree:
    if len(source.text) > MAX_CHARS[start]:
        raise error(f"the text is {len(source.text)} characters long; at most {MAX_CHARS[start]} characters are read",
                    Pos(source, 1, 1))
    try:
        return _parser(start).parse(source.text)
    except lark.exceptions.LarkError as err:
        raise _syntax_error(err, source, error) from None


def _to_ast(tree: lark.Tree, source: Source):
    try:
        return _ToAst(source).transform(tree)
    except lark.exceptions.VisitError as err:
        if isinstance(err.orig_exc, NasError):
            raise err.orig_exc from None
        raise


def read_source(path: Path, name: str) -> str:
    """A space file's text. Only regular files are read, and at most 4 bytes a
    character of MAX_CHARS, plus one (so `/dev/zero` or a huge file is an error, not a
    hang); a byte that is
    not UTF-8 is reported at its line and column. A leading BOM is dropped."""
    try:
        if not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file" if path.exists() else None
            if what:
                raise NasError(f"cannot read {name}: {what}", hint="give the path of a .nas file")
        with path.open("rb") as f:
            data = f.read(4 * MAX_CHARS["space"] + 1)  # UTF-8 takes at most 4 bytes a character
    except OSError as err:
        raise NasError(f"cannot read {name}: {err.strerror or err}") from None
    if len(data) > 4 * MAX_CHARS["space"]:
        raise NasError(f"the file is more than {4 * MAX_CHARS['space']} bytes long; at most {MAX_CHARS['space']} "
                       "characters are read", Pos(Source(name, data[:4096].decode("utf-8", errors="replace")), 1, 1))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        before = data[:err.start].decode("utf-8-sig", errors="replace")
        line = before.count("\n") + 1
        source = Source(name, data.decode("utf-8-sig", errors="replace"))
        raise NasError(f"byte 0x{data[err.start]:02x} is not UTF-8", Pos(source, line, len(before) - before.rfind("\n")),
                       "save the file as UTF-8") from None
    return text  # parse_module refuses a text of more than MAX_CHARS characters


def parse_module(text: str, name: str = "<string>") -> ast.Module:
    """Parse a space file's text into an `ast.Module` (no name resolution yet)."""
    source = Source(name, text)
    tree = _tree(source, "space", NasError)
    _check_nesting(tree, source)
    return _to_ast(tree, source)


def parse_derivation_text(text: str, name: str = "<derivation>"):
    """Parse a derivation's text form into a raw tree (`ast.RawNode`, ...); a
    malformed text is a DerivationError."""
    source = Source(name, text)
    return _to_ast(_tree(source, "derivation", DerivationError), source)
