"""Unstructured sparsity: global magnitude masks, the progressive schedule,
RigL-style reactivation, and masks that follow their weights through a structured
prune."""

import copy
import math

import pytest
import torch
from nasdsl.runtime.sparsity import Masks, prunable_weights, sparsity_at
from support import SPACES

import nasdsl
from nasdsl.compiler.groups import channel_groups, prune


def _mobilenet():
    space = nasdsl.load(SPACES / "mobilenetv3.nas", {"width": 0.5, "num_classes": 10})
    d = space.sample(seed=3)
    return space.graph(d, (3, 32, 32)), space.compile(d, (3, 32, 32), seed=0)


def test_global_magnitude_pruning_keeps_the_largest_weights_of_all_layers():
    _, module = _mobilenet()
    masks = Masks.dense(module).pruned(module, 0.3)
    weights = prunable_weights(module)
    total = sum(w.numel() for w in weights.values())
    assert sum(int((~m).sum()) for m in masks.masks.values()) == math.floor(0.3 * total)
    kept = torch.cat([w.detach().abs()[masks.masks[k]] for k, w in weights.items()])
    cut = torch.cat([w.detach().abs()[~masks.masks[k]] for k, w in weights.items()])
    assert kept.min() >= cut.max()
    per_layer = [1 - m.float().mean().item() for m in masks.masks.values()]
    assert max(per_layer) - min(per_layer) > 0.2  # global, not the same share per layer
    # pruning further keeps what is pruned pruned, and apply() zeroes it
    more = masks.pruned(module, 0.5)
    assert all((~more.masks[k] | ~m).all() or (~more.masks[k])[~m].all() for k, m in masks.masks.items())
    assert more.sparsity() == pytest.approx(0.5, abs=1e-6)
    more.apply(module)
    assert all((w[~more.masks[k]] == 0).all() for k, w in prunable_weights(module).items())


def test_the_progressive_schedule_adds_a_step_every_interval_up_to_the_target():
    assert [sparsity_at(e, every=3, target=0.25) for e in range(1, 10)] == \
        pytest.approx([0, 0, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.25])
    assert sparsity_at(5, every=0, target=0.9) == 0.0


def test_regrowing_reactivates_the_pruned_weights_with_the_largest_gradients():
    _, module = _mobilenet()
    masks = Masks.dense(module).pruned(module, 0.6)
    masks.apply(module)
    module(torch.randn(2, 3, 32, 32)).sum().backward()
    weights = prunable_weights(module)
    pruned_before = sum(int((~m).sum()) for m in masks.masks.values())
    grown = masks.regrown(module, 0.1)
    revived = {k: grown.masks[k] & ~m for k, m in masks.masks.items()}
    assert sum(int(r.sum()) for r in revived.values()) == math.floor(0.1 * pruned_before)
    chosen = torch.cat([weights[k].grad.abs()[r] for k, r in revived.items()])
    passed = torch.cat([weights[k].grad.abs()[~grown.masks[k]] for k in revived])
    assert chosen.min() >= passed.max()
    assert all((weights[k][r] == 0).all() for k, r in revived.items())  # reactivated at zero
    assert all(grown.masks[k][m].all() for k, m in masks.masks.items())  # nothing kept was dropped
    assert Masks.dense(module).sparsity() == 0 and grown.reset().sparsity() == 0


def test_masks_follow_their_weights_through_a_structured_prune():
    graph, module = _mobilenet()
    module.eval()
    masks = Masks.dense(module).pruned(module, 0.5)
    groups = [g for g in channel_groups(graph) if g.prunable and g.channels > 2]
    keep = {g.name: range(0, g.channels, 2) for g in groups[:4]}
    masked = copy.deepcopy(module)
    masks.apply(masked)
    small = prune(graph, module, keep)
    small_masks = masks.sliced(graph, module, keep)
    expected = prune(graph, masked, keep)  # prune the masked weights: the same as masking the pruned ones
    for k, w in prunable_weights(small).items():
        assert torch.equal(w.detach() * small_masks.masks[k], prunable_weights(expected)[k].detach()), k
    assert any(small_masks.masks[k].shape != m.shape for k, m in masks.masks.items())
    with pytest.raises(ValueError, match="disagree"):
        masks.apply(small)


def test_a_rigl_swap_reaches_the_sparsity_with_a_changed_pattern():
    _, module = _mobilenet()
    masks = Masks.dense(module).pruned(module, 0.3)
    masks.apply(module)
    module(torch.randn(2, 3, 32, 32)).sum().backward()
    swapped = masks.pruned_and_regrown(module, 0.5, 0.2)
    plain = masks.pruned(module, 0.5)
    total = sum(m.numel() for m in masks.masks.values())
    assert sum(int((~m).sum()) for m in swapped.masks.values()) == math.floor(0.5 * total)
    assert any(not torch.equal(swapped.masks[k], plain.masks[k]) for k in plain.masks)  # some regrown
