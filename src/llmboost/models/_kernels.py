"""Compiled kernels of the item-to-item models (numba, the ``fast`` extra; imported only when installed).

Swing, the user-pair formulation of :mod:`llmboost.models.swing`:

1. :func:`user_pairs`: every unordered user pair ``u < v`` that shares at least two items, each once, with its
   overlap ``|I_u ∩ I_v|`` and the intersection (items and ``r_ui r_vi``) — counted through the item -> users
   lists; a second walk writes each shared item into its pair's slot.
2. :func:`pair_similarities`: for each item ``a``, ``sim(a, b) = sum over the pairs p containing a of
   W_p x_pa x_pb`` with ``W_p = w_u w_v / (alpha + |I_u ∩ I_v|)`` in a dense row accumulator, then the row's
   top-``k`` (descending, ties: smaller item id first; compared as float32 like ``sparse_top_k``).

The work is ``sum_p |I_u ∩ I_v|^2`` additions, once per pair, instead of re-intersecting a pair for every item it
shares (the straightforward triple loop).

ItemCF (:func:`itemcf_top_k`): per item ``i`` the co-occurrence row ``sum_u w_u r_ui r_uj`` in a dense
accumulator over the users of ``i`` and their items, divided by ``sqrt(n_i n_j) + shrink``, and its top-``k``
(the per-row heap of implicit's ``CosineRecommender``, without materialising the sparse product).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _later_users(item_ptr: np.ndarray, item_users: np.ndarray, i: int, u: int) -> int:
    """Start of the users after ``u`` in item ``i``'s ascending user list."""
    return item_ptr[i] + np.searchsorted(item_users[item_ptr[i] : item_ptr[i + 1]], u, side="right")


@numba.njit(cache=True)
def _count_overlaps(
    u: int, indptr: np.ndarray, indices: np.ndarray, item_ptr: np.ndarray, item_users: np.ndarray,
    count: np.ndarray, touched: np.ndarray,
) -> int:
    """``count[v] = |I_u ∩ I_v|`` for every user ``v > u`` sharing an item with ``u`` (listed in ``touched``;
    returns how many)."""
    n_touched = 0
    for e in range(indptr[u], indptr[u + 1]):
        i = indices[e]
        for f in range(_later_users(item_ptr, item_users, i, u), item_ptr[i + 1]):
            v = item_users[f]
            if count[v] == 0:
                touched[n_touched] = v
                n_touched += 1
            count[v] += 1
    return n_touched


