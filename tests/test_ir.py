"""The generic walk over the checked form: it reaches every node kind through
the attrs fields, so no walker names node kinds or fields."""

import nasdsl
from nasdsl.language import ast, ir

TEXT = """space t(C: int = 8)
network = stem cell * {1, 2} add(relu, pick 1 of [bn, block(4)])
    where w = 2 * {4, 8}
stem = conv(out=C * {1, 2}, kernel=3) | relu
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
