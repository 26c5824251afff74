"""ItemCF: item-to-item cosine similarity of co-occurrence (Sarwar et al., WWW 2001; Linden et al., 2003).

``sim(i, j) = sum_u w_u r_ui r_uj / sqrt(n_i n_j)`` with ``r_ui`` = 1 (or the event's weight) when user ``u``
consumed ``i``, ``n_i = sum_u r_ui`` and, with ``iuf=True``, the inverse-user-frequency weight
``w_u = 1 / log(1 + |I_u|)`` (heavy users say less about each pair); otherwise ``w_u = 1``.
Computed as a sparse product ``R^T W R`` in blocks of items; only each row's top-``k`` is kept.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from llmboost.data.interactions import Interactions
from llmboost.models.neighbors import ItemToItemRecommender, sparse_top_k


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
        block_size: int = 2048,
        batch_size: int = 1024,
        progress: bool = True,
    ) -> None:
        super().__init__(k, last_n, recency_decay, fallback, batch_size, progress)
        self.iuf = iuf
        self.shrink = shrink
        self.block_size = block_size

    def _similarities(self, train: Interactions, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        r = self._user_item(train, weights)
        if self.iuf:
            degree = np.diff(r.indptr).astype(np.float64)
            w = (1.0 / np.log1p(np.maximum(degree, 1.0))).astype(np.float32)
            left = sp.diags(w) @ r
        else:
            left = r
        left_t = left.T.tocsr()
        norms = np.sqrt(np.asarray(r.sum(axis=0)).ravel()).astype(np.float32)
        n = train.n_items
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
