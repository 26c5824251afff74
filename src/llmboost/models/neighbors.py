"""Item-to-item (I2I) recommenders: a top-K neighbour table per item, read at serving time.

Every I2I model learns ``neighbors_`` (``n_items x k`` item ids, ``-1`` padding) and ``neighbor_scores_``
(their similarities, descending). A user is scored by aggregating the neighbours of the last ``last_n``
items of their history: ``score(u, j) = sum_l w_l * sim(h_l, j)`` with ``w_l = recency_decay ** (age of h_l)``
(1 for the most recent item), which is a sparse (users x items) @ (items x items) product.

Items that no recent item points to all score 0; the ``fallback="popularity"`` setting (default) orders them
by training popularity *below* every neighbour-scored item (each row's neighbour scores are divided by the
row's maximum and shifted to (1, 2]; popularity fills [0, 1)), so a user whose items have no neighbours still
gets a sensible list, and the neighbour order is never changed.
"""

from __future__ import annotations

import importlib.util
from abc import abstractmethod
from types import ModuleType
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from llmboost.data.interactions import Interactions, segment_offsets
from llmboost.models.base import Recommender
from llmboost.threads import torch_threads_kept

FALLBACKS = ("popularity", "none")


def top_k_rows(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a dense block: the ``k`` largest positive entries (ids, values), descending; ``-1`` / 0 pad."""
    n_rows, n_cols = sim.shape
    k_eff = min(k, n_cols)
    if k_eff == 0:
        return np.full((n_rows, k), -1, np.int64), np.zeros((n_rows, k), np.float32)
    if k_eff < n_cols:
        part = np.argpartition(-sim, k_eff - 1, axis=1)[:, :k_eff]
    else:
        part = np.tile(np.arange(n_cols), (n_rows, 1))
    vals = np.take_along_axis(sim, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float32)
    ids[vals <= 0] = -1
    vals[vals <= 0] = 0.0
    if k_eff < k:
        ids = np.pad(ids, ((0, 0), (0, k - k_eff)), constant_values=-1)
        vals = np.pad(vals, ((0, 0), (0, k - k_eff)))
    return ids, vals


def sparse_top_k(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a sparse block given as (row, col, value) triples: the ``k`` largest positive values
    (ids, values, compared as float32), descending (ties: smaller column first); ``-1`` / 0 pad.

    One sort of packed 64-bit keys ``row | ~value bits | col`` (a positive float32's bit pattern orders like
    the float) instead of a lexicographic sort over three arrays (~20x faster); a lexsort only when the block
    has too many rows or columns for the 63 bits."""
    values = np.asarray(values, dtype=np.float32)
    keep = values > 0
    rows, cols, values = rows[keep].astype(np.int64), cols[keep].astype(np.int64), values[keep]
    ids = np.full((n_rows, k), -1, np.int64)
    vals = np.zeros((n_rows, k), np.float32)
    if not len(rows):
        return ids, vals
    col_bits = max(1, int(cols.max()).bit_length())
    row_bits = max(1, int(n_rows - 1).bit_length())
    if row_bits + 31 + col_bits <= 63:
        key = (rows << (31 + col_bits)) | ((0x7FFFFFFF - values.view(np.int32).astype(np.int64)) << col_bits) | cols
        key.sort()
        rows = key >> (31 + col_bits)
        cols = key & ((1 << col_bits) - 1)
        values = (0x7FFFFFFF - ((key >> col_bits) & 0x7FFFFFFF)).astype(np.int32).view(np.float32)
    else:
        order = np.lexsort((cols, -values, rows))
        rows, cols, values = rows[order], cols[order], values[order]
    starts = np.searchsorted(rows, np.arange(n_rows))
    rank = np.arange(len(rows)) - starts[rows]
    sel = rank < k
    ids[rows[sel], rank[sel]] = cols[sel]
    vals[rows[sel], rank[sel]] = values[sel]
    return ids, vals


def compiled_kernels() -> ModuleType | None:
    """:mod:`llmboost.models._kernels` where numba is installed (the ``fast`` extra), else None."""
    if importlib.util.find_spec("numba") is None:
        return None
    from llmboost.models import _kernels

    return _kernels


def kernel_lanes(num_threads: int) -> int:
    """How many parallel lanes the compiled kernels run: ``num_threads``, or with 0 all of numba's threads
    (``numba.get_num_threads()``: the cores, or what ``NUMBA_NUM_THREADS`` / ``numba.set_num_threads`` set),
    like implicit's ``num_threads=0``. The neighbours do not depend on it."""
    if num_threads < 0:
        raise ValueError(f"num_threads must be >= 0 (0: all of numba's threads), got {num_threads}")
    if num_threads:
        return num_threads
    import numba

    with torch_threads_kept():  # once numba's pool runs, even reading its count resets OpenMP's
        return numba.get_num_threads()


def neighbor_matrix(neighbors: np.ndarray, scores: np.ndarray, n_items: int) -> sp.csr_matrix:
    """The ``n_items x n_items`` sparse similarity matrix holding only each row's top-K neighbours (built
    straight from the padded table: each row's ids are distinct, so no duplicate summing is needed; the rows
    keep the table's best-first order, which the product in :meth:`neighbor_scores` does not need sorted)."""
    kernels = compiled_kernels()
    if kernels is not None:
        indptr, indices, data = kernels.compact_rows(neighbors, scores)
        return sp.csr_matrix((data, indices, indptr), shape=(n_items, n_items))
    keep = neighbors >= 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    return sp.csr_matrix((scores[keep], neighbors[keep], indptr), shape=(n_items, n_items))


class ItemToItemRecommender(Recommender):
    """Base class: subclasses implement :meth:`_similarities` (top-K neighbour table from the training data)."""

    def __init__(
        self,
        k: int = 50,
        last_n: int = 10,
        recency_decay: float = 1.0,
        fallback: str = "popularity",
        batch_size: int = 1024,
        progress: bool = True,
    ) -> None:
        self.k = k
        self.last_n = last_n
        self.recency_decay = recency_decay
        self.fallback = fallback
        self.batch_size = batch_size
        self.progress = progress

    def _check(self) -> None:
        if self.k < 1 or self.last_n < 1:
            raise ValueError(f"k and last_n must be >= 1 (got k={self.k}, last_n={self.last_n})")
        if not 0.0 < self.recency_decay <= 1.0:
            raise ValueError(f"recency_decay must lie in (0, 1], got {self.recency_decay}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}")

    # ------------------------------------------------------------------ learning
    def fit(self, train: Interactions, valid: Interactions | None = None, weights: np.ndarray | None = None) -> Self:
        """Build the neighbour table from ``train`` (``valid`` is not needed: there is nothing to stop early).

        ``weights`` (one per event, > 0; default 1) weight each event in the similarity (LLM-I2I's synthetic
        events may count less than real ones); repeated (user, item) events keep their largest weight."""
        self._check()
        if len(train) == 0:
            raise ValueError("cannot fit an item-to-item model on empty training data")
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float32)
            if weights.shape != (len(train),) or not np.all(weights > 0):
                raise ValueError(f"weights need one positive value per event ({len(train)}), got shape {weights.shape}")
        self.train_ = train
        self.event_weights_ = weights
        neighbors, scores = self._similarities(train, weights)
        self.neighbors_ = neighbors.astype(np.int64, copy=False)
        self.neighbor_scores_ = scores.astype(np.float32, copy=False)
        self._finish()
        return self

    @abstractmethod
    def _similarities(self, train: Interactions, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``(neighbors, scores)``: each ``n_items x k``, descending, ``-1`` / 0 padded, never the item itself."""

    def _finish(self) -> None:
        self.sim_ = neighbor_matrix(self.neighbors_, self.neighbor_scores_, self.train_.n_items)
        pop = self.train_.item_counts().astype(np.float32)
        self.popularity_ = pop / (pop.max() + 1.0) if len(pop) else pop

    @staticmethod
    def _user_item(train: Interactions, weights: np.ndarray | None) -> tuple[sp.csr_matrix, sp.csc_matrix]:
        """Users x items matrix, 1 (or the event's weight, the largest for repeats) per consumed item, in row
        and column layout (each row's items and each column's users ascending); the kernels walk both."""
        shape = (train.n_users, train.n_items)
        if weights is None:
            csc = train.csc()
        else:  # the largest weight per (user, item)
            key = train.users.astype(np.int64) * train.n_items + train.items
            order = np.lexsort((-weights, key))
            first = np.ones(len(order), bool)
            first[1:] = key[order][1:] != key[order][:-1]
            sel = order[first]
            csc = sp.csc_matrix((weights[sel], (train.users[sel], train.items[sel])), shape=shape)
        return csc.tocsr(), csc

    # ------------------------------------------------------------------ serving
    def recent_matrix(self, users: np.ndarray, history: Interactions) -> sp.csr_matrix:
        """(len(users) x n_items): weight ``recency_decay ** age`` on each of the user's last ``last_n`` items."""
        users = np.asarray(users, dtype=np.int64)
        ptr = history.user_ptr
        ends = ptr[users + 1]
        lengths = np.minimum(ends - ptr[users], self.last_n)
        rows = np.repeat(np.arange(len(users)), lengths)
        offsets = segment_offsets(lengths)
        age = np.repeat(lengths, lengths) - 1 - offsets  # 0 = most recent
        idx = np.repeat(ends - lengths, lengths) + offsets
        cols = history.items[idx].astype(np.int64)
        data = np.power(self.recency_decay, age).astype(np.float32)
        m = sp.csr_matrix((data, (rows, cols)), shape=(len(users), history.n_items))
        m.sum_duplicates()
        return m

    def neighbor_scores(self, users: np.ndarray, history: Interactions | None = None) -> np.ndarray:
        """Raw aggregated neighbour scores (dense, len(users) x n_items; 0 where no neighbour points)."""
        history = self.train_ if history is None else history
        return np.asarray((self.recent_matrix(users, history) @ self.sim_).todense(), dtype=np.float32)

    @torch.no_grad()
    def score(
        self, users: np.ndarray, items: np.ndarray | None = None, history: Interactions | None = None
    ) -> torch.Tensor:
        """Aggregated neighbour scores of the last ``last_n`` history items (see the module docstring)."""
        raw = self.neighbor_scores(users, history)
        if self.fallback == "popularity":
            top = raw.max(axis=1, keepdims=True)
            scaled = np.where(raw > 0, 1.0 + raw / np.where(top > 0, top, 1.0), self.popularity_[None, :])
            raw = scaled.astype(np.float32)
        out = torch.from_numpy(raw)
        return out if items is None else out[:, torch.as_tensor(np.asarray(items, dtype=np.int64))]

    def similar_items(self, item: int, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The neighbours of ``item`` and their similarities (at most ``k``, no padding)."""
        ids, vals = self.neighbors_[item], self.neighbor_scores_[item]
        keep = ids >= 0
        ids, vals = ids[keep], vals[keep]
        return (ids, vals) if k is None else (ids[:k], vals[:k])

    def _bar(self, total: int, desc: str) -> Any:
        return tqdm(total=total, desc=desc, unit="item", disable=not self.progress)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, Any]:
        return {
            **super()._state(),
            "neighbors": torch.from_numpy(self.neighbors_),
            "neighbor_scores": torch.from_numpy(self.neighbor_scores_),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.neighbors_ = state["neighbors"].numpy().copy()
        self.neighbor_scores_ = state["neighbor_scores"].numpy().copy()
        self._finish()
