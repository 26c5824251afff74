"""Local Transformers backend: :class:`HFModel` implements :class:`~llmboost.llm.base.LanguageModel`.

Scoring (:meth:`HFModel.choice_logprobs`) runs each distinct token row once, in length-sorted batches, with
position ids derived from the attention mask (so left and right padding give the same numbers).
Rows that share a long token prefix — one user's history asked about many candidate pairs — are grouped: the
prefix is run once and its keys/values are reused by every continuation. Sharing is decided on *token ids*
(prompts are tokenized whole, then split at a common token position), so the concatenation prefix + suffix is
exactly the sequence the unshared path runs and the results agree to float rounding. The continuations attend
to the one stored prefix through a registered attention function (:data:`PREFIX_ATTENTION`: prefix and suffix
softmax parts merged by their log-sum-exp), so the prefix keys/values are never copied per row; models where
that cannot be installed fall back to a per-row copy in a Transformers ``DynamicCache``.

The language-model head is applied only at the positions whose next-token log-probabilities are needed."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import inspect
import itertools
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llmboost._optional import require
from llmboost.llm.base import ChoiceRequest
from llmboost.llm.models import (
    DEFAULT_MODEL,
    ModelSpec,
    dequantize_gguf,
    fingerprint_of,
    model_identity,
    resolve_model,
)
from llmboost.llm.precision import precision_name, resolve_precision

logger = logging.getLogger(__name__)

Row = tuple[int, ...]


def load_transformers_model(
    spec: ModelSpec,
    *,
    device: str = "cpu",
    precision: str | torch.dtype | None = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    attn_implementation: str | None = "sdpa",
) -> tuple[Any, Any]:
    """Load (model, tokenizer) for a ``gguf`` / ``folder`` / ``hub`` spec (GGUF via the dequantized cache), with
    weights in :func:`~llmboost.llm.precision.resolve_precision` ``(precision, device)``."""
    transformers = require("transformers", "llm")
    if spec.kind == "gguf":
        source = str(dequantize_gguf(spec.location, cache_dir))
    elif spec.kind in ("folder", "hub"):
        source = spec.location
    else:
        raise ValueError(f"cannot load a {spec.kind!r} setting as a Transformers model: {spec.setting!r}")
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    kwargs: dict[str, Any] = {"dtype": resolve_precision(precision, device)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
    model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt: special tokens (BOS) are added unless the text already starts with the BOS token
    (chat templates write it themselves)."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add).input_ids)


def encode_continuation(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a continuation (a choice or completion), without special tokens."""
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def decoder_layers(model: Any) -> Any:
    """The decoder blocks (``nn.ModuleList``) of a causal LM (Llama/Qwen/Mistral/Gemma style)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
    layers = getattr(backbone, "layers", None)
    if layers is None:
        raise TypeError(f"{type(inner).__name__}: cannot find decoder layers (expected `.model.layers`)")
    return layers


@functools.cache
def _forward_parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def cache_keyword(backbone: Any) -> str:
    """Name of a decoder's key/value-cache argument: ``cache`` in recent Transformers, ``past_key_values``
    before (still accepted, deprecated, by recent versions)."""
    return "cache" if "cache" in _forward_parameters(type(backbone)) else "past_key_values"


PREFIX_ATTENTION = "llmboost_prefix"
"""Name of the attention implementation registered with Transformers for shared-prefix scoring."""

_PREFIX_KV: contextvars.ContextVar[list[tuple[torch.Tensor, torch.Tensor]] | None] = contextvars.ContextVar(
    "llmboost_prefix_kv", default=None
)


def _shared_prefix_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA, except while a shared prefix is active (:data:`_PREFIX_KV`): then every row of the batch attends to
    the one stored prefix key/value (never copied per row) and causally to its own suffix, and the two softmax
    parts are merged with their log-sum-exp (cascade / shared-prefix attention)."""
    prefix = _PREFIX_KV.get()
    if prefix is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    pk, pv = prefix[module.layer_idx]  # [kv_heads, p, d]
    b, h, s, d = query.shape
    kvh = key.shape[1]
    g = h // kvh
    scale = scaling if scaling is not None else d**-0.5
    q = query.reshape(b, kvh, g, s, d)

    def back(x: torch.Tensor) -> torch.Tensor:  # [kvh, b*g*s, k] -> [b, kvh, g, s, k]
        return x.reshape(kvh, b, g, s, x.shape[-1]).permute(1, 0, 2, 3, 4)

    # prefix part: every query of every row against the one prefix, per key/value head (normalised + LSE)
    o1, lse1 = _attend_prefix(q.permute(1, 0, 2, 3, 4).reshape(kvh, b * g * s, d), pk, pv, scale)
    o1, lse1 = back(o1.float()), back(lse1.float().unsqueeze(-1))
    # suffix part: causal (and padding) within each row's own continuation; small, so done directly
    s2 = torch.matmul(q, key.unsqueeze(2).transpose(-1, -2)).float() * scale  # [b, kvh, g, s, s]
    if attention_mask is None:
        allowed = torch.ones((s, s), dtype=torch.bool, device=query.device).tril()
        s2 = s2.masked_fill(~allowed, float("-inf"))
    elif attention_mask.dtype == torch.bool:
        s2 = s2.masked_fill(~attention_mask[..., -s:].reshape(b, 1, 1, s, s), float("-inf"))
    else:
        s2 = s2 + attention_mask[..., -s:].reshape(b, 1, 1, s, s).float()
    m2 = s2.amax(-1, keepdim=True).clamp(min=-1e30)  # rows with no visible suffix key stay finite
    e2 = torch.exp(s2 - m2)
    m = torch.maximum(lse1, m2)
    a1 = torch.exp(lse1 - m)
    a2 = torch.exp(m2 - m)
    num = o1 * a1 + torch.matmul(e2.to(value.dtype), value.unsqueeze(2)).float() * a2
    den = a1 + e2.sum(-1, keepdim=True) * a2
    out = (num / den).to(query.dtype).reshape(b, h, s, d).transpose(1, 2).contiguous()
    return out, None


