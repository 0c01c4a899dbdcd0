"""Bad input gets a clear error, never a traceback.

Every mistake in a space file is a `NasError` rendered as `FILE:LINE:COL: error:
what`, the offending line, a caret under the column and, where one helps, a
`hint:`. Every bad derivation text is a `DerivationError` naming the path. Absurd
sizes end quickly with an error instead of hanging or exhausting memory or the
Python stack. Each case below is one row: a small file, where the error points,
a piece of its message and a piece of its hint.
"""

import time
from pathlib import Path

import pytest

import nasdsl
from nasdsl import DerivationError, NasError
from nasdsl.language.errors import printable

SPACES = Path(__file__).resolve().parent.parent / "spaces"
# CPU seconds any one input may take: a guard against runaway (exponential, unbounded)
# work, not a speed target -- those are measured in bench/. Process time, so other
# jobs on the machine do not count.
FAST = 10.0

H = "space t\n"  # a header: each case's own lines start at line 2

NB201_LIKE = H + """network = cell
cell = dag x0 {
    x1 = x0 > op
    x2 = add(x0 > op, x1 > op)
    out x2
}
op = none: zero | skip_connect: identity | nor_conv_3x3: conv(out=8) | avg_pool_3x3: avgpool
"""


def case(name, text, where, message, hint=None, *, files=None, params=None):
    """One row: `where` is `LINE:COL` in main.nas, or `FILE:LINE:COL` in another file."""
    return pytest.param(text, where, message, hint, files or {}, params, id=name)


