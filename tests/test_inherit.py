"""Weight inheritance by provenance (runtime/inherit.py): a child derived from a
parent starts from the parent's weights wherever they share a layer; kernels are
centre-cropped or zero-padded, channels sliced or extended, new layers fresh."""

import random

import pytest
import torch
from nasdsl.runtime.inherit import Inheritance, inherit, load_state
from support import SMALL, SPACES, changed, look_trained

import nasdsl
from nasdsl.compiler.channels import resize
from nasdsl.compiler.module import build_module
from nasdsl.language.errors import NasError
from nasdsl.space.derivation import Derivation, Rep, replace_path

MT = nasdsl.load(SPACES / "mobilenet3_mt.nas").bind(**SMALL["mobilenet3_mt"])
X = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def trained(module, seed=0):
    return look_trained(module, seed, min_scale=0.5)


def with_values(space, d, changes):
    root = changed(d, changes)
    return space.validate(Derivation(root))


def parent_and_child(space, parent_d, child_d, shape=None):
    pg, cg = space.graph(parent_d, shape), space.graph(child_d, shape)
    parent = trained(build_module(pg, seed=0))
    child = build_module(cg, seed=1)
    fresh = {k: v.clone() for k, v in child.state_dict().items()}  # the child's own initialisation
    return pg, parent, cg, child, fresh


def test_an_identical_derivation_copies_everything_and_computes_the_same():
    d = MT.sample(seed=3)
    pg, parent, cg, child, _ = parent_and_child(MT, d, d)
    result = inherit(pg, parent.state_dict(), cg, child)
    assert isinstance(result, Inheritance) and result.fraction == 1.0
    assert result.adapted == () and result.fresh == () and set(result.copied) == set(parent.state_dict())
    with torch.no_grad():
        assert torch.equal(child.eval()(X), parent(X))


def test_a_larger_kernel_is_the_parents_zero_padded_and_computes_the_same():
    conv = "stage.stage.block.mbconv.depthwise.conv"
    base = MT.sample(seed=3)
    small, large = (with_values(MT, base, {"stage.stage.block.mbconv.depthwise.kernel": k}) for k in (3, 5))
    pg, parent, cg, child, _ = parent_and_child(MT, small, large)
    result = inherit(pg, parent.state_dict(), cg, child)
    old, new = parent.state_dict()[f"{conv}.weight"], child.state_dict()[f"{conv}.weight"]
    assert old.shape[2:] == (3, 3) and new.shape[2:] == (5, 5)
    assert torch.equal(new[:, :, 1:4, 1:4], old)
    ring = new.clone()
    ring[:, :, 1:4, 1:4] = 0
    assert not ring.any()
    assert result.adapted == (f"{conv}.weight",) and result.fresh == ()
    ring_size = new.numel() - old.numel()
    assert result.fraction == pytest.approx(1 - ring_size / sum(p.numel() for p in child.parameters()))
    with torch.no_grad():  # a zero ring around a same-padded kernel changes nothing
        torch.testing.assert_close(child.eval()(X), parent(X))
    # and back: 5x5 -> 3x3 keeps the centre
    pg, parent, cg, child, _ = parent_and_child(MT, large, small)
    inherit(pg, parent.state_dict(), cg, child)
    assert torch.equal(child.state_dict()[f"{conv}.weight"], parent.state_dict()[f"{conv}.weight"][:, :, 1:4, 1:4])


def test_fewer_channels_are_the_first_ones_and_more_keep_their_fresh_values():
    block = "stage.stage.block.mbconv"
    base = with_values(MT, MT.sample(seed=3), {"stage.channels": 8})
    wide, narrow = (with_values(MT, base, {f"{block}.hidden": h}) for h in (48, 40))
    pg, parent, cg, child, _ = parent_and_child(MT, wide, narrow)
    result = inherit(pg, parent.state_dict(), cg, child)
    p, c = parent.state_dict(), child.state_dict()
    for key in (f"{block}.expand.conv.weight", f"{block}.expand.bn.running_mean", f"{block}.expand.bn.weight",
                f"{block}.depthwise.conv.weight", f"{block}.depthwise.bn.running_var"):
        assert c[key].shape[0] == 40 and torch.equal(c[key], p[key][:40]), key
        assert key in result.adapted
    assert torch.equal(c["stage.stage.block.project.conv.weight"], p["stage.stage.block.project.conv.weight"][:, :40])
    assert result.fraction == 1.0  # every value of the narrower child came from the parent

    pg, parent, cg, child, fresh = parent_and_child(MT, narrow, wide)
    assert 0 < inherit(pg, parent.state_dict(), cg, child).fraction < 1
    p, c = parent.state_dict(), child.state_dict()
    assert torch.equal(c[f"{block}.expand.conv.weight"][:40], p[f"{block}.expand.conv.weight"])
    assert torch.equal(c[f"{block}.expand.conv.weight"][40:], fresh[f"{block}.expand.conv.weight"][40:])
    bn = f"{block}.expand.bn"
    assert torch.equal(c[f"{bn}.running_var"][:40], p[f"{bn}.running_var"])
    assert torch.equal(c[f"{bn}.weight"][40:], torch.ones(8)) and torch.equal(c[f"{bn}.bias"][40:], torch.zeros(8))
    assert torch.equal(c[f"{bn}.running_mean"][40:], torch.zeros(8))
    assert torch.equal(c[f"{bn}.running_var"][40:], torch.ones(8))


