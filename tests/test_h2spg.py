"""H2SPG: hierarchical selection keeps the network valid where plain top-K does not,
the half-space projection makes whole groups exactly zero and keeps them there, the
target group sparsity is reached, and the optimizer's state resumes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from nasdsl.runtime.h2spg import H2SPG

import nasdsl
from nasdsl.compiler.erasing import erasing_graph
from nasdsl.compiler.graph import build_graph
from nasdsl.compiler.module import build_module
from nasdsl.compiler.trace import trace
from nasdsl.language.errors import NasError

SPACES = Path(__file__).resolve().parents[1] / "spaces"


def _superresnet():
    space = nasdsl.load(SPACES / "superresnet.nas").bind(C=4, in_channels=1, resolution=28)
    graph = build_graph(space, space.preset("supernet"))
    return build_module(graph), erasing_graph(graph)


def _train(module, optimizer, steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(module(x), y).backward()
        optimizer.step()


def test_hierarchical_selection_never_leaves_an_invalid_network():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    erasing = erasing_graph(trace(model, torch.randn(1, 3, 32, 32)))
    # the stride blocks' bodies and projections the most redundant: both paths of a block scored first
    first = ["layer2.0.bn2", "layer2.0.downsample.1", "layer3.0.bn2", "layer3.0.downsample.1"]
    scores = {n: (2.0 if n in first else 1.0 / (1 + i)) for i, n in enumerate(erasing.structures)}
    plain = H2SPG(model, erasing, lr=0.1, target=0.5, hierarchical=False)
    ours = H2SPG(model, erasing, lr=0.1, target=0.5)
    assert plain.count == ours.count == 6
    taken_plain, taken = plain.select(scores), ours.select(scores)
    assert set(first) <= set(taken_plain) and not erasing.check(taken_plain)
    assert len(taken) == 6 and erasing.check(taken)
    assert "layer2.0.bn2" in taken and "layer2.0.downsample.1" not in taken  # the first of each pair, not both


def test_a_nested_group_is_taken_with_what_is_inside_it():
    space = nasdsl.load(SPACES / "nb201.nas").bind(C=4, N=1)
    from nasdsl.compiler.parallel import ParallelSupernet

    net = ParallelSupernet(space, (3, 16, 16))
    erasing = erasing_graph(net.network)
    opt = H2SPG(net, erasing, lr=0.1, target=6 / len(erasing.structures))
    edge = erasing.structures["stage1.cell.0.x2.op1"]
    taken = opt.select({n: (1.0 if n == edge.name else 0.0) for n in erasing.structures})
    assert taken == (edge.name,)  # the edge and its five options: six groups, the target


def test_training_reaches_the_target_with_whole_groups_at_zero_and_a_valid_network():
    torch.manual_seed(0)
    module, erasing = _superresnet()
    opt = H2SPG(module, erasing, lr=0.05, target=0.5, warmup_steps=2, lam=20.0)
    _train(module, opt, 6)
    assert opt.redundant and opt.zero  # the push projected some groups to zero already
    zero_now = set(opt.zero)
    _train(module, opt, 2, seed=1)
    assert zero_now <= set(opt.zero_groups())  # a zero group stays zero
    opt.zero_redundant()
    zero = opt.zero_groups()
    assert len(zero) == 34 and opt.group_sparsity() == pytest.approx(34 / 67)
    assert erasing.check(zero)
    for name in zero:  # nothing of a zero group moves in a later step: no momentum left on it
        for param, index in opt.variables[name]:
            buf = opt.state[opt.named[param]]["momentum"]
            assert not (buf if index is None else buf[index]).any()
    _train(module, opt, 1, seed=2)
    assert set(zero) <= set(opt.zero_groups())
    assert torch.isfinite(module(torch.randn(2, 1, 28, 28))).all()


def test_state_resumes_the_same_steps():
    torch.manual_seed(0)
    module, erasing = _superresnet()
    opt = H2SPG(module, erasing, lr=0.05, target=0.3, warmup_steps=1, lam=0.5)
    _train(module, opt, 3)
    saved_module = {k: v.clone() for k, v in module.state_dict().items()}
    saved = copy.deepcopy(opt.state_dict())  # as a checkpoint on disk holds it
    _train(module, opt, 2, seed=1)
    after = {k: v.clone() for k, v in module.state_dict().items()}
    module.load_state_dict(saved_module)
    again = H2SPG(module, erasing, lr=0.05, target=0.3, warmup_steps=1, lam=0.5)
    again.load_state_dict(saved)
    assert again.redundant == opt.redundant and again.steps == 3
    _train(module, again, 2, seed=1)
    assert all(torch.equal(after[k], v) for k, v in module.state_dict().items())


def test_bad_settings_are_clear_errors():
    module, erasing = _superresnet()
    with pytest.raises(NasError, match="target group sparsity"):
        H2SPG(module, erasing, lr=0.1, target=1.5)
    with pytest.raises(NasError, match="epsilon"):
        H2SPG(module, erasing, lr=0.1, epsilon=1.0)
