"""CEMG's LLM stage ("End-to-End Generative Recommendation", CEMG Sec. 3.3 of the abstract's three stages;
generative retrieval over semantic IDs as in TIGER Sec. 3.2): a pretrained causal LM (SmolLM2 by default)
fine-tuned to generate the next item's semantic-ID codes, the codes added to its vocabulary as new tokens
(``<L0_17>``, ...).

Built on the core LLM layer:

* training — :func:`llmboost.llm.finetune` with ``new_tokens`` (the code tokens and ``<next>``): each example
  is the prompt ``history codes <next>`` (:data:`SEMANTIC_ID_NEXT`, chat-formatted for chat models, exactly
  as at inference) answered by the target's codes + EOS, loss on the answer only; ``method="full"`` (every
  weight) or ``"lora"`` (rank-``lora_r`` adapters + the new token rows), a setting;
* decoding — beam search (:meth:`llmboost.llm.hf.HFModel.beam_search`: each history is encoded once and its
  cache shared by the beams) with a :class:`TrieLogitsProcessor` that, at every step, allows only the codes
  that continue a valid ID in the trie (then only EOS), so every returned ID is a real item.

On one CPU thread a LoRA fine-tune of SmolLM2-135M runs at about 100 tokens/s (1,500 MovieLens-100K examples
with 20-item histories: 25 min) and decoding takes about 0.9 s per user at beam 20 (docs/cemg.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch

from llmboost.data.interactions import Interactions
from llmboost.llm.precision import normalize_precision, resolved_precision_name
from llmboost.llm.prompts import PromptTemplate
from llmboost.methods.cemg.trie import SemanticIDTrie
from llmboost.models.base import Recommender

logger = logging.getLogger(__name__)

NEXT = "<next>"
METHODS = ("full", "lora")

SEMANTIC_ID_NEXT = PromptTemplate(
    name="cemg_semantic_id_next",
    version=1,
    text="{history}" + NEXT,
    system="Generate the semantic ID of the next item.",
    answer_prefix="",
    description="a history as semantic-ID code tokens -> the next item's code tokens (CEMG's LLM stage)",
)
"""History codes then ``<next>`` -> the next item's codes. No answer prefix: the answer's code tokens follow
``<next>`` (or the chat template's assistant header) directly."""


def code_token(level: int, code: int) -> str:
    """The added vocabulary token of ``code`` at RQ-VAE ``level``."""
    return f"<L{level}_{code}>"


class TrieLogitsProcessor:
    """A Transformers logits processor for constrained decoding of semantic IDs (TIGER Sec. 3.2: invalid IDs
    are a failure mode of unconstrained generation).

    The codes generated so far are the trailing code tokens of each row (the prompt always ends with a
    non-code token: ``<next>`` or the chat template's assistant header), so the processor is stateless and
    works for any batch, padding or beam layout. After ``g < L`` codes it allows only the level-``g`` codes
    that have a child in the trie; after ``L`` codes (or an impossible prefix) only ``eos_id``."""

    def __init__(self, trie: SemanticIDTrie, level_tokens: list[np.ndarray], eos_id: int) -> None:
        self.trie = trie
        self.levels = len(level_tokens)
        self.eos_id = int(eos_id)
        vocab = int(max(int(t.max()) for t in level_tokens)) + 1
        code_of = torch.full((max(vocab, self.eos_id + 1),), -1, dtype=torch.long)
        table = torch.full((self.levels, trie.width), -1, dtype=torch.long)
        for level, tokens in enumerate(level_tokens):
            code_of[torch.from_numpy(tokens)] = torch.arange(len(tokens))
            table[level, : min(len(tokens), trie.width)] = torch.from_numpy(tokens[: trie.width])
        self.code_of = code_of  #: token id -> its code (any level), -1 for other tokens
        self.level_table = table  #: (levels, width) token id of each level's code, -1 beyond the level's size

    def prefix_nodes(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: number of codes generated (trailing code tokens) and the trie node they reach (-1 invalid)."""
        ids = input_ids.clamp(max=len(self.code_of) - 1)
        codes = torch.where(input_ids < len(self.code_of), self.code_of[ids], -1)
        generated = torch.cumprod((codes >= 0).flip(1).long(), 1).sum(1).clamp(max=self.levels)
        rows = input_ids.shape[0]
        nodes = torch.zeros(rows, dtype=torch.long)
        most = int(generated.max()) if rows else 0
        internal = len(self.trie.children)
        for level in range(most):
            column = (input_ids.shape[1] - generated + level).clamp(max=input_ids.shape[1] - 1)
            code = codes.gather(1, column.unsqueeze(1)).squeeze(1)
            active = (level < generated) & (nodes >= 0) & (nodes < internal)
            child = self.trie.step(nodes.clamp(0, internal - 1), code.clamp(0, self.trie.width - 1))
            child = torch.where(code < self.trie.width, child, -1)
            nodes = torch.where(active, child, nodes)
        return generated, nodes

    def allowed_mask(self, input_ids: torch.Tensor, vocab: int) -> torch.Tensor:
        """Bool (rows, vocab): the tokens each row may produce next."""
        generated, nodes = self.prefix_nodes(input_ids)
        rows = input_ids.shape[0]
        mask = torch.zeros(rows, vocab, dtype=torch.bool)
        internal = len(self.trie.children)
        open_rows = (generated < self.levels) & (nodes >= 0) & (nodes < internal)
        if open_rows.any():
            index = torch.nonzero(open_rows).squeeze(1)
            allowed = self.trie.allowed(nodes[index])  # (n, width)
            tokens = self.level_table[generated[index]]  # (n, width)
            ok = allowed & (tokens >= 0) & (tokens < vocab)
            r, c = torch.nonzero(ok, as_tuple=True)
            mask[index[r], tokens[r, c]] = True
        mask[~open_rows, self.eos_id] = True
        return mask

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = self.allowed_mask(input_ids.cpu(), scores.shape[-1]).to(scores.device)
        return scores.masked_fill(~mask, float("-inf"))


class LLMGenerativeRecommender(Recommender):
    """Causal-LM generator over semantic IDs (list-only, ``ranks_only``); ``method`` is ``"full"`` or
    ``"lora"`` fine-tuning. ``model`` is any core model setting (built-in name, folder, Hub id); ``precision``
    (``auto`` | ``fp32`` | ``bf16`` | ``fp16``) is used for fine-tuning and generation alike, ``auto`` picking
    bfloat16 only where the device runs it faster than float32 (:mod:`llmboost.llm.precision`)."""

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
        batch_tokens: int = 2048,
        beam: int = 20,
        method: str = "full",
        lora_r: int = 16,
        seed: int = 0,
        progress: bool = True,
        output_dir: str | Path | None = None,
        generation_batch: int = 8,
        precision: str = "auto",
    ) -> None:
        self.codes = np.asarray(codes, dtype=np.int64)
        self.sizes = list(sizes)
        self.model = model
        self.max_history = max_history
        self.examples = examples
        self.epochs = epochs
        self.lr = lr
        self.batch_tokens = batch_tokens
        self.beam = beam
        self.method = method
        self.lora_r = lora_r
        self.seed = seed
        self.progress = progress
        self.output_dir = output_dir
        self.generation_batch = generation_batch
        self.precision = precision
        normalize_precision(precision)  # raises ValueError naming the accepted settings
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        if self.codes.ndim != 2 or self.codes.shape[1] != len(self.sizes):
            raise ValueError(f"codes must be (n_items, {len(self.sizes)}), got {self.codes.shape}")
        self.trie_ = SemanticIDTrie(self.codes)

    # ------------------------------------------------------------------ vocabulary and prompts
    @property
    def new_tokens(self) -> list[str]:
        """One token per code of each level, then ``<next>`` (added to the LM's vocabulary)."""
        return [code_token(level, c) for level, size in enumerate(self.sizes) for c in range(size)] + [NEXT]

    def _item_text(self, items: np.ndarray) -> str:
        return "".join(code_token(level, int(c)) for item in items for level, c in enumerate(self.codes[item]))

    def _fields(self, history: np.ndarray) -> dict[str, str]:
        history = np.asarray(history, dtype=np.int64)
        return {"history": self._item_text(history[history >= 0][-self.max_history :])}

    def training_examples(self, train: Interactions, rng: np.random.Generator) -> list[Any]:
        """Up to ``examples`` (history, next item) pairs from each user's last 3 training positions."""
        from llmboost.llm.finetune import TextExample

        pairs = []
        for user in train.active_users():
            seq = train.history(user)
            for t in range(max(1, len(seq) - 3), len(seq)):
                pairs.append((seq[max(0, t - self.max_history) : t], int(seq[t])))
        if not pairs:
            raise ValueError("no training examples: every user has fewer than 2 training items")
        chosen = rng.permutation(len(pairs))[: self.examples]
        return [
            TextExample(
                SEMANTIC_ID_NEXT, self._fields(pairs[i][0]), self._item_text(np.array([pairs[i][1]])), "cemg_next_id"
            )
            for i in chosen
        ]

    def _key(self, train: Interactions) -> str:
        params = {
            k: v
            for k, v in self.get_params().items()
            if k not in ("codes", "progress", "output_dir", "generation_batch")
        }
        params["precision"] = resolved_precision_name(self.precision)  # "auto" as resolved here
        blob = json.dumps(
            [
                params,
                hashlib.sha256(self.codes.tobytes()).hexdigest(),
                len(train),
                int(train.items.sum()),
                SEMANTIC_ID_NEXT.fingerprint,
            ],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ training
    def fit(self, train: Interactions, valid: Interactions | None = None) -> Self:
        """Fine-tune with the core's :func:`~llmboost.llm.finetune` (code tokens added as new tokens), then
        load the result with :class:`~llmboost.llm.hf.HFModel`. A finished fine-tune in ``output_dir`` with the
        same settings, ID table and data is reused."""
        from llmboost.llm.finetune import finetune, read_training_log

        if train.n_items != len(self.codes):
            raise ValueError(f"ID table has {len(self.codes)} items, interactions have {train.n_items}")
        self.train_ = train
        out = Path(self.output_dir) if self.output_dir is not None else Path(tempfile.mkdtemp(prefix="cemg-llm-"))
        key = self._key(train)
        marker = out / "cemg_llm.json"
        started = time.perf_counter()
        if marker.exists() and json.loads(marker.read_text()).get("key") == key:
            logger.info("cemg_llm: reusing the fine-tuned model in %s", out)
        else:
            examples = self.training_examples(train, np.random.default_rng(self.seed))
            finetune(
                self.model,
                examples,
                out,
                method=self.method,
                r=self.lora_r,
                epochs=self.epochs,
                lr=self.lr,
                batch_tokens=self.batch_tokens,
                seed=self.seed,
                precision=self.precision,
                log_every=0,
                new_tokens=self.new_tokens,
                pack_length=256,
                progress=self.progress,
            )
            marker.write_text(json.dumps({"key": key, "model": self.model, "method": self.method}))
        log = read_training_log(out)
        self.history_ = [{"epoch": e, "loss": loss} for e, loss in enumerate(log["epoch_losses"])]
        self.training_log_ = {
            k: log.get(k)
            for k in (
                "method",
                "precision",
                "steps",
                "examples",
                "trainable_params",
                "train_seconds",
                "tokens_per_s",
                "epoch_losses",
            )
        }
        self.load(out)
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def load(self, path: str | Path) -> Self:
        """Load a fine-tuned folder (full checkpoint or LoRA adapter with its tokenizer) for generation."""
        from llmboost.llm.hf import HFModel

        self.llm_ = HFModel(str(path), precision=self.precision, batch_size=max(self.generation_batch, 1))
        tokenizer = self.llm_.tokenizer
        missing = [t for t in (NEXT, code_token(0, 0)) if t not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(f"{path}: the tokenizer lacks the code tokens {missing}; not a CEMG fine-tune")
        offsets = np.r_[0, np.cumsum(self.sizes)[:-1]]
        ids = np.asarray(tokenizer.convert_tokens_to_ids(self.new_tokens[:-1]), dtype=np.int64)
        self.level_tokens_ = [ids[offsets[lvl] : offsets[lvl] + size] for lvl, size in enumerate(self.sizes)]
        self.item_of_tokens_ = {tuple(ids[offsets + row].tolist()): i for i, row in enumerate(self.codes)}
        self.eos_id_ = int(tokenizer.eos_token_id)
        self.processor_ = TrieLogitsProcessor(self.trie_, self.level_tokens_, self.eos_id_)
        return self

    # ------------------------------------------------------------------ generation
    def generate(self, histories: list[np.ndarray], beam: int | None = None) -> np.ndarray:
        """(B, beam) item ids from trie-constrained beam search, best first (-1 where fewer valid beams)."""
        beam = beam or self.beam
        levels = len(self.sizes)
        prompts = [SEMANTIC_ID_NEXT.prompt(self.llm_.tokenizer, **self._fields(h)) for h in histories]
        # an ID's score is the summed log-probability of its codes (the forced EOS after them is not generated)
        out = self.llm_.beam_search(
            prompts, max_new_tokens=levels, num_beams=beam, logits_processor=self.processor_, eos_token_id=self.eos_id_
        )
        items = np.full((len(prompts), beam), -1, dtype=np.int64)
        for b, sequences in enumerate(out):
            for r, (seq, _) in enumerate(sequences[:beam]):
                items[b, r] = self.item_of_tokens_.get(tuple(seq[:levels]), -1)
        return items

    def recommend(
        self,
        users: np.ndarray,
        k: int = 10,
        exclude_seen: bool = True,
        history: Interactions | None = None,
        batch_size: int = 8,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` generated items per user (beam order; -1 padding), seen items dropped."""
        history = self.train_ if history is None else history
        users = np.asarray(users, dtype=np.int64)
        out = np.full((len(users), k), -1, dtype=np.int64)
        step = max(1, min(batch_size, self.generation_batch))
        for start in range(0, len(users), step):
            batch = users[start : start + step]
            items = self.generate([history.history(u) for u in batch], max(self.beam, k))
            for row, user in enumerate(batch):
                keep = items[row] >= 0
                if exclude_seen:
                    keep &= ~np.isin(items[row], history.history(user))
                listed = list(dict.fromkeys(items[row, keep].tolist()))[:k]
                out[start + row, : len(listed)] = listed
        scores = np.where(out >= 0, -np.arange(k, dtype=np.float32)[None], -np.inf).astype(np.float32)
        return out, scores

    def score(
        self, users: np.ndarray, items: np.ndarray | None = None, history: Interactions | None = None
    ) -> torch.Tensor:
        raise NotImplementedError("a generative recommender returns ranked lists only (ranks_only); use recommend")
