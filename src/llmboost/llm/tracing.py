"""Activation tracing for local models: per-layer hidden states and per-head attention outputs.

For each prompt and each chosen layer, :func:`trace` records

* the **hidden state**: the residual stream leaving the decoder block (the block's output; for the last block this
  is *before* the final norm), and
* the **per-head attention output**: the input of the block's attention output projection ``o_proj``, reshaped to
  ``(n_heads, head_dim)`` — each head's attention-weighted values, before the heads are mixed,

pooled over chosen token positions: the last token (``"last"``), the mean over all tokens (``"mean"``), or the mean
over given indices (one list for all prompts, or one per prompt; negative indices count from the end).
Forward hooks capture the tensors and pool them immediately, so memory does not grow with sequence length; the
forward pass stops after the deepest chosen layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from llmboost.llm.hf import decoder_layers

if TYPE_CHECKING:
    from llmboost.llm.hf import HFModel

Pool = str | Sequence[int] | Sequence[Sequence[int]]


@dataclass
class Trace:
    """Pooled activations: ``hidden[n_prompts, n_layers, d_model]`` and
    ``heads[n_prompts, n_layers, n_heads, head_dim]`` (``None`` when not requested)."""

    hidden: np.ndarray | None
    heads: np.ndarray | None
    layers: tuple[int, ...]
    n_tokens: np.ndarray
    pool: str


class _Stop(Exception):
    """Raised by a hook to end the forward pass after the deepest traced layer."""


def _positions(pool: Pool, lengths: Sequence[int]) -> tuple[list[list[int]], str]:
    n = len(lengths)
    if isinstance(pool, str):
        if pool == "last":
            return [[length - 1] for length in lengths], "last"
        if pool == "mean":
            return [list(range(length)) for length in lengths], "mean"
        raise ValueError(f"pool must be 'last', 'mean' or token indices, not {pool!r}")
    pool = list(pool)
    if pool and all(isinstance(p, (int, np.integer)) for p in pool):
        per = [list(map(int, pool))] * n  # type: ignore[arg-type]
    else:
        if len(pool) != n:
            raise ValueError(f"got {len(pool)} index lists for {n} prompts")
        per = [list(map(int, p)) for p in pool]  # type: ignore[arg-type]
    out = []
    for idx, length in zip(per, lengths, strict=True):
        if not idx:
            raise ValueError("empty list of token indices")
        fixed = [i + length if i < 0 else i for i in idx]
        if any(i < 0 or i >= length for i in fixed):
            raise IndexError(f"token index out of range for a prompt of {length} tokens: {idx}")
        out.append(fixed)
    return out, "indices"


def trace(
    model: HFModel,
    prompts: Sequence[str],
    pool: Pool = "last",
    layers: Sequence[int] | None = None,
    hidden: bool = True,
    heads: bool = True,
    batch_size: int | None = None,
) -> Trace:
    """Trace ``prompts`` through a local model (see the module docstring for what is recorded).

    ``layers`` are block indices (negative from the end; default all). Prompts are tokenized like
    :meth:`HFModel.choice_logprobs` does and run in right-padded batches of ``batch_size`` (default the model's).
    """
    if not (hidden or heads):
        raise ValueError("nothing to trace: hidden=False and heads=False")
    blocks = decoder_layers(model.model)
    n_layers = len(blocks)
    chosen = tuple(range(n_layers)) if layers is None else tuple(i % n_layers for i in layers)
    if len(set(chosen)) != len(chosen):
        raise ValueError("layers repeat")
    slot = {layer: k for k, layer in enumerate(chosen)}
    deepest = max(chosen)
    n_heads = int(model.config.num_attention_heads)

    encoded = [model.encode(p) for p in prompts]
    lengths = [len(e) for e in encoded]
    positions, pool_name = _positions(pool, lengths)
    d_model = int(model.config.hidden_size)
    o_in = int(blocks[0].self_attn.o_proj.in_features)
    head_dim = o_in // n_heads
    n = len(prompts)
    hid_out = np.zeros((n, len(chosen), d_model), dtype=np.float32) if hidden else None
    head_out = np.zeros((n, len(chosen), n_heads, head_dim), dtype=np.float32) if heads else None

    state: dict[str, Any] = {}

    def pooled(x: torch.Tensor) -> np.ndarray:
        return torch.einsum("bt,btd->bd", state["weights"], x.float()).cpu().numpy()

    def layer_hook(layer: int) -> Any:
        def hook(_module: Any, _args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            if hid_out is not None:
                hid_out[state["rows"], slot[layer]] = pooled(out)
            if layer == deepest:
                raise _Stop

        return hook

    def head_hook(layer: int) -> Any:
        def hook(_module: Any, args: Any) -> None:
            assert head_out is not None
            x = pooled(args[0])
            head_out[state["rows"], slot[layer]] = x.reshape(x.shape[0], n_heads, head_dim)

        return hook

    handles = []
    try:
        for layer in chosen:
            if heads:
                handles.append(blocks[layer].self_attn.o_proj.register_forward_pre_hook(head_hook(layer)))
            if hidden or layer == deepest:
                handles.append(blocks[layer].register_forward_hook(layer_hook(layer)))
        bs = batch_size or model.batch_size
        order = sorted(range(n), key=lambda i: lengths[i])
        with torch.inference_mode():
            for start in range(0, n, bs):
                batch = order[start : start + bs]
                width = max(lengths[i] for i in batch)
                ids = torch.full((len(batch), width), int(model.tokenizer.pad_token_id), dtype=torch.long)
                mask = torch.zeros_like(ids)
                weights = torch.zeros((len(batch), width), dtype=torch.float32)
                for b, i in enumerate(batch):
                    ids[b, : lengths[i]] = torch.tensor(encoded[i], dtype=torch.long)
                    mask[b, : lengths[i]] = 1
                    for t in positions[i]:
                        weights[b, t] += 1.0 / len(positions[i])
                state["rows"] = np.asarray(batch)
                state["weights"] = weights.to(model.device)
                with contextlib.suppress(_Stop):
                    model.backbone(
                        input_ids=ids.to(model.device),
                        attention_mask=mask.to(model.device),
                        position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(model.device),
                        use_cache=False,
                    )
    finally:
        for h in handles:
            h.remove()
    return Trace(hidden=hid_out, heads=head_out, layers=chosen, n_tokens=np.asarray(lengths), pool=pool_name)
