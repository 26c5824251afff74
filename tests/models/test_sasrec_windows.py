"""SASRec's ``train_on`` option: windows over the whole history train on every training event once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from llmboost.data.interactions import Interactions
from llmboost.models import SASRec, sasrec
from llmboost.models.sasrec import _training_windows
from llmboost.splitting import leave_one_out
from tests.factories import TINY_SASREC, cyclic_sequences


def _events(lengths: list[int], n_items: int = 500) -> Interactions:
    rows = [(u, (u * 37 + t) % n_items, t) for u, n in enumerate(lengths) for t in range(n)]
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return Interactions.from_frame(frame, len(lengths), n_items)


def _pairs(windows: np.ndarray) -> list[tuple[int, int]]:
    """(input item, target item) of every real position of left-padded windows."""
    inputs, targets = windows[:, :-1], windows[:, 1:]
    real = (inputs > 0) & (targets > 0)
    return sorted(zip(inputs[real].tolist(), targets[real].tolist(), strict=True))


@pytest.mark.parametrize("width", [2, 3, 6, 11])
def test_all_windows_make_every_event_after_the_first_a_target_exactly_once(width: int) -> None:
    events = _events([1, 2, 5, 6, 7, 23, 40])
    _, windows, lengths = _training_windows(events, width, "all_windows")
    expected = []
    for user in range(events.n_users):
        items = events.items[events.user_ptr[user] : events.user_ptr[user + 1]] + 1
        expected += list(zip(items[:-1].tolist(), items[1:].tolist(), strict=True))
    assert _pairs(windows) == sorted(expected)
    assert np.array_equal((windows > 0).sum(1), lengths) and lengths.min() >= 2 and lengths.max() <= width


def test_last_window_is_each_users_most_recent_items() -> None:
    events = _events([1, 4, 30])
    _, windows, lengths = _training_windows(events, 6, "last_window")
    assert lengths.tolist() == [4, 6]  # the one-event user has no target
    assert windows[1, -6:].tolist() == (events.items[events.user_ptr[3] - 6 : events.user_ptr[3]] + 1).tolist()


def test_all_windows_trains_and_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="train_on"):
        SASRec(train_on="everything")
    torch.set_num_threads(1)
    split = leave_one_out(cyclic_sequences())
    model = SASRec(**(TINY_SASREC | {"max_len": 4}), train_on="all_windows")
    model.fit(split.train, split.valid)
    assert model.best_valid_ndcg_ is not None and model.best_valid_ndcg_ > 0.9


def test_blocked_cross_entropy_equals_the_whole_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The full-softmax loss computed in blocks of rows has the loss and gradients of one big block."""
    torch.manual_seed(0)
    hidden = torch.randn(1001, 16, requires_grad=True)
    items = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 300, (1001,))
    whole = F.cross_entropy(hidden @ items.T, targets)
    whole_grads = torch.autograd.grad(whole, (hidden, items))
    monkeypatch.setattr(sasrec, "_LOGIT_BLOCK_BYTES", 4 * 300 * 64)  # blocks of 64 rows, the last one short
    blocked = sasrec._full_softmax_cross_entropy(hidden, items, targets)
    blocked_grads = torch.autograd.grad(blocked, (hidden, items))
    assert blocked.item() == pytest.approx(whole.item(), rel=1e-5)
    for a, b in zip(blocked_grads, whole_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
