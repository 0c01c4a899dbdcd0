"""SuperTickets: dynamic shrinkage that keeps the network a derivation of its space and
computes exactly what the masked network did, weights and masks carried across it by
position, the pruning schedules, and `--algorithm supertickets` end to end."""

import json
from pathlib import Path

import pytest
import torch
from nasdsl.runtime.algorithms import create
from nasdsl.runtime.algorithms.supertickets import TICKET, load_ticket
from nasdsl.runtime.shrink import Shrunk, branches, build, carry, positions, shrink
from nasdsl.runtime.sparsity import Masks
from nasdsl.runtime.store import Store

import nasdsl
from nasdsl.cli import main
from nasdsl.space.derivation import Derivation, Picked, get_path, replace_path, split_path

ROOT = Path(__file__).resolve().parent.parent
SUPERRESNET = str(ROOT / "spaces" / "superresnet.nas")
SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def space():
    return nasdsl.load(SUPERRESNET).bind(C=4, in_channels=1, resolution=16)


def _zero(module, *names):
    with torch.no_grad():
        for name in names:
            module.get_submodule(name).weight.zero_()


def _masked(module, graph, shrunk, step):
    """The module with the step's masked channels at zero, as the training holds them."""
    at = positions(graph, shrunk.keep)
    with torch.no_grad():
        for node, full in step.masked.items():
            here = at[f"{node}.weight"].tolist()
            local = [here.index(i) for i in full if i in here]
            bn = module.get_submodule(node)
            bn.weight[local] = 0
            bn.bias[local] = 0
    return module


def test_a_shrink_step_erases_dead_branches_and_the_smaller_network_computes_the_same(space):
    start = Shrunk(space.preset("supernet"))
    graph, module = build(space, start, SHAPE, seed=0)
    unit = "stage2.rest.0.unit.unit.pick"
    _zero(module, f"{unit}.basic.basic.bn1",  # an inner group emptied: the branch goes
          "stage1.unit.pick.sep5.sep5.bn2",  # every scale it hands to the sum below the threshold
          *(f"stage3.rest.1.unit.unit.pick.{b}" for b in ("basic.basic.bn1", "bottleneck.bottleneck.bn1",
                                                           "sep5.sep5.bn2", "dil3.dil3.bn2")))
    with torch.no_grad():  # half a group's channels: masked, the group kept narrower
        module.get_submodule("stage4.unit.pick.basic.basic.bn1").weight[:16] = 1e-5
    step = shrink(space, start, graph, module, 1e-3)
    d = step.shrunk.derivation
    assert get_path(d.root, "stage2.rest.0.unit.pick").labels() == ("bottleneck", "sep5", "dil3")
    assert get_path(d.root, "stage2.rest.0.unit.branches") == 3  # the pick's count follows it
    assert get_path(d.root, "stage1.unit.pick").labels() == ("basic", "bottleneck", "dil3")
    assert get_path(d.root, "stage3.rest.1").label == "skip"  # a unit with no branch left is its identity
    assert step.shrunk.keep == {"stage4.unit.pick.basic.basic.conv1": tuple(range(16, 32))}
    assert {b.prefix for b in step.erased} >= {f"{unit}.basic.", "stage1.unit.pick.sep5."}
    assert d in space and step.masked_macs > 0
    # the masked network and the rebuilt one agree (eval mode: running statistics carried)
    masked = _masked(module, graph, start, step).eval()
    small_graph, small = build(space, step.shrunk, SHAPE, seed=1)
    small.load_state_dict(carry(module.state_dict(), positions(graph, start.keep),
                                positions(small_graph, step.shrunk.keep), small.state_dict()))
    small.eval()
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(masked(x), small(x), atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in module.parameters())


def test_a_first_unit_keeps_its_strongest_branch_and_nothing_dead_changes_nothing(space):
    start = Shrunk(space.preset("supernet"))
    graph, module = build(space, start, SHAPE, seed=0)
    assert shrink(space, start, graph, module, 1e-3).shrunk == start  # fresh scales are 1
    _zero(module, *(f"stage2.unit.pick.{b}" for b in ("basic.basic.bn1", "bottleneck.bottleneck.bn1",
                                                      "sep5.sep5.bn2")))
    with torch.no_grad():
        module.get_submodule("stage2.unit.pick.dil3.dil3.bn2").weight.fill_(1e-4)
    d = shrink(space, start, graph, module, 1e-3).shrunk.derivation
    # stage2's first unit changes width and stride: it keeps one branch, the one with the largest scales
    assert get_path(d.root, "stage2.unit.pick").labels() == ("dil3",)


