"""The training loop shared by every neural recommender: Adam, per-epoch validation, early stopping.

Subclasses supply the network (:meth:`TorchRecommender._build`), the epoch's batches (:meth:`_batches`),
the forward pass of one batch (:meth:`_forward`, returning a :class:`TrainBatch` that carries the
backbone's user representation), the model's own loss on it (:meth:`_loss`), the user representation
at prediction time (:meth:`user_repr`) and the item vectors (:meth:`item_repr`); scores are dot products
of the two. Methods that regularize a backbone (e.g. S-LLMR) add :class:`LossTerm` modules with
:meth:`TorchRecommender.add_loss_term` without touching the backbone's code: a term sees the same
forward pass as the model's loss (no second forward), its parameters join the optimizer and its value
is logged per epoch in ``history_`` as ``loss/<name>``.
"""

from __future__ import annotations

import copy
import logging
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from llmboost.data.interactions import Interactions
from llmboost.models.base import Recommender

logger = logging.getLogger(__name__)


@dataclass
class TrainBatch:
    """One training batch after the backbone's forward pass, as the model's loss and every loss term see it.

    Item ids are catalog ids (0-based). ``user_repr`` is the backbone's user (or sequence)
    representation of each row, computed once in the batch's forward pass and part of the autograd
    graph: a term's gradient through it reaches the backbone. ``extra`` holds model-specific outputs
    (SASRec: ``hidden`` (B, L, d) at every position, ``targets`` (B, L) next items with -1 padding;
    every model: ``batch``, the raw batch from ``_batches``)."""

    users: torch.Tensor
    pos_items: torch.Tensor
    neg_items: torch.Tensor | None
    user_repr: torch.Tensor
    extra: dict[str, Any] = field(default_factory=dict)


class LossTerm(nn.Module):
    """An extra loss added to every training batch; its parameters (if any) join the optimizer.

    Subclasses set ``name`` (the ``history_`` key is ``loss/<name>``) and implement :meth:`forward`;
    :meth:`setup` may create parameters that depend on the training data (called at the start of
    ``fit``, before the optimizer is built)."""

    name: str = "term"

    def setup(self, model: TorchRecommender, train: Interactions) -> None:
        """Called at the start of ``fit`` with the model (its ``network_`` already built) and training data."""

    def forward(self, batch: TrainBatch, model: TorchRecommender, epoch: int) -> torch.Tensor:
        """A scalar loss for this batch (already weighted); ``epoch`` counts from 0."""
        raise NotImplementedError


