"""LLM-I2I parts on small data: pre-selection, synthesis and budgets, negatives, the head discriminator,
thresholds, fusion, config and bad input (no LLM is loaded here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmboost.config import ConfigError
from llmboost.data.dataset import Dataset
from llmboost.methods.llm_i2i import discriminator as disc
from llmboost.methods.llm_i2i import generator as gen
from llmboost.methods.llm_i2i.config import load, preset
from llmboost.methods.llm_i2i.experiment import _paired_t_p, _seed_mean, item_text
from llmboost.methods.llm_i2i.fusion import build_model, fuse
from llmboost.models import ItemCF
from llmboost.splitting import make_slices
from tests.factories import two_communities


@pytest.fixture(scope="module")
def train():
    return two_communities(n_users=60, n_items=20, per_user=6, seed=1).interactions


def test_preselect_excludes_seen_users_and_pads(train) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(train.n_items, 8)).astype(np.float32)
    profiles = gen.user_profiles(train, vectors, 5)
    cooc = ItemCF(k=10, progress=False).fit(train)
    items = np.array([0, 3])
    cand, _ = gen.preselect(train, items, profiles, vectors, cooc, per_item=200, text_weight=0.5)
    assert cand.shape == (2, 200)
    seen = train.csr()
    for row, item in zip(cand, items, strict=True):
        users = row[row >= 0]
        assert len(users) == train.n_users - seen[:, item].sum()  # everyone who has not seen it, then -1
        assert not any(seen[u, item] for u in users)


def test_synthesis_budget_larger_than_possible_is_capped_and_noted(train) -> None:
    cand = np.array([[0, 1, -1], [2, 3, 4]])
    llm = np.array([[-1.0, -2.0, -np.inf], [-5.0, -1.0, -3.0]])
    out = gen.select_synthetic(train, np.array([7, 8]), cand, np.zeros(cand.shape), llm, per_item=2, budget=100)
    assert len(out.events) == 4 and "larger than possible" in out.notes[0]
    assert set(map(tuple, out.events[["user", "item"]].to_numpy())) == {(0, 7), (1, 7), (3, 8), (4, 8)}
    # placed at the end of the user's sequence: the user's last training timestamp
    last = train.timestamps[train.user_ptr[1] - 1]
    assert out.events.query("user == 0")["timestamp"].iloc[0] == last
    small = gen.select_synthetic(train, np.array([7, 8]), cand, np.zeros(cand.shape), llm, per_item=2, budget=1)
    assert len(small.events) == 1


def test_empty_long_tail_set_synthesizes_nothing(train) -> None:
    pool = gen.tail_pool(np.zeros(train.n_items, bool), train, 10, 0)
    out = gen.select_synthetic(train, pool, np.zeros((0, 3), np.int64), np.zeros((0, 3)), np.zeros((0, 3)), 2, 10)
    assert len(pool) == 0 and len(out.events) == 0 and "no long-tail targets" in out.notes[0]


def test_hit_rate_counts_future_events(train) -> None:
    future = train.select(np.arange(len(train)) < 3)
    events = pd.DataFrame({"user": future.users[:2], "item": future.items[:2], "timestamp": [0, 0]})
    events.loc[len(events)] = [59, 0, 0]
    got = gen.hit_rate(events, future)
    assert got["hits"] == 2 and got["hit_rate"] == pytest.approx(2 / 3)


def test_matched_negatives_share_popularity_and_are_unseen(train) -> None:
    rng = np.random.default_rng(0)
    neg = disc.matched_negatives(train.users, train.items, train, rng)
    bucket = disc.popularity_buckets(train)
    ok = neg >= 0
    assert ok.mean() > 0.9
    assert np.all(bucket[neg[ok]] == bucket[train.items[ok]])
    seen = set(zip(train.users.tolist(), train.items.tolist(), strict=True))
    assert not any((u, n) in seen for u, n in zip(train.users[ok].tolist(), neg[ok].tolist(), strict=True))


def test_head_discriminator_separates_communities(train) -> None:
    # item vectors that know the two communities: the head should score real events above cross-community pairs
    dataset = two_communities(n_users=60, n_items=20, per_user=6, seed=1)
    group = np.array([int(n[1:]) >= 10 for n in dataset.items.decode(np.arange(20))])
    rng = np.random.default_rng(0)
    vectors = (np.where(group[:, None], 1.0, -1.0) * np.ones((20, 4)) + 0.3 * rng.normal(size=(20, 4))).astype(
        np.float32
    )
    head = disc.HeadDiscriminator(vectors, profile_items=5, train_events=400)
    scores = head.fit_score(train)
    first = np.r_[True, train.users[1:] != train.users[:-1]]
    assert np.isnan(scores[first]).all() and not np.isnan(scores[~first]).any()  # a user's first event: no profile
    prof = gen.user_profiles(train, vectors, 5)
    users = np.arange(train.n_users)
    own = np.array([train.history(u)[0] for u in users])
    other = np.array([np.flatnonzero(group != group[i])[0] for i in own])
    assert disc.auc(head.score_pairs(prof, own), head.score_pairs(prof, other)) > 0.9


def test_threshold_choice_and_a_discriminator_that_rejects_everything() -> None:
    scores = np.array([np.nan, 0.1, 0.2, 0.3, 0.4])
    best, thr, grid = disc.choose_threshold(scores, [0.25, 0.5], lambda t: 1.0 if t > 0.15 else 0.5)
    assert best == 0.25 and grid[0.0] == 0.5 and thr == pytest.approx(np.quantile([0.1, 0.2, 0.3, 0.4], 0.25))
    keep = disc.apply_threshold(scores, thr)
    assert keep[0] and not keep[1] and keep[2:].all()  # NaN (no profile) is never dropped
    with pytest.raises(ValueError, match="rejects all 4 scored real events"):
        disc.check_fixed_threshold(scores, 0.9)


def test_fusion_weights_and_order(train) -> None:
    syn = pd.DataFrame({"user": [0], "item": [19], "timestamp": [train.timestamps[train.user_ptr[1] - 1]]})
    events, w = fuse(train, None, syn, synthetic_weight=0.5)
    assert len(events) == len(train) + 1
    assert events.history(0)[-1] == 19 and w[train.user_ptr[1]] == 0.5  # appended at the end of user 0
    assert fuse(train, None, syn, 1.0)[1] is None
    with pytest.raises(ValueError, match="dropped everything"):
        fuse(train, np.zeros(len(train), bool), None)
    model = build_model("itemcf", 5, 3, 0, {})
    model.fit(events, weights=w)
    with pytest.raises(ValueError, match="unknown I2I model"):
        build_model("nope", 5, 3, 0, {})


def test_users_with_one_event_are_handled() -> None:
    rows = [("a", "x", 0), ("b", "x", 0), ("b", "y", 1), ("c", "y", 0), ("c", "z", 1), ("c", "x", 2)]
    data = Dataset.from_events("tiny", pd.DataFrame(rows, columns=["user", "item", "timestamp"])).interactions
    vectors = np.eye(3, dtype=np.float32)
    prof, has = disc.event_profiles(data, vectors, 2)
    assert has.tolist() == [False, False, True, False, True, True]
    np.testing.assert_allclose(prof[5], (vectors[1] + vectors[2]) / 2)  # c's x: mean of y and z before it
    single = data.select(np.array([True, False, False, False, False, False]))
    with pytest.raises(ValueError, match="no training events with a history"):
        disc.HeadDiscriminator(vectors, 2, 10).fit_score(single)


def test_items_without_text_get_a_placeholder() -> None:
    data = two_communities(n_users=10, n_items=6, per_user=3)
    data.item_meta = pd.DataFrame({"title": ["A", "", None, "D", "E", "F"]})
    text, has = item_text(data, ["title"], 50)
    assert has.tolist() == [True, False, False, True, True, True]
    assert text[1] == "item 1" and text[0] == "A"
    tail = make_slices(data.interactions).long_tail_items
    pool = gen.tail_pool(tail & has, data.interactions, 10, 0)
    assert not set(pool.tolist()) & {1, 2}


def test_config_presets_and_overrides() -> None:
    assert preset("quick").datasets == ["movielens-100k"]
    with pytest.raises(ValueError, match="presets"):
        preset("huge")
    cfg = load("cpu", ["generator.budget=5", "models.names=[itemcf]"])
    assert cfg.generator.budget == 5 and cfg.models.names == ["itemcf"]
    with pytest.raises(ConfigError, match="variant"):
        load("quick", ["variants=[base, magic]"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load("quick", ["generator.nope=1"])
    assert load("quick").precision == "auto" and load("quick", ["precision=float32"]).precision == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        load("quick", ["precision=int4"])


def test_seed_statistics_handle_slices_and_unchanged_variants() -> None:
    """Users outside a slice (NaN in every seed) stay NaN without warnings; a variant equal to base in every
    seed has p = 1, a constant nonzero difference has no variance to test (NaN)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean = _seed_mean([np.array([1.0, np.nan, np.nan]), np.array([3.0, 2.0, np.nan])])
        assert mean[0] == 2.0 and mean[1] == 2.0 and np.isnan(mean[2])
        assert _paired_t_p([0.1, 0.1, 0.1], [0.1, 0.1, 0.1]) == 1.0
        assert np.isnan(_paired_t_p([0.5, 0.5], [0.25, 0.25])) and np.isnan(_paired_t_p([0.2], [0.1]))
        assert 0.0 < _paired_t_p([0.2, 0.25, 0.3], [0.1, 0.1, 0.12]) < 0.05
