"""Functional identity: derivations that build one function share a class, and
different functions never do (checked against an independent expression form of
NAS-Bench-201's cells, and against VF2 alone)."""

import itertools
import json
import subprocess
import sys

import networkx as nx
import pytest
from support import SMALL, SPACES

import nasdsl
from nasdsl.compiler.identity import Functions, function_graph, function_key, same_function

EDGES = (("x1", "op", 0, 1), ("x2", "op1", 0, 2), ("x2", "op2", 1, 2),
         ("x3", "op1", 0, 3), ("x3", "op2", 1, 3), ("x3", "op3", 2, 3))


@pytest.fixture(scope="module")
def nb201():
    return nasdsl.load(SPACES / "nb201.nas", params=SMALL["nb201"])


def cell(space, *ops):
    """The NAS-Bench-201 derivation with these six edge operations, in EDGES order."""
    x = {}
    for (node, site, _, _), op in zip(EDGES, ops):
        x.setdefault(node, []).append(f"{site}={op}")
    return space.parse("(cell=(" + ", ".join(f"{n}=({', '.join(s)})" for n, s in x.items()) + "))")


def expression(ops):
    """An independent canonical form of a cell under the benchmark's convention (an op
    on zeros is zero): each node as the sorted tuple of its terms (a skip brings its
    source's terms, so sums are opened), `None` for zero."""
    nodes = {0: ("x",)}
    for target in (1, 2, 3):
        terms = []
        for (_, _, source, t), op in zip(EDGES, ops):
            if t == target and op != "none" and nodes[source] is not None:
                terms.extend(nodes[source] if op == "skip_connect" else [(op, nodes[source])])
        nodes[target] = tuple(sorted(terms, key=repr)) if terms else None
    return nodes[3]


def classes(space, derivations, constants=True):
    functions = Functions()
    return [functions.add(function_graph(space.graph(d), constants)) for d in derivations]


def test_a_none_edge_makes_what_only_it_reads_irrelevant(nb201):
    # x3 reads x1 and x2 through none: whatever x1 and x2 compute is dead code
    dead = [cell(nb201, a, b, c, "nor_conv_3x3", "none", "none")
            for a, b, c in itertools.product(("skip_connect", "nor_conv_1x1", "avg_pool_3x3"), repeat=3)]
    assert len(set(classes(nb201, dead))) == 1
    assert len({nb201.function_hash(d) for d in dead}) == 1


