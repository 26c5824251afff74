"""The CPU dropout mask and the attention with dropout (``llmboost.models.layers``)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmboost.models.layers import Dropout, attention, dropout, dropout_scale_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_mask_keeps_one_minus_p_and_preserves_the_expectation(p: float) -> None:
    torch.manual_seed(0)
    mask = dropout_scale_mask((400, 1000), p, torch.empty(0))
    kept = (mask > 0).float().mean().item()
    assert kept == pytest.approx(1 - p, abs=0.005)
    assert mask.mean().item() == pytest.approx(1.0, abs=0.01)  # the 1 / (1 - p) scale is unbiased
    values = mask.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - p), rel=1e-4)]


def test_mask_bits_are_independent_of_position() -> None:
    """Each int64 word gives four draws: all four lanes (and odd-sized tensors) keep at the same rate."""
    torch.manual_seed(1)
    mask = dropout_scale_mask((250_001,), 0.5, torch.empty(0))
    lanes = (mask[:250_000] > 0).float().view(-1, 4).mean(0)
    assert torch.all((lanes - 0.5).abs() < 0.01), lanes


def test_dropout_is_seeded_identity_in_eval_and_passes_masked_gradients() -> None:
    x = torch.randn(64, 32, requires_grad=True)
    layer = Dropout(0.3).eval()
    assert layer(x) is x
    layer.train()
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(first, layer(x))
    first.sum().backward()
    assert torch.allclose(x.grad, (first.detach() != 0).float() / 0.7, atol=1e-6)
    with pytest.raises(ValueError, match="dropout probability"):
        dropout_scale_mask((3,), 1.5, x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def _causal_bias(length: int) -> torch.Tensor:
    allowed = torch.ones(length, length, dtype=torch.bool).tril()
    return torch.zeros(length, length).masked_fill_(~allowed, float("-inf"))


def test_attention_without_dropout_is_scaled_dot_product_attention() -> None:
    q, k, v = torch.randn(3, 4, 2, 9, 8).unbind(0)
    bias = _causal_bias(9)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(attention(q, k, v, bias), expected, atol=1e-5)


def test_attention_with_dropout_stays_causal_and_unbiased() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2000, 1, 6, 4).unbind(0)
    bias = _causal_bias(6)
    torch.manual_seed(5)
    out = attention(q, k, v, bias, dropout_p=0.5)
    changed_future = v.clone()
    changed_future[:, :, 3:] += 100.0  # the first three positions must not see these
    torch.manual_seed(5)
    out_changed = attention(q, k, changed_future, bias, dropout_p=0.5)
    assert torch.equal(out[:, :, :3], out_changed[:, :, :3])
    assert not torch.allclose(out[:, :, 3:], out_changed[:, :, 3:])
    # averaged over many draws the dropped-out attention equals the plain one (inverted-dropout scaling)
    plain = attention(q, k, v, bias)
    assert (out - plain).mean().abs().item() < 0.02


def test_use_fast_dropout_swaps_every_dropout_module_and_keeps_the_state() -> None:
    """An ``nn.Transformer``'s dropout modules all become ``layers.Dropout`` with the same ``p``; its state dict
    loads into an unswapped copy and both compute the same in eval mode."""
    torch.manual_seed(0)
    plain = nn.Transformer(16, 2, 1, 1, 32, 0.25, batch_first=True)
    fast = use_fast_dropout(copy.deepcopy(plain))
    swapped = [m for m in fast.modules() if isinstance(m, nn.Dropout)]
    assert len(swapped) == sum(isinstance(m, nn.Dropout) for m in plain.modules()) == 7  # 3 + 4
    assert all(type(m) is Dropout and m.p == 0.25 for m in swapped)
    plain.load_state_dict(fast.state_dict())
    src, tgt = torch.randn(3, 5, 16), torch.randn(3, 4, 16)
    plain.eval(), fast.eval()
    torch.testing.assert_close(fast(src, tgt), plain(src, tgt), rtol=0, atol=0)
    fast.train()
    torch.manual_seed(1)
    assert not torch.equal(fast(src, tgt), fast(src, tgt))  # masks are drawn in training
