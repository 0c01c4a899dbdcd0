"""spaces/mobilenet3_mt.nas, MENAS's MobileNet3-MT: its count is its definition's, its
preset is torchvision's mobilenet_v3_large, its extremes run on 28x28x1 images, every
width a channel pruner can leave is offered, and a pruned network is a derivation."""

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import nasdsl
from nasdsl.cli.commands import main
from nasdsl.compiler.graph import output_shape
from nasdsl.compiler.groups import prune
from nasdsl.space.derivation import Derivation, replace_path, split_path

FILE = Path(__file__).resolve().parent.parent / "spaces" / "mobilenet3_mt.nas"
SPACE = nasdsl.load(FILE)
FASHION = {"resolution": 28, "in_channels": 1, "num_classes": 10}
BASES = (16, 24, 40, 80, 112, 160)  # MobileNetV3-Large's stage widths


@pytest.fixture(scope="module")
def fashion():
    return SPACE.bind(**FASHION)


def offered(base, width=1.0):
    """The multiples of 8 from 0.5x to 1.5x base * width (just 8 if there is none)."""
    b = base * width
    return [v for v in range(8, int(1.5 * b) + 1, 8) if b / 2 <= v <= 1.5 * b] or [8]


def stage_path(i):
    return ".".join(["stage"] * i)


def expected_count(width=1.0, max_depth=5):
    """Per block 12 * (hidden values): kernel 3 x SE 2 x activation 2, hidden 0 or 8..6 c_in;
    per stage a first block from the previous width and 0..max_depth-1 more; summed over
    the chain of stage widths, times the two head widths."""
    def block(c_in):
        return 12 * (1 + 6 * c_in // 8)

    ways = {w: 1 for w in offered(16, width)}  # stem width -> derivations so far
    for base in BASES:
        ways = {c: sum(n * block(a) for a, n in ways.items()) * sum(block(c) ** k for k in range(max_depth))
                for c in offered(base, width)}
    return sum(ways.values()) * len(offered(960, width)) * len(offered(1280, width))


def test_offered_widths_are_the_notes():
    assert offered(16) == [8, 16, 24] and offered(24) == [16, 24, 32]
    assert offered(160) == list(range(80, 241, 8)) and offered(960) == list(range(480, 1441, 8))


def test_the_count_is_what_the_definition_implies():
    assert SPACE.count == expected_count()
    small = SPACE.bind(width=0.5, max_depth=2)
    assert small.count == expected_count(0.5, 2) != SPACE.count


def test_preset_is_torchvisions_mobilenet_v3_large():
    graph = SPACE.graph(SPACE.preset("mobilenet_v3_large"))
    model = torchvision.models.mobilenet_v3_large(weights=None).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 224, 224))
    assert graph.graph["input_shape"] == (3, 224, 224) and output_shape(graph) == (1000,)
    assert graph.graph["params"] == sum(p.numel() for p in model.parameters())
    assert graph.graph["macs"] == counter.get_total_flops() // 2
    sides = [graph.nodes[f"{stage_path(i)}.block.project.conv"]["shape"][1] for i in range(1, 7)]
    assert sides == [112, 56, 28, 14, 14, 7]  # from 64 pixels on, Large's strides


