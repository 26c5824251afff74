"""Local Transformers backend: :class:`HFModel` implements :class:`~llmboost.llm.base.LanguageModel`.

The work is split by job: :mod:`~llmboost.llm.loading` (model, tokenizer, structure),
:mod:`~llmboost.llm.logprobs` (batched, prefix-sharing choice scoring), :mod:`~llmboost.llm.prefix` (its
planner), :mod:`~llmboost.llm.attention` (its shared-prefix attention kernel), :mod:`~llmboost.llm.batching`
(the padded batch loop), :mod:`~llmboost.llm.generation` and :mod:`~llmboost.llm.tracing`. This module holds the
model object that ties them together."""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmboost._optional import require
from llmboost.llm import generation, logprobs
from llmboost.llm.attention import install_prefix_attention
from llmboost.llm.base import ChoiceRequest
from llmboost.llm.loading import (
    decoder_layers,
    encode_continuation,
    encode_prompt,
    load_transformers_model,
    resize_embeddings,
)
from llmboost.llm.logprobs import ForwardStats
from llmboost.llm.models import DEFAULT_MODEL, fingerprint_of, model_identity, resolve_model
from llmboost.llm.precision import precision_name

__all__ = [
    "ForwardStats",
    "HFModel",
    "decoder_layers",
    "encode_continuation",
    "encode_prompt",
    "load_transformers_model",
    "resize_embeddings",
]

logger = logging.getLogger(__name__)


