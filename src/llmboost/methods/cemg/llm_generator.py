"""CEMG's LLM stage: a pretrained causal LM (SmolLM2 by default) fine-tuned to generate the next item's
semantic-ID codes, with the codes added to its vocabulary as new tokens (``<L0_17>``, ...).

Each training sequence is ``history codes <next> target codes <eos>`` (loss on the target part only);
decoding is beam search restricted by the trie of valid IDs (a ``prefix_allowed_tokens_fn``), so every
generated ID is an item. Fine-tuning is full (all weights, float32). The core's ``HFModel.generate_ids``
/ ``finetune(new_tokens=...)`` were not available when this was written, so the stage calls Transformers
directly; on 2 CPU cores keep ``examples`` small (a 135M model trains at about 20 tokens/s there).
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Self

import numpy as np
import torch
from tqdm.auto import tqdm

from llmboost.data.interactions import Interactions
from llmboost.methods.cemg.trie import SemanticIDTrie
from llmboost.models.base import Recommender

logger = logging.getLogger(__name__)

NEXT = "<next>"


def code_token(level: int, code: int) -> str:
    return f"<L{level}_{code}>"


class LLMGenerativeRecommender(Recommender):
    """Causal-LM generator over semantic IDs (list-only, ``ranks_only``)."""

    name: ClassVar[str] = "cemg_llm"
    ranks_only: ClassVar[bool] = True

    def __init__(
        self,
        codes: np.ndarray,
        sizes: list[int],
        model: str = "smollm2-135m-instruct",
        max_history: int = 10,
        examples: int = 2000,
        epochs: int = 1,
        lr: float = 5e-4,
        batch_size: int = 8,
        beam: int = 20,
        seed: int = 0,
        progress: bool = True,
        llm: tuple[Any, Any] | None = None,
    ) -> None:
        self.codes = np.asarray(codes, dtype=np.int64)
        self.sizes = list(sizes)
        self.model = model
        self.max_history = max_history
        self.examples = examples
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.beam = beam
        self.seed = seed
        self.progress = progress
        self.llm = llm  # (transformers model, tokenizer) already loaded, else loaded from ``model``
        self.trie_ = SemanticIDTrie(self.codes)

    # ------------------------------------------------------------------ vocabulary
    def _load(self) -> None:
        if self.llm is not None:
            self.lm_, self.tokenizer_ = self.llm
        else:
            from llmboost.llm.hf import load_transformers_model
            from llmboost.llm.models import resolve_model

            self.lm_, self.tokenizer_ = load_transformers_model(resolve_model(self.model), device="cpu",
                                                                dtype="float32", attn_implementation="sdpa")
        tokens = [code_token(level, c) for level, size in enumerate(self.sizes) for c in range(size)]
        self.tokenizer_.add_tokens([*tokens, NEXT], special_tokens=True)
        if self.tokenizer_.pad_token is None:
            self.tokenizer_.pad_token = self.tokenizer_.eos_token
        self.lm_.resize_token_embeddings(len(self.tokenizer_))
        ids = self.tokenizer_.convert_tokens_to_ids(tokens)
        offsets = np.r_[0, np.cumsum(self.sizes)[:-1]]
        self.token_ids_ = np.asarray(ids, dtype=np.int64)
        self.item_tokens_ = self.token_ids_[offsets + self.codes]  # (n_items, L) token ids of each item
        self.code_of_token_ = {int(t): (lvl, c) for lvl, size in enumerate(self.sizes) for c, t in
                               enumerate(self.token_ids_[offsets[lvl] : offsets[lvl] + size])}
        self.next_id_ = int(self.tokenizer_.convert_tokens_to_ids(NEXT))
        self.eos_id_ = int(self.tokenizer_.eos_token_id)

    def _prompt(self, history: np.ndarray) -> list[int]:
        history = history[history >= 0][-self.max_history :]
        return [*self.item_tokens_[history].reshape(-1).tolist(), self.next_id_]

    # ------------------------------------------------------------------ training
    def fit(self, train: Interactions, valid: Interactions | None = None) -> Self:
        """Fine-tune on up to ``examples`` (history, next item) pairs, most recent targets first."""
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.train_ = train
        self._load()
        pairs = []
        for user in train.active_users():
            seq = train.history(user)
            for t in range(max(1, len(seq) - 3), len(seq)):
                pairs.append((seq[max(0, t - self.max_history) : t], int(seq[t])))
        if not pairs:
            raise ValueError("no training examples: every user has fewer than 2 training items")
        chosen = rng.permutation(len(pairs))[: self.examples]
        sequences = []
        for i in chosen:
            history, target = pairs[i]
            prompt = self._prompt(history)
            sequences.append((prompt, [*self.item_tokens_[target].tolist(), self.eos_id_]))
        optimizer = torch.optim.AdamW(self.lm_.parameters(), lr=self.lr, weight_decay=0.0)
        self.lm_.train()
        self.history_: list[dict[str, float]] = []
        started = time.perf_counter()
        for epoch in range(self.epochs):
            order = rng.permutation(len(sequences))
            total, count = 0.0, 0
            steps = range(0, len(order), self.batch_size)
            for start in tqdm(steps, desc=f"LLM epoch {epoch}", disable=not self.progress):
                batch = [sequences[i] for i in order[start : start + self.batch_size]]
                loss = self._loss(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.lm_.parameters(), 1.0)
                optimizer.step()
                total += float(loss.detach()) * len(batch)
                count += len(batch)
            self.history_.append({"epoch": epoch, "loss": total / count, "examples": count})
        self.fit_seconds_ = time.perf_counter() - started
        self.lm_.eval()
        return self

    def _loss(self, batch: list[tuple[list[int], list[int]]]) -> torch.Tensor:
        width = max(len(p) + len(t) for p, t in batch)
        pad = int(self.tokenizer_.pad_token_id)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (prompt, target) in enumerate(batch):
            seq = prompt + target
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, len(prompt) : len(seq)] = torch.tensor(target)
            mask[row, : len(seq)] = 1
        return self.lm_(input_ids=ids, attention_mask=mask, labels=labels).loss

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, histories: list[np.ndarray], beam: int | None = None) -> np.ndarray:
        """(B, beam) item ids from trie-constrained beam search (-1 where fewer valid beams)."""
        beam = beam or self.beam
        prompts = [self._prompt(h) for h in histories]
        width = max(map(len, prompts))
        pad = int(self.tokenizer_.pad_token_id)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        levels = len(self.sizes)

        def allowed(_: int, sequence: torch.Tensor) -> list[int]:
            generated = sequence[width:].tolist()
            if len(generated) >= levels:
                return [self.eos_id_]
            codes = [self.code_of_token_.get(t, (-1, -1))[1] for t in generated]
            nxt = self.trie_.prefix_allowed(codes)
            offset = int(np.sum(self.sizes[: len(generated)]))
            return self.token_ids_[offset + np.asarray(nxt, dtype=np.int64)].tolist() or [self.eos_id_]

        out = self.lm_.generate(input_ids=ids, attention_mask=mask, max_new_tokens=levels, num_beams=beam,
                                num_return_sequences=beam, prefix_allowed_tokens_fn=allowed, do_sample=False,
                                pad_token_id=pad, eos_token_id=self.eos_id_, early_stopping=True)
        generated = out[:, width : width + levels].reshape(len(prompts), beam, -1)
        items = np.full((len(prompts), beam), -1, dtype=np.int64)
        lookup = {tuple(row): i for i, row in enumerate(self.item_tokens_.tolist())}
        for b in range(len(prompts)):
            for r in range(beam):
                items[b, r] = lookup.get(tuple(generated[b, r].tolist()), -1)
        return items

    def recommend(self, users: np.ndarray, k: int = 10, exclude_seen: bool = True,
                  history: Interactions | None = None, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` generated items per user (beam order; -1 padding), seen items dropped."""
        history = self.train_ if history is None else history
        users = np.asarray(users, dtype=np.int64)
        out = np.full((len(users), k), -1, dtype=np.int64)
        batch_size = min(batch_size, 16)  # beams x prompts rows go through the LM at once
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            items = self.generate([history.history(u) for u in batch], max(self.beam, k))
            for row, user in enumerate(batch):
                keep = items[row] >= 0
                if exclude_seen:
                    keep &= ~np.isin(items[row], history.history(user))
                listed = list(dict.fromkeys(items[row, keep].tolist()))[:k]
                out[start + row, : len(listed)] = listed
        scores = np.where(out >= 0, -np.arange(k, dtype=np.float32)[None], -np.inf).astype(np.float32)
        return out, scores

    def score(self, users: np.ndarray, items: np.ndarray | None = None,
              history: Interactions | None = None) -> torch.Tensor:
        raise NotImplementedError("a generative recommender returns ranked lists only (ranks_only); use recommend")
