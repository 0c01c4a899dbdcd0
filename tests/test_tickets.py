"""Lottery tickets as derivations (runtime/tickets.py): a trained network pruned
by its channel groups becomes a smaller member of its space, carrying the kept
weights; groups that no choice controls stay whole."""

from pathlib import Path

import pytest
import torch
from nasdsl.runtime.tickets import Ticket, best_ticket, nearest, ticket_candidates
from support import SMALL, changed, look_trained

import nasdsl
from nasdsl.compiler.groups import channel_groups, prune
from nasdsl.language.errors import NasError
from nasdsl.space.derivation import Derivation

SPACES = Path(__file__).resolve().parent.parent / "spaces"
FASHION = {"resolution": 28, "in_channels": 1, "num_classes": 10}
MT = nasdsl.load(SPACES / "mobilenet3_mt.nas").bind(**FASHION, width=0.5, max_depth=2)
SHAPE = (1, 28, 28)
X = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0))


def trained(module, seed=0):
    return look_trained(module, seed, min_scale=0.1)


def with_values(space, d, changes):
    root = changed(d, changes)
    return Derivation(nearest(space.root, root))  # made valid: nearest allowed values


def se_everywhere(d, on: bool):
    return with_values(MT, d, {p: on for p in d.choices() if p.endswith("use_se")})


def ticket_module(space, ticket, shape=SHAPE):
    module = space.compile(ticket.derivation, shape, seed=5)
    module.load_state_dict(ticket.state)
    return module.eval()


def bn_importance(graph, module, group):
    """Summed |gamma| of the group's batch norms, computed here independently."""
    state = module.state_dict()
    score = torch.zeros(group.channels)
    for node, side, positions in group.members:
        if side == "out" and graph.nodes[node]["op"] == "bn":
            score += state[f"{node}.weight"].abs()[list(positions)]
    return score


def test_a_ticket_without_se_is_a_smaller_derivation_that_computes_what_the_pruned_module_does():
    d = se_everywhere(MT.sample(seed=3), False)
    graph, module = MT.graph(d), trained(MT.compile(d))
    [ticket] = ticket_candidates(MT, d, module, SHAPE, ratios=(0.3,))
    assert isinstance(ticket, Ticket) and ticket.ratio == 0.3 and ticket.pruned
    assert ticket.params < graph.graph["params"] and ticket.macs < graph.graph["macs"]
    assert MT.validate(ticket.derivation) == ticket.derivation
    child = ticket_module(MT, ticket)
    assert ticket.params == sum(p.numel() for p in child.parameters())
    pruned = prune(graph, module, ticket.keep).eval()
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {k: v.shape for k, v in ticket.state.items()}
    with torch.no_grad():
        torch.testing.assert_close(child(X), pruned(X))
    groups = {g.name: g for g in channel_groups(graph)}
    for name, kept in ticket.keep.items():  # the kept channels are the group's strongest
        score = bn_importance(graph, module, groups[name])
        removed = sorted(set(range(groups[name].channels)) - set(kept))
        assert removed and score[kept].min() >= score[removed].max(), name


def test_squeeze_excitation_narrowed_by_its_formula_is_sliced_and_stays_close():
    d = se_everywhere(MT.sample(seed=3), True)
    graph, module = MT.graph(d), trained(MT.compile(d))
    [ticket] = ticket_candidates(MT, d, module, SHAPE, ratios=(0.5,))
    pruned = prune(graph, module, ticket.keep).eval()
    narrowed = [k for k in ticket.state if k.endswith("se.fc1.weight")
                and ticket.state[k].shape[0] < pruned.state_dict()[k].shape[0]]
    assert narrowed  # the SE width follows make_divisible(hidden // 4, 8), not the pruner
    with torch.no_grad():
        a, b = ticket_module(MT, ticket)(X), pruned(X)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0.05, atol=0.05 * b.abs().max().item())


def test_a_residual_couples_two_width_choices_and_both_are_pruned():
    """At width 1 the stem and stage 1 may both be 16 wide, joined by stage 1's residual
    add: one channel group, two choices that must move together."""
    space = nasdsl.load(SPACES / "mobilenet3_mt.nas").bind(**FASHION, max_depth=1)
    d = with_values(space, space.sample(seed=0), {"stem_channels": 16, "stage.channels": 16})
    assert d["stem_channels"] == d["stage.channels"] == 16
    graph, module = space.graph(d), trained(space.compile(d))
    [ticket] = ticket_candidates(space, d, module, SHAPE, ratios=(0.5,))
    assert ticket.derivation["stem_channels"] == ticket.derivation["stage.channels"] == 8
    assert len(ticket.keep["stem.conv"]) == 8 and "stem.conv" not in ticket.uncontrolled
    assert graph.nodes["stage.block.add"]["op"] == "add"
    assert space.graph(ticket.derivation).nodes["stage.block.add"]["op"] == "add"  # still one group
    with torch.no_grad():
        assert ticket_module(space, ticket)(X).shape == (4, 10)


