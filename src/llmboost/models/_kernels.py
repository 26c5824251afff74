"""Compiled kernels of the item-to-item models (numba, the ``fast`` extra; imported only when installed).

Both models fill one item's row of similarities at a time with :func:`_scatter_add` (a dense accumulator with a
list of the touched items) and keep its top-``k`` with :func:`_row_top_k` (descending, ties: smaller item id
first; compared as float32 like ``sparse_top_k``).

Swing (:func:`swing_top_k`), the user-pair formulation of :mod:`llmboost.models.swing`:

1. :func:`_pair_blocks`: every unordered user pair ``u < v`` that shares at least two items, each once, found by
   one walk per user over its items' later users, adds ``W_p x_pa x_pb`` (``W_p = w_u w_v / (alpha + |I_u ∩
   I_v|)``, ``x_pa = r_ua r_va``) into ``u``'s dense block (over ``u``'s items that some pair shares) at every
   two shared items ``a != b``.
2. ``sim(a, .)`` = the sum over the users ``u`` of ``a`` of ``a``'s row in ``u``'s block.

The work is ``sum_i C(|U_i|, 2)`` overlap counts, ``sum_p |I_u ∩ I_v|^2`` additions (once per pair, instead of
re-intersecting a pair for every item it shares, as the straightforward triple loop does) and the blocks' rows.

Every neighbour model builds its serving matrix with :func:`compact_rows`.

ItemCF (:func:`itemcf_top_k`): per item ``i`` the co-occurrence row ``sum_u w_u r_ui r_uj`` over the users of
``i``, divided by ``sqrt(n_i n_j) + shrink``, and its top-``k`` (the per-row heap of implicit's
``CosineRecommender``, without materialising the sparse product).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _scatter_add(
    acc: np.ndarray, touched: np.ndarray, n_touched: int, items: np.ndarray, values: np.ndarray, x: float
) -> int:
    """The sparse accumulator of both models: ``acc[items[t]] += x * values[t]``; an item whose ``acc`` is still
    zero and gets a positive contribution is appended to ``touched`` (branch-free; every contribution is >= 0,
    so a zero means untouched). Returns the new length of ``touched``."""
    for t in range(len(items)):
        j = items[t]
        y = x * values[t]
        touched[n_touched] = j
        n_touched += (acc[j] == 0.0) & (y > 0.0)
        acc[j] += y
    return n_touched


@numba.njit(cache=True)
def _pair_blocks(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    item_ptr: np.ndarray,
    item_users: np.ndarray,
    item_values: np.ndarray,
    weighted: bool,
    w_user: np.ndarray,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each pair ``u < v`` sharing >= 2 items, added into ``u``'s dense block over its items that some pair
    shares, ``M_u[a, b] += W_p x_pa x_pb`` (``a != b`` among the pair's shared items), so that
    ``sim(a, b) = sum over the users u of a of M_u[a, b]``.

    Users are walked in ascending order, so ``cursor[i]`` (the position of ``u`` in item ``i``'s ascending user
    list) advances by one per visit and the later users of ``i`` start right after it. One walk per user over
    its items' later users counts the overlaps and chains each visit to the previous visit of the same ``v``
    (``state[v] = (base_u + count) << 32 | last visit``: stamped with ``u``, so nothing is reset); the pairs'
    shared items are read back from their chains, then the block is filled. ``x = r_ui r_vi`` is read only
    when ``weighted`` (else 1). Returns ``blocks``; ``row_at`` (per item -> user entry: the offset of the
    item's row in its user's block, -1 where the item is in no pair); and per user the block's ``width`` and
    its items ``block_items[items_at[u]:items_at[u] + width[u]]``."""
    n_users = len(indptr) - 1
    degree = indptr[1:] - indptr[:-1]
    max_degree = degree.max()
    stride = max_degree + 2  # > any count: base_u + count stays below the next user's base
    epoch = (2**31 - 1) // stride - 1  # users per 31-bit stamp range; the stamps restart after each
    state = np.zeros(n_users, np.int64)  # (base_u + |I_u ∩ I_v| so far) << 32 | the last visit of v
    visit_pos = np.empty(len(item_users), np.int32)  # per visit: the item's position in u's row
    visit_x = np.empty(len(item_users) if weighted else 0, np.float64)  # per visit: r_ui r_vi
    visit_prev = np.empty(len(item_users), np.int32)  # per visit: the previous visit of the same v (-1: none)
    partners = np.empty(n_users, np.int32)
    shared_pos = np.empty(len(item_users), np.int32)  # the partners' shared items, partner after partner
    shared_x = np.empty(len(item_users) if weighted else 0, np.float64)
    cursor = item_ptr[:-1].copy()
    row_at = np.empty(len(item_users), np.int64)
    blocks = np.empty(int(np.sum(degree.astype(np.int64) ** 2)), np.float64)
    block_items = np.empty(len(indices), np.int32)
    items_at = np.zeros(n_users, np.int64)
    width = np.zeros(n_users, np.int64)
    used = np.zeros(max_degree, np.bool_)  # per position in u's row: some pair shares the item
    column = np.empty(max_degree, np.int64)  # per used position: its column in u's block
    at = 0
    n_block_items = 0
    for u in range(n_users):
        if u % epoch == 0:
            state[:] = 0
        base = (u % epoch + 1) * stride  # + 1: the zeros read as "not counted"
        n_partners = 0
        n_visits = 0
        for e in range(indptr[u], indptr[u + 1]):
            i = indices[e]
            cursor[i] += 1
            for f in range(cursor[i], item_ptr[i + 1]):
                v = item_users[f]
                old = state[v]
                key = max(old >> 32, base) + 1
                state[v] = (key << 32) | n_visits
                visit_prev[n_visits] = (old & 0xFFFFFFFF) if key > base + 1 else -1
                visit_pos[n_visits] = e - indptr[u]
                if weighted:
                    visit_x[n_visits] = data[e] * item_values[f]
                n_visits += 1
                partners[n_partners] = v
                n_partners += key == base + 2
        n_shared = 0
        for t in range(n_partners):
            visit = state[partners[t]] & 0xFFFFFFFF
            for _ in range((state[partners[t]] >> 32) - base):
                shared_pos[n_shared] = visit_pos[visit]
                used[visit_pos[visit]] = True
                if weighted:
                    shared_x[n_shared] = visit_x[visit]
                n_shared += 1
                visit = visit_prev[visit]
        d = 0
        for pos in range(degree[u]):
            if used[pos]:
                column[pos] = d
                block_items[n_block_items + d] = indices[indptr[u] + pos]
                d += 1
        items_at[u] = n_block_items
        width[u] = d
        n_block_items += d
        m = blocks[at : at + d * d]
        m[:] = 0.0
        start = 0
        for t in range(n_partners):
            v = partners[t]
            c = (state[v] >> 32) - base
            w = w_user[u] * w_user[v] / (alpha + c)
            for q in range(start, start + c - 1):
                x = w * shared_x[q] if weighted else w
                col_q = column[shared_pos[q]]
                for q2 in range(q + 1, start + c):
                    y = x * shared_x[q2] if weighted else x
                    col_q2 = column[shared_pos[q2]]
                    m[col_q * d + col_q2] += y
                    m[col_q2 * d + col_q] += y
            start += c
        for e in range(indptr[u], indptr[u + 1]):
            pos = e - indptr[u]
            row_at[cursor[indices[e]] - 1] = at + column[pos] * d if used[pos] else -1  # cursor - 1: u's entry
            used[pos] = False
        at += d * d
    return blocks[:at], row_at, block_items[:n_block_items], items_at, width


