"""Choice scoring for the local backend: the summed log-probability of each choice's tokens after its prompt.

Each distinct token row runs once, in length-sorted batches (:mod:`llmboost.llm.batching`), with position ids
derived from the attention mask (so left and right padding give the same numbers). Rows that share a long token
prefix — one user's history asked about many candidate pairs — are grouped (:mod:`llmboost.llm.prefix`): the
prefix is run once and its keys/values are reused by every continuation, through shared-prefix attention
(:mod:`llmboost.llm.attention`) or, where that cannot be installed, a per-row copy in a Transformers
``DynamicCache``. The language-model head is applied only at the positions whose log-probabilities are needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from llmboost.llm.attention import KV, shared_prefix
from llmboost.llm.base import ChoiceRequest
from llmboost.llm.batching import PaddedBatch, padded_batches
from llmboost.llm.loading import cache_keyword, new_cache
from llmboost.llm.prefix import Query, Row, merge_prefix_rows, plan_prefix_groups

if TYPE_CHECKING:
    from llmboost.llm.hf import HFModel

Prefix = tuple[int, KV]
"""A shared prefix: its length and, per layer, its ``(keys, values)`` of shape ``[1, kv_heads, p, d]``."""


@dataclass
class ForwardStats:
    """Counters of the work done by :meth:`HFModel.choice_logprobs` (for benchmarks)."""

    forward_calls: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    prefix_tokens: int = 0
    head_rows: int = 0
    rows: int = 0
    groups: int = 0

    def reset(self) -> None:
        """Zero all counters."""
        for f in fields(self):
            setattr(self, f.name, 0)


def choice_logprobs(model: HFModel, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
    """Summed log-probability of each choice's tokens after its prompt (prompt and choice tokenized separately
    and concatenated). Identical rows run once; shared prefixes run once (see the module docstring)."""
    rows: list[Row] = []
    row_index: dict[Row, int] = {}
    queries: list[Query] = []
    plan: list[list[list[int]]] = []  # request -> choice -> query ids
    for req in requests:
        prompt_ids = model.encode(req.prompt)
        if not prompt_ids:
            raise ValueError("empty prompt")
        per_choice: list[list[int]] = []
        for choice in req.choices:
            cids = model.encode_continuation(choice)
            if not cids:  # the empty continuation has probability 1
                per_choice.append([])
                continue
            row = tuple(prompt_ids + cids[:-1])
            r = row_index.get(row)
            if r is None:
                r = row_index[row] = len(rows)
                rows.append(row)
            qids = []
            for j, tok in enumerate(cids):
                qids.append(len(queries))
                queries.append((r, len(prompt_ids) - 1 + j, tok))
            per_choice.append(qids)
        plan.append(per_choice)

    rows, queries = merge_prefix_rows(rows, queries)
    row_queries: list[list[int]] = [[] for _ in rows]
    for q, (r, _, _) in enumerate(queries):
        row_queries[r].append(q)
    caps = [min((queries[q][1] for q in qs), default=len(rows[r]) - 1) for r, qs in enumerate(row_queries)]
    values = np.zeros(len(queries), dtype=np.float64)
    if rows:
        _score_rows(model, rows, row_queries, queries, caps, values)
    return [np.array([values[qids].sum() for qids in per_choice], dtype=np.float64) for per_choice in plan]


def _score_rows(
    model: HFModel,
    rows: list[Row],
    row_queries: list[list[int]],
    queries: list[Query],
    caps: list[int],
    out: np.ndarray,
) -> None:
    if model.share_prefix:
        groups = plan_prefix_groups(rows, caps, model.min_prefix_tokens)
    else:
        groups = [(0, list(range(len(rows))))]
    plain = [r for p, g in groups if p < model.min_prefix_tokens for r in g]
    shared = [(p, g) for p, g in groups if p >= model.min_prefix_tokens]
    stats = model.stats
    stats.rows += len(rows)
    with torch.inference_mode():
        if plain:
            _run_rows(model, rows, plain, row_queries, queries, out, prefix=None)
        for p, g in shared:
            stats.groups += 1
            prefix_ids = torch.tensor([rows[g[0]][:p]], dtype=torch.long, device=model.device)
            cache = new_cache(model)
            model.backbone(input_ids=prefix_ids, use_cache=True, **_with_cache(model, cache))
            stats.forward_calls += 1
            stats.tokens += p
            stats.padded_tokens += p
            stats.prefix_tokens += p
            kv = [(layer.keys, layer.values) for layer in cache.layers]  # [1, kv_heads, p, d] each
            _run_rows(model, rows, g, row_queries, queries, out, prefix=(p, kv))


def _with_cache(model: HFModel, cache: Any) -> dict[str, Any]:
    """The key/value-cache keyword argument of the backbone (``cache`` or, older, ``past_key_values``)."""
    return {cache_keyword(model.backbone): cache}


def _run_rows(
    model: HFModel,
    rows: list[Row],
    members: list[int],
    row_queries: list[list[int]],
    queries: list[Query],
    out: np.ndarray,
    prefix: Prefix | None,
) -> None:
    """Run ``rows[members]`` (after the shared prefix, if any) and write their queries' log-probabilities."""
    p = 0 if prefix is None else prefix[0]
    # without shared-prefix attention every row copies the prefix keys/values: count that in the budget
    extra = 0 if model.prefix_attention else p // 8
    seqs = [rows[r][p:] for r in members]
    for batch in padded_batches(
        seqs,
        int(model.tokenizer.pad_token_id),
        batch_size=model.batch_size,
        max_tokens=model.max_batch_tokens,
        side=model.padding_side,
        extra=extra,
    ):
        hidden = backbone_hidden(model, batch, prefix)
        model.stats.forward_calls += 1
        model.stats.tokens += int(batch.mask.sum())
        model.stats.padded_tokens += len(batch.rows) * batch.width
        # gather the needed positions, apply the head there only
        pos_index: dict[tuple[int, int], int] = {}
        sel_b: list[int] = []
        sel_t: list[int] = []
        qrow: list[int] = []
        qtok: list[int] = []
        qids: list[int] = []
        for b, j in enumerate(batch.rows):
            for q in row_queries[members[j]]:
                _, pos, tok = queries[q]
                k = pos_index.get((b, pos))
                if k is None:
                    k = pos_index[(b, pos)] = len(sel_b)
                    sel_b.append(b)
                    sel_t.append(pos - p + batch.offsets[b])
                qrow.append(k)
                qtok.append(tok)
                qids.append(q)
        h = hidden[torch.tensor(sel_b), torch.tensor(sel_t)]
        logp = torch.log_softmax(model.lm_head(h).float(), dim=-1)
        model.stats.head_rows += len(sel_b)
        vals = logp[torch.tensor(qrow), torch.tensor(qtok)]
        out[np.asarray(qids)] = vals.double().cpu().numpy()


