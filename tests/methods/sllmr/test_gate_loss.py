"""The gate, its feature registry, the regularizer and the zero-inference-cost property (Sec. 3.3-3.4)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from llmboost.methods.sllmr.candidates import Pairs
from llmboost.methods.sllmr.gate import FEATURES, FeatureContext, GateModel, auc, feature_matrix, register_feature
from llmboost.methods.sllmr.loss import SelectiveRegularizer, backbone_pair_stats
from llmboost.methods.sllmr.teachers import Judgements
from llmboost.models import build


def test_gate_learns_reliability_from_registered_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    y = (x[:, 0] + 0.2 * rng.normal(size=600) > 0).astype(float)  # teacher right where feature 0 is high
    gate = GateModel(epochs=200, seed=0).fit(x[:400], y[:400])
    a = gate.predict(x[400:])
    assert auc(y[400:], a) > 0.9 and ((a >= 0) & (a <= 1)).all()
    assert np.isnan(auc(np.ones(3), np.arange(3)))


def test_feature_registry_plugs_in_new_features():
    n = 5
    pairs = Pairs(*(np.zeros(n, dtype=np.int64) for _ in range(6)), np.zeros(n, dtype=bool))

    class _Train:
        def user_counts(self):
            return np.array([9])

        def item_counts(self):
            return np.array([3])

    ctx = FeatureContext(pairs, Judgements(np.linspace(0, 1, n), np.ones(n), "t"), _Train(), np.zeros(n), np.zeros(n))

    @register_feature("test_internal_state")
    def _internal(c: FeatureContext) -> np.ndarray:
        return c.judgements.prob * 2

    try:
        x = feature_matrix(ctx, ["llm_confidence", "test_internal_state", "history_length"])
        assert np.allclose(x[:, 0], np.abs(np.linspace(0, 1, n) - 0.5)) and np.allclose(x[:, 1], np.linspace(0, 2, n))
        assert np.allclose(x[:, 2], np.log1p(9))
        with pytest.raises(KeyError, match="registered"):
            feature_matrix(ctx, ["no_such_feature"])
    finally:
        FEATURES.pop("test_internal_state")


def _term(split, n_pairs=300, weight=1.0, seed=0, target="soft", lam=1.0):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, split.n_users, n_pairs)
    i, j = rng.integers(0, split.n_items, n_pairs), rng.integers(0, split.n_items, n_pairs)
    return SelectiveRegularizer(
        split.n_users, u, i, j, np.ones(n_pairs), np.full(n_pairs, weight), lam=lam, target=target
    ), (u, i, j)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["bprmf", "sasrec"])
def test_regularizer_trains_backbone_towards_teacher_at_zero_inference_cost(ml_small, name):
    _, split, _ = ml_small
    torch.manual_seed(0)
    params = {"epochs": 3, "progress": False, "seed": 0, "lr": 0.01}  # few steps: a large learning rate
    plain = build(name, **params).fit(split.train)
    term, (u, i, j) = _term(split, lam=20.0)
    regular = build(name, **params)
    regular.add_loss_term(term)
    regular.fit(split.train)

    # the teacher says i > j on every pair: the regularized model agrees more often than the plain one
    def agree(m):
        margin, _ = backbone_pair_stats(m, u, i, j, mc_samples=2)
        return float(np.mean(margin > 0))

    assert agree(regular) > agree(plain) + 0.1
    # zero inference cost: same class, same parameter count, same scoring latency
    assert type(regular) is type(plain)
    n = [sum(p.numel() for p in m.network_.parameters()) for m in (plain, regular)]
    assert n[0] == n[1]
    users = np.arange(split.n_users)

    def latency(m):
        times = []
        for _ in range(7):
            t = time.perf_counter()
            m.score(users)
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    assert latency(regular) < 2.0 * latency(plain) + 1e-3


@pytest.mark.realdata
def test_closed_gate_means_no_regularization_and_gradient_reaches_backbone(ml_small):
    _, split, _ = ml_small
    model = build("bprmf", epochs=1, progress=False).fit(split.train)
    batch = next(model._batches(split.train, np.random.default_rng(0)))
    closed, _ = _term(split, weight=0.0)
    assert float(closed(model, batch).detach()) == 0.0
    for target in ("soft", "hard"):
        open_, _ = _term(split, target=target)
        model.network_.zero_grad()
        loss = open_(model, batch)
        loss.backward()
        assert float(loss.detach()) > 0 and model.network_.item_factors.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="NaN"):
        SelectiveRegularizer(
            split.n_users, np.zeros(1, int), np.zeros(1, int), np.ones(1, int), np.array([np.nan]), np.ones(1)
        )
