"""NAO's controller (Luo et al. 2018; NAO-V2, 2019): an encoder that maps a derivation's
token sequence to a continuous embedding, a predictor of its accuracy from that
embedding, and a decoder that maps an embedding back to a sequence. Better
architectures come from gradient ascent on the predictor in embedding space,
decoded back into tokens.

    tokens ─ embed ─ LSTM ─▶ states (L, H), normalised ─ mean ─▶ MLP ─▶ predicted accuracy
                                    │
                                    └─▶ LSTM decoder with attention over the states ─▶ tokens

Training minimises `trade_off * MSE(predicted, accuracy) + (1 - trade_off) * NLL(tokens)`
with accuracies min-max normalised to [0, 1]. Decoding is greedy and masked by
`allowed(prefix)`, the space encoding's tokens allowed after a prefix, so every
generated sequence is a member of the space. It knows nothing of spaces beyond that:
a vocabulary size, a length and the mask.
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import nn
from torch.nn import functional as F


@attrs.frozen
class ControllerConfig:
    """NAO-V2's defaults (`NAO_V2/train_search.py`), scaled down where noted."""

    embedding: int = 32
    hidden: int = 64
    predictor_layers: int = 0  # hidden layers of the MLP (the code's default)
    predictor_hidden: int = 200
    dropout: float = 0.1
    trade_off: float = 0.8  # lambda: the predictor's share of the loss
    lr: float = 1e-3
    epochs: int = 200  # the code trains 1000; the pools here are small
    batch_size: int = 100
    grad_clip: float = 5.0


class Controller(nn.Module):
    def __init__(self, vocabulary: int, length: int, config: ControllerConfig = ControllerConfig()):
        super().__init__()
        self.vocabulary, self.length, self.config = vocabulary, length, config
        c = config
        self.embed = nn.Embedding(vocabulary + 1, c.embedding)  # + a start token for the decoder
        self.encoder = nn.LSTM(c.embedding, c.hidden, batch_first=True)
        layers, width = [], c.hidden
        for _ in range(c.predictor_layers):
            layers += [nn.Linear(width, c.predictor_hidden), nn.ReLU(), nn.Dropout(c.dropout)]
            width = c.predictor_hidden
        self.predictor = nn.Sequential(*layers, nn.Linear(width, 1))
        self.decoder = nn.LSTM(c.embedding, c.hidden, batch_first=True)
        self.attend = nn.Linear(2 * c.hidden, c.hidden)
        self.out = nn.Linear(c.hidden, vocabulary)

    @property
    def start(self) -> int:
        return self.vocabulary

    # ---- encoder and predictor
    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens -> (B, L, H) states, each normalised (NAO normalises them)."""
        states, _ = self.encoder(self.embed(seqs))
        return F.normalize(states, dim=-1)

    def predict_states(self, states: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.predictor(F.normalize(states.mean(1), dim=-1))).squeeze(-1)

    def predict(self, seqs: torch.Tensor) -> torch.Tensor:
        return self.predict_states(self.encode(seqs))

    # ---- decoder
    def _initial(self, states):
        h = F.normalize(states.mean(1), dim=-1).unsqueeze(0)
        return h, torch.zeros_like(h)

    def _logits(self, out, states):
        weights = torch.softmax(out @ states.transpose(1, 2), dim=-1)  # (B, T, L): attention over the states
        mixed = torch.tanh(self.attend(torch.cat([out, weights @ states], dim=-1)))
        return self.out(mixed)

    def reconstruct(self, states: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) of `seqs` from `states`."""
        start = torch.full((seqs.shape[0], 1), self.start, dtype=torch.long, device=seqs.device)
        out, _ = self.decoder(self.embed(torch.cat([start, seqs[:, :-1]], dim=1)), self._initial(states))
        return self._logits(out, states)

    @torch.no_grad()
    def decode(self, states: torch.Tensor, allowed) -> list[tuple]:
        """Greedy decoding of each row of `states`, every token chosen among `allowed(prefix)`."""
        results = []
        for row in states.split(1):
            hidden, token, prefix = self._initial(row), self.start, []
            for _ in range(self.length):
                out, hidden = self.decoder(self.embed(torch.tensor([[token]], device=row.device)), hidden)
                logits = self._logits(out, row)[0, -1]
                mask = torch.full_like(logits, -math.inf)
                mask[list(allowed(tuple(prefix)))] = 0
                token = int((logits + mask).argmax())
                prefix.append(token)
            results.append(tuple(prefix))
        return results

    # ---- training and generation
    def fit(self, seqs: list[tuple], accuracies: list[float], *, seed: int = 0, augment=None) -> list[float]:
        """Train on (sequence, accuracy) pairs; `augment(seq, rng) -> seq` may add
        equivalent sequences (NAO swaps a node's two inputs). Returns the loss per epoch."""
        c = self.config
        targets = normalised(accuracies)
        x, y = torch.tensor(seqs, dtype=torch.long), torch.tensor(targets, dtype=torch.float32)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(self.parameters(), lr=c.lr)
        losses = []
        self.train()
        for _ in range(c.epochs):
            order = torch.randperm(len(x), generator=generator)
            total = 0.0
            for i in range(0, len(x), c.batch_size):
                index = order[i:i + c.batch_size]
                states = self.encode(x[index])
                mse = F.mse_loss(self.predict_states(states), y[index])
                nll = F.cross_entropy(self.reconstruct(states, x[index]).flatten(0, 1), x[index].flatten())
                loss = c.trade_off * mse + (1 - c.trade_off) * nll
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.parameters(), c.grad_clip)
                optimizer.step()
                total += loss.item() * len(index)
            losses.append(total / len(x))
        self.eval()
        return losses

    def generate(self, seqs: list[tuple], allowed, *, step: float) -> list[tuple]:
        """One gradient-ascent step of size `step` on the predictor from each sequence's
        states, decoded back to tokens (NAO's `infer`)."""
        self.eval()
        states = self.encode(torch.tensor(seqs, dtype=torch.long)).detach().requires_grad_(True)
        self.predict_states(states).sum().backward()
        moved = F.normalize(states + step * states.grad, dim=-1)
        return self.decode(moved.detach(), allowed)


def normalised(values: list[float]) -> list[float]:
    """Min-max to [0, 1] (all 0.5 when every value is the same)."""
    low, high = min(values), max(values)
    return [0.5 if high == low else (v - low) / (high - low) for v in values]


def pairwise_accuracy(predicted: list[float], actual: list[float]) -> float:
    """The share of pairs with different actual values that `predicted` orders the same way."""
    right = pairs = 0
    for i in range(len(actual)):
        for j in range(i + 1, len(actual)):
            if actual[i] != actual[j]:
                pairs += 1
                right += (predicted[i] - predicted[j]) * (actual[i] - actual[j]) > 0
    return right / pairs if pairs else float("nan")
