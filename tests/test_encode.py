"""Token sequences of derivations (nasdsl.space.encoding): fixed length per space,
exact round trips, the allowed tokens after every prefix, and errors or repairs
for sequences outside the space, on the shipped spaces and generated ones."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import SMALL, SPACES

import nasdsl
from nasdsl.language.errors import DerivationError, NasError
from nasdsl.space.derivation import Derivation, Node
from nasdsl.space.encoding import PAD
from nasdsl.space.strategies import derivations, space_files

# (file, params): every shipped space at its defaults, and the large ones also small
CASES = [(p.stem, {}) for p in sorted(SPACES.glob("*.nas"))] + [
    (name, SMALL[name]) for name in ("darts", "hnb201", "mobilenet3_mt", "mobilenetv3")]
IDS = [f"{name}-small" if params else name for name, params in CASES]
_LOADED: dict = {}


def shipped(name, params):
    key = (name, tuple(sorted(params.items())))
    if key not in _LOADED:
        _LOADED[key] = nasdsl.load(SPACES / f"{name}.nas", params=params)
    return _LOADED[key]


SHIPPED = pytest.mark.parametrize("name, params", CASES, ids=IDS)
FEW = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


def members(space):
    """From the strategy (shrinking toward first choices) or sampled uniformly."""
    return derivations(space) | st.integers(0, 2**32 - 1).map(lambda seed: space.sample(seed=seed))


def walk(enc, rng):
    """A decoder run that takes a random allowed token at every position."""
    decoder = enc.decoder()
    while not decoder.done:
        decoder.push(rng.choice(sorted(decoder.allowed)))
    return tuple(decoder.tokens), decoder.derivation


def check_round_trip(space, d):
    enc = space.encoding()
    seq = space.encode(d)
    assert len(seq) == enc.length
    assert all(0 <= t < len(enc.vocabulary) for t in seq)
    back = space.decode(seq)
    assert back == d and back.hash == d.hash
    decoder = enc.decoder()  # every actual token is among those allowed after its prefix
    for t in seq:
        assert t in decoder.allowed
        decoder.push(t)
    assert decoder.done and decoder.allowed == frozenset()
    return seq


# ---- shipped spaces -----------------------------------------------------------------
@SHIPPED
@FEW
@given(data=st.data())
def test_shipped_round_trip(name, params, data):
    space = shipped(name, params)
    check_round_trip(space, data.draw(members(space)))


@SHIPPED
def test_shipped_walks_and_presets(name, params):
    space = shipped(name, params)
    enc = space.encoding()
    rng = random.Random(0)
    for _ in range(3):
        seq, d = walk(enc, rng)
        assert space.validate(d) is d
        assert space.encode(d) == seq
    for preset in space.presets if not params else ():  # presets are written for the defaults
        if not space.preset_params(preset):
            check_round_trip(space, space.preset(preset))
    assert enc.allowed(()) == enc.decoder().allowed


@SHIPPED
def test_shipped_corruption_is_named_or_repaired(name, params):
    space = shipped(name, params)
    enc = space.encoding()
    rng = random.Random(1)
    for _ in range(4):
        seq = space.encode(space.sample(rng=rng))
        i = rng.randrange(enc.length)
        allowed = enc.allowed(seq[:i])
        outside = [t for t in range(len(enc.vocabulary)) if t not in allowed]
        if not outside:
            continue
        bad = seq[:i] + (rng.choice(outside),) + seq[i + 1:]
        with pytest.raises(DerivationError, match=f"position {i} ") as err:
            space.decode(bad)
        assert err.value.hint.startswith("allowed: ")
        assert str(min(allowed)) in err.value.hint
        fixed = space.decode(bad, repair=True)
        assert space.validate(fixed) is fixed
        assert space.encode(fixed)[:i] == seq[:i]


def test_lengths_and_vocabularies():
    """What docs/spaces.md reports; nb201 is one token per edge, darts 2 cells x 14."""
    found = {n: (shipped(n, {}).encoding().length, len(shipped(n, {}).encoding().vocabulary))
             for n in ("nb201", "darts", "tutorial", "resnet", "regnet", "superresnet", "mobilenetv3",
                       "hnb201", "mobilenet3_mt")}
    assert found == {"nb201": (6, 21), "darts": (28, 13), "tutorial": (30, 10), "resnet": (40, 31),
                     "regnet": (5, 65), "superresnet": (92, 11), "mobilenetv3": (102, 130),
                     "hnb201": (2187, 74), "mobilenet3_mt": (135, 408)}


def test_nb201_positions_and_meanings():
    space = shipped("nb201", {})
    enc = space.encoding()
    assert enc.paths == ("cell.x1.op", "cell.x2.op1", "cell.x2.op2", "cell.x3.op1", "cell.x3.op2", "cell.x3.op3")
    d = space.preset("best_cifar10")
    assert enc.describe(space.encode(d))[1] == "cell.x2.op1: op1=nor_conv_3x3"
    assert enc.vocabulary[PAD] == "<pad>"
    assert enc.allowed(()) == {enc.ids[("alt", "op", "str", label)] for label in
                               ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")}


def test_darts_pick_positions_follow_each_other():
    """A pick is laid out as (candidate, its edge) pairs; the second candidate comes
    after the first in the written order, so the first cannot be the last one."""
    space = shipped("darts", {})
    enc = space.encoding()
    assert enc.paths[:6] == ("normal.cell.n2.pick.0.edge", "normal.cell.n2.pick.1.edge",
                             "normal.cell.n3.pick.0", "normal.cell.n3.pick.0.edge",
                             "normal.cell.n3.pick.1", "normal.cell.n3.pick.1.edge")
    first = enc.allowed(space.encode(space.sample(seed=0))[:2])
    assert {enc.vocabulary[t] for t in first} == {"pick[]=p0", "pick[]=p1"}


# ---- variable depth, padding, errors ----------------------------------------------------
VARIABLE = nasdsl.loads("""space variable
network = block * 0..2 as blocks tail
block = conv(out=8, kernel={3, 5}) | skip: identity
tail = relu | sep: conv(out=8 * w, kernel={1, 3})
    where w = {1, 2}
