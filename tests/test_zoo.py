"""Published models through the tracer, the channel groups and pruning (issue 14):
each traces, its graph's parameters and MACs are exact, and a random pruning computes
what the model computes with those channels zeroed. The default run checks 40
torchvision and timm models; `-m slow` the whole zoo, 78 torchvision models and 60
timm models (bench/zoo.py measures it beside torch-pruning, docs/benchmarks.md quotes
it). Where torch-pruning's count is recorded (bench/results/zoo.json), ours is at
least as large, except where FEWER says why, and larger only where MORE says why."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import zoo  # noqa: E402  bench/zoo.py: one check for the test and the benchmark

TORCHVISION = ["alexnet", "resnet18", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5", "squeezenet1_1",
               "shufflenet_v2_x0_5", "efficientnet_b0", "regnet_y_400mf", "densenet121", "googlenet", "convnext_tiny"]
TIMM = [f"timm:{n}" for n in (
    "resnet18", "resnet26d", "resnetv2_50", "efficientnet_lite0", "tf_efficientnet_b0", "mixnet_s", "convnext_atto",
    "regnetx_002", "dla46_c", "dpn68", "resnest14d", "skresnet18", "tinynet_e", "mobilevit_xxs", "cspdarknet53",
    "fbnetc_100", "gernet_s", "repvgg_a0", "efficientvit_b0", "vgg11", "mobilenetv3_small_100", "lcnet_050",
    "ese_vovnet19b_dw", "poolformer_s12", "edgenext_xx_small", "vit_tiny_patch16_224", "levit_128s",
    "botnet26t_256")]
FAST = TORCHVISION + TIMM

# where our prunable groups are fewer than torch-pruning's, and why (docs/benchmarks.md): in each, torch-pruning
# cuts channels whose cut changes the function
RESIDUAL = ("the residual stream passes every LayerNorm (or GroupNorm(1, C)), whose statistics pool its channels: "
            "torch-pruning cuts it, which changes the function; ours has each MLP width and each attention's heads "
            "as a group")
CLASSES = "torch-pruning counts a conv classifier's class scores as prunable (there is no Linear to ignore)"
FEWER = {
    **{m: RESIDUAL for m in ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large", "timm:convnext_atto",
                             "timm:poolformer_s12", "timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224",
                             "timm:pit_ti_224", "timm:mixer_s16_224", "vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32",
                             "timm:swin_tiny_patch4_window7_224", "timm:tiny_vit_5m_224", "timm:edgenext_xx_small",
                             "timm:mobilevit_xxs")},
    "timm:efficientvit_b0": "its classifier's hidden Linear feeds a LayerNorm (see RESIDUAL)",
    "timm:nf_resnet50": "a weight-standardised conv (ScaledStdConv2d) normalises each filter over its input channels, "
                        "so cutting one changes every filter: torch-pruning cuts them, which changes the function",
    "squeezenet1_0": CLASSES, "squeezenet1_1": CLASSES, "timm:dla34": CLASSES, "timm:resnetv2_50": CLASSES,
    "timm:dla46_c": CLASSES,
}
# where ours are more, and why that is valid (each pruning equals zero_removed)
ITEMS = ("each item of a split is a group of its own, the split's sizes cut with it; torch-pruning cuts a split's "
         "items together, as one group")  # skresnet's selective kernels and cspnet's cross stages split their input
MORE = {
    **{m: ITEMS for m in ("timm:mixnet_s", "timm:mixnet_m", "timm:res2net50_14w_8s", "timm:res2net50_26w_4s",
                          "timm:skresnet18", "timm:cspdarknet53", "timm:cspresnet50")},
    "timm:coat_lite_tiny": "each set of heads that one window size of its convolutional position encoding serves "
                           "is a group; torch-pruning has one per encoding, and cuts the residual streams "
                           "(see RESIDUAL)",
}
RECORDED = Path(__file__).resolve().parent.parent / "bench" / "results" / "zoo.json"


def _recorded() -> dict:
    rows = json.loads(RECORDED.read_text())["rows"] if RECORDED.exists() else []
    return {r["model"]: r for r in rows}


def _checked(name, size=64):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    row = zoo.check(name, torch_pruning=False, size=size)
    assert row["traced"], row.get("error")
    assert row["params_equal"] or name in zoo.AUX_HEADS, name
    assert row["macs_equal"], name
    assert row["prune_equal"], row.get("prune_error", row.get("prune_max_error"))
    theirs = _recorded().get(name, {}).get("tp_prunable")
    if theirs is not None and name not in FEWER:
        assert row["prunable"] >= theirs, f"{name}: {row['prunable']} prunable groups, torch-pruning {theirs}"
    if theirs is not None and row["prunable"] > theirs:
        assert name in MORE, f"{name}: {row['prunable']} prunable groups, torch-pruning {theirs}: say why in MORE"
    return row


@pytest.mark.parametrize("name", FAST)
def test_a_published_model_traces_exactly_and_prunes_as_zeroed(name):
    _checked(name, size=32 if name.startswith("timm:") else 64)  # timm's at 32x32 where they run: 4x less work


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(zoo.models()) - set(FAST)))
def test_the_whole_zoo(name):
    _checked(name)


def test_the_zoo_is_40_models_by_default_and_138_in_all():
    assert len(FAST) == len(set(FAST)) == 40 and set(TIMM) <= set(zoo.TIMM)
    assert len(zoo.TIMM) == 60
