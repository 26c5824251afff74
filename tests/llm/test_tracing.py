"""Tracing: per-layer hidden states and per-head attention outputs, pooled over token positions."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow

PROMPTS = ["Hello there, how are you today?", "A user liked Toy Story and Babe.", "Short"]


def _rel(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


@pytest.fixture(scope="module")
def full_last(smollm2):
    return smollm2.trace(PROMPTS, pool="last")


def test_shapes(smollm2, full_last):
    cfg = smollm2.config
    n_layers = cfg.num_hidden_layers
    assert full_last.hidden.shape == (3, n_layers, cfg.hidden_size)
    assert full_last.heads.shape == (3, n_layers, cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads)
    assert full_last.layers == tuple(range(n_layers))
    assert full_last.n_tokens.tolist() == [len(smollm2.encode(p)) for p in PROMPTS]


def test_hidden_states_match_transformers(smollm2, full_last):
    import torch

    for i, p in enumerate(PROMPTS):
        with torch.no_grad():
            hs = smollm2.backbone(input_ids=torch.tensor([smollm2.encode(p)]), output_hidden_states=True)
        hs = hs.hidden_states  # embeddings, blocks 0..L-2, final (normed) output
        for layer in range(len(hs) - 2):
            assert _rel(full_last.hidden[i, layer], hs[layer + 1][0, -1].numpy()) < 1e-5
        # the last block's output, before the final norm
        normed = smollm2.backbone.norm(torch.tensor(full_last.hidden[i, -1])).detach().numpy()
        assert _rel(normed, hs[-1][0, -1].numpy()) < 1e-5


def test_heads_recombine_to_attention_output(smollm2, full_last):
    """o_proj applied to the concatenated per-head outputs gives the attention block's output."""
    import torch

    from llmboost.llm.loading import decoder_layers

    layers = decoder_layers(smollm2.model)
    captured = {}
    handles = [
        layers[k].self_attn.register_forward_hook(
            lambda m, a, out, k=k: captured.__setitem__(k, out[0][0, -1].detach().clone())
        )
        for k in (0, 17)
    ]
    try:
        with torch.no_grad():
            smollm2.backbone(input_ids=torch.tensor([smollm2.encode(PROMPTS[1])]))
    finally:
        for h in handles:
            h.remove()
    for k in (0, 17):
        heads = torch.tensor(full_last.heads[1, k]).reshape(-1)
        with torch.no_grad():
            recombined = layers[k].self_attn.o_proj(heads)
        assert _rel(recombined.numpy(), captured[k].numpy()) < 1e-5


def test_mean_and_index_pooling(smollm2):
    n = len(smollm2.encode(PROMPTS[0]))
    every = smollm2.trace(PROMPTS[:1], pool=[list(range(n))], layers=[4])
    mean = smollm2.trace(PROMPTS[:1], pool="mean", layers=[4])
    assert _rel(mean.hidden, every.hidden) < 1e-6 and mean.pool == "mean"
    singles = np.stack([smollm2.trace(PROMPTS[:1], pool=[i], layers=[4]).hidden[0, 0] for i in range(n)])
    assert _rel(mean.hidden[0, 0], singles.mean(0)) < 1e-5
    last = smollm2.trace(PROMPTS[:1], pool=[-1], layers=[4])
    assert _rel(last.hidden[0, 0], singles[-1]) < 1e-6
    with pytest.raises(IndexError):
        smollm2.trace(PROMPTS[:1], pool=[n])
    with pytest.raises(ValueError):
        smollm2.trace(PROMPTS, pool=[[0], [1]])


def test_batched_and_layer_subset_match(smollm2, full_last):
    one = [smollm2.trace([p], pool="last") for p in PROMPTS]
    for i, t in enumerate(one):
        assert _rel(t.hidden[0], full_last.hidden[i]) < 1e-5
        assert _rel(t.heads[0], full_last.heads[i]) < 1e-5
    sub = smollm2.trace(PROMPTS, pool="last", layers=[-1, 2], hidden=False)  # stops early only when allowed
    assert sub.hidden is None and sub.layers == (29, 2)
    assert _rel(sub.heads[:, 1], full_last.heads[:, 2]) < 1e-5
    early = smollm2.trace(PROMPTS, pool="last", layers=[3], heads=False)
    assert _rel(early.hidden[:, 0], full_last.hidden[:, 3]) < 1e-5
