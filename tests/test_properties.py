"""Property tests of the language core: text round-trips, rank/unrank, exact counts
against independent brute force, uniform sampling, error robustness, the edit
distance, mutation and crossover, and the `derivations` strategy itself."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from scipy import stats

import nasdsl
from nasdsl.space.derivation import to_text
from nasdsl.space.strategies import derivations, simplest, space_files

SPACES = Path(__file__).resolve().parent.parent / "spaces"
NB201 = nasdsl.load(SPACES / "nb201.nas", params={"C": 8})
TUTORIAL = nasdsl.load(SPACES / "tutorial.nas")
SHIPPED = pytest.mark.parametrize("space", [NB201, TUTORIAL], ids=["nb201", "tutorial"])

# Every kind of choice, and options the constraints leave empty: rank 0 is not
# simply "index 0 everywhere" (w=1 is excluded, `never` has no derivation).
SHRINK = nasdsl.loads("""space shrink
network = lead body * {2, 0, 1} as blocks tail
lead = conv(out=8 * w, kernel=3)
    where w = {1, 2, 3}
    require w >= 2
body = conv(out=8, kernel={3, 5}) | skip: identity
tail = add(pick 2 of [never, identity, relu, bn])
never = relu
    require false
""")

# 90 derivations = 3 (head, a constraint removes one of 4) x 10 (0 or 2 copies of
# a 3-way choice) x 3 (a pick of candidates of sizes 1 and 2). Per-choice sampling
# gives 0 copies probability 1/2 and `identity` 1/2, where uniform gives 1/10, 1/3.
UNIFORM = nasdsl.loads("""space uniform
network = head rest tail
head = conv(out=8 * w, kernel=k)
    where w = {1, 2}, k = {1, 3}
    require w * k != 3
rest = (relu | conv(out=8, kernel={1, 3})) * {0, 2}
tail = add(pick 1 of [identity, conv(out=8, kernel={1, 3})])
""")

# the conftest's profile sets the number of examples; fuzzing gets more of them
FUZZ = settings(max_examples=4 * settings.default.max_examples,
                suppress_health_check=[HealthCheck.too_slow])
# generated files are small; the bound keeps full enumerations cheap
small_files = space_files(max_count=300, counted=True)


def members(space):
    """Derivations of `space`: from the strategy (small, shrinking) or sampled uniformly."""
    return derivations(space) | st.integers(0, 2**32 - 1).map(lambda seed: space.sample(seed=seed))


def round_trips(space, d):
    assert d in space
    again = space.parse(d.text)
    assert again == d
    assert again.text == d.text
    assert again.hash == d.hash


# ---- text and rank ---------------------------------------------------------------
@SHIPPED
@given(data=st.data())
def test_shipped_text_and_rank_round_trip(space, data):
    d = data.draw(derivations(space))
    round_trips(space, d)
    assert space.unrank(space.rank(d)) == d
    r = data.draw(st.integers(0, space.count - 1))
    assert space.rank(space.unrank(r)) == r


@given(file=space_files(), data=st.data())
def test_generated_text_and_rank_round_trip(file, data):
    space = nasdsl.loads(file)
    d = data.draw(derivations(space))
    round_trips(space, d)
    assert nasdsl.loads(f"{file}\npreset chosen = {d.text}\n").check().preset("chosen") == d
    assert space.unrank(space.rank(d)) == d
    r = data.draw(st.integers(0, space.count - 1))
    assert space.rank(space.unrank(r)) == r


@given(file=small_files)
def test_generated_count_matches_brute_force(file):
    """The count equals the generator's own count (independent of the planner), and
    enumeration is a duplicate-free list of valid derivations in rank order."""
    space = nasdsl.loads(file.text)
    expected = file.count()
    assert space.count == expected
    everything = list(space.enumerate())
    assert len(everything) == expected
    assert len({d.text for d in everything}) == expected
    assert len({d.hash for d in everything}) == expected
    assert [space.rank(d) for d in everything] == list(range(expected))
    for d in everything:
        assert space.parse(d.text) == d


@given(file=space_files(counted=True), n=st.integers(0, 5))
def test_generated_count_for_other_parameters(file, n):
    """The same, for other values of the space's parameter (no enumeration)."""
    space = nasdsl.loads(file.text).bind(n=n)
    if file.count(n) == 0:
        with pytest.raises(nasdsl.NasError, match="is empty"):
            space.check()
    else:
        assert space.count == file.count(n)


# ---- sampling --------------------------------------------------------------------
def goodness_of_fit(space, method: str, n: int = 9000, seed: int = 20240601) -> float:
    """Chi-square p-value of n samples against the uniform distribution."""
    seen = collections.Counter(space.rank(d) for d in space.samples(n, seed=seed, method=method))
    observed = [seen[r] for r in range(space.count)]
    return stats.chisquare(observed).pvalue


def test_uniform_sampling_is_uniform():
    # With a fixed seed this is deterministic; for a random seed a correct sampler
    # fails this with probability 1e-4 (the threshold is the false-alarm rate).
    assert UNIFORM.count == 90
    assert goodness_of_fit(UNIFORM, "uniform") > 1e-4


def test_per_choice_sampling_is_not_uniform():
    """The test above can fail: per-choice sampling on the same space is far off."""
    assert goodness_of_fit(UNIFORM, "per-choice") < 1e-12


