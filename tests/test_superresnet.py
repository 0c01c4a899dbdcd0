"""spaces/superresnet.nas, the SuperResNet super-network for H2SPG: its count is its
definition's, its resnet18 preset is torchvision's, the super-network runs on 28x28x1
images, and a super-network with erased (all-zero) structures computes exactly what the
derivation without them computes."""

import itertools
import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import nasdsl
from nasdsl.cli.commands import main
from nasdsl.compiler.graph import output_shape

FILE = Path(__file__).resolve().parent.parent / "spaces" / "superresnet.nas"
SPACE = nasdsl.load(FILE)
BRANCHES = ("basic", "bottleneck", "sep5", "dil3")
SMALL = {"resolution": 28, "in_channels": 1, "C": 16}


def unit(branches) -> str:
    return f"(branches={len(branches)}, pick=[{', '.join(branches)}])"


def text(stages) -> str:
    """A derivation's text from, per stage, the first unit's branches and, per slot,
    its branches or None for a skipped slot."""
    parts = []
    for i, (first, *slots) in enumerate(stages, 1):
        rest = ", ".join("skip" if s is None else f"unit(unit={unit(s)})" for s in slots)
        parts.append(f"stage{i}=(unit={unit(first)}, rest=[{rest}])")
    return f"({', '.join(parts)})"


def test_the_count_is_what_the_definition_implies():
    units = 2 ** len(BRANCHES) - 1  # non-empty subsets of the branches
    for blocks in (4, 2, 1):
        space = SPACE.bind(blocks=blocks)
        assert space.count == (units * (units + 1) ** (blocks - 1)) ** 4
    assert SPACE.bind(C=8).count == SPACE.count


def test_every_subset_of_branches_and_skip_are_offered():
    full = [list(BRANCHES)] * 4
    for k in range(1, len(BRANCHES) + 1):
        for subset in itertools.combinations(BRANCHES, k):
            stages = [full, full, [list(BRANCHES), list(BRANCHES), list(subset), None], full]
            assert SPACE.parse(text(stages)).text == text(stages)
    good = text([full] * 4)
    for bad in ("unit=(branches=0, pick=[])", "unit=skip"):  # a stage's first unit keeps a branch
        with pytest.raises(nasdsl.NasError):
            SPACE.parse(good.replace(f"unit={unit(BRANCHES)}", bad, 1))
    assert SPACE.parse(text([full] * 4)) == SPACE.preset("supernet")


def test_resnet18_preset_is_torchvisions():
    space, d = SPACE.preset_space("resnet18"), SPACE.preset("resnet18")
    graph = space.graph(d)
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 224, 224))
    assert graph.graph["input_shape"] == (3, 224, 224) and output_shape(graph) == (1000,)
    assert graph.graph["params"] == sum(p.numel() for p in model.parameters())
    assert graph.graph["macs"] == counter.get_total_flops() // 2


@pytest.mark.parametrize("end", ["smallest", "supernet"])
def test_runs_on_fashion_mnist_with_the_expected_widths(end):
    space = SPACE.bind(**SMALL)
    d = space.unrank(0) if end == "smallest" else space.preset("supernet")
    graph = space.graph(d)
    for i, (width, side) in enumerate([(16, 28), (32, 14), (64, 7), (128, 4)], 1):
        shapes = [a["shape"] for n, a in graph.nodes(data=True) if n.startswith(f"stage{i}.") and a["op"] == "add"]
        assert shapes and all(s == (width, side, side) for s in shapes)
        assert len(shapes) == (1 if end == "smallest" else 4)  # one residual add per unit
    module = space.compile(d).eval()
    with torch.no_grad():
        assert module(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert graph.graph["params"] == sum(p.numel() for p in module.parameters())


def test_an_erased_supernet_computes_its_derivation():
    """H2SPG zeroes whole structures; the network left is a derivation: zero a branch of
    one unit, every branch of a slot, and three branches of another unit, and the
    super-network's output is the derivation's with the same weights."""
    space = SPACE.bind(**SMALL)
    supernet = space.compile(space.preset("supernet"), seed=0).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for m in supernet.modules():  # non-trivial statistics, so a zero branch is not zero by luck
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2), m.bias.uniform_(-1, 1)
    erased = ("stage1.unit.pick.bottleneck.", "stage2.rest.1.", "stage3.rest.0.unit.unit.pick.basic.",
              "stage3.rest.0.unit.unit.pick.bottleneck.", "stage3.rest.0.unit.unit.pick.sep5.")
    with torch.no_grad():
        for name, p in supernet.named_parameters():
            if name.startswith(erased):
                p.zero_()
    full = list(BRANCHES)
    child = space.parse(text([[["basic", "sep5", "dil3"], full, full, full],
                              [full, full, None, full],
                              [full, ["dil3"], full, full],
                              [full] * 4]))
    sub = space.compile(child, seed=1).eval()
    state = supernet.state_dict()
    assert set(sub.state_dict()) < set(state)
    sub.load_state_dict({k: state[k] for k in sub.state_dict()})
    assert not any(k.startswith(erased) for k in sub.state_dict())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), supernet(x))


def test_cli_count_sample_compile(capsys):
    assert main(["count", str(FILE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == (15 * 16 ** 3) ** 4
    params = [x for k, v in SMALL.items() for x in ("--param", f"{k}={v}")]
    assert main(["sample", str(FILE), "-n", "2", "--seed", "5", "--json", *params]) == 0
    texts = json.loads(capsys.readouterr().out)["derivations"]
    assert main(["compile", str(FILE), "--derivation", texts[1], "--json", *params]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [1, 28, 28] and data["output_shape"] == [10]
    assert main(["compile", str(FILE), "--preset", "resnet18", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 11689512  # torchvision's resnet18


@pytest.mark.parametrize("param", ["num_classes=0", "resolution=4", "C=2", "blocks=0", "in_channels=0"])
def test_a_bad_parameter_is_refused_by_name(capsys, param):
    assert main(["count", str(FILE), "--param", param]) == 1
    assert param.split("=")[0] in capsys.readouterr().err
