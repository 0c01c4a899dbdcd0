"""spaces/hnb201.nas: the hierarchical NAS-Bench-201 space. Its counts are recomputed
here from the paper's productions by plain recursion (not by nasdsl's planner), and
its networks compile, run, and reduce to NAS-Bench-201's where the grammar does."""

import functools
import itertools
import json
import math
from decimal import Decimal
from pathlib import Path

import pytest
import torch

import nasdsl
from nasdsl.cli.commands import main

SPACES = Path(__file__).resolve().parent.parent / "spaces"
PATH = str(SPACES / "hnb201.nas")
SPACE = nasdsl.load(PATH)

# The paper code's grammars (hierarchical_nb201/grammars), as published: the conv block twice.
PUBLISHED = """
D2 -> Linear3 D1 D1 D0 | Linear3 D0 D1 D1 | Linear4 D1 D1 D0 D0
D1 -> Linear3 C C DOWN | Linear4 C C C DOWN | Residual3 C C DOWN DOWN
D0 -> Linear3 C C CELL | Linear4 C C C CELL | Residual3 C C CELL CELL
DOWN -> Linear2 CELL resBlock | Linear3 CELL CELL resBlock | Residual2 CELL resBlock resBlock
C -> Linear2 CELL CELL | Linear3 CELL CELL CELL | Residual2 CELL CELL CELL
CELL -> Cell OPS OPS OPS OPS OPS OPS
OPS -> id | zero | Linear1 CONVBLOCK | Linear1 CONVBLOCK | avg_pool
CONVBLOCK -> Linear3 ACT CONV NORM
CONV -> conv3x3o | conv1x1o | dconv3x3o
NORM -> batch | instance | layer
ACT -> relu | hardswish | mish
"""
CELL_EDGES = [(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4)]  # the paper's Cell topology, input 1, output 4


def sci(n: int) -> str:
    """An exact integer in scientific notation, 6 significant digits."""
    return f"{Decimal(n):.5e}"


def productions(text: str, distinct: bool = False) -> dict:
    """{nonterminal: [right-hand sides]}; `distinct` keeps one copy of a repeated alternative."""
    grammar = {}
    for line in text.strip().splitlines():
        lhs, rhs = line.split("->")
        alts = [tuple(alt.split()) for alt in rhs.split("|")]
        grammar[lhs.strip()] = list(dict.fromkeys(alts)) if distinct else alts
    return grammar


def reaches_output(live_edges) -> bool:
    reached = {1}
    for u, v in sorted(live_edges):  # edges from lower nodes first: one pass suffices
        if u in reached:
            reached.add(v)
    return 4 in reached


def grammar_count(grammar: dict, connected: bool) -> int:
    """Derivations of D2. Connected: a Cell counts only the choices of `zero` edges that
    leave a path from its input to its output."""

    @functools.cache
    def count(symbol):
        if symbol not in grammar:
            return 1  # a terminal
        return sum(alternative(rhs) for rhs in grammar[symbol])

    def alternative(rhs):
        args = [s for s in rhs[1:] if s in grammar]
        if rhs[0] != "Cell" or not connected:
            return math.prod(count(s) for s in args)
        total = 0
        for zero in itertools.product([False, True], repeat=len(args)):
            live = [e for e, z in zip(CELL_EDGES, zero) if not z]
            if reaches_output(live):
                total += math.prod(zeros(s) if z else count(s) - zeros(s) for s, z in zip(args, zero))
        return total

    def zeros(symbol):
        return grammar[symbol].count(("zero",))

    return count("D2")


def test_the_count_is_the_published_grammars():
    published, distinct = productions(PUBLISHED), productions(PUBLISHED, distinct=True)
    plain = grammar_count(published, connected=False)
    assert SPACE.bind(connected=False).count == plain
    assert SPACE.count == grammar_count(published, connected=True)  # the default: no disconnected cell
    assert sci(SPACE.count) == "1.23746e+446" and sci(plain) == "1.23829e+446"
    assert round(math.log10(SPACE.count), 2) == round(math.log10(plain), 2) == 446.09  # the paper's ~10^446
    # the conv block counted once, as the comment in the space says
    assert sci(grammar_count(distinct, connected=False)) == "7.02937e+375"
    assert sci(grammar_count(distinct, connected=True)) == "6.99702e+375"
    assert math.prod(len(distinct[s]) for s in ("ACT", "CONV", "NORM")) + 3 == 30


