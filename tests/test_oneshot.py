"""The one-shot runtime and SPOS: a supernet trained in one long job that survives
SIGKILL bit for bit, ranks on shared weights kept in the store, retraining through the
ordinary trial loop, and data-parallel training on two gloo ranks."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
import torch
from nasdsl.runtime.algorithms import create
from nasdsl.runtime.oneshot import CHECKPOINT, shared_accuracy
from nasdsl.runtime.report import kendall_tau
from nasdsl.runtime.store import Store

import nasdsl
from nasdsl.cli import main
from nasdsl.compiler.supernet import Supernet
from nasdsl.language.errors import NasError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # distributed_supernet: the script torchrun runs, and its space
TUTORIAL = str(ROOT / "spaces" / "tutorial.nas")
SPOS = ["--dataset", "digits", "--limit", "400", "--algorithm", "spos", "--epochs", "2", "--trials", "2",
        "--retrain-epochs", "1", "--population", "4", "--generations", "1", "--parents", "2", "--test-top", "1"]
NAO = ["--dataset", "digits", "--limit", "200", "--algorithm", "nao", "--epochs", "1", "--iterations", "2",
       "--seed-pool", "6", "--new-archs", "3", "--top-seeds", "3", "--controller-epochs", "20", "--trials", "2",
       "--retrain-epochs", "1", "--test-top", "1"]


def test_spos_trains_the_supernet_ranks_on_shared_weights_and_retrains_the_best(tmp_path, capsys):
    store_path = tmp_path / "s.db"
    assert main(["search", TUTORIAL, *SPOS, "--store", str(store_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["finished"] == 2 and out["failed"] == 0
    with Store.open(store_path) as store:
        epochs = store.get_state("supernet_epochs")
        evaluations = store.evaluations()
        ranking = store.get_state("ranking")
        trials = store.trials()
    assert [e["epoch"] for e in epochs] == [1, 2] and all(e["loss"] > 0 for e in epochs)
    # population 4, then 2 children of the best 2: six derivations, each measured once after epoch 2
    assert len(evaluations) == 6 == len({e.hash for e in evaluations})
    assert {(e.epoch, e.method) for e in evaluations} == {(2, "recalibrate")}
    assert [r["shared_acc"] for r in ranking] == sorted((e.shared_acc for e in evaluations), reverse=True)
    # the best two by shared weights, retrained stand-alone for --retrain-epochs as ordinary trials
    assert [t.derivation for t in trials] == [r["derivation"] for r in ranking[:2]]
    assert [t.extra["shared_rank"] for t in trials] == [1, 2] and all(t.epochs == 1 for t in trials)
    space = nasdsl.load(TUTORIAL, {"resolution": 8})
    for e in evaluations:  # each row's cost is its derivation's
        graph = space.graph(space.parse(e.derivation), (1, 8, 8))
        assert (e.params, e.macs) == (graph.graph["params"], graph.graph["macs"])
    assert (tmp_path / "s.db.ckpt" / CHECKPOINT).exists()
    capsys.readouterr()
    assert main(["trials", "--store", str(store_path), "--evaluations", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["evaluations"]
    assert [e["shared_acc"] for e in listed] == [r["shared_acc"] for r in ranking]
    assert main(["trials", "--store", str(store_path), "--evaluations"]) == 0
    assert "shared-weight evaluations" in capsys.readouterr().out
    # the report draws the supernet's training and the shared against stand-alone ranking
    assert main(["report", "--store", str(store_path), "--out", str(tmp_path / "report")]) == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "supernet: 2 epochs" in summary and "6 derivations measured on shared weights; 2 retrained" in summary
    assert (tmp_path / "report" / "supernet.png").stat().st_size > 0
    assert (tmp_path / "report" / "ranking.png").stat().st_size > 0


def _run(argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "nasdsl", "search", *argv], capture_output=True, text=True,
                          timeout=300, **kwargs)


SUPERTICKETS = ["--dataset", "digits", "--algorithm", "supertickets", "--param", "C=4", "--retrain-epochs", "1",
                "--test-top", "1", "--bn-l1", "0.05", "--sparsity", "0.2", "--prune-every", "1", "--reactivate",
                "regrow", "--shrink-threshold", "0.3", "--calibration-batches", "2"]
KILLED = {"spos": (TUTORIAL, SPOS, CHECKPOINT), "nao": (TUTORIAL, NAO, "supernet-2.pt"),
          "supertickets": (str(ROOT / "spaces" / "superresnet.nas"), SUPERTICKETS, "supertickets.pt")}


# SPOS's one phase is the harder NAO-V2 case's first: under -m slow, to keep the default suite near 9 minutes
@pytest.mark.parametrize("algorithm", [pytest.param("spos", marks=pytest.mark.slow), "nao", "supertickets"])
def test_a_one_shot_search_killed_with_sigkill_resumes_bit_identical(tmp_path, algorithm):
    """SPOS is killed in its one phase; NAO-V2 in its second, after a controller was
    trained and generated the pool that phase trains on; SuperTickets while it shrinks
    and prunes (the network, its masks and the optimizer change shape as it goes)."""
    space, flags, name = KILLED[algorithm]
    argv = [space, *flags, "--epochs", "4", "--limit", "300", "--batch-size", "32", "--trials", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same threads in every run: the same sums
    straight = tmp_path / "straight.db"
    assert _run([*argv, "--store", str(straight)], env=env).returncode == 0
    killed = tmp_path / "killed.db"
    checkpoint = tmp_path / "killed.db.ckpt" / name
    process = subprocess.Popen([sys.executable, "-m", "nasdsl", "search", *argv, "--store", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    trained = len(torch.load(checkpoint, weights_only=True)["history"])  # the store may not have heard yet
    assert 1 <= trained < 4, "the kill came after the supernet's training: nothing was resumed"
    resumed = _run(["--store", str(killed), "--resume"], env=env)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "straight.db.ckpt" / name, weights_only=True)
    b = torch.load(checkpoint, weights_only=True)
    weights = "state" if algorithm == "supertickets" else "bank"
    assert a[weights].keys() == b[weights].keys()
    assert all(torch.equal(a[weights][k], b[weights][k]) for k in a[weights])
    assert a["history"][-1]["loss"] == b["history"][-1]["loss"]
    assert a.get("masks", {}).keys() == b.get("masks", {}).keys()
    assert all(torch.equal(a["masks"][k], b["masks"][k]) for k in a.get("masks", {}))
    with Store.open(straight) as s, Store.open(killed) as k:
        assert [(e.hash, e.shared_acc) for e in s.evaluations()] == [(e.hash, e.shared_acc) for e in k.evaluations()]
        assert [(t.derivation, t.val_acc) for t in s.trials()] == [(t.derivation, t.val_acc) for t in k.trials()]
        assert s.get_state("nao_controller") == k.get_state("nao_controller")
        untimed = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows or []]  # noqa: E731
        assert untimed(s.get_state("supertickets")) == untimed(k.get_state("supertickets"))


def test_two_gloo_ranks_reach_the_weights_of_one_process_with_the_global_batch(tmp_path):
    script = str(ROOT / "tests" / "distributed_supernet.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    one = subprocess.run([sys.executable, script, str(tmp_path / "one.pt")], capture_output=True, text=True,
                         env={k: v for k, v in env.items() if k not in ("WORLD_SIZE", "RANK")}, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          script, str(tmp_path / "two.pt")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    # and the training did move the weights: the check is not between two untouched banks
    from distributed_supernet import SPACE

    start = Supernet(nasdsl.loads(SPACE), (1, 8, 8), seed=0).state_dict()
    assert any(not torch.equal(start[k], a[k]) for k in a)


def test_a_spos_search_runs_under_torchrun(tmp_path):
    store = tmp_path / "s.db"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "nasdsl",
            "search", TUTORIAL, *SPOS, "--store", str(store), "--json"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["finished"] == 2  # the lead alone speaks
    with Store.open(store) as s:
        assert len(s.get_state("supernet_epochs")) == 2 and len(s.trials("done")) == 2


def test_shared_weight_evaluation_keeps_the_banks_statistics():
    space = nasdsl.load(TUTORIAL, {"resolution": 8})
    net = Supernet(space, (1, 8, 8))
    d = space.sample(seed=1)
    before = {k: v.clone() for k, v in net.bank.named_buffers()}
    from nasdsl.runtime.data import Split

    g = torch.Generator().manual_seed(0)
    split = Split(torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g))
    calibration = [torch.randn(16, 1, 8, 8, generator=g) for _ in range(2)]
    recalibrated = shared_accuracy(net, d, split, method="recalibrate", calibration=calibration)
    assert all(torch.equal(before[k], v) for k, v in net.bank.named_buffers())  # put back after
    # the same statistics, estimated on a stand-alone child, give the same accuracy
    child = net.subnet(d)
    with torch.no_grad():
        for m in child.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        child.train()
        for x in calibration:
            child(x)
        child.eval()
        expected = (child(split.x).argmax(1) == split.y).float().mean().item()
    assert recalibrated == pytest.approx(expected)
    with pytest.raises(NasError, match="unknown batch-norm method `nope`"):
        shared_accuracy(net, d, split, method="nope")


def test_bad_one_shot_settings_are_clear_errors(tmp_path, capsys):
    with pytest.raises(NasError, match="--parents must be between 1 and --population"):
        create("spos", {"population": 4, "parents": 5})
    with pytest.raises(NasError, match="--retrain-epochs must be at least 1"):
        create("spos", {"retrain_epochs": 0})
    code = main(["search", TUTORIAL, *SPOS, "--max-supernet-params", "1000", "--store", str(tmp_path / "a.db")])
    assert code == 1 and "would hold" in capsys.readouterr().err
    code = main(["search", TUTORIAL, *SPOS, "--trials", "40", "--store", str(tmp_path / "b.db")])
    assert code == 1 and "ranked 6 derivations, fewer than --trials 40" in capsys.readouterr().err
    with pytest.raises(NasError, match="only one-shot algorithms train under torchrun"):
        create("evolution").follow(None)


def test_kendall_tau_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for n in (2, 5, 20):
        a = [rng.choice([0.1, 0.2, 0.3, 0.4]) for _ in range(n)]  # ties, as accuracies on small sets have
        b = [x + rng.gauss(0, 0.1) for x in a]
        expected = scipy_stats.kendalltau(a, b).statistic
        assert kendall_tau(a, b) == pytest.approx(expected) or (expected != expected and kendall_tau(a, b) is None)


def test_size_weighted_sampling_draws_in_proportion_to_parameters():
    from types import SimpleNamespace

    from distributed_supernet import SPACE
    from nasdsl.runtime.propose import Proposer

    space = nasdsl.loads(SPACE)
    search = SimpleNamespace(space=space, proposer=Proposer(space, (1, 8, 8)))
    net = Supernet(space, (1, 8, 8))
    sizes = [search.proposer.cost(d).params for d in space.enumerate()]
    expected = sum(p * p for p in sizes) / sum(sizes)  # the mean size under p(d) ~ params(d)
    rng = random.Random(0)
    for sampling, mean in (("params", expected), ("uniform", sum(sizes) / len(sizes))):
        draw = create("spos", {"sampling": sampling}).sampler(search, net)
        drawn = [search.proposer.cost(draw(rng)).params for _ in range(3000)]
        assert sum(drawn) / len(drawn) == pytest.approx(mean, rel=0.02)
    assert expected > sum(sizes) / len(sizes) * 1.05  # the two differ enough to tell apart


def _plain():
    from distributed_supernet import SPACE
    from nasdsl.runtime.data import Dataset, Split
    from nasdsl.runtime.train import TrainConfig

    space = nasdsl.loads(SPACE)
    g = torch.Generator().manual_seed(0)
    split = lambda n: Split(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g))  # noqa: E731
    data = Dataset(name="random", train=split(48), val=split(8), test=split(8), num_classes=4,
                   input_shape=(1, 8, 8), note=None)
    return space, data, TrainConfig(epochs=2, batch_size=16, lr=0.05)


def test_phases_carry_the_bank_and_optimizer_over_and_resume_inside_a_phase(tmp_path):
    from nasdsl.runtime.oneshot import train_supernet

    space, data, config = _plain()
    sample = lambda rng: space.sample(rng=rng)  # noqa: E731
    cpu = torch.device("cpu")

    def phase(net, k, **kwargs):
        return train_supernet(net, data, config, sample, seed=0, checkpoint=tmp_path / f"{k}.pt", stream=f"p{k}",
                              start=tmp_path / f"{k - 1}.pt" if k > 1 else None, device=cpu, **kwargs)

    net = Supernet(space, (1, 8, 8), seed=0)
    first, second = phase(net, 1), phase(net, 2)
    assert [e.lr for e in second] == [e.lr for e in first]  # the schedule restarts each phase
    straight = {k: v.clone() for k, v in net.state_dict().items()}

    class Killed(Exception):
        pass

    def kill(record, history):
        raise Killed

    (tmp_path / "2.pt").unlink()
    with pytest.raises(Killed):  # phase 2 stops after its first epoch's checkpoint
        phase(Supernet(space, (1, 8, 8), seed=0), 2, on_epoch=kill)
    again = Supernet(space, (1, 8, 8), seed=0)  # a new process: phase 2 resumes from its own checkpoint
    assert [e.lr for e in phase(again, 2)] == [e.lr for e in second]
    assert all(torch.equal(straight[k], v) for k, v in again.state_dict().items())
    # a schedule that continues across phases: the second phase ends where one long run would
    long = train_supernet(Supernet(space, (1, 8, 8), seed=0), data, attrs.evolve(config, epochs=4), sample, seed=0,
                          checkpoint=None, device=cpu)
    spanned = phase(Supernet(space, (1, 8, 8), seed=0), 3, span=(2, 4))
    assert [e.lr for e in spanned] == pytest.approx([e.lr for e in long[2:]])


def test_nao_alternates_supernet_phases_with_its_controller(tmp_path, capsys):
    store_path = tmp_path / "nao.db"
    assert main(["search", TUTORIAL, *NAO, "--store", str(store_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished"] == 2
    with Store.open(store_path) as store:
        epochs, log = store.get_state("supernet_epochs"), store.get_state("nao_controller")
        evaluations, ranking = store.evaluations(), store.get_state("ranking")
    assert len(epochs) == 2 and [e["iteration"] for e in log] == [1]  # the last iteration only measures
    first = {e.hash for e in evaluations if e.epoch == 1}
    second = {e.hash for e in evaluations if e.epoch == 2}
    assert len(first) == 6 and first < second  # the pool the controller generated joins every earlier one
    assert len(ranking) == len(second)
    for phase in (1, 2):
        assert (tmp_path / "nao.db.ckpt" / f"supernet-{phase}.pt").exists()
    # a finished one-shot phase is not run again: resuming with a larger budget only retrains
    assert main(["search", "--store", str(store_path), "--resume", "--trials", "3", "--json"]) == 0
    with Store.open(store_path) as store:
        assert len(store.trials("done")) == 3 and len(store.get_state("supernet_epochs")) == 2
    with pytest.raises(NasError, match="--independent is one of restart, reinit, continue"):
        create("nao", {"independent": "sometimes"})


def test_nao_starts_from_the_derivations_of_a_seed_file(tmp_path, capsys):
    space = nasdsl.load(TUTORIAL, {"resolution": 8, "num_classes": 10, "in_channels": 1})
    given = list({d.hash: d for d in (space.sample(seed=s) for s in range(4))}.values())
    listed = tmp_path / "seeds.txt"
    listed.write_text("# two known derivations\n\n" + "\n".join(d.text for d in given) + "\n")
    store_path = tmp_path / "nao.db"
    argv = ["search", TUTORIAL, *NAO, "--iterations", "1", "--seed-archs", str(listed), "--store", str(store_path)]
    assert main([*argv, "--json"]) == 0
    with Store.open(store_path) as store:
        pool = store.get_state("nao_seed_pool")
        measured = {e.hash for e in store.evaluations()}
    assert pool[:len(given)] == [d.text for d in given] and len(pool) == 6  # topped up with random draws
    assert measured == {space.parse(t).hash for t in pool}
    # a line that is not a member of the space is named by file and line
    listed.write_text(given[0].text + "\n(nonsense=1)\n")
    capsys.readouterr()
    assert main([*argv[:-1], str(tmp_path / "other.db")]) == 1
    err = capsys.readouterr().err
    assert f"{listed}:2:1: error:" in err and "Traceback" not in err
    assert main([*argv[:-4], "--seed-archs", str(tmp_path / "missing.txt"), "--store", str(tmp_path / "m.db")]) == 1
    assert "--seed-archs" in capsys.readouterr().err


def test_a_nao_store_from_before_its_newer_settings_resumes_as_it_ran(tmp_path, capsys):
    """A store records every setting; one written before --seed-archs and --random-archs
    existed lacks them, and resumes with what it ran with: no seed file, no random
    derivations (not today's default of 5)."""
    import sqlite3

    store_path = tmp_path / "nao.db"
    assert main(["search", TUTORIAL, *NAO, "--iterations", "1", "--store", str(store_path), "--json"]) == 0
    with Store.open(store_path) as store:
        config = dict(store.config)
    for name in ("seed_archs", "random_archs"):
        del config["settings"][name]
    with sqlite3.connect(store_path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(config),))
    capsys.readouterr()
    assert main(["search", "--store", str(store_path), "--resume", "--trials", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished"] == 3
    assert main(["search", "--store", str(store_path), "--resume", "--trials", "3", "--random-archs", "5"]) == 1
    assert "settings.random_archs: store has 0, now 5" in capsys.readouterr().err
