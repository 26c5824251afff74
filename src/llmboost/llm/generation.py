"""Generation for the local backend: padded batches through ``model.generate`` (beam search, sampling, logits
processors), returning the new token ids; used by :meth:`HFModel.generate_ids` and :meth:`HFModel.generate`.

:func:`shared_prefix_beam_search` is a beam search for short outputs after long prompts (semantic IDs after a
history): Transformers' ``generate`` copies each prompt once per beam before encoding it, so a prompt of ``P``
tokens costs ``beams x P`` token passes; here it is encoded once and its key/value cache repeated."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from llmboost._optional import require
from llmboost.llm.batching import padded_batches
from llmboost.llm.loading import cache_keyword, new_cache

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


def shared_prefix_beam_search(
    model: HFModel,
    prompts: Sequence[str],
    max_new_tokens: int,
    num_beams: int,
    logits_processor: Any = None,
    eos_token_id: int | None = None,
) -> list[list[tuple[list[int], float]]]:
    """Per prompt, up to ``num_beams`` (new token ids, summed log-probability), best first.

    Each padded batch of prompts is encoded once; the top ``num_beams`` first tokens start the beams and the
    key/value cache is repeated for them. A beam that emits EOS is finished: it keeps its score and, like
    Transformers' beam search, competes with the open beams until the end; scores are plain sums of
    log-probabilities (no length penalty, so this is Transformers' beam search with ``length_penalty=0``; with
    outputs of one fixed length, as for semantic IDs, the ranking is the same for any penalty).
    ``logits_processor`` (callable ``(sequences, log_probs) -> log_probs``, e.g. a Transformers
    ``LogitsProcessor``) edits the log-probabilities at each step, after normalisation as in Transformers.
    Beams left at ``-inf`` (fewer allowed continuations than beams) are dropped."""
    eos = int(model.model.generation_config.eos_token_id if eos_token_id is None else eos_token_id)
    beams = int(num_beams)
    if beams < 1 or max_new_tokens < 1:
        raise ValueError("num_beams and max_new_tokens must be >= 1")
    process = logits_processor if logits_processor is not None else (lambda ids, scores: scores)
    causal_lm = model.model.get_base_model() if hasattr(model.model, "get_base_model") else model.model
    cache_argument = cache_keyword(causal_lm)
    results: list[list[tuple[list[int], float]]] = [[] for _ in prompts]
    batches = padded_batches(
        [model.encode(p) for p in prompts],
        int(model.tokenizer.pad_token_id),
        batch_size=model.batch_size,
        max_tokens=model.max_batch_tokens,
        side="left",
    )
    with torch.inference_mode():
        for batch in batches:
            ids, mask = batch.ids.to(model.device), batch.mask.to(model.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = new_cache(model)
            out = model.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{cache_argument: cache}
            )
            log_probs = process(ids, torch.log_softmax(out.logits[:, -1].float(), -1))
            scores, tokens = log_probs.topk(min(beams, log_probs.shape[-1]), dim=-1)  # (B, K)
            rows, k = scores.shape
            cache.batch_repeat_interleave(k)
            sequences = torch.cat([ids.repeat_interleave(k, 0), tokens.reshape(-1, 1)], 1)
            mask = torch.cat([mask.repeat_interleave(k, 0), mask.new_ones(rows * k, 1)], 1)
            position = positions[:, -1].repeat_interleave(k)
            finished = tokens.reshape(-1) == eos
            for step in range(1, max_new_tokens):
                if bool(finished.all()):
                    break
                position = position + 1
                out = model.model(
                    input_ids=sequences[:, -1:],
                    attention_mask=mask,
                    position_ids=position[:, None],
                    use_cache=True,
                    **{cache_argument: cache},
                )
                log_probs = process(sequences, torch.log_softmax(out.logits[:, -1].float(), -1))
                log_probs[finished] = float("-inf")  # a finished beam continues only with EOS, at no cost
                log_probs[finished, eos] = 0.0
                vocab = log_probs.shape[-1]
                total = (scores.reshape(-1, 1) + log_probs).reshape(rows, k * vocab)
                scores, flat = total.topk(k, dim=-1)
                parent = (torch.arange(rows, device=flat.device)[:, None] * k + flat // vocab).reshape(-1)
                token = (flat % vocab).reshape(-1, 1)
                if step < max_new_tokens - 1:  # the cache is read again: move it with the beams
                    cache.reorder_cache(parent)
                sequences = torch.cat([sequences[parent], token], 1)
                mask = torch.cat([mask[parent], mask.new_ones(rows * k, 1)], 1)
                finished = finished[parent] | (token.squeeze(1) == eos)
            new = sequences[:, batch.width :].reshape(rows, k, -1).tolist()
            for b, i in enumerate(batch.rows):
                for r in range(k):
                    score = float(scores[b, r])
                    if score == float("-inf"):
                        continue
                    seq = new[b][r]
                    if eos in seq:  # cut after the first end-of-sequence token
                        seq = seq[: seq.index(eos) + 1]
                    results[i].append((seq, score))
    return results


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` cut before the first occurrence of each stop string."""
    for s in stop:
        cut = text.find(s)
        if cut >= 0:
            text = text[:cut]
    return text
