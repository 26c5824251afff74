"""Generation for the local backend: padded batches through ``model.generate`` (beam search, sampling, logits
processors), returning the new token ids; used by :meth:`HFModel.generate_ids` and :meth:`HFModel.generate`."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from llmboost._optional import require
from llmboost.llm.batching import padded_batches

if TYPE_CHECKING:
    from llmboost.llm.hf import HFModel


def generation_config(model: HFModel, max_new_tokens: int, eos_token_id: Any = None, **options: Any) -> Any:
    """A Transformers ``GenerationConfig`` with the model's pad/BOS/EOS tokens (``eos_token_id`` overrides EOS)."""
    transformers = require("transformers", "llm")
    return transformers.GenerationConfig(
        max_new_tokens=int(max_new_tokens),
        top_k=None,
        pad_token_id=int(model.tokenizer.pad_token_id),
        eos_token_id=model.model.generation_config.eos_token_id if eos_token_id is None else eos_token_id,
        bos_token_id=model.model.generation_config.bos_token_id,
        **options,
    )


def generate_new_ids(
    model: HFModel,
    prompts: Sequence[str],
    gen_cfg: Any,
    *,
    seed: int | None = None,
    logits_processor: Any = None,
    tokenizer_for_stop: bool = False,
) -> list[list[list[int]]]:
    """Per prompt, per returned sequence, the new token ids (left-padded, length-sorted batches; tokens after
    the first end-of-sequence token removed)."""
    transformers = require("transformers", "llm")
    encoded = [model.encode(p) for p in prompts]
    n_ret = int(gen_cfg.num_return_sequences or 1)
    results: list[list[list[int]]] = [[] for _ in prompts]
    eos = gen_cfg.eos_token_id
    eos_set = set(eos if isinstance(eos, list | tuple) else [] if eos is None else [eos])
    if logits_processor is not None and not isinstance(logits_processor, transformers.LogitsProcessorList):
        items = logits_processor if isinstance(logits_processor, list | tuple) else [logits_processor]
        logits_processor = transformers.LogitsProcessorList(items)
    kwargs: dict[str, Any] = {"tokenizer": model.tokenizer} if tokenizer_for_stop else {}
    if logits_processor is not None:
        kwargs["logits_processor"] = logits_processor
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng, torch.inference_mode():
        if seed is not None:
            torch.manual_seed(seed)
        batches = padded_batches(
            encoded,
            int(model.tokenizer.pad_token_id),
            batch_size=model.batch_size,
            max_tokens=model.max_batch_tokens,
            side="left",
        )
        for batch in batches:
            out = model.model.generate(
                input_ids=batch.ids.to(model.device),
                attention_mask=batch.mask.to(model.device),
                generation_config=gen_cfg,
                **kwargs,
            )
            for b, i in enumerate(batch.rows):
                for r in range(n_ret):
                    seq = out[b * n_ret + r, batch.width :].tolist()
                    for t, tok in enumerate(seq):  # cut after the first end-of-sequence token
                        if tok in eos_set:
                            seq = seq[: t + 1]
                            break
                    results[i].append(seq)
    return results


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` cut before the first occurrence of each stop string."""
    for s in stop:
        cut = text.find(s)
        if cut >= 0:
            text = text[:cut]
    return text