@pytest.mark.parametrize("end", ["smallest", "largest"])
def test_the_extremes_run_on_fashion_mnist_with_the_expected_widths(fashion, end):
    d = fashion.unrank(0 if end == "smallest" else fashion.count - 1)
    pick = min if end == "smallest" else max
    widths = [pick(offered(base)) for base in BASES]
    assert d["stem_channels"] == pick(offered(16))
    assert d["head.last_conv.channels"] == pick(offered(960))
    assert d["head.classifier.channels"] == pick(offered(1280))
    graph = fashion.graph(d)
    sides = []
    for i, c in enumerate(widths, 1):
        assert d[f"{stage_path(i)}.channels"] == c
        assert len(d[f"{stage_path(i)}.rest"]) == (0 if end == "smallest" else 4)
        shape = graph.nodes[f"{stage_path(i)}.block.project.conv"]["shape"]
        assert shape[0] == c
        sides.append(shape[1])
    assert sides == [28, 28, 14, 7, 7, 4]  # below 64 pixels: stem and stage 2 keep stride 1
    module = fashion.compile(d).eval()
    assert graph.graph["params"] == sum(p.numel() for p in module.parameters())
    if end == "smallest":  # the largest's forward pass costs a second; test_compile.py runs samples
        with torch.no_grad():
            assert module(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def with_values(d, changes):
    root = d.root
    for path, value in changes.items():
        root = replace_path(root, split_path(path), value)
    return Derivation(root)


def test_every_multiple_of_8_is_offered(fashion):
    smallest, largest = fashion.unrank(0), fashion.unrank(fashion.count - 1)
    for i, base in enumerate(BASES, 1):  # every stage width, with every block unexpanded
        path = f"{stage_path(i)}.channels"
        for c in offered(base):
            assert with_values(smallest, {path: c}) in fashion, (path, c)
        for c in (min(offered(base)) - 8, max(offered(base)) + 8, min(offered(base)) + 4):
            assert with_values(smallest, {path: c}) not in fashion, (path, c)
    for path, c_in in [("stage.block.mbconv.hidden", 8), ("stage.stage.stage.block.mbconv.hidden", 16),
                       (f"{stage_path(6)}.rest.3.mbconv.hidden", 240)]:  # first blocks, and a late block
        d = smallest if c_in < 240 else largest
        for hidden in range(0, 6 * c_in + 1, 8):
            assert with_values(d, {path: hidden}) in fashion, (path, hidden)
        for hidden in (6 * c_in + 8, 12):
            assert with_values(d, {path: hidden}) not in fashion, (path, hidden)
    for path, base in [("stem_channels", 16), ("head.last_conv.channels", 960), ("head.classifier.channels", 1280)]:
        for c in offered(base):
            assert with_values(smallest, {path: c}) in fashion, (path, c)


def test_a_channel_pruned_network_is_a_derivation(fashion):
    """Prune the stem's width (coupled with stage 1's by the residual), stage 2's output
    width and stage 2's first expansion; the pruned module is the compiled derivation
    with those widths: same weights by name and shape, same outputs."""
    d = fashion.preset("mobilenet_v3_large")
    graph, module = fashion.graph(d), fashion.compile(d, seed=0)
    keep = {"stem.conv": range(0, 16, 2), "stage.stage.block.project.conv": range(8, 24),
            "stage.stage.block.mbconv.expand.conv": range(5, 29)}
    pruned = prune(graph, module, keep).eval()
    child = fashion.validate(with_values(d, {"stem_channels": 8, "stage.channels": 8, "stage.stage.channels": 16,
                                             "stage.stage.block.mbconv.hidden": 24}))
    rebuilt = fashion.compile(child, seed=1).eval()
    state = pruned.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in rebuilt.state_dict().items()}
    rebuilt.load_state_dict(state)
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), pruned(x))


def test_cli_count_sample_compile(capsys):
    params = [x for k, v in {**FASHION, "width": 0.5}.items() for x in ("--param", f"{k}={v}")]
    assert main(["count", str(FILE), "--json", *params]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == expected_count(0.5)
    assert main(["sample", str(FILE), "-n", "2", "--seed", "3", "--json", *params]) == 0
    texts = json.loads(capsys.readouterr().out)["derivations"]
    assert main(["compile", str(FILE), "--derivation", texts[1], "--json", *params]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [1, 28, 28] and data["output_shape"] == [10]


@pytest.mark.parametrize("param", ["num_classes=0", "resolution=4", "width=0", "max_depth=0", "in_channels=0",
                                   "dropout=1.5"])
def test_a_bad_parameter_is_refused_by_name(capsys, param):
    assert main(["count", str(FILE), "--param", param]) == 1
    assert param.split("=")[0] in capsys.readouterr().err