CASES = [
    # ---- syntax
    case("missing-paren", H + "network = conv(out=3\n", "2:21", "unexpected end of file", "expected `,`, `)`"),
    case("stray-token", H + "network = relu ) bn\n", "2:16", "unexpected `)`", "expected"),
    case("odd-character", H + "network = relu $ bn\n", "2:16", "unexpected character `$`"),
    case("control-character", H + "network = relu \x07\n", "2:16", r"unexpected character '\x07'"),
    case("space-before-call", H + "network = conv (out=3)\n", "2:20", "unexpected `=`",
         "write `conv(` with no space before `(`"),
    case("unterminated-string", H + 'import "lib.nas\nnetwork = relu\n', "2:8", "unterminated string",
         'ends with `"` on the same line'),
    case("empty-file", "", "1:1", "a space file starts with `space NAME", "space tiny"),
    case("rule-without-body", H + "network =\n", "2:10", "unexpected end of line", "expected"),
    case("continuation-not-indented", H + "network = conv(out=3)\nbn relu\n", "3:4", "unexpected `relu`",
         "indent it to continue the one above"),
    case("header-missing", "network = relu\n", "1:1", "starts with `space NAME", "space tiny"),
    case("negative-count-literal", H + "network = relu * -1\n", "2:18", "unexpected `-`"),
    # ---- names
    case("unknown-rule", H + "network = mbconf\nmbconv = relu\n", "2:11", "unknown rule or primitive `mbconf`",
         "did you mean `mbconv`?"),
    case("unknown-primitive", H + "network = rleu\n", "2:11", "unknown rule or primitive `rleu`",
         "did you mean `relu`?"),
    case("unknown-parameter", H + "network = b(8)\nb(channels) = conv(out=chanels)\n", "3:24",
         "argument `out` of `conv` takes int, got `chanels`", "did you mean `channels`?"),
    case("unknown-keyword", H + "network = conv(out=3, kernal=3)\n", "2:23",
         "primitive `conv` has no argument `kernal`", "did you mean `kernel`?"),
    case("unknown-rule-keyword", H + "network = b(c=3)\nb(channels) = linear(channels)\n", "2:13",
         "rule `b` has no argument `c`", "its arguments: channels"),
    case("unknown-function", H + "network = linear(mx(3, 4))\n", "2:18", "unknown function `mx`",
         "did you mean `max`?"),
    case("unknown-symbol", H + "network = act(kind=rleu)\n", "2:20", "argument `kind` of `act` takes one of",
         "did you mean `relu`?"),
    case("dag-edge-from-undefined-node", H + "network = dag x {\n    a = x1 > relu\n    out a\n}\n", "3:9",
         "`x1` is not a node of this dag", "did you mean `x`?"),
    # ---- arity and types
    case("too-many-arguments", H + "network = linear(10, true, 3)\n", "2:28",
         "primitive `linear` takes 2 arguments, got 3"),
    case("missing-primitive-argument", H + "network = linear\n", "2:11", "primitive `linear` needs argument `out`",
         "linear(out, bias)"),
    case("missing-rule-argument", H + "network = b\nb(c) = linear(c)\n", "2:11", "rule `b` needs argument `c`",
         "`b` is defined at"),
    case("symbol-for-int", H + "network = conv(out=relu)\n", "2:20", "argument `out` of `conv` takes int, got `relu`"),
    case("float-for-int", H + "network = conv(out=8, kernel=1.5)\n", "2:30", "takes int, got `1.5` (float)"),
    case("int-for-bool", H + "network = conv(out=8, bias=3)\n", "2:28",
         "argument `bias` of `conv` takes bool, got `3`"),
    case("int-for-bool-rule-parameter", H + "network = b(3)\nb(on: bool) = relu\n", "2:13",
         "parameter `on` of `b` takes bool, got `3` (int)"),
    case("computed-value-of-wrong-type", H + "network = b(relu)\nb(c) = conv(out=c)\n", "3:17",
         "argument `out` of `conv` must be int, got `relu` (str)"),
    case("arithmetic-on-a-symbol", H + "network = linear(relu * 2)\n", "2:23", "`*` needs numbers, got `relu`"),
    case("override-of-wrong-type", "space t(C: int = 16)\nnetwork = linear(C)\n", "1:9",
         "parameter `C` is int; `sixteen`", params={"C": "sixteen"}),
    case("override-float-for-int", "space t(C: int = 16)\nnetwork = linear(C)\n", "1:9", "got `1.5` (float)",
         params={"C": 1.5}),
    case("override-unknown-name", "space t(num_classes: int = 10)\nnetwork = linear(num_classes)\n", "1:1",
         "space `t` has no parameter `num_clases`", "did you mean `num_classes`?", params={"num_clases": 3}),
    case("zero-weight", H + "network = relu @ 0 | bn\n", "2:18", "a weight must be a positive number, got 0"),
    case("infinite-choice-weight", H + "network = conv(out=8, kernel={3 @ 1e400, 5})\n", "2:35",
         "a weight must be a positive number, got inf"),
    case("range-step-zero", H + "network = conv(out=8, kernel=1..9 step 0)\n", "2:30",
         "a range's step must be positive"),
    case("condition-not-bool", H + "network = if 3 then relu else bn\n", "2:11", "must be true or false, got `3`"),
    # ---- recursion
    case("never-terminates", H + "network = a\na = b a | a c\nb = relu\nc = bn\n", "3:1",
         "rule `a` can never finish deriving", "give it an alternative that does not recurse"),
    case("never-terminates-mutually", H + "network = a\na = relu b\nb = bn a | a\n", "3:1",
         "rule `a` can never finish deriving: every alternative leads back to it (a -> b -> a)"),
    case("same-arguments-again", H + "network = s(1)\ns(n) = relu s(n) | relu\n", "3:13",
         "rule `s(1)` derives itself again with the same arguments", "a parameter that shrinks"),
    case("argument-grows-forever", H + "network = s(1)\ns(n) = relu s(n + 1) | relu\n", "3:8",
         "derivations nest more than 100 levels deep (in `s(", "is a recursion unbounded?"),
    case("long-chain-of-rules", H + "network = r0\n" + "".join(f"r{i} = relu r{i + 1} | bn\n" for i in range(60))
         + "r60 = relu\n", "36:7", "derivations nest more than 100 levels deep (in `r33`)"),
    # ---- constraints
    case("require-excludes-everything", H + "network = b\nb = conv(out=8, kernel=k)\n    where k = {1, 3}\n"
         "    require k > 5\n", "5:15", "space `t` is empty: its constraints exclude every derivation",
         "relax a `require`"),
    # ---- imports
    case("import-cycle", H + 'import "a.nas"\nnetwork = relu\n', "b.nas:2:1", "a.nas -> b.nas -> a.nas",
         files={"a.nas": 'library a\nimport "b.nas"\n', "b.nas": 'library b\nimport "a.nas"\n'}),
    case("import-outside-folder", H + 'import "../x.nas"\nnetwork = relu\n', "2:1", "leaves the folder",
         "beside the importing file"),
    case("import-absolute-path", H + 'import "/tmp/x.nas"\nnetwork = relu\n', "2:1", "is an absolute path"),
    case("import-missing-file", H + 'import "nothere.nas"\nnetwork = relu\n', "2:1", "cannot find `nothere.nas`"),
    case("import-missing-rule", H + 'from "lib.nas" import blok\nnetwork = blok\n', "2:1",
         "`lib.nas` has no rule `blok`", "did you mean `block`?",
         files={"lib.nas": "library lib\nblock = conv(out=8) bn relu\n"}),
    # ---- absurd sizes: each ends within FAST seconds
    case("repeat-a-billion", H + "network = relu * 1000000000\n", "2:11", "a repetition of 1000000000 copies"),
    case("repeat-range-a-billion", H + "network = relu * 0..1000000000\n", "2:18",
         "the range 0..1000000000 has 1000000001 values"),
    case("huge-range-into-rule", H + "network = b(1..1000000000)\nb(c) = linear(c)\n", "2:13",
         "the range 1..1000000000 has 1000000000 values"),
    case("range-too-wide", H + "network = conv(out=8, kernel=0..2 ** 100)\n", "2:30", "has more than"),
    case("power-too-large", H + "network = linear(2 ** 100000)\n", "2:18", "`2 ** 100000` is too large"),
    case("argument-out-of-range", H + "network = conv(out=8) dropout(p=2.0)\n", "2:33",
         "argument `p` of `dropout` must be at least 0 and at most 1; got `2.0`"),
    case("argument-choice-out-of-range", H + "network = conv(out=8) se(divisor={8, 0})\n", "2:34",
         "argument `divisor` of `se` must be at least 1; got `0`"),
    case("if-followed-in-its-sequence", H + "network = r(2)\nr(k) = if k == 0 then relu else relu r(k - 1)\n",
         "3:8", "an `if` branch is one item", "`if ... then a else (b c)`"),
    case("counts-that-square-each-level",
         H + "network = r0\n" + "".join(f"r{i} = r{i + 1} r{i + 1}\n" for i in range(39)) + "r39 = relu | bn\n",
         "24:1", "rule `r21` has more than 10**60206 derivations", "uses another twice squares its count"),
    case("round-to-a-huge-place", H + "network = conv(out=round(8, -1000000000) + 8)\n", "2:20",
         "`round` cannot take 8, -1000000000: ndigits must lie within"),
    case("argument-combinations", H + "network = b(1..1000, 1..1000)\nb(x, y) = relu\n", "2:11",
         "more than 100000 combinations of argument choices"),
    case("pick-too-many-subsets", H + "network = add(pick 25 of [" + ", ".join(["relu"] * 50) + "])\n", "2:15",
         "picking 25 of 50 gives 126410606437752 subsets"),
    case("nested-parentheses", H + "network = " + "(" * 10_000 + "relu" + ")" * 10_000 + "\n", "2:158",
         "the text nests more than 150 levels deep", "move the inner part into a rule"),
    case("long-operator-chain", H + "network = linear(" + " + ".join(["1"] * 5000) + ")\n", "2:18",
         "the text nests more than 150 levels deep"),
    case("five-megabytes", H + "network = relu\n" + ("# " + "x" * 98 + "\n") * 50_000, "1:1",
         "long; at most 200000 characters are read"),
    # ---- duplicates, names and values
    case("duplicate-rule", H + "network = relu\nnetwork = bn\n", "3:1", "rule `network` is defined twice"),
    case("duplicate-space-parameter", "space t(C: int = 1, C: int = 2)\nnetwork = relu\n", "1:21",
         "space parameter `C` is defined twice"),
    case("duplicate-preset", H + "network = relu\npreset p = ()\npreset p = ()\n", "4:8",
         "preset `p` is defined twice"),
    case("duplicate-parameter", H + "network = b(1, 2)\nb(c, c) = linear(c)\n", "3:6", "parameter `c` is listed twice"),
    case("duplicate-choice-value", H + "network = conv(out=8, kernel={3, 3})\n", "2:34", "the choice lists `3` twice"),
    case("duplicate-site-label", H + "network = relu as x bn as x\n", "2:21", "two sites are named `x` in one scope",
         "rename one of them"),
    case("duplicate-alternative-label", H + "network = relu | a: bn | a: hswish\n", "2:26",
         "two alternatives are labelled `a`"),
    case("rule-named-like-primitive", H + "network = relu\nrelu = bn\n", "3:1",
         "rule `relu` has the name of a primitive"),
    case("network-missing", H + "stem = relu\n", "1:1", "space `t` has no `network` rule", "add `network = ...`"),
    case("network-with-parameters", H + "network(c) = linear(c)\n", "2:1", "`network` takes no parameters"),
    case("shared-domain-from-parameter", H + "network = cell(3) cell(4)\nshared cell(c) = conv(out=c, kernel={c, 3})\n",
         "3:38", "a choice's values cannot depend on a shared rule's parameters", "derived once for all its uses"),
    case("division-by-zero-primitive", H + "network = linear(3 // 0)\n", "2:20", "division by zero in `3 // 0`"),
    case("division-by-zero-rule", H + "network = b(8 % 0)\nb(c) = linear(c)\n", "2:15", "division by zero in `8 % 0`"),
    case("negative-count", "space t(n: int = 0)\nnetwork = relu * (n - 1)\n", "2:11",
         "a repetition count must be a whole number >= 0, got `-1`"),
    case("preset-not-a-member", NB201_LIKE + "preset p = (cell=(x1=(op=none), x2=(op1=sep_conv, op2=none)))\n", "9:41",
         "preset `p`: `cell.x2.op1`: `sep_conv` is not an alternative here",
         "choose one of: none, skip_connect, nor_conv_3x3, avg_pool_3x3"),
    case("preset-value-not-allowed", H + "network = conv(out=8, kernel={3, 5})\npreset p = (conv=(kernel=7))\n", "3:26",
         "preset `p`: `conv.kernel`: 7 is not allowed here", "allowed: 3, 5"),
]