def test_distinct_networks_are_distinct_derivations_but_for_a_few():
    """Flatten every sequence of cells, resBlocks and residuals into one tuple of atoms
    (a residual: ("add", main path, skip)); equal tuples are equal networks. What the
    space's comment says: 7.02937e375 distinct derivations, fewer networks by 4.46e-9."""

    def seqs(*parts):
        return {sum(combo, ()) for combo in itertools.product(*parts)}

    def residual(main, skip):
        return {(("add", m, s),) for m in main for s in skip}

    cell = {("c",)}
    block = seqs(cell, cell) | seqs(cell, cell, cell) | residual(seqs(cell, cell), cell)
    down = seqs(cell, {("r",)}) | seqs(cell, cell, {("r",)}) | residual(seqs(cell, {("r",)}), {("r",)})
    d1 = seqs(block, block, down) | seqs(block, block, block, down) | residual(seqs(block, block, down), down)
    d0 = seqs(block, block, cell) | seqs(block, block, block, cell) | residual(seqs(block, block, cell), cell)

    def has_resblock(atom):
        return atom == "r" or (isinstance(atom, tuple) and any(map(has_resblock, atom[1] + atom[2])))

    def cells(seq):
        return sum(1 if a == "c" else cells(a[1] + a[2]) if isinstance(a, tuple) else 0 for a in seq)

    # each d1 ends at its one resBlock-holding atom and no d0 holds one, so a network of
    # d1 d1 d0 (d0) splits after its second such atom, and one of d0 d1 d1 after its first
    assert all([has_resblock(a) for a in s] == [False] * (len(s) - 1) + [True] for s in d1)
    assert not any(has_resblock(a) for s in d0 for a in s)

    def weight(networks):  # each with its cells' 30**6 choices apiece
        return sum((30 ** 6) ** cells(s) for s in networks)

    networks = weight(d1) ** 2 * weight(d0 | seqs(d0, d0)) + weight(seqs(d0, d1)) * weight(d1)
    derivations = grammar_count(productions(PUBLISHED, distinct=True), connected=False)
    assert sci(derivations) == "7.02937e+375"
    assert networks < derivations and round((derivations - networks) / derivations, 11) == 4.46e-9


def nb201_text(ops: dict) -> str:
    """hNB201's derivation of NAS-Bench-201's network (the macro of the paper's
    macro_fixed_repetitive.cfg: 5 cells, resBlock, 5 cells, resBlock, 5 cells) with one
    cell everywhere; `ops` maps an edge (e01, ...) to its operation's text or `zero`."""
    flags = ", ".join(f"{e}={'zero' if op == 'zero' else 'op'}" for e, op in ops.items())

    def node(edges):
        live = [e for e in edges if ops[e] != "zero"]
        if len(edges) == 1:
            return f"(ops={ops[edges[0]]})" if live else "()"
        return "(" + ", ".join(f"ops{edges.index(e) + 1}={ops[e]}" for e in live) + ")"

    nodes = {"x1": node(["e01"]), "x2": node(["e02", "e12"]), "x3": node(["e03", "e13", "e23"])}
    cell = "(" + flags + "".join(f", {n}={t}" for n, t in nodes.items() if t != "()") + ")"
    block = f"linear2(cell1={cell}, cell2={cell})"
    d1 = f"linear3(block1={block}, block2={block}, down=linear2(cell={cell}))"
    d0 = f"linear3(block1={block}, block2={block}, cell={cell})"
    return f"(d2=d1_d1_d0(d1_1={d1}, d1_2={d1}, d0={d0}))"


RELU_CONV3_BN = "conv_block1(conv_block=(activation=relu, convolution=conv3x3, normalisation=batch))"
# NAS-Bench-201's best CIFAR-10 cell (spaces/nb201.nas, preset best_cifar10); nor_conv_3x3 is ReLU-conv-BN
BEST = {"e01": RELU_CONV3_BN, "e02": RELU_CONV3_BN, "e12": RELU_CONV3_BN,
        "e03": "id", "e13": RELU_CONV3_BN, "e23": RELU_CONV3_BN}


def test_the_nb201_macro_with_nb201s_best_cell_is_nb201s_network():
    ours = SPACE.graph(SPACE.parse(nb201_text(BEST)))
    nb201 = nasdsl.load(SPACES / "nb201.nas")
    theirs = nb201.graph(nb201.preset("best_cifar10"))
    assert ours.graph["params"] == theirs.graph["params"] and ours.graph["macs"] == theirs.graph["macs"]


def test_a_disconnected_cell_is_derived_only_without_the_rule():
    cut = {**BEST, "e03": "zero", "e13": "zero", "e23": "zero"}  # nothing reaches the cell's output
    with pytest.raises(nasdsl.NasError):
        SPACE.parse(nb201_text(cut))
    assert SPACE.bind(connected=False).parse(nb201_text(cut)) is not None
    fine = {**BEST, "e03": "zero", "e12": "zero"}  # 0-1-3 and 0-2-3 remain
    assert SPACE.parse(nb201_text(fine)) is not None


@pytest.mark.parametrize("seed", [0, 1])
def test_a_sample_compiles_and_runs_on_a_small_input(seed):
    space = SPACE.bind(C=4, num_classes=3, in_channels=1, resolution=8)
    d = space.sample(seed=seed)
    assert space.parse(d.text) == d
    module = space.compile(d).eval()
    with torch.no_grad():
        y = module(torch.randn(2, 1, 8, 8))
    assert tuple(y.shape) == (2, 3) and torch.isfinite(y).all()


def test_the_cli_counts_samples_and_compiles(capsys):
    assert main(["count", PATH, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == SPACE.count
    assert main(["sample", PATH, "-n", "2", "--seed", "3", "--json"]) == 0
    texts = json.loads(capsys.readouterr().out)["derivations"]
    assert len(texts) == 2 and all(SPACE.parse(t) for t in texts)
    assert main(["compile", PATH, "--derivation", texts[0], "--param", "C=4", "--param", "resolution=8",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["output_shape"] == [10] and data["params"] > 0


@pytest.mark.parametrize("param, shown", [("C=0", "C >= 1"), ("num_classes=0", "num_classes"),
                                          ("in_channels=0", "in_channels"), ("resolution=30", "resolution")])
def test_a_bad_parameter_is_a_clear_error(param, shown, capsys):
    assert main(["count", PATH, "--param", param]) == 1
    captured = capsys.readouterr()
    assert shown in captured.out + captured.err
