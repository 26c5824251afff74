"""Swing: item-item similarity from "swings", pairs of users who both consumed both items
(Yang et al., "Large Scale Product Graph Construction for Recommendation in E-commerce", 2020).

``sim(i, j) = sum over unordered user pairs {u, v} in U_i ∩ U_j of  w_u w_v / (alpha + |I_u ∩ I_v|)``

with ``U_i`` the users of item ``i``, ``I_u`` the items of user ``u``, the smoothing ``alpha`` and the
user-degree weight ``w_u = |I_u| ** -user_power`` (``user_power=0`` gives the original formula). Two users who
share few items make a strong, specific link; users who overlap everywhere say little. Event weights
(``fit(..., weights=...)``) multiply in as ``r_ui r_vi r_uj r_vj``.

Three exact ways to compute it (``method``; ``"auto"`` picks by data density):

* ``"numba"`` (the ``fast`` extra; sparse catalogs): each unordered user pair sharing >= 2 items is visited
  once; ``sim(a, b) += W_p x_pa x_pb`` over the items of the pair's intersection, ``W_p = w_u w_v / (alpha +
  |I_u ∩ I_v|)``, ``x_pa = r_ua r_va``; per item a dense row accumulator and its top-``k``
  (:mod:`llmboost.models._kernels`). A pair sharing one item only adds to ``sim(i, i)`` and is skipped. Users
  and items are split over ``num_threads`` threads (0: all of numba's, like implicit); the result is the same
  for any number.
* ``"pairs"`` (numpy/scipy fallback of the same formulation): ``C = B B^T`` (B binary), the pairs ``u < v`` with
  ``C_uv >= 2``, ``X = R[u] ∘ R[v]`` (one row per pair), ``S = X^T diag(W) X`` in blocks of items.
* ``"items"`` (dense data such as MovieLens, where user pairs share tens of items; also ``max_item_users``): per
  item ``i``, with ``A`` the dense (|U_i| x |J_i|) block of ``U_i``'s rows over the items they touch,
  ``O = B B^T`` the users' overlaps (B = binary A), ``K = w w^T / (alpha + O)`` with a zero diagonal,
  ``sim(i, J_i) = 1/2 * column sums of ((K ∘ r_i r_i^T) A) ∘ A`` — two small dense products per item.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from llmboost._optional import require
from llmboost.data.interactions import Interactions, segment_offsets
from llmboost.models.neighbors import (
    ItemToItemRecommender,
    compiled_kernels,
    kernel_lanes,
    sparse_top_k,
    top_k_rows,
)
from llmboost.threads import torch_threads_kept

METHODS = ("auto", "numba", "pairs", "items")
DENSE_DEGREE = 30  # ``method="auto"``: mean items per user above which the per-item products are used


class Swing(ItemToItemRecommender):
    """Swing similarity with smoothing ``alpha`` and user-degree weighting ``|I_u| ** -user_power``."""

    name = "swing"

    def __init__(
        self,
        k: int = 50,
        last_n: int = 10,
        alpha: float = 1.0,
        user_power: float = 0.5,
        max_item_users: int | None = None,
        recency_decay: float = 1.0,
        fallback: str = "popularity",
        seed: int = 0,
        method: str = "auto",
        block_size: int = 2048,
        num_threads: int = 0,
        batch_size: int = 1024,
        progress: bool = True,
    ) -> None:
        super().__init__(k, last_n, recency_decay, fallback, batch_size, progress)
        self.alpha = alpha
        self.user_power = user_power
        self.max_item_users = max_item_users
        self.seed = seed
        self.method = method
        self.block_size = block_size
        self.num_threads = num_threads

    def _similarities(self, train: Interactions, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        r, csc = self._user_item(train, weights)
        degree = np.diff(r.indptr).astype(np.float64)
        w_user = np.where(degree > 0, np.maximum(degree, 1.0) ** -self.user_power, 0.0)
        method = self.method
        if self.max_item_users is not None and np.diff(csc.indptr).max(initial=0) > self.max_item_users:
            method = "items"  # sampling each item's users is a per-item operation
        elif method == "auto":
            # pair loops do sum_p |I_u ∩ I_v|^2 work: cheap on sparse catalogs, heavy where users share tens of
            # items (MovieLens), where the per-item dense products (BLAS) win
            sparse_data = r.nnz <= DENSE_DEGREE * max(1, int((degree > 0).sum()))
            has_numba = compiled_kernels() is not None
            method = "numba" if sparse_data and has_numba else "pairs" if sparse_data else "items"
        if method == "numba":
            return self._compiled(r, csc, w_user, weights is not None)
        if method == "pairs":
            return self._user_pairs(r, w_user)
        return self._per_item(r, csc, w_user.astype(np.float32), weights is not None)

    def _compiled(
        self, r: sp.csr_matrix, csc: sp.csc_matrix, w_user: np.ndarray, weighted: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """The user-pair formulation as compiled loops (:mod:`llmboost.models._kernels`); ``weighted``: ``r``
        holds event weights (else ones, which the kernels then skip)."""
        kernels = require("llmboost.models._kernels", "fast")
        n = r.shape[1]
        bar = self._bar(n, "swing neighbours")
        # r: each user's items ascending; csc: each item's users ascending (the kernel walks them with a cursor)
        with torch_threads_kept():
            ids, vals = kernels.swing_top_k(
                r.indptr,
                r.indices,
                r.data.astype(np.float64),
                csc.indptr,
                csc.indices,
                csc.data.astype(np.float64),
                weighted,
                w_user,
                float(self.alpha),
                self.k,
                kernel_lanes(self.num_threads),
            )
        bar.update(n)
        bar.close()
        return ids, vals

    def _user_pairs(self, r: sp.csr_matrix, w_user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Swing through the user pairs (each unordered pair once): ``C = B B^T`` (B binary), the pairs
        ``u < v`` sharing at least two items (a pair sharing one item only adds to ``sim(i, i)``), their
        intersections as the rows of ``X = R[u] ∘ R[v]`` and ``S = X^T diag(w_u w_v / (alpha + C_uv)) X``;
        then the top-``k`` of each row of ``S`` without its diagonal. Float64 sums, like the definition."""
        n = r.shape[1]
        ids = np.full((n, self.k), -1, np.int64)
        vals = np.zeros((n, self.k), np.float32)
        bar = self._bar(n, "swing neighbours")
        b = r.astype(np.float64, copy=True)
        b.data[:] = 1.0
        overlap = (b @ b.T.tocsr()).tocsr()
        u = np.repeat(np.arange(overlap.shape[0]), np.diff(overlap.indptr))
        v = overlap.indices
        keep = (v > u) & (overlap.data >= 2)
        u, v, common = u[keep], v[keep], overlap.data[keep]
        del overlap
        if not len(u):
            bar.update(n)
            bar.close()
            return ids, vals
        rw = r.astype(np.float64)
        x = rw[u].multiply(rw[v]).tocsr()
        pair_w = w_user[u] * w_user[v] / (self.alpha + common)
        right = sp.csr_matrix(sp.diags(pair_w) @ x)
        left_t = x.T.tocsr()
        for start in range(0, n, self.block_size):
            stop = min(n, start + self.block_size)
            sim = (left_t[start:stop] @ right).tocsr()
            rows = np.repeat(np.arange(stop - start), np.diff(sim.indptr))
            data = np.where(sim.indices == start + rows, 0.0, sim.data)  # never its own neighbour
            ids[start:stop], vals[start:stop] = sparse_top_k(rows, sim.indices, data, stop - start, self.k)
            bar.update(stop - start)
        bar.close()
        return ids, vals

    def _per_item(
        self, r: sp.csr_matrix, r_csc: sp.csc_matrix, w_user: np.ndarray, weighted: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per item ``i`` (used when ``max_item_users`` samples each item's users): with ``A`` the dense
        (|U_i| x |J_i|) block of ``U_i``'s rows over the items they touch, ``O = B B^T`` the users' overlaps
        (B = binary A), ``K = w w^T / (alpha + O)`` with a zero diagonal, ``sim(i, J_i) = 1/2 * column sums of
        ((K ∘ r_i r_i^T) A) ∘ A``."""
        rng = np.random.default_rng(self.seed)
        n = r.shape[1]
        ids = np.full((n, self.k), -1, np.int64)
        vals = np.zeros((n, self.k), np.float32)
        bar = self._bar(n, "swing neighbours")
        for i in range(n):
            users = r_csc.indices[r_csc.indptr[i] : r_csc.indptr[i + 1]]
            r_i = r_csc.data[r_csc.indptr[i] : r_csc.indptr[i + 1]]
            if self.max_item_users is not None and len(users) > self.max_item_users:
                pick = np.sort(rng.choice(len(users), self.max_item_users, replace=False))
                users, r_i = users[pick], r_i[pick]
            bar.update(1)
            if len(users) < 2:
                continue
            # the users' rows over the items they touch, gathered straight from the CSR arrays (no scipy indexing)
            lens = r.indptr[users + 1] - r.indptr[users]
            idx = np.repeat(r.indptr[users], lens) + segment_offsets(lens)
            cols, local = np.unique(r.indices[idx], return_inverse=True)
            rows = np.repeat(np.arange(len(users)), lens)
            b = np.zeros((len(users), len(cols)), np.float32)
            b[rows, local] = 1.0
            overlap = b @ b.T
            kern = np.outer(w_user[users], w_user[users]) / (self.alpha + overlap)
            np.fill_diagonal(kern, 0.0)
            if weighted:
                a = np.zeros_like(b)
                a[rows, local] = r.data[idx]
                kern *= np.outer(r_i, r_i)
            else:
                a = b
            sim = 0.5 * ((kern @ a) * a).sum(axis=0)
            sim[np.searchsorted(cols, i)] = 0.0
            top, score = top_k_rows(sim[None, :], self.k)
            keep = top[0] >= 0
            ids[i, : keep.sum()] = cols[top[0][keep]]
            vals[i, : keep.sum()] = score[0][keep]
        bar.close()
        return ids, vals