def test_branches_are_the_candidates_of_summed_picks(space):
    d = space.preset("supernet")
    found = branches(space.graph(d, SHAPE), d)
    assert len(found) == 4 * 4 * 4  # 4 stages x 4 units x 4 branches
    first = found[0]
    assert (first.pick, first.label, first.outputs) == ("stage1.unit.pick", "basic",
                                                        ("stage1.unit.pick.basic.basic.bn2",))


def test_nearest_gives_a_pick_of_another_size_its_count(space):
    d = space.preset("supernet")
    picked = get_path(d.root, "stage1.unit.pick")
    root = replace_path(d.root, split_path("stage1.unit.pick"), Picked(picked.items[:2]))
    near = Derivation(space.root.nearest(root))
    assert get_path(near.root, "stage1.unit.branches") == 2
    assert get_path(near.root, "stage1.unit.pick").labels() == ("basic", "bottleneck")


def test_masks_and_weights_cross_a_rebuild_by_position(space):
    start = Shrunk(space.preset("supernet"))
    graph, module = build(space, start, SHAPE, seed=0)
    masks = Masks.dense(module).pruned(module, 0.5)
    keep = {"stage1.unit.pick.basic.basic.conv1": (1, 3)}
    small_graph, small = build(space, Shrunk(start.derivation, keep), SHAPE, seed=1)
    old_at, new_at = positions(graph, {}), positions(small_graph, keep)
    moved = carry({k: m.double() for k, m in masks.masks.items()}, old_at, new_at,
                  {k: torch.ones_like(m, dtype=torch.float64) for k, m in Masks.dense(small).masks.items()})
    conv1, conv2 = "stage1.unit.pick.basic.basic.conv1.weight", "stage1.unit.pick.basic.basic.conv2.weight"
    assert torch.equal(moved[conv1].bool(), masks.masks[conv1][[1, 3]])
    assert torch.equal(moved[conv2].bool(), masks.masks[conv2][:, [1, 3]])
    state = carry(module.state_dict(), old_at, new_at, small.state_dict())
    assert torch.equal(state[conv2], module.state_dict()[conv2][:, [1, 3]])


def test_the_pruning_schedules():
    progressive = create("supertickets", {"sparsity": 0.3, "prune_every": 2})
    assert progressive.full_at == 6
    assert [progressive.sparsity_after(e) for e in range(1, 9)] == [0, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3]
    assert [e for e in range(1, 11) if progressive.prunes_at(e, 10)] == [2, 4, 6]
    oneshot = create("supertickets", {"sparsity": 0.3, "prune_every": 2, "prune_schedule": "oneshot"})
    assert [oneshot.sparsity_after(e) for e in (5, 6, 7)] == [0, 0.3, 0.3]
    assert [e for e in range(1, 11) if oneshot.prunes_at(e, 10)] == [6]
    regrow = create("supertickets", {"sparsity": 0.3, "prune_every": 2, "reactivate": "regrow"})
    assert [e for e in range(1, 11) if regrow.prunes_at(e, 10)] == [2, 4, 6, 8]  # swaps go on, not after the last
    assert create("supertickets", {"sparsity": 0.0}).full_at == 0


ST = ["--dataset", "digits", "--limit", "300", "--algorithm", "supertickets", "--param", "C=4", "--epochs", "3",
      "--batch-size", "32", "--trials", "1", "--retrain-epochs", "1", "--test-top", "1", "--bn-l1", "0.05",
      "--sparsity", "0.2", "--prune-every", "1", "--shrink-threshold", "0.3", "--calibration-batches", "2"]


