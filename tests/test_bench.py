"""The bench scripts keep working as the code moves: each one imports, and the
space-operations and Kendall-tau benchmarks run end to end at small sizes (smoke
runs; the numbers themselves are measured with `make bench` or the scripts' own
commands, never asserted here)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
# the scripts that train refuse other data (their numbers would not compare); `make test` installs it as root
needs_fashion = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                                   reason="dataset-fashion-mnist is not installed (make debian-packages)")


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_every_bench_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{Path(script).stem}", BENCH / script)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_space_ops_runs_on_a_small_space(tmp_path):
    out = tmp_path / "space_ops.json"
    subprocess.run([sys.executable, str(BENCH / "space_ops.py"), "--seconds", "0.01", "--out", str(out),
                    str(BENCH.parent / "spaces" / "nb201.nas")], check=True, capture_output=True, timeout=120)
    (row,) = json.loads(out.read_text())["results"]
    assert row["count"] == "15625" and row["uniform_samples_per_s"] > 0


def test_oneshot_nni_runs_our_side_without_nni(tmp_path):
    """The ours-only smoke run of the NNI comparison: our supernet trains one epoch on the
    benchmark's cell space, and nothing of NNI is needed (no NNI venv on this machine)."""
    out = tmp_path / "oneshot_nni.json"
    subprocess.run([sys.executable, str(BENCH / "oneshot_nni.py"), "--quick", "--ours-only", "--nni-python",
                    str(tmp_path / "no-nni" / "python"), "--out", str(out)], check=True, capture_output=True,
                   timeout=300)
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"ours"} and "ratios_ours_over_nni" not in result
    (run,) = result["runs"]["ours"]
    assert run["supernet_params"] == result["supernet_params"] and run["epochs"][0]["steps"] > 0
    checks = result["ours_checks"]
    assert result["summary"]["ours"]["peak_rss_mib"] > 0 and checks["seeded_paths_repeat"]
    assert checks["resumes_bit_identical"]  # docs/benchmarks.md says so


@needs_fashion
def test_kendall_quick_runs_end_to_end(tmp_path):
    out = tmp_path / "kendall.json"
    subprocess.run([sys.executable, str(BENCH / "kendall.py"), "--quick", "--out", str(out),
                    "--checkpoints", str(tmp_path / "ckpt")], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    (run,) = result["seeds"]
    assert result["settings"]["quick"] and len(result["derivations"]) == 4 == len({d["hash"] for d in result["derivations"]})
    assert all(0 <= a <= 1 for m in ("recalibrate", "train") for a in run["shared"][m])
    assert all(0 <= a["val_acc"] <= 1 for a in run["alone"]) and len(run["supernet"]["epochs"]) == 1
    assert set(run["tau"]) == {"recalibrate", "train"} and not (tmp_path / "ckpt").exists()


@pytest.mark.slow  # two quick kendall runs (24 s); test_kendall_quick_runs_end_to_end covers the script
def test_kendall_quick_with_size_weighted_pool_sampling_reuses_the_stand_alone_runs(tmp_path):
    uniform, weighted = tmp_path / "uniform.json", tmp_path / "params.json"
    for argv in (["--out", str(uniform)],
                 ["--pool", "--sampling", "params", "--alone-from", str(uniform), "--out", str(weighted)]):
        subprocess.run([sys.executable, str(BENCH / "kendall.py"), "--quick", "--checkpoints", str(tmp_path / "c"),
                        *argv], check=True, capture_output=True, timeout=300)
    a, b = json.loads(uniform.read_text()), json.loads(weighted.read_text())
    assert "NAO-V2's pool" in b["settings"]["sampling"] and "proportional to its parameters" in b["settings"]["sampling"]
    assert b["seeds"][0]["alone"] == a["seeds"][0]["alone"] and b["alone_from"] == str(uniform)
    assert set(b["seeds"][0]["tau"]) == {"recalibrate", "train"}


@pytest.mark.slow  # 26 s: end to end, run on demand (-m slow); the import test above keeps it loading
def test_nao_quick_runs_its_searches_against_a_kendall_reference(tmp_path):
    """bench/nao.py starts every search from the reference's derivations and sets their
    shared-weight accuracies against the reference's stand-alone ones."""
    reference, out = tmp_path / "kendall.json", tmp_path / "nao.json"
    subprocess.run([sys.executable, str(BENCH / "kendall.py"), "--quick", "--out", str(reference),
                    "--checkpoints", str(tmp_path / "c")], check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, str(BENCH / "nao.py"), "--quick", "--reference", str(reference), "--modes",
                    "restart", "--work", str(tmp_path / "work"), "--out", str(out)], check=True, capture_output=True,
                   timeout=300)
    result = json.loads(out.read_text())
    (run,) = result["runs"]
    assert [it["measured"] for it in run["iterations"]][0] == 4  # the reference's four derivations first
    assert run["budget_epochs"] == result["random"][0]["budget_epochs"]  # random search spends what NAO spent
    assert {"nao", "random"} == set(result["final"]) and "restart" in result["summary"]["modes"]


