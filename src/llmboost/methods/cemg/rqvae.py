"""Residual-Quantised VAE (RQ-VAE) item tokenizer (TIGER, Rajput et al. 2023, Sec. 3.1; CEMG's
"Unified Modality Tokenization").

An MLP encoder maps an item vector ``x`` to a latent ``z``; level ``l`` quantises the residual
``r_l`` (``r_0 = z``) to its nearest code ``e_l`` in codebook ``C_l`` and passes ``r_{l+1} = r_l - e_l`` on.
The decoder reconstructs ``x`` from ``sum_l e_l``. Loss (TIGER Eq. 1-2):
``||x - x_hat||^2 + sum_l ||sg[r_l] - e_l||^2 + beta * ||r_l - sg[e_l]||^2`` with a straight-through
estimator. Codebooks are initialised by k-means on the first residuals, and codes unused during an
epoch are re-seeded with random residuals of that epoch (dead-code restarts).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class RQVAENetwork(nn.Module):
    """Encoder, ``levels`` codebooks and decoder."""

    def __init__(self, in_dim: int, hidden: list[int], latent: int, levels: int, codebook_size: int) -> None:
        super().__init__()
        widths = [in_dim, *hidden, latent]
        enc: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            enc += [nn.Linear(a, b), nn.ReLU()]
        self.encoder = nn.Sequential(*enc[:-1])
        dec: list[nn.Module] = []
        back = widths[::-1]
        for a, b in itertools.pairwise(back):
            dec += [nn.Linear(a, b), nn.ReLU()]
        self.decoder = nn.Sequential(*dec[:-1])
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(codebook_size, latent) * 0.1) for _ in range(levels)]
        )

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Codes (B, L), quantised latent (straight-through), residuals per level, codebook loss."""
        residual = z
        quantized = torch.zeros_like(z)
        codes, residuals = [], []
        loss = z.new_zeros(())
        for book in self.codebooks:
            residuals.append(residual)
            code = torch.cdist(residual, book).argmin(1)
            e = book[code]
            loss = loss + F.mse_loss(e, residual.detach(), reduction="sum") / len(z)  # codebook term
            codes.append(code)
            quantized = quantized + e
            residual = residual - e
        return torch.stack(codes, 1), quantized, residuals, loss


