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