@numba.njit(cache=True)
def user_pairs(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    item_ptr: np.ndarray,
    item_users: np.ndarray,
    item_values: np.ndarray,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(u, v, overlap)`` with ``u < v`` and overlap >= 2, and their intersections as CSR rows
    (``pair_ptr``, ``pair_items``, ``pair_values`` = ``r_ui r_vi``; items in ``u``'s order).

    Pass 1 counts the pairs and their shared items (sizes); pass 2 counts each user's overlaps again and walks
    its items and their later users once more, writing each shared item into its pair's slot (no
    re-intersection). ``item_users`` (with ``item_values``) must be ascending within each item."""
    n_users = len(indptr) - 1
    count = np.zeros(n_users, np.int32)
    slot = np.full(n_users, -1, np.int64)
    touched = np.empty(n_users, np.int32)
    n_pairs = 0
    n_entries = 0
    for u in range(n_users):
        n_touched = _count_overlaps(u, indptr, indices, item_ptr, item_users, count, touched)
        for t in range(n_touched):
            c = count[touched[t]]
            count[touched[t]] = 0
            if c >= 2:
                n_pairs += 1
                n_entries += c
    pu = np.empty(n_pairs, np.int64)
    pv = np.empty(n_pairs, np.int64)
    overlap = np.empty(n_pairs, np.int64)
    pair_ptr = np.zeros(n_pairs + 1, np.int64)
    pair_items = np.empty(n_entries, np.int32)
    pair_values = np.empty(n_entries, np.float64)
    p = 0
    at = 0
    for u in range(n_users):
        n_touched = _count_overlaps(u, indptr, indices, item_ptr, item_users, count, touched)
        for t in range(n_touched):
            v = touched[t]
            c = count[v]
            count[v] = 0
            if c >= 2:
                pu[p] = u
                pv[p] = v
                overlap[p] = c
                slot[v] = at
                at += c
                p += 1
                pair_ptr[p] = at
        for e in range(indptr[u], indptr[u + 1]):
            i = indices[e]
            for f in range(_later_users(item_ptr, item_users, i, u), item_ptr[i + 1]):
                v = item_users[f]
                if slot[v] >= 0:
                    pair_items[slot[v]] = i
                    pair_values[slot[v]] = data[e] * item_values[f]
                    slot[v] += 1
        for t in range(n_touched):
            slot[touched[t]] = -1
    return pu, pv, overlap, pair_ptr, pair_items, pair_values


@numba.njit(cache=True)
def pair_similarities(
    pair_w: np.ndarray,
    pair_ptr: np.ndarray,
    pair_items: np.ndarray,
    pair_values: np.ndarray,
    item_ptr: np.ndarray,
    item_pairs: np.ndarray,
    item_pos: np.ndarray,
    n_items: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` Swing neighbours per item from the pairs (``item_pairs[item_ptr[a]:item_ptr[a+1]]`` are the
    pairs containing ``a``; ``item_pos`` the position of ``a`` in each pair's row)."""
    ids = np.full((n_items, k), -1, np.int64)
    vals = np.zeros((n_items, k), np.float32)
    acc = np.zeros(n_items, np.float64)
    touched = np.empty(n_items, np.int64)
    for a in range(n_items):
        n_touched = 0
        for f in range(item_ptr[a], item_ptr[a + 1]):
            p = item_pairs[f]
            scale = pair_w[p] * pair_values[item_pos[f]]
            for e in range(pair_ptr[p], pair_ptr[p + 1]):
                b = pair_items[e]
                if b == a:
                    continue
                if acc[b] == 0.0:  # every contribution is > 0: a zero means untouched
                    touched[n_touched] = b
                    n_touched += 1
                acc[b] += scale * pair_values[e]
        if n_touched:
            _row_top_k(a, touched, n_touched, acc, ids, vals, k)
    return ids, vals


@numba.njit(cache=True)
def transpose(pair_ptr: np.ndarray, pair_items: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item -> pairs lists (counting sort): ``item_ptr``, ``item_pairs`` and each entry's position ``item_pos``."""
    item_ptr = np.zeros(n_items + 1, np.int64)
    for e in range(len(pair_items)):
        item_ptr[pair_items[e] + 1] += 1
    for a in range(n_items):
        item_ptr[a + 1] += item_ptr[a]
    fill = item_ptr[:-1].copy()
    item_pairs = np.empty(len(pair_items), np.int64)
    item_pos = np.empty(len(pair_items), np.int64)
    for p in range(len(pair_ptr) - 1):
        for e in range(pair_ptr[p], pair_ptr[p + 1]):
            a = pair_items[e]
            item_pairs[fill[a]] = p
            item_pos[fill[a]] = e
            fill[a] += 1
    return item_ptr, item_pairs, item_pos


@numba.njit(cache=True, inline="always")
def _worse(s1: float, i1: int, s2: float, i2: int) -> bool:
    """Ranking order of (score, id): a lower score, or the same score and a larger id, is worse."""
    return s1 < s2 or (s1 == s2 and i1 > i2)


@numba.njit(cache=True)
def _row_top_k(
    row: int,
    touched: np.ndarray,
    n_touched: int,
    acc: np.ndarray,
    ids: np.ndarray,
    vals: np.ndarray,
    k: int,
) -> None:
    """Write the ``k`` largest positive ``acc[touched]`` (as float32, descending, ties: smaller id first) into
    ``ids[row]`` / ``vals[row]`` through a size-``k`` min-heap (implicit's per-row selection); reset ``acc`` at
    the touched ids."""
    heap_s = np.empty(k, np.float32)
    heap_i = np.empty(k, np.int64)
    size = 0
    for t in range(n_touched):
        j = touched[t]
        s = np.float32(acc[j])
        acc[j] = 0.0
        if s <= 0:
            continue
        if size < k:  # push, sift up
            pos = size
            size += 1
            while pos > 0:
                parent = (pos - 1) // 2
                if _worse(s, j, heap_s[parent], heap_i[parent]):
                    heap_s[pos] = heap_s[parent]
                    heap_i[pos] = heap_i[parent]
                    pos = parent
                else:
                    break
            heap_s[pos] = s
            heap_i[pos] = j
        elif _worse(heap_s[0], heap_i[0], s, j):  # replace the worst
            _sift_down(heap_s, heap_i, size, s, j)
    # heap sort: pop the worst into the last free slot, so the row ends best first
    for t in range(size - 1, -1, -1):
        ids[row, t] = heap_i[0]
        vals[row, t] = heap_s[0]
        if t > 0:
            _sift_down(heap_s, heap_i, t, heap_s[t], heap_i[t])


@numba.njit(cache=True, inline="always")
def _sift_down(heap_s: np.ndarray, heap_i: np.ndarray, size: int, s: float, j: int) -> None:
    """Put (s, j) at the root of the min-heap ``heap[:size]`` and restore the heap order."""
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and _worse(heap_s[child + 1], heap_i[child + 1], heap_s[child], heap_i[child]):
            child += 1
        if _worse(heap_s[child], heap_i[child], s, j):
            heap_s[pos] = heap_s[child]
            heap_i[pos] = heap_i[child]
            pos = child
        else:
            break
    heap_s[pos] = s
    heap_i[pos] = j


@numba.njit(cache=True)
def itemcf_top_k(
    item_ptr: np.ndarray,
    item_users: np.ndarray,
    item_values: np.ndarray,
    user_ptr: np.ndarray,
    user_items: np.ndarray,
    user_values: np.ndarray,
    norms: np.ndarray,
    shrink: float,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours per item: ``item_values`` = ``w_u r_ui`` (users of each item, CSC order),
    ``user_values`` = ``r_uj`` (items of each user, CSR order), ``norms`` = ``sqrt(n_i)``."""
    n_items = len(item_ptr) - 1
    ids = np.full((n_items, k), -1, np.int64)
    vals = np.zeros((n_items, k), np.float32)
    acc = np.zeros(n_items, np.float64)
    touched = np.empty(n_items, np.int64)
    for i in range(n_items):
        n_touched = 0
        for e in range(item_ptr[i], item_ptr[i + 1]):
            u = item_users[e]
            x = item_values[e]
            for f in range(user_ptr[u], user_ptr[u + 1]):
                j = user_items[f]
                if j == i:
                    continue
                if acc[j] == 0.0:  # every contribution is > 0: a zero means untouched
                    touched[n_touched] = j
                    n_touched += 1
                acc[j] += x * user_values[f]
        if n_touched:
            for t in range(n_touched):
                j = touched[t]
                denom = norms[i] * norms[j] + shrink
                acc[j] = acc[j] / denom if denom > 0 else 0.0
            _row_top_k(i, touched, n_touched, acc, ids, vals, k)
    return ids, vals
