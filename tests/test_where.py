"""`where` choices: made only where evaluation reaches them, counted as a product of
independent groups, mutated one at a time, and never hidden inside an argument."""

import itertools
import random

import pytest

import nasdsl
from nasdsl.space import plan as planning

STAGE = """space t
network = {network}
stage(e0) = conv(out=8 * e, kernel=k) where e = if e0 == 1 then 1 else {{4, 6}}, k = {{1, 3, 5}}
"""


def roundtrip(space):
    """Every derivation reads back, ranks to its place and builds a graph."""
    for r, d in enumerate(space.enumerate()):
        assert space.parse(d.text) == d
        assert space.rank(d) == r and space.unrank(r) == d
        space.graph(d)


def test_a_choice_in_an_if_branch_not_taken_is_no_choice():
    one = nasdsl.loads(STAGE.format(network="stage(1)"))
    assert one.count == 3  # only the kernel: e is 1 without choosing
    assert {d.text for d in one.enumerate()} == {"(stage=(k=1))", "(stage=(k=3))", "(stage=(k=5))"}
    with pytest.raises(nasdsl.DerivationError, match="not a choice"):
        one.parse("(stage=(e=4, k=1))")
    two = nasdsl.loads(STAGE.format(network="stage(1) stage(2)"))
    assert two.count == 3 * 6
    roundtrip(two)


def test_a_branch_chosen_by_another_choice():
    space = nasdsl.loads("space t\nnetwork = conv(out=8 * e)\n    where c = {1, 2}, e = if c == 1 then 1 else {4, 6}\n")
    assert [d.text for d in space.enumerate()] == ["(c=1)", "(c=2, e=4)", "(c=2, e=6)"]
    roundtrip(space)
    graphs = {d.text: space.graph(d) for d in space.enumerate()}
    assert graphs["(c=2, e=6)"].graph["params"] == 3 * 9 * 48  # conv 3x3 without bias, in 3, out 48
    counts = {text: 0 for text in graphs}
    for d in space.samples(3000, seed=0):
        counts[d.text] += 1
    assert all(800 < n < 1200 for n in counts.values()), counts  # uniform over the three


def independent(n: int) -> str:
    body = " ".join(f"conv(out=w{i}) as c{i}" for i in range(n))
    return f"space t\nnetwork = {body}\n    where " + ", ".join(f"w{i} = {{8, 16, 24}}" for i in range(n)) + "\n"


def test_independent_choices_count_as_a_product():
    space = nasdsl.loads(independent(20))  # 3**20 joint settings: once refused, beyond 100,000
    assert space.count == 3**20
    (variant,) = space.root.variants  # twenty groups side by side, not 3**20 variants
    assert [s.spliced for s in variant.sites] == [True] * 20
    d = space.sample(1)
    assert space.parse(d.text) == d and space.unrank(space.rank(d)) == d
    assert [name for name, _ in d.root.items] == [f"w{i}" for i in range(20)]  # as written


def test_a_mutation_changes_one_where_choice():
    space = nasdsl.loads(independent(10))
    rng = random.Random(0)
    for _ in range(50):
        d = space.sample(rng=rng)
        m = space.mutate(d, rng=rng)
        changed = [a for a, b in zip(d.root.items, m.root.items) if a != b]
        assert len(changed) == 1, (d.text, m.text)


def test_dependent_choices_mutate_one_at_a_time_where_they_can():
    """Choices tied by a `require` stay one group; a mutation changes one of them
    when a setting one value away exists."""
    space = nasdsl.loads("space t\nnetwork = conv(out=a) conv(out=b) conv(out=c)\n"
                         "    where a = {8, 16, 24}, b = {8, 16, 24}, c = {8, 16, 24}\n    require a + b + c <= 48\n")
    assert space.count == sum(1 for v in itertools.product((8, 16, 24), repeat=3) if sum(v) <= 48)
    assert len(space.root.variants) == space.count  # one group: every setting a variant
    rng = random.Random(1)
    for _ in range(50):
        d = space.sample(rng=rng)
        m = space.mutate(d, rng=rng)
        assert sum(a != b for a, b in zip(d.root.items, m.root.items)) == 1, (d.text, m.text)


def test_groups_keep_the_written_order_among_the_body_sites():
    space = nasdsl.loads("space t\nnetwork = conv(out=a, kernel={1, 3}) (relu | hswish) conv(out=b) pool\n"
                         "    where a = {8, 16}, b = {8, 16}\n"
                         "pool = gap | gmp\n".replace("gmp", "maxpool(kernel=3)"))
    assert space.count == 2 * 2 * 2 * 2 * 2
    assert isinstance(space.root.variants[0].sites[0].plan, planning.PScope)
    for d in space.enumerate():
        assert [name for name, _ in d.root.items] == ["a", "b", "conv1", "alt", "pool"]
    roundtrip(space)


@pytest.mark.parametrize("text", ["network = conv(out=16 * {1, 2})", "network = conv(out=8 // {0, 1, 2})",
                                  "network = s(16 * {1, 2})\ns(c) = conv(out=c)",
                                  "network = s(if true then {1, 2} else 3)\ns(c) = conv(out=c)"])
def test_a_choice_inside_an_argument_expression_is_refused(text):
    with pytest.raises(nasdsl.NasError, match="cannot contain a choice") as err:
        nasdsl.loads(f"space t\n{text}\n")
    assert "bind it with `where NAME" in str(err.value)


def test_the_same_expression_bound_with_where_is_checked_when_loading():
    with pytest.raises(nasdsl.NasError, match="zero|division"):
        nasdsl.loads("space t\nnetwork = conv(out=m)\n    where m = 8 // {0, 1, 2}\n").check()
    space = nasdsl.loads("space t\nnetwork = conv(out=16 * m)\n    where m = {1, 2}\n")
    assert [d.text for d in space.enumerate()] == ["(m=1)", "(m=2)"]
    assert space.graph(space.parse("(m=2)")).graph["params"] == 3 * 9 * 32
