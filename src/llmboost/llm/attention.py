"""Shared-prefix attention: many continuations attend to one stored prompt prefix without copying it per row.

While :func:`shared_prefix` is active, the attention function registered as :data:`PREFIX_ATTENTION` lets every row
of the batch attend to the one stored prefix key/value and causally to its own suffix; the two softmax parts are
merged by their log-sum-exp (cascade attention). Outside it the function is plain SDPA, so a model set to this
implementation behaves as usual everywhere else."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from llmboost._optional import require

PREFIX_ATTENTION = "llmboost_prefix"
"""Name of the attention implementation registered with Transformers for shared-prefix scoring."""

KV = list[tuple[torch.Tensor, torch.Tensor]]

_PREFIX_KV: contextvars.ContextVar[KV | None] = contextvars.ContextVar("llmboost_prefix_kv", default=None)


@contextlib.contextmanager
def shared_prefix(kv: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """Within the block, :data:`PREFIX_ATTENTION` layers attend to this prefix (per layer ``(keys, values)`` of
    shape ``[kv_heads, p, d]``) before their own keys/values."""
    token = _PREFIX_KV.set(list(kv))
    try:
        yield
    finally:
        _PREFIX_KV.reset(token)


def shared_prefix_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA, except inside :func:`shared_prefix`: then every row of the batch attends to the one stored prefix
    key/value (never copied per row) and causally to its own suffix, and the two softmax parts are merged with
    their log-sum-exp (cascade / shared-prefix attention)."""
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
    o1, lse1 = attend(q.permute(1, 0, 2, 3, 4).reshape(kvh, b * g * s, d), pk, pv, scale)
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


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
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


def register_prefix_attention() -> None:
    """Register :data:`PREFIX_ATTENTION` (attention function and SDPA-style mask) with Transformers."""
    transformers = require("transformers", "llm")
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    transformers.AttentionInterface.register(PREFIX_ATTENTION, shared_prefix_attention)
    AttentionMaskInterface.register(PREFIX_ATTENTION, sdpa_mask)


def install_prefix_attention(model: Any) -> bool:
    """Switch an SDPA model to :data:`PREFIX_ATTENTION`; ``False`` (model unchanged) where that is not possible."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    register_prefix_attention()
    model.set_attn_implementation(PREFIX_ATTENTION)
    return bool(model.config._attn_implementation == PREFIX_ATTENTION)
