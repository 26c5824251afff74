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

from llmboost._optional import require
from llmboost.llm.batching import padded_batches
from llmboost.llm.generation import cut_at_stop
from llmboost.llm.loading import ArchitectureError, attribute_path, decoder_layers
from llmboost.llm.logprobs import backbone_hidden

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
        pad_id = int(model.tokenizer.pad_token_id)
        with torch.inference_mode():
            for batch in padded_batches(encoded, pad_id, batch_size=batch_size or model.batch_size):
                weights = torch.zeros(batch.ids.shape, dtype=torch.float32)
                for b, i in enumerate(batch.rows):
                    for t in positions[i]:
                        weights[b, batch.offsets[b] + t] += 1.0 / len(positions[i])
                state["rows"] = np.asarray(batch.rows)
                state["weights"] = weights.to(model.device)
                with contextlib.suppress(_Stop):
                    backbone_hidden(model, batch)
    finally:
        for h in handles:
            h.remove()
    return Trace(hidden=hid_out, heads=head_out, layers=chosen, n_tokens=np.asarray(lengths), pool=pool_name)


# ---------------------------------------------------------------------------------------------------------------
# Tracing over the tokens a model actually generates (greedy decoding)
# ---------------------------------------------------------------------------------------------------------------

OUT_PROJ_PATHS: tuple[str, ...] = (
    "self_attn.o_proj",
    "self_attn.out_proj",
    "self_attn.dense",
    "cross_attn.o_proj",  # Mllama cross-attention blocks
    "attn.out_proj",
    "attn.c_proj",
    "attention.dense",
)
"""Attribute paths searched (in order) inside a decoder block for the attention output projection."""


class TracingError(ArchitectureError):
    """A decoder block's attention output projection could not be found, or has an unexpected shape."""


def find_out_projections(layers: Any, model_name: str = "model") -> list[Any]:
    """Per block, the attention output projection (its input is the concatenation of the heads' outputs).

    Tries :data:`OUT_PROJ_PATHS` in every block; raises :class:`TracingError` naming the block and the paths."""
    found = []
    for i, block in enumerate(layers):
        for path in OUT_PROJ_PATHS:
            mod = attribute_path(block, path)
            if isinstance(mod, torch.nn.Module):
                found.append(mod)
                break
        else:
            raise TracingError(
                f"{model_name}: block {i} ({type(block).__name__}) has no attention output projection; looked for "
                + ", ".join(OUT_PROJ_PATHS)
            )
    return found


def _in_features(mod: Any) -> int:
    if hasattr(mod, "in_features"):
        return int(mod.in_features)
    weight = getattr(mod, "weight", None)
    if weight is None:
        raise TracingError(f"cannot tell the input width of {type(mod).__name__}")
    return int(weight.shape[0]) if type(mod).__name__ == "Conv1D" else int(weight.shape[1])


@dataclass
class GenerationTrace:
    """Activations averaged over the generated tokens of greedy decoding (one row per prompt).

    ``hidden[n, L, d]``: each traced block's output; ``head_outputs[n, L, H, dh]``: each head's attention output
    (input of the block's output projection, split into heads), ``None`` when ``heads=False``. The state averaged
    for generated token ``k`` is the one at the position that *produced* it (the last prompt token for the first
    generated token), so no extra forward pass is needed and the average aligns with ``token_logprobs``.
    Generation of a row ends at its end-of-sequence token (included) or at the token completing a stop string
    (included; the text is cut before the stop string)."""

    texts: list[str]
    token_ids: list[list[int]]
    hidden: np.ndarray
    head_outputs: np.ndarray | None
    token_logprobs: list[np.ndarray]
    layers: tuple[int, ...]
    n_prompt_tokens: np.ndarray

    @property
    def n_generated(self) -> np.ndarray:
        """Generated tokens per prompt (tokens averaged over)."""
        return np.asarray([len(t) for t in self.token_ids])

    def mean_logprob(self) -> np.ndarray:
        """Mean log-probability of each answer's generated tokens (a baseline confidence)."""
        return np.asarray([float(lp.mean()) if len(lp) else 0.0 for lp in self.token_logprobs])

    def feature_bytes(self) -> int:
        """Bytes of the averaged features (independent of the generated length)."""
        return int(self.hidden.nbytes + (0 if self.head_outputs is None else self.head_outputs.nbytes))


