"""Loss terms with parameters and differentiable pair scores on the neural backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from llmboost.models import BPRMF, LossTerm, SASRec, TorchRecommender, TrainBatch
from llmboost.splitting import leave_one_out
from tests.factories import cyclic_sequences


@pytest.fixture(scope="module")
def split():
    torch.set_num_threads(1)
    return leave_one_out(cyclic_sequences(n_users=60, n_items=20, length=8))


def _small(kind: str, **kw) -> TorchRecommender:
    if kind == "sasrec":
        return SASRec(hidden=16, layers=1, heads=1, dropout=0.0, max_len=8, batch_size=32, progress=False, **kw)
    return BPRMF(factors=8, batch_size=64, progress=False, **kw)


class Gate(LossTerm):
    """A term with one trainable scalar pulling user representations towards zero."""

    name = "gate"

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(0.5))
        self.epochs_seen: list[int] = []
        self.repr_ids: list[int] = []

    def forward(self, batch: TrainBatch, model: TorchRecommender, epoch: int) -> torch.Tensor:
        self.epochs_seen.append(epoch)
        assert batch.user_repr.shape[0] == batch.users.shape[0] == batch.pos_items.shape[0]
        return self.weight * batch.user_repr.pow(2).sum(-1).mean()


@pytest.mark.parametrize("kind", ["sasrec", "bprmf"])
def test_term_gradient_reaches_the_backbone(kind, split) -> None:
    model = _small(kind, epochs=1)
    model.fit(split.train)
    gate = Gate()
    raw = next(iter(model._batches(split.train, np.random.default_rng(0))))
    batch = model._forward(raw)
    model.network_.zero_grad()
    gate(batch, model, 0).backward()
    grads = [p.grad for p in model.network_.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert gate.weight.grad is not None and float(gate.weight.grad) != 0.0


@pytest.mark.parametrize("kind", ["sasrec", "bprmf"])
def test_term_parameters_train_with_their_own_lr_and_are_logged(kind, split) -> None:
    model = _small(kind, epochs=3, lr=1e-3)
    fast = Gate()
    model.add_loss_term(fast, lr=0.05)
    model.fit(split.train)
    # Adam moves a parameter by about lr per step: 3 epochs of a few steps at lr 0.05, far beyond 1e-3 steps
    steps = len(fast.epochs_seen)
    assert 0.5 - float(fast.weight.detach()) > 0.05 * steps * 0.5
    assert sorted(set(fast.epochs_seen)) == [0, 1, 2]
    assert all("loss/gate" in h and "loss/backbone" in h for h in model.history_)
    for h in model.history_:
        assert h["loss"] == pytest.approx(h["loss/backbone"] + h["loss/gate"])
    assert model.history_[0]["loss/gate"] > 0


def test_duplicate_term_names_are_refused() -> None:
    model = _small("bprmf").add_loss_term(Gate())
    with pytest.raises(ValueError, match="already exists"):
        model.add_loss_term(Gate())


@pytest.mark.parametrize("kind", ["sasrec", "bprmf"])
def test_pair_scores_equal_full_catalog_scores(kind, split) -> None:
    model = _small(kind, epochs=2).fit(split.train)
    users = np.arange(12)
    rng = np.random.default_rng(1)
    items = rng.integers(0, split.n_items, size=(len(users), 5))
    full = model.score(users)
    expected = full[np.arange(len(users))[:, None], items]
    with torch.no_grad():
        via_repr = model.pair_scores(model.user_repr(users), torch.from_numpy(items))
    torch.testing.assert_close(via_repr, expected, rtol=1e-5, atol=1e-5)
    pairs = model.score_pairs(users, items)
    assert pairs.requires_grad
    torch.testing.assert_close(pairs.detach(), expected, rtol=1e-5, atol=1e-5)
    pairs.sum().backward()
    assert any(p.grad is not None for p in model.network_.parameters())
    history = split.history("test")
    torch.testing.assert_close(
        model.score_pairs(users, items[:, 0], history=history).detach(),
        model.score(users, history=history)[np.arange(len(users)), items[:, 0]],
        rtol=1e-5,
        atol=1e-5,
    )


def test_plain_callable_terms_still_work(split) -> None:
    calls = []

    def penalty(model, batch):
        calls.append(len(batch))
        return torch.zeros(())

    model = _small("sasrec", epochs=1).add_loss_term(penalty)
    model.fit(split.train)
    assert calls and all(n == 3 for n in calls)  # the raw (users, inputs, targets) batch
    assert "loss/penalty" in model.history_[0]
