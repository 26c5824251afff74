"""The LLM stage: code tokens added to a causal LM's vocabulary, fine-tuned, trie-constrained beams.

Uses a tiny randomly initialised Llama and an in-memory tokenizer (no download, a second of CPU);
the same code path loads SmolLM2 from the packaged GGUF in the experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmboost.data.interactions import Interactions
from llmboost.methods.cemg.semantic_ids import SemanticIDs

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def tiny_llm():
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<pad>": 0, "<eos>": 1, "next": 2}, unk_token="<pad>"))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    config = transformers.LlamaConfig(vocab_size=3, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)
    import torch

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config), tokenizer


def test_llm_generator_adds_code_tokens_learns_and_never_returns_invalid_items() -> None:
    from llmboost.methods.cemg.llm_generator import LLMGenerativeRecommender

    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    rows = [(u, int(i), t) for u in range(n_users) for t, i in enumerate(rng.choice(n_items, 6, replace=False))]
    train = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), n_users, n_items)
    ids = SemanticIDs.build(rng.integers(0, 4, (n_items, 2)), 4, max_dedup=16)
    model = LLMGenerativeRecommender(ids.codes, ids.sizes, max_history=4, examples=80, epochs=2, lr=3e-3,
                                     batch_size=16, beam=8, progress=False, llm=tiny_llm()).fit(train)
    assert len(model.tokenizer_) == 3 + sum(ids.sizes) + 1  # one token per code of each level, plus <next>
    losses = [h["loss"] for h in model.history_]
    assert losses[-1] < losses[0]
    items, _ = model.recommend(np.arange(20), k=5, history=train)
    real = items >= 0
    assert real.any() and items[real].max() < n_items
    for user, row in enumerate(items):
        listed = row[row >= 0]
        assert len(set(listed.tolist())) == len(listed)
        assert not np.isin(listed, train.history(user)).any()
