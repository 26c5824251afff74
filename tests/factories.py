"""Small synthetic datasets with known structure, and a tiny random language model, shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmboost.data.dataset import Dataset

TINY_SASREC: dict = {
    "hidden": 32,
    "layers": 1,
    "heads": 1,
    "dropout": 0.0,
    "max_len": 10,
    "epochs": 30,
    "patience": 5,
    "batch_size": 64,
    "lr": 5e-3,
    "progress": False,
}
"""A SASRec small enough to learn :func:`cyclic_sequences` in seconds (override keys as needed)."""


def events_dataset(rows: list[tuple[str, str, int]], name: str = "toy") -> Dataset:
    """A dataset from (user, item, timestamp) rows."""
    return Dataset.from_events(name, pd.DataFrame(rows, columns=["user", "item", "timestamp"]))


def cyclic_sequences(n_users: int = 300, n_items: int = 30, length: int = 12, seed: int = 0) -> Dataset:
    """Every user walks the items in a cycle (i -> i+1 mod n) from a random start: the next item is
    fully predictable from the last one, so a sequential model should learn it almost perfectly."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        rows += [(f"u{u}", f"i{(start + t) % n_items}", t) for t in range(length)]
    return events_dataset(rows, "cyclic")


def two_communities(n_users: int = 200, n_items: int = 40, per_user: int = 10, seed: int = 0) -> Dataset:
    """Users in community 0 only consume items 0..n/2-1, community 1 the rest (for MF)."""
    rng = np.random.default_rng(seed)
    rows = []
    half = n_items // 2
    for u in range(n_users):
        group = u % 2
        items = rng.choice(half, size=per_user, replace=False) + group * half
        rows += [(f"u{u}", f"i{i}", t) for t, i in enumerate(items)]
    return events_dataset(rows, "communities")


def save_tiny_llama(
    folder: str | Path, words: list[str], layers: int = 1, initializer_range: float = 0.02, whitespace: bool = False
) -> str:
    """A randomly initialised Llama (hidden 32, 2 heads) with a word-level tokenizer over ``<pad>``, ``<eos>`` and
    ``words``, saved as a model folder (a core model setting); no download, seconds of CPU. A large
    ``initializer_range`` gives well-separated next-token scores (no ties)."""
    import tokenizers
    import torch
    import transformers

    vocab = {"<pad>": 0, "<eos>": 1} | {w: i + 2 for i, w in enumerate(words)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    if whitespace:
        tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    config = transformers.LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=1,
        pad_token_id=0,
        bos_token_id=None,
        initializer_range=initializer_range,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