def test_nao_probabilities_sizes_a_pool_both_ways(tmp_path):
    out = tmp_path / "p.json"
    subprocess.run([sys.executable, str(BENCH / "nao_probabilities.py"), "--derivations", "5", "--spaces", "nb201",
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    (row,) = json.loads(out.read_text())["spaces"]
    assert row["counts_agree"] and row["graph_s"] > 0 and row["built_s"] > 0


@pytest.mark.slow  # ~25 s: end to end, run on demand (-m slow)
def test_sparsity_quick_ends_every_pruning_arm_at_the_target(tmp_path):
    out = tmp_path / "s.json"
    subprocess.run([sys.executable, str(BENCH / "sparsity.py"), "--quick", "--out", str(out)], check=True,
                   capture_output=True, timeout=300)
    runs = json.loads(out.read_text())["runs"]
    assert {r["arm"] for r in runs} == {"dense", "one-shot", "progressive", "regrow"}
    assert all(abs(r["sparsity"] - (0 if r["arm"] == "dense" else 0.6)) < 1e-3 for r in runs)


@pytest.mark.slow  # ~5 minutes: every arm's searches end to end, run on demand (-m slow)
def test_supertickets_quick_runs_every_arm(tmp_path):
    out = tmp_path / "st.json"
    subprocess.run([sys.executable, str(BENCH / "supertickets.py"), "--quick", "--out", str(out)], check=True,
                   capture_output=True, timeout=900)
    result = json.loads(out.read_text())
    assert [r["arm"] for r in result["runs"]] == ["joint", "oneshot", "reset", "regrow", "sequential"]
    joint, sequential = result["runs"][0], result["runs"][-1]
    assert sequential["macs"] <= joint["macs"] and abs(sequential["sparsity"] - joint["sparsity"]) < 1e-3
    assert "joint_alone" in result["summary"]


@pytest.mark.slow  # ~6 min on 2 cores: every arm of bench/otov3.py for one epoch on 300 images
def test_otov3_quick_runs_every_arm(tmp_path):
    out = tmp_path / "otov3.json"
    subprocess.run([sys.executable, str(BENCH / "otov3.py"), "--quick", "--out", str(out)], check=True,
                   capture_output=True, timeout=1200)
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"superresnet/h2spg", "superresnet/topk", "superresnet/dense", "resnet18/h2spg",
                                      "cell/h2spg", "mixed/h2spg"}
    h2spg = result["summary"]["superresnet/h2spg"]
    assert h2spg["invalid"] == 0 and h2spg["distance_mean"] == 0 and h2spg["output_gap_mean"] <= 1e-5
    assert result["summary"]["superresnet/dense"]["params_mean"] == h2spg["params_before_mean"]


def test_otov3_selection_study_never_breaks_the_network_hierarchically(tmp_path):
    out = tmp_path / "selection.json"
    subprocess.run([sys.executable, str(BENCH / "otov3.py"), "--selection", "--draws", "2", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    study = json.loads(out.read_text())["study"]
    targets = {k: v for k, v in study.items() if "@" in k}
    assert len(targets) == 15 and all(v["hierarchical_invalid"] == 0 for v in targets.values())
    assert all(v["hierarchical_not_a_derivation"] == 0 for k, v in targets.items() if k.startswith("superresnet (preset)"))
    assert all(study[n]["construct_s"] >= 0 for n in ("resnet18", "cell", "mixed"))


@pytest.mark.slow
@needs_fashion
def test_lissnas_quick_compares_every_space(tmp_path):
    out = tmp_path / "lissnas.json"
    subprocess.run([sys.executable, str(BENCH / "lissnas.py"), "--quick", "--out", str(out)], check=True,
                   capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert set(result["mean_over_seeds"]) == {"lissnas", "operational", "full", "full, equal budget",
                                              "lissnas, spos", "operational, spos", "full, spos"}
    assert result["seeds"][0]["pruned_size"] <= result["mean_over_seeds"]["lissnas"]["size"]


def test_identity_bench_counts_a_small_space(tmp_path):
    out = tmp_path / "identity.json"
    subprocess.run([sys.executable, str(BENCH / "identity.py"), "--no-nb201-enumeration", "--draws", "5",
                    "--neighbourhoods", "1", "--spaces", "nb201,tutorial", "--out", str(out)], check=True,
                   capture_output=True, timeout=300)
    rows = json.loads(out.read_text())["spaces"]
    assert [r["neighbourhood_r1_size_median"] for r in rows] == [25, 28]
