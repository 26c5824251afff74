"""LoRA fine-tuning: llmboost's hand-written loop vs TRL's ``SFTTrainer``, on the same work, in one run.

Issue 6 asks to compare :func:`llmboost.llm.finetune` (first-fit-decreasing packing, loss on answer tokens only,
LM head applied only where a loss is taken) with TRL's ``SFTTrainer`` (``packing=True``, ``packing_strategy="bfd"``,
which turns on padding-free batches, and ``completion_only_loss=True``), and to use TRL where it is as fast.

Same work on both sides: the same MovieLens-100K pairwise + yes/no examples, tokenized once by llmboost
(:func:`~llmboost.llm.finetune.tokenize_examples`; TRL gets them pre-tokenized as ``input_ids`` +
``completion_mask``, so both train on identical tokens and labels), the built-in SmolLM2-135M-Instruct in
float32, LoRA r=16 / alpha 32 / dropout 0 on all linear layers, AdamW lr 2e-4 with linear decay, about 2048
tokens per step, one epoch, one thread, the same seed. Reported: training tokens per second of process CPU time
(model load and setup included on both sides: fair when the machine is shared, as it was here), tokens per
wall second of training (TRL's ``train_runtime``), and the loss on held-out examples after training, computed by
the same function for both adapters. ::

    OMP_NUM_THREADS=1 flock /work/wt/bench.lock .venv/bin/python benchmarks/bench_finetune_trl.py \\
        --out benchmarks/results/finetune-trl.json

Needs ``trl`` (``pip install trl``, in the ``bench`` extra).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import importlib.util
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_llm_scoring", ROOT / "benchmarks" / "bench_llm_scoring.py")
assert _spec is not None and _spec.loader is not None
bench_llm_scoring = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_llm_scoring)


def held_out_loss(model: Any, tokenized: list[Any], pad_id: int) -> float:
    """Mean answer-token cross-entropy of ``model`` (a PEFT or merged model) on pre-tokenized examples."""
    from llmboost.llm.finetune import make_batches, packed_loss

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = inner.get_decoder()
    lm_head = inner.get_output_embeddings()
    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for batch in make_batches(tokenized, 512, 2048, pad_id):
            loss, n = packed_loss(backbone, lm_head, batch, torch.device("cpu"))
            total += float(loss) * n
            count += n
    return total / max(count, 1)


def run_llmboost(
    setting: str, examples: list[Any], eval_tok: list[Any], pad_id: int, seed: int, pack_length: int
) -> dict[str, Any]:
    from llmboost.llm import HFModel, finetune, read_training_log

    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        out = finetune(
            setting,
            examples,
            tmp,
            r=16,
            epochs=1,
            batch_tokens=2048,
            pack_length=pack_length,
            precision="fp32",
            seed=seed,
            log_every=0,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        log = read_training_log(out)
        model = HFModel(setting, adapter=str(out), precision="fp32")
        loss = held_out_loss(model.model, eval_tok, pad_id)
    return {
        "system": "llmboost",
        "pack_length": pack_length,
        "tokens": log["train_tokens"],
        "train_seconds": log["train_seconds"],
        "tokens_per_s": log["tokens_per_s"],
        "steps": log["steps"],
        "wall_seconds_incl_load": wall,
        "cpu_seconds_incl_load": cpu,
        "tokens_per_cpu_s": log["train_tokens"] / cpu,
        "train_loss_first": log["losses"][0],
        "train_loss_last": log["losses"][-1],
        "held_out_loss": loss,
    }


def run_trl(folder: str, tokenized: list[Any], eval_tok: list[Any], pad_id: int, seed: int) -> dict[str, Any]:
    import datasets
    import peft
    import transformers
    import trl

    t0, c0 = time.perf_counter(), time.process_time()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    # llmboost's labels hold token k's own id where token k is an answer token (HF convention, shifted by the
    # model), so TRL's completion_mask is simply "label is set"
    rows = [{"input_ids": t.ids, "completion_mask": [int(lab != -100) for lab in t.labels]} for t in tokenized]
    data = datasets.Dataset.from_list(rows)
    lora = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = trl.SFTConfig(
            output_dir=tmp,
            per_device_train_batch_size=1,
            max_length=2048,
            packing=True,
            packing_strategy="bfd",
            completion_only_loss=True,
            num_train_epochs=1,
            learning_rate=2e-4,
            lr_scheduler_type="linear",
            warmup_steps=0.05,
            max_grad_norm=1.0,
            seed=seed,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            bf16=False,
            fp16=False,
        )
        trainer = trl.SFTTrainer(
            model=model, args=cfg, train_dataset=data, peft_config=lora, processing_class=tokenizer
        )
        out = trainer.train()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        loss = held_out_loss(trainer.model, eval_tok, pad_id)
    tokens = sum(len(t.ids) for t in tokenized)
    return {
        "system": "trl",
        "trl_version": trl.__version__,
        "tokens": tokens,
        "train_seconds": out.metrics["train_runtime"],
        "tokens_per_s": tokens / out.metrics["train_runtime"],
        "steps": trainer.state.global_step,
        "wall_seconds_incl_load": wall,
        "cpu_seconds_incl_load": cpu,
        "tokens_per_cpu_s": tokens / cpu,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "held_out_loss": loss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=bench_llm_scoring.DATA)
    ap.add_argument("--train-users", type=int, default=2)
    ap.add_argument("--eval-users", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pack-length",
        type=int,
        nargs="+",
        default=[2048, 512],
        help="llmboost row lengths to run (2048 = the same batches as TRL's bfd packing)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune-trl.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from llmboost.llm import DEFAULT_MODEL, build_examples
    from llmboost.llm.finetune import tokenize_examples
    from llmboost.llm.models import dequantize_gguf, resolve_model

    histories, popular = bench_llm_scoring.load_movielens(args.data, 20)
    users = sorted(histories)
    train_users = users[: args.train_users]
    eval_users = users[-args.eval_users :]
    kw: dict[str, Any] = {"tasks": ("pairwise", "yes_no"), "min_history": 15, **bench_llm_scoring.FIELDS}
    examples = build_examples({u: histories[u] for u in train_users}, popular[:500], seed=args.seed, **kw)
    eval_examples = build_examples({u: histories[u] for u in eval_users}, popular[:500], seed=args.seed + 1, **kw)
    folder = str(dequantize_gguf(resolve_model(DEFAULT_MODEL).location, None))
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    tokenized = tokenize_examples(tokenizer, examples)
    eval_tok = tokenize_examples(tokenizer, eval_examples)
    print(
        f"{len(examples)} train examples ({sum(len(t.ids) for t in tokenized)} tokens), {len(eval_examples)} held-out",
        flush=True,
    )

    from llmboost.llm import HFModel

    base = held_out_loss(HFModel(DEFAULT_MODEL, precision="fp32").model, eval_tok, pad_id)
    print(f"held-out loss before training: {base:.4f}", flush=True)
    rows = [run_trl(folder, tokenized, eval_tok, pad_id, args.seed)]
    print(rows[-1], flush=True)
    for pack_length in args.pack_length:
        rows.append(run_llmboost(DEFAULT_MODEL, examples, eval_tok, pad_id, args.seed, pack_length))
        print(rows[-1], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    result = {
        "command": "benchmarks/bench_finetune_trl.py",
        "commit": commit.strip(),
        "threads": 1,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "held_out_loss_before": base,
        "rows": rows,
        "llmboost_over_trl_speed_cpu": rows[1]["tokens_per_cpu_s"] / rows[0]["tokens_per_cpu_s"],
        "llmboost_over_trl_speed_wall": rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"llmboost (rows of {args.pack_length[0]}) / TRL, tokens per CPU second: "
        f"{result['llmboost_over_trl_speed_cpu']:.2f}x",
        flush=True,
    )


if __name__ == "__main__":
    main()
