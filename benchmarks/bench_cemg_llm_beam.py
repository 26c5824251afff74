"""CEMG's LLM generator: trie-constrained beam search with Transformers' ``generate`` (each prompt copied once
per beam and encoded ``beam`` times) against llmboost's shared-prefix beam search (``HFModel.beam_search``:
each history encoded once, its key/value cache repeated for the beams), on the same fine-tuned model, the
same test users and the same batches, rounds interleaved so both see the same load. Also reports how often
the two return the same top-10 list.

Needs a finished ``cemg_llm`` stage (its fine-tuned model in ``<stage>/llm`` and its ID table in ``<stage>``),
e.g. from ``llmboost cemg run cpu 'datasets=[../shared/datasets/movielens-100k]' 'variants=[cemg_llm]' ...``:

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_cemg_llm_beam.py \\
        runs/cemg/movielens-cpu/movielens-100k/seed-0/cemg_llm --users 32 --out benchmarks/results/cemg-llm-beam.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from llmboost.data import load_dataset
    from llmboost.methods.cemg.llm_generator import SEMANTIC_ID_NEXT, LLMGenerativeRecommender
    from llmboost.methods.cemg.semantic_ids import SemanticIDs
    from llmboost.splitting import leave_one_out

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", help="a cemg_llm stage folder (ID table + llm/)")
    parser.add_argument("--data", default="../shared/datasets/movielens-100k")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8, help="users per generation batch")
    parser.add_argument("--max-history", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/cemg-llm-beam.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stage = Path(args.stage)
    ids = SemanticIDs.load(stage)
    split = leave_one_out(load_dataset(args.data))
    model = LLMGenerativeRecommender(
        ids.codes, ids.sizes, max_history=args.max_history, beam=args.beam, generation_batch=args.batch
    ).load(stage / "llm")
    history = split.history("test")
    users = split.test.active_users()[: args.users]
    prompts = [SEMANTIC_ID_NEXT.prompt(model.llm_.tokenizer, **model._fields(history.history(u))) for u in users]
    levels = len(ids.sizes)
    search = dict(max_new_tokens=levels, logits_processor=model.processor_, eos_token_id=model.eos_id_)

    def transformers_beams(batch: list[str]) -> list[list[tuple[int, ...]]]:
        out = model.llm_.generate_ids(batch, num_beams=args.beam, num_return_sequences=args.beam, **search)
        return [[tuple(seq[:levels]) for seq in beams] for beams in out]

    def shared_prefix_beams(batch: list[str]) -> list[list[tuple[int, ...]]]:
        out = model.llm_.beam_search(batch, num_beams=args.beam, **search)
        return [[tuple(seq[:levels]) for seq, _ in beams] for beams in out]

    systems = {"transformers_generate": transformers_beams, "shared_prefix": shared_prefix_beams}
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    lists: dict[str, list[list[tuple[int, ...]]]] = {}
    for _ in range(args.rounds):
        for name, run in systems.items():
            started, result = time.perf_counter(), []
            for start in range(0, len(prompts), args.batch):
                result += run(prompts[start : start + args.batch])
            seconds[name].append(time.perf_counter() - started)
            lists[name] = result
    same_top10 = np.mean([a[:10] == b[:10] for a, b in zip(*lists.values(), strict=True)])
    same_set = np.mean([set(a[:10]) == set(b[:10]) for a, b in zip(*lists.values(), strict=True)])
    result = {
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": args.threads,
        "stage": str(stage),
        "users": len(users),
        "beam": args.beam,
        "batch": args.batch,
        "prompt_tokens_mean": float(np.mean([len(model.llm_.encode(p)) for p in prompts])),
        "rounds": args.rounds,
        **{f"{name}_s_per_user_min": min(s) / len(users) for name, s in seconds.items()},
        "same_top10_order": float(same_top10),
        "same_top10_set": float(same_set),
    }
    result["speedup"] = result["transformers_generate_s_per_user_min"] / result["shared_prefix_s_per_user_min"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