class _CallableTerm(LossTerm):
    """A plain ``fn(model, raw_batch) -> scalar`` as a loss term (the older interface)."""

    def __init__(self, fn: Callable[[TorchRecommender, Any], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn
        self.name = getattr(fn, "__name__", "term")

    def forward(self, batch: TrainBatch, model: TorchRecommender, epoch: int) -> torch.Tensor:
        return self.fn(model, batch.extra["batch"])


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
        self.loss_term_lrs: list[float | None] = []

    def add_loss_term(
        self, term: LossTerm | Callable[[TorchRecommender, Any], torch.Tensor], lr: float | None = None
    ) -> Self:
        """Add ``term`` to every training batch's loss. A :class:`LossTerm` is called as
        ``term(batch: TrainBatch, model, epoch)`` and its parameters are trained with learning rate
        ``lr`` (default: the model's); a plain callable ``fn(model, raw_batch)`` still works."""
        if not isinstance(term, LossTerm):
            if not callable(term):
                raise TypeError(f"a loss term must be a LossTerm or a callable, not {type(term).__name__}")
            term = _CallableTerm(term)
        taken = {t.name for t in self.loss_terms} | {"backbone"}
        if term.name in taken:
            raise ValueError(f"a loss term named {term.name!r} already exists (names in use: {sorted(taken)})")
        self.loss_terms.append(term)
        self.loss_term_lrs.append(lr)
        return self

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _build(self, train: Interactions) -> nn.Module:
        """The network for this training data."""

    @abstractmethod
    def _batches(self, train: Interactions, rng: np.random.Generator) -> Iterator[Any]:
        """One epoch of training batches."""

    @abstractmethod
    def _forward(self, batch: Any) -> TrainBatch:
        """The backbone's forward pass on one raw batch (training mode, with grad)."""

    @abstractmethod
    def _loss(self, batch: TrainBatch) -> torch.Tensor:
        """The model's own loss on one batch, from the outputs of :meth:`_forward`."""

    @abstractmethod
    def user_repr(self, users: np.ndarray, history: Interactions | None = None, train: bool = False) -> torch.Tensor:
        """The user representation (len(users), d), with grad; ``train`` runs the network in training
        mode (dropout on). Sequential models read ``history`` (default: the training interactions)."""

    @abstractmethod
    def item_repr(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors (..., d) of catalog ids ``items`` (any shape), or the whole table (n_items, d)."""

    # ------------------------------------------------------------------ scores
    def pair_scores(self, user_repr: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Differentiable scores (B, M) of user representations (B, d) against items (B, M) (or (B,) -> (B,));
        gradients reach both the representations and the item table."""
        items = torch.as_tensor(items, device=user_repr.device)
        vectors = self.item_repr(items)
        if items.dim() == 1:
            return (user_repr * vectors).sum(-1)
        return torch.einsum("bd,bmd->bm", user_repr, vectors)

    def score_pairs(
        self, users: np.ndarray, items: np.ndarray, history: Interactions | None = None, train: bool = False
    ) -> torch.Tensor:
        """Differentiable scores (B, M) of ``users`` (B,) against ``items`` (B, M) or (B,), with their own
        forward pass (grad enabled, on the model's device)."""
        representation = self.user_repr(np.asarray(users, dtype=np.int64), history=history, train=train)
        return self.pair_scores(representation, torch.as_tensor(np.asarray(items, dtype=np.int64)))

    @torch.no_grad()
    def score(
        self, users: np.ndarray, items: np.ndarray | None = None, history: Interactions | None = None
    ) -> torch.Tensor:
        representation = self.user_repr(np.asarray(users, dtype=np.int64), history=history)
        table = self.item_repr(None if items is None else torch.as_tensor(np.asarray(items, dtype=np.int64)))
        return (representation @ table.to(representation.device).T).cpu()

    # ------------------------------------------------------------------ training
    def fit(self, train: Interactions, valid: Interactions | None = None) -> Self:
        """Train on ``train``; with ``valid``, keep the epoch with the best validation NDCG@10 and stop
        after ``patience`` epochs without improvement. Ctrl-C stops early and keeps the best so far."""
        from llmboost.evaluation.evaluate import evaluate_targets

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.train_ = train
        self.network_ = self._build(train).to(self.device)
        optimizer = self._optimizer(train)
        self.history_: list[dict[str, float]] = []
        best_score, best_state, stale = -np.inf, None, 0
        bar = tqdm(range(self.epochs), desc=f"train {self.name}", disable=not self.progress, unit="epoch")
        try:
            for epoch in bar:
                started, cpu_started = time.perf_counter(), time.process_time()
                self.network_.train()
                for term in self.loss_terms:
                    term.train()
                sums = np.zeros(1 + len(self.loss_terms))
                n_batches = 0
                for raw in self._batches(train, rng):
                    batch = self._forward(raw)
                    batch.extra.setdefault("batch", raw)
                    parts = [self._loss(batch)] + [term(batch, self, epoch) for term in self.loss_terms]
                    loss = parts[0]
                    for part in parts[1:]:
                        loss = loss + part
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    sums += [float(part.detach()) for part in parts]
                    n_batches += 1
                seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
                means = (sums / max(1, n_batches)).tolist()
                # wall and process-CPU seconds (all this process's threads; fair on a shared machine)
                record = {
                    "epoch": epoch,
                    "loss": float(sum(means)),
                    "train_seconds": seconds,
                    "train_cpu_seconds": cpu_seconds,
                }
                if self.loss_terms:
                    record["loss/backbone"] = means[0]
                    record |= {f"loss/{term.name}": m for term, m in zip(self.loss_terms, means[1:], strict=True)}
                if valid is not None and len(valid):
                    started = time.perf_counter()
                    self.network_.eval()
                    score = evaluate_targets(self, train, valid, ks=(10,), coverage=False).summary()["NDCG@10"]
                    record |= {"valid_NDCG@10": score, "eval_seconds": time.perf_counter() - started}
                    if score > best_score:
                        best_score, best_state, stale = score, self._snapshot(), 0
                    else:
                        stale += 1
                self.history_.append(record)
                bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("loss", "valid_NDCG@10")})
                if valid is not None and stale >= self.patience:
                    break
        except KeyboardInterrupt:
            logger.warning("training interrupted after %d epochs; keeping the best state so far", len(self.history_))
        if best_state is not None:
            self.network_.load_state_dict(best_state["network"])
            for term, state in zip(self.loss_terms, best_state["terms"], strict=True):
                term.load_state_dict(state)
        self.best_valid_ndcg_ = float(best_score) if best_state is not None else None
        self.network_.eval()
        for term in self.loss_terms:
            term.eval()
        return self

    def _optimizer(self, train: Interactions) -> torch.optim.Optimizer:
        """Adam over the network's parameters and each loss term's (a group per term, with its own lr)."""
        groups: list[dict[str, Any]] = [{"params": list(self.network_.parameters())}]
        for term, lr in zip(self.loss_terms, self.loss_term_lrs, strict=True):
            term.to(self.device)
            term.setup(self, train)
            term.to(self.device)
            params = [p for p in term.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": self.lr if lr is None else lr})
        return _adam(groups, self.lr, self.weight_decay)

    def _snapshot(self) -> dict[str, Any]:
        """Copies of the network's and the loss terms' states (the best epoch's are restored after training)."""
        return {
            "network": copy.deepcopy(self.network_.state_dict()),
            "terms": [copy.deepcopy(term.state_dict()) for term in self.loss_terms],
        }

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, Any]:
        return super()._state() | {"network": self.network_.state_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.network_ = self._build(self.train_).to(self.device)
        self.network_.load_state_dict(state["network"])
        self.network_.eval()


def _adam(params: list[dict[str, Any]], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where torch has one for these tensors (15-30% faster steps on CPU)."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
