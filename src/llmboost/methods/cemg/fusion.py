"""Collaborative-guided multimodal fusion (CEMG, "Multimodal Fusion Layer").

For item ``i`` with content modalities ``x_i^m`` (text, visual, ...) and collaborative embedding ``c_i``:

* each modality is projected, ``h^m = LayerNorm(W_m x^m)``;
* the collaborative embedding guides the combination: modality attention
  ``a^m = softmax_m(<W_q c, W_k h^m> / sqrt(d))`` over the modalities the item has, and a per-dimension
  gate ``g^m = sigmoid(W_g^m c)``, so ``z = sum_m a^m (g^m * h^m) [+ W_c c]``;
* the objective keeps the content and agrees with collaborative structure:
  ``L = sum_m ||D_m(z) - x^m||^2 (present m only) + lambda * InfoNCE(z, c)``, where the in-batch InfoNCE
  pulls ``z_i`` towards ``P c_i`` and away from other items' ``P c_j`` (temperature ``tau``).

With ``guided=False`` (the "no collaborative guidance" ablation) the attention query is a learned
vector, there is no gate, no collaborative injection and no alignment term: a content-only fusion.
The paper's text describes the layer only at the level of its abstract (fusion "under the guidance of
collaborative signals"); the exact equations above are this implementation's reading and are
documented in docs/cemg.md.
"""

from __future__ import annotations

import logging
import math
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmboost.methods.cemg.features import ItemFeatures

logger = logging.getLogger(__name__)


