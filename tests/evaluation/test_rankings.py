"""Ranked-list evaluation: a top-K list gives the full ranking's metrics when K >= max(ks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmboost.data.interactions import Interactions
from llmboost.evaluation import evaluate, evaluate_rankings
from llmboost.models import BPRMF, Recommender
from llmboost.splitting import leave_one_out
from tests.factories import two_communities

KS = (5, 10)


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    split = leave_one_out(two_communities())
    model = BPRMF(factors=8, epochs=15, batch_size=256, lr=1e-2, progress=False).fit(split.train, split.valid)
    return split, model


class ListsOf(Recommender):
    """A list-only wrapper around a scoring model (what a generative recommender looks like)."""

    ranks_only = True

    def __init__(self, inner: Recommender, depth: int) -> None:
        self.inner, self.depth = inner, depth

    def fit(self, train: Interactions, valid: Interactions | None = None) -> ListsOf:
        return self

    def recommend(self, users, k=10, exclude_seen=True, history=None, batch_size=1024):
        return self.inner.recommend(users, k=self.depth, exclude_seen=exclude_seen, history=history)


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_own_top_k_lists_match_full_ranking(fitted, stage) -> None:
    split, model = fitted
    full = evaluate(model, split, stage, ks=KS).summary()
    users = np.arange(split.n_users)
    lists, _ = model.recommend(users, k=max(KS) + 3, history=split.history(stage))
    listed = evaluate_rankings(lists, users, split, stage, ks=KS).summary()
    via_model = evaluate(ListsOf(model, max(KS)), split, stage, ks=KS).summary()
    for k in KS:
        for name in (f"Recall@{k}", f"NDCG@{k}", f"HR@{k}", f"long_tail/NDCG@{k}", f"cold_users/HR@{k}"):
            assert listed[name] == pytest.approx(full[name], nan_ok=True), name
            assert via_model[name] == pytest.approx(full[name], nan_ok=True), name
        assert listed[f"Coverage@{k}"] == pytest.approx(full[f"Coverage@{k}"])
    assert math.isnan(listed["AUC"]) and listed["users"] == full["users"]


def test_short_lists_seen_items_and_missing_users(fitted) -> None:
    split, _ = fitted
    users = np.arange(split.n_users)
    targets = np.array([split.test.history(u)[0] for u in users])
    seen = np.array([split.history("test").history(u)[0] for u in users])
    # the target second, behind a seen item (skipped) and an unseen non-target: rank 1
    other = np.array(
        [
            next(i for i in range(split.n_items) if i != t and i not in split.history("test").history(u))
            for u, t in zip(users, targets, strict=True)
        ]
    )
    lists = np.stack([seen, other, targets, other], axis=1)
    summary = evaluate_rankings(lists, users, split, "test", ks=(1, 2)).summary()
    assert summary["HR@1"] == 0.0 and summary["HR@2"] == 1.0
    assert summary["NDCG@2"] == pytest.approx(1 / math.log2(3))
    # only half the users have a list: the rest are misses
    half = evaluate_rankings(lists[::2], users[::2], split, "test", ks=(2,)).summary()
    assert half["HR@2"] == pytest.approx(np.isin(users, users[::2]).mean())
    with pytest.raises(ValueError, match="outside"):
        evaluate_rankings(lists + split.n_items, users, split, "test")