@pytest.mark.parametrize("text, where, message, hint, files, params", CASES)
def test_space_file_errors(tmp_path, text, where, message, hint, files, params):
    for name, extra in files.items():
        (tmp_path / name).write_text(extra)
    main = tmp_path / "main.nas"
    main.write_text(text)
    *file, line, column = where.split(":")
    path = tmp_path / (file[0] if file else "main.nas")
    start = time.process_time()
    with pytest.raises(NasError) as info:
        nasdsl.load(main, params=params).check()
    assert time.process_time() - start < FAST
    err = info.value
    rendered = str(err).splitlines()
    assert rendered[0].startswith(f"{path}:{line}:{column}: error: "), rendered[0]
    assert message in err.message
    source_line = path.read_text().split("\n")[int(line) - 1]
    if source_line and len(source_line) <= 100:  # longer lines are shown cut around the caret
        assert rendered[1] == "    " + printable(source_line)  # control characters escaped
        assert rendered[2] == "    " + " " * len(printable(source_line[:int(column) - 1])) + "^"
    if hint is not None:
        assert err.hint is not None and hint in err.hint
        assert rendered[-1] == f"hint: {err.hint}"


# ---- derivation texts ---------------------------------------------------------------
@pytest.fixture(scope="module")
def nb201():
    return nasdsl.load(SPACES / "nb201.nas")