class FusionNetwork(nn.Module):
    """The fusion layer's parameters (projections, guidance, decoders, alignment head)."""

    def __init__(self, dims: dict[str, int], collab_dim: int, dim: int, guided: bool, inject: bool) -> None:
        super().__init__()
        self.names = list(dims)
        self.guided = guided
        self.inject = inject and guided
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, dim), nn.LayerNorm(dim)) for m, d in dims.items()})
        self.key = nn.Linear(dim, dim, bias=False)
        self.decode = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, d)) for m, d in dims.items()}
        )
        if guided:
            self.query = nn.Linear(collab_dim, dim, bias=False)
            self.gate = nn.ModuleDict({m: nn.Linear(collab_dim, dim) for m in dims})
            self.align = nn.Linear(collab_dim, dim)
            if self.inject:
                self.collab = nn.Linear(collab_dim, dim)
        else:
            self.query_vector = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.dim = dim

    def forward(
        self, content: dict[str, torch.Tensor], present: dict[str, torch.Tensor], collab: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused vectors (B, dim) and the modality attention weights (B, M)."""
        h = torch.stack([self.project[m](content[m]) for m in self.names], 1)  # (B, M, d)
        mask = torch.stack([present[m] for m in self.names], 1)  # (B, M)
        if self.guided:
            assert collab is not None
            q = self.query(collab)  # (B, d)
            gates = torch.stack([torch.sigmoid(self.gate[m](collab)) for m in self.names], 1)
            h = h * gates
        else:
            q = self.query_vector.expand(h.shape[0], -1)
        logits = (self.key(h) * q.unsqueeze(1)).sum(-1) / math.sqrt(self.dim)
        logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, 1).nan_to_num(0.0)  # an item with no content: all weights 0
        z = (weights.unsqueeze(-1) * h).sum(1)
        if self.inject:
            z = z + self.collab(collab)
        return z, weights


class CollaborativeGuidedFusion:
    """Learns the fusion layer on all items; ``transform`` gives the fused item matrix for the RQ-VAE."""

    def __init__(
        self,
        dim: int = 64,
        epochs: int = 30,
        batch_size: int = 512,
        lr: float = 1e-3,
        align_weight: float = 1.0,
        temperature: float = 0.1,
        guided: bool = True,
        inject_collab: bool = True,
        seed: int = 0,
    ) -> None:
        self.dim = dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.align_weight = align_weight
        self.temperature = temperature
        self.guided = guided
        self.inject_collab = inject_collab
        self.seed = seed

    def _tensors(self, features: ItemFeatures) -> tuple[dict, dict, torch.Tensor | None]:
        content = {m: torch.from_numpy(_standardize(mod.values, mod.present)) for m, mod in features.content.items()}
        present = {m: torch.from_numpy(mod.present) for m, mod in features.content.items()}
        collab = None
        if features.collaborative is not None:
            collab = torch.from_numpy(_standardize(features.collaborative, np.ones(features.n_items, dtype=bool)))
        return content, present, collab

    def fit(self, features: ItemFeatures) -> Self:
        """Minimise reconstruction of present modalities (+ alignment to CF embeddings when guided)."""
        if not features.content:
            raise ValueError("fusion needs at least one content modality (text or visual); none was given")
        if self.guided and features.collaborative is None:
            raise ValueError("collaborative guidance needs collaborative item embeddings (features.collaborative)")
        no_content = features.items_without_content()
        if no_content.any():
            logger.warning(
                "%d items have no content modality: their fused vector comes from the collaborative "
                "embedding only (zero content)",
                int(no_content.sum()),
            )
        torch.manual_seed(self.seed)
        content, present, collab = self._tensors(features)
        dims = {m: v.shape[1] for m, v in content.items()}
        collab_dim = 0 if collab is None else collab.shape[1]
        self.network_ = FusionNetwork(dims, collab_dim, self.dim, self.guided, self.inject_collab)
        optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        self.history_: list[dict[str, float]] = []
        for epoch in range(self.epochs):
            order = torch.randperm(features.n_items, generator=generator)
            totals = {"reconstruction": 0.0, "alignment": 0.0}
            for rows in order.split(self.batch_size):
                c = None if collab is None else collab[rows]
                batch = {m: v[rows] for m, v in content.items()}
                mask = {m: v[rows] for m, v in present.items()}
                z, _ = self.network_(batch, mask, c if self.guided else None)
                recon = z.new_zeros(())
                for m in batch:
                    err = (self.network_.decode[m](z) - batch[m]).pow(2).mean(1)
                    recon = recon + (err * mask[m]).sum() / mask[m].sum().clamp(min=1)
                loss = recon
                if self.guided and self.align_weight > 0 and len(rows) > 1:
                    a = F.normalize(z, dim=1)
                    b = F.normalize(self.network_.align(c), dim=1)
                    logits = a @ b.T / self.temperature
                    labels = torch.arange(len(rows))
                    align = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
                    loss = loss + self.align_weight * align
                    totals["alignment"] += float(align.detach()) * len(rows)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                totals["reconstruction"] += float(recon.detach()) * len(rows)
            self.history_.append({"epoch": epoch, **{k: v / features.n_items for k, v in totals.items()}})
        self.network_.eval()
        return self

    @torch.no_grad()
    def transform(self, features: ItemFeatures) -> np.ndarray:
        """Fused item vectors, (n_items, dim)."""
        content, present, collab = self._tensors(features)
        z, weights = self.network_(content, present, collab if self.guided else None)
        self.modality_weights_ = {m: float(weights[:, j].mean()) for j, m in enumerate(self.network_.names)}
        return z.numpy()


def concat_features(features: ItemFeatures, include_collab: bool = True) -> np.ndarray:
    """The "no fusion" ablation: standardised modalities (and CF embedding) concatenated, L2-scaled per block."""
    blocks = [_standardize(m.values, m.present) / math.sqrt(m.dim) for m in features.content.values()]
    if include_collab and features.collaborative is not None:
        c = features.collaborative
        blocks.append(_standardize(c, np.ones(len(c), dtype=bool)) / math.sqrt(c.shape[1]))
    if not blocks:
        raise ValueError("no modality to concatenate")
    return np.concatenate(blocks, 1).astype(np.float32)


def _standardize(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per dimension over present rows; missing rows stay zero."""
    out = np.zeros_like(values, dtype=np.float32)
    if present.any():
        rows = values[present]
        out[present] = (rows - rows.mean(0)) / (rows.std(0) + 1e-6)
    return out
