"""item2vec: the compiled SGNS trainer (seeded, learns planted groups, event weights) and the torch fallback."""

from __future__ import annotations

import importlib.util
from importlib.util import find_spec

import numpy as np
import pytest

from llmboost.models import Item2Vec
from tests.factories import events_dataset

GROUPS, GROUP_SIZE = 4, 6


@pytest.fixture(scope="module")
def planted():
    """Every user consumes 5 items of one group of 6, in random order: items co-occur only within a group."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(240):
        group = u % GROUPS
        picks = rng.choice(GROUP_SIZE, size=5, replace=False) + group * GROUP_SIZE
        rows += [(f"u{u}", f"i{i:02d}", t) for t, i in enumerate(picks)]
    data = events_dataset(rows, "planted")
    group_of = np.array([int(name[1:]) // GROUP_SIZE for name in data.items.decode(np.arange(GROUPS * GROUP_SIZE))])
    return data.interactions, group_of


def _same_group_share(model: Item2Vec, group_of: np.ndarray) -> float:
    """Share of each item's top-5 neighbours that are in its own group (5 = the rest of the group)."""
    return float(
        np.mean([(group_of[model.similar_items(i, k=5)[0]] == group_of[i]).mean() for i in range(len(group_of))])
    )


@pytest.mark.parametrize("window", [2, None])
def test_compiled_trainer_recovers_planted_groups(planted, window: int | None) -> None:
    pytest.importorskip("numba", reason="the compiled trainer needs the 'fast' extra")
    train, group_of = planted
    m = Item2Vec(k=10, dim=16, window=window, epochs=10, method="numba", progress=False).fit(train)
    assert _same_group_share(m, group_of) == 1.0
    assert m.loss_history_[-1] < 0.8 * m.loss_history_[0]


def test_compiled_trainer_is_deterministic_for_a_seed(planted) -> None:
    pytest.importorskip("numba", reason="the compiled trainer needs the 'fast' extra")
    train, _ = planted

    def fit(seed: int) -> Item2Vec:
        return Item2Vec(k=5, dim=8, epochs=2, method="numba", seed=seed, progress=False).fit(train)

    a, b, c = fit(3), fit(3), fit(4)
    np.testing.assert_array_equal(a.in_vectors_.weight.numpy(), b.in_vectors_.weight.numpy())
    assert a.loss_history_ == b.loss_history_
    assert not np.array_equal(a.in_vectors_.weight.numpy(), c.in_vectors_.weight.numpy())


def test_auto_uses_the_compiled_trainer_and_unit_weights_change_nothing(planted) -> None:
    pytest.importorskip("numba", reason="the compiled trainer needs the 'fast' extra")
    train, _ = planted
    numba = Item2Vec(k=5, dim=8, epochs=2, method="numba", progress=False).fit(train)
    auto = Item2Vec(k=5, dim=8, epochs=2, progress=False).fit(train, weights=np.ones(len(train), np.float32))
    np.testing.assert_array_equal(auto.in_vectors_.weight.numpy(), numba.in_vectors_.weight.numpy())


def test_auto_falls_back_to_torch_without_numba(planted, monkeypatch) -> None:
    train, _ = planted
    torch_fit = Item2Vec(k=5, dim=8, epochs=1, method="torch", progress=False).fit(train)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "numba" else find_spec(name))
    auto = Item2Vec(k=5, dim=8, epochs=1, progress=False).fit(train)
    np.testing.assert_array_equal(auto.in_vectors_.weight.numpy(), torch_fit.in_vectors_.weight.numpy())


def test_noise_table_holds_each_item_in_proportion() -> None:
    sgns = pytest.importorskip("llmboost.models._sgns", reason="the compiled trainer needs the 'fast' extra")
    probabilities = np.array([0.5, 0.3, 0.15, 0.05])
    table = sgns.noise_table(probabilities, min_size=1000)
    assert len(table) == 1024
    np.testing.assert_allclose(np.bincount(table, minlength=4) / len(table), probabilities, atol=1 / len(table))


def test_torch_fallback_recovers_planted_groups(planted) -> None:
    train, group_of = planted
    m = Item2Vec(k=10, dim=16, epochs=5, lr=0.05, method="torch", pair_batch_size=256, progress=False).fit(train)
    assert _same_group_share(m, group_of) > 0.9


@pytest.mark.parametrize(
    ("setting", "message"),
    [({"method": "gensim"}, "method"), ({"window": 0}, "window"), ({"lr": -0.1}, "lr"), ({"epochs": 0}, "epochs")],
)
def test_bad_settings_name_the_setting(planted, setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Item2Vec(progress=False, **setting).fit(planted[0])
