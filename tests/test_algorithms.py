"""The algorithm registry: every module of runtime/algorithms/ registers itself, and an
algorithm registered from anywhere gets its `nasdsl search` flags from its settings."""

import json
from pathlib import Path

import attrs
import pytest
from nasdsl.runtime.algorithms import Algorithm, algorithms, create, register, setting
from nasdsl.runtime.propose import Proposal, trial_rng
from nasdsl.runtime.store import Store

import nasdsl
from nasdsl.cli.commands import main
from nasdsl.language.errors import NasError

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = str(ROOT / "spaces" / "tutorial.nas")
QUICK = ["--dataset", "digits", "--epochs", "1", "--limit", "200", "--test-top", "1"]


@register("first-then-mutate")
@attrs.frozen
class FirstThenMutate(Algorithm):
    """The space's `first`-ranked derivation, then mutations of the last finished trial."""

    first: int = setting(1, "which derivation comes first, in rank order")

    def propose(self, proposer, store, index: int, seed: int) -> Proposal:
        finished = store.finished_in_order()
        if not finished:
            return Proposal(proposer.space.unrank(self.first - 1), extra={"from": "rank"})
        parent = finished[-1]
        child = proposer.mutate(proposer.space.parse(parent.derivation), trial_rng(seed, index))
        return Proposal(child, (parent.id,), {"from": "mutation"})


def test_the_registry_lists_every_algorithm_module():
    assert {"random", "evolution", "menas"} <= set(algorithms())
    assert algorithms()["menas"].name == "menas"


def test_an_unknown_algorithm_or_setting_is_a_clear_error():
    with pytest.raises(NasError, match="did you mean `evolution`"):
        create("evolutoin")
    with pytest.raises(NasError, match="algorithm `random` has no setting `population`"):
        create("random", {"population": 4})


def test_a_registered_algorithm_gets_a_flag_and_runs_from_the_cli(tmp_path, capsys):
    assert main(["search", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--algorithm first-then-mutate:" in help_text and "which derivation comes first, in rank order (1)" in help_text
    store = tmp_path / "s.db"
    code = main(["search", TUTORIAL, *QUICK, "--algorithm", "first-then-mutate", "--first", "3", "--trials", "2",
                 "--store", str(store), "--json"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["finished"] == 2
    with Store.open(store) as s:
        first, second = s.trials()
        assert s.config["algorithm"] == "first-then-mutate" and s.config["settings"] == {"first": 3}
    assert first.extra["from"] == "rank" and second.extra["from"] == "mutation" and second.parents == (first.id,)
    space = nasdsl.load(TUTORIAL, {"resolution": 8})  # as the search bound it to digits
    assert space.rank(space.parse(first.derivation)) == 2


def test_a_flag_the_chosen_algorithm_does_not_take_is_a_usage_error(tmp_path, capsys):
    code = main(["search", TUTORIAL, *QUICK, "--algorithm", "random", "--population", "4",
                 "--store", str(tmp_path / "s.db")])
    assert code == 2
    assert "--population is not a setting of --algorithm random (it has none)" in capsys.readouterr().err
    assert main(["search", TUTORIAL, *QUICK, "--algorithm", "evolution", "--rho", "0.2",
                 "--store", str(tmp_path / "s.db")]) == 2
    assert "--rho is not a setting of --algorithm evolution (its settings: --population, --sample-size)" in \
        capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_resuming_with_another_setting_names_it(tmp_path, capsys):
    store = tmp_path / "s.db"
    argv = ["search", TUTORIAL, *QUICK, "--trials", "1", "--algorithm", "first-then-mutate", "--store", str(store)]
    assert main(argv + ["--json"]) == 0
    capsys.readouterr()
    assert main(argv + ["--first", "2", "--resume"]) == 1
    assert "different search (settings.first: store has 1, now 2)" in capsys.readouterr().err


def _opened(tmp_path, space, algorithm, trials, settings, params=None):
    from nasdsl.runtime.search import Search, SearchConfig

    config = SearchConfig(space=space, dataset="digits", algorithm=algorithm, trials=trials, settings=settings,
                          params=params or {}, limit=200)
    return Search.open(config, tmp_path / f"{Path(space).stem}-{algorithm}-{trials}.db")


def test_a_budget_inside_the_first_generation_is_said_to_be_random_search(tmp_path):
    small = _opened(tmp_path, TUTORIAL, "evolution", 6, {})
    assert any("this search is random search" in n and "--population 16" in n for n in small.algorithm.notes(small))
    enough = _opened(tmp_path, TUTORIAL, "evolution", 20, {"population": 4, "sample_size": 2})
    assert enough.algorithm.notes(enough) == []


def test_menas_says_when_a_space_has_no_width_it_can_slim(tmp_path):
    tutorial = _opened(tmp_path, TUTORIAL, "menas", 8, {"population": 4})
    assert any("no lottery tickets will be cut" in n for n in tutorial.algorithm.notes(tutorial))
    mt = _opened(tmp_path, str(ROOT / "spaces" / "mobilenet3_mt.nas"), "menas", 8, {"population": 4},
                 {"width": 0.25, "max_depth": 2})
    assert mt.algorithm.notes(mt) == []