def _attend_prefix(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of ``q[H, n, d]`` over ``k, v[H, p, d]`` (no mask): (output, log-sum-exp)."""
    if q.device.type == "cpu":
        try:  # fused CPU kernel that also returns the log-sum-exp
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), 0.0, False, scale=scale
            )
            return out[0], lse[0]
        except (AttributeError, RuntimeError):
            pass
    scores = torch.matmul(q, k.transpose(1, 2)).float() * scale
    lse = torch.logsumexp(scores, dim=-1)
    return torch.matmul(torch.exp(scores - lse.unsqueeze(-1)).to(v.dtype), v), lse


def _register_prefix_attention() -> None:
    transformers = require("transformers", "llm")
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    transformers.AttentionInterface.register(PREFIX_ATTENTION, _shared_prefix_attention)
    AttentionMaskInterface.register(PREFIX_ATTENTION, sdpa_mask)


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
        fresh = ForwardStats()
        self.__dict__.update(fresh.__dict__)


def _lcp(a: Row, b: Row) -> int:
    n = min(len(a), len(b))
    i = 0
    # compare in chunks first: long shared histories are the common case
    step = 64
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _merge_prefix_rows(
    rows: list[Row], queries: list[tuple[int, int, int]]
) -> tuple[list[Row], list[tuple[int, int, int]]]:
    """Answer the queries of a row that is a prefix of another row from the longer row (causal attention: the
    logits at its positions are the same) and drop it."""
    order = sorted(range(len(rows)), key=rows.__getitem__)
    target = list(range(len(rows)))
    for a, b in itertools.pairwise(order):
        if len(rows[a]) < len(rows[b]) and rows[b][: len(rows[a])] == rows[a]:
            target[a] = b
    for a in reversed(order):  # follow chains a -> b -> c
        target[a] = target[target[a]]
    keep = sorted(set(target))
    new_index = {r: i for i, r in enumerate(keep)}
    return [rows[r] for r in keep], [(new_index[target[r]], pos, tok) for r, pos, tok in queries]


def plan_prefix_groups(
    rows: Sequence[Row], caps: Sequence[int], min_prefix: int = 16, ratio: float = 0.5
) -> list[tuple[int, list[int]]]:
    """Partition rows into groups sharing a token prefix; returns ``(prefix_length, row_indices)`` pairs.

    Rows are sorted lexicographically (so rows with a common prefix are contiguous) and grown greedily: a row
    joins the current group when the group's shared prefix stays at least ``min_prefix`` tokens, the total
    tokens saved do not drop (``n * l >= (n - 1) * L``), and the row does not share much more with the next row
    (``l >= ratio * lcp(row, next)``, which starts a new group at a user boundary). ``caps[i]`` bounds the
    prefix of row ``i`` (the first position whose logits are needed). Groups with prefix 0 are not shared.
    """
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    groups: list[tuple[int, list[int]]] = []
    if not order:
        return groups
    cur = [order[0]]
    cur_len = caps[order[0]]
    for k in range(1, len(order)):
        r = order[k]
        lcp = min(_lcp(rows[cur[0]], rows[r]), cur_len, caps[r])
        nxt = min(_lcp(rows[r], rows[order[k + 1]]), caps[r]) if k + 1 < len(order) else 0
        n = len(cur)
        join = lcp >= min_prefix and n * lcp >= (n - 1) * cur_len and lcp >= ratio * nxt
        if join:
            cur.append(r)
            cur_len = lcp
        else:
            groups.append((cur_len if len(cur) > 1 else 0, cur))
            cur, cur_len = [r], caps[r]
    groups.append((cur_len if len(cur) > 1 else 0, cur))
    return groups


class HFModel:
    """A local Transformers causal LM (optionally with a PEFT adapter) as a :class:`LanguageModel`.

    ``model`` is any setting :func:`~llmboost.llm.models.resolve_model` accepts except URLs (an adapter folder
    loads its base model plus the adapter). ``batch_size`` caps rows per forward pass and ``max_batch_tokens``
    caps rows x padded length. ``share_prefix`` turns on key/value-cache reuse for rows sharing at least
    ``min_prefix_tokens`` prompt tokens. ``padding_side`` is the padding used for batched scoring.
    ``precision`` (``"auto"`` | ``"fp32"`` | ``"bf16"`` | ``"fp16"``) is the weights' dtype; ``auto`` is bf16 only
    where the device runs it natively (:func:`~llmboost.llm.precision.resolve_precision`), float32 otherwise;
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
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning)  # Transformers deprecations inside PEFT
                self.model = peft.PeftModel.from_pretrained(self.model, self.adapter)
            if merge_adapter:
                self.model = self.model.merge_and_unload()
            self.model.eval()
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._prefix_attention = False
        if getattr(inner.config, "_attn_implementation", None) == "sdpa":
            try:
                _register_prefix_attention()
                inner.set_attn_implementation(PREFIX_ATTENTION)
                self._prefix_attention = inner.config._attn_implementation == PREFIX_ATTENTION
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

    def _encode_cont(self, text: str) -> list[int]:
        ids = self._cont_ids.get(text)
        if ids is None:
            ids = encode_continuation(self.tokenizer, text)
            self._cont_ids[text] = ids
        return ids

    # ------------------------------------------------------------------ scoring
    def choice_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        """Summed log-probability of each choice's tokens after its prompt (prompt and choice tokenized
        separately and concatenated). Identical rows run once; shared prefixes run once (see module doc)."""
        rows: list[Row] = []
        row_index: dict[Row, int] = {}
        queries: list[tuple[int, int, int]] = []  # (row, position whose logits predict, token)
        plan: list[list[list[int]]] = []  # request -> choice -> query ids
        for req in requests:
            prompt_ids = self.encode(req.prompt)
            if not prompt_ids:
                raise ValueError("empty prompt")
            per_choice: list[list[int]] = []
            for choice in req.choices:
                cids = self._encode_cont(choice)
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

        rows, queries = _merge_prefix_rows(rows, queries)
        row_queries: list[list[int]] = [[] for _ in rows]
        for q, (r, _, _) in enumerate(queries):
            row_queries[r].append(q)
        caps = [min((queries[q][1] for q in qs), default=len(rows[r]) - 1) for r, qs in enumerate(row_queries)]
        values = np.zeros(len(queries), dtype=np.float64)
        if rows:
            self._score_rows(rows, row_queries, queries, caps, values)
        return [np.array([values[qids].sum() for qids in per_choice], dtype=np.float64) for per_choice in plan]

    def _score_rows(
        self,
        rows: list[Row],
        row_queries: list[list[int]],
        queries: list[tuple[int, int, int]],
        caps: list[int],
        out: np.ndarray,
    ) -> None:
        if self.share_prefix:
            groups = plan_prefix_groups(rows, caps, self.min_prefix_tokens)
        else:
            groups = [(0, list(range(len(rows))))]
        plain = [r for p, g in groups if p < self.min_prefix_tokens for r in g]
        shared = [(p, g) for p, g in groups if p >= self.min_prefix_tokens]
        self.stats.rows += len(rows)
        with torch.inference_mode():
            if plain:
                self._run_batches(rows, plain, row_queries, queries, out, prefix=None)
            for p, g in shared:
                self.stats.groups += 1
                prefix_ids = torch.tensor([rows[g[0]][:p]], dtype=torch.long, device=self.device)
                cache = self._new_cache()
                self.backbone(input_ids=prefix_ids, use_cache=True, **self._with_cache(cache))
                self.stats.forward_calls += 1
                self.stats.tokens += p
                self.stats.padded_tokens += p
                self.stats.prefix_tokens += p
                kv = [(layer.keys, layer.values) for layer in cache.layers]  # [1, kv_heads, p, d] each
                self._run_batches(rows, g, row_queries, queries, out, prefix=(p, kv))

    def _with_cache(self, cache: Any) -> dict[str, Any]:
        """The key/value-cache keyword argument of the backbone: ``cache`` (Transformers >= 5.x) or
        ``past_key_values`` (older)."""
        return {cache_keyword(self.backbone): cache}

    def _new_cache(self, data: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
        transformers = require("transformers", "llm")
        if data is None:
            return transformers.DynamicCache(config=self.config)
        return transformers.DynamicCache(ddp_cache_data=data)

    def _batches(
        self, lengths: Mapping[int, int] | Sequence[int], members: Sequence[int], extra: int = 0
    ) -> list[list[int]]:
        """Length-sorted batches under ``batch_size`` rows and ``max_batch_tokens`` padded tokens."""
        order = sorted(members, key=lambda r: lengths[r])
        batches: list[list[int]] = []
        cur: list[int] = []
        for r in order:
            width = lengths[r]  # sorted ascending: the newest row is the longest
            if cur and (len(cur) + 1 > self.batch_size or (len(cur) + 1) * (width + extra) > self.max_batch_tokens):
                batches.append(cur)
                cur = []
            cur.append(r)
        if cur:
            batches.append(cur)
        return batches

    def _run_batches(
        self,
        rows: list[Row],
        members: list[int],
        row_queries: list[list[int]],
        queries: list[tuple[int, int, int]],
        out: np.ndarray,
        prefix: tuple[int, list[tuple[torch.Tensor, torch.Tensor]]] | None,
    ) -> None:
        p = 0 if prefix is None else prefix[0]
        seq = {r: rows[r][p:] for r in members}
        lens = {r: len(s) for r, s in seq.items()}
        # without shared-prefix attention every row copies the prefix keys/values: count that in the budget
        extra = 0 if self._prefix_attention else p // 8
        for batch in self._batches(lens, members, extra=extra):
            width = max(lens[r] for r in batch)
            n = len(batch)
            ids = torch.full((n, width), int(self.tokenizer.pad_token_id), dtype=torch.long)
            mask = torch.zeros((n, width), dtype=torch.long)
            offsets = []
            for b, r in enumerate(batch):
                s = seq[r]
                off = width - len(s) if self.padding_side == "left" else 0
                ids[b, off : off + len(s)] = torch.tensor(s, dtype=torch.long)
                mask[b, off : off + len(s)] = 1
                offsets.append(off)
            hidden = self._backbone_hidden(ids, mask, prefix)
            self.stats.forward_calls += 1
            self.stats.tokens += int(mask.sum())
            self.stats.padded_tokens += n * width
            # gather the needed positions, apply the head there only
            pos_index: dict[tuple[int, int], int] = {}
            sel_b: list[int] = []
            sel_t: list[int] = []
            qrow: list[int] = []
            qtok: list[int] = []
            qids: list[int] = []
            for b, r in enumerate(batch):
                for q in row_queries[r]:
                    _, pos, tok = queries[q]
                    key = (b, pos)
                    k = pos_index.get(key)
                    if k is None:
                        k = pos_index[key] = len(sel_b)
                        sel_b.append(b)
                        sel_t.append(pos - p + offsets[b])
                    qrow.append(k)
                    qtok.append(tok)
                    qids.append(q)
            h = hidden[torch.tensor(sel_b), torch.tensor(sel_t)]
            logp = torch.log_softmax(self.lm_head(h).float(), dim=-1)
            self.stats.head_rows += len(sel_b)
            vals = logp[torch.tensor(qrow), torch.tensor(qtok)]
            out[np.asarray(qids)] = vals.double().cpu().numpy()

    def _backbone_hidden(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        prefix: tuple[int, list[tuple[torch.Tensor, torch.Tensor]]] | None,
    ) -> torch.Tensor:
        """Last hidden states of a padded batch; position ids follow the attention mask, so padding on either side
        (and a shared prefix in the key/value cache) gives the positions of the unpadded sequence."""
        ids = ids.to(self.device)
        mask = mask.to(self.device)
        n = ids.shape[0]
        if bool(mask[:, 0].all()):
            # Right padding: the causal mask already hides the pads from every real token, so no padding mask is
            # needed (SDPA can use its fused causal kernel); pads get increasing positions and unused outputs.
            attn_mask = None
            position_ids = torch.arange(ids.shape[1], device=self.device).expand(n, -1)
        else:
            attn_mask = mask
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        if prefix is None:
            outputs = self.backbone(input_ids=ids, attention_mask=attn_mask, position_ids=position_ids, use_cache=False)
            return outputs.last_hidden_state
        p, kv = prefix
        if self._prefix_attention:
            token = _PREFIX_KV.set([(k[0], v[0]) for k, v in kv])
            try:
                outputs = self.backbone(
                    input_ids=ids, attention_mask=attn_mask, position_ids=position_ids + p, use_cache=False
                )
            finally:
                _PREFIX_KV.reset(token)
            return outputs.last_hidden_state
        full = torch.cat([torch.ones((n, p), dtype=mask.dtype, device=self.device), mask], dim=1)
        position_ids = (full.cumsum(-1) - 1).clamp(min=0)[:, p:]
        cache = self._new_cache([(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in kv])
        outputs = self.backbone(
            input_ids=ids, attention_mask=full, position_ids=position_ids, use_cache=True, **self._with_cache(cache)
        )
        return outputs.last_hidden_state

    # ------------------------------------------------------------------ generation
    def _generate_new_ids(
        self,
        prompts: Sequence[str],
        gen_cfg: Any,
        *,
        seed: int | None = None,
        logits_processor: Any = None,
        tokenizer_for_stop: bool = False,
    ) -> list[list[list[int]]]:
        """Per prompt, per returned sequence, the new token ids (left-padded, length-sorted batches; trailing
        pad/EOS tokens after the end of a sequence removed)."""
        transformers = require("transformers", "llm")
        encoded = [self.encode(p) for p in prompts]
        lengths = list(map(len, encoded))
        n_ret = int(gen_cfg.num_return_sequences or 1)
        results: list[list[list[int]]] = [[] for _ in prompts]
        pad = int(self.tokenizer.pad_token_id)
        eos = gen_cfg.eos_token_id
        eos_set = set(eos if isinstance(eos, list | tuple) else [] if eos is None else [eos])
        if logits_processor is not None and not isinstance(logits_processor, transformers.LogitsProcessorList):
            items = logits_processor if isinstance(logits_processor, list | tuple) else [logits_processor]
            logits_processor = transformers.LogitsProcessorList(items)
        rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with rng, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            for batch in self._batches(lengths, list(range(len(prompts)))):
                width = max(lengths[i] for i in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for b, i in enumerate(batch):
                    ids[b, width - lengths[i] :] = torch.tensor(encoded[i], dtype=torch.long)
                    mask[b, width - lengths[i] :] = 1
                kwargs: dict[str, Any] = {"tokenizer": self.tokenizer} if tokenizer_for_stop else {}
                if logits_processor is not None:
                    kwargs["logits_processor"] = logits_processor
                out = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    generation_config=gen_cfg,
                    **kwargs,
                )
                for b, i in enumerate(batch):
                    for r in range(n_ret):
                        seq = out[b * n_ret + r, width:].tolist()
                        for t, tok in enumerate(seq):  # cut after the first end-of-sequence token
                            if tok in eos_set:
                                seq = seq[: t + 1]
                                break
                        results[i].append(seq)
        return results

    def _generation_config(self, max_new_tokens: int, eos_token_id: Any = None, **options: Any) -> Any:
        transformers = require("transformers", "llm")
        return transformers.GenerationConfig(
            max_new_tokens=int(max_new_tokens),
            top_k=None,
            pad_token_id=int(self.tokenizer.pad_token_id),
            eos_token_id=self.model.generation_config.eos_token_id if eos_token_id is None else eos_token_id,
            bos_token_id=self.model.generation_config.bos_token_id,
            **options,
        )

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
        gen_cfg = self._generation_config(
            max_new_tokens,
            eos_token_id=None
            if eos_token_id is None
            else list(eos_token_id)
            if isinstance(eos_token_id, Sequence)
            else int(eos_token_id),
            num_beams=int(num_beams),
            num_return_sequences=int(num_return_sequences),
            do_sample=bool(do_sample),
            temperature=None,
            top_p=None,
        )
        return self._generate_new_ids(prompts, gen_cfg, seed=seed, logits_processor=logits_processor)

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
        gen_cfg = self._generation_config(
            max_new_tokens,
            do_sample=temperature > 0,
            temperature=float(temperature) if temperature > 0 else None,
            top_p=float(top_p) if temperature > 0 else None,
            stop_strings=list(stop) or None,
        )
        results = []
        for (ids,) in self._generate_new_ids(prompts, gen_cfg, seed=seed, tokenizer_for_stop=bool(stop)):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            for s in stop:
                cut = text.find(s)
                if cut >= 0:
                    text = text[:cut]
            results.append(text)
        return results

    # ------------------------------------------------------------------ tracing
    def trace(self, prompts: Sequence[str], **kwargs: Any) -> Any:
        """Per-layer hidden states and per-head attention outputs; see :func:`llmboost.llm.tracing.trace`."""
        from llmboost.llm.tracing import trace

        return trace(self, prompts, **kwargs)

    def __repr__(self) -> str:
        extra = f", adapter={self.adapter!r}" if self.adapter else ""
        return f"HFModel({self.setting!r}{extra}, device={str(self.device)!r})"