@numba.njit(cache=True)
def swing_top_k(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    item_ptr: np.ndarray,
    item_users: np.ndarray,
    item_values: np.ndarray,
    weighted: bool,
    w_user: np.ndarray,
    alpha: float,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` Swing neighbours per item: ``sim(a, .) = sum over the users u of a of the row of a in u's
    block`` (:func:`_pair_blocks`). ``indptr``/``indices``/``data``: the users x items CSR (``r_ui``, read
    only when ``weighted``); ``item_*``: its CSC, users ascending within each item."""
    blocks, row_at, block_items, items_at, width = _pair_blocks(
        indptr, indices, data, item_ptr, item_users, item_values, weighted, w_user, alpha
    )
    n_items = len(item_ptr) - 1
    ids = np.full((n_items, k), -1, np.int64)
    vals = np.zeros((n_items, k), np.float32)
    acc = np.zeros(n_items, np.float64)
    touched = np.empty(n_items + 1, np.int32)  # + 1: _scatter_add writes one past the touched items
    for a in range(n_items):
        n_touched = 0
        for f in range(item_ptr[a], item_ptr[a + 1]):
            if row_at[f] >= 0:
                u = item_users[f]
                cols = block_items[items_at[u] : items_at[u] + width[u]]
                row = blocks[row_at[f] : row_at[f] + width[u]]
                n_touched = _scatter_add(acc, touched, n_touched, cols, row, 1.0)
        acc[a] = 0.0  # never its own neighbour: _row_top_k skips it and resets it
        _row_top_k(a, touched, n_touched, acc, ids, vals, k)
    return ids, vals


@numba.njit(cache=True, inline="always")
def _worse(s1: float, i1: int, s2: float, i2: int) -> bool:
    """Ranking order of (score, id): a lower score, or the same score and a larger id, is worse (branch-free)."""
    return (s1 < s2) | ((s1 == s2) & (i1 > i2))


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
    the touched ids. The heap lives in the output row itself (no allocation per row); a row with at most ``k``
    candidates is insertion-sorted there instead."""
    heap_s = vals[row]
    heap_i = ids[row]
    size = 0
    all_fit = n_touched <= k
    for t in range(n_touched):
        j = touched[t]
        s = np.float32(acc[j])
        acc[j] = 0.0
        if s <= 0:
            continue
        if all_fit:  # insertion sort, best first
            pos = size
            size += 1
            while pos > 0 and _worse(heap_s[pos - 1], heap_i[pos - 1], s, j):
                heap_s[pos] = heap_s[pos - 1]
                heap_i[pos] = heap_i[pos - 1]
                pos -= 1
            heap_s[pos] = s
            heap_i[pos] = j
        elif size < k:  # push, sift up
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
    if all_fit:
        return
    # in-place heap sort: swap the worst into the last slot of the heap, so the row ends best first
    for t in range(size - 1, 0, -1):
        last_s, last_i = heap_s[t], heap_i[t]
        heap_s[t], heap_i[t] = heap_s[0], heap_i[0]
        _sift_down(heap_s, heap_i, t, last_s, last_i)


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
    touched = np.empty(n_items + 1, np.int32)  # + 1: _scatter_add writes one past the touched items
    for i in range(n_items):
        n_touched = 0
        for e in range(item_ptr[i], item_ptr[i + 1]):
            u = item_users[e]
            n_touched = _scatter_add(
                acc,
                touched,
                n_touched,
                user_items[user_ptr[u] : user_ptr[u + 1]],
                user_values[user_ptr[u] : user_ptr[u + 1]],
                item_values[e],
            )
        acc[i] = 0.0  # never its own neighbour
        for t in range(n_touched):
            j = touched[t]
            denom = norms[i] * norms[j] + shrink
            acc[j] = acc[j] / denom if denom > 0 else 0.0
        _row_top_k(i, touched, n_touched, acc, ids, vals, k)
    return ids, vals


@numba.njit(cache=True)
def compact_rows(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays ``(indptr, indices, data)`` of a padded neighbour table (``-1`` entries dropped; branch-free)."""
    n_rows, k = ids.shape
    indptr = np.zeros(n_rows + 1, np.int64)
    indices = np.empty(n_rows * k + 1, np.int32)  # + 1: a dropped last entry is written one past the kept ones
    data = np.empty(n_rows * k + 1, scores.dtype)
    at = 0
    for row in range(n_rows):
        for c in range(k):
            j = ids[row, c]
            indices[at] = j
            data[at] = scores[row, c]
            at += j >= 0
        indptr[row + 1] = at
    return indptr, indices[:at], data[:at]
