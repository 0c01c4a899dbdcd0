"""The search runtime: trainer, trial store, algorithms, executors, and the
`search` / `trials` / `report` commands, on scikit-learn's digits (8x8, fast)."""

import contextlib
import ctypes
import errno
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from nasdsl.runtime import data as datasets
from nasdsl.runtime.algorithms.evolution import RegularizedEvolution
from nasdsl.runtime.algorithms.random import RandomSearch
from nasdsl.runtime.propose import Proposer
from nasdsl.runtime.search import Search, SearchConfig, bind_to_data, pareto_front
from nasdsl.runtime.store import Store, StoreError, refused_error
from nasdsl.runtime.train import TrainConfig, TrialFailed, train
from nasdsl.runtime.trial import run_trial

import nasdsl
from nasdsl.cli.commands import main
from nasdsl.language.errors import NasError

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = str(ROOT / "spaces" / "tutorial.nas")
QUICK = ["--dataset", "digits", "--epochs", "1", "--limit", "400"]


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def run(*argv):
    """(exit code, stdout JSON or text) of `nasdsl ARGV`."""
    return main([str(a) for a in argv])


def trials_of(store_path) -> list[dict]:
    with Store.open(store_path) as store:
        return [t.to_json() for t in store.trials()]


class Inline:
    """An executor that runs each trial in this process: the search loop's logic
    without process start-up cost (the process pool has its own tests)."""

    def submit(self, fn, *args):
        import concurrent.futures

        future = concurrent.futures.Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait=True, cancel_futures=False):
        pass


# ---- trainer ---------------------------------------------------------------------
def test_training_is_seeded_and_reproducible_and_learns(digits):
    space = nasdsl.load(TUTORIAL, {"in_channels": 1})
    d = space.preset("smallest")
    config = TrainConfig(epochs=2)
    results = [train(space.compile(d, digits.input_shape, seed=0), digits, config, seed=3) for _ in range(2)]
    assert results[0].val_acc == results[1].val_acc
    assert all(torch.equal(a, b) for a, b in zip(results[0].state_dict.values(), results[1].state_dict.values()))
    assert results[0].val_acc > 0.5  # 10 classes: chance is 0.1
    assert [e.epoch for e in results[0].epochs] == [1, 2]


def test_short_trials_train_batch_norm_statistics_at_momentum_0_1(digits):
    # MobileNetV3's own momentum is 0.01 (torchvision's); a short trial overrides it
    space = nasdsl.load(str(ROOT / "spaces" / "mobilenet3_mt.nas"),
                        {"width": 0.5, "max_depth": 2, "resolution": 8, "in_channels": 1, "num_classes": 10})
    module = space.compile(space.sample(seed=0), digits.input_shape)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.01 for m in norms)
    train(module, datasets.load("digits", limit=64), TrainConfig(epochs=1))
    assert all(m.momentum == 0.1 for m in norms)


def test_early_stopping_stops_after_patience_epochs_without_improvement(digits):
    space = nasdsl.load(TUTORIAL)
    seen = []
    # lr 0 never improves on the first epoch's accuracy: patience 1 stops after epoch 2
    result = train(space.compile(space.preset("smallest"), digits.input_shape), digits,
                   TrainConfig(epochs=5, lr=0.0, patience=1), on_epoch=seen.append)
    assert len(seen) == 2 and result.best_epoch == 1


def test_a_diverging_loss_fails_the_trial_with_its_reason(digits):
    space = nasdsl.load(TUTORIAL)
    with pytest.raises(TrialFailed, match="loss became (nan|inf)"):
        train(space.compile(space.preset("smallest"), digits.input_shape), digits,
              TrainConfig(epochs=1, lr=1e12, weight_decay=0.0, label_smoothing=0.0))


