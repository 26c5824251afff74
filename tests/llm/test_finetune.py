"""Fine-tuning: example builders, packing, and a short real LoRA run whose adapter reloads."""

from __future__ import annotations

import numpy as np
import pytest

from llmboost.llm.finetune import (
    IGNORE,
    TokenizedExample,
    build_examples,
    finetune,
    make_batches,
    next_item_examples,
    pack,
    packed_loss,
    pairwise_examples,
    read_training_log,
    tokenize_examples,
    yes_no_examples,
)
from llmboost.llm.precision import cpu_has_native_bf16
from llmboost.llm.prompts import NEXT_ITEM, PAIRWISE, YES_NO

HISTORY = ["Toy Story", "GoldenEye", "Four Rooms", "Get Shorty", "Copycat", "Twelve Monkeys", "Babe"]
CATALOG = ["Fargo", "Contact", "Scream", "Heat", "Casino", "Clueless", "Jumanji", *HISTORY]


def test_next_item_examples():
    ex = next_item_examples(HISTORY, max_history=2, min_history=3)
    assert [e.answer for e in ex] == HISTORY[3:]
    assert ex[0].fields["history"] == "1. GoldenEye\n2. Four Rooms" and ex[0].template is NEXT_ITEM
    assert [e.answer for e in next_item_examples(HISTORY, last_n=2)] == HISTORY[-2:]


def test_yes_no_examples_balance_and_negatives():
    ex = yes_no_examples(HISTORY, CATALOG, min_history=3, seed=1)
    assert {e.template for e in ex} == {YES_NO}
    yes = [e for e in ex if e.answer == "Yes"]
    no = [e for e in ex if e.answer == "No"]
    assert len(yes) == len(no) == len(HISTORY) - 3
    assert [e.fields["item"] for e in yes] == HISTORY[3:]
    assert all(e.fields["item"] not in HISTORY for e in no)


def test_pairwise_examples_answer_points_at_true_item():
    ex = pairwise_examples(HISTORY, CATALOG, min_history=3, seed=2)
    assert len(ex) == len(HISTORY) - 3
    for e, truth in zip(ex, HISTORY[3:], strict=True):
        slot = "item_a" if e.answer == "A" else "item_b"
        other = "item_b" if slot == "item_a" else "item_a"
        assert e.fields[slot] == truth and e.fields[other] not in HISTORY
    assert {e.answer for e in ex} == {"A", "B"}  # both slots used
    both = pairwise_examples(HISTORY, CATALOG, min_history=3, both_orders=True)
    assert len(both) == 2 * len(ex)


def test_build_examples_all_tasks():
    ex = build_examples({1: HISTORY, 2: HISTORY[:5]}, CATALOG, min_history=3, max_history=5)
    tasks = [e.task for e in ex]
    assert tasks.count("next_item") == 4 + 2 and tasks.count("yes_no") == 8 + 4 and tasks.count("pairwise") == 6


def test_pack_first_fit_decreasing():
    lengths = [5, 9, 3, 7, 1, 10, 4]
    rows = pack(lengths, 10)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
    assert len(rows) == 4  # 39 tokens in rows of 10


def test_make_batches_restart_positions_and_mask_padding():
    exs = [
        TokenizedExample([1, 2, 3], [IGNORE, IGNORE, 3]),
        TokenizedExample([4, 5], [IGNORE, 5]),
        TokenizedExample([6, 7, 8, 9], [IGNORE, IGNORE, 8, 9]),
    ]
    (batch,) = make_batches(exs, max_length=8, batch_tokens=64, pad_id=0)
    assert batch.tokens == 9
    flat_ids = batch.input_ids[batch.input_ids > 0].tolist()
    assert sorted(flat_ids) == list(range(1, 10))
    for row_pos, row_ids in zip(batch.position_ids.tolist(), batch.input_ids.tolist(), strict=True):
        starts = [i for i, p in enumerate(row_pos) if p == 0]
        assert starts[0] == 0
        # each example (and the padding tail) restarts at position 0
        assert len(starts) == len([t for t in row_ids if t in (1, 4, 6)]) + (0 in row_ids)
    assert (batch.labels[batch.input_ids == 0] == IGNORE).all()


