"""LISSNAS: rounds replayed from the store, the shrunk space written as a .nas file,
resumable, and searchable again."""

import contextlib
import io
import json

import pytest
from nasdsl.runtime.store import Store
from support import SPACES

import nasdsl
from nasdsl.cli.commands import main

NB201 = ["--param", "C=4", "--param", "N=1"]
QUICK = ["--dataset", "digits", "--epochs", "1", "--limit", "300"]
ROUNDS = ["--samples", "6", "--seeds", "2", "--rounds", "3"]


def trials_of(store) -> list:
    with Store.open(store) as s:
        return s.trials()


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shrink")
    out, store = folder / "small.nas", folder / "s.db"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["shrink", str(SPACES / "nb201.nas"), *NB201, *QUICK, *ROUNDS, "--trials", "40",
                     "--workers", "2", "--store", str(store), "-o", str(out), "--json"])
    return code, out, store, json.loads(printed.getvalue())


def test_shrink_writes_a_space_file_of_the_chosen_round(shrunk):
    code, out, store, _ = shrunk
    assert code == 0
    space = nasdsl.load(SPACES / "nb201.nas", params={"C": 4, "N": 1})
    small = nasdsl.load(out)
    assert small.finite and 1 <= small.count < space.count
    assert all(space.parse(d.text) == d for d in small.enumerate())  # the original's derivations, same texts
    trials = trials_of(store)
    texts = [t.derivation for t in trials]
    assert len(texts) == len(set(texts))  # a derivation is trained once, however many rounds sample it
    rounds = [t.extra["round"] for t in trials]
    assert rounds == sorted(rounds) and rounds[0] == 0 and max(rounds) >= 1
    assert sum(r == 0 for r in rounds) == 6


def test_shrink_reports_every_round(shrunk):
    _, out, _, data = shrunk
    rows = data["rounds"]
    assert rows[0]["size"] == 15625 and rows[0]["shrink_index"] is None
    assert all(r["size"] < 15625 and r["shrink_index"] is not None for r in rows[1:])
    assert data["size"] == nasdsl.load(out).count == next(r["size"] for r in rows if r["round"] == data["chosen"])
    assert all(0 < r["mean_distance"] and 1 <= r["values_per_path"] <= 5 for r in rows)


def test_a_killed_shrink_resumes_to_the_same_rounds(shrunk, tmp_path):
    """A search cut short (here by its budget) and resumed proposes exactly what an
    uninterrupted one did: the rounds are replayed from the store."""
    _, out, store, _ = shrunk
    cut, again = tmp_path / "s.db", tmp_path / "small.nas"
    argv = ["shrink", str(SPACES / "nb201.nas"), *NB201, *QUICK, *ROUNDS, "--store", str(cut), "-o", str(again)]
    # round 0 and the start of round 1: no shrunk round yet, which it says (exit 1), keeping the trials
    assert main([*argv, "--trials", "8", "--workers", "2"]) == 1
    assert len(trials_of(cut)) == 8
    assert main(["shrink", "--store", str(cut), "--resume", "--trials", "40", "-o", str(again)]) == 0
    assert [t.derivation for t in trials_of(cut)] == [t.derivation for t in trials_of(store)]
    assert again.read_text() == out.read_text()


def test_the_shrunk_space_is_searched_like_any_space(shrunk):
    _, out, _, _ = shrunk
    store = out.parent / "again.db"
    assert main(["search", str(out), *QUICK, "--algorithm", "random", "--trials", "2", "--store", str(store)]) == 0
    small = nasdsl.load(out)
    assert all(small.parse(t.derivation) in small for t in trials_of(store))


def test_shrink_refuses_another_algorithm(tmp_path):
    assert main(["shrink", str(SPACES / "nb201.nas"), *QUICK, "--algorithm", "random", "--store",
                 str(tmp_path / "s.db"), "-o", str(tmp_path / "x.nas")]) == 2


def test_every_trial_trains_a_function_no_other_trial_does(shrunk):
    space = nasdsl.load(SPACES / "nb201.nas", params={"C": 4, "N": 1})
    trained = [space.parse(t.derivation) for t in trials_of(shrunk[2])]
    assert list(space.one_per_function(trained)) == trained


def test_round_0_draws_one_derivation_per_function_unless_told_otherwise():
    from nasdsl.runtime.algorithms.lissnas import Lissnas
    from nasdsl.runtime.propose import Proposer
    from nasdsl.runtime.search import implied

    space = nasdsl.load(SPACES / "nb201.nas", params={"C": 4, "N": 1})
    proposer = Proposer(space, (3, 8, 8))

    def functions(sample):
        return len({space.function_hash(d) for d in sample})

    plain = Lissnas(samples=40, distinct_sample=False)._sample(proposer, None, 0, 0)
    distinct = Lissnas(samples=40)._sample(proposer, None, 0, 0)
    assert len(plain) == len(distinct) == 40
    assert functions(plain) < 40 == functions(distinct)  # a uniform draw of 40 nb201 cells holds twins
    # a store written before the setting existed draws as it did then
    assert implied({"algorithm": "lissnas", "settings": {"samples": 40}})["settings"]["distinct_sample"] is False


def test_the_distinct_settings_are_turned_off_by_no_flags(tmp_path):
    store = tmp_path / "s.db"
    assert main(["shrink", str(SPACES / "nb201.nas"), *NB201, *QUICK, *ROUNDS, "--no-distinct", "--no-distinct-sample",
                 "--trials", "1", "--store", str(store), "-o", str(tmp_path / "x.nas")]) == 1  # no shrunk round yet
    with Store.open(store) as s:
        settings = s.config["settings"]
    assert settings["distinct"] is False and settings["distinct_sample"] is False