def trace_generation_ids(
    lm: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 16,
    layers: Sequence[int] | None = None,
    heads: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int = 0,
    stop: Sequence[str] | None = None,
    decode: Any = None,
    batch_size: int = 16,
) -> GenerationTrace:
    """Greedy generation from token ids with running sums of every traced block's output and every head's
    attention output over the generated tokens (forward hooks; constant memory in the generated length).

    ``lm`` is a Transformers generation model (causal LM or vision-language model, used here with text only);
    ``decode(ids) -> str`` turns token ids into text (needed for ``stop`` strings and ``texts``)."""
    transformers = require("transformers", "llm")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not prompt_ids:
        raise ValueError("no prompts to trace")
    for i, ids in enumerate(prompt_ids):
        if len(ids) == 0:
            raise ValueError(f"prompt {i} is empty (no tokens)")
    stop = [s for s in (stop or []) if s]
    if stop and decode is None:
        raise ValueError("stop strings need a decode function")
    blocks = decoder_layers(lm)
    n_layers = len(blocks)
    chosen = tuple(range(n_layers)) if layers is None else tuple(int(i) % n_layers for i in layers)
    if len(set(chosen)) != len(chosen):
        raise ValueError("layers repeat")
    cfg = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    limit = getattr(cfg, "max_position_embeddings", None)
    longest = max(len(p) for p in prompt_ids)
    if limit and longest + max_new_tokens > int(limit):
        raise ValueError(
            f"prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the model's {limit} positions"
        )
    d_model = int(cfg.hidden_size)
    n_heads = int(cfg.num_attention_heads)
    projections = find_out_projections(blocks, type(lm).__name__) if heads else []
    width_in = _in_features(projections[chosen[0]]) if heads else 0
    if heads and width_in % n_heads:
        raise TracingError(f"output projection input width {width_in} is not a multiple of {n_heads} heads")
    head_dim = width_in // n_heads if heads else 0
    eos = eos_token_id if eos_token_id is not None else getattr(lm.generation_config, "eos_token_id", None)
    eos_set = {int(e) for e in ([] if eos is None else ([eos] if isinstance(eos, int) else eos))}
    device = next(lm.parameters()).device

    n = len(prompt_ids)
    hid_all = np.zeros((n, len(chosen), d_model), dtype=np.float32)
    head_all = np.zeros((n, len(chosen), n_heads, head_dim), dtype=np.float32) if heads else None
    texts = [""] * n
    token_ids: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[np.ndarray] = [np.zeros(0)] * n

    pending_h: dict[int, torch.Tensor] = {}
    pending_a: dict[int, torch.Tensor] = {}

    def block_hook(k: int) -> Any:
        def hook(_m: Any, _a: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            pending_h[k] = out[:, -1].float()

        return hook

    def proj_hook(k: int) -> Any:
        def hook(_m: Any, args: Any) -> None:
            pending_a[k] = args[0][:, -1].float()

        return hook

    class _Accumulate(transformers.LogitsProcessor):  # type: ignore[misc]
        """Runs after each forward pass: adds the pending states of still-active rows to the running sums."""

        def __init__(self, rows: int) -> None:
            self.sum_h = torch.zeros((rows, len(chosen), d_model), device=device)
            self.sum_a = torch.zeros((rows, len(chosen), width_in), device=device) if heads else None
            self.count_h = torch.zeros((rows, len(chosen)), device=device)
            self.count_a = torch.zeros((rows, len(chosen)), device=device)
            self.active = torch.ones(rows, dtype=torch.bool, device=device)
            self.tokens: list[list[int]] = [[] for _ in range(rows)]
            self.lps: list[list[float]] = [[] for _ in range(rows)]

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            act = self.active.float()
            for k in range(len(chosen)):
                if k in pending_h:
                    self.sum_h[:, k] += pending_h[k] * act[:, None]
                    self.count_h[:, k] += act
                if heads and k in pending_a and self.sum_a is not None:
                    self.sum_a[:, k] += pending_a[k] * act[:, None]
                    self.count_a[:, k] += act
            pending_h.clear()
            pending_a.clear()
            logp = torch.log_softmax(scores.float(), dim=-1)
            choice = scores.argmax(dim=-1)
            for b in torch.nonzero(self.active).flatten().tolist():
                tok = int(choice[b])
                self.tokens[b].append(tok)
                self.lps[b].append(float(logp[b, tok]))
                done = tok in eos_set
                if not done and stop:
                    text = decode(self.tokens[b])
                    done = any(s in text for s in stop)
                if done:
                    self.active[b] = False
            return scores

    chosen_slot = {layer: k for k, layer in enumerate(chosen)}
    handles = []
    try:
        for layer, k in chosen_slot.items():
            handles.append(blocks[layer].register_forward_hook(block_hook(k)))
            if heads:
                handles.append(projections[layer].register_forward_pre_hook(proj_hook(k)))
        gen_cfg = transformers.GenerationConfig(
            max_new_tokens=int(max_new_tokens),
            do_sample=False,
            num_beams=1,
            pad_token_id=int(pad_token_id),
            eos_token_id=sorted(eos_set) or None,
        )
        with torch.inference_mode():
            for padded in padded_batches(prompt_ids, int(pad_token_id), batch_size=batch_size, side="left"):
                batch = padded.rows
                acc = _Accumulate(len(batch))
                pending_h.clear()
                pending_a.clear()
                lm.generate(
                    input_ids=padded.ids.to(device),
                    attention_mask=padded.mask.to(device),
                    generation_config=gen_cfg,
                    logits_processor=transformers.LogitsProcessorList([acc]),
                    stopping_criteria=transformers.StoppingCriteriaList([_AllDone(acc)]),
                )
                mean_h = (acc.sum_h / acc.count_h.clamp(min=1)[..., None]).cpu().numpy()
                if heads and head_all is not None and acc.sum_a is not None:
                    mean_a = (acc.sum_a / acc.count_a.clamp(min=1)[..., None]).cpu().numpy()
                for b, i in enumerate(batch):
                    hid_all[i] = mean_h[b]
                    if heads and head_all is not None:
                        head_all[i] = mean_a[b].reshape(len(chosen), n_heads, head_dim)
                    toks = acc.tokens[b]
                    token_ids[i] = toks
                    logprobs[i] = np.asarray(acc.lps[b], dtype=np.float64)
                    if decode is not None:
                        texts[i] = cut_at_stop(decode([t for t in toks if t not in eos_set]), stop)
    finally:
        for h in handles:
            h.remove()
    return GenerationTrace(
        texts=texts,
        token_ids=token_ids,
        hidden=hid_all,
        head_outputs=head_all,
        token_logprobs=logprobs,
        layers=chosen,
        n_prompt_tokens=np.asarray([len(p) for p in prompt_ids]),
    )


class _AllDone:
    """Stopping criterion: every row has ended (end-of-sequence token or stop string)."""

    def __init__(self, acc: Any) -> None:
        self.acc = acc

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        done = not bool(self.acc.active.any())
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def trace_generation(
    model: HFModel,
    prompts: Sequence[str],
    max_new_tokens: int = 16,
    layers: Sequence[int] | None = None,
    heads: bool = True,
    stop: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> GenerationTrace:
    """Greedy answers to ``prompts`` with per-layer hidden states and per-head attention outputs averaged over the
    generated tokens (running sums in forward hooks) and per-token log-probabilities; see :class:`GenerationTrace`.

    Prompts are tokenized with ``model.encode``; decoder blocks and output projections are found at run time
    (:func:`~llmboost.llm.loading.decoder_layers`, :func:`find_out_projections`)."""
    tok = model.tokenizer
    encoded = []
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty")
        encoded.append(model.encode(p))

    def decode(ids: Sequence[int]) -> str:
        return str(tok.decode(list(ids), skip_special_tokens=True))

    eos = model.model.generation_config.eos_token_id
    if eos is None:
        eos = tok.eos_token_id
    return trace_generation_ids(
        model.model,
        encoded,
        max_new_tokens=max_new_tokens,
        layers=layers,
        heads=heads,
        eos_token_id=eos,
        pad_token_id=int(tok.pad_token_id),
        stop=stop,
        decode=decode,
        batch_size=batch_size or min(model.batch_size, 16),
    )
