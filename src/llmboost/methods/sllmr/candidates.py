"""Offline supervision units (Sec. 3.1): candidates per user and the pairs derived from them.

For each supervised user the candidates are the backbone's top-``N`` unseen items, the user's held-out
(validation) positive and one sampled unseen negative. A teacher scores each candidate once (pointwise
teachers) or each pair (the A/B teacher); ``N`` candidates give ``N(N-1)/2`` pairs.

Pairs are of two kinds:

* **regularization pairs** — both items are top-``N`` candidates or the sampled negative; their true order
  is unknown and the LLM's preference supervises the backbone;
* **labelled pairs** — the validation positive against each other candidate; the true order is known, so
  they train (and, for held-out users, evaluate) the gate. They never enter the regularizer, so validation
  items do not leak into training; test interactions are never used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmboost.data.interactions import Interactions

TOP, POSITIVE, NEGATIVE = 0, 1, 2


@dataclass
class Candidates:
    """``items[u_row, c]`` (-1 padding) for ``users``, with ``role`` TOP / POSITIVE / NEGATIVE per slot."""

    users: np.ndarray
    items: np.ndarray
    role: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, rows: np.ndarray) -> Candidates:
        return Candidates(self.users[rows], self.items[rows], self.role[rows])


@dataclass
class Pairs:
    """Pairs ``(user, item_i, item_j)``; ``labelled`` pairs have ``item_i`` = the held-out positive.

    ``row`` is the user's row in :class:`Candidates`, ``ci``/``cj`` the candidate slots of the two items."""

    user: np.ndarray
    item_i: np.ndarray
    item_j: np.ndarray
    row: np.ndarray
    ci: np.ndarray
    cj: np.ndarray
    labelled: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def take(self, mask: np.ndarray) -> Pairs:
        return Pairs(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))


def select_users(
    train: Interactions, valid: Interactions, n_users: int | None, min_history: int, seed: int
) -> np.ndarray:
    """Users with at least ``min_history`` training events and a validation event; a seeded random subset of
    ``n_users`` of them (sorted) when ``n_users`` is given."""
    counts = train.user_counts()
    has_valid = np.zeros(train.n_users, dtype=bool)
    has_valid[valid.users] = True
    eligible = np.flatnonzero((counts >= min_history) & has_valid)
    if n_users is not None and n_users < len(eligible):
        eligible = np.sort(np.random.default_rng(seed).choice(eligible, n_users, replace=False))
    return eligible


def build_candidates(
    top_items: np.ndarray, users: np.ndarray, train: Interactions, valid: Interactions, seed: int
) -> Candidates:
    """Candidates per user: the top-N unseen items (``top_items``, one row per user), the first validation
    item and one uniformly sampled item the user has neither trained on nor validates (seeded)."""
    rng = np.random.default_rng(seed)
    positive = np.full(train.n_users, -1, dtype=np.int64)
    vu, vi = valid.users, valid.items
    first = np.unique(vu, return_index=True)[1]
    positive[vu[first]] = vi[first]
    n_top = top_items.shape[1]
    items = np.full((len(users), n_top + 2), -1, dtype=np.int64)
    role = np.full(items.shape, -1, dtype=np.int64)
    for r, u in enumerate(users):
        pos = int(positive[u])
        if pos < 0:
            raise ValueError(f"user {u} has no validation item; candidates need a held-out positive")
        seen = set(train.history(int(u)).tolist())
        tops = [int(i) for i in top_items[r] if int(i) != pos][: n_top - 0]
        while True:
            neg = int(rng.integers(train.n_items))
            if neg not in seen and neg != pos and neg not in tops:
                break
        row = [*tops, pos, neg]
        items[r, : len(row)] = row
        role[r, : len(tops)] = TOP
        role[r, len(tops)] = POSITIVE
        role[r, len(tops) + 1] = NEGATIVE
    return Candidates(np.asarray(users, dtype=np.int64), items, role)


def make_pairs(cands: Candidates) -> Pairs:
    """All ``C(C-1)/2`` pairs per user; pairs with the positive are labelled and oriented positive-first."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("user", "item_i", "item_j", "row", "ci", "cj", "labelled")}
    n_slots = cands.items.shape[1]
    a, b = np.triu_indices(n_slots, k=1)
    for r in range(len(cands)):
        valid = (cands.items[r, a] >= 0) & (cands.items[r, b] >= 0)
        ca, cb = a[valid], b[valid]
        pos_b = cands.role[r, cb] == POSITIVE
        ci = np.where(pos_b, cb, ca)  # labelled pairs: positive first
        cj = np.where(pos_b, ca, cb)
        labelled = (cands.role[r, ci] == POSITIVE) | (cands.role[r, cj] == POSITIVE)
        cols["user"].append(np.full(len(ci), cands.users[r]))
        cols["item_i"].append(cands.items[r, ci])
        cols["item_j"].append(cands.items[r, cj])
        cols["row"].append(np.full(len(ci), r))
        cols["ci"].append(ci)
        cols["cj"].append(cj)
        cols["labelled"].append(labelled)
    out = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in cols.items()}
    out["labelled"] = out["labelled"].astype(bool)
    return Pairs(**out)
