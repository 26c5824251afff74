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

ItemCF (:func:`itemcf_top_k`): per item ``i`` the co-occurrence row ``sum_u w_u r_ui r_uj`` over the users of
``i``, divided by ``sqrt(n_i n_j) + shrink``, and its top-``k`` (the per-row heap of implicit's
``CosineRecommender``, without materialising the sparse product).

Threads: users (Swing's walk) and items (the rows) are independent, so the public kernels take ``n_lanes`` and
run that many lanes in parallel (``numba.prange``; pass ``numba.get_num_threads()``, which is read in Python,
as a compiled call to it would keep numba from caching the kernel). Lane ``l`` takes the chunks ``l, l +
n_lanes, ...`` of :data:`CHUNK` users or items (interleaved, so that heavy ids spread over the lanes) with
scratch arrays of its own; each lane is a plain serial function, compiled like the single-threaded kernels.
Every value is computed by one lane in a fixed order, so the output does not depend on the number of threads.

Every neighbour model builds its serving matrix with :func:`compact_rows`.
"""

from __future__ import annotations

import numba
import numpy as np

CHUNK = 256  # users or items per unit of work of a lane


def _lanes_only() -> dict[str, bool]:
    """numba's ``parallel`` option with ``prange`` alone on: the array expressions around the lanes stay serial
    (numba would otherwise run each on its thread pool, which costs more than they do)."""
    serial = ("comprehension", "reduction", "inplace_binop", "setitem", "numpy", "stencil", "fusion")
    return {**dict.fromkeys(serial, False), "prange": True}


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
def _csc_positions(indptr: np.ndarray, indices: np.ndarray, item_ptr: np.ndarray) -> np.ndarray:
    """Per CSR entry ``(u, i)``: its position in the CSC (``u``'s place in item ``i``'s ascending user list)."""
    cursor = item_ptr[:-1].copy()
    position = np.empty(len(indices), np.int64)
    for e in range(len(indices)):
        i = indices[e]
        position[e] = cursor[i]
        cursor[i] += 1
    return position


@numba.njit(cache=True)
def _block_offsets(indptr: np.ndarray) -> np.ndarray:
    """Where each user's block starts: the sum of ``|I_u'|^2`` over the users ``u' < u`` (then the total).
    Serial: array expressions inside a ``parallel`` kernel would be compiled as parallel functions of their own."""
    n_users = len(indptr) - 1
    block_at = np.zeros(n_users + 1, np.int64)
    for u in range(n_users):
        degree = np.int64(indptr[u + 1] - indptr[u])
        block_at[u + 1] = block_at[u] + degree * degree
    return block_at


@numba.njit(cache=True)
def _pair_blocks_lane(
    lane: int,
    n_lanes: int,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    item_ptr: np.ndarray,
    item_users: np.ndarray,
    item_values: np.ndarray,
    weighted: bool,
    w_user: np.ndarray,
    alpha: float,
    position: np.ndarray,
    block_at: np.ndarray,
    blocks: np.ndarray,
    row_at: np.ndarray,
    block_items: np.ndarray,
    width: np.ndarray,
) -> None:
    """One lane of :func:`_pair_blocks`: the blocks of the users in chunks ``lane, lane + n_lanes, ...``.

    ``u``'s entry in item ``i``'s ascending user list is at ``position[e]``, and the later users of ``i`` follow
    it. One walk per user over its items' later users counts the overlaps and chains each visit to the previous
    visit of the same ``v`` (``state[v] = (base_u + count) << 32 | last visit``: stamped with ``u``, so nothing
    is reset between the lane's users, which ascend); the pairs' shared items are read back from their chains,
    then the block is filled. ``x = r_ui r_vi`` is read only when ``weighted`` (else 1)."""
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
    used = np.zeros(max_degree, np.bool_)  # per position in u's row: some pair shares the item
    column = np.empty(max_degree, np.int64)  # per used position: its column in u's block
    stamp_range = -1
    for chunk in range(lane, (n_users + CHUNK - 1) // CHUNK, n_lanes):
        for u in range(chunk * CHUNK, min(n_users, (chunk + 1) * CHUNK)):
            if u // epoch != stamp_range:
                state[:] = 0
                stamp_range = u // epoch
            base = (u % epoch + 1) * stride  # + 1: the zeros read as "not counted"
            n_partners = 0
            n_visits = 0
            for e in range(indptr[u], indptr[u + 1]):
                i = indices[e]
                for f in range(position[e] + 1, item_ptr[i + 1]):
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
                    block_items[indptr[u] + d] = indices[indptr[u] + pos]
                    d += 1
            width[u] = d
            m = blocks[block_at[u] : block_at[u] + d * d]
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
                row_at[position[e]] = block_at[u] + column[pos] * d if used[pos] else -1
                used[pos] = False


@numba.njit(cache=True, parallel=_lanes_only())
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
    n_lanes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each pair ``u < v`` sharing >= 2 items, added into ``u``'s dense block over its items that some pair
    shares, ``M_u[a, b] += W_p x_pa x_pb`` (``a != b`` among the pair's shared items), so that
    ``sim(a, b) = sum over the users u of a of M_u[a, b]`` (:func:`_pair_blocks_lane` per lane).

    ``u``'s block sits at a fixed offset (the sum of ``|I_u'|^2`` over ``u' < u``; its width is at most
    ``|I_u|``), so the lanes write apart. Returns ``blocks``; ``row_at`` (per item -> user entry: the offset of
    the item's row in its user's block, -1 where the item is in no pair); ``block_items`` (``u``'s block items
    from ``indptr[u]`` on) and per user the block's ``width``."""
    n_users = len(indptr) - 1
    position = _csc_positions(indptr, indices, item_ptr)
    block_at = _block_offsets(indptr)
    blocks = np.empty(block_at[-1], np.float64)
    row_at = np.empty(len(item_users), np.int64)
    block_items = np.empty(len(indices), np.int32)
    width = np.zeros(n_users, np.int64)
    args = (
        indptr, indices, data, item_ptr, item_users, item_values, weighted, w_user, alpha,
        position, block_at, blocks, row_at, block_items, width,
    )  # fmt: skip
    if n_lanes == 1:  # not through the thread pool, whose idle threads would spin
        _pair_blocks_lane(0, 1, *args)
    else:
        for lane in numba.prange(n_lanes):
            _pair_blocks_lane(lane, n_lanes, *args)
    return blocks, row_at, block_items, width


@numba.njit(cache=True)
def _swing_rows_lane(
    lane: int,
    n_lanes: int,
    indptr: np.ndarray,
    item_ptr: np.ndarray,
    item_users: np.ndarray,
    blocks: np.ndarray,
    row_at: np.ndarray,
    block_items: np.ndarray,
    width: np.ndarray,
    ids: np.ndarray,
    vals: np.ndarray,
) -> None:
    """One lane of :func:`swing_top_k`'s rows: for the items ``a`` in chunks ``lane, lane + n_lanes, ...``, the
    sum of ``a``'s rows in its users' blocks and its top-``k``."""
    n_items = len(item_ptr) - 1
    acc = np.zeros(n_items, np.float64)
    touched = np.empty(n_items + 1, np.int32)  # + 1: _scatter_add writes one past the touched items
    for chunk in range(lane, (n_items + CHUNK - 1) // CHUNK, n_lanes):
        for a in range(chunk * CHUNK, min(n_items, (chunk + 1) * CHUNK)):
            n_touched = 0
            for f in range(item_ptr[a], item_ptr[a + 1]):
                if row_at[f] >= 0:
                    u = item_users[f]
                    cols = block_items[indptr[u] : indptr[u] + width[u]]
                    row = blocks[row_at[f] : row_at[f] + width[u]]
                    n_touched = _scatter_add(acc, touched, n_touched, cols, row, 1.0)
            acc[a] = 0.0  # never its own neighbour: _row_top_k skips it and resets it
            _row_top_k(a, touched, n_touched, acc, ids, vals, ids.shape[1])


@numba.njit(cache=True, parallel=_lanes_only())
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
    n_lanes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` Swing neighbours per item: ``sim(a, .) = sum over the users u of a of the row of a in u's
    block`` (:func:`_pair_blocks`). ``indptr``/``indices``/``data``: the users x items CSR (``r_ui``, read
    only when ``weighted``); ``item_*``: its CSC, users ascending within each item; ``n_lanes`` parallel
    lanes."""
    blocks, row_at, block_items, width = _pair_blocks(
        indptr, indices, data, item_ptr, item_users, item_values, weighted, w_user, alpha, n_lanes
    )
    n_items = len(item_ptr) - 1
    ids = np.full((n_items, k), -1, np.int64)
    vals = np.zeros((n_items, k), np.float32)
    args = (indptr, item_ptr, item_users, blocks, row_at, block_items, width, ids, vals)
    if n_lanes == 1:
        _swing_rows_lane(0, 1, *args)
    else:
        for lane in numba.prange(n_lanes):
            _swing_rows_lane(lane, n_lanes, *args)
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
def _itemcf_rows_lane(
    lane: int,
    n_lanes: int,
    item_ptr: np.ndarray,
    item_users: np.ndarray,
    item_values: np.ndarray,
    user_ptr: np.ndarray,
    user_items: np.ndarray,
    user_values: np.ndarray,
    norms: np.ndarray,
    shrink: float,
    ids: np.ndarray,
    vals: np.ndarray,
) -> None:
    """One lane of :func:`itemcf_top_k`: the rows of the items in chunks ``lane, lane + n_lanes, ...``."""
    n_items = len(item_ptr) - 1
    acc = np.zeros(n_items, np.float64)
    touched = np.empty(n_items + 1, np.int32)  # + 1: _scatter_add writes one past the touched items
    for chunk in range(lane, (n_items + CHUNK - 1) // CHUNK, n_lanes):
        for i in range(chunk * CHUNK, min(n_items, (chunk + 1) * CHUNK)):
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
            _row_top_k(i, touched, n_touched, acc, ids, vals, ids.shape[1])


@numba.njit(cache=True, parallel=_lanes_only())
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
    n_lanes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours per item: ``item_values`` = ``w_u r_ui`` (users of each item, CSC order),
    ``user_values`` = ``r_uj`` (items of each user, CSR order), ``norms`` = ``sqrt(n_i)``; ``n_lanes`` parallel
    lanes."""
    n_items = len(item_ptr) - 1
    ids = np.full((n_items, k), -1, np.int64)
    vals = np.zeros((n_items, k), np.float32)
    args = (item_ptr, item_users, item_values, user_ptr, user_items, user_values, norms, shrink, ids, vals)
    if n_lanes == 1:  # not through the thread pool, whose idle threads would spin
        _itemcf_rows_lane(0, 1, *args)
    else:
        for lane in numba.prange(n_lanes):
            _itemcf_rows_lane(lane, n_lanes, *args)
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
