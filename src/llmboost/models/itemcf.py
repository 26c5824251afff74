"""ItemCF: item-to-item cosine similarity of co-occurrence (Sarwar et al., WWW 2001; Linden et al., 2003).

``sim(i, j) = sum_u w_u r_ui r_uj / sqrt(n_i n_j)`` with ``r_ui`` = 1 (or the event's weight) when user ``u``
consumed ``i``, ``n_i = sum_u r_ui`` and, with ``iuf=True``, the inverse-user-frequency weight
``w_u = 1 / log(1 + |I_u|)`` (heavy users say less about each pair); otherwise ``w_u = 1``.
Only each row's top-``k`` is kept. ``method="numba"`` (the ``fast`` extra; ``"auto"`` uses it when installed):
per item a dense accumulator over its users' items and the row's top-``k``, compiled
(:func:`llmboost.models._kernels.itemcf_top_k`, implicit's per-row approach; items split over ``num_threads``
threads, 0: all of numba's); ``"numpy"``: the sparse product
``R^T W R`` in blocks of items and a packed-key sort for the top-``k``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from llmboost._optional import require
from llmboost.data.interactions import Interactions
from llmboost.models.neighbors import (
    ItemToItemRecommender,
    compiled_kernels,
    kernel_lanes,
    sparse_top_k,
)
from llmboost.threads import torch_threads_kept


class ItemCF(ItemToItemRecommender):
    """Cosine item-item similarity of co-occurrence, optional inverse-user-frequency weighting."""

    name = "itemcf"

    def __init__(
        self,
        k: int = 50,
        last_n: int = 10,
        iuf: bool = False,
        shrink: float = 0.0,
        recency_decay: float = 1.0,
        fallback: str = "popularity",
        method: str = "auto",
        block_size: int = 2048,
        num_threads: int = 0,
        batch_size: int = 1024,
        progress: bool = True,
    ) -> None:
        super().__init__(k, last_n, recency_decay, fallback, batch_size, progress)
        self.iuf = iuf
        self.shrink = shrink
        self.method = method
        self.block_size = block_size
        self.num_threads = num_threads

    def _similarities(self, train: Interactions, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self.method not in ("auto", "numba", "numpy"):
            raise ValueError(f"method must be 'auto', 'numba' or 'numpy', got {self.method!r}")
        r, csc = self._user_item(train, weights)
        degree = np.diff(r.indptr).astype(np.float64)
        w = (1.0 / np.log1p(np.maximum(degree, 1.0))) if self.iuf else np.ones(r.shape[0])
        norms = np.sqrt(np.asarray(r.sum(axis=0)).ravel()).astype(np.float32)
        n = train.n_items
        method = self.method
        if method == "auto":
            method = "numba" if compiled_kernels() is not None else "numpy"
        if method == "numba":
            kernels = require("llmboost.models._kernels", "fast")
            bar = self._bar(n, "itemcf neighbours")
            with torch_threads_kept():
                ids, vals = kernels.itemcf_top_k(
                    csc.indptr.astype(np.int64),
                    csc.indices.astype(np.int64),
                    (w[csc.indices] * csc.data).astype(np.float64),
                    r.indptr.astype(np.int64),
                    r.indices.astype(np.int64),
                    r.data.astype(np.float64),
                    norms.astype(np.float64),
                    float(self.shrink),
                    self.k,
                    kernel_lanes(self.num_threads),
                )
            bar.update(n)
            bar.close()
            return ids, vals
        left_t = (sp.diags(w.astype(np.float32)) @ r).T.tocsr() if self.iuf else r.T.tocsr()
        ids = np.full((n, self.k), -1, np.int64)
        vals = np.zeros((n, self.k), np.float32)
        bar = self._bar(n, "itemcf neighbours")
        for start in range(0, n, self.block_size):
            stop = min(n, start + self.block_size)
            co = (left_t[start:stop] @ r).tocsr()  # sparse: only co-occurring pairs
            rows = np.repeat(np.arange(stop - start), np.diff(co.indptr))
            denom = norms[start + rows] * norms[co.indices] + self.shrink
            sim = np.where(denom > 0, co.data / np.where(denom > 0, denom, 1.0), 0.0)
            sim[co.indices == start + rows] = 0.0  # never its own neighbour
            ids[start:stop], vals[start:stop] = sparse_top_k(rows, co.indices, sim, stop - start, self.k)
            bar.update(stop - start)
        bar.close()
        return ids, vals