def test_sums_commute_and_skips_are_wires(nb201):
    # with x1 a skip, x2 = op1(x0) + op2(x0): swapping the two ops is the same cell
    a = cell(nb201, "skip_connect", "nor_conv_3x3", "nor_conv_1x1", "none", "none", "skip_connect")
    b = cell(nb201, "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "none", "none", "skip_connect")
    assert a != b and nb201.function_hash(a) == nb201.function_hash(b)
    assert same_function(nb201.canonical(a), nb201.canonical(b))


def test_bn_after_a_zero_edge_is_a_constant_unless_the_benchmark_convention_is_asked(nb201):
    # x1 = none, so x2's edge from x1 reads zeros; a pool keeps them zero, a conv-bn makes bn's shift
    pool = cell(nb201, "none", "nor_conv_3x3", "avg_pool_3x3", "none", "none", "skip_connect")
    conv = cell(nb201, "none", "nor_conv_3x3", "nor_conv_1x1", "none", "none", "skip_connect")
    none = cell(nb201, "none", "nor_conv_3x3", "none", "none", "none", "skip_connect")
    assert nb201.function_hash(pool) == nb201.function_hash(none) != nb201.function_hash(conv)
    labels = {label for _, label in nb201.canonical(conv).nodes(data="label")}
    assert any(label.startswith("constant") for label in labels)
    assert len({nb201.function_hash(d, constants=False) for d in (pool, conv, none)}) == 1


def test_different_operations_stay_apart(nb201):
    ops = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    ds = [cell(nb201, "nor_conv_3x3", "nor_conv_3x3", "nor_conv_1x1", op, "nor_conv_3x3", "skip_connect")
          for op in ops]
    assert len(set(classes(nb201, ds))) == 4


def test_weightless_cells_match_the_independent_expression_form_exactly(nb201):
    # with no weights anywhere in the cell, sharing cannot matter: the partitions are equal
    ops = ("none", "skip_connect", "avg_pool_3x3")
    archs = list(itertools.product(ops, repeat=6))
    ours = classes(nb201, [cell(nb201, *a) for a in archs], constants=False)
    theirs = [expression(a) for a in archs]
    assert len(set(ours)) == len(set(theirs))
    assert len(set(zip(ours, theirs))) == len(set(ours))


def test_with_weights_ours_refines_the_expression_form_only_where_weights_are_shared(nb201):
    """conv(x0) + conv(x0) is one expression, but two convs (two weight sets) and one
    conv read twice are different networks: every split is such a pair."""
    ops = ("none", "skip_connect", "nor_conv_1x1")
    archs = list(itertools.product(ops, repeat=6))
    ours = classes(nb201, [cell(nb201, *a) for a in archs], constants=False)
    theirs = [expression(a) for a in archs]
    by_ours: dict = {}
    for o, t in zip(ours, theirs):
        by_ours.setdefault(o, set()).add(t)
    assert all(len(t) == 1 for t in by_ours.values())  # never merges what the expressions keep apart
    split = {t for t in theirs if len({o for o, tt in zip(ours, theirs) if tt == t}) > 1}
    assert split and all(t is not None and len(t) > 1 for t in split)  # only sums can share a term


def test_the_canonical_key_agrees_with_vf2_alone(nb201):
    ds = nb201.samples(300, seed=1)
    graphs = [nb201.canonical(d) for d in ds]
    keyed = Functions()
    by_key = [keyed.add(g) for g in graphs]
    by_vf2, seen = [], []
    for g in graphs:
        match = next((i for i, h in enumerate(seen) if same_function(g, h)), None)
        if match is None:
            seen.append(g)
            match = len(seen) - 1
        by_vf2.append(match)
    assert by_key == by_vf2
    # and a key does not depend on the node ids
    g = graphs[0]
    renamed = nx.relabel_nodes(g, {n: f"n{i}" for i, n in enumerate(reversed(list(g)))})
    assert function_key(renamed) == function_key(g)


def test_every_shipped_space_reduces_a_sample(nb201):
    for name in SMALL:
        space = nasdsl.load(SPACES / f"{name}.nas", params=SMALL[name])
        for d in space.samples(3, seed=0):
            g = space.canonical(d)
            assert "output" in g and nx.is_directed_acyclic_graph(g)
            assert space.function_hash(d) == space.function_hash(d)


def test_count_distinct_on_the_command_line(tmp_path):
    path = tmp_path / "tiny.nas"
    path.write_text("space tiny\nnetwork = conv(out=4) op op gap flatten linear(2)\n"
                    "op = skip: identity | pool: avgpool(kernel=3) | conv: conv(out=4, kernel=1)\n")
    out = subprocess.run([sys.executable, "-m", "nasdsl", "count", str(path), "--distinct", "--json"],
                         capture_output=True, text=True, check=True).stdout
    # 9 derivations; skip-pool and pool-skip are one function, so are skip-conv and conv-skip
    assert json.loads(out) == {"space": "tiny", "count": 9, "distinct": 7}
    big = subprocess.run([sys.executable, "-m", "nasdsl", "count", str(SPACES / "tutorial.nas"), "--distinct"],
                         capture_output=True, text=True)
    assert big.returncode == 1 and "too many to enumerate" in big.stderr and "Traceback" not in big.stderr


@pytest.mark.slow
def test_nb201_distinct_counts():
    """Every NAS-Bench-201 cell (docs/spaces.md says why these differ from the benchmark's 6,466)."""
    space = nasdsl.load(SPACES / "nb201.nas", params=SMALL["nb201"])
    assert space.distinct() == 5453
    assert space.distinct(constants=False) == 5260
