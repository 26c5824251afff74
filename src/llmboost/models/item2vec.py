"""item2vec: skip-gram with negative sampling over users' item sequences (Barkan & Koenigstein, 2016;
Mikolov et al., 2013).

Each user's training items in time order form a "sentence"; every pair of items at most ``window`` positions
apart is a (centre, context) example (``window=None``: the whole sequence, item2vec's set context). The loss
per pair is ``-log s(<v_c, u_o>) - sum_{n=1..negatives} log s(-<v_c, u_n>)`` with negatives drawn from the
unigram distribution raised to ``ns_power`` (0.75). Two trainers (``method``; ``"auto"`` picks ``"numba"`` when
installed):

* ``"numba"`` (the ``fast`` extra): word2vec's own loop, plain SGD with a linearly decaying learning rate and its
  reduced (randomly shrunk) window, compiled (:mod:`llmboost.models._sgns`);
* ``"torch"``: every pair within the window, shuffled minibatches, sparse embeddings and SparseAdam.

Neighbours: cosine similarity of the input vectors, mapped to ``(1 + cos) / 2`` so every neighbour counts
positively when aggregated. Event weights multiply each pair's loss (``w_c * w_o``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llmboost._optional import require
from llmboost.data.interactions import Interactions
from llmboost.models.neighbors import ItemToItemRecommender, top_k_rows

METHODS = ("auto", "numba", "torch")
# starting learning rates: SGD, chosen on Amazon Beauty's validation split (benchmarks/tune_item2vec_lr.py: the
# largest that stayed stable at 3-20 epochs, 0.4 and 0.8 blew up; word2vec's 0.025 barely moves rare items in a
# few epochs), and SparseAdam
DEFAULT_LR = {"numba": 0.3, "torch": 0.01}


def skipgram_pairs(users: np.ndarray, items: np.ndarray, window: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(index of centre event, index of context event) for every pair at most ``window`` apart within a user's
    sequence (both directions); events must be grouped by user in order."""
    users = np.asarray(users)
    n = len(users)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    counts = np.bincount(users)
    max_len = int(counts.max())
    reach = max_len - 1 if window is None else min(window, max_len - 1)
    left, right = [], []
    for d in range(1, reach + 1):
        same = np.flatnonzero(users[:-d] == users[d:])
        left.append(same)
        right.append(same + d)
    if not left:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = np.concatenate(left), np.concatenate(right)
    return np.concatenate([a, b]).astype(np.int64), np.concatenate([b, a]).astype(np.int64)


