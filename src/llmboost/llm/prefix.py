"""Planning shared-prefix scoring: which token rows are answered by a longer row, and which rows share a prompt
prefix long enough to run once and reuse (see :mod:`llmboost.llm.logprobs`).

Sharing is decided on *token ids*, so a prefix + suffix split is exactly the sequence the unshared path runs."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

Row = tuple[int, ...]
Query = tuple[int, int, int]
"""``(row, position whose logits predict, token)``."""


def common_prefix(a: Row, b: Row) -> int:
    """Length of the longest common prefix of two token rows."""
    n = min(len(a), len(b))
    i = 0
    # compare in chunks first: long shared histories are the common case
    step = 64
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


def merge_prefix_rows(rows: list[Row], queries: list[Query]) -> tuple[list[Row], list[Query]]:
    """Answer the queries of a row that is a prefix of another row from the longer row (causal attention: the
    logits at its positions are the same) and drop it."""
    order = sorted(range(len(rows)), key=rows.__getitem__)
    target = list(range(len(rows)))
    for a, b in itertools.pairwise(order):
        if len(rows[a]) < len(rows[b]) and rows[b][: len(rows[a])] == rows[a]:
            target[a] = b
    for a in reversed(order):  # follow chains a -> b -> c
        target[a] = target[target[a]]
    keep = sorted(set(target))
    new_index = {r: i for i, r in enumerate(keep)}
    return [rows[r] for r in keep], [(new_index[target[r]], pos, tok) for r, pos, tok in queries]


def plan_prefix_groups(
    rows: Sequence[Row], caps: Sequence[int], min_prefix: int = 16, ratio: float = 0.5
) -> list[tuple[int, list[int]]]:
    """Partition rows into groups sharing a token prefix; returns ``(prefix_length, row_indices)`` pairs.

    Rows are sorted lexicographically (so rows with a common prefix are contiguous) and grown greedily: a row
    joins the current group when the group's shared prefix stays at least ``min_prefix`` tokens, the total
    tokens saved do not drop (``n * l >= (n - 1) * L``), and the row does not share much more with the next row
    (``l >= ratio * lcp(row, next)``, which starts a new group at a user boundary). ``caps[i]`` bounds the
    prefix of row ``i`` (the first position whose logits are needed). Groups with prefix 0 are not shared.
    """
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    groups: list[tuple[int, list[int]]] = []
    if not order:
        return groups
    cur = [order[0]]
    cur_len = caps[order[0]]
    for k in range(1, len(order)):
        r = order[k]
        lcp = min(common_prefix(rows[cur[0]], rows[r]), cur_len, caps[r])
        nxt = min(common_prefix(rows[r], rows[order[k + 1]]), caps[r]) if k + 1 < len(order) else 0
        n = len(cur)
        join = lcp >= min_prefix and n * lcp >= (n - 1) * cur_len and lcp >= ratio * nxt
        if join:
            cur.append(r)
            cur_len = lcp
        else:
            groups.append((cur_len if len(cur) > 1 else 0, cur))
            cur, cur_len = [r], caps[r]
    groups.append((cur_len if len(cur) > 1 else 0, cur))
    return groups