def test_ratios_give_distinct_tickets_that_shrink():
    d = MT.sample(seed=5)
    module = trained(MT.compile(d))
    tickets = ticket_candidates(MT, d, module, SHAPE)
    assert [t.ratio for t in tickets] == sorted(t.ratio for t in tickets)
    assert len({t.derivation.hash for t in tickets}) == len(tickets) >= 2
    sizes = [t.params for t in tickets]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] < MT.graph(d).graph["params"]


@pytest.mark.parametrize("ratios", [(0.0,), (1.0,), (1.5,), (-0.1,), (True,), ("0.3",), ()])
def test_a_bad_ratio_is_refused(ratios):
    d = MT.sample(seed=3)
    with pytest.raises(NasError, match="ratio"):
        ticket_candidates(MT, d, MT.compile(d), SHAPE, ratios=ratios)


def test_a_module_of_another_derivation_is_refused():
    a, b = MT.sample(seed=3), MT.sample(seed=4)
    with pytest.raises(NasError, match="module compiled from this derivation"):
        ticket_candidates(MT, a, MT.compile(b), SHAPE)


def test_a_space_without_width_choices_gives_one_unpruned_ticket():
    tutorial = nasdsl.load(SPACES / "tutorial.nas")
    d = tutorial.sample(seed=2)
    graph, module = tutorial.graph(d), trained(tutorial.compile(d))
    tickets = ticket_candidates(tutorial, d, module, SHAPE)
    assert len(tickets) == 1
    [ticket] = tickets
    prunable = [g.name for g in channel_groups(graph) if g.prunable]
    assert ticket.derivation == d and ticket.keep == {} and ticket.pruned == ()
    assert list(ticket.uncontrolled) == prunable and prunable
    assert ticket.params == graph.graph["params"]
    assert all(torch.equal(ticket.state[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize("name,params", [("nb201", {"C": 4, "N": 1}),
                                         ("regnet", {"resolution": 32, "num_classes": 10}),
                                         ("superresnet", {"resolution": 28, "in_channels": 1, "C": 8, "blocks": 2}),
                                         ("vit", SMALL["vit"]), ("unet", SMALL["unet"])])
def test_tickets_of_other_spaces_are_valid_and_run(name, params):
    space = nasdsl.load(SPACES / f"{name}.nas").bind(**params)
    d = space.sample(seed=1)
    graph = space.graph(d)
    tickets = ticket_candidates(space, d, trained(space.compile(d)), graph.graph["input_shape"], ratios=(0.2, 0.5))
    for ticket in tickets:
        assert space.validate(ticket.derivation) == ticket.derivation and ticket.params <= graph.graph["params"]
        with torch.no_grad():
            y = ticket_module(space, ticket, graph.graph["input_shape"])(torch.randn(2, *graph.graph["input_shape"]))
        assert torch.isfinite(y).all()


def test_nearest_keeps_members_and_repairs_the_rest():
    for d in MT.samples(5, seed=0):
        assert nearest(MT.root, d.root) == d.root
    d = MT.sample(seed=3)
    # stage 2's first block may expand to 6x its input (stage 1's 8 channels): 200 is clamped to 48
    clamped = with_values(MT, d, {"stage.stage.block.mbconv.hidden": 200})
    assert clamped["stage.stage.block.mbconv.hidden"] == 48
    assert with_values(MT, d, {"stage.stage.block.mbconv.hidden": 13})["stage.stage.block.mbconv.hidden"] == 16
    assert with_values(MT, d, {"stage.stage.block.mbconv.hidden": 12})["stage.stage.block.mbconv.hidden"] == 8
    assert with_values(MT, d, {"stage.stage.block.mbconv.hidden": 2})["stage.stage.block.mbconv.hidden"] == 8
    assert with_values(MT, d, {"head.last_conv.channels": 1})["head.last_conv.channels"] == 240  # the floor
    repaired = with_values(MT, d, {"stage.stage.block.mbconv.nl": "gelu"})  # not offered: an offered one
    assert repaired["stage.stage.block.mbconv.nl"] in ("relu", "hswish")
    assert repaired["stage.stage.block.mbconv.hidden"] == d["stage.stage.block.mbconv.hidden"]


class T:  # what best_ticket reads of a ticket
    def __init__(self, params):
        self.params = params


def test_best_ticket_is_the_smallest_within_tolerance_else_the_most_accurate():
    tickets = [T(900), T(700), T(500), T(300)]
    assert best_ticket(tickets, [0.90, 0.897, 0.896, 0.85], baseline_acc=0.90) == 2
    assert best_ticket(tickets, [0.90, 0.897, 0.896, 0.85], baseline_acc=0.90, tolerance=0.0) == 0
    assert best_ticket(tickets, [0.80, 0.84, 0.84, 0.70], baseline_acc=0.90) == 2  # none close: best, then smaller
    assert best_ticket(tickets, [0.80, 0.80, 0.80, 0.95], baseline_acc=0.90) == 3
    with pytest.raises(NasError, match="one accuracy per ticket"):
        best_ticket(tickets, [0.9], baseline_acc=0.9)
    with pytest.raises(NasError, match="one accuracy per ticket"):
        best_ticket([], [], baseline_acc=0.9)
