"""Loading a local Transformers causal LM and its tokenizer, and the few facts about its structure and
tokenization that the rest of the LLM layer relies on."""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any

import torch

from llmboost._optional import require
from llmboost.llm.attention import KV
from llmboost.llm.models import ModelSpec, dequantize_gguf
from llmboost.llm.precision import resolve_precision


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


def resize_embeddings(model: Any, n_tokens: int) -> list[int]:
    """Grow the input (and untied output) embeddings to ``n_tokens`` rows; new rows start at the mean of the old
    rows (deterministic, so a saved adapter reloads onto the same starting rows). Returns the new row ids."""
    old = model.get_input_embeddings().weight.shape[0]
    if n_tokens <= old:
        return []
    model.resize_token_embeddings(n_tokens, mean_resizing=False)
    with torch.no_grad():
        for emb in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m}.values():
            w = emb.weight
            if w.shape[0] == n_tokens:
                w[old:] = w[:old].mean(0, keepdim=True)
    return list(range(old, n_tokens))


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt: special tokens (BOS) are added unless the text already starts with the BOS token
    (chat templates write it themselves)."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add).input_ids)


def encode_continuation(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a continuation (a choice or completion), without special tokens."""
    return list(tokenizer(text, add_special_tokens=False).input_ids)


LAYER_PATHS: tuple[str, ...] = (
    "model.language_model.layers",  # LLaVA, Mllama, Qwen2-VL, Gemma-3 multimodal (Transformers >= 4.52)
    "language_model.model.layers",  # older LLaVA-style wrappers
    "model.text_model.layers",
    "language_model.layers",
    "model.layers",  # Llama / Qwen / Mistral / Gemma causal LMs
    "model.decoder.layers",  # OPT
    "transformer.h",  # GPT-2, Falcon
    "gpt_neox.layers",
)
"""Attribute paths searched (in order) for a model's language decoder blocks."""


class ArchitectureError(LookupError):
    """A part of a model (its decoder blocks, a block's attention output projection) could not be found."""


def attribute_path(obj: Any, path: str) -> Any:
    """``obj.a.b.c`` for ``path="a.b.c"``, or None where an attribute is missing."""
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The language decoder blocks of a causal LM or vision-language model (PEFT wrappers unwrapped).

    Tries :data:`LAYER_PATHS` in order; raises :class:`ArchitectureError` naming every path tried."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in LAYER_PATHS:
        layers = attribute_path(inner, path)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return layers
    raise ArchitectureError(
        f"{type(inner).__name__}: cannot find the language decoder blocks; looked for a non-empty ModuleList at "
        + ", ".join(LAYER_PATHS)
    )


@functools.cache
def _forward_parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def new_cache(model: Any, data: KV | None = None) -> Any:
    """An empty key/value cache for ``model`` (an :class:`~llmboost.llm.hf.HFModel`), or one holding ``data``
    (per layer, keys and values)."""
    transformers = require("transformers", "llm")
    if data is None:
        return transformers.DynamicCache(config=model.config)
    return transformers.DynamicCache(ddp_cache_data=data)


def cache_keyword(backbone: Any) -> str:
    """Name of a decoder's key/value-cache argument: ``cache`` in recent Transformers, ``past_key_values``
    before (still accepted, deprecated, by recent versions)."""
    return "cache" if "cache" in _forward_parameters(type(backbone)) else "past_key_values"
