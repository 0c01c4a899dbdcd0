"""Behaviour that users' stores and checkpoints depend on stays identical: derivation
text, hashes, node ids, params, MACs and state_dict keys for every shipped space's
seeded samples and presets (tests/golden/make_golden.py says what and how)."""

import json
from pathlib import Path

import pytest
from golden.make_golden import behaviour

GOLDEN = json.loads((Path(__file__).parent / "golden" / "behaviour.json").read_text())


@pytest.fixture(scope="module")
def now():
    return behaviour()


@pytest.mark.parametrize("space", sorted(GOLDEN))
def test_space_behaviour_is_unchanged(now, space):
    assert space in now, f"shipped space {space} is gone"
    want, got = GOLDEN[space], now[space]
    assert got["count"] == want["count"]
    assert sorted(got["presets"]) == sorted(want["presets"])
    for name, preset in want["presets"].items():
        assert got["presets"][name] == preset, f"preset {name}"
    for i, (g, w) in enumerate(zip(got["samples"], want["samples"], strict=True)):
        assert g == w, f"sample seed={i}"


def test_every_shipped_space_is_pinned(now):
    assert sorted(now) == sorted(GOLDEN)