@pytest.fixture(scope="module")
def tutorial():
    return nasdsl.load(SPACES / "tutorial.nas")


CELL = "(cell=(x1=(op={x1}), x2=(op1={op1}, op2=none), x3=(op1=nor_conv_1x1, op2=avg_pool_3x3, op3=none)))"
BLOCK = "(block=(mbconv=(expand={expand}, activation={act}, dwconv=(kernel={kernel}))), rest={rest})"
SMALL = "(mbconv=(expand=3, activation=relu, dwconv=(kernel=3)))"


def stages(expand=3, act="relu", kernel=3, rest="[]", stage3=True):
    block = BLOCK.format(expand=expand, act=act, kernel=kernel, rest=rest)
    plain = BLOCK.format(expand=3, act="relu", kernel=3, rest="[]")
    return f"(stage1={block}, stage2={plain}" + (f", stage3={plain})" if stage3 else ")")


def dcase(name, space, text, column, path, message, hint=None):
    return pytest.param(space, text, column, path, message, hint, id=name)


DERIVATION_CASES = [
    dcase("unknown-site", "nb201", CELL.format(x1="skip_connect", op1="none").replace("x2=", "x4="), 30, "cell.x4",
          "is not a choice of this scope", "names here: x1, x2, x3"),
    dcase("misspelt-site", "nb201", CELL.format(x1="none", op1="none").replace("cell=", "cel="), 2, "cel",
          "is not a choice of this scope", "did you mean `cell`?"),
    dcase("wrong-label", "nb201", CELL.format(x1="maxout", op1="none"), 15, "cell.x1.op",
          "`maxout` is not an alternative here",
          "choose one of: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3"),
    dcase("misspelt-label", "nb201", CELL.format(x1="nor_conv_3x4", op1="none"), 15, "cell.x1.op",
          "`nor_conv_3x4` is not an alternative here", "did you mean `nor_conv_3x3`? choose one of: none,"),
    dcase("value-for-label", "nb201", CELL.format(x1="3", op1="none"), 15, "cell.x1.op",
          "expected an alternative's label", "choose one of:"),
    dcase("missing-site", "nb201", CELL.format(x1="none", op1="none").replace("op1=none, ", ""), 25, "cell.x2.op1",
          "is missing", "choose one of: none, skip_connect"),
    dcase("value-not-allowed", "tutorial", stages(kernel=7), 67, "stage1.block.mbconv.dwconv.kernel",
          "7 is not allowed here", "allowed: 3, 5"),
    dcase("where-value-not-allowed", "tutorial", stages(expand=4), 32, "stage1.block.mbconv.expand",
          "4 is not allowed here", "allowed: 3, 6"),
    dcase("where-symbol-misspelt", "tutorial", stages(act="hswsh"), 46, "stage1.block.mbconv.activation",
          "hswsh is not allowed here", "did you mean `hswish`? allowed: relu, hswish"),
    dcase("float-for-int", "tutorial", stages(kernel=3.0), 67, "stage1.block.mbconv.dwconv.kernel",
          "3.0 is not allowed here", "allowed: 3, 5"),
    dcase("too-many-copies", "tutorial", stages(rest=f"[{SMALL}, {SMALL}, {SMALL}]"), 78, "stage1.rest",
          "3 copies are not allowed here", "allowed lengths: 0, 1, 2"),
    dcase("copies-not-a-list", "tutorial", stages(rest="2"), 78, "stage1.rest",
          "expected a list of copies", "allowed lengths: 0, 1, 2"),
    dcase("missing-stage", "tutorial", stages(stage3=False), 1, "stage3", "is missing"),
    dcase("site-given-twice", "tutorial", stages()[:-1] + ", stage1=())", 245, "stage1", "is given twice"),
]


