"""Full-ranking metrics: parity with hand-computed values and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmboost.evaluation.metrics import rank_targets, user_metrics


def _metrics(scores: list[list[float]], targets: list[list[int]], ks=(1, 2, 3)) -> dict[str, np.ndarray]:
    ranks = rank_targets(torch.tensor(scores), torch.tensor(targets))
    return {k: v.numpy() for k, v in user_metrics(ranks, ks).items()}


def test_hand_computed_values() -> None:
    # item 0 is seen (masked); candidates 1..5 ranked 3 (0.7), 2, 4 (0.3), 5, 1; targets 3 and 4
    inf = float("-inf")
    m = _metrics([[inf, 0.1, 0.5, 0.7, 0.3, 0.2]], [[3, 4]])
    assert m["HR@1"][0] == 1.0
    assert m["Recall@1"][0] == 0.5
    assert m["NDCG@1"][0] == pytest.approx(1.0)
    assert m["Recall@2"][0] == 0.5
    assert m["NDCG@2"][0] == pytest.approx(1.0 / (1.0 + 1.0 / math.log2(3)))
    assert m["Recall@3"][0] == 1.0
    assert m["NDCG@3"][0] == pytest.approx(1.5 / (1.0 + 1.0 / math.log2(3)))
    assert m["MRR"][0] == 1.0
    # negatives 1, 2, 5 (0.1, 0.5, 0.2): target 3 beats all, target 4 beats two of three
    assert m["AUC"][0] == pytest.approx((1.0 + 2.0 / 3.0) / 2.0)


def test_ties_are_pessimistic() -> None:
    m = _metrics([[1.0] * 5], [[2]], ks=(1, 4, 5))
    assert m["HR@1"][0] == 0.0 and m["HR@4"][0] == 0.0 and m["HR@5"][0] == 1.0
    assert m["MRR"][0] == pytest.approx(1 / 5)
    assert m["AUC"][0] == pytest.approx(0.5)


def test_tied_targets_do_not_push_each_other_down() -> None:
    m = _metrics([[0.9, 0.9, 0.1]], [[0, 1]], ks=(2,))
    assert m["Recall@2"][0] == 1.0 and m["NDCG@2"][0] == pytest.approx(1.0)


def test_padding_and_users_without_targets() -> None:
    m = _metrics([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3]], [[0, -1], [-1, -1]], ks=(1,))
    assert m["HR@1"][0] == 1.0
    assert math.isnan(m["HR@1"][1]) and math.isnan(m["AUC"][1])


def test_relevance_mask_restricts_targets() -> None:
    ranks = rank_targets(torch.tensor([[0.9, 0.5, 0.1, 0.0]]), torch.tensor([[0, 2]]))
    only_second = user_metrics(ranks, (1, 3), relevant=torch.tensor([[False, True]]))
    assert only_second["HR@1"][0] == 0.0 and only_second["HR@3"][0] == 1.0  # item 2 ranks third
    assert only_second["MRR"][0] == pytest.approx(1 / 3)


def _reference(scores: np.ndarray, targets: list[int], k: int) -> dict[str, float]:
    """Brute force: sort candidates, ties broken against the target (pessimistic)."""
    candidates = [i for i in range(len(scores)) if np.isfinite(scores[i])]
    ranks = []
    for t in targets:
        tied = [j for j in candidates if scores[j] == scores[t]]
        tied_ahead = [j for j in tied if j not in targets or targets.index(j) < targets.index(t)]
        ahead = sum(1 for j in candidates if scores[j] > scores[t]) + len(tied_ahead)
        ranks.append(ahead)
    hits = [r for r in ranks if r < k]
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(targets), k)))
    negatives = [j for j in candidates if j not in targets]
    auc = np.mean(
        [
            np.mean([1.0 if scores[t] > scores[j] else 0.5 if scores[t] == scores[j] else 0.0 for j in negatives])
            for t in targets
        ]
    )
    return {
        f"Recall@{k}": len(hits) / len(targets),
        f"NDCG@{k}": sum(1 / math.log2(r + 2) for r in hits) / idcg,
        "MRR": 1 / (min(ranks) + 1),
        "AUC": auc,
    }


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=6, max_size=12),  # few distinct values: many ties
    st.data(),
)
def test_matches_brute_force(values: list[int], data: st.DataObject) -> None:
    n = len(values)
    scores = np.array(values, dtype=np.float32)
    seen = data.draw(st.sets(st.integers(0, n - 1), max_size=n // 3))
    free = [i for i in range(n) if i not in seen]
    targets = data.draw(st.lists(st.sampled_from(free), min_size=1, max_size=min(3, len(free) - 1), unique=True))
    scores[list(seen)] = -np.inf
    k = data.draw(st.integers(1, n))
    got = _metrics([scores.tolist()], [targets], ks=(k,))
    for name, value in _reference(scores, targets, k).items():
        assert got[name][0] == pytest.approx(value, abs=1e-9), name
