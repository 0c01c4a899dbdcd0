"""The space model on real spaces: counts, presets, sharing, picks, restriction,
mutation, crossover, weighted sampling, imports and the printer."""

import math
import random
import time
from collections import Counter
from pathlib import Path

import pytest

import nasdsl
from nasdsl.language import printer
from nasdsl.language.syntax import parse_module

SPACES = Path(__file__).resolve().parent.parent / "spaces"


@pytest.fixture(scope="module")
def nb201():
    return nasdsl.load(SPACES / "nb201.nas").check()


@pytest.fixture(scope="module")
def tutorial():
    return nasdsl.load(SPACES / "tutorial.nas").check()


def test_nb201_has_the_benchmarks_count(nb201):
    assert nb201.count == 5 ** 6 == 15625


def test_nb201_preset_is_the_published_best_cell(nb201):
    d = nb201.preset("best_cifar10")
    ops = [d[p].label for p in ("cell.x1.op", "cell.x2.op1", "cell.x2.op2", "cell.x3.op1", "cell.x3.op2",
                                "cell.x3.op3")]
    assert ops == ["nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_3x3"]


def test_nb201_enumeration_is_every_cell_once(nb201):
    texts = [d.text for d in nb201.enumerate()]
    assert len(texts) == len(set(texts)) == 15625
    assert [nb201.rank(nb201.parse(t)) for t in texts[:50]] == list(range(50))


def test_the_count_does_not_depend_on_parameters_that_only_size_the_network(nb201):
    # C sizes the channels; N repeats the one shared cell, so neither changes the count
    assert nb201.bind(C=8, N=2).count == 15625


def test_parameters_change_counts():
    text = "space s(n: int = 2)\nnetwork = (relu | hswish) * n\n"
    assert [nasdsl.loads(text, params={"n": n}).count for n in (0, 1, 2, 5)] == [1, 2, 4, 32]
    assert nasdsl.loads(text, params={"n": "3"}).count == 8  # strings convert, as from the CLI


def test_independent_rules_multiply_and_shared_rules_do_not():
    body = "network = cell cell cell\n{}cell = relu | hswish | silu\n"
    assert nasdsl.loads("space s\n" + body.format("")).count == 27
    assert nasdsl.loads("space s\n" + body.format("shared ")).count == 3


def test_a_shared_rule_is_one_derivation_with_many_argument_values():
    text = ("space s\n"
            "network = cell(8) cell(16) cell(32)\n"
            "shared cell(c) = conv(out=c, kernel={3, 5}) (relu | hswish)\n")
    space = nasdsl.loads(text)
    assert space.count == 4
    assert {d.text for d in space.enumerate()} == {
        "(cell=(conv=(kernel=3), alt=relu))", "(cell=(conv=(kernel=3), alt=hswish))",
        "(cell=(conv=(kernel=5), alt=relu))", "(cell=(conv=(kernel=5), alt=hswish))"}


DARTS_CELL = """space darts_cell(C: int = 16)
network = cell(C)
cell(c) = dag k2, k1 {
    n2 = add(pick 2 of [k2 > edge(c), k1 > edge(c)])
    n3 = add(pick 2 of [k2 > edge(c), k1 > edge(c), n2 > edge(c)])
    n4 = add(pick 2 of [k2 > edge(c), k1 > edge(c), n2 > edge(c), n3 > edge(c)])
    n5 = add(pick 2 of [k2 > edge(c), k1 > edge(c), n2 > edge(c), n3 > edge(c), n4 > edge(c)])
    out k1, concat(n2, n3, n4, n5)
}
edge(c) = sep_conv_3x3: sepconv(out=c, kernel=3) | sep_conv_5x5: sepconv(out=c, kernel=5)
        | dil_conv_3x3: sepconv(out=c, kernel=3, dilation=2) | dil_conv_5x5: sepconv(out=c, kernel=5, dilation=2)
        | max_pool_3x3: maxpool(kernel=3) | avg_pool_3x3: avgpool(kernel=3) | skip_connect: identity
"""


def test_darts_cell_count_is_the_product_of_pairs_and_operations():
    space = nasdsl.loads(DARTS_CELL)
    expected = math.prod(math.comb(i + 2, 2) * 7 ** 2 for i in range(4))
    assert space.count == expected
    d = space.sample(seed=3)
    assert space.unrank(space.rank(d)) == d
    assert all(len(d[f"cell.n{i}.pick"].items) == 2 for i in range(2, 6))


