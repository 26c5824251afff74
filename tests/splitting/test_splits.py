"""Splits and slices: every event lands in exactly one part, the documented treatments hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmboost.splitting import Split, leave_one_out, make_slices, random_split, split_dataset, temporal_split
from tests.factories import cyclic_sequences, events_dataset


def test_leave_one_out_holds_out_last_two_events_per_user() -> None:
    ds = events_dataset(
        [
            ("a", "x", 1),
            ("a", "y", 2),
            ("a", "z", 3),
            ("b", "x", 5),
            ("b", "z", 4),
            ("b", "y", 6),
            ("c", "x", 1),
            ("c", "y", 2),
        ]
    )
    split = leave_one_out(ds)
    item = ds.items.encode
    user = ds.users.encode
    test = dict(zip(split.test.users, split.test.items, strict=True))
    valid = dict(zip(split.valid.users, split.valid.items, strict=True))
    assert test[user(["a"])[0]] == item(["z"])[0] and valid[user(["a"])[0]] == item(["y"])[0]
    # b's events are ordered by time, not file order: z (4), x (5), y (6)
    assert test[user(["b"])[0]] == item(["y"])[0] and valid[user(["b"])[0]] == item(["x"])[0]
    # c has only two events: all in training, and that is logged
    assert user(["c"])[0] not in test and len(split.train.history(user(["c"])[0])) == 2
    assert any("fewer than 3" in line for line in split.log)


def test_unseen_items_in_test_are_dropped_and_logged() -> None:
    ds = events_dataset([("a", "x", 1), ("a", "y", 2), ("a", "new", 3), ("b", "x", 1), ("b", "y", 2), ("b", "x2", 3)])
    split = leave_one_out(ds)
    assert len(split.test) == 0
    assert any("never seen in training" in line for line in split.log)
    kept = leave_one_out(ds, keep_unseen_items=True)
    assert len(kept.test) == 2


@pytest.mark.parametrize("strategy", ["leave_one_out", "temporal", "random"])
def test_every_event_in_exactly_one_part(strategy: str) -> None:
    ds = cyclic_sequences(50, 10, 8)
    split = split_dataset(ds, strategy, keep_unseen_items=True)
    parts = pd.concat([split.train.frame, split.valid.frame, split.test.frame])
    assert len(parts) == len(ds.interactions)
    key = ["user", "item", "timestamp"]
    pd.testing.assert_frame_equal(
        parts[key].sort_values(key).reset_index(drop=True),
        ds.interactions.frame[key].sort_values(key).reset_index(drop=True),
    )


def test_temporal_split_is_ordered_in_time() -> None:
    split = temporal_split(cyclic_sequences(60, 10, 10), 0.2, 0.2)
    assert split.train.timestamps.max() <= split.valid.timestamps.min()
    assert split.valid.timestamps.max() <= split.test.timestamps.min()


def test_random_split_is_seeded_and_near_ratios() -> None:
    ds = cyclic_sequences(200, 20, 10)
    a, b = random_split(ds, 0.1, 0.2, seed=3), random_split(ds, 0.1, 0.2, seed=3)
    assert a.test.frame.equals(b.test.frame)
    total = len(ds.interactions)
    assert abs(len(a.test) / total - 0.2) < 0.05 or len(a.log) > 0


def test_bad_fractions_and_strategy_raise() -> None:
    ds = cyclic_sequences(10, 5, 5)
    with pytest.raises(ValueError, match="fractions"):
        temporal_split(ds, 0.6, 0.5)
    with pytest.raises(ValueError, match="unknown split strategy"):
        split_dataset(ds, "chronological")


def test_history_for_test_includes_validation() -> None:
    split = leave_one_out(cyclic_sequences(20, 10, 6))
    assert len(split.history("valid")) == len(split.train)
    assert len(split.history("test")) == len(split.train) + len(split.valid)


def test_save_and_load_round_trip(tmp_path) -> None:
    split = leave_one_out(cyclic_sequences(20, 10, 6))
    loaded = Split.load(split.save(tmp_path / "split"))
    for part in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(getattr(loaded, part).frame, getattr(split, part).frame)
    assert loaded.log == split.log


def test_slices_cold_users_and_long_tail() -> None:
    rows = [("heavy", f"i{k}", k) for k in range(10)] + [("light", "i0", 0), ("light", "i1", 1)]
    rows += [(f"u{k}", "i0", 0) for k in range(5)]
    ds = events_dataset(rows)
    slices = make_slices(ds.interactions, cold_user_max_history=2, head_fraction=0.2)
    cold = set(ds.users.decode(np.flatnonzero(slices.cold_users)))
    assert "light" in cold and "heavy" not in cold
    tail = set(ds.items.decode(np.flatnonzero(slices.long_tail_items)))
    assert "i0" not in tail and "i1" not in tail  # 2 of 10 items form the head
    assert len(tail) == 8


def test_slice_threshold_from_fraction() -> None:
    ds = events_dataset([(f"u{n}", f"i{k}", k) for n in range(1, 11) for k in range(n)])
    slices = make_slices(ds.interactions, cold_user_fraction=0.2)
    assert slices.cold_user_max_history == 2 and slices.cold_users.sum() == 2