# ---- store ---------------------------------------------------------------------------
def test_store_round_trip_and_one_transaction_per_change(tmp_path):
    path = tmp_path / "s.db"
    with Store.create(path, {"space": "a", "trials": 3}) as store:
        first = store.add("(x=1)", "h1", seed=7, extra={"generation": 0})
        second = store.add("(x=2)", "h2", seed=8, parents=[first])
        store.start(first)
        store.finish(first, val_acc=0.5, params=10, macs=20, train_time=1.0, epochs=2, checkpoint="c/1.pt",
                     extra={"history": [1]})
        store.start(second)
        store.fail(second, "loss became nan")
    # another connection sees every change at once: each was committed
    rows = sqlite3.connect(path).execute("SELECT id, status, reason FROM trials ORDER BY id").fetchall()
    assert rows == [(1, "done", None), (2, "failed", "loss became nan")]
    with Store.resume(path, {"space": "a", "trials": 5}, ignore=("trials",)) as store:
        a, b = store.trials()
        assert (a.val_acc, a.params, a.macs, a.epochs, a.seed, a.extra) == (
            0.5, 10, 20, 2, 7, {"generation": 0, "history": [1]})
        assert b.parents == (1,) and b.parent == 1 and b.status == "failed"
        assert [t.id for t in store.finished_in_order()] == [1]
        store.set_state("k", {"v": [1, 2]})
        assert store.get_state("k") == {"v": [1, 2]} and store.get_state("missing", 0) == 0


def test_a_store_from_another_search_is_refused_naming_the_difference(tmp_path):
    path = tmp_path / "s.db"
    Store.create(path, {"space": "a", "epochs": 1}).close()
    with pytest.raises(StoreError, match=r"different search \(epochs: store has 1, now 2\)"):
        Store.resume(path, {"space": "a", "epochs": 2})
    with pytest.raises(StoreError, match="already exists"):
        Store.create(path, {})


def test_corrupt_missing_and_unwritable_stores_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a nasdsl trial store, or corrupt"):
        Store.open(bad)
    with pytest.raises(StoreError, match="no store here"):
        Store.open(tmp_path / "missing.db")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store.create(blocker / "s.db", {})


def test_a_store_has_one_writer_and_a_dead_one_releases_it(tmp_path):
    path = tmp_path / "s.db"
    with Store.create(path, {"space": "a"}):
        with pytest.raises(StoreError, match=rf"store in use by process {os.getpid()}"):
            Store.resume(path, {"space": "a"})
        with Store.open(path) as reader:  # reading needs no lock
            assert reader.trials() == []
    # a writer killed with SIGKILL holds nothing: its store resumes at once
    code = f"from nasdsl.runtime.store import Store\nStore.resume({str(path)!r}, {{'space': 'a'}})\n" \
           "import os, signal\nprint('locked', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "locked" and out.returncode == -9
    Store.resume(path, {"space": "a"}).close()


def test_a_store_file_appears_whole(tmp_path):
    """The schema is written beside the store and renamed: a store killed while being
    created leaves no file that neither a new run nor --resume accepts."""
    path = tmp_path / "s.db"
    Store.create(path, {"space": "a"}).close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".s.db")) == []
    with Store.resume(path, {"space": "a"}) as store:
        assert store.trials() == []