def _brute_count(text, keep):
    space = nasdsl.loads(text)
    return sum(1 for d in space.enumerate() if keep(d))


def test_restriction_counts_exactly_what_it_keeps(nb201):
    keep = {"cell.x2.op1": {"nor_conv_3x3", "skip_connect"}, "cell.x3.op3": {"none", "avg_pool_3x3", "nor_conv_1x1"}}
    restricted = nb201.restrict(keep)
    expected = sum(1 for d in nb201.enumerate()
                   if all(d[p].label in allowed for p, allowed in keep.items()))
    assert restricted.space.count == expected == 15625 * 2 * 3 // 25
    # every kept derivation reads the same text in both spaces
    for d in restricted.space.samples(50, seed=1):
        assert nb201.parse(d.text) == d


def test_restriction_of_a_space_with_picks_in_dags():
    """darts: an edge's operation inside a pick of a dag node (restrict used to fail
    with an internal error on every space with a pick)."""
    darts = nasdsl.load(SPACES / "darts.nas")
    restricted = darts.restrict({"normal.cell.n2.pick.p0.edge": {"sep_conv_3x3", "skip_connect"}})
    assert restricted.space.count * 7 == darts.count * 2  # 2 of the edge's 7 operations kept
    assert nasdsl.loads(restricted.text).count == restricted.space.count
    for d in restricted.space.samples(20, seed=0):
        assert darts.parse(d.text) == d and d["normal.cell.n2.pick.p0.edge"].label in {"sep_conv_3x3", "skip_connect"}


def test_restriction_through_rules_and_repetitions(tutorial):
    keep = {"stage1.rest": {0, 1}, "stage1.rest.*.mbconv.expand": {3}, "stage2.block.mbconv.dwconv.kernel": 5}
    restricted = tutorial.restrict(keep)

    def kept(d):
        rest = d["stage1.rest"]
        return (len(rest) in (0, 1) and all(x["mbconv"]["expand"] == 3 for x in rest.items)
                and d["stage2.block.mbconv.dwconv.kernel"] == 5)

    # stages are independent, so the exact count is a product of per-stage brute-force counts
    checks = {"stage1": lambda v: len(v["rest"]) in (0, 1) and all(x["mbconv"]["expand"] == 3 for x in v["rest"].items),
              "stage2": lambda v: v["block"]["mbconv"]["dwconv"]["kernel"] == 5,
              "stage3": lambda v: True}
    stages = {s.name: s.plan for s in tutorial.root.variants[0].sites}
    expected = math.prod(sum(1 for v in stages[name].iterate() if check(v)) for name, check in checks.items())
    assert restricted.space.count == expected
    for d in restricted.space.samples(100, seed=2):
        assert kept(tutorial.parse(d.text))
    # the restricted file stands on its own and round-trips through the printer
    again = nasdsl.loads(restricted.text)
    assert again.count == restricted.space.count


def test_restriction_of_a_small_space_matches_brute_force():
    text = ("space s(n: int = 2)\n"
            "network = block(8) * 1..3 as blocks head\n"
            "block(c) = conv(out=c * w, kernel={1, 3, 5}) (relu | hswish)\n"
            "    where w = {1, 2}\n"
            "head = gap (identity | dropout(0.5))\n")
    space = nasdsl.loads(text)
    keep = {"blocks": {1, 3}, "blocks.*.w": {2}, "blocks.*.conv.kernel": {3, 5}, "head.alt": {"identity"}}
    restricted = space.restrict(keep)

    def ok(d):
        blocks = d["blocks"].items
        return (len(blocks) in (1, 3) and all(b["w"] == 2 and b["conv"]["kernel"] in (3, 5) for b in blocks)
                and d["head.alt"].label == "identity")

    assert restricted.space.count == sum(1 for d in space.enumerate() if ok(d))


def test_restriction_plans_again_only_the_rules_it_edits():
    text = ("space s(n: int = 2)\n"
            "network = block(8) head\n"
            "block(c) = conv(out=c, kernel={1, 3, 5}) (relu | hswish)\n"
            "head = gap (identity | dropout(0.5))\n"
            "preset small = (block=(conv=(kernel=3), alt=relu), head=(alt=identity))\n"
            "preset other = (block=(conv=(kernel=5), alt=relu), head=(alt=identity))\n")
    space = nasdsl.loads(text)
    space.check()
    restricted = space.restrict({"block.conv.kernel": {1, 3}})
    assert restricted.space.count == 2 * 2 * 2
    assert restricted.space.planner.memo[("head", ())] is space.planner.memo[("head", ())]
    assert ("block_r1", (8,)) in restricted.space.planner.memo
    assert restricted.space.presets == ["small"]  # `other` is outside it