# ---- errors, never crashes ---------------------------------------------------------
EDITS = st.sampled_from(list("(){}[]|*@.,=:>+-/%#\"' \n\t0123456789_éx") + [
    "where ", "require ", "pick ", " of ", "dag ", "shared ", " as ", "if ", " then ", " else ",
    "..", " step ", "add(", "concat(", "relu", "conv(", "space ", "import ", "preset ", "network", "\x00"])


@st.composite
def mutated(draw, texts):
    """A text with a few random insertions, deletions and swaps."""
    chars = list(draw(texts))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(chars)))
        edit = draw(st.sampled_from(("insert", "delete", "swap")))
        if edit == "insert":
            chars.insert(i, draw(EDITS))
        elif chars and edit == "delete":
            del chars[min(i, len(chars) - 1)]
        elif len(chars) > 1:
            j = min(i, len(chars) - 2)
            chars[j], chars[j + 1] = chars[j + 1], chars[j]
    return "".join(chars)


def load_or_error(text: str):
    """A checked Space, or None after a NasError; any other exception fails the test."""
    try:
        return nasdsl.loads(text, name="fuzz.nas").check()
    except nasdsl.NasError as err:
        assert "error:" in str(err)
        return None


def parse_or_error(space, text: str):
    """A derivation that round-trips, or None after a NasError."""
    try:
        d = space.parse(text)
    except nasdsl.NasError as err:
        assert "error:" in str(err)
        return None
    round_trips(space, d)
    return d


SHIPPED_TEXTS = st.sampled_from([(SPACES / "nb201.nas").read_text(), (SPACES / "tutorial.nas").read_text()])


@FUZZ
@given(text=st.text() | mutated(SHIPPED_TEXTS) | mutated(space_files()))
def test_space_parser_raises_only_nas_errors(text):
    space = load_or_error(text)
    if space is not None and not space.is_library:
        parse_or_error(space, space.sample(seed=0).text)


@FUZZ
@given(data=st.data())
def test_derivation_parser_raises_only_nas_errors(data):
    space = data.draw(st.sampled_from([NB201, TUTORIAL, SHRINK]))
    text = data.draw(st.text() | mutated(derivations(space).map(lambda d: d.text)))
    parse_or_error(space, text)


# ---- distance, mutation, crossover ------------------------------------------------------
@given(data=st.data())
def test_distance_is_a_metric(data):
    space = data.draw(st.sampled_from([NB201, TUTORIAL, SHRINK, UNIFORM]))
    a, b, c = (data.draw(members(space)) for _ in range(3))
    d = nasdsl.distance
    assert d(a, a) == 0
    assert (d(a, b) == 0) == (a == b)
    assert d(a, b) == d(b, a)
    assert d(a, c) <= d(a, b) + d(b, c)


@pytest.mark.parametrize("kind", ["choice", "subtree"])
@given(data=st.data())
def test_mutation_stays_in_the_space_and_changes_the_derivation(kind, data):
    space = data.draw(st.sampled_from([NB201, TUTORIAL, SHRINK, UNIFORM]))
    d = data.draw(members(space))
    child = space.mutate(d, seed=data.draw(st.integers(0, 2**32 - 1)), kind=kind)
    assert child in space
    assert child != d


@given(file=space_files(), data=st.data())
def test_operators_on_generated_spaces(file, data):
    space = nasdsl.loads(file)
    a, b = data.draw(derivations(space)), data.draw(derivations(space))
    seed = data.draw(st.integers(0, 2**32 - 1))
    for kind in ("choice", "subtree"):
        child = space.mutate(a, seed=seed, kind=kind)
        assert child in space
        assert (child != a) == (space.count > 1)
    assert space.crossover(a, b, seed=seed) in space


@given(data=st.data())
def test_crossover_stays_in_the_space(data):
    space = data.draw(st.sampled_from([NB201, TUTORIAL, SHRINK, UNIFORM]))
    a, b = data.draw(members(space)), data.draw(members(space))
    assert space.crossover(a, b, seed=data.draw(st.integers(0, 2**32 - 1))) in space


# ---- the strategy itself ---------------------------------------------------------------
@pytest.mark.parametrize("space", [NB201, TUTORIAL, SHRINK, UNIFORM], ids=["nb201", "tutorial", "shrink", "uniform"])
def test_derivations_shrink_to_the_simplest(space):
    assert find(derivations(space), lambda d: True, settings=settings(database=None)) == simplest(space)


def test_simplest_is_rank_zero_unless_counts_are_written_out_of_order():
    for space in (NB201, TUTORIAL, UNIFORM):
        assert simplest(space) == space.unrank(0)
    # SHRINK writes `* {2, 0, 1}`: rank 0 has two copies, the simplest none
    assert SHRINK.unrank(0).text == ("(lead=(w=2), blocks=[conv(conv=(kernel=3)), conv(conv=(kernel=3))], "
                                     "tail=(pick=[identity, relu]))")
    assert simplest(SHRINK).text == "(lead=(w=2), blocks=[], tail=(pick=[identity, relu]))"


def test_derivations_shrink_each_choice_toward_its_first_live_option():
    d = find(derivations(SHRINK), lambda d: len(d["blocks"]) == 2 and "bn" in d["tail.pick"].labels(),
             settings=settings(database=None))
    assert d.text.startswith("(lead=(w=2), blocks=[")  # w=1 is excluded
    assert d.text.endswith("], tail=(pick=[identity, bn]))")  # `never` has no derivation
    # a copy is the first alternative at its first value, or `skip`: fewer choices in all
    assert {to_text(copy) for copy in d["blocks"].items} <= {"conv(conv=(kernel=3))", "skip"}
