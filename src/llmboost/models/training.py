"""The training loop shared by every neural recommender: Adam, per-epoch validation, early stopping.

Subclasses supply the network (:meth:`TorchRecommender._build`), the epoch's batches
(:meth:`_batches`) and the loss of one batch (:meth:`_loss`). Methods that regularize a backbone
(e.g. S-LLMR) add terms with :meth:`add_loss_term` without touching the backbone's code.
"""

from __future__ import annotations

import copy
import logging
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Self

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from llmboost.data.interactions import Interactions
from llmboost.models.base import Recommender

logger = logging.getLogger(__name__)

LossTerm = Callable[["TorchRecommender", Any], torch.Tensor]


class TorchRecommender(Recommender):
    """A recommender trained by minibatch gradient descent with early stopping on validation NDCG@10."""

    def __init__(
        self,
        epochs: int = 200,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int = 10,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.device = device
        self.progress = progress
        self.loss_terms: list[LossTerm] = []

    def add_loss_term(self, term: LossTerm) -> Self:
        """Add ``term(model, batch) -> scalar`` to every training batch's loss."""
        self.loss_terms.append(term)
        return self

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _build(self, train: Interactions) -> nn.Module:
        """The network for this training data."""

    @abstractmethod
    def _batches(self, train: Interactions, rng: np.random.Generator) -> Iterator[Any]:
        """One epoch of training batches."""

    @abstractmethod
    def _loss(self, batch: Any) -> torch.Tensor:
        """The model's own loss on one batch."""

    # ------------------------------------------------------------------ training
    def fit(self, train: Interactions, valid: Interactions | None = None) -> Self:
        """Train on ``train``; with ``valid``, keep the epoch with the best validation NDCG@10 and stop
        after ``patience`` epochs without improvement. Ctrl-C stops early and keeps the best so far."""
        from llmboost.evaluation.evaluate import evaluate_targets

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.train_ = train
        self.network_ = self._build(train).to(self.device)
        optimizer = _adam(self.network_.parameters(), self.lr, self.weight_decay)
        self.history_: list[dict[str, float]] = []
        best_score, best_state, stale = -np.inf, None, 0
        bar = tqdm(range(self.epochs), desc=f"train {self.name}", disable=not self.progress, unit="epoch")
        try:
            for epoch in bar:
                started = time.perf_counter()
                self.network_.train()
                total, n_batches = 0.0, 0
                for batch in self._batches(train, rng):
                    loss = self._loss(batch)
                    for term in self.loss_terms:
                        loss = loss + term(self, batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach())
                    n_batches += 1
                seconds = time.perf_counter() - started
                record = {"epoch": epoch, "loss": total / max(1, n_batches), "train_seconds": seconds}
                if valid is not None and len(valid):
                    started = time.perf_counter()
                    self.network_.eval()
                    score = evaluate_targets(self, train, valid, ks=(10,), coverage=False).summary()["NDCG@10"]
                    record |= {"valid_NDCG@10": score, "eval_seconds": time.perf_counter() - started}
                    if score > best_score:
                        best_score, best_state, stale = score, copy.deepcopy(self.network_.state_dict()), 0
                    else:
                        stale += 1
                self.history_.append(record)
                bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("loss", "valid_NDCG@10")})
                if valid is not None and stale >= self.patience:
                    break
        except KeyboardInterrupt:
            logger.warning("training interrupted after %d epochs; keeping the best state so far", len(self.history_))
        if best_state is not None:
            self.network_.load_state_dict(best_state)
        self.best_valid_ndcg_ = float(best_score) if best_state is not None else None
        self.network_.eval()
        return self

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, Any]:
        return super()._state() | {"network": self.network_.state_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.network_ = self._build(self.train_).to(self.device)
        self.network_.load_state_dict(state["network"])
        self.network_.eval()


def _adam(params: Iterator[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where torch has one for these tensors (15-30% faster steps on CPU)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
