"""spaces/darts.nas: the DARTS cell space, its count and its published genotypes."""

import math
from pathlib import Path

import nasdsl

SPACE = nasdsl.load(Path(__file__).resolve().parent.parent / "spaces" / "darts.nas")


def test_count_is_the_product_the_definition_implies():
    # per node i (0..3): an unordered pair of the i + 2 earlier nodes, one of 7 operations per edge;
    # the normal and the reduction cell are chosen independently
    per_cell = 1
    for i in range(4):
        per_cell *= math.comb(i + 2, 2) * 7 * 7
    assert SPACE.count == per_cell ** 2 == 1_076_746_950_455_072_400


def test_the_count_does_not_depend_on_the_stacking():
    assert SPACE.bind(C=36, layers=20).count == SPACE.count


def test_published_genotypes():
    v2 = SPACE.preset("darts_v2")
    assert [a.label for a in v2["normal.cell.n5.pick"].items] == ["p0", "n2"]
    assert v2["normal.cell.n5.pick.n2.edge"].label == "dil_conv_3x3"
    # the CIFAR-10 evaluation network (36 channels, 20 cells, no auxiliary head): the paper's 3.3M
    graph = SPACE.bind(C=36, layers=20).graph(v2)
    assert graph.graph["params"] == 3_349_342
    assert graph.graph["outputs"] and graph.nodes[graph.graph["outputs"][0]]["shape"] == (10,)