def test_a_store_in_a_read_only_folder_can_be_listed(tmp_path, monkeypatch):
    """Reading writes nothing: where the folder is not writable (here: said to be not,
    as tests run as root) the store is read as it stands, with no -wal or -shm file."""
    with Store.create(tmp_path / "s.db", {"space": "a"}) as store:
        store.add("(x=1)", "h", seed=0)
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr("nasdsl.runtime.store.os.access", lambda path, mode: False)
    with Store.open(tmp_path / "s.db") as store:
        assert [t.derivation for t in store.trials()] == ["(x=1)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def limit_file_size(nbytes: int) -> None:
    """From now on a write past `nbytes` in any file of this process (and its children)
    fails with EFBIG, as a full disk fails it, instead of killing it with SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """`limit_file_size` for the block only."""
    limit, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.getsignal(signal.SIGXFSZ)
    limit_file_size(nbytes)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)


FULL_HINTS = ("the trials finished so far are kept in the store: free disk space, then run the same command "
              "with --resume", "free disk space (or choose a --store on another disk), then run the search again")
READ_ONLY_HINTS = ("make the store and its folder writable, then run the same command with --resume",
                   "choose a --store path in a folder you can write to")


@pytest.mark.parametrize("err, message, hints", [
    (OSError(errno.ENOSPC, "No space left on device", "s.db.lock"),
     "the disk is full (No space left on device: s.db.lock)", FULL_HINTS),
    (OSError(errno.EFBIG, "File too large"), "the disk is full (File too large)", FULL_HINTS),
    (OSError(errno.EROFS, "Read-only file system", "s.db"), "it is read-only (Read-only file system: s.db)",
     READ_ONLY_HINTS),
    (sqlite3.OperationalError("database or disk is full"), "the disk is full (database or disk is full)", FULL_HINTS),
    (sqlite3.OperationalError("disk I/O error"), "the disk failed a write; is it full? (disk I/O error)", FULL_HINTS),
    (sqlite3.OperationalError("attempt to write a readonly database"),
     "it is read-only (attempt to write a readonly database)", READ_ONLY_HINTS),
])
def test_a_write_the_disk_refuses_says_why_and_what_to_do(err, message, hints):
    """A store being written (trials to keep) and one being created (none yet): the
    same reason, each its own hint."""
    written, created = refused_error(Path("s.db"), err), refused_error(Path("s.db"), err, new=True)
    assert written.message == f"s.db: cannot write the store: {message}" and written.hint.startswith(hints[0])
    assert created.message == f"s.db: cannot create the store: {message}" and created.hint == hints[1]
    # what is not the disk's doing is not dressed up as it: a damaged store, a bug
    assert refused_error(Path("s.db"), sqlite3.DatabaseError("database disk image is malformed")) is None
    assert refused_error(Path("s.db"), sqlite3.OperationalError("no such column: x")) is None
    assert refused_error(Path("s.db"), OSError(errno.ENOENT, "No such file or directory")) is None


def test_a_store_write_sqlite_refuses_keeps_the_trials_before_it(tmp_path):
    """SQLite's own "database or disk is full" (its page limit) and "readonly database"
    (a query-only connection) are StoreErrors naming the store; the trials committed
    before are all there."""
    path = tmp_path / "s.db"
    with Store.create(path, {"space": "a"}) as store:
        first = store.add("(x=1)", "h", seed=0)
        store._db.execute(f"PRAGMA max_page_count = {store._db.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(StoreError, match=rf"{path}: cannot write the store: the disk is full "
                                             r"\(database or disk is full\)") as full:
            store.add("(x=2)" + "y" * 20000, "h", seed=0)
        assert "trials finished so far are kept" in full.value.hint
        store._db.execute("PRAGMA query_only = 1")
        with pytest.raises(StoreError, match="cannot write the store: it is read-only"):
            store.start(first)
    assert [(t.id, t.status) for t in Store.open(path).trials()] == [(first, "queued")]


def test_a_store_that_cannot_be_created_for_a_full_disk_leaves_nothing_half_made(tmp_path):
    with file_size_limit(8192), pytest.raises(StoreError, match=r"cannot create the store: the disk") as err:
        Store.create(tmp_path / "s.db", {"space": "a"})
    assert "free disk space" in err.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db.lock"]
    Store.create(tmp_path / "s.db", {"space": "a"}).close()  # with room again, it is made


def test_pareto_front_keeps_only_undominated_trials(tmp_path):
    with Store.create(tmp_path / "s.db", {}) as store:
        for acc, macs in [(0.5, 10), (0.6, 20), (0.55, 30), (0.7, 40), (0.4, 5)]:
            i = store.add(f"({acc})", str(acc), 0)
            store.finish(i, val_acc=acc, params=macs, macs=macs, train_time=0, epochs=1, checkpoint=None)
        front = pareto_front(store.trials("done"), "macs")
    assert [(t.val_acc, t.macs) for t in front] == [(0.4, 5), (0.5, 10), (0.6, 20), (0.7, 40)]


# ---- algorithms -----------------------------------------------------------------------
def test_constraints_are_respected_when_proposing(digits):
    space = nasdsl.load(TUTORIAL)
    costs = [Proposer(space, digits.input_shape).cost(space.sample(seed=s)).macs for s in range(20)]
    limit = sorted(costs)[5]
    proposer = Proposer(space, digits.input_shape, max_macs=limit)
    import random

    rng = random.Random(0)
    samples = [proposer.sample(rng) for _ in range(10)]
    assert all(proposer.cost(d).macs <= limit for d in samples)
    assert all(proposer.cost(proposer.mutate(d, rng)).macs <= limit for d in samples)
    with pytest.raises(NasError, match="no derivation within --max-macs 1 .* the smallest seen has"):
        Proposer(space, digits.input_shape, max_macs=1).sample(rng)


def test_aging_evolution_mutates_a_tournament_winner_of_the_youngest_population(tmp_path, digits):
    space = nasdsl.load(TUTORIAL)
    proposer = Proposer(space, digits.input_shape)
    evolution = RegularizedEvolution(population=3, sample_size=3)
    with Store.create(tmp_path / "s.db", {}) as store:
        for index, acc in enumerate([0.9, 0.5, 0.6, 0.7]):
            proposal = (evolution if index < 3 else RandomSearch()).propose(proposer, store, index, seed=1)
            assert proposal.parents == ()  # the first `population` proposals are random
            i = store.add(proposal.derivation.text, proposal.derivation.hash, 0)
            store.finish(i, val_acc=acc, params=1, macs=1, train_time=0, epochs=1, checkpoint=None)
        child = evolution.propose(proposer, store, 4, seed=1)
        # trial 1 (0.9) has aged out; sample_size = population, so the winner is the best living one
        assert child.parents == (4,)
        assert space.distance(child.derivation, space.parse(store.trial(4).derivation)) >= 1
        again = evolution.propose(proposer, store, 4, seed=1)
        assert again.derivation == child.derivation  # proposals depend only on store, index and seed


# ---- the search loop ---------------------------------------------------------------------
def quick_config(**changes):
    base = dict(space=TUTORIAL, dataset="digits", algorithm="evolution", trials=4,
                settings={"population": 2, "sample_size": 2},
                train=TrainConfig(epochs=1), test_top=2, limit=400)
    return SearchConfig(**{**base, **changes})


def test_search_records_every_trial_with_lineage_metrics_and_test_accuracy(tmp_path):
    search = Search.open(quick_config(), tmp_path / "s.db")
    search.run(Inline)
    best = search.test_best()
    trials = search.store.trials()
    assert [t.status for t in trials] == ["done"] * 4
    assert all(t.parents == () for t in trials[:2]) and all(len(t.parents) == 1 for t in trials[2:])
    for t in trials:
        assert (t.params, t.macs) == (t.extra["proposed_params"], t.extra["proposed_macs"])
        assert (search.store.path.parent / t.checkpoint).is_file() and t.epochs == 1 and t.train_time > 0
    assert 2 <= len(best) and all(t.test_acc is not None for t in best)
    untested = [t for t in trials if t.id not in {b.id for b in best}]
    assert all(t.test_acc is None for t in untested)  # the test set is touched only for the best
    module = search.load_module(best[0])  # a checkpoint reproduces its validation accuracy
    from nasdsl.runtime.train import accuracy

    assert accuracy(module, search.data.val) == pytest.approx(best[0].val_acc)


def test_a_trial_that_fails_is_recorded_with_its_reason_and_the_search_goes_on(tmp_path):
    search = Search.open(quick_config(trials=2, train=TrainConfig(epochs=1, lr=1e12, weight_decay=0.0,
                                                                    label_smoothing=0.0)), tmp_path / "s.db")
    search.run(Inline)
    assert [(t.status, "loss became" in t.reason) for t in search.store.trials()] == [("failed", True)] * 2


def test_run_trial_turns_a_bad_derivation_into_a_failed_outcome(tmp_path):
    search = Search.open(quick_config(trials=1), tmp_path / "s.db")
    trial = search.propose(0)
    job = search.job(trial)
    import attrs

    outcome = run_trial(attrs.evolve(job, derivation="(stage1=oops)"))
    assert not outcome.ok and "error" in outcome.reason


# ---- the CLI -----------------------------------------------------------------------------------
def test_search_trials_and_report_from_the_cli_with_the_process_pool(tmp_path, capsys):
    store = tmp_path / "s.db"
    code = run("search", TUTORIAL, *QUICK, "--trials", 3, "--store", store, "--workers", 2,
               "--algorithm", "random", "--json")
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["finished"] == 3 and out["best"][0]["test_acc"] is not None
    assert run("trials", "--store", store, "--json") == 0
    rows = json.loads(capsys.readouterr().out)["trials"]
    assert len(rows) == 3
    for row in rows:
        assert {"id", "derivation", "hash", "status", "parent", "val_acc", "test_acc", "params", "macs"} <= set(row)
        assert nasdsl.load(TUTORIAL).parse(row["derivation"]).hash == row["hash"]
    assert run("report", "--store", store, "--out", tmp_path / "report") == 0
    for name in ("pareto.png", "progress.png", "summary.md"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert "Pareto front" in (tmp_path / "report" / "summary.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "fashion"], "unknown data set `fashion`"),
    (["--dataset", "cifar10:/no/such/folder"], "/no/such/folder"),
    (["--dataset", "digits", "--trials", "0"], "--trials must be at least 1"),
    (["--dataset", "digits", "--algorithm", "evolutoin"], "did you mean `evolution`"),
    (["--dataset", "digits", "--param", "num_classes=5"], "does not fit data set `digits`"),
    (["--dataset", "digits", "--max-macs", "10"], "no derivation within --max-macs 10"),
])
def test_bad_search_input_is_a_clear_error_and_writes_no_store(tmp_path, capsys, argv, message):
    store = tmp_path / "s.db"
    assert run("search", TUTORIAL, "--store", store, *argv) == 1
    assert message in capsys.readouterr().err
    assert not store.exists() or message.startswith("no derivation")


def test_a_checkpoint_that_cannot_be_written_stops_the_search_and_resume_reruns_it(tmp_path, monkeypatch):
    """A full disk: torch reports it as a RuntimeError; no partial file is left, the
    search stops with a clear error (instead of failing every later trial), and the
    trial is run again on --resume."""
    real_save = torch.save
    calls = []

    def full_disk(state, file):
        calls.append(file)
        if len(calls) == 2:
            file.write(b"half")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        real_save(state, file)

    monkeypatch.setattr(torch, "save", full_disk)
    search = Search.open(quick_config(), tmp_path / "s.db")
    with pytest.raises(NasError, match="the search stopped at trial 2: cannot write checkpoint"):
        search.run(Inline)
    assert [t.status for t in search.store.trials()] == ["done", "running"]
    assert not list(search.store.checkpoint_dir().glob("*.partial"))
    search.store.close()
    resumed = Search.open(quick_config(), tmp_path / "s.db", resume=True)
    resumed.run(Inline)
    assert [t.status for t in resumed.store.trials()] == ["done"] * 4


def test_a_lost_checkpoint_leaves_that_trial_untested_and_tests_the_rest(tmp_path):
    search = Search.open(quick_config(test_top=4), tmp_path / "s.db")
    search.run(Inline)
    first = search.store.trials("done")[0]
    (search.store.path.parent / first.checkpoint).unlink()
    best = search.test_best()
    assert [t.test_acc is None for t in best].count(True) == 1 and len(best) >= 3
    assert len(search.untested) == 1 and f"trial {first.id}'s checkpoint" in search.untested[0]


def test_a_param_equal_to_what_the_data_set_sets_is_accepted(digits):
    """`--param num_classes=10` is the text "10": it agrees with digits' 10 classes."""
    space = bind_to_data(nasdsl.load(TUTORIAL), digits, {"num_classes": "10", "in_channels": "1"})
    assert space.params["num_classes"] == 10
    with pytest.raises(NasError, match="does not fit"):
        bind_to_data(nasdsl.load(TUTORIAL), digits, {"num_classes": "5"})


@pytest.mark.parametrize("network, message", [
    # a residual add that needs 3-channel images; digits have 1
    ("add(identity, conv(out=3, kernel=1)) gap flatten linear(10)", "cannot take data set `digits`'s images"),
    ("conv(out=8, kernel=3) gap flatten linear(7)", "outputs shape (7,), but data set `digits` has 10 classes"),
])
def test_a_space_that_does_not_fit_the_data_set_is_refused(tmp_path, capsys, network, message):
    space = tmp_path / "fixed.nas"
    space.write_text(f"space fixed()\n\nnetwork = {network}\n")
    assert run("search", space, "--dataset", "digits", "--store", tmp_path / "s.db") == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.db").exists()


def test_resume_with_only_the_store_continues_with_its_settings(tmp_path, capsys):
    store = tmp_path / "s.db"
    assert run("search", TUTORIAL, *QUICK, "--trials", 2, "--population", 2, "--sample-size", 2,
               "--store", store, "--json") == 0
    capsys.readouterr()
    assert run("search", "--store", store, "--resume", "--trials", 3, "--json") == 0  # no SPACE, no flags
    assert json.loads(capsys.readouterr().out)["finished"] == 3
    with Store.open(store) as s:
        assert s.config["settings"]["population"] == 2 and s.config["train"]["epochs"] == 1
    assert run("search", "--store", store, "--resume", "--population", 3) == 1  # given flags must agree
    assert "settings.population: store has 2, now 3" in capsys.readouterr().err
    assert run("search", "--store", store) == 2
    assert "give the SPACE file" in capsys.readouterr().err


def test_a_store_written_before_the_algorithm_registry_resumes(tmp_path):
    """Older stores kept evolution's population and sample size as keys of their own
    and the settings under `algorithm_settings`; they read as today's config."""
    path = tmp_path / "s.db"
    search = Search.open(quick_config(trials=2), path)
    search.run(Inline)
    config = dict(search.store.config)
    search.store.close()
    settings = config.pop("settings")
    old = {**config, "population": settings["population"], "sample_size": settings["sample_size"],
           "options": {}, "algorithm_settings": settings}
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(old),))
    resumed = Search.open(quick_config(trials=3), path, resume=True)
    resumed.run(Inline)
    assert [t.status for t in resumed.store.trials()] == ["done"] * 3
    assert resumed.store.config["settings"] == settings


