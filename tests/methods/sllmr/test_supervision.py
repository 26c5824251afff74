"""Candidates, pairs, teachers and the score store (S-LLMR Sec. 3.1)."""

from __future__ import annotations

import numpy as np
import pytest

from llmboost.llm.store import ScoreStore
from llmboost.methods.sllmr.candidates import NEGATIVE, POSITIVE, build_candidates, make_pairs, select_users
from llmboost.methods.sllmr.teachers import (
    ChoiceTeacher,
    EmbeddingTeacher,
    Judgements,
    LikelihoodTeacher,
    SupervisionError,
    item_texts,
)

pytestmark = pytest.mark.realdata


def _setup(ml_small, n_top: int = 4, n_users: int = 12):
    dataset, split, _ = ml_small
    users = select_users(split.train, split.valid, n_users, 3, seed=0)
    pop = np.argsort(-split.train.item_counts())
    top = np.stack([[i for i in pop if i not in set(split.train.history(int(u)))][:n_top] for u in users])
    cands = build_candidates(top, users, split.train, split.valid, seed=0)
    return dataset, split, cands, make_pairs(cands)


def test_candidates_and_pairs(ml_small):
    _dataset, split, cands, pairs = _setup(ml_small)
    n = (cands.items >= 0).sum(1)  # the positive may also be a top-N item: then the row has one fewer
    assert len(pairs) == int((n * (n - 1) // 2).sum())  # N candidates -> N(N-1)/2 pairs
    assert ((cands.role == POSITIVE).sum(1) == 1).all() and ((cands.role == NEGATIVE).sum(1) == 1).all()
    for r, u in enumerate(cands.users):
        seen = set(split.train.history(int(u)).tolist())
        assert not seen & set(cands.items[r].tolist())  # never a training item
        assert cands.items[r][cands.role[r] == POSITIVE][0] in split.valid.history(int(u))
    lab = pairs.labelled
    pos = cands.items[pairs.row, pairs.ci]
    assert (cands.role[pairs.row[lab], pairs.ci[lab]] == POSITIVE).all() and (pos[lab] == pairs.item_i[lab]).all()
    assert lab.sum() == int((n - 1).sum())


def test_likelihood_teacher_scores_once_resumes_and_rejects_foreign_store(ml_small, fake_llm, tmp_path):
    dataset, split, cands, pairs = _setup(ml_small)
    texts = item_texts(dataset, ["title"])
    store = ScoreStore(tmp_path / "s.sqlite")
    teacher = LikelihoodTeacher(fake_llm, max_history=5)
    j = teacher.judge(cands, pairs, split.train, texts, store)
    assert fake_llm.calls == len(cands)  # one request per user scores all its candidates
    # shorter titles are more likely under the fake model: p_ij > 0.5 exactly when title_i is shorter
    shorter = np.array([len(texts[i]) < len(texts[k]) for i, k in zip(pairs.item_i, pairs.item_j, strict=True)])
    longer = np.array([len(texts[i]) > len(texts[k]) for i, k in zip(pairs.item_i, pairs.item_j, strict=True)])
    assert (j.prob[shorter] > 0.5).all() and (j.prob[longer] < 0.5).all()
    again = teacher.judge(cands, pairs, split.train, texts, store)
    assert fake_llm.calls == len(cands) and np.array_equal(again.prob, j.prob)  # read back, nothing recomputed
    other = type(fake_llm)("another-model")
    with pytest.raises(SupervisionError, match="another model or template"):
        LikelihoodTeacher(other, max_history=5).judge(cands, pairs, split.train, texts, store, compute=False)
    with pytest.raises(SupervisionError, match="absent"):  # a different template setting (history length)
        LikelihoodTeacher(fake_llm, max_history=7).judge(cands, pairs, split.train, texts, store, compute=False)


def test_choice_teacher_debiases_both_orders(ml_small, fake_llm, tmp_path):
    dataset, split, cands, pairs = _setup(ml_small, n_top=2, n_users=4)
    texts = item_texts(dataset, ["title"])
    j = ChoiceTeacher(fake_llm, max_history=5).judge(
        cands, pairs, split.train, texts, ScoreStore(tmp_path / "s.sqlite")
    )
    assert fake_llm.calls == 2 * len(pairs)  # both orders
    first = np.array([texts[a] < texts[b] for a, b in zip(pairs.item_i, pairs.item_j, strict=True)])
    # the +2 bias towards slot A cancels: the preferred item wins whatever its slot
    assert (j.prob[first] > 0.5).all() and (j.prob[~first] < 0.5).all()
    assert np.allclose(np.abs(j.prob - 0.5), 1 / (1 + np.exp(-2.0)) - 0.5)  # log-odds +-2 after debiasing
    assert (j.agreement == 0).all()  # the biased model picks "A" in both orders: the orders disagree


def test_served_model_teacher_same_code_path(ml_small, tmp_path):
    from fake_openai_server import FakeOpenAIServer

    from llmboost.llm.models import load_model

    dataset, split, cands, pairs = _setup(ml_small, n_top=2, n_users=3)
    texts = item_texts(dataset, ["title"])
    with FakeOpenAIServer() as srv:
        model = load_model(srv.url)
        j = LikelihoodTeacher(model, name="served", max_history=3).judge(
            cands, pairs, split.train, texts, ScoreStore(tmp_path / "s.sqlite")
        )
    assert len(j.prob) == len(pairs) and np.isfinite(j.prob).all() and (j.prob != 0.5).any()


def test_embedding_teacher_and_bad_inputs(ml_small, tmp_path):
    dataset, split, cands, pairs = _setup(ml_small, n_top=3, n_users=6)
    texts = item_texts(dataset, ["title", "genres"])
    store = ScoreStore(tmp_path / "s.sqlite")
    j = EmbeddingTeacher().judge(cands, pairs, split.train, texts, store)
    assert ((j.prob > 0) & (j.prob < 1)).all() and (j.agreement == 1).all()
    # missing item text: a clear error naming the item
    broken = list(texts)
    broken[int(cands.items[0, 0])] = ""
    with pytest.raises(SupervisionError, match=f"item ids \\[{int(cands.items[0, 0])}"):
        EmbeddingTeacher(max_history=4).judge(cands, pairs, split.train, broken, store)
    # NaN preferences and inf scores in the store are refused
    with pytest.raises(SupervisionError, match="NaN/inf"):
        Judgements(np.array([0.3, np.nan]), np.ones(2), "t")
    key = next(iter(store.keys(EmbeddingTeacher().fingerprint, EmbeddingTeacher().version)))
    store.delete(EmbeddingTeacher().fingerprint, EmbeddingTeacher().version, [key])
    store.put_many(EmbeddingTeacher().fingerprint, EmbeddingTeacher().version, {key: np.array([np.inf] * 5)})
    with pytest.raises(SupervisionError, match="non-finite"):
        EmbeddingTeacher().judge(cands, pairs, split.train, texts, store, compute=False)
