"""The selective regularizer (Sec. 3.4): ``L = L_rec + lambda * mean_pairs[ w_ij * l(s_i - s_j, p_ij) ]``.

``w_ij`` is the gate's activation (soft mode) or ``1[gate > threshold]`` (hard mode), fixed before training;
``l`` is binary cross-entropy between ``sigmoid(s_i - s_j)`` and the teacher's ``p_ij`` (``target="soft"``) or
BPR towards the teacher's preferred item (``target="hard"``). The mean runs over all of a batch's pairs, so
closing the gate removes supervision instead of re-normalising it. Baselines are the same term with other
weights: global distillation (all 1), a random gate (the learned weights permuted: same activation rate),
an oracle gate (1 where the teacher is right by held-out interactions).

The term reads the backbone's user representations of the batch (``TrainBatch.user_repr``, no second
forward pass) and scores the pair items through the backbone's item table, so any backbone with
``pair_scores`` works and the trained model is an ordinary backbone: same class, parameters, latency.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmboost.data.interactions import Interactions

try:  # core-models: loss terms with parameters, batches with the backbone's outputs
    from llmboost.models.training import LossTerm as _LossTermBase
    from llmboost.models.training import TrainBatch  # noqa: F401

    _CORE_TERMS = isinstance(_LossTermBase, type) and issubclass(_LossTermBase, nn.Module)
except ImportError:  # pragma: no cover - depends on the merge state of core-models
    _LossTermBase, _CORE_TERMS = nn.Module, False
if not _CORE_TERMS:
    _LossTermBase = nn.Module


# ---------------------------------------------------------------------------------------------- backbone access


def user_repr(model: Any, users: np.ndarray, history: Interactions | None = None, train: bool = False) -> torch.Tensor:
    """The backbone's user / sequence representation (core ``TorchRecommender.user_repr`` when present)."""
    if hasattr(model, "user_repr"):
        return model.user_repr(users, history=history, train=train)
    users_t = torch.as_tensor(np.asarray(users, dtype=np.int64))
    net = model.network_
    if model.name == "bprmf":
        return net.user_factors.weight[users_t]
    if model.name == "sasrec":
        from llmboost.models.sasrec import _left_padded

        history = model.train_ if history is None else history
        seq = torch.from_numpy(_left_padded(history, np.asarray(users, dtype=np.int64), model.max_len))
        width = max(1, int((seq > 0).sum(1).max()))
        net.train(train)
        out = net(seq[:, -width:])[:, -1]
        net.eval()
        return out
    raise TypeError(f"S-LLMR needs a backbone with user_repr/pair_scores; {type(model).__name__} has neither")