class Item2Vec(ItemToItemRecommender):
    """Skip-gram with negative sampling over user sequences; neighbours by cosine of item vectors.

    ``lr=None`` takes the trainer's default (:data:`DEFAULT_LR`)."""

    name = "item2vec"

    def __init__(
        self,
        k: int = 50,
        last_n: int = 10,
        dim: int = 64,
        window: int | None = 5,
        negatives: int = 5,
        ns_power: float = 0.75,
        epochs: int = 5,
        lr: float | None = None,
        method: str = "auto",
        pair_batch_size: int = 4096,
        recency_decay: float = 1.0,
        fallback: str = "popularity",
        seed: int = 0,
        batch_size: int = 1024,
        progress: bool = True,
    ) -> None:
        super().__init__(k, last_n, recency_decay, fallback, batch_size, progress)
        self.dim = dim
        self.window = window
        self.negatives = negatives
        self.ns_power = ns_power
        self.epochs = epochs
        self.lr = lr
        self.method = method
        self.pair_batch_size = pair_batch_size
        self.seed = seed

    def _similarities(self, train: Interactions, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1 or None, got {self.window}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.dim < 1 or self.negatives < 0 or self.epochs < 1:
            raise ValueError(
                f"dim and epochs must be >= 1 and negatives >= 0, got {self.dim}, {self.epochs}, {self.negatives}"
            )
        method = self.method
        if method == "auto":
            method = "numba" if importlib.util.find_spec("numba") is not None else "torch"
        lr = DEFAULT_LR[method] if self.lr is None else self.lr
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        counts = train.item_counts().astype(np.float64) ** self.ns_power
        noise = counts / counts.sum()
        train_vectors = self._train_compiled if method == "numba" else self._train_torch
        vectors = train_vectors(train, weights, noise, lr)
        self.in_vectors_ = nn.Embedding.from_pretrained(torch.from_numpy(vectors), sparse=True)
        return self._cosine_neighbors(vectors)

    def _initial_vectors(self, n_items: int) -> np.ndarray:
        """word2vec's start: input vectors uniform in +-0.5 / dim (output vectors start at zero)."""
        rng = np.random.default_rng(self.seed)
        return rng.uniform(-0.5 / self.dim, 0.5 / self.dim, (n_items, self.dim)).astype(np.float32)

    def _train_compiled(
        self, train: Interactions, weights: np.ndarray | None, noise: np.ndarray, lr: float
    ) -> np.ndarray:
        """word2vec's SGD loop, compiled (:func:`llmboost.models._sgns.train_sgns`)."""
        sgns = require("llmboost.models._sgns", "fast")
        in_vectors = self._initial_vectors(train.n_items)
        out_vectors = np.zeros_like(in_vectors)
        seq_weights = np.ones(len(train), np.float32) if weights is None else weights.astype(np.float32)
        losses = sgns.train_sgns(
            train.user_ptr,
            train.items.astype(np.int32),
            seq_weights,
            sgns.noise_table(noise),
            in_vectors,
            out_vectors,
            int(train.user_counts().max(initial=1)) if self.window is None else self.window,
            self.window is not None,  # window=None: every pair of the sequence, unshrunk
            self.negatives,
            self.epochs,
            lr,
            self.seed,
        )
        self.loss_history_ = losses.tolist()
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(f"item2vec diverged at lr={lr} (loss {losses[-1]}); use a smaller lr")
        return in_vectors

    def _train_torch(self, train: Interactions, weights: np.ndarray | None, noise: np.ndarray, lr: float) -> np.ndarray:
        """Every pair within the window, shuffled minibatches, SparseAdam."""
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        centre, context = skipgram_pairs(train.users, train.items, self.window)
        items = torch.from_numpy(train.items.astype(np.int64))
        ev_w = None if weights is None else torch.from_numpy(weights)
        in_vectors = nn.Embedding.from_pretrained(
            torch.from_numpy(self._initial_vectors(train.n_items)), freeze=False, sparse=True
        )
        out_vectors = nn.Embedding(train.n_items, self.dim, sparse=True)
        nn.init.zeros_(out_vectors.weight)
        opt = torch.optim.SparseAdam([in_vectors.weight, out_vectors.weight], lr=lr)
        noise_t = torch.from_numpy(noise)
        self.loss_history_: list[float] = []
        steps = (len(centre) + self.pair_batch_size - 1) // self.pair_batch_size
        bar = tqdm(total=self.epochs * steps, desc="item2vec", unit="batch", disable=not self.progress)
        for _ in range(self.epochs):
            order = torch.from_numpy(rng.permutation(len(centre)))
            total, seen = 0.0, 0
            for rows in order.split(self.pair_batch_size):
                c_ev, o_ev = torch.from_numpy(centre)[rows], torch.from_numpy(context)[rows]
                c, o = items[c_ev], items[o_ev]
                neg = torch.multinomial(noise_t, len(rows) * self.negatives, replacement=True).view(len(rows), -1)
                v = in_vectors(c)
                pos = (v * out_vectors(o)).sum(-1)
                negs = torch.bmm(out_vectors(neg), v.unsqueeze(-1)).squeeze(-1)
                loss = -F.logsigmoid(pos) - F.logsigmoid(-negs).sum(-1)
                if ev_w is not None:
                    loss = loss * ev_w[c_ev] * ev_w[o_ev]
                loss = loss.mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
                seen += len(rows)
                bar.update(1)
            self.loss_history_.append(total / max(seen, 1))
        bar.close()
        return in_vectors.weight.detach().numpy().copy()

    def _cosine_neighbors(self, vectors: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = vectors / np.where(norms > 0, norms, 1.0)
        n = len(unit)
        ids = np.full((n, self.k), -1, np.int64)
        vals = np.zeros((n, self.k), np.float32)
        for start in range(0, n, block):
            stop = min(n, start + block)
            sim = 0.5 * (1.0 + unit[start:stop] @ unit.T)
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
            ids[start:stop], vals[start:stop] = top_k_rows(sim, self.k)
        return ids, vals

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "in_vectors": self.in_vectors_.weight.detach().clone()}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.in_vectors_ = nn.Embedding.from_pretrained(state["in_vectors"], sparse=True)