class RQVAE:
    """Fits the tokenizer on item vectors; ``encode`` gives each item's ``levels`` codes."""

    def __init__(
        self,
        levels: int = 3,
        codebook_size: int = 256,
        latent_dim: int = 32,
        hidden: list[int] | None = None,
        epochs: int = 200,
        batch_size: int = 1024,
        lr: float = 1e-3,
        beta: float = 0.25,
        kmeans_init: bool = True,
        restart_dead: bool = True,
        seed: int = 0,
    ) -> None:
        self.levels = levels
        self.codebook_size = codebook_size
        self.latent_dim = latent_dim
        self.hidden = [256, 128] if hidden is None else list(hidden)
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta = beta
        self.kmeans_init = kmeans_init
        self.restart_dead = restart_dead
        self.seed = seed

    def fit(self, x: np.ndarray) -> Self:
        """Train on ``x`` (n_items, d); records ``history_`` (losses, restarts) and ``fit_seconds_``."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or not len(x):
            raise ValueError(f"RQ-VAE input must be a non-empty (n_items, d) matrix, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("RQ-VAE input has NaN/inf values")
        started = time.perf_counter()
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        data = torch.from_numpy(x)
        self.mean_ = data.mean(0)
        self.scale_ = data.std(0).mean().clamp(min=1e-6)
        data = (data - self.mean_) / self.scale_
        self.network_ = RQVAENetwork(x.shape[1], self.hidden, self.latent_dim, self.levels, self.codebook_size)
        if self.kmeans_init:
            self._kmeans_init(data, generator)
        optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.lr)
        self.history_: list[dict[str, float]] = []
        for epoch in range(self.epochs):
            order = torch.randperm(len(data), generator=generator)
            used = torch.zeros(self.levels, self.codebook_size, dtype=torch.bool)
            total = {"loss": 0.0, "reconstruction": 0.0}
            for rows in order.split(self.batch_size):
                batch = data[rows]
                z = self.network_.encoder(batch)
                codes, quantized, residuals, codebook_loss = self.network_.quantize(z)
                commitment = sum(
                    F.mse_loss(r, self.network_.codebooks[level][codes[:, level]].detach(), reduction="sum")
                    for level, r in enumerate(residuals)
                ) / len(batch)
                z_q = z + (quantized - z).detach()  # straight-through estimator
                recon = F.mse_loss(self.network_.decoder(z_q), batch, reduction="sum") / len(batch)
                loss = recon + codebook_loss + self.beta * commitment
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                for level in range(self.levels):
                    used[level, codes[:, level]] = True
                total["loss"] += float(loss.detach()) * len(batch)
                total["reconstruction"] += float(recon.detach()) * len(batch)
            restarted = self._restart(data, used, generator) if self.restart_dead and epoch < self.epochs - 1 else 0
            self.history_.append(
                {
                    "epoch": epoch,
                    **{k: v / len(data) for k, v in total.items()},
                    "dead_restarted": restarted,
                    "used_codes": int(used.sum()),
                }
            )
        self.network_.eval()
        self.fit_seconds_ = time.perf_counter() - started
        return self

    @torch.no_grad()
    def _kmeans_init(self, data: torch.Tensor, generator: torch.Generator, iters: int = 20) -> None:
        """Each codebook = k-means centroids of that level's residuals (TIGER Sec. 3.1)."""
        residual = self.network_.encoder(data)
        for book in self.network_.codebooks:
            centroids = _kmeans(residual, self.codebook_size, iters, generator)
            book.copy_(centroids)
            residual = residual - centroids[torch.cdist(residual, centroids).argmin(1)]

    @torch.no_grad()
    def _restart(self, data: torch.Tensor, used: torch.Tensor, generator: torch.Generator) -> int:
        """Re-seed codes no item used this epoch with residuals of random items."""
        dead = ~used
        if not dead.any():
            return 0
        sample = data[torch.randint(len(data), (min(len(data), 4096),), generator=generator)]
        _, _, residuals, _ = self.network_.quantize(self.network_.encoder(sample))
        for level in range(self.levels):
            idx = dead[level].nonzero().squeeze(1)
            if len(idx):
                pick = torch.randint(len(sample), (len(idx),), generator=generator)
                noise = 0.01 * torch.randn(len(idx), self.latent_dim, generator=generator)
                self.network_.codebooks[level][idx] = residuals[level][pick] + noise
        return int(dead.sum())

    @torch.no_grad()
    def encode(self, x: np.ndarray) -> np.ndarray:
        """Codes of each row of ``x``, (n, levels) int64."""
        data = (torch.from_numpy(np.asarray(x, dtype=np.float32)) - self.mean_) / self.scale_
        codes, _, _, _ = self.network_.quantize(self.network_.encoder(data))
        return codes.numpy().astype(np.int64)

    @torch.no_grad()
    def reconstruction_error(self, x: np.ndarray) -> float:
        """Mean squared reconstruction error per item (in standardised units)."""
        data = (torch.from_numpy(np.asarray(x, dtype=np.float32)) - self.mean_) / self.scale_
        _, quantized, _, _ = self.network_.quantize(self.network_.encoder(data))
        return float(F.mse_loss(self.network_.decoder(quantized), data, reduction="sum") / len(data))

    def state(self) -> dict[str, object]:
        return {
            "params": {
                k: getattr(self, k)
                for k in (
                    "levels",
                    "codebook_size",
                    "latent_dim",
                    "hidden",
                    "epochs",
                    "batch_size",
                    "lr",
                    "beta",
                    "kmeans_init",
                    "restart_dead",
                    "seed",
                )
            },
            "network": self.network_.state_dict(),
            "mean": self.mean_,
            "scale": self.scale_,
        }


def _kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Plain Lloyd k-means (k-means++-free: random distinct rows, empty clusters re-seeded)."""
    n = len(x)
    if n >= k:
        centroids = x[torch.randperm(n, generator=generator)[:k]].clone()
    else:  # fewer items than codes: repeat rows with noise
        noise = 0.01 * torch.randn(k, x.shape[1], generator=generator)
        centroids = x[torch.randint(n, (k,), generator=generator)] + noise
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        empty = counts.squeeze(1) == 0
        centroids = torch.where(empty.unsqueeze(1), centroids, sums / counts.clamp(min=1))
        if empty.any():
            centroids[empty] = x[torch.randint(n, (int(empty.sum()),), generator=generator)]
    return centroids