@pytest.mark.parametrize("space, text, column, path, message, hint", DERIVATION_CASES)
def test_derivation_text_errors(request, space, text, column, path, message, hint):
    space = request.getfixturevalue(space)
    with pytest.raises(DerivationError) as info:
        space.parse(text)
    err = info.value
    assert err.message.startswith(f"`{path}`: ") and message in err.message, err.message
    assert str(err).startswith(f"<derivation>:1:{column}: error: "), str(err)
    if hint is not None:
        assert err.hint is not None and hint in err.hint, err.hint


@pytest.mark.parametrize("text, column, message", [
    ("garbage !!", 9, "unexpected character `!`"),
    ("(cell=(x1=(op=none)", 20, "unexpected end of file"),
    ("", 1, "unexpected end of file"),
    ("(cell=(x1=(op=none)))) trailing", 22, "unexpected `)`"),
    ('(cell="unterminated)', 7, "unterminated string"),
])
def test_derivation_syntax_errors(nb201, text, column, message):
    with pytest.raises(DerivationError) as info:
        nb201.parse(text)
    assert message in info.value.message
    assert str(info.value).startswith(f"<derivation>:1:{column}: error: ")


def test_derivation_nested_absurdly_deep_is_an_error_not_a_recursion(nb201):
    start = time.process_time()
    with pytest.raises(DerivationError, match="expected the choices of a scope"):
        nb201.parse("[" * 10_000 + "]" * 10_000)
    assert time.process_time() - start < FAST


