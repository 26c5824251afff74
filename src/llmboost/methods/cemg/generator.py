"""TIGER-style generative retrieval (Rajput et al. 2023, Sec. 3.2): a compact encoder-decoder
Transformer reads the user's history as semantic-ID tokens and decodes the next item's ID code by
code, with beam search constrained by a trie of valid IDs (CEMG's "End-to-End Generative
Recommendation" stage with the from-scratch generator; :mod:`llm_generator` is the LLM variant).

Tokens: encoder token of level ``l``, code ``c`` is ``1 + offset_l + c`` (0 = padding); each history
item contributes ``L`` tokens, with learned position (item slot) and level embeddings. Histories
longer than ``max_history`` items keep the most recent ``max_history`` (documented truncation).
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llmboost.data.interactions import Interactions
from llmboost.methods.cemg.trie import SemanticIDTrie
from llmboost.models.base import Recommender
from llmboost.models.layers import use_fast_dropout

logger = logging.getLogger(__name__)


class Seq2SeqNetwork(nn.Module):
    """Encoder-decoder over code tokens; the output at decoder step ``l`` scores level ``l``'s codes."""

    def __init__(
        self, sizes: list[int], max_history: int, d_model: int, layers: int, heads: int, ff: int, dropout: float
    ) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.levels = len(sizes)
        self.offsets = [0, *np.cumsum(sizes)[:-1].tolist()]
        vocab = int(sum(sizes)) + 1
        self.token = nn.Embedding(vocab, d_model, padding_idx=0)
        self.slot = nn.Embedding(max_history, d_model)
        self.level = nn.Embedding(self.levels + 1, d_model)
        with warnings.catch_warnings():  # nested tensors do not apply to pre-norm layers; torch says so loudly
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(
                d_model, heads, layers, layers, ff, dropout, batch_first=True, norm_first=True
            )
        use_fast_dropout(self.transformer)  # cheaper masks on CPUs (llmboost.models.layers)
        self.head = nn.Linear(d_model, vocab - 1)
        level_of_column = np.repeat(np.arange(self.levels), sizes)
        self.register_buffer("column_level", torch.from_numpy(level_of_column), persistent=False)
        self.max_history = max_history

    def encode(self, history_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory (B, H*L, d) and its padding mask from (B, H, L) history tokens (0 = padding)."""
        b, h, levels = history_tokens.shape
        slots = torch.arange(self.max_history - h, self.max_history, device=history_tokens.device)
        x = self.token(history_tokens) + self.slot(slots)[None, :, None] + self.level.weight[:levels][None, None]
        x = x.reshape(b, h * levels, -1)
        pad = history_tokens.reshape(b, h * levels) == 0
        pad[:, -1] = False  # an empty history still attends to one (padding) token, never to nothing
        return self.transformer.encoder(x, src_key_padding_mask=pad), pad

    def decode(self, memory: torch.Tensor, pad: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Logits (B, T+1, V) after a BOS and ``prefix`` decoder tokens (B, T)."""
        b, t = prefix.shape
        bos = torch.zeros(b, 1, dtype=torch.long, device=prefix.device)
        tokens = torch.cat([bos, prefix], 1)
        x = self.token(tokens) + self.level.weight[self.levels].unsqueeze(0) * (tokens == 0).unsqueeze(-1)
        x = x + self.level.weight[: t + 1].unsqueeze(0)
        causal = nn.Transformer.generate_square_subsequent_mask(t + 1, device=prefix.device)
        out = self.transformer.decoder(x, memory, tgt_mask=causal, memory_key_padding_mask=pad, tgt_is_causal=True)
        return self.head(out)

    def _decoder_input(self, prefix: torch.Tensor) -> torch.Tensor:
        """Embeddings of BOS + ``prefix`` tokens (..., T) -> (..., T+1, d), as in :meth:`decode`."""
        bos = torch.zeros(*prefix.shape[:-1], 1, dtype=torch.long, device=prefix.device)
        tokens = torch.cat([bos, prefix], -1)
        t = tokens.shape[-1]
        x = self.token(tokens) + self.level.weight[self.levels] * (tokens == 0).unsqueeze(-1)
        return x + self.level.weight[:t]

    def cross_cache(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values of ``memory``, (B, heads, S, dh), computed
        once per user and shared by all beams and steps of the search."""
        cache = []
        for layer in self.transformer.decoder.layers:
            attn = layer.multihead_attn
            d, h = attn.embed_dim, attn.num_heads
            w, b = attn.in_proj_weight, attn.in_proj_bias
            k = F.linear(memory, w[d : 2 * d], b[d : 2 * d])
            v = F.linear(memory, w[2 * d :], b[2 * d :])
            cache.append(tuple(_heads(x, h) for x in (k, v)))
        return cache  # type: ignore[return-value]

    def decode_step(
        self,
        cross: list[tuple[torch.Tensor, torch.Tensor]],
        pad: torch.Tensor,
        token: torch.Tensor,
        step: int,
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> tuple[torch.Tensor, list]:
        """One incremental decoder step for every beam: ``token`` (B, beams) is the token at position
        ``step`` (BOS = 0 at step 0); returns next-code logits (B, beams, V) and the self-attention
        key/value cache extended by this position. Equal to :meth:`decode` in eval mode, but each step
        computes only its new position, and beams are folded into the query length of the
        cross-attention so a user's memory is never copied per beam."""
        b, beams = token.shape
        x = self.token(token) + self.level.weight[step] + self.level.weight[self.levels] * (token == 0).unsqueeze(-1)
        x = x.reshape(b * beams, 1, -1)
        keep = ~pad[:, None, None, :]  # (B, 1, 1, S): True = attend
        new_cache = []
        for index, layer in enumerate(self.transformer.decoder.layers):
            sa, ca = layer.self_attn, layer.multihead_attn
            h, d = sa.num_heads, sa.embed_dim
            q, k, v = F.linear(layer.norm1(x), sa.in_proj_weight, sa.in_proj_bias).chunk(3, -1)
            k, v = _heads(k, h), _heads(v, h)
            if cache is not None:
                k, v = torch.cat([cache[index][0], k], 2), torch.cat([cache[index][1], v], 2)
            new_cache.append((k, v))
            x = x + sa.out_proj(_merge(F.scaled_dot_product_attention(_heads(q, h), k, v)))
            q = F.linear(layer.norm2(x).reshape(b, beams, d), ca.in_proj_weight[:d], ca.in_proj_bias[:d])
            mk, mv = cross[index]
            att = F.scaled_dot_product_attention(_heads(q, h), mk, mv, attn_mask=keep)
            x = x + ca.out_proj(_merge(att)).reshape(b * beams, 1, d)
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
        return self.head(self.transformer.decoder.norm(x[:, 0])).reshape(b, beams, -1), new_cache


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    n, length, d = x.shape
    return x.reshape(n, length, heads, d // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    n, heads, length, dh = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * dh)


class GenerativeRecommender(Recommender):
    """Next-item recommendation by constrained generation of semantic IDs; a list-only recommender
    (``ranks_only``): it returns top-K lists, evaluated with the same metrics as score-based models."""

    name: ClassVar[str] = "cemg_seq2seq"
    ranks_only: ClassVar[bool] = True

    def __init__(
        self,
        codes: np.ndarray,
        sizes: list[int],
        d_model: int = 128,
        layers: int = 2,
        heads: int = 4,
        ff: int = 512,
        dropout: float = 0.1,
        max_history: int = 20,
        targets_per_user: int | None = 10,
        epochs: int = 20,
        batch_size: int = 256,
        lr: float = 1e-3,
        patience: int = 3,
        beam: int = 20,
        valid_users: int | None = 2000,
        seed: int = 0,
        progress: bool = True,
        max_minutes: float | None = None,
    ) -> None:
        self.codes = np.asarray(codes, dtype=np.int64)
        self.sizes = list(sizes)
        self.d_model = d_model
        self.layers = layers
        self.heads = heads
        self.ff = ff
        self.dropout = dropout
        self.max_history = max_history
        self.targets_per_user = targets_per_user
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.beam = beam
        self.valid_users = valid_users
        self.seed = seed
        self.progress = progress
        self.max_minutes = max_minutes
        if self.codes.ndim != 2 or self.codes.shape[1] != len(self.sizes):
            raise ValueError(f"codes must be (n_items, {len(self.sizes)}), got {self.codes.shape}")
        self.trie_ = SemanticIDTrie(self.codes)
        offsets = np.r_[0, np.cumsum(self.sizes)[:-1]]
        self._tokens = torch.from_numpy(
            np.vstack([np.zeros((1, len(sizes)), dtype=np.int64), 1 + offsets + self.codes])
        )  # row 0 = padding item

    # ------------------------------------------------------------------ data
    def _history_tokens(self, history: np.ndarray) -> torch.Tensor:
        """(B, H) item ids (-1 pad, left) -> (B, H, L) tokens."""
        return self._tokens[torch.from_numpy(history + 1)]

    def _windows(self, train: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """Training examples: (history of up to max_history items, next item) for each user's last
        ``targets_per_user`` training positions."""
        histories, targets = [], []
        for user in train.active_users():
            seq = train.history(user)
            first = 1 if self.targets_per_user is None else max(1, len(seq) - self.targets_per_user)
            for t in range(first, len(seq)):
                histories.append(_left_pad(seq[max(0, t - self.max_history) : t], self.max_history))
                targets.append(seq[t])
        if not targets:
            raise ValueError("no training examples: every user has fewer than 2 training items")
        return np.stack(histories), np.array(targets, dtype=np.int64)

    def user_histories(self, users: np.ndarray, history: Interactions) -> np.ndarray:
        """Each user's most recent ``max_history`` items (-1 left padding); longer histories are truncated."""
        return np.stack([_left_pad(history.history(u)[-self.max_history :], self.max_history) for u in users])

    # ------------------------------------------------------------------ training
    def fit(self, train: Interactions, valid: Interactions | None = None) -> Self:
        """Teacher-forced cross-entropy over each code of the target ID; early stopping on validation
        NDCG@10 of the generated lists (a sample of ``valid_users``); no new epoch starts after
        ``max_minutes`` (the best epoch so far is kept)."""
        if train.n_items != len(self.codes):
            raise ValueError(f"ID table has {len(self.codes)} items, interactions have {train.n_items}")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.train_ = train
        self.network_ = Seq2SeqNetwork(
            self.sizes, self.max_history, self.d_model, self.layers, self.heads, self.ff, self.dropout
        )
        histories, targets = self._windows(train)
        optimizer = torch.optim.AdamW(self.network_.parameters(), lr=self.lr, weight_decay=0.01)
        valid_users = None
        if valid is not None and len(valid):
            valid_users = valid.active_users()
            if self.valid_users and len(valid_users) > self.valid_users:
                valid_users = np.sort(rng.choice(valid_users, self.valid_users, replace=False))
        self.history_: list[dict[str, float]] = []
        best, best_state, stale = -1.0, None, 0
        bar = tqdm(range(self.epochs), desc="train generator", disable=not self.progress, unit="epoch")
        deadline = None if self.max_minutes is None else time.perf_counter() + 60 * self.max_minutes
        for epoch in bar:
            if deadline is not None and epoch > 0 and time.perf_counter() > deadline:
                logger.info("generator: time budget of %.1f min reached after %d epochs", self.max_minutes, epoch)
                break
            started = time.perf_counter()
            self.network_.train()
            order = rng.permutation(len(targets))
            total = 0.0
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                loss = self._loss(histories[rows], targets[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.network_.parameters(), 1.0)
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            record = {"epoch": epoch, "loss": total / len(targets), "train_seconds": time.perf_counter() - started}
            if valid_users is not None:
                ndcg = self._valid_ndcg(valid_users, train, valid)  # type: ignore[arg-type]
                record["valid_NDCG@10"] = ndcg
                if ndcg > best:
                    best, best_state, stale = ndcg, copy.deepcopy(self.network_.state_dict()), 0
                else:
                    stale += 1
            self.history_.append(record)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("loss", "valid_NDCG@10")})
            if valid_users is not None and stale >= self.patience:
                break
        if best_state is not None:
            self.network_.load_state_dict(best_state)
        self.network_.eval()
        return self

    def _loss(self, histories: np.ndarray, targets: np.ndarray) -> torch.Tensor:
        memory, pad = self.network_.encode(self._history_tokens(histories))
        target_tokens = self._tokens[torch.from_numpy(targets + 1)]  # (B, L)
        logits = self.network_.decode(memory, pad, target_tokens[:, :-1])  # (B, L, V)
        levels = torch.arange(len(self.sizes))
        wrong_level = self.network_.column_level.unsqueeze(0) != levels.unsqueeze(1)  # (L, V)
        logits = logits.masked_fill(wrong_level.unsqueeze(0), float("-inf"))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), (target_tokens - 1).reshape(-1))

    def _valid_ndcg(self, users: np.ndarray, train: Interactions, valid: Interactions) -> float:
        items, _ = self.recommend(users, k=10, exclude_seen=True, history=train)
        gains = []
        for row, user in zip(items, users, strict=True):
            targets = set(valid.history(user).tolist())
            hits = [1.0 / np.log2(r + 2) for r, item in enumerate(row) if item in targets]
            ideal = sum(1.0 / np.log2(r + 2) for r in range(min(len(targets), 10)))
            gains.append(sum(hits) / ideal)
        return float(np.mean(gains))

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, histories: np.ndarray, beam: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Trie-constrained beam search: (B, beam) item ids, best first, and their log-probabilities.

        Every returned id is a real item (or -1 with score -inf when fewer valid IDs than beams exist)."""
        beam = beam or self.beam
        self.network_.eval()
        memory, pad = self.network_.encode(self._history_tokens(histories))
        cross = self.network_.cross_cache(memory)
        b = len(histories)
        nodes = torch.zeros(b, 1, dtype=torch.long)  # one live beam per user before the first code
        scores = torch.zeros(b, 1)
        token = torch.zeros(b, 1, dtype=torch.long)  # BOS
        cache = None
        offsets = self.network_.offsets
        for level, size in enumerate(self.sizes):
            live = nodes.shape[1]
            logits, cache = self.network_.decode_step(cross, pad, token, level, cache)
            logits = logits[..., offsets[level] : offsets[level] + size]
            allowed = self.trie_.allowed(nodes.reshape(-1)).reshape(b, live, -1)[..., :size]
            logits = logits.masked_fill(~allowed, float("-inf"))
            logp = torch.log_softmax(logits, -1).masked_fill(~allowed, float("-inf"))
            top, index = (scores.unsqueeze(-1) + logp).reshape(b, live * size).topk(min(beam, live * size), dim=1)
            parent, code = index // size, index % size
            child = self.trie_.step(nodes.gather(1, parent).reshape(-1), code.reshape(-1)).reshape(b, -1)
            valid = torch.isfinite(top) & (child >= 0)
            nodes = torch.where(valid, child, torch.zeros_like(child))
            scores = top.masked_fill(~valid, float("-inf"))
            rows = (parent + torch.arange(b).unsqueeze(1) * live).reshape(-1)  # each new beam's parent row
            cache = [(k[rows], v[rows]) for k, v in cache]
            token = 1 + offsets[level] + code
        items = torch.full((b, beam), -1, dtype=torch.long)
        out_scores = torch.full((b, beam), float("-inf"))
        finite = torch.isfinite(scores)
        live = scores.shape[1]
        items[:, :live][finite] = self.trie_.items(nodes[finite])
        out_scores[:, :live] = scores
        return items.numpy(), out_scores.numpy()

    def recommend(
        self,
        users: np.ndarray,
        k: int = 10,
        exclude_seen: bool = True,
        history: Interactions | None = None,
        batch_size: int = 256,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` generated items per user (-1 / -inf padding when the beam yields fewer); with
        ``exclude_seen`` the user's history items are dropped from the beam before cutting to ``k``."""
        history = self.train_ if history is None else history
        users = np.asarray(users, dtype=np.int64)
        beam = max(self.beam, k)
        out_items = np.full((len(users), k), -1, dtype=np.int64)
        out_scores = np.full((len(users), k), -np.inf, dtype=np.float32)
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            items, scores = self.generate(self.user_histories(batch, history), beam)
            for row, user in enumerate(batch):
                keep = items[row] >= 0
                if exclude_seen:
                    keep &= ~np.isin(items[row], history.history(user))
                chosen = np.flatnonzero(keep)[:k]
                out_items[start + row, : len(chosen)] = items[row, chosen]
                out_scores[start + row, : len(chosen)] = scores[row, chosen]
        return out_items, out_scores

    def score(
        self, users: np.ndarray, items: np.ndarray | None = None, history: Interactions | None = None
    ) -> torch.Tensor:
        raise NotImplementedError("a generative recommender returns ranked lists only (ranks_only); use recommend")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """A folder: ``generator.pt`` (weights, hyperparameters) beside the ID table it decodes into."""
        from llmboost.methods.cemg.semantic_ids import SemanticIDs

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        table = SemanticIDs(self.codes, self.sizes)
        table.save(path)
        params = {k: v for k, v in self.get_params().items() if k not in ("codes", "sizes")}
        torch.save(
            {
                "params": params,
                "network": self.network_.state_dict(),
                "train": self._state(),
                "id_fingerprint": table.fingerprint(),
            },
            path / "generator.pt",
        )
        (path / "generator.json").write_text(json.dumps({"params": params, "id_fingerprint": table.fingerprint()}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> GenerativeRecommender:  # type: ignore[override]
        from llmboost.methods.cemg.semantic_ids import SemanticIDs

        path = Path(path)
        table = SemanticIDs.load(path)
        blob = torch.load(path / "generator.pt", map_location="cpu", weights_only=True)
        if blob["id_fingerprint"] != table.fingerprint():
            raise ValueError(f"{path}: generator was trained on a different ID table")
        model = cls(table.codes, table.sizes, **blob["params"])
        model._load_state(blob["train"])
        model.network_ = Seq2SeqNetwork(
            model.sizes, model.max_history, model.d_model, model.layers, model.heads, model.ff, model.dropout
        )
        model.network_.load_state_dict(blob["network"])
        model.network_.eval()
        return model


def _left_pad(items: np.ndarray, width: int) -> np.ndarray:
    out = np.full(width, -1, dtype=np.int64)
    if len(items):
        out[-len(items) :] = items
    return out


def describe(model: GenerativeRecommender) -> dict[str, Any]:
    return {"parameters": sum(p.numel() for p in model.network_.parameters()), "epochs": len(model.history_)}