def test_bad_restrictions_are_clear_errors(nb201):
    with pytest.raises(nasdsl.NasError, match="not allowed here"):
        nb201.restrict({"cell.x2.op1": {"conv_9x9"}})
    with pytest.raises(nasdsl.NasError, match="no choice"):
        nb201.restrict({"cell.x9.op": {"none"}})


def test_mutation_changes_one_choice_and_stays_in_the_space(tutorial):
    rng = random.Random(0)
    for _ in range(100):
        d = tutorial.sample(rng=rng)
        child = tutorial.mutate(d, rng=rng, kind="choice")
        assert child in tutorial and child != d
        sub = tutorial.mutate(d, rng=rng, kind="subtree")
        assert sub in tutorial and sub != d


def test_choice_mutation_keeps_the_rest(nb201):
    d = nb201.preset("best_cifar10")
    for seed in range(30):
        assert nasdsl.distance(d, nb201.mutate(d, seed=seed)) == 1


def test_crossover_takes_a_subtree_from_the_other_parent(nb201):
    a, b = nb201.unrank(0), nb201.unrank(nb201.count - 1)
    child = nb201.crossover(a, b, seed=0)
    assert child in nb201 and child != a
    donated = {p: v for p, v in child.choices().items() if v != a.choices().get(p)}
    assert all(b.choices()[p] == v for p, v in donated.items())


def test_uniform_sampling_is_reproducible(tutorial):
    assert [d.text for d in tutorial.samples(5, seed=7)] == [d.text for d in tutorial.samples(5, seed=7)]
    assert tutorial.samples(5, seed=7) != tutorial.samples(5, seed=8)


def test_weighted_sampling_follows_the_weight():
    space = nasdsl.loads("space s\nnetwork = conv(out=8, kernel={1, 3, 5, 7})\n")
    weight = lambda d: d["conv.kernel"]  # noqa: E731
    counts = Counter(space.sample_weighted(weight, 7, seed=i)["conv.kernel"] for i in range(4000))
    total = sum(counts.values())
    for k in (1, 3, 5, 7):
        assert abs(counts[k] / total - k / 16) < 0.03


def test_per_choice_sampling_uses_the_written_weights():
    space = nasdsl.loads("space s\nnetwork = relu @ 9 | hswish\n")
    counts = Counter(space.sample(seed=i, method="per-choice").text for i in range(2000))
    assert 0.85 < counts["(alt=relu)"] / 2000 < 0.95 or 0.85 < counts.get("relu", 0) / 2000 < 0.95


def test_counting_a_space_of_10_to_the_400_is_fast():
    # 40 stages of 10 independent blocks with 10 options each: 10**400 derivations
    text = ("space big\n"
            "network = stage(1) * 40\n"
            "stage(i) = block * 10\n"
            "block = conv(out=8, kernel={1, 3, 5, 7, 9}) (relu | hswish)\n")
    start = time.process_time()  # CPU time: a guard against exponential work, not a speed target
    space = nasdsl.loads(text)
    assert space.count == 10 ** 400
    assert time.process_time() - start < 10.0
    d = space.sample(seed=0)
    assert space.unrank(space.rank(d)) == d


def test_imports_resolve_beside_the_file_and_in_spaces(tmp_path):
    (tmp_path / "blocks.nas").write_text("library blocks\nunit(c) = conv(out=c, kernel={3, 5}) bn relu\n")
    main = tmp_path / "main.nas"
    main.write_text('space m\nimport "blocks.nas"\nfrom "nb201.nas" import op\nnetwork = unit(8) op(8)\n')
    space = nasdsl.load(main)
    assert space.count == 2 * 5


def test_the_printer_round_trips_every_shipped_space():
    for path in sorted(SPACES.glob("*.nas")):
        module = parse_module(path.read_text(), path.name)
        rules = module.rules
        text = printer.module(module.header, rules)
        again = parse_module(text, "printed")
        assert again.rules == module.rules, path.name


def test_hash_is_stable_and_content_based(nb201):
    d = nb201.preset("best_cifar10")
    assert d.hash == nb201.parse(d.text).hash
    assert len(d.hash) == 64 and d.hash != nb201.unrank(0).hash
