"""NAO's encoder-predictor-decoder on a task with a known answer: tokens whose mean is
the accuracy. It must rank held-out sequences, reconstruct what it was trained on,
respect the decoding mask, and move sequences towards better ones."""

import random

import pytest
import torch
from nasdsl.runtime.controller import Controller, ControllerConfig, normalised, pairwise_accuracy

LENGTH, VOCABULARY = 6, 5


def score(seq):
    return sum(seq) / (LENGTH * (VOCABULARY - 1))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    rng = random.Random(0)
    seqs = list({tuple(rng.randrange(VOCABULARY) for _ in range(LENGTH)) for _ in range(260)})
    train, held_out = seqs[:200], seqs[200:]
    controller = Controller(VOCABULARY, LENGTH, ControllerConfig(epochs=150, batch_size=50))
    losses = controller.fit(train, [score(s) for s in train], seed=0)
    return controller, train, held_out, losses


def test_it_learns_to_rank_sequences_it_has_not_seen(trained):
    controller, _, held_out, losses = trained
    assert losses[-1] < losses[0] / 2
    with torch.no_grad():
        predicted = controller.predict(torch.tensor(held_out)).tolist()
    # trained 0.90 here; an untrained controller already orders 0.67 of the pairs (embeddings sum)
    assert pairwise_accuracy(predicted, [score(s) for s in held_out]) > 0.85


def test_it_reconstructs_what_it_was_trained_on_and_keeps_to_the_mask(trained):
    controller, train, _, _ = trained
    everything = lambda prefix: range(VOCABULARY)  # noqa: E731
    with torch.no_grad():
        decoded = controller.decode(controller.encode(torch.tensor(train[:40])), everything)
    assert sum(d == s for d, s in zip(decoded, train)) >= 30
    only_ones_first = lambda prefix: {1} if not prefix else range(VOCABULARY)  # noqa: E731
    with torch.no_grad():
        masked = controller.decode(controller.encode(torch.tensor(train[:10])), only_ones_first)
    assert all(s[0] == 1 and len(s) == LENGTH for s in masked)


def test_gradient_ascent_in_embedding_space_finds_better_sequences(trained):
    controller, train, _, _ = trained
    seeds = sorted(train, key=score)[:30]  # room to improve
    moved = controller.generate(seeds, lambda prefix: range(VOCABULARY), step=3.0)
    assert sum(map(score, moved)) / len(moved) > sum(map(score, seeds)) / len(seeds) + 0.05


def test_helpers():
    assert normalised([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert normalised([1.0, 1.0]) == [0.5, 0.5]
    assert pairwise_accuracy([1, 2, 3], [10, 20, 30]) == 1.0
    assert pairwise_accuracy([3, 2, 1], [10, 20, 30]) == 0.0