@pytest.mark.slow
def test_packed_loss_equals_separate_losses(smollm2):
    """Packed examples do not attend to each other: the packed loss equals the per-example losses."""
    import torch

    ex = pairwise_examples(HISTORY, CATALOG, max_history=3, min_history=3, seed=0)[:3]
    ex += next_item_examples(HISTORY, max_history=2, min_history=5)
    tok = tokenize_examples(smollm2.tokenizer, ex, max_length=1024)
    with torch.no_grad():
        (packed,) = make_batches(tok, max_length=1024, batch_tokens=1024, pad_id=2)
        assert packed.input_ids.shape[0] == 1  # all in one row
        loss, n = packed_loss(smollm2.backbone, smollm2.lm_head, packed, smollm2.device)
        total, count = 0.0, 0
        for t in tok:
            (one,) = make_batches([t], max_length=1024, batch_tokens=1024, pad_id=2)
            l1, n1 = packed_loss(smollm2.backbone, smollm2.lm_head, one, smollm2.device)
            total += float(l1) * n1
            count += n1
    assert n == count
    assert float(loss) == pytest.approx(total / count, abs=1e-4)


@pytest.mark.slow
def test_lora_finetune_lowers_loss_and_adapter_reloads(smollm2, tmp_path):
    from llmboost.llm.hf import HFModel
    from llmboost.llm.models import resolve_model

    ex = pairwise_examples(HISTORY, CATALOG, max_history=3, min_history=3, seed=0, both_orders=True)
    ex += yes_no_examples(HISTORY, CATALOG, max_history=3, min_history=3, seed=0)
    assert len(ex) == 16
    # float32 on every machine: bf16 is emulated (~50x slower) on CPUs without AMX/AVX512-BF16
    out = finetune(
        smollm2.setting,
        ex,
        tmp_path / "adapter",
        r=8,
        lr=1e-3,
        dropout=0.0,
        max_steps=4,
        batch_tokens=1024,
        max_length=512,
        precision="fp32",
        eval_examples=ex,
        log_every=0,
    )
    log = read_training_log(out)
    assert log["precision"] == "fp32"
    assert log["steps"] == 4 and log["epochs"] == 2 and log["tokens_per_s"] > 0
    # loss on the training examples, measured before and after training, goes down
    assert log["eval_loss_after"] < 0.8 * log["eval_loss_before"], (log["eval_loss_before"], log["eval_loss_after"])
    assert len(log["losses"]) == 4 and len(log["epoch_losses"]) == 2
    assert (out / "adapter_config.json").is_file() and resolve_model(str(out)).base == smollm2.setting

    reqs = [PAIRWISE.request(smollm2, **e.fields) for e in ex[:4]]
    base = np.concatenate(smollm2.choice_logprobs(reqs))
    tuned = HFModel(str(out))  # the adapter folder is a model setting
    tuned_lp = np.concatenate(tuned.choice_logprobs(reqs))
    assert np.abs(tuned_lp - base).max() > 1e-2
    again = HFModel(smollm2.setting, adapter=out, merge_adapter=False)
    np.testing.assert_allclose(np.concatenate(again.choice_logprobs(reqs)), tuned_lp, atol=1e-4)
    assert tuned.fingerprint == again.fingerprint != smollm2.fingerprint
    # the tuned model prefers the true answers more than the base model did
    answers = [0 if e.answer == "A" else 1 for e in ex[:4]]
    gain = [
        t[a] - b[a] for t, b, a in zip(tuned.choice_logprobs(reqs), smollm2.choice_logprobs(reqs), answers, strict=True)
    ]
    assert np.mean(gain) > 0


@pytest.mark.slow
def test_full_finetune_saves_a_loadable_checkpoint(smollm2, tmp_path):
    from llmboost.llm.hf import HFModel
    from llmboost.llm.models import resolve_model

    ex = yes_no_examples(HISTORY, CATALOG, max_history=2, min_history=5, seed=0)
    out = finetune(
        smollm2.setting,
        ex,
        tmp_path / "full",
        method="full",
        lr=1e-4,
        max_steps=1,
        batch_tokens=512,
        max_length=512,
        log_every=0,
    )
    assert resolve_model(str(out)).kind == "folder"
    log = read_training_log(out)
    assert log["method"] == "full" and log["trainable_params"] == smollm2.n_params
    reqs = [YES_NO.request(smollm2, **e.fields) for e in ex]
    tuned = HFModel(str(out))
    assert tuned.fingerprint != smollm2.fingerprint
    diff = np.abs(np.concatenate(tuned.choice_logprobs(reqs)) - np.concatenate(smollm2.choice_logprobs(reqs)))
    assert diff.max() > 1e-3


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 is emulated on this CPU (no AMX/AVX512-BF16)")
def test_bf16_finetune_step_where_native(smollm2, tmp_path):
    ex = yes_no_examples(HISTORY, CATALOG, max_history=2, min_history=5, seed=0)
    out = finetune(
        smollm2.setting, ex, tmp_path / "bf16", r=4, max_steps=1, batch_tokens=512, precision="bf16", log_every=0
    )
    log = read_training_log(out)
    assert log["precision"] == "bf16" and np.isfinite(log["losses"]).all()


