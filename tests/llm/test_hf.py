"""The local Transformers backend and model settings."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from llmboost.llm import models
from llmboost.llm.base import ChoiceRequest, LanguageModel
from llmboost.llm.models import DEFAULT_MODEL, dequantize_gguf, load_model, resolve_model
from llmboost.llm.prefix import merge_prefix_rows, plan_prefix_groups
from llmboost.llm.prompts import PAIRWISE

# ---------------------------------------------------------------------------------------- model settings


def test_resolve_settings(tmp_path):
    spec = resolve_model(DEFAULT_MODEL)
    assert spec.kind == "gguf" and spec.location.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path / "ckpt")).kind == "folder"
    (tmp_path / "ad").mkdir()
    (tmp_path / "ad" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    ad = resolve_model(str(tmp_path / "ad"))
    assert ad.kind == "adapter" and ad.base == "org/base"
    (tmp_path / "ad" / models.ADAPTER_META).write_text(json.dumps({"base_model": DEFAULT_MODEL}))
    assert resolve_model(str(tmp_path / "ad")).base == DEFAULT_MODEL
    assert resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct").kind == "hub"
    url = resolve_model("http://localhost:8000/v1#Qwen/Qwen2.5-7B")
    assert (url.kind, url.location, url.served_model) == ("url", "http://localhost:8000/v1", "Qwen/Qwen2.5-7B")
    with pytest.raises(FileNotFoundError):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError):
        resolve_model("./no/such/folder")
    with pytest.raises(ValueError, match="empty"):
        resolve_model(" ")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="gguf"):
        resolve_model(str(tmp_path / "weights.bin"))


def test_load_model_url_builds_openai_client(monkeypatch):
    made = {}

    class FakeClient:
        def __init__(self, base_url, model=None, **kwargs):
            made.update(base_url=base_url, model=model, **kwargs)

    fake = types.ModuleType("llmboost.llm.openai_client")
    fake.OpenAICompatibleModel = FakeClient
    monkeypatch.setitem(sys.modules, "llmboost.llm.openai_client", fake)
    load_model("https://example.org/v1#my-model", timeout=5)
    assert made == {"base_url": "https://example.org/v1", "model": "my-model", "timeout": 5}
    load_model("http://h:1/v1", served_model="other")
    assert made["model"] == "other"


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMBOOST_CACHE", str(tmp_path))
    assert models.cache_root() == tmp_path / "models"
    assert models.cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("LLMBOOST_CACHE")
    assert models.cache_root().parts[-3:] == (".cache", "llmboost", "models")


def test_gguf_dequantized_once_and_keyed_by_content(monkeypatch, tmp_path):
    """The GGUF is converted once; later calls read the cache; a changed file gets a new cache entry."""
    calls = []

    class Saver:
        config = types.SimpleNamespace(quantization_config={"quant_method": "gguf"})
        hf_quantizer = object()

        def save_pretrained(self, folder):
            (folder / "model.safetensors").write_bytes(b"w")

    def from_pretrained(folder, gguf_file):
        calls.append(gguf_file)
        return Saver()

    auto = types.SimpleNamespace(from_pretrained=from_pretrained)
    fake_tf = types.SimpleNamespace(AutoTokenizer=auto, AutoModelForCausalLM=auto)
    monkeypatch.setattr(models, "require", lambda module, extra: fake_tf)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"0" * 100)
    first = dequantize_gguf(gguf, cache_dir=tmp_path / "cache")
    assert (first / "model.safetensors").is_file() and len(calls) == 2
    assert dequantize_gguf(gguf, cache_dir=tmp_path / "cache") == first and len(calls) == 2
    gguf.write_bytes(b"GGUF" + b"1" * 100)
    second = dequantize_gguf(gguf, cache_dir=tmp_path / "cache")
    assert second != first and len(calls) == 4
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp folders left


def test_plan_prefix_groups_splits_at_user_boundaries():
    sys_ = tuple(range(100, 120))  # shared system prompt (20 tokens)
    u1 = (*sys_, *range(1000, 1200))  # user 1 history
    u2 = (*sys_, *range(2000, 2200))
    rows = [(*u1, 1), (*u2, 5, 6), (*u1, 2, 3), (*u1, 4), (*u2, 7), (*u1, 9, 9)]
    solo = (*sys_, 50, 51)  # one request of a third user
    rows.append(solo)
    caps = [len(r) - 1 for r in rows]
    groups = plan_prefix_groups(rows, caps, min_prefix=16)
    by_prefix = {tuple(sorted(g)): p for p, g in groups}
    assert by_prefix[(0, 2, 3, 5)] == len(u1)
    assert by_prefix[(1, 4)] == len(u2)
    assert by_prefix[(6,)] == 0
    assert sorted(i for _, g in groups for i in g) == list(range(len(rows)))


def test_rows_that_prefix_other_rows_are_merged():
    rows = [(1, 2), (1, 2, 3), (1, 2, 4), (1,), (5,)]
    queries = [(0, 1, 9), (1, 2, 9), (2, 2, 8), (3, 0, 7), (4, 0, 6)]
    kept, moved = merge_prefix_rows(rows, queries)
    assert kept == [(1, 2, 3), (1, 2, 4), (5,)]
    assert moved == [(0, 1, 9), (0, 2, 9), (1, 2, 8), (0, 0, 7), (2, 0, 6)]


# ---------------------------------------------------------------------------------------- real model

HISTORIES = [
    ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)", "Copycat (1995)"],
    ["Star Wars (1977)", "Fargo (1996)", "Contact (1997)"],
    ["Scream (1996)"],
]
ITEMS = ["Twelve Monkeys (1995)", "Babe (1995)", "Dead Man Walking (1995)", "Richard III (1995)"]


def _requests(model) -> list[ChoiceRequest]:
    reqs = [
        PAIRWISE.request(model, history=h, item_a=a, item_b=b, item_kind="movies")
        for h in HISTORIES
        for a in ITEMS[:2]
        for b in ITEMS
        if a != b
    ]
    reqs += [
        ChoiceRequest("The capital of France is", (" Paris", " London", " the city of Paris", "")),
        ChoiceRequest("1, 2, 3,", (" 4", " 4, 5, 6")),
        ChoiceRequest("The capital of France is", (" Paris",)),  # identical prompt: row reused
    ]
    return reqs


@pytest.fixture(scope="module")
def one_at_a_time(smollm2):
    model = smollm2.options(share_prefix=False)
    reqs = _requests(model)
    return reqs, np.concatenate([model.choice_logprobs([r])[0] for r in reqs])


@pytest.mark.slow
def test_is_language_model_with_stable_fingerprint(smollm2):
    assert isinstance(smollm2, LanguageModel)
    fp = smollm2.fingerprint
    assert fp == smollm2.fingerprint and fp.startswith("SmolLM2-135M-Instruct.Q4_1.gguf:")
    gguf = resolve_model(DEFAULT_MODEL).location
    identity = models.model_identity(resolve_model(gguf))
    assert models.fingerprint_of(identity) == fp  # same file, same fingerprint, whatever the setting string
    assert smollm2.has_chat_template


@pytest.mark.slow
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batched_equals_one_at_a_time(smollm2, one_at_a_time, padding_side):
    reqs, want = one_at_a_time
    model = smollm2.options(share_prefix=False, padding_side=padding_side, batch_size=8)
    got = model.choice_logprobs(reqs)
    assert [len(g) for g in got] == [len(r.choices) for r in reqs]
    np.testing.assert_allclose(np.concatenate(got), want, atol=1e-4, rtol=0)
    assert model.stats.forward_calls < len(reqs)
    assert got[-3][3] == 0.0  # empty choice


@pytest.mark.slow
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_prefix_sharing_equals_no_sharing(smollm2, one_at_a_time, padding_side):
    reqs, want = one_at_a_time
    model = smollm2.options(share_prefix=True, padding_side=padding_side)
    got = np.concatenate(model.choice_logprobs(reqs))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert model.stats.groups >= 2 and model.stats.prefix_tokens > 0
    plain = smollm2.options(share_prefix=False)
    plain.choice_logprobs(reqs)
    assert model.stats.tokens < 0.5 * plain.stats.tokens


@pytest.mark.slow
def test_prefix_sharing_without_custom_attention(smollm2, one_at_a_time):
    """The fallback path (prefix keys/values copied per row into a Transformers cache) agrees too."""
    reqs, want = one_at_a_time
    model = smollm2.options(share_prefix=True)
    model.prefix_attention = False
    got = np.concatenate(model.choice_logprobs(reqs))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_choice_logprobs_are_log_probabilities(smollm2):
    (lp,) = smollm2.choice_logprobs([ChoiceRequest("The capital of France is", (" Paris", " London"))])
    assert np.all(lp < 0) and lp[0] > lp[1]
    cities = (" Paris", " London", " Berlin", " Rome", " Madrid")
    prompt = "The capital of France is"
    full = smollm2.choice_logprobs([ChoiceRequest(prompt, cities)])[0]
    assert np.exp(full).sum() < 1.0
    # independent reference: the full model's logits
    import torch

    tok = [smollm2.tokenizer(c, add_special_tokens=False).input_ids for c in cities]
    assert all(len(t) == 1 for t in tok)
    tok = [t[0] for t in tok]
    with torch.no_grad():
        logits = smollm2.model(input_ids=torch.tensor([smollm2.encode(prompt)])).logits
        ref = torch.log_softmax(logits[0, -1].double(), -1)
    np.testing.assert_allclose(full, ref[tok].numpy(), atol=1e-4)


@pytest.mark.slow
def test_generate_greedy_batched_and_stop(smollm2):
    prompts = [smollm2.format_chat("What is the capital of France?"), smollm2.format_chat("Name three fruits.")]
    batched = smollm2.generate(prompts, max_new_tokens=12)
    single = [smollm2.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    assert "Paris" in batched[0]
    stopped = smollm2.generate(prompts[1:], max_new_tokens=12, stop=["\n"])[0]
    assert "\n" not in stopped and batched[1].startswith(stopped)


@pytest.mark.slow
def test_generate_sampling_is_seeded(smollm2):
    p = [smollm2.format_chat("Write a word.")]
    a = smollm2.generate(p, max_new_tokens=6, temperature=1.0, seed=3)
    b = smollm2.generate(p, max_new_tokens=6, temperature=1.0, seed=3)
    assert a == b


@pytest.mark.slow
def test_options_rejects_unknown(smollm2):
    with pytest.raises(TypeError):
        smollm2.options(colour="red")
    with pytest.raises(ValueError):
        smollm2.options(padding_side="middle")


@pytest.mark.slow
def test_gemma_3_270m_builtin_works(gemma3, smollm2):
    """The second packaged model (Gemma-3-270M base, assembled from chunk packages) loads and knows a fact."""
    model = gemma3
    paris, london = model.choice_logprobs([ChoiceRequest("The capital of France is", (" Paris", " London"))])[0]
    assert paris > london + 1.0
    assert model.fingerprint != smollm2.fingerprint
    assert model.generate(["The capital of France is"], max_new_tokens=6)[0].strip()


@pytest.mark.slow
def test_generate_ids_greedy_beams_and_logits_processor(smollm2):
    """generate_ids: greedy ids decode to generate's text; beams are distinct; a processor that allows only a
    fixed set of token ids yields only those ids (trie-constrained decoding builds on this hook)."""
    import torch
    from transformers import LogitsProcessor

    prompts = ["The capital of France is", "My favourite movie is"]
    greedy = smollm2.generate_ids(prompts, max_new_tokens=4)
    texts = smollm2.generate(prompts, max_new_tokens=4)
    assert [smollm2.tokenizer.decode(g[0], skip_special_tokens=True) for g in greedy] == texts
    assert all(len(g) == 1 and 0 < len(g[0]) <= 4 for g in greedy)

    allowed = smollm2.tokenizer(" A B C", add_special_tokens=False).input_ids

    class OnlyAllowed(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            keep = torch.full_like(scores, float("-inf"))
            keep[:, allowed] = 0.0
            return scores + keep

    beams = smollm2.generate_ids(
        prompts[:1], max_new_tokens=3, num_beams=3, num_return_sequences=3, logits_processor=OnlyAllowed()
    )
    (seqs,) = beams
    assert len(seqs) == 3 and len({tuple(s) for s in seqs}) == 3
    assert all(tok in allowed for s in seqs for tok in s)
    with pytest.raises(ValueError, match="num_return_sequences"):
        smollm2.generate_ids(prompts, num_beams=1, num_return_sequences=2)