class HFModel:
    """A local Transformers causal LM (optionally with a PEFT adapter) as a :class:`LanguageModel`.

    ``model`` is any setting :func:`~llmboost.llm.models.resolve_model` accepts except URLs (an adapter folder
    loads its base model plus the adapter). ``batch_size`` caps rows per forward pass and ``max_batch_tokens``
    caps rows x padded length. ``share_prefix`` turns on key/value-cache reuse for rows sharing at least
    ``min_prefix_tokens`` prompt tokens. ``padding_side`` is the padding used for batched scoring.
    ``precision`` (``"auto"`` | ``"fp32"`` | ``"bf16"`` | ``"fp16"``) is the weights' dtype; ``auto`` is bf16 only
    where the device runs it faster (:func:`~llmboost.llm.precision.resolve_precision`), float32 otherwise;
    ``dtype`` is its older name.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        adapter: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        precision: str | torch.dtype | None = "auto",
        batch_size: int = 64,
        max_batch_tokens: int = 4096,
        cache_dir: str | os.PathLike[str] | None = None,
        share_prefix: bool = True,
        min_prefix_tokens: int = 16,
        padding_side: str = "right",
        merge_adapter: bool = True,
        attn_implementation: str | None = "sdpa",
        dtype: str | torch.dtype | None = None,
    ) -> None:
        if dtype is not None:  # older name of the precision setting
            precision = dtype
        spec = resolve_model(model)
        if spec.kind == "url":
            raise ValueError("HFModel loads local/Hub models; use llmboost.llm.load_model for server URLs")
        if spec.kind == "adapter":
            if adapter is not None:
                raise ValueError(f"{model!r} is an adapter folder; do not pass adapter= as well")
            adapter = spec.location
            spec = resolve_model(spec.base or "")
        if padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        self.setting = str(model)
        self.spec = spec
        self.adapter = None if adapter is None else str(adapter)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.max_batch_tokens = int(max_batch_tokens)
        self.share_prefix = share_prefix
        self.min_prefix_tokens = int(min_prefix_tokens)
        self.padding_side = padding_side
        self.stats = ForwardStats()
        self._fingerprint: str | None = None

        self.model, self.tokenizer = load_transformers_model(
            spec, device=device, precision=precision, cache_dir=cache_dir, attn_implementation=attn_implementation
        )
        self.dtype = next(self.model.parameters()).dtype
        self.precision = precision_name(self.dtype)
        if self.adapter is not None:
            peft = require("peft", "llm")
            if (Path(self.adapter) / "tokenizer_config.json").is_file():  # fine-tuned with added tokens
                transformers = require("transformers", "llm")
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.adapter)
                if self.tokenizer.pad_token_id is None:
                    self.tokenizer.pad_token = self.tokenizer.eos_token
                resize_embeddings(self.model, len(self.tokenizer))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)  # Transformers deprecations inside PEFT
                self.model = peft.PeftModel.from_pretrained(self.model, self.adapter)
            if merge_adapter:
                self.model = self.model.merge_and_unload()
            self.model.eval()
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self.prefix_attention = False
        try:
            self.prefix_attention = install_prefix_attention(inner)
        except Exception as exc:  # fall back to per-row key/value copies
            logger.info("shared-prefix attention unavailable (%s); using the key/value-cache path", exc)
        self.backbone = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
        self.lm_head = inner.get_output_embeddings()
        self.config = inner.config
        self._prompt_ids: dict[str, list[int]] = {}
        self._cont_ids: dict[str, list[int]] = {}

    def options(self, **changes: Any) -> HFModel:
        """A view of this model (same weights, fresh :attr:`stats`) with other scoring options:
        ``batch_size``, ``max_batch_tokens``, ``share_prefix``, ``min_prefix_tokens``, ``padding_side``."""
        allowed = {"batch_size", "max_batch_tokens", "share_prefix", "min_prefix_tokens", "padding_side"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"unknown options {sorted(unknown)}; allowed: {sorted(allowed)}")
        if changes.get("padding_side", "right") not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        view = copy.copy(self)
        view.__dict__.update(changes)
        view.stats = ForwardStats()
        return view

    # ------------------------------------------------------------------ identity and formatting
    @property
    def fingerprint(self) -> str:
        """Hash of the model identity (GGUF/folder file hashes, or Hub id + revision) and the adapter files."""
        if self._fingerprint is None:
            fp = fingerprint_of(model_identity(self.spec), self.adapter)
            # reduced precision changes the numbers: keep its outputs apart from float32 ones
            self._fingerprint = fp if self.precision == "fp32" else f"{fp}@{self.precision}"
        return self._fingerprint

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer has a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def format_chat(self, user: str, system: str | None = None) -> str:
        """One user turn (plus optional system turn) in the model's chat format, ending where the reply starts."""
        if not self.has_chat_template:
            return user if system is None else f"{system}\n\n{user}"
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    @property
    def n_params(self) -> int:
        """All parameters (tied embeddings counted once)."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def n_layer_params(self) -> int:
        """Parameters of the decoder blocks (excludes embeddings, final norm and head)."""
        return sum(p.numel() for p in decoder_layers(self.model).parameters())

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a prompt (memoised)."""
        ids = self._prompt_ids.get(prompt)
        if ids is None:
            ids = encode_prompt(self.tokenizer, prompt)
            if len(self._prompt_ids) < 200_000:
                self._prompt_ids[prompt] = ids
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        """Token ids of a continuation (a choice), without special tokens (memoised)."""
        ids = self._cont_ids.get(text)
        if ids is None:
            ids = encode_continuation(self.tokenizer, text)
            self._cont_ids[text] = ids
        return ids

    # ------------------------------------------------------------------ scoring, generation, tracing
    def choice_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        """Summed log-probability of each choice's tokens after its prompt (prompt and choice tokenized
        separately and concatenated). Identical rows run once; shared prefixes run once
        (:func:`llmboost.llm.logprobs.choice_logprobs`)."""
        return logprobs.choice_logprobs(self, requests)

    def generate_ids(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        num_beams: int = 1,
        num_return_sequences: int = 1,
        logits_processor: Any = None,
        eos_token_id: int | Sequence[int] | None = None,
        do_sample: bool = False,
        *,
        seed: int | None = None,
    ) -> list[list[list[int]]]:
        """Per prompt, per returned sequence, the NEW token ids (ending with the EOS token when one was made).

        ``num_beams > 1`` runs beam search (``num_return_sequences <= num_beams`` best beams, best first);
        ``logits_processor`` (a Transformers ``LogitsProcessor`` or a list) edits the next-token scores at every
        step — e.g. a trie that allows only valid item codes (constrained decoding). ``eos_token_id`` overrides
        the model's end token(s). ``do_sample`` samples (``seed`` makes it reproducible)."""
        if num_return_sequences > max(num_beams, 1) and not do_sample:
            raise ValueError("num_return_sequences must be <= num_beams for beam search / greedy decoding")
        eos = eos_token_id if eos_token_id is None or isinstance(eos_token_id, int) else list(eos_token_id)
        gen_cfg = generation.generation_config(
            self,
            max_new_tokens,
            eos_token_id=eos,
            num_beams=int(num_beams),
            num_return_sequences=int(num_return_sequences),
            do_sample=bool(do_sample),
            temperature=None,
            top_p=None,
        )
        return generation.generate_new_ids(self, prompts, gen_cfg, seed=seed, logits_processor=logits_processor)

    def beam_search(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        num_beams: int,
        logits_processor: Any = None,
        eos_token_id: int | None = None,
    ) -> list[list[tuple[list[int], float]]]:
        """Per prompt, up to ``num_beams`` (new token ids, summed log-probability), best first: beam search that
        encodes each prompt once and shares its cache among the beams (``generate_ids`` re-encodes it per beam);
        for short outputs after long prompts. See :func:`llmboost.llm.generation.shared_prefix_beam_search`."""
        return generation.shared_prefix_beam_search(
            self, prompts, max_new_tokens, num_beams, logits_processor=logits_processor, eos_token_id=eos_token_id
        )

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        *,
        seed: int | None = None,
        top_p: float = 1.0,
    ) -> list[str]:
        """Greedy (``temperature == 0``) or sampled continuations, batched with left padding; the text is cut
        before the first stop string. ``seed`` makes sampling reproducible."""
        stop = [s for s in (stop or []) if s]
        gen_cfg = generation.generation_config(
            self,
            max_new_tokens,
            do_sample=temperature > 0,
            temperature=float(temperature) if temperature > 0 else None,
            top_p=float(top_p) if temperature > 0 else None,
            stop_strings=list(stop) or None,
        )
        new_ids = generation.generate_new_ids(self, prompts, gen_cfg, seed=seed, tokenizer_for_stop=bool(stop))
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for (ids,) in new_ids]
        return [generation.cut_at_stop(text, stop) for text in texts]

    def trace(self, prompts: Sequence[str], **kwargs: Any) -> Any:
        """Per-layer hidden states and per-head attention outputs; see :func:`llmboost.llm.tracing.trace`."""
        from llmboost.llm.tracing import trace

        return trace(self, prompts, **kwargs)

    def __repr__(self) -> str:
        extra = f", adapter={self.adapter!r}" if self.adapter else ""
        return f"HFModel({self.setting!r}{extra}, device={str(self.device)!r})"