@pytest.mark.slow
def test_lora_finetune_with_new_tokens_trains_their_rows_and_reloads(smollm2, tmp_path):
    """Semantic-ID codes as new tokens: loss goes down, the new rows move from their (mean) start, and the
    adapter folder reloads with the tokens (same logits merged or not)."""
    import torch

    from llmboost.llm.finetune import TextExample
    from llmboost.llm.hf import HFModel

    codes = ["<a_1>", "<a_2>", "<a_3>"]
    ex = [
        TextExample(NEXT_ITEM, {"history": f"1. {h}"}, code, "next_item")
        for h, code in zip(HISTORY[:3], codes, strict=True)
    ]
    out = finetune(
        smollm2.setting, ex, tmp_path / "codes", r=4, lr=5e-3, max_steps=3, batch_tokens=512, precision="fp32",
        eval_examples=ex, log_every=0, new_tokens=codes,
    )  # fmt: skip
    log = read_training_log(out)
    assert log["new_tokens"] == codes and log["eval_loss_after"] < log["eval_loss_before"]
    tuned = HFModel(str(out))
    ids = tuned.tokenizer.convert_tokens_to_ids(codes)
    assert len(tuned.tokenizer) == len(smollm2.tokenizer) + 3 and ids == list(
        range(len(smollm2.tokenizer), len(smollm2.tokenizer) + 3)
    )
    start = smollm2.model.get_input_embeddings().weight.mean(0)
    rows = tuned.model.get_input_embeddings().weight[ids]
    assert (rows - start).abs().max() > 1e-4
    again = HFModel(str(out), merge_adapter=False)
    prompt = torch.tensor([tuned.encode(NEXT_ITEM.prompt(tuned.tokenizer, **ex[0].fields) + codes[0])])
    with torch.no_grad():
        a = tuned.model(input_ids=prompt).logits
        b = again.model(input_ids=prompt).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_stopped_finetune_resumes_bit_identical(smollm2, tmp_path, monkeypatch):
    """A fine-tune stopped after its second step resumes from ``.checkpoint`` (saved every step here) and ends
    with the same losses and adapter weights as an uninterrupted run; the checkpoint is gone afterwards."""
    import importlib

    import torch

    ft = importlib.import_module("llmboost.llm.finetune")  # the module (``llmboost.llm.finetune`` is the function)
    ex = yes_no_examples(HISTORY, CATALOG, max_history=2, min_history=3, seed=0)
    settings = dict(r=4, lr=1e-3, max_steps=3, batch_tokens=256, max_length=256, pack_length=128, precision="fp32")
    whole = finetune(smollm2.setting, ex, tmp_path / "whole", log_every=0, progress=False, **settings)

    real_loss, calls = ft.packed_loss, {"n": 0}

    def stop_at_third_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the job were stopped
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(ft, "packed_loss", stop_at_third_step)
    with pytest.raises(KeyboardInterrupt):
        finetune(smollm2.setting, ex, tmp_path / "stopped", checkpoint_minutes=0, progress=False, **settings)
    assert (tmp_path / "stopped" / ft.CHECKPOINT_DIR / "state.pt").is_file()
    assert not (tmp_path / "stopped" / "adapter_config.json").exists()
    monkeypatch.setattr(ft, "packed_loss", real_loss)
    resumed = finetune(smollm2.setting, ex, tmp_path / "stopped", checkpoint_minutes=0, progress=False, **settings)

    a, b = read_training_log(whole), read_training_log(resumed)
    assert b["resumed_at_step"] == 2 and a["resumed_at_step"] is None
    assert b["steps"] == a["steps"] == 3 and b["losses"] == a["losses"]
    assert not (resumed / ft.CHECKPOINT_DIR).exists()
    from safetensors.torch import load_file

    wa, wb = load_file(whole / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
