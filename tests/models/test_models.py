"""Backbone recommenders: they learn known structure, respect the protocol, save and load safely."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmboost.evaluation import evaluate
from llmboost.models import BPRMF, REGISTRY, MostPopular, Recommender, SASRec, build
from llmboost.splitting import leave_one_out
from tests.factories import TINY_SASREC, cyclic_sequences, two_communities


@pytest.fixture(scope="module")
def cyclic_split():
    return leave_one_out(cyclic_sequences())


@pytest.fixture(scope="module")
def sasrec(cyclic_split):
    torch.set_num_threads(1)
    model = SASRec(**TINY_SASREC)
    return model.fit(cyclic_split.train, cyclic_split.valid)


def test_sasrec_learns_a_deterministic_sequence(sasrec, cyclic_split) -> None:
    result = evaluate(sasrec, cyclic_split, "test", ks=(1, 5))
    assert result.summary()["HR@1"] > 0.9
    assert sasrec.best_valid_ndcg_ is not None and sasrec.best_valid_ndcg_ > 0.9


def test_sasrec_uses_the_given_history(sasrec, cyclic_split) -> None:
    user = np.array([0])
    top_valid = sasrec.recommend(user, 1, history=cyclic_split.history("valid"))[0][0, 0]
    top_test = sasrec.recommend(user, 1, history=cyclic_split.history("test"))[0][0, 0]
    assert top_valid == cyclic_split.valid.history(0)[0]  # the next item after the training history
    assert top_test == cyclic_split.test.history(0)[0]  # the next item after train + valid


def test_sampled_softmax_also_learns(cyclic_split) -> None:
    model = SASRec(**TINY_SASREC, loss="sampled", n_negatives=8)
    model.fit(cyclic_split.train, cyclic_split.valid)
    assert evaluate(model, cyclic_split, "test", ks=(1,)).summary()["HR@1"] > 0.8


def test_recommend_never_returns_seen_items(sasrec, cyclic_split) -> None:
    users = np.arange(20)
    items, scores = sasrec.recommend(users, k=5)
    for u, row in zip(users, items, strict=True):
        assert not set(row) & set(cyclic_split.train.history(u))
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_save_load_gives_identical_scores(sasrec, cyclic_split, tmp_path) -> None:
    path = sasrec.save(tmp_path / "sasrec.pt")
    loaded = Recommender.load(path)
    assert isinstance(loaded, SASRec) and loaded.get_params() == sasrec.get_params()
    users = np.arange(10)
    torch.testing.assert_close(loaded.score(users), sasrec.score(users))
    with pytest.raises(TypeError):
        BPRMF.load(path)


def test_bprmf_separates_communities() -> None:
    dataset = two_communities()
    split = leave_one_out(dataset)
    model = BPRMF(factors=8, epochs=60, batch_size=256, lr=1e-2, patience=10, progress=False)
    model.fit(split.train, split.valid)
    items, _ = model.recommend(np.arange(split.n_users), k=5)
    item_number = np.array([int(name[1:]) for name in dataset.items.decode(np.arange(dataset.n_items))])
    user_number = np.array([int(name[1:]) for name in dataset.users.decode(np.arange(dataset.n_users))])
    own_community = (item_number[items] < 20) == (user_number[:, None] % 2 == 0)
    community_ok = own_community.mean()
    assert community_ok > 0.95
    # within a community items are exchangeable: the best achievable AUC is about (20 + 11/2) / 31 = 0.82
    assert evaluate(model, split, "test").summary()["AUC"] > 0.75


def test_bprmf_fused_loss_matches_equation_5_and_its_autograd() -> None:
    import torch.nn.functional as F

    from llmboost.models.mf import BPRLoss

    g = torch.Generator().manual_seed(0)
    p, q_i, q_j = (torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: BPRLoss.apply(a, b, c, 0.3), (p, q_i, q_j))
    reference = (
        -F.logsigmoid((p * (q_i - q_j)).sum(-1)).mean()
        + 0.3 * (p.pow(2).sum(-1) + q_i.pow(2).sum(-1) + q_j.pow(2).sum(-1)).mean()
    )
    assert torch.allclose(BPRLoss.apply(p, q_i, q_j, 0.3), reference)


def test_bprmf_negatives_are_never_positives() -> None:
    split = leave_one_out(two_communities())
    model = BPRMF(batch_size=128, progress=False)
    seen = set(zip(split.train.users.tolist(), split.train.items.tolist(), strict=True))
    for u, _, j in model._batches(split.train, np.random.default_rng(0)):
        assert not any((a, b) in seen for a, b in zip(u.tolist(), j.tolist(), strict=True))


def test_popularity_and_registry() -> None:
    split = leave_one_out(two_communities())
    model = MostPopular().fit(split.train)
    scores = model.score(np.array([0, 1]))
    assert torch.equal(scores[0], scores[1])
    assert set(REGISTRY) >= {"sasrec", "bprmf", "popular"}
    with pytest.raises(ValueError, match="has no parameter"):
        build("sasrec", hiden=3)
    with pytest.raises(ValueError, match="unknown model"):
        build("gru4rec")


def test_loss_terms_are_added(cyclic_split) -> None:
    calls = []

    def term(model, batch):
        calls.append(1)
        return torch.zeros(())

    model = SASRec(hidden=16, layers=1, heads=1, epochs=1, max_len=10, progress=False).add_loss_term(term)
    model.fit(cyclic_split.train)
    assert len(calls) > 0 and len(model.history_) == 1


def test_load_of_an_unknown_model_names_the_known_ones(tmp_path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"model": "gru4rec", "params": {}, "state": {}}, path)
    with pytest.raises(ValueError, match=r"'gru4rec'.*not registered.*known models: \[.*'bprmf'.*'sasrec'"):
        Recommender.load(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a model file"):
        Recommender.load(path)
