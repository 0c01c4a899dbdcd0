"""MENAS on the runtime: parent selection with the rho share of large models,
inheritance from the parent's checkpoint, lottery tickets recorded as linked
trials that replace their models, failures recorded, and the CLI."""

import json
from pathlib import Path

import attrs
import pytest
from nasdsl.runtime.algorithms.menas import Menas
from nasdsl.runtime.search import Search, SearchConfig
from nasdsl.runtime.train import TrainConfig
from test_runtime import Inline

from nasdsl.cli.commands import main
from nasdsl.language.errors import NasError

ROOT = Path(__file__).resolve().parent.parent
MT = str(ROOT / "spaces" / "mobilenet3_mt.nas")
SMALL = {"width": 0.5, "max_depth": 2}


@attrs.frozen
class Member:
    id: int
    val_acc: float
    params: int
    macs: int = 0


def test_parents_are_the_most_accurate_plus_a_rho_share_of_the_largest():
    members = [Member(i, acc, params) for i, (acc, params) in
               enumerate([(0.9, 10), (0.8, 20), (0.7, 30), (0.6, 40), (0.5, 1000), (0.4, 900)] * 2)]
    pool = Menas(population=12, parents=2, rho=0.1).parent_pool(members)
    assert [m.id for m in pool] == [0, 6, 4, 10]  # top 2 by accuracy, then ceil(0.1 * 12) = 2 largest
    assert [m.id for m in Menas(population=12, parents=2, rho=0.0).parent_pool(members)] == [0, 6]


@pytest.mark.parametrize("options, message", [
    ({"rho": 1.5}, "--rho must be between 0 and 1"),
    ({"ratios": (0.2, 1.0)}, r"pruning ratios must lie in \(0, 1\)"),
    ({"ratios": (0.0,)}, r"pruning ratios must lie in \(0, 1\)"),
])
def test_bad_settings_are_clear_errors(options, message):
    with pytest.raises(NasError, match=message):
        Menas(**options)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A finished MENAS search on digits: 4 random ancestors, then 4 children."""
    config = SearchConfig(space=MT, dataset="digits", algorithm="menas", trials=8, params=SMALL,
                          train=TrainConfig(epochs=2), limit=600, test_top=1,
                          settings={"population": 4, "parents": 2, "rho": 0.25, "ratios": (0.3, 0.5),
                                    "finetune_epochs": 1, "tolerance": 1.0})  # every model gets a ticket
    search = Search.open(config, tmp_path_factory.mktemp("menas") / "s.db")
    search.run(Inline)
    return search


def test_children_inherit_from_their_parent_and_every_model_gets_a_ticket(search):
    trials = search.store.trials()
    models = [t for t in trials if "index" in t.extra]
    tickets = {t.extra["ticket_of"]: t for t in trials if t.extra.get("ticket_of")}
    assert len(models) == 8 and all(t.status == "done" for t in trials), [t.reason for t in trials]
    for model in models[:4]:
        assert model.extra["inherited_from"] is None and model.extra["inherited_fraction"] == 0.0
    for model in models[4:]:
        parent = search.store.trial(model.parent)
        assert model.extra["inherited_from"] == parent.id
        assert parent.extra.get("ticket_of") or parent.id not in tickets  # a ticket stands in for its model
        assert 0.0 < model.extra["inherited_fraction"] <= 1.0
    for model_id, ticket in tickets.items():
        model = search.store.trial(model_id)
        assert ticket.parent == model_id and ticket.params < model.params and ticket.macs < model.macs
        assert ticket.extra["ticket_ratio"] in (0.3, 0.5)
        assert search.space.validate(search.space.parse(ticket.derivation))  # a member of the space
        assert (search.store.path.parent / ticket.checkpoint).is_file()
        assert len(model.extra["ticket_candidates"]) >= 1
    module = search.load_module(next(iter(tickets.values())))  # the ticket's weights load into its derivation
    assert sum(p.numel() for p in module.parameters()) == next(iter(tickets.values())).params


def test_the_living_population_holds_tickets_not_the_models_they_replace(search):
    members = search.algorithm.members(search.store)
    assert len(members) == 4
    replaced = {t.extra["ticket_of"] for t in search.store.trials() if t.extra.get("ticket_of")}
    assert not {m.id for m in members} & replaced


def test_trials_json_rows_carry_inheritance_and_ticket_links(search, capsys):
    assert main(["trials", "--store", str(search.store.path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["trials"]
    assert all({"inherited_from", "inherited_fraction", "ticket_of"} <= set(r) for r in rows)
    assert any(r["ticket_of"] is not None for r in rows) and any(r["inherited_from"] is not None for r in rows)


def test_menas_from_the_cli_with_a_bad_ratio_is_exit_1(tmp_path, capsys):
    code = main(["search", MT, "--algorithm", "menas", "--dataset", "digits", "--store", str(tmp_path / "s.db"),
                 "--ticket-ratios", "0.2,1.5"])
    assert code == 1 and "pruning ratios must lie in (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_rho_zero_never_picks_a_large_model_outside_the_top(search):
    menas = attrs.evolve(search.algorithm, rho=0.0)
    members = menas.members(search.store)
    top = {m.id for m in sorted(members, key=lambda t: (-t.val_acc, t.id))[:menas.parents]}
    for index in range(8, 14):
        proposal = menas.propose(search.proposer, search.store, index, seed=5)
        assert proposal.parents[0] in top


def test_a_resumed_menas_search_reruns_the_trial_that_was_running_and_keeps_the_rest(search):
    before = {t.id: t for t in search.store.trials()}
    interrupted = search.propose(8)  # as if the search was killed while this trial trained
    search.store.start(interrupted.id)
    search.store.close()
    resumed = Search.open(attrs.evolve(search.config, trials=9), search.store.path, resume=True)
    resumed.run(Inline)
    after = {t.id: t for t in resumed.store.trials()}
    assert all((after[i].finished, after[i].val_acc) == (t.finished, t.val_acc) for i, t in before.items())
    assert after[interrupted.id].status == "done"
    assert sum("index" in t.extra for t in after.values()) == 9
    search.store = resumed.store


# last: it deletes the shared search's checkpoints
def test_a_missing_parent_checkpoint_fails_the_child_and_the_search_goes_on(search):
    for path in search.store.checkpoint_dir().glob("*.pt"):
        path.unlink()
    more = Search(attrs.evolve(search.config, trials=11), search.store, search.space, search.data, search.algorithm)
    more.run(Inline)
    failed = [t for t in more.store.trials() if t.status == "failed"]
    assert len(failed) == 2 and all("no checkpoint there" in t.reason for t in failed)
