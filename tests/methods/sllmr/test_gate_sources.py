"""Where the gate's inputs and labels come from (Sec. 3.3): backbone-uncertainty features from the reference
backbone on training histories only; gate labels from validation pairs only; test never read."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llmboost.methods.sllmr.candidates import build_candidates, make_pairs, select_users
from llmboost.methods.sllmr.config import preset
from llmboost.methods.sllmr.experiment import fit_gate
from llmboost.methods.sllmr.loss import backbone_pair_stats, user_repr
from llmboost.methods.sllmr.teachers import Judgements
from llmboost.models import build


@pytest.mark.realdata
def test_gate_is_fitted_on_validation_pairs_from_train_only_features(ml_small):
    _, split, _ = ml_small
    torch.manual_seed(0)
    ref = build("sasrec", epochs=1, seed=0, progress=False, hidden=16, layers=1).fit(split.train, split.valid)
    users = select_users(split.train, split.valid, None, 3, 0)
    # the SASRec feature model reads the training sequence only: the validation item is not in its input
    r_default = user_repr(ref, users[:20])
    assert torch.allclose(r_default, ref.user_repr(users[:20], history=split.train))
    assert not torch.allclose(r_default, ref.user_repr(users[:20], history=split.history("test")))

    top, _ = ref.recommend(users, k=3, exclude_seen=True, history=split.train)
    pairs = make_pairs(build_candidates(top, users, split.train, split.valid, 0))
    margin, mc = backbone_pair_stats(ref, pairs.user, pairs.item_i, pairs.item_j, 4, 0.1)
    assert np.isfinite(margin).all() and (mc > 0).any()
    rng = np.random.default_rng(0)
    prob = rng.random(len(pairs))
    config = preset("quick")
    config.gate.epochs = 50
    # the gate sees only the training interactions: no validation or test object is reachable from `data`
    data = {"split": SimpleNamespace(train=split.train)}
    base = fit_gate(config, data, pairs, Judgements(prob, np.ones(len(pairs)), "t"), margin, mc, config.gate.features)
    assert base["n_fit"] + base["n_heldout"] == int(pairs.labelled.sum())
    # teacher judgements on regularization pairs (true order unknown) never change the fitted gate
    flipped = np.where(pairs.labelled, prob, 1.0 - prob)
    other = fit_gate(
        config, data, pairs, Judgements(flipped, np.ones(len(pairs)), "t"), margin, mc, config.gate.features
    )
    lab = pairs.labelled
    assert np.allclose(base["activation"][lab], other["activation"][lab])
    assert base["auc_train"] == other["auc_train"] and base["auc_heldout"] == other["auc_heldout"]
