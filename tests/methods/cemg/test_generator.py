"""The TIGER-style generator: constrained beam search never yields an invalid item, histories are
truncated to the context, save/load round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmboost.data import load_dataset
from llmboost.methods.cemg.generator import GenerativeRecommender
from llmboost.methods.cemg.semantic_ids import SemanticIDs
from llmboost.splitting import leave_one_out


@pytest.fixture(scope="module")
def ml100k(shared_datasets: Path):
    dataset = load_dataset(shared_datasets / "movielens-100k")
    return dataset, leave_one_out(dataset)


def random_ids(n_items: int, size: int = 8, seed: int = 0) -> SemanticIDs:
    raw = np.random.default_rng(seed).integers(0, size, (n_items, 3))
    return SemanticIDs.build(raw, size, max_dedup=64)


@pytest.mark.realdata
def test_constrained_beam_search_only_returns_real_unseen_items(ml100k, tmp_path: Path) -> None:
    dataset, split = ml100k
    ids = random_ids(dataset.n_items)
    model = GenerativeRecommender(
        ids.codes,
        ids.sizes,
        d_model=32,
        layers=1,
        heads=2,
        ff=64,
        max_history=8,
        targets_per_user=2,
        epochs=1,
        batch_size=512,
        beam=20,
        valid_users=50,
        progress=False,
    ).fit(split.train, split.valid)
    history = split.history("test")
    users = np.arange(dataset.n_users)  # every user of MovieLens-100K
    items, _ = model.recommend(users, k=10, history=history)
    assert items.shape == (dataset.n_users, 10)
    real = items >= 0
    assert real.mean() > 0.99
    assert items[real].max() < dataset.n_items
    for row, user in zip(items, users, strict=True):
        listed = row[row >= 0]
        assert len(set(listed.tolist())) == len(listed)  # distinct items
        assert not np.isin(listed, history.history(user)).any()  # never an item the user has seen
    # raw beams decode only to IDs in the table
    raw, raw_scores = model.generate(model.user_histories(users[:64], history), beam=20)
    assert (raw >= 0).all() and np.all(np.diff(raw_scores, axis=1) <= 1e-6)
    np.testing.assert_array_equal(ids.item_of(ids.codes[raw[:, 0]]), raw[:, 0])
    # persistence: the same lists after reload, with the ID table beside the weights
    model.save(tmp_path / "gen")
    again = GenerativeRecommender.load(tmp_path / "gen")
    np.testing.assert_array_equal(again.recommend(users[:20], k=10, history=history)[0], items[:20])


@pytest.mark.realdata
def test_histories_longer_than_the_context_keep_the_most_recent_items(ml100k) -> None:
    dataset, split = ml100k
    ids = random_ids(dataset.n_items, seed=1)
    model = GenerativeRecommender(
        ids.codes,
        ids.sizes,
        d_model=16,
        layers=1,
        heads=2,
        ff=32,
        max_history=5,
        epochs=5,
        targets_per_user=1,
        progress=False,
        max_minutes=0.0,
    ).fit(split.train)
    assert len(model.history_) == 1  # the time budget stops training after the first epoch
    user = int(np.argmax(split.train.user_counts()))
    full = split.train.history(user)
    assert len(full) > 5
    window = model.user_histories(np.array([user]), split.train)[0]
    np.testing.assert_array_equal(window, full[-5:])
    assert model.generate(window[None])[0].shape == (1, 20)


def test_generator_rejects_a_table_of_another_catalog() -> None:
    ids = random_ids(10)
    with pytest.raises(ValueError, match="codes must be"):
        GenerativeRecommender(ids.codes[:, :2], ids.sizes)
    import pandas as pd

    from llmboost.data.interactions import Interactions

    train = Interactions.from_frame(pd.DataFrame({"user": [0, 0], "item": [0, 1], "timestamp": [1, 2]}), 1, 12)
    with pytest.raises(ValueError, match="ID table has 10 items"):
        GenerativeRecommender(ids.codes, ids.sizes, epochs=1, progress=False).fit(train)


def test_cached_beam_decoder_matches_the_transformer_decoder() -> None:
    import torch

    ids = random_ids(50, seed=2)
    model = GenerativeRecommender(ids.codes, ids.sizes, d_model=32, layers=2, heads=4, ff=64, max_history=6)
    from llmboost.methods.cemg.generator import Seq2SeqNetwork

    network = Seq2SeqNetwork(ids.sizes, 6, 32, 2, 4, 64, 0.1).eval()
    histories = np.random.default_rng(0).integers(-1, 50, (3, 6))
    memory, pad = network.encode(model._history_tokens(histories))
    prefix = model._tokens[torch.randint(1, 51, (3, 5))]  # (B=3, beams=5, L) code tokens
    cross, cache = network.cross_cache(memory), None
    token = torch.zeros(3, 5, dtype=torch.long)
    for step in range(3):
        fast, cache = network.decode_step(cross, pad, token, step, cache)
        slow = network.decode(
            memory.repeat_interleave(5, 0), pad.repeat_interleave(5, 0), prefix[:, :, :step].reshape(15, step)
        )[:, -1]
        torch.testing.assert_close(fast.reshape(15, -1), slow, rtol=1e-4, atol=1e-5)
        token = prefix[:, :, step]
