"""Single-path supernets: every derivation runs on one bank of weights, exactly as its
own compiled module would, and trains only the part of the bank it uses."""

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import nasdsl
from nasdsl.compiler.supernet import Supernet, SupernetError
from nasdsl.space import plan as planning
from nasdsl.space.strategies import derivations

# every shipped space whose supernet fits, at sizes a test can run (hnb201 does not fit: see below)
FITTING = {
    "nb201": ({"C": 8, "N": 2}, (3, 32, 32)),
    "darts": ({"C": 8, "layers": 5}, (3, 32, 32)),
    "mobilenet3_mt": ({"width": 0.25, "resolution": 32, "num_classes": 10}, (3, 32, 32)),
    "mobilenetv3": ({"width": 0.25, "resolution": 32, "num_classes": 10}, (3, 32, 32)),
    "tutorial": ({}, (1, 28, 28)),
    "superresnet": ({"C": 8}, (3, 32, 32)),
    # heads, head widths and MLP widths slice q, k and v each (AutoFormer's weight entanglement)
    "vit": ({"resolution": 16, "patch": 4, "width": 0.125, "head_dim": 8, "num_classes": 10}, (3, 16, 16)),
    "unet": ({"base": 4, "max_depth": 3, "resolution": 16, "num_classes": 3}, (1, 16, 16)),
}
_NETS: dict = {}


def supernet(name):
    if name not in _NETS:
        params, shape = FITTING[name]
        space = nasdsl.load(f"spaces/{name}.nas", params)
        _NETS[name] = (space, Supernet(space, shape), shape)
    return _NETS[name]


def _seeded(module, *args):
    torch.manual_seed(1)  # dropout draws the same mask in both
    return module(*args)


def bank_grads(net):
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in net.bank.named_parameters()}


@pytest.mark.parametrize("name", sorted(FITTING))
def test_a_derivation_runs_on_the_bank_as_its_own_module(name):
    space, net, shape = supernet(name)

    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(derivations(space))
    def check(d):
        torch.manual_seed(0)
        x = torch.randn(3, *shape)
        sub = net.subnet(d)
        for mode in ("eval", "train"):
            net.train(mode == "train")
            sub.train(mode == "train")
            torch.testing.assert_close(_seeded(net, x, d), _seeded(sub, x), rtol=1e-5, atol=1e-5)
        # one backward: the bank's gradient is the child's, inside d's windows, and zero elsewhere
        net.train()
        net.zero_grad(set_to_none=True)
        sub.zero_grad(set_to_none=True)
        _seeded(net, x, d).square().mean().backward()
        _seeded(sub, x).square().mean().backward()
        grads = bank_grads(net)
        for key, p in sub.named_parameters():
            want = p.grad if p.grad is not None else torch.zeros_like(p)
            got, place = grads[key], net._tensors[key].place
            for view, index in place(got, p.shape):  # the window, aligned as the weights are
                torch.testing.assert_close(view, want[index], rtol=1e-4, atol=1e-6, msg=key)
            inside = torch.zeros_like(got, dtype=torch.bool)
            for view, _ in place(inside, p.shape):
                view.fill_(True)
            assert not got[~inside].any(), key
        used = {k for k, _ in sub.named_parameters()}
        assert all(not g.any() for k, g in grads.items() if k not in used)

    check()


def test_a_trained_child_goes_back_into_the_bank():
    space, net, shape = supernet("nb201")
    d = space.sample(3)
    child = net.subnet(d)
    with torch.no_grad():
        for p in child.parameters():
            p.add_(1.0)
    net.load_subnet(d, child)
    again = net.subnet(d)
    for (k, a), (_, b) in zip(child.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    other = space.sample(4)
    with pytest.raises(SupernetError, match="not derivation"):
        net.load_subnet(other, child) if other != d else net.load_subnet(space.sample(5), child)


def test_batch_statistics_and_recalibration():
    space, net, shape = supernet("mobilenet3_mt")
    d = space.sample(7)
    batches = [torch.randn(8, *shape) for _ in range(3)]
    before = {k: b.clone() for k, b in net.bank.named_buffers()}
    net.eval()
    sub = net.subnet(d).eval()
    for m in sub.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train()  # batch statistics, the rest (dropout) in eval
    torch.testing.assert_close(net(batches[0], d, bn="train"), sub(batches[0]), rtol=1e-5, atol=1e-5)
    assert all(torch.equal(b, before[k]) for k, b in net.bank.named_buffers())  # bn="train" leaves the bank's alone
    net.recalibrate(d, batches)
    sub = net.subnet(d)
    alone = net.subnet(d)
    for m in alone.modules():  # the same estimate, made on the child itself
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    alone.train()
    with torch.no_grad():
        for x in batches:
            alone(x)
    for k, v in alone.state_dict().items():
        if "running" in k:
            torch.testing.assert_close(sub.state_dict()[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_the_size_is_known_before_allocating_and_a_limit_refuses_more():
    space = nasdsl.load("spaces/hnb201.nas")
    size = Supernet.measure(space)
    assert size.params > 100_000_000  # hNB201's supernet does not fit the default limit
    with pytest.raises(SupernetError, match=f"{size.params:,} parameters"):
        Supernet(space)
    small, net, shape = supernet("nb201")
    measured = Supernet.measure(small, shape)
    assert measured == net.size and measured.params == sum(p.numel() for p in net.parameters())


def test_a_derivation_larger_than_the_bank_is_a_clear_error():
    """The cover takes the largest w; the width it steers is then the smallest."""
    space = nasdsl.loads("space t\nnetwork = conv(out=c)\n    where w = {8, 16}, c = if w == 16 then 4 else 32\n")
    net = Supernet(space, (3, 8, 8))
    wide = space.parse("(w=8)")
    with pytest.raises(SupernetError, match=r"needs a tensor of \[32, 3, 3, 3\]; the bank holds \[4, 3, 3, 3\]"):
        net(torch.randn(1, 3, 8, 8), wide)
    covered = Supernet(space, (3, 8, 8), cover=[wide])
    torch.testing.assert_close(covered(torch.ones(1, 3, 8, 8), wide), covered.subnet(wide)(torch.ones(1, 3, 8, 8)))


def test_one_path_with_tensors_of_different_kinds_is_refused():
    space = nasdsl.loads("space t\nnetwork = conv(out=3) (if f then (conv(out=3) as a) else (bn as a))\n"
                         "    where f = {true, false}\n")
    with pytest.raises(SupernetError, match="`a.weight` is a 4-d tensor in one derivation and 1-d in another"):
        Supernet(space, (3, 8, 8))


def test_the_cover_reaches_every_option_at_every_place():
    space = nasdsl.load("spaces/darts.nas", {"C": 8, "layers": 5})
    cover = space.cover()
    wanted = planning.Wanted()
    space.root.choices((), wanted)
    state = planning.Covering()
    for _ in cover:
        space.root.cover(state, ())
    assert wanted <= state.reached and len(cover) < 50


def test_the_cli_measures_a_supernet(capsys):
    from nasdsl.cli.commands import main

    assert main(["supernet", "spaces/nb201.nas", "--param", "C=8", "--param", "N=2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    space, net, _ = supernet("nb201")
    assert data["params"] == net.size.params and data["fits"] and data["cover"] == len(space.cover())
    assert main(["supernet", "spaces/hnb201.nas", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"] is False
