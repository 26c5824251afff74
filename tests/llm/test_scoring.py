"""Pairwise (both orders, position bias cancelled) and yes/no scoring."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pytest

from llmboost.llm.base import ChoiceRequest, LanguageModel
from llmboost.llm.prompts import PAIRWISE, YES_NO
from llmboost.llm.scoring import pairwise_preferences, pairwise_scores, yes_logodds, yes_probabilities

SCORE = {"Alien": 2.0, "Babe": 0.5, "Casino": -1.0, "Dune": 0.0}


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


class BiasedFake:
    """log P(A) - log P(B) = score(item in slot A) - score(item in slot B) + bias: a model with a known
    preference and a constant lean towards slot A."""

    fingerprint = "fake:biased"

    def __init__(self, bias: float = 1.5) -> None:
        self.bias = bias
        self.prompts: list[str] = []

    def choice_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        out = []
        for r in requests:
            self.prompts.append(r.prompt)
            if "A: " in r.prompt:
                a = re.search(r"A: (.*)\n", r.prompt).group(1)
                b = re.search(r"B: (.*)\n", r.prompt).group(1)
                d = SCORE[a] - SCORE[b] + self.bias
            else:
                item = re.search(r"Item: (.*)\n", r.prompt).group(1)
                d = SCORE[item]
            # two choices: log-softmax over [d/2, -d/2] plus some mass elsewhere
            out.append(np.array([d / 2, -d / 2]) - np.logaddexp(d / 2, -d / 2) - 0.3)
        return out

    def generate(self, prompts, max_new_tokens=32, temperature=0.0, stop=None):  # pragma: no cover
        return [""] * len(prompts)


def test_fake_is_a_language_model():
    assert isinstance(BiasedFake(), LanguageModel)


def test_both_orders_cancel_position_bias():
    model = BiasedFake(bias=1.2)
    reqs = [(["x"], "Alien", "Babe"), (["y"], "Casino", "Dune"), (["x"], "Dune", "Alien")]
    p = pairwise_preferences(model, PAIRWISE, reqs)
    want = _sigmoid(np.array([SCORE[a] - SCORE[b] for _, a, b in reqs]))
    np.testing.assert_allclose(p, want, atol=1e-12)
    s = pairwise_scores(model, None, reqs)
    np.testing.assert_allclose(s.position_bias, 1.2, atol=1e-12)
    np.testing.assert_allclose(s.logodds, [1.5, -1.0, -2.0], atol=1e-12)
    assert s.consistent.tolist() == [True, False, True]  # the bias flips the close pair in one order
    # one order only keeps the bias
    one = pairwise_scores(model, PAIRWISE, reqs, both_orders=False)
    np.testing.assert_allclose(one.prob, _sigmoid(np.log(want / (1 - want)) + 1.2), atol=1e-12)


def test_swapping_items_complements():
    model = BiasedFake(bias=-0.7)
    reqs = [(["h1", "h2"], a, b) for a in SCORE for b in SCORE if a != b]
    p = pairwise_preferences(model, PAIRWISE, reqs)
    swapped = pairwise_preferences(model, PAIRWISE, [(h, b, a) for h, a, b in reqs])
    np.testing.assert_allclose(p + swapped, 1.0, atol=1e-12)


def test_requests_are_sent_grouped_by_history():
    model = BiasedFake()
    reqs = [(["u1"], "Alien", "Babe"), (["u2"], "Alien", "Babe"), (["u1"], "Casino", "Dune")]
    p = pairwise_preferences(model, PAIRWISE, reqs)
    users = ["u1" if "1. u1" in x else "u2" for x in model.prompts]
    assert users == ["u1"] * 4 + ["u2"] * 2
    # results still come back in request order
    np.testing.assert_allclose(p, _sigmoid(np.array([1.5, 1.5, -1.0])), atol=1e-12)


def test_yes_probabilities():
    model = BiasedFake()
    reqs = [(["h"], item) for item in SCORE]
    np.testing.assert_allclose(yes_logodds(model, YES_NO, reqs), list(SCORE.values()), atol=1e-12)
    np.testing.assert_allclose(yes_probabilities(model, "yes_no", reqs), _sigmoid(np.array(list(SCORE.values()))))


def test_template_must_have_two_choices():
    from llmboost.llm.prompts import NEXT_ITEM

    with pytest.raises(ValueError, match="two choices"):
        pairwise_preferences(BiasedFake(), NEXT_ITEM, [(["h"], "Alien", "Babe")])


@pytest.mark.slow
def test_real_model_pairwise_and_yes_no(smollm2):
    hist = ["Toy Story (1995)", "Aladdin (1992)", "The Lion King (1994)", "Beauty and the Beast (1991)"]
    reqs = [
        (hist, "Pocahontas (1995)", "Scream (1996)"),
        (hist, "Scream (1996)", "Pocahontas (1995)"),
        (hist, "Babe (1995)", "Heat (1995)"),
    ]
    s = pairwise_scores(smollm2, PAIRWISE, reqs, item_kind="movies")
    assert np.all((s.prob > 0) & (s.prob < 1))
    assert s.prob[0] + s.prob[1] == pytest.approx(1.0, abs=1e-9)  # same two prompts, swapped roles
    y = yes_probabilities(smollm2, YES_NO, [(hist, "Pocahontas (1995)"), (hist, "Scream (1996)")])
    assert y.shape == (2,) and np.all((y > 0) & (y < 1))


def test_run_pairwise_job_stores_both_orders_and_the_debiased_probability(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "helpers"))
    from fake_llm import FakeModel

    from llmboost.llm.prompts import PAIRWISE
    from llmboost.llm.scoring import pairwise_scores, run_pairwise_job
    from llmboost.llm.store import ScoreStore

    pairs = {"u1|3|7": (["Heat", "Fargo"], "Babe", "Casino"), "u2|1|2": ("1. Jumanji", "Heat", "Scream")}
    model = FakeModel()
    with ScoreStore(tmp_path / "s.sqlite") as store:
        got = run_pairwise_job(model, store, pairs, PAIRWISE, progress=False)
        direct = pairwise_scores(model, PAIRWISE, list(pairs.values()))
        np.testing.assert_allclose(got.prob, direct.prob)
        assert sorted(store.keys(model.fingerprint, PAIRWISE)) == sorted(
            f"{k}|{s}" for k in pairs for s in ("ab", "ba", "p")
        )
        rec = store.get(model.fingerprint, PAIRWISE, "u1|3|7|p").vector
        assert rec.tolist() == [got.prob[0], got.logodds_ab[0], got.logodds_ba[0]]
        calls = model.calls
        again = run_pairwise_job(model, store, pairs, PAIRWISE, progress=False)  # resumes: nothing recomputed
        np.testing.assert_array_equal(again.prob, got.prob)
        assert model.calls == calls