def pair_scores(model: Any, repr_: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Differentiable scores ``(B, M)`` of ``items`` for each representation: one matmul against the backbone's
    item table (core ``item_repr``) and a gather when that is small (faster on CPU than gathering B x M
    vectors), else the core ``pair_scores``."""
    if hasattr(model, "item_repr"):
        table = model.item_repr()
    elif hasattr(model, "pair_scores"):
        return model.pair_scores(repr_, items)
    else:
        net = model.network_
        table = net.item_factors.weight if model.name == "bprmf" else net.item_embedding.weight[1:]
    if table.shape[0] * repr_.shape[0] <= 1 << 24:  # a matmul + gather beats gathering B x M vectors on CPU
        return (repr_ @ table.T).gather(1, items)
    if hasattr(model, "pair_scores"):
        return model.pair_scores(repr_, items)
    return (F.embedding(items, table) * repr_.unsqueeze(1)).sum(-1)


@torch.no_grad()
def backbone_pair_stats(
    model: Any,
    users: np.ndarray,
    items_i: np.ndarray,
    items_j: np.ndarray,
    mc_samples: int = 8,
    dropout: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``s_i - s_j`` of a trained backbone and its std over ``mc_samples`` passes with the backbone's own
    dropout active and dropout ``dropout`` on the user representation (MC dropout)."""
    torch.manual_seed(seed)
    uniq, inv = np.unique(users, return_inverse=True)
    items = torch.as_tensor(np.stack([items_i, items_j], 1), dtype=torch.long)
    inv_t = torch.as_tensor(inv)
    r = user_repr(model, uniq, train=False)[inv_t]
    s = pair_scores(model, r, items)
    margin = (s[:, 0] - s[:, 1]).double().numpy()
    samples = []
    for _ in range(mc_samples):
        rr = F.dropout(user_repr(model, uniq, train=True)[inv_t], dropout, training=True)
        ss = pair_scores(model, rr, items)
        samples.append((ss[:, 0] - ss[:, 1]).double().numpy())
    model.network_.eval()
    return margin, (np.std(samples, axis=0) if samples else np.zeros_like(margin))


# ---------------------------------------------------------------------------------------------- the term


class SelectiveRegularizer(_LossTermBase):
    """Gated pairwise ranking loss against teacher preferences, as a backbone loss term."""

    name = "sllmr"

    def __init__(
        self,
        n_users: int,
        users: np.ndarray,
        items_i: np.ndarray,
        items_j: np.ndarray,
        prob: np.ndarray,
        weight: np.ndarray,
        lam: float = 0.5,
        target: str = "soft",
    ) -> None:
        super().__init__()
        if target not in ("soft", "hard"):
            raise ValueError(f"target must be 'soft' or 'hard', not {target!r}")
        arrays = {"prob": prob, "weight": weight}
        for key, arr in arrays.items():
            if not np.isfinite(np.asarray(arr, dtype=np.float64)).all():
                raise ValueError(f"SelectiveRegularizer: {key} has NaN/inf values; refusing to train on them")
        if not len(users) == len(items_i) == len(items_j) == len(prob) == len(weight):
            raise ValueError("users, items_i, items_j, prob and weight must have one entry per pair")
        self.lam = float(lam)
        self.target = target
        counts = np.bincount(users, minlength=n_users) if len(users) else np.zeros(n_users, dtype=np.int64)
        width = max(1, int(counts.max(initial=0)))
        order = np.argsort(users, kind="stable")
        slot = np.arange(len(users)) - np.repeat(np.cumsum(counts) - counts, counts)
        u_sorted = users[order]
        shape = (n_users, width)
        idx_i, idx_j = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        p, w, real = np.full(shape, 0.5), np.zeros(shape), np.zeros(shape, bool)
        idx_i[u_sorted, slot] = items_i[order]
        idx_j[u_sorted, slot] = items_j[order]
        p[u_sorted, slot] = prob[order]
        w[u_sorted, slot] = weight[order]
        real[u_sorted, slot] = True
        for name, arr in (("idx_i", idx_i), ("idx_j", idx_j), ("p", p), ("w", w), ("real", real), ("has", counts > 0)):
            t = torch.from_numpy(arr)
            self.register_buffer(name, t.float() if t.dtype == torch.float64 else t, persistent=False)
        self.register_buffer("done", torch.zeros(n_users, dtype=torch.bool), persistent=False)
        self._epoch = -1
        self.width = width
        self.activation_rate = float(np.mean(weight)) if len(weight) else 0.0
        self._legacy_users: dict[bytes, int] | None = None

    def forward(self, batch: Any, model: Any, epoch: int = 0) -> torch.Tensor:
        """``lambda * sum(w * l) / n_pairs`` over the pairs of the batch's users."""
        users, repr_ = batch.users, batch.user_repr
        keep = self.has[users]
        if not bool(keep.any()):
            return repr_.sum() * 0.0
        users, repr_ = users[keep], repr_[keep]
        # each user's pairs once per batch (BPR-MF batches repeat users): first row of every user
        uniq, inverse = torch.unique(users, return_inverse=True)
        first = torch.full((len(uniq),), len(users), dtype=torch.long, device=users.device)
        first = first.scatter_reduce(0, inverse, torch.arange(len(users), device=users.device), "amin")
        # ... and once per epoch: users already regularized this epoch are skipped
        if epoch != self._epoch:
            self.done.zero_()
            self._epoch = epoch
        fresh = ~self.done[uniq]
        if not bool(fresh.any()):
            return repr_.sum() * 0.0
        users, repr_ = uniq[fresh], repr_[first[fresh]]
        self.done[users] = True
        items = torch.cat([self.idx_i[users], self.idx_j[users]], dim=1)
        s = pair_scores(model, repr_, items)
        d = s[:, : self.width] - s[:, self.width :]
        p, w, real = self.p[users], self.w[users], self.real[users]
        if self.target == "soft":
            per_pair = F.binary_cross_entropy_with_logits(d, p, reduction="none")
        else:
            per_pair = -F.logsigmoid(torch.where(p >= 0.5, d, -d))
        return self.lam * (w * per_pair * real).sum() / real.sum().clamp(min=1)

    # -------------------------------------------------------------- before core-models' TrainBatch
    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if len(args) == 2 and not kwargs and hasattr(args[0], "network_") and not hasattr(args[1], "user_repr"):
            epoch = len(getattr(args[0], "history_", []))  # epochs finished so far = this epoch's number
            return super().__call__(self._legacy_batch(args[0], args[1]), args[0], epoch)
        return super().__call__(*args, **kwargs)

    def _legacy_batch(self, model: Any, batch: Any) -> Any:
        """A TrainBatch-like view of an old-style batch (BPR-MF triples / SASRec windows)."""
        from types import SimpleNamespace

        if model.name == "bprmf":
            u = batch[0]
            return SimpleNamespace(users=u, user_repr=model.network_.user_factors(u))
        inputs, targets = batch
        if self._legacy_users is None:
            train = model.train_
            self._legacy_users = {}
            for u in np.flatnonzero(train.user_counts() >= 2):
                self._legacy_users[train.history(int(u))[-(model.max_len + 1) :].astype(np.int64).tobytes()] = int(u)
        full = torch.cat([inputs[:, :1], targets], dim=1).numpy()
        users = [
            self._legacy_users.get(np.trim_zeros(row, "f").astype(np.int64).__sub__(1).tobytes(), 0) for row in full
        ]
        hidden = model.network_(inputs)[:, -1]  # a second forward pass: only before core-models' TrainBatch
        return SimpleNamespace(users=torch.as_tensor(users), user_repr=hidden)


def attach(model: Any, term: SelectiveRegularizer) -> Any:
    """Add the term to a backbone (core ``add_loss_term``; the term has no trainable parameters)."""
    model.add_loss_term(term)
    return model