""")


def test_padding_for_repetitions_and_alternatives():
    enc = VARIABLE.encoding()
    assert enc.paths == ("blocks", "blocks.0", "blocks.0.conv.kernel", "blocks.1", "blocks.1.conv.kernel",
                         "tail.w", "tail.alt", "tail.alt.conv.kernel")
    d = VARIABLE.parse("(blocks=[skip], tail=(w=2, alt=sep(conv=(kernel=1))))")
    assert enc.describe(VARIABLE.encode(d)) == [
        "blocks: len(blocks)=1", "blocks.0: blocks=skip", "blocks.0.conv.kernel: <pad>", "blocks.1: <pad>",
        "blocks.1.conv.kernel: <pad>", "tail.w: w=2", "tail.alt: alt=sep", "tail.alt.conv.kernel: kernel=1"]
    for seed in range(30):
        d = VARIABLE.sample(seed=seed)
        seq = check_round_trip(VARIABLE, d)
        n = len(d["blocks"])
        unused = [i for i, p in enumerate(enc.paths) if p.startswith("blocks.") and int(p.split(".")[1]) >= n]
        assert unused or n == 2
        assert all(seq[i] == PAD for i in unused)


def test_a_token_where_padding_belongs_is_refused():
    enc = VARIABLE.encoding()
    zero = enc.ids[("len", "blocks", "int", 0)]
    decoder = enc.decoder()
    decoder.push(zero)
    assert decoder.allowed == {PAD}
    seq = list(VARIABLE.encode(next(d for d in map(VARIABLE.sample, range(100)) if len(d["blocks"]) == 0)))
    seq[1] = next(t for t in range(1, len(enc.vocabulary)) if t != zero)
    with pytest.raises(DerivationError, match="position 1 .*not allowed") as err:
        VARIABLE.decode(seq)
    assert "0 (<pad>)" in err.value.hint
    assert VARIABLE.encode(VARIABLE.decode(seq, repair=True))[1] == PAD


def test_bad_sequences():
    enc = VARIABLE.encoding()
    with pytest.raises(DerivationError, match=f"expected {enc.length} tokens, got 2"):
        VARIABLE.decode([1, 2])
    with pytest.raises(DerivationError, match="position 0: `-1` is no token"):
        VARIABLE.decode([-1] * enc.length)
    with pytest.raises(DerivationError, match="is no token"):
        enc.allowed([len(enc.vocabulary)])
    with pytest.raises(DerivationError):
        VARIABLE.encode(Derivation(Node()))


def test_repair_takes_the_nearest_number():
    space = nasdsl.loads("space near\nnetwork = conv(out=8, kernel={1, 3, 5, 7}) tail\n"
                         "tail = relu | bn: conv(out=8, kernel={1, 3})\n")
    enc = space.encoding()
    seven = enc.ids[("value", "kernel", "int", 7)]
    d = space.decode([seven, enc.ids[("alt", "tail", "str", "bn")], seven], repair=True)
    assert d["tail.conv.kernel"] == 3 and d["conv.kernel"] == 7


def test_a_space_without_choices_has_no_encoding():
    space = nasdsl.loads("space fixed\nnetwork = conv(out=8, kernel={3}) relu * 2\n")
    with pytest.raises(NasError, match="single derivation: there is no choice to encode"):
        space.encoding()


def test_a_range_too_large_for_a_vocabulary():
    space = nasdsl.loads("space big\nnetwork = relu linear(0..2000000)\n")
    with pytest.raises(NasError, match="choice `out` has 2000001 values: too many to encode") as err:
        space.encoding()
    assert err.value.pos is not None


# ---- generated spaces -------------------------------------------------------------------
def all_walks(enc, prefix=()):
    """Every complete sequence of allowed tokens (a small space's whole trie)."""
    allowed = enc.allowed(prefix)
    if not allowed:
        yield prefix
        return
    for t in sorted(allowed):
        yield from all_walks(enc, prefix + (t,))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=space_files(max_count=200), data=st.data())