def backbone_hidden(model: HFModel, batch: PaddedBatch, prefix: Prefix | None = None) -> torch.Tensor:
    """Last hidden states of a padded batch; position ids follow the attention mask, so padding on either side
    (and a shared prefix in the key/value cache) gives the positions of the unpadded sequence."""
    device = model.device
    ids = batch.ids.to(device)
    mask = batch.mask.to(device)
    n = ids.shape[0]
    if bool(mask[:, 0].all()):
        # Right padding: the causal mask already hides the pads from every real token, so no padding mask is
        # needed (SDPA can use its fused causal kernel); pads get increasing positions and unused outputs.
        attn_mask = None
        position_ids = torch.arange(ids.shape[1], device=device).expand(n, -1)
    else:
        attn_mask = mask
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    if prefix is None:
        outputs = model.backbone(input_ids=ids, attention_mask=attn_mask, position_ids=position_ids, use_cache=False)
        return outputs.last_hidden_state
    p, kv = prefix
    if model.prefix_attention:
        with shared_prefix([(k[0], v[0]) for k, v in kv]):
            outputs = model.backbone(
                input_ids=ids, attention_mask=attn_mask, position_ids=position_ids + p, use_cache=False
            )
        return outputs.last_hidden_state
    full = torch.cat([torch.ones((n, p), dtype=mask.dtype, device=device), mask], dim=1)
    position_ids = (full.cumsum(-1) - 1).clamp(min=0)[:, p:]
    cache = new_cache(model, [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv])
    outputs = model.backbone(
        input_ids=ids, attention_mask=full, position_ids=position_ids, use_cache=True, **_with_cache(model, cache)
    )
    return outputs.last_hidden_state
