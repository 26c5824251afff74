"""Matrix factorization trained with Bayesian Personalized Ranking (Rendle et al., UAI 2009).

Score ``x_ui = <p_u, q_i>``; each step samples (user, positive item, negative item) triples and
minimizes ``-log sigmoid(x_ui - x_uj) + reg * (|p_u|^2 + |q_i|^2 + |q_j|^2)`` (Sec. 4, Eq. 5).
Negatives are drawn uniformly from the items the user has not interacted with.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmboost.data.interactions import Interactions
from llmboost.models.training import TorchRecommender, TrainBatch


class BPRMF(TorchRecommender):
    """Matrix factorization with the BPR pairwise loss."""

    name = "bprmf"

    def __init__(
        self,
        factors: int = 64,
        reg: float = 1e-4,
        init_std: float = 0.01,
        epochs: int = 300,
        batch_size: int = 4096,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        patience: int = 20,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ) -> None:
        super().__init__(epochs, batch_size, lr, weight_decay, patience, seed, device, progress)
        self.factors = factors
        self.reg = reg
        self.init_std = init_std

    def _build(self, train: Interactions) -> nn.Module:
        return MatrixFactorization(train.n_users, train.n_items, self.factors, self.init_std)

    def _batches(self, train: Interactions, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
        """All training pairs in random order, each with one uniformly sampled unseen negative
        (sampled for the whole epoch at once; clashes with positives are redrawn)."""
        if getattr(self, "_pairs_source", None) is not train:
            self._users = torch.from_numpy(train.users.astype(np.int64))
            self._positives = torch.from_numpy(train.items.astype(np.int64))
            self._seen = np.unique(train.users.astype(np.int64) * train.n_items + train.items)
            self._pairs_source = train
        users = self._users.numpy()
        negatives = rng.integers(0, train.n_items, len(users))
        clash = np.flatnonzero(_contains(self._seen, users * train.n_items + negatives))
        for _ in range(100):  # a user who has seen (almost) every item could otherwise loop for long
            if not len(clash):
                break
            negatives[clash] = rng.integers(0, train.n_items, len(clash))
            clash = clash[_contains(self._seen, users[clash] * train.n_items + negatives[clash])]
        order = torch.from_numpy(rng.permutation(len(users)))
        columns = [t[order] for t in (self._users, self._positives, torch.from_numpy(negatives))]  # one gather
        for start in range(0, len(users), self.batch_size):
            yield tuple(t[start : start + self.batch_size].to(self.device) for t in columns)

    def _forward(self, batch: tuple[torch.Tensor, ...]) -> TrainBatch:
        users, positives, negatives = batch
        return TrainBatch(users, positives, negatives, self.network_.user_factors(users))

    def _loss(self, batch: TrainBatch) -> torch.Tensor:
        q_i, q_j = self.network_.item_factors(batch.pos_items), self.network_.item_factors(batch.neg_items)
        return BPRLoss.apply(batch.user_repr, q_i, q_j, self.reg)

    # ------------------------------------------------------------------ prediction
    def user_repr(self, users: np.ndarray, history: Interactions | None = None, train: bool = False) -> torch.Tensor:
        """The user factors ``p_u`` (``history`` and ``train`` change nothing for MF)."""
        return self.network_.user_factors(torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.device))

    def item_repr(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The item factors ``q_i``."""
        if items is None:
            return self.network_.item_factors.weight
        return self.network_.item_factors(torch.as_tensor(items, device=self.device))


class MatrixFactorization(nn.Module):
    """User and item factor tables; ``x_ui = <p_u, q_i>``."""

    def __init__(self, n_users: int, n_items: int, factors: int, init_std: float) -> None:
        super().__init__()
        self.user_factors = nn.Embedding(n_users, factors)
        self.item_factors = nn.Embedding(n_items, factors)
        nn.init.normal_(self.user_factors.weight, std=init_std)
        nn.init.normal_(self.item_factors.weight, std=init_std)


class BPRLoss(torch.autograd.Function):
    """Eq. 5 on a batch, ``mean(-log sigmoid(<p, q_i - q_j>)) + reg * mean(|p|^2 + |q_i|^2 + |q_j|^2)``, with
    its gradient written out: the same values as autograd through those element-wise ops, in about half the
    CPU time (fewer intermediate tensors; the loss dominates BPR-MF's epoch, see docs/benchmarks.md)."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, q_i: torch.Tensor, q_j: torch.Tensor, reg: float) -> torch.Tensor:
        diff = q_i - q_j
        margin = (p * diff).sum(-1)
        penalty = p.square().sum() + q_i.square().sum() + q_j.square().sum()
        ctx.save_for_backward(p, q_i, q_j, diff, margin)
        ctx.reg = reg
        return F.softplus(-margin).mean() + reg / len(p) * penalty

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        p, q_i, q_j, diff, margin = ctx.saved_tensors
        n = len(p)
        decay = 2 * ctx.reg / n * grad  # d(penalty term)/dx = 2 reg x / n
        weight = (torch.sigmoid(-margin) * (-grad / n)).unsqueeze(1)  # d softplus(-m)/dm = -sigmoid(-m)
        toward = weight * p
        return weight * diff + decay * p, toward + decay * q_i, decay * q_j - toward, None


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each of ``keys`` occurs in ``sorted_keys``."""
    at = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return sorted_keys[at] == keys