# ---- limits that legal input reaches ---------------------------------------------------
@pytest.mark.parametrize("text", [
    H + "network = " + "(" * 140 + "conv(out=8) relu" + ")" * 140 + "\n",  # brackets count one level each
    H + "network = conv(out=" + "(" * 140 + "8" + ")" * 140 + ")\n",  # in network and value expressions alike
])
def test_brackets_nest_to_the_stated_limit(text):
    space = nasdsl.loads(text).check()
    assert space.count == 1 and space.compile(space.sample(seed=0)) is not None


def test_deepest_allowed_space_works_end_to_end():
    """Just under the nesting limit every operation still works (no RecursionError)."""
    chain = H + "network = r0\n" + "".join(f"r{i} = r{i + 1} * {{0, 1}}\n" for i in range(97)) + "r97 = relu | bn\n"
    space = nasdsl.loads(chain).check()
    deepest = space.unrank(space.count - 1)
    assert space.parse(deepest.text) == deepest
    assert space.rank(deepest) == space.count - 1
    assert next(iter(space.enumerate())) == space.unrank(0)
    assert deepest in space and len(deepest.choices()) > 97


def test_long_repetition_enumerates_without_recursion():
    space = nasdsl.loads(H + "network = conv(out=8, kernel={1, 3}) * 1000\n")
    first = next(iter(space.enumerate()))
    assert first == space.unrank(0)


def test_file_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "bom.nas"
    path.write_text("\ufeff" + H + "network = relu | bn\n", encoding="utf-8")
    assert nasdsl.load(path).count == 2


def test_library_has_no_count(tmp_path):
    path = tmp_path / "lib.nas"
    path.write_text("library lib\nblock = relu | bn\n")
    with pytest.raises(NasError) as info:
        nasdsl.load(path).count
    assert str(info.value).startswith(f"{path}:1:1: error: `lib` is a library")


@pytest.mark.parametrize("text", [
    H + "network = " + " ".join(["relu"] * 5000) + "\n",
    H + "network = relu" + " | bn" * 5000 + "\n",
    H + "network = conv(out=8, kernel={" + ", ".join(str(k) for k in range(1, 5001)) + "})\n",
    H + "network = linear(" + "(" * 10_000 + "1" + ")" * 10_000 + ")\n",
    H + "network = relu\tbn\n",  # a tab between tokens is only whitespace
    H + "network = relu\n\tbn\n",  # a tab indents like spaces: only column 1 matters
], ids=["long-sequence", "many-alternatives", "many-choice-values", "deep-value-parentheses", "tab-between-tokens",
    "tab-indent"])
def test_large_but_legal_input_is_quick(text):
    start = time.process_time()
    assert nasdsl.loads(text).count >= 1
    assert time.process_time() - start < FAST


# ---- reading files: only regular files, bounded, UTF-8 reported by line and column
def test_a_byte_that_is_not_utf8_is_reported_at_its_line_and_column(tmp_path):
    path = tmp_path / "bad.nas"
    path.write_bytes(b"space t\nnetwork = conv(out=8) # caf\xe9\n")
    with pytest.raises(NasError) as info:
        nasdsl.load(path)
    assert (info.value.pos.line, info.value.pos.column) == (2, 28)
    assert "byte 0xe9 is not UTF-8" in str(info.value) and "hint: save the file as UTF-8" in str(info.value)


@pytest.mark.parametrize("path, message", [("/dev/zero", "not a regular file"), ("/tmp", "a folder")])
def test_only_regular_files_are_read(path, message):
    start = time.process_time()
    with pytest.raises(NasError, match=message):
        nasdsl.load(path)
    assert time.process_time() - start < FAST


def test_a_huge_file_is_refused_after_reading_at_most_its_limit(tmp_path):
    path = tmp_path / "huge.nas"
    path.write_text("space t\n" + "# " + "x" * 3_000_000 + "\nnetwork = relu\n")
    with pytest.raises(NasError, match="more than 800000 bytes long; at most 200000 characters are read"):
        nasdsl.load(path)


def test_control_and_bidi_characters_from_a_file_are_escaped_in_errors():
    with pytest.raises(NasError) as info:
        nasdsl.loads(H + 'network = conv(out=\x1b[31m\u202e)\n')
    shown = str(info.value)
    assert "\x1b" not in shown and "\u202e" not in shown
    assert "    network = conv(out=\\x1b[31m\\u202e)\n" + " " * 23 + "^" in shown
