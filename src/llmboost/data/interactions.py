"""Interactions: (user, item, timestamp[, rating]) events over explicit integer id spaces.

One orientation everywhere: users x items. Events are kept sorted by user, then time (ties keep
their order in the source), so per-user histories are contiguous slices.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

COLUMNS = ("user", "item", "timestamp")
DTYPES = {"user": np.int32, "item": np.int32, "timestamp": np.int64, "rating": np.float32}


@dataclass(frozen=True, eq=False)
class Interactions:
    """Events of ``n_users`` users on ``n_items`` items; ``frame`` has columns user, item, timestamp
    and optionally rating, with dense integer ids."""

    frame: pd.DataFrame
    n_users: int
    n_items: int

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, n_users: int, n_items: int) -> Interactions:
        """Normalise dtypes and order (user, then time, stable) and check the id ranges."""
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"interactions need columns {COLUMNS}; missing {missing}")
        cols = [c for c in (*COLUMNS, "rating") if c in frame.columns]
        out = frame[cols].astype({c: DTYPES[c] for c in cols})
        out = out.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
        for col, n in (("user", n_users), ("item", n_items)):
            values = out[col].to_numpy()
            if len(values) and (values.min() < 0 or values.max() >= n):
                raise ValueError(f"{col} ids must lie in [0, {n}); got [{values.min()}, {values.max()}]")
        return cls(out, int(n_users), int(n_items))

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def users(self) -> np.ndarray:
        return self.frame["user"].to_numpy()

    @property
    def items(self) -> np.ndarray:
        return self.frame["item"].to_numpy()

    @property
    def timestamps(self) -> np.ndarray:
        return self.frame["timestamp"].to_numpy()

    @cached_property
    def user_ptr(self) -> np.ndarray:
        """CSR-style offsets: user ``u``'s events, in time order, are rows ``user_ptr[u]:user_ptr[u+1]``."""
        counts = np.bincount(self.users, minlength=self.n_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def history(self, user: int) -> np.ndarray:
        """The items of ``user`` in time order."""
        return self.items[self.user_ptr[user] : self.user_ptr[user + 1]]

    def user_counts(self) -> np.ndarray:
        return np.diff(self.user_ptr)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_items)

    def active_users(self) -> np.ndarray:
        """Users with at least one event."""
        return np.flatnonzero(self.user_counts() > 0)

    def csc(self) -> sp.csc_matrix:
        """Binary users x items matrix in column layout (repeat events count once): the events are sorted by
        user, so each item's users come out ascending with no index sort."""
        data = np.ones(len(self), dtype=np.float32)
        m = sp.csc_matrix((data, (self.users, self.items)), shape=(self.n_users, self.n_items))
        m.data[:] = 1.0
        return m

    def csr(self) -> sp.csr_matrix:
        """Binary users x items matrix (repeat events count once), built through :meth:`csc` (no per-row index
        sort, which dominated building the CSR directly from time-ordered rows); each row's items ascend."""
        return self.csc().tocsr()

    def select(self, mask: np.ndarray) -> Interactions:
        """The events where ``mask`` is true, in the same id spaces."""
        return Interactions(self.frame[mask].reset_index(drop=True), self.n_users, self.n_items)

    @staticmethod
    def concat(parts: Iterable[Interactions]) -> Interactions:
        """The union of interactions over the same id spaces, re-sorted by user and time."""
        parts = list(parts)
        n_users, n_items = parts[0].n_users, parts[0].n_items
        if any(p.n_users != n_users or p.n_items != n_items for p in parts):
            raise ValueError("cannot concatenate interactions over different id spaces")
        frame = pd.concat([p.frame for p in parts], ignore_index=True)
        return Interactions.from_frame(frame, n_users, n_items)


def segment_offsets(lengths: np.ndarray) -> np.ndarray:
    """``[0..lengths[0]-1, 0..lengths[1]-1, ...]`` concatenated: each element's offset in its segment."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
