"""trace_generation: averages over the generated tokens, for causal LMs and (tiny, random) vision-language models."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from llmboost.llm.loading import ArchitectureError, decoder_layers  # noqa: E402
from llmboost.llm.tracing import (  # noqa: E402
    TracingError,
    trace_generation,
    trace_generation_ids,
)

TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "max_position_embeddings": 256,
}


def _tiny(kind: str):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**TEXT)
        model = transformers.LlamaForCausalLM(cfg)
    elif kind == "llava":
        cfg = transformers.LlavaConfig(
            vision_config=transformers.CLIPVisionConfig(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=16,
                patch_size=8,
            ),
            text_config=transformers.LlamaConfig(**TEXT),
            image_token_index=127,
        )
        model = transformers.LlavaForConditionalGeneration(cfg)
    elif kind == "mllama":
        text = transformers.MllamaTextConfig(
            **{**TEXT, "num_hidden_layers": 3},
            cross_attention_layers=[1],
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        vision = transformers.MllamaVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_global_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
            vision_output_dim=32,
            intermediate_layers_indices=[0],
        )
        cfg = transformers.MllamaConfig(vision_config=vision, text_config=text, image_token_index=127)
        model = transformers.MllamaForConditionalGeneration(cfg)
    else:
        text = transformers.Qwen2VLTextConfig(**TEXT, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]})
        vision = transformers.Qwen2VLVisionConfig(depth=1, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2)
        cfg = transformers.Qwen2VLConfig(
            vision_config=vision.to_dict(),
            text_config=text.to_dict(),
            image_token_id=127,
            video_token_id=126,
            vision_start_token_id=125,
        )
        model = transformers.Qwen2VLForConditionalGeneration(cfg)
    model.eval()
    model.generation_config.eos_token_id = None
    return model


@pytest.mark.parametrize("kind", ["llama", "llava", "mllama", "qwen2vl"])
def test_tiny_architectures_match_a_full_forward(kind):
    model = _tiny(kind)
    prompts = [[1, 5, 9, 14], [1, 7]]
    tr = trace_generation_ids(model, prompts, max_new_tokens=5, pad_token_id=0)
    n_layers = len(decoder_layers(model))
    assert tr.hidden.shape == (2, n_layers, 32)
    assert tr.head_outputs.shape == (2, n_layers, 4, 8)
    assert [len(t) for t in tr.token_ids] == [5, 5]
    # recompute without the cache: the block outputs at the positions that produced each generated token
    ids = torch.tensor([prompts[0] + tr.token_ids[0]])
    captured = {}
    layers = decoder_layers(model)
    hooks = [
        b.register_forward_hook(lambda m, a, o, i=i: captured.__setitem__(i, o[0] if isinstance(o, tuple) else o))
        for i, b in enumerate(layers)
    ]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    for h in hooks:
        h.remove()
    pos = list(range(3, 3 + 5))
    for i in range(n_layers):
        if i in captured:
            ref = captured[i][0, pos].mean(0).numpy()
            assert np.allclose(tr.hidden[0, i], ref, atol=1e-4 * max(1.0, np.abs(ref).max()))
    lp = torch.log_softmax(logits[0].float(), -1)
    assert np.allclose(
        tr.token_logprobs[0], [float(lp[p, t]) for p, t in zip(pos, tr.token_ids[0], strict=True)], atol=1e-4
    )


def test_memory_is_independent_of_generated_length():
    model = _tiny("llama")
    short = trace_generation_ids(model, [[1, 2, 3]], max_new_tokens=2)
    long = trace_generation_ids(model, [[1, 2, 3]], max_new_tokens=40)
    assert short.feature_bytes() == long.feature_bytes()
    assert len(long.token_ids[0]) == 40


def test_unknown_architecture_names_what_was_looked_for():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(ArchitectureError, match=r"model\.layers.*transformer\.h"):
        decoder_layers(Odd())


def test_block_without_output_projection_is_a_clear_error():
    model = _tiny("llama")
    model.model.layers[1].self_attn.o_proj = None
    with pytest.raises(TracingError, match=r"block 1.*self_attn\.o_proj"):
        trace_generation_ids(model, [[1, 2]], max_new_tokens=2)


def test_bad_prompts_and_lengths():
    model = _tiny("llama")
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        trace_generation_ids(model, [[1], []])
    with pytest.raises(ValueError, match="exceeds the model's 256 positions"):
        trace_generation_ids(model, [[1] * 250], max_new_tokens=10)
    with pytest.raises(ValueError, match="max_new_tokens"):
        trace_generation_ids(model, [[1]], max_new_tokens=0)


@pytest.mark.slow
def test_smollm2_trace_matches_generate_and_a_full_forward(smollm2):
    prompts = ["The capital of France is", "Q: What is the capital of Japan?\nA:"]
    tr = trace_generation(smollm2, prompts, max_new_tokens=6)
    assert tr.texts == smollm2.generate(prompts, max_new_tokens=6)
    ids = smollm2.encode(prompts[1])
    gen = tr.token_ids[1]
    with torch.no_grad():
        out = smollm2.model(torch.tensor([ids + gen]), output_hidden_states=True)
    pos = list(range(len(ids) - 1, len(ids) - 1 + len(gen)))
    ref = out.hidden_states[3][0, pos].mean(0).numpy()  # output of block 2
    assert np.abs(tr.hidden[1, 2] - ref).max() <= 1e-4 * np.abs(ref).max()
    stopped = trace_generation(smollm2, prompts[:1], max_new_tokens=8, stop=["."])
    assert "." not in stopped.texts[0]
    assert len(stopped.token_ids[0]) <= 8


@pytest.mark.slow
@pytest.mark.realdata
def test_gemma3_270m_trace_end_to_end(gemma3):
    """Real generations of Gemma-3-270M (arXiv 2510.14330 §3.1 features): the traced token ids are the greedy
    generation's; every layer's hidden state, every head's output and the token log-probabilities equal the
    averages over the generating positions of one full forward pass over prompt + answer."""
    prompts = ["The capital of France is", "Q: What is the capital of Japan?\nA:", "Water boils at"]
    tr = trace_generation(gemma3, prompts, max_new_tokens=5)
    cfg = gemma3.model.config
    n_layers, d, n_heads, dh = cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
    assert (n_layers, d, n_heads, dh) == (18, 640, 4, 256)
    assert tr.hidden.shape == (3, n_layers, d) and tr.head_outputs.shape == (3, n_layers, n_heads, dh)
    assert tr.token_ids == [g[0] for g in gemma3.generate_ids(prompts, max_new_tokens=5)]
    assert tr.texts == [gemma3.tokenizer.decode(t, skip_special_tokens=True) for t in tr.token_ids]
    assert "Paris" in tr.texts[0] or "Tokyo" in tr.texts[1]  # a working model, not noise

    layers = decoder_layers(gemma3.model)
    for row in (0, 1):  # one full forward pass per prompt, unpadded
        ids, gen = gemma3.encode(prompts[row]), tr.token_ids[row]
        captured: dict[int, torch.Tensor] = {}
        hooks = [
            layers[k].self_attn.o_proj.register_forward_pre_hook(
                lambda _m, args, k=k, store=captured: store.__setitem__(k, args[0].detach())
            )
            for k in range(n_layers)
        ]
        try:
            with torch.no_grad():
                out = gemma3.model(torch.tensor([ids + gen]), output_hidden_states=True)
        finally:
            for h in hooks:
                h.remove()
        pos = list(range(len(ids) - 1, len(ids) - 1 + len(gen)))  # the positions that produced each token
        for k in range(n_layers - 1):  # hidden_states[k + 1] is block k's output (the last one is normed)
            ref = out.hidden_states[k + 1][0, pos].mean(0).numpy()
            assert np.abs(tr.hidden[row, k] - ref).max() <= 2e-3 * np.abs(ref).max(), (row, k)
            heads_ref = captured[k][0, pos].mean(0).numpy()
            got = tr.head_outputs[row, k].reshape(-1)
            assert np.abs(got - heads_ref).max() <= 2e-3 * np.abs(heads_ref).max(), (row, k)
        logp = torch.log_softmax(out.logits[0, pos].float(), -1)[range(len(gen)), gen].numpy()
        assert np.allclose(tr.token_logprobs[row], logp, atol=2e-3)