def test_resuming_with_other_settings_or_a_corrupt_store_is_refused(tmp_path, capsys):
    store = tmp_path / "s.db"
    Search.open(quick_config(trials=1), store).store.close()
    assert run("search", TUTORIAL, *QUICK, "--store", store, "--trials", "1") == 1
    assert "already exists" in capsys.readouterr().err
    assert run("search", TUTORIAL, "--dataset", "digits", "--epochs", "2", "--store", store, "--resume") == 1
    assert "different search" in capsys.readouterr().err
    store.write_bytes(b"garbage" * 200)
    assert run("trials", "--store", store) == 1
    assert "not a nasdsl trial store, or corrupt" in capsys.readouterr().err


MENAS_SMALL = [str(ROOT / "spaces" / "mobilenet3_mt.nas"), "--algorithm", "menas", "--param", "width=0.25",
               "--param", "max_depth=2"]


@pytest.mark.parametrize("space", [
    pytest.param([TUTORIAL, "--sample-size", "2"], id="evolution"),
    pytest.param(MENAS_SMALL, id="menas", marks=pytest.mark.slow),  # MENAS has no --sample-size
])
def test_a_search_killed_with_sigkill_resumes_without_losing_or_repeating_a_trial(tmp_path, space):
    store = tmp_path / "s.db"
    argv = [sys.executable, "-m", "nasdsl", "search", *space, *QUICK, "--trials", "6", "--store", str(store),
            "--population", "2", "--test-top", "1"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    done_before = []
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        if store.exists():
            try:
                done_before = [t for t in Store.open(store).trials("done")]
            except (StoreError, sqlite3.OperationalError):
                continue
            if len(done_before) >= 2:
                break
    assert process.poll() is None, "the search finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with Store.open(store) as killed:
        done_before = {t.id: t for t in killed.trials("done")}
        assert len(done_before) >= 2
    resumed = subprocess.run(argv + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: " in resumed.stderr
    with Store.open(store) as after:
        trials = after.trials()
    proposed = [t for t in trials if "index" in t.extra]  # MENAS adds its tickets as linked trials
    assert len(proposed) == 6 and all(t.status == "done" for t in trials)
    assert len({t.id for t in trials}) == len(trials)
    for trial_id, before in done_before.items():  # kept, and not run again
        now = next(t for t in trials if t.id == trial_id)
        assert (now.finished, now.val_acc, now.derivation) == (before.finished, before.val_acc, before.derivation)


def _children(pid: int) -> set[int]:
    """The live child processes of `pid` (workers, the resource tracker), from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _gone(pids: set[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_workers_end_with_their_search(tmp_path, sig, code):
    """SIGTERM shuts a search down as Ctrl-C does (exit 143); after SIGKILL its workers
    notice they are orphans and end too, instead of training on for minutes."""
    argv = [sys.executable, "-m", "nasdsl", "search", TUTORIAL, *map(str, QUICK), "--trials", "50", "--epochs", "100",
            "--workers", "2", "--store", str(tmp_path / "s.db")]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(children := _children(process.pid)) < 3 and time.monotonic() < deadline:  # 2 workers + tracker
            time.sleep(0.2)
        assert len(children) >= 3, "the workers never started"
        time.sleep(1.0)  # let them take a trial each
        os.kill(process.pid, sig)
        assert process.wait(timeout=60) == code
        assert _gone(children, 20), f"left running: {[p for p in children if Path(f'/proc/{p}').exists()]}"
    finally:
        process.kill()


@pytest.mark.slow
def test_the_ray_executor_runs_a_search_on_a_local_cluster(tmp_path, capsys):
    pytest.importorskip("ray")
    store = tmp_path / "s.db"
    code = run("search", TUTORIAL, *QUICK, "--trials", 3, "--store", store, "--workers", 2,
               "--executor", "ray", "--algorithm", "random", "--json")
    assert code == 0, capsys.readouterr().err
    assert [t["status"] for t in trials_of(store)] == ["done"] * 3


@pytest.mark.parametrize("low, high", [(1.1e5, 2.4e5), (3e3, 4e7), (5e5, 5.2e5)])
def test_report_cost_axes_have_labels_that_do_not_overlap(low, high):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nasdsl.runtime.report import _cost_axis

    fig, ax = plt.subplots(figsize=(5, 4))
    values = [low + (high - low) * k / 9 for k in range(10)]
    ax.scatter(values, range(10))
    _cost_axis(ax, values)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    left, right = ax.get_xlim()
    labels = [t for t in ax.get_xticklabels(which="both") if t.get_text() and left <= t.get_position()[0] <= right]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    plt.close(fig)
    assert len(boxes) >= 2
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in labels]


def test_a_store_damaged_past_its_first_pages_is_a_clear_error(tmp_path, capsys):
    """Opening reads the first pages only; a damaged page that a listing meets later is
    exit 1 with the store's name, not an internal error."""
    path = tmp_path / "s.db"
    with Store.create(path, {"space": "a"}) as store:
        for i in range(400):
            store.add(f"(x={i})" + "y" * 200, "h", seed=0)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size - 3 * 4096)
        f.write(b"\xff" * 4096)
    for argv in (["trials", "--store", path], ["report", "--store", path, "--out", tmp_path / "r"]):
        assert run(*argv) == 1
        err = capsys.readouterr().err
        assert "the store is damaged (database disk image is malformed)" in err and "internal error" not in err


# ---- a disk that refuses the store's writes ---------------------------------------------------
TINY = "space tiny()\n\nnetwork = conv(out={4, 8}, kernel={1, 3}) relu gap flatten linear(10)\n"  # ~3 KB checkpoints
TINY_ARGS = ["--dataset", "digits", "--epochs", "1", "--limit", "200", "--test-top", "1"]


def _done(store_path) -> dict:
    with Store.open(store_path) as store:
        return {t.id: (t.finished, t.val_acc, t.derivation) for t in store.trials("done")}


def test_a_full_disk_under_the_store_stops_the_search_and_resume_loses_no_trial(tmp_path, capsys):
    """The search runs where every file may grow to 60 KB only: its tiny checkpoints fit,
    the store's write-ahead log soon does not (the OS says EFBIG, as a full disk says
    ENOSPC). The search stops, exit 1, saying the finished trials are kept and how to go
    on; with room again, --resume finishes the search without losing one."""
    space, store = tmp_path / "tiny.nas", tmp_path / "s.db"
    space.write_text(TINY)
    argv = [sys.executable, "-m", "nasdsl", "search", str(space), *TINY_ARGS, "--trials", "40", "--store", str(store)]
    full = subprocess.run(argv + ["--json"], capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: limit_file_size(60_000))
    assert full.returncode == 1, full.stderr
    error = json.loads(full.stdout)["error"]
    assert error["message"].startswith(f"{store}: cannot write the store: the disk")
    assert "the trials finished so far are kept in the store" in error["hint"]
    assert "run the same command with --resume" in error["hint"]
    assert "internal error" not in full.stderr and "damaged" not in full.stderr
    before = _done(store)
    assert 1 <= len(before) < 40
    budget = len(before) + 2
    assert run("search", "--store", store, "--resume", "--trials", budget, "--json") == 0, capsys.readouterr().err
    with Store.open(store) as after:
        trials = after.trials()
    assert all(t.status == "done" for t in trials) and len(trials) >= budget
    assert [t.extra["index"] for t in trials] == list(range(len(trials)))  # none proposed twice
    assert {i: row for i, row in _done(store).items() if i in before} == before  # kept, not run again


def _without_permission_override() -> None:
    """A child that honours file modes although it runs as root: it drops the
    capabilities that let root write anything (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH,
    CAP_FOWNER) from its bounding set, so the program it executes has none of them."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2, 3):
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "cannot drop a capability")


@pytest.mark.parametrize("read_only", ["store", "folder"])
def test_resume_on_a_read_only_store_is_a_clear_error_that_touches_nothing(tmp_path, capsys, read_only):
    """`--resume` writes the store: one that cannot be written (the file 444, or its
    folder 555) is refused naming the store, exit 1, before SQLite opens it to write --
    which would leave -wal and -shm files as read-only as the store beside it, so the
    store stayed unwritable after a chmod. Once writable again, it resumes."""
    folder = tmp_path / "runs"
    folder.mkdir()
    space, store = tmp_path / "tiny.nas", folder / "s.db"
    space.write_text(TINY)
    assert run("search", space, *TINY_ARGS, "--trials", 1, "--store", store, "--json") == 0
    capsys.readouterr()
    target, mode = (store, 0o444) if read_only == "store" else (folder, 0o555)
    before = sorted(p.name for p in folder.iterdir())
    argv = [sys.executable, "-m", "nasdsl", "search", "--store", str(store), "--resume", "--trials", "2", "--json"]
    target.chmod(mode)
    try:
        try:
            refused = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                                     preexec_fn=_without_permission_override)
        except subprocess.SubprocessError:
            pytest.skip("cannot run a child that honours file modes here")
        listed = subprocess.run([sys.executable, "-m", "nasdsl", "trials", "--store", str(store), "--json"],
                                capture_output=True, text=True, timeout=300, preexec_fn=_without_permission_override)
    finally:
        target.chmod(0o644 if read_only == "store" else 0o755)
    assert refused.returncode == 1, refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert error["message"] == f"{store}: cannot write the store: it is read-only (Permission denied: {target})"
    assert error["hint"].startswith("make the store and its folder writable, then run the same command with --resume")
    assert "internal error" not in refused.stderr and "damaged" not in refused.stderr
    assert listed.returncode == 0 and len(json.loads(listed.stdout)["trials"]) == 1  # reading it still works
    assert sorted(p.name for p in folder.iterdir()) == before  # no -wal, no -shm
    resumed = subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=_without_permission_override)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["finished"] == 2
