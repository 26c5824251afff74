"""Smoke run of CEMG's LLM stage with the packaged SmolLM2-135M-Instruct on MovieLens-100K (CPU-sized).

Reads CEMG's seed-0 ID table from a finished ``llmboost cemg run`` (``runs/cemg-cpu-reduced``), fine-tunes
on ``--examples`` (history, next item) examples (``full`` fine-tuning, or ``lora``), generates for ``--users``
test users (beam ``--beam``) and writes ``benchmarks/results/cemg-llm-smoke-movielens-100k[-lora].json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llmboost.data import load_dataset
from llmboost.methods.cemg.experiment import evaluate_lists
from llmboost.methods.cemg.llm_generator import LLMGenerativeRecommender
from llmboost.methods.cemg.semantic_ids import SemanticIDs
from llmboost.splitting import leave_one_out, make_slices

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("method", nargs="?", default="full", choices=["full", "lora"])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--beam", type=int, default=10)
    args = parser.parse_args()
    method = args.method
    split = leave_one_out(load_dataset(str(ROOT.parent / "shared" / "datasets" / "movielens-100k")))
    ids = SemanticIDs.load(ROOT / "runs" / "cemg-cpu-reduced" / "movielens-100k" / "seed-0" / "cemg")
    started = time.time()
    model = LLMGenerativeRecommender(
        ids.codes,
        ids.sizes,
        model="smollm2-135m-instruct",
        max_history=5,
        examples=args.examples,
        epochs=1,
        beam=args.beam,
        method=method,
        progress=False,
        output_dir=tempfile.mkdtemp(prefix="cemg-llm-smoke-"),
    )
    model.fit(split.train)
    fit = time.time() - started
    history = split.history("test")
    users = split.test.active_users()[: args.users]
    started = time.time()
    items, _ = model.recommend(users, k=10, history=history)
    generate = time.time() - started
    targets = split.test.select(np.isin(split.test.users, users))
    summary = evaluate_lists(model, history, targets, (5, 10), make_slices(split.train)).summary()
    out = {
        "method": method,
        "examples": args.examples,
        "beam": args.beam,
        "training": model.training_log_,
        "fit_seconds": fit,
        "loss": model.history_,
        "users": len(users),
        "generate_seconds": generate,
        "valid_items_share": float((items >= 0).mean()),
        "Recall@10": summary["Recall@10"],
        "NDCG@10": summary["NDCG@10"],
    }
    print(json.dumps(out, indent=1))
    suffix = "" if method == "full" else f"-{method}"
    path = ROOT / "benchmarks" / "results" / f"cemg-llm-smoke-movielens-100k{suffix}.json"
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
