"""The generic walk over the checked form: it reaches every node kind through
the attrs fields, so no walker names node kinds or fields."""

from pathlib import Path

import nasdsl
from nasdsl.language import ast, ir

SPACES = Path(__file__).resolve().parent.parent / "spaces"

TEXT = """space t(C: int = 8)
network = stem cell * {1, 2} add(relu, pick 1 of [bn, block(4)])
    where w = 2 * {4, 8}
stem = conv(out={8, 16}, kernel=3) | relu
cell = dag x {
        a = x > block(w=C) as b1
        out a
    }
    where y = {1, 2}
block(w: int) = if w > 4 then conv(out=w, kernel={3, 5}) else relu
"""


def test_walk_reaches_calls_in_every_construct():
    rules = nasdsl.loads(TEXT).rules
    assert list(ir.calls(rules["network"].body)) == ["stem", "cell", "block"]
    assert list(ir.calls(rules["cell"].body)) == ["block"]
    assert set(ir.calls(rules["block"].body)) == set()


def test_sites_in_finds_choices_inside_arithmetic():
    rules = nasdsl.loads(TEXT).rules
    [where] = rules["network"].wheres
    assert list(ir.sites_in(where.value)) == list(where.sites) == ["w"]
    conv = next(n for n in ir.walk(rules["stem"].body) if type(n) is ir.PrimCall)
    assert list(ir.sites_in(dict(conv.args)["out"])) == list(conv.arg_sites)


def test_walk_can_stop_at_a_node():
    expr = ast.BinOp("+", ast.Num(1), ast.Func("max", (ast.Var("a"), ast.Num(2))))
    assert [type(e).__name__ for e in ir.walk(expr)] == ["BinOp", "Num", "Func", "Var", "Num"]
    assert [type(e).__name__ for e in ir.walk(expr, lambda e: type(e) is not ast.Func)] == ["BinOp", "Num", "Func"]


def _strings(node):
    for n in ir.walk(node):
        for field in ("site", "name", "arg_sites", "sites"):
            value = getattr(n, field, None)
            yield from value if isinstance(value, tuple) else [value]


def test_site_names_are_final_and_numbered_within_their_scope():
    for path in sorted(SPACES.glob("*.nas")):
        for rule in nasdsl.load(path).rules.values():
            assert not any(isinstance(s, str) and "\0" in s for s in _strings(rule.body)), (path, rule.name)
    rules = nasdsl.loads("space t(n: int = 2)\n"
                         "network = conv(out=8, kernel={1, 3}) relu conv(out=8, kernel=3) conv2d_1 * {1, 2}\n"
                         "    where w = {1, 2}\n"
                         "conv2d_1 = if n > 1 then (bn bn) else (relu bn)\n").rules
    assert [n.site for n in rules["network"].body.items] == ["conv1", "relu", "conv2", "conv2d_1"]
    assert rules["network"].body.items[0].arg_sites == ("kernel",)
    assert rules["network"].wheres[0].sites == ("w",)
    body = rules["conv2d_1"].body
    assert [n.site for n in body.then.items] == ["bn1", "bn2"] and [n.site for n in body.orelse.items] == ["relu", "bn"]


def test_a_rules_site_names_do_not_depend_on_the_other_rules():
    """Derivation paths are made of site names: the same rule gets the same names
    whatever else the file holds and in whatever order its rules are built."""
    rule = "block(c: int) = conv(out=c, kernel={3, 5}) relu conv(out=c, kernel=1) (bn | relu relu)\n"
    other = "other = conv(out=4, kernel=3) conv(out=4, kernel={1, 3}) relu\n"
    alone = nasdsl.loads("space t\nnetwork = block(8)\n" + rule).rules["block"]
    among = nasdsl.loads("space t\nnetwork = other block(8) other\n" + other + rule + other.replace("other", "more")
                         ).rules["block"]
    assert alone.body == among.body
    assert [n.site for n in alone.body.items] == ["conv1", "relu", "conv2", "alt"]