def test_a_new_block_keeps_its_fresh_weights():
    base = MT.sample(seed=3)
    deep = with_values(MT, base, {})
    assert len(deep["stage.stage.rest"]) == 1
    shallow = MT.validate(Derivation(replace_path(deep.root, ["stage", "stage", "rest"], Rep(()))))
    pg, parent, cg, child, fresh = parent_and_child(MT, shallow, deep)
    result = inherit(pg, parent.state_dict(), cg, child)
    new = {k for k in child.state_dict() if k.startswith("stage.stage.rest.0.")}
    assert new and set(result.fresh) == new and result.adapted == ()
    mine, theirs = child.state_dict(), parent.state_dict()
    assert all(torch.equal(mine[k], fresh[k]) for k in new)
    assert all(torch.equal(mine[k], theirs[k]) for k in result.copied)


SWAP = """space swap
network = conv(out=8) bn relu layer gap flatten linear(3)
layer = if k == 1 then (conv(out=8, kernel=3) as op)
        else if k == 2 then (conv(out=8, kernel=3, groups=8) as op)
        else (dwconv(kernel=3) as op)
    where k = {1, 2, 3}
"""


@pytest.mark.parametrize("parent_k,child_k", [(1, 3), (1, 2), (2, 1), (3, 2)])
def test_another_op_or_grouping_at_the_same_path_is_fresh(parent_k, child_k):
    space = nasdsl.loads(SWAP)
    a, b = space.parse(f"(layer=(k={parent_k}))"), space.parse(f"(layer=(k={child_k}))")
    pg, parent, cg, child, fresh = parent_and_child(space, a, b, (3, 8, 8))
    result = inherit(pg, parent.state_dict(), cg, child)
    assert result.fresh == ("layer.op.weight",) and result.adapted == ()
    assert torch.equal(child.state_dict()["layer.op.weight"], fresh["layer.op.weight"])


def test_halved_channels_map_half_to_half():
    """FactorizedReduce's batch norm covers two concatenated convs: each half maps to its half."""
    parent = torch.arange(8.0)
    child, count = resize(parent, torch.full((4,), -1.0), blocks=2)
    assert child.tolist() == [0, 1, 4, 5] and count == 4
    grown, count = resize(torch.arange(4.0), torch.full((8,), -1.0), blocks=2)
    assert grown.tolist() == [0, 1, -1, -1, 2, 3, -1, -1] and count == 4


def shipped():
    for path in sorted(SPACES.glob("*.nas")):
        space = nasdsl.load(path)
        if not space.is_library:
            yield path.stem, space.bind(**SMALL.get(path.stem, {}))


@pytest.mark.parametrize("name,space", list(shipped()), ids=lambda v: v if isinstance(v, str) else "")
def test_inheriting_between_neighbours_never_fails(name, space):
    """Mutants and crossovers of samples, both ways: inheritance runs, the child runs,
    the fraction is a share, every tensor is accounted for, copies are exact."""
    rng = random.Random(0)
    a = space.sample(rng=rng)
    others = [space.mutate(a, rng=rng), space.mutate(space.mutate(a, rng=rng), rng=rng),
              space.crossover(a, space.sample(rng=rng), rng=rng)]
    for b in others:
        for parent_d, child_d in ((a, b), (b, a)):
            pg, parent, cg, child, _ = parent_and_child(space, parent_d, child_d)
            theirs = parent.state_dict()
            result = inherit(pg, theirs, cg, child)
            assert 0.0 <= result.fraction <= 1.0
            mine = child.state_dict()
            assert sorted(result.copied + result.adapted + result.fresh) == sorted(mine)
            assert all(torch.equal(mine[k], theirs[k]) for k in result.copied)
            with torch.no_grad():
                y = child.eval()(torch.randn(2, *cg.graph["input_shape"]))
            assert torch.isfinite(y).all()


def test_a_parent_of_another_space_is_refused():
    tutorial = nasdsl.load(SPACES / "tutorial.nas")
    nb201 = nasdsl.load(SPACES / "nb201.nas").bind(**SMALL["nb201"])
    tg = tutorial.graph(tutorial.sample(seed=0))
    ng = nb201.graph(nb201.sample(seed=0))
    with pytest.raises(NasError, match="cannot inherit weights from a `tutorial` network into a `nb201`"):
        inherit(tg, build_module(tg).state_dict(), ng, build_module(ng))
    ng.graph.pop("space")
    with pytest.raises(NasError, match="carries no space name"):
        inherit(tg, build_module(tg).state_dict(), ng, build_module(ng))


def test_load_state_reads_checkpoints_and_names_bad_ones(tmp_path):
    d = MT.sample(seed=1)
    module = MT.compile(d)
    good = tmp_path / "trial-1.pt"
    torch.save(module.state_dict(), good)
    state = load_state(good)
    assert list(state) == list(module.state_dict())
    with pytest.raises(NasError, match="no checkpoint there"):
        load_state(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:100])
    with pytest.raises(NasError, match="corrupt.pt: not a readable checkpoint"):
        load_state(corrupt)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(NasError, match="not a state_dict"):
        load_state(listed)
