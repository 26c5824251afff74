"""Explicit integer id vocabularies: dense ids ``0..n-1`` to and from the source's own ids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


class Vocabulary:
    """A bijection between dense integer ids and external (string) ids, in a fixed order."""

    def __init__(self, ids: Sequence[str] | pd.Index, name: str = "id") -> None:
        index = pd.Index([str(i) for i in ids], dtype=object, name=name)
        if not index.is_unique:
            dup = index[index.duplicated()][0]
            raise ValueError(f"{name} vocabulary has duplicate id {dup!r}")
        self.name = name
        self.ids = index

    @classmethod
    def from_values(cls, values: Sequence[str] | pd.Series, name: str = "id") -> tuple[Vocabulary, np.ndarray]:
        """A vocabulary of the distinct values in order of first appearance, and each value's code."""
        codes, uniques = pd.factorize(pd.Series(values, dtype=object).astype(str), sort=False)
        return cls(uniques, name), codes.astype(np.int32)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external: object) -> bool:
        return str(external) in self.ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.ids.equals(other.ids)

    def __repr__(self) -> str:
        return f"Vocabulary({self.name}, n={len(self)})"

    def encode(self, external: Sequence[str] | pd.Series) -> np.ndarray:
        """Dense ids of ``external`` ids; raises ``KeyError`` naming the first unknown one."""
        codes = self.ids.get_indexer(pd.Index([str(e) for e in external], dtype=object))
        if (codes < 0).any():
            unknown = next(e for e, c in zip(external, codes, strict=True) if c < 0)
            raise KeyError(f"unknown {self.name} {unknown!r}")
        return codes.astype(np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """External ids of dense ``ids``."""
        return self.ids.to_numpy()[np.asarray(ids, dtype=np.int64)]
