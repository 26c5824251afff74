"""The LLM stage on the core LLM layer: code tokens added by ``finetune(new_tokens=...)`` (LoRA or full),
trie-constrained beams through ``HFModel.beam_search`` + a logits processor.

Uses a tiny randomly initialised Llama saved as a model folder with a word-level tokenizer (no download,
seconds of CPU); the same code path loads SmolLM2 from the packaged GGUF in the experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmboost.data.interactions import Interactions
from llmboost.methods.cemg.semantic_ids import SemanticIDs
from llmboost.methods.cemg.trie import SemanticIDTrie

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("peft")
torch = pytest.importorskip("torch")


def _data(n_users: int = 60, n_items: int = 30) -> tuple[Interactions, SemanticIDs]:
    rng = np.random.default_rng(0)
    rows = [(u, int(i), t) for u in range(n_users) for t, i in enumerate(rng.choice(n_items, 6, replace=False))]
    train = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), n_users, n_items)
    ids = SemanticIDs.build(rng.integers(0, 4, (n_items, 2)), 4, max_dedup=16)
    return train, ids


def test_trie_processor_allows_exactly_the_valid_continuations() -> None:
    from llmboost.methods.cemg.llm_generator import TrieLogitsProcessor

    codes = np.array([[0, 1, 0], [0, 2, 0], [3, 1, 0], [3, 1, 1]])
    trie = SemanticIDTrie(codes)
    level_tokens = [np.arange(10, 14), np.arange(20, 24), np.arange(30, 34)]
    proc = TrieLogitsProcessor(trie, level_tokens, eos_id=1)
    prompt = [5, 6, 7]  # ends with a non-code token, as every prompt does
    cases = {(): {10, 13}, (10,): {21, 22}, (13, 21): {30, 31}, (13, 21, 31): {1}, (10, 23): {1}}
    ids = torch.tensor([[0] * (3 - len(g)) + prompt + list(g) for g in cases])  # left padding, same width
    scores = proc(ids, torch.zeros(len(cases), 40))
    for row, allowed in enumerate(cases.values()):
        assert set(torch.nonzero(torch.isfinite(scores[row])).squeeze(1).tolist()) == allowed


def test_lora_llm_generator_reloads_with_its_tokens_and_never_returns_invalid_items(
    tiny_llm: str, tmp_path: Path
) -> None:
    from llmboost.llm.finetune import read_training_log
    from llmboost.methods.cemg.llm_generator import NEXT, LLMGenerativeRecommender, code_token

    train, ids = _data()
    out = tmp_path / "lora"
    settings = dict(model=tiny_llm, max_history=4, examples=120, epochs=3, lr=1e-2, batch_tokens=512, beam=8)
    settings |= dict(method="lora", lora_r=4, progress=False, output_dir=out)
    model = LLMGenerativeRecommender(ids.codes, ids.sizes, **settings).fit(train)
    assert (out / "adapter_config.json").is_file()  # a PEFT adapter, saved with its tokenizer
    log = read_training_log(out)
    assert log["method"] == "lora" and log["new_tokens"][-1] == NEXT
    assert log["epoch_losses"][-1] < log["epoch_losses"][0]
    # precision "auto" resolves to float32 in the test suite (LLMBOOST_PRECISION=fp32, tests/conftest.py)
    assert model.training_log_["precision"] == "fp32" and model.llm_.dtype == torch.float32
    tokenizer = model.llm_.tokenizer
    assert len(tokenizer) == 3 + sum(ids.sizes) + 1  # one token per code of each level, plus <next>
    rows = model.llm_.model.get_input_embeddings().weight[
        tokenizer.convert_tokens_to_ids([code_token(0, c) for c in range(ids.sizes[0])])
    ]
    assert (rows - rows.mean(0)).abs().max() > 1e-4  # the new rows were trained (they start equal) and reloaded

    users = np.arange(train.n_users)  # every user: constrained beams only ever name real, unseen items
    items, _ = model.recommend(users, k=8, history=train)
    real = items >= 0
    assert real.mean() > 0.5 and items[real].max() < train.n_items
    for user, row in zip(users, items, strict=True):
        listed = row[row >= 0]
        assert len(set(listed.tolist())) == len(listed)
        assert not np.isin(listed, train.history(user)).any()
    raw = model.generate([train.history(u) for u in users], beam=8)
    assert (raw >= 0).all()  # every beam of every user is a valid ID (30 items, beam 8)

    again = LLMGenerativeRecommender(ids.codes, ids.sizes, **settings).fit(train)  # same settings: reuses the fine-tune
    assert json.loads((out / "cemg_llm.json").read_text())["method"] == "lora"
    np.testing.assert_array_equal(again.recommend(users[:20], k=8, history=train)[0], items[:20])


def test_full_llm_generator_and_bad_settings(tiny_llm: str, tmp_path: Path) -> None:
    from llmboost.methods.cemg.llm_generator import LLMGenerativeRecommender

    train, ids = _data(n_users=20)
    model = LLMGenerativeRecommender(
        ids.codes,
        ids.sizes,
        model=tiny_llm,
        max_history=4,
        examples=40,
        epochs=1,
        lr=1e-2,
        batch_tokens=512,
        beam=4,
        method="full",
        progress=False,
        output_dir=tmp_path / "full",
    ).fit(train)
    assert (tmp_path / "full" / "config.json").is_file() and not (tmp_path / "full" / "adapter_config.json").exists()
    items, _ = model.recommend(np.arange(20), k=4, history=train)
    assert items[items >= 0].max() < train.n_items and (items >= 0).any()
    with pytest.raises(ValueError, match="method"):
        LLMGenerativeRecommender(ids.codes, ids.sizes, method="qlora")
    with pytest.raises(ValueError, match="precision"):
        LLMGenerativeRecommender(ids.codes, ids.sizes, precision="int4")
    with pytest.raises(ValueError, match="code tokens"):
        LLMGenerativeRecommender(ids.codes, ids.sizes).load(tiny_llm)
