"""The dataset object: vocabularies, documented treatments, Parquet round trip, k-core."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmboost.data.dataset import Dataset
from llmboost.data.filters import kcore
from llmboost.data.vocabulary import Vocabulary
from tests.factories import events_dataset


def test_vocabulary_round_trip_and_unknown_ids() -> None:
    vocab, codes = Vocabulary.from_values(["b", "a", "b", "c"], "item")
    assert list(codes) == [0, 1, 0, 2]
    assert list(vocab.decode(vocab.encode(["c", "a"]))) == ["c", "a"]
    with pytest.raises(KeyError, match="unknown item 'zz'"):
        vocab.encode(["a", "zz"])
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        Vocabulary(["a", "a"])


def test_duplicates_dropped_and_metadata_aligned_with_logging() -> None:
    events = pd.DataFrame({"user": ["u1", "u1", "u1", "u2"], "item": ["x", "x", "y", "y"], "timestamp": [1, 1, 2, 3]})
    meta = pd.DataFrame({"title": ["X", "Orphan"]}, index=["x", "orphan"])
    ds = Dataset.from_events("t", events, item_meta=meta)
    assert len(ds.interactions) == 3
    assert ds.item_meta["title"].tolist() == ["X", ""]
    joined = " | ".join(ds.log)
    assert "dropped 1 duplicate events" in joined
    assert "1 items that have metadata but no interactions" in joined
    assert "1 items have interactions but no metadata" in joined


def test_save_load_round_trip_and_fingerprint(tmp_path) -> None:
    ds = events_dataset([("a", "x", 3), ("a", "y", 1), ("b", "x", 2)])
    loaded = Dataset.load(ds.save(tmp_path / "ds"))
    assert loaded.fingerprint() == ds.fingerprint()
    pd.testing.assert_frame_equal(loaded.interactions.frame, ds.interactions.frame)
    assert loaded.users == ds.users and loaded.items == ds.items
    # events of a user are in time order
    assert list(ds.items.decode(ds.interactions.history(0))) == ["y", "x"]


def test_fingerprint_changes_with_content(tmp_path) -> None:
    a = events_dataset([("a", "x", 1), ("b", "y", 2)])
    b = events_dataset([("a", "x", 1), ("b", "y", 3)])
    assert a.fingerprint() != b.fingerprint()
    path = a.save(tmp_path / "a")
    frame = pd.read_parquet(path / "interactions.parquet")
    frame.loc[0, "timestamp"] = 99
    frame.to_parquet(path / "interactions.parquet", index=False)
    with pytest.raises(ValueError, match="fingerprint"):
        Dataset.load(path)


def test_kcore_reaches_fixed_point() -> None:
    rows = [(f"u{u}", f"i{i}", i) for u in range(6) for i in range(3)]  # dense 6 x 3 block
    rows += [("u0", "rare", 9), ("loner", "i0", 1)]
    ds = kcore(events_dataset(rows), user_k=2, item_k=2)
    counts_u = ds.interactions.user_counts()
    counts_i = ds.interactions.item_counts()
    assert counts_u.min() >= 2 and counts_i.min() >= 2
    assert "rare" not in ds.items and "loner" not in ds.users
    assert ds.n_users == 6 and ds.n_items == 3
    assert np.all(ds.item_meta.index == np.arange(ds.n_items))