def test_generated_spaces(text, data):
    """Allowed walks and derivations correspond one to one: every walk decodes to a
    member, distinct walks to distinct members, and every member is reached."""
    space = nasdsl.loads(text)
    if space.count == 1:
        with pytest.raises(NasError, match="single derivation"):
            space.encoding()
        return
    enc = space.encoding()
    check_round_trip(space, data.draw(derivations(space)))
    walks = list(all_walks(enc))
    decoded = {space.decode(seq) for seq in walks}
    assert len(walks) == len(decoded) == space.count
    assert decoded == set(space.enumerate())


def test_integer_types_of_array_libraries_are_tokens():
    import numpy

    space = shipped("nb201", {})
    seq = space.encode(space.preset("best_cifar10"))
    assert space.decode(numpy.array(seq)) == space.preset("best_cifar10")
    with pytest.raises(DerivationError, match="position 0: `True` is no token"):
        space.decode((True,) + seq[1:])


# ---- the command --------------------------------------------------------------------
def test_cli_encode_and_decode(capsys):
    import json

    from nasdsl.cli.commands import main

    nb201 = str(SPACES / "nb201.nas")
    assert main(["encode", nb201, "--preset", "best_cifar10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    space = shipped("nb201", {})
    best = space.preset("best_cifar10")
    assert data["length"] == 6 and data["vocabulary_size"] == 21
    assert data["sequences"] == [{"derivation": best.text, "tokens": list(space.encode(best)),
                                  "meanings": [space.encoding().vocabulary[t] for t in space.encode(best)]}]
    tokens = ",".join(map(str, space.encode(best)))
    assert main(["encode", nb201, "--tokens", tokens]) == 0
    out = capsys.readouterr().out
    assert best.text in out and "    1      9  cell.x2.op1: op1=nor_conv_3x3" in out
    bad = ",".join(map(str, (space.encode(best)[0], 1) + space.encode(best)[2:]))
    assert main(["encode", nb201, "--tokens", bad]) == 1
    err = capsys.readouterr().err
    assert "error: position 1 (`cell.x2.op1`): token 1 (op=none) is not allowed here" in err
    assert "hint: allowed: 6 (op1=none)" in err and "Traceback" not in err
    assert main(["encode", nb201, "--tokens", bad, "--repair"]) == 0
    assert "    1      6  cell.x2.op1: op1=none" in capsys.readouterr().out  # the nearest: the same value
    assert main(["encode", nb201, "--sample", "3", "--vocabulary", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["sequences"]) == 3 and data["positions"][0] == "cell.x1.op" and data["vocabulary"][0] == "<pad>"
    assert main(["encode", nb201, "--tokens", "1,x"]) == 2
