"""Published models through the tracer, the channel groups and pruning (issue 14):
each traces, its graph's parameters and MACs are exact, and a random pruning computes
what the model computes with those channels zeroed. The default run checks a fast
dozen; `-m slow` the whole torchvision zoo (bench/zoo.py measures it beside
torch-pruning, docs/benchmarks.md quotes it)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import zoo  # noqa: E402  bench/zoo.py: one check for the test and the benchmark

FAST = ["alexnet", "resnet18", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5", "squeezenet1_1",
        "shufflenet_v2_x0_5", "efficientnet_b0", "regnet_y_400mf", "densenet121", "googlenet", "convnext_tiny"]


def _checked(name):
    row = zoo.check(name, torch_pruning=False)
    assert row["traced"], row.get("error")
    assert row["params_equal"] or name in zoo.AUX_HEADS, name
    assert row["macs_equal"], name
    assert row["prune_equal"], row.get("prune_error", row.get("prune_max_error"))
    return row


@pytest.mark.parametrize("name", FAST)
def test_a_published_model_traces_exactly_and_prunes_as_zeroed(name):
    _checked(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(zoo.models()) - set(FAST)))
def test_the_whole_torchvision_zoo(name):
    _checked(name)
