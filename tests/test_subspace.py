"""Neighbourhoods (checked against brute force) and finite sub-spaces."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SMALL, SPACES

import nasdsl
from nasdsl.space.derivation import distance

# a space with every kind of choice: a repetition with insides, tied `where` values
# with a `require`, a pick, and alternatives with and without insides
MIX = """space mix(C: int = 4)

network = conv(out=C) block(C) * 0..2 as rest cell(C) tail(C) gap flatten linear(3)

block(c) = conv(out=c * e, kernel={1, 3}) bn conv(out=c, kernel=1)
    where e = {1, 2}

cell(c) = dag k {
    n1 = add(pick 2 of [k > edge(c), k > edge(c), k > edge(c)])
    out n1
}
edge(c) = skip: identity | conv: conv(out=c, kernel={1, 3}) | none: zero

tail(c) = plain: identity
        | wide: conv(out=c * a, kernel=1) relu conv(out=c * b, kernel=1) conv(out=c, kernel=1)
    where a = {1, 2, 3}, b = {1, 2, 3}
    require a + b <= 4
"""


@pytest.fixture(scope="module")
def mix():
    space = nasdsl.loads(MIX)
    return space, list(space.enumerate())


@pytest.fixture(scope="module")
def nb201():
    return nasdsl.load(SPACES / "nb201.nas", params=SMALL["nb201"])


@pytest.mark.parametrize("r", [0, 1, 2, 3])
def test_the_neighbourhood_is_every_derivation_within_r(mix, r):
    space, everything = mix
    for seed in range(6):
        d = space.sample(seed)
        near = space.neighbourhood(d, r)
        assert near[0] == d and len(set(near)) == len(near)
        assert set(near) == {x for x in everything if distance(d, x) <= r}
        assert [distance(d, x) for x in near] == sorted(distance(d, x) for x in near)


def test_nb201_neighbourhoods_have_the_textbook_sizes(nb201):
    d = nb201.sample(0)
    assert len(nb201.neighbourhood(d, 1)) == 1 + 6 * 4
    assert len(nb201.neighbourhood(d, 2)) == 1 + 6 * 4 + 15 * 16
    assert len(nb201.neighbourhood(d, 6)) == nb201.count


def test_a_functional_neighbourhood_keeps_one_derivation_per_function(nb201):
    d = nb201.parse("(cell=(x1=(op=skip_connect), x2=(op1=nor_conv_3x3, op2=nor_conv_1x1), "
                    "x3=(op1=none, op2=none, op3=skip_connect)))")
    near = nb201.neighbourhood(d, 1)
    distinct = nb201.neighbourhood(d, 1, distinct=True)
    assert distinct[0] == d and set(distinct) < set(near)
    assert len({nb201.function_hash(x) for x in distinct}) == len(distinct)
    assert {nb201.function_hash(x) for x in distinct} == {nb201.function_hash(x) for x in near}


def test_bad_radii_are_refused(nb201):
    for r in (-1, 1.5, True):
        with pytest.raises(ValueError, match="radius"):
            nb201.neighbourhood(nb201.sample(0), r)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(set(SMALL) - {"hnb201"})), seed=st.integers(0, 10**6))
def test_every_one_choice_mutation_within_distance_one_is_a_neighbour(name, seed):
    space = nasdsl.load(SPACES / f"{name}.nas", params=SMALL[name])
    d = space.sample(seed)
    near = set(space.neighbourhood(d, 1))
    assert all(distance(d, x) <= 1 for x in near)
    rng = random.Random(seed)
    for _ in range(20):
        m = space.mutate(d, rng=rng)
        if distance(d, m) <= 1:
            assert m in near


def test_a_subspace_counts_samples_and_enumerates_its_members(nb201):
    a, b = nb201.sample(0), nb201.sample(1)
    pocket = nb201.subspace(nb201.neighbourhood(a) + nb201.neighbourhood(b))
    both = nb201.subspace(nb201.neighbourhood(a)) | nb201.subspace(nb201.neighbourhood(b))
    assert pocket == both and pocket.count == len(set(nb201.neighbourhood(a)) | set(nb201.neighbourhood(b)))
    assert list(pocket) == sorted(pocket, key=nb201.rank)
    assert a in pocket and b in pocket and nb201.sample(7) not in pocket
    draws = pocket.samples(2000, seed=0)
    assert set(draws) == set(pocket)  # uniform over ~50 members: every one is drawn
    assert pocket.samples(5, seed=3) == pocket.samples(5, seed=3)
    assert (nb201.subspace(nb201.neighbourhood(a)) & nb201.subspace(nb201.neighbourhood(b))).count \
        == len(set(nb201.neighbourhood(a)) & set(nb201.neighbourhood(b)))


def test_a_subspace_refuses_a_derivation_of_another_space(nb201, mix):
    space, _ = mix
    with pytest.raises(nasdsl.DerivationError):
        nb201.subspace([space.sample(0)])


# ---- finite spaces: `only` statements ------------------------------------------------
def test_a_subspace_is_written_as_a_space_file_whose_derivations_are_its_members(nb201, tmp_path):
    a, b = nb201.sample(0), nb201.sample(1)
    pocket = nb201.subspace(nb201.neighbourhood(a, 1) + nb201.neighbourhood(b, 2) + [nb201.sample(5)])
    text = pocket.to_nas({a: 1, b: 2})
    assert text.count("\nonly ") == 3  # two neighbourhoods and the member they leave out
    path = tmp_path / "pocket.nas"
    path.write_text(text)
    small = nasdsl.load(path)
    assert small.finite and small.count == pocket.count
    assert [d.text for d in small.enumerate()] == [d.text for d in pocket]  # the original's texts and order
    assert all(small.parse(d.text) == d and d.hash == small.parse(d.text).hash for d in pocket)
    assert nb201.sample(9) not in small and small.sample(seed=0) in pocket
    rng = random.Random(0)
    for d in pocket.samples(30, seed=1):
        assert small.mutate(d, rng=rng) in pocket
        assert small.crossover(d, small.sample(rng=rng), rng=rng) in pocket
        assert small.decode(small.encode(d)) == d
    # a mutation moves to one of the nearest other members
    d = pocket.members[0]
    m = small.mutate(d, seed=3)
    assert distance(d, m) == min(distance(d, o) for o in pocket if o != d)
    assert small.neighbourhood(a, 1) == nb201.neighbourhood(a, 1)
    assert nasdsl.loads(pocket.to_nas()).count == pocket.count  # every member listed alone


def test_bad_only_statements_get_clear_errors(nb201, tmp_path):
    d = nb201.sample(0)
    grammar = nb201.subspace([d]).to_nas()
    bad = grammar.replace("op=", "opp=", 1)
    path = tmp_path / "bad.nas"
    path.write_text(bad)
    with pytest.raises(nasdsl.NasError) as err:
        nasdsl.load(path).count
    assert "`only`" in err.value.message and err.value.pos.line == bad.splitlines().index(
        next(line for line in bad.splitlines() if line.startswith("only"))) + 1
    with pytest.raises(nasdsl.NasError, match="library keeps no derivations"):
        nasdsl.loads("library l\nop = identity\nonly ()\n")
    small = nasdsl.loads(grammar)
    with pytest.raises(nasdsl.NasError, match="finite set"):
        small.restrict({"cell.x1.op": {"none"}})
    with pytest.raises(nasdsl.DerivationError, match="is not one of the 1 derivations"):
        small.parse(nb201.sample(1).text)


def test_a_search_runs_in_a_subspace_file(tmp_path, capsys):
    from nasdsl.runtime.store import Store

    from nasdsl.cli.commands import main

    tutorial = nasdsl.load(SPACES / "tutorial.nas")
    d = tutorial.sample(0)
    pocket = tutorial.subspace(tutorial.neighbourhood(d, 1))
    path = tmp_path / "pocket.nas"
    path.write_text(pocket.to_nas({d: 1}))
    assert main(["count", str(path), "--json"]) == 0
    assert f'"count": {pocket.count}' in capsys.readouterr().out
    store = tmp_path / "s.db"
    assert main(["search", str(path), "--dataset", "digits", "--epochs", "1", "--limit", "200",
                 "--algorithm", "evolution", "--trials", "3", "--population", "2", "--sample-size", "2",
                 "--store", str(store), "--json"]) == 0
    with Store.open(store) as s:
        texts = [t.derivation for t in s.trials()]
    assert len(texts) == 3 and all(tutorial.parse(t) in pocket for t in texts)


def test_a_one_shot_search_runs_in_a_subspace_file(nb201, tmp_path):
    """SPOS sizes its supernet from members that cover every value the members take,
    and samples, evolves and retrains only members."""
    from nasdsl.runtime.store import Store

    from nasdsl.cli.commands import main

    d = nb201.sample(0)
    path = tmp_path / "pocket.nas"
    path.write_text(nb201.subspace(nb201.neighbourhood(d, 1)).to_nas({d: 1}))
    small = nasdsl.load(path)
    cover = small.cover()
    assert all(c in small for c in cover)
    taken = {(p, v) for m in small for p, v in m.choices().items()}
    assert taken == {(p, v) for c in cover for p, v in c.choices().items()}
    store = tmp_path / "s.db"
    assert main(["search", str(path), "--algorithm", "spos", "--dataset", "digits", "--epochs", "1", "--limit", "200",
                 "--trials", "1", "--retrain-epochs", "1", "--store", str(store)]) == 0
    with Store.open(store) as s:
        assert all(nb201.parse(t.derivation) in small for t in s.trials())