def test_supertickets_shrinks_prunes_stores_its_epochs_and_saves_the_ticket(tmp_path, capsys):
    store_path = tmp_path / "s.db"
    assert main(["search", SUPERRESNET, *ST, "--store", str(store_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished"] == 1
    with Store.open(store_path) as store:
        rows = store.get_state("supertickets")
        ticket = store.get_state("superticket")
        trials = store.trials()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [round(r["sparsity"], 2) for r in rows] == [0.1, 0.2, 0.2]
    assert rows[-1]["macs"] < rows[0]["macs"] and any(r["erased"] for r in rows)  # the push emptied branches
    assert trials[0].derivation == rows[-1]["derivation"] == ticket["derivation"]  # retrained alone
    space = nasdsl.load(SUPERRESNET, {"C": 4, "resolution": 8, "in_channels": 1, "num_classes": 10})
    folder = tmp_path / "s.db.ckpt"
    preset = (folder / "superticket.nas").read_text().split("preset superticket = ")[1].strip()
    assert space.parse(preset).text == ticket["derivation"]
    module = load_ticket(space, folder / TICKET)  # the ticket: its channels, weights and masks
    weights = [m.weight for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    zero = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zero >= 0.2 and sum(p.numel() for p in module.parameters()) == ticket["params"]
    capsys.readouterr()
    assert main(["trials", "--store", str(store_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["supertickets"] == rows
    # exported as a module with its masks: the .py file's state_dict is the ticket's, pruned weights zero
    assert main(["export", "--store", str(store_path), "--ticket", "--out", str(tmp_path / "x"), "--formats", "py",
                 "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert sorted(files) == ["masks", "py", "state_dict"]
    exported, masks = torch.load(files["state_dict"]), torch.load(files["masks"])
    assert exported.keys() == module.state_dict().keys()
    assert all(torch.equal(exported[k], v) for k, v in module.state_dict().items())
    assert all(not exported[k][~m].any() for k, m in masks.items())
    assert main(["report", "--store", str(store_path), "--out", str(tmp_path / "report")]) == 0
    assert "SuperTickets' ticket" in (tmp_path / "report" / "summary.md").read_text()
    assert (tmp_path / "report" / "supertickets.png").stat().st_size > 0


def test_bad_supertickets_settings_are_clear_errors(tmp_path, capsys):
    for flags, message in ((["--sparsity", "1.5"], "--sparsity must lie in [0, 1)"),
                           (["--base", "nope"], "has no preset `nope`")):
        assert main(["search", SUPERRESNET, *ST, *flags, "--store", str(tmp_path / f"{flags[0]}.db")]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_supertickets_draws_a_ticket_of_a_vit(tmp_path, capsys):
    """On attention and MLP layers (no batch norm, so nothing shrinks): the weights of
    every linear layer, attention's and the MLP's included, are pruned to the target,
    and the ticket loads as the space's module."""
    vit = str(ROOT / "spaces" / "vit.nas")
    base = "(e=192, block=(h=3, r=4.0), rest=[(h=4, r=3.0)])"
    params = ["--param", "patch=4", "--param", "width=0.0625", "--param", "head_dim=4"]
    args = ["--dataset", "digits", "--limit", "300", "--algorithm", "supertickets", "--base", base, *params,
            "--epochs", "2", "--batch-size", "32", "--trials", "1", "--retrain-epochs", "1", "--test-top", "1",
            "--optimizer", "adamw", "--lr", "0.002", "--sparsity", "0.2", "--prune-every", "1"]
    store_path = tmp_path / "v.db"
    assert main(["search", vit, *args, "--store", str(store_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished"] == 1
    with Store.open(store_path) as store:
        rows, ticket = store.get_state("supertickets"), store.get_state("superticket")
    assert [round(r["sparsity"], 2) for r in rows] == [0.1, 0.2] and ticket["derivation"] == rows[-1]["derivation"]
    space = nasdsl.load(vit, {"patch": 4, "width": 0.0625, "head_dim": 4, "resolution": 8, "in_channels": 1,
                              "num_classes": 10})
    assert ticket["derivation"] == space.parse(base).text
    module = load_ticket(space, tmp_path / "v.db.ckpt" / TICKET)
    qkv = module.get_submodule("block.attention.qkv").weight
    linears = [m.weight for m in module.modules() if isinstance(m, torch.nn.Linear)]
    assert (qkv == 0).any() and sum(int((w == 0).sum()) for w in linears) / sum(w.numel() for w in linears) >= 0.15
