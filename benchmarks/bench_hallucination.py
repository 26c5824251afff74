"""Feature-extraction overhead of trace_generation over plain greedy generation (same model, batch, prompts),
feature memory vs generated length, and detector-ensemble inference time per answer.

Usage: PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_hallucination.py [--n 16] [--tokens 12]
Writes benchmarks/results/hallucination.json."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from llmboost.llm.hf import HFModel
    from llmboost.llm.tracing import trace_generation
    from llmboost.methods.hallucination.data import few_shot_prompt, geonames_qa, sample_items
    from llmboost.methods.hallucination.ensemble import DetectorEnsemble
    from llmboost.methods.hallucination.features import Features

    model = HFModel("smollm2-135m-instruct", batch_size=args.n)
    items = sample_items([i for i in geonames_qa(["capital"])], args.n + 3, 0)
    prompts = [few_shot_prompt(i, items[:3]) for i in items[3:]]
    eos = model.model.generation_config.eos_token_id
    model.model.generation_config.eos_token_id = None  # same number of steps in both runs
    plain, traced = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        model.generate(prompts, max_new_tokens=args.tokens)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        tr = trace_generation(model, prompts, max_new_tokens=args.tokens)
        traced.append(time.perf_counter() - t)
    short = trace_generation(model, prompts[:2], max_new_tokens=4)
    long = trace_generation(model, prompts[:2], max_new_tokens=4 * args.tokens)
    model.model.generation_config.eos_token_id = eos
    feats = Features.from_trace(tr)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, len(feats))
    y[:2] = [0, 1]
    ens = DetectorEnsemble(f1_threshold=0.0).fit(feats, y, feats, y)
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        ens.predict_proba(feats[:1])
    per_answer_us = (time.perf_counter() - t) / reps * 1e6
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "command": "PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_hallucination.py "
        f"--n {args.n} --tokens {args.tokens}",
        "commit": commit,
        "threads": 1,
        "prompts": args.n,
        "new_tokens": args.tokens,
        "plain_generate_s": min(plain),
        "trace_generation_s": min(traced),
        "overhead": min(traced) / min(plain) - 1,
        "feature_bytes_per_answer_at_4_tokens": short.feature_bytes() // 2,
        f"feature_bytes_per_answer_at_{4 * args.tokens}_tokens": long.feature_bytes() // 2,
        "detectors_in_ensemble": len(ens.kept_),
        "ensemble_inference_us_per_answer": per_answer_us,
    }
    out = Path("benchmarks/results/hallucination.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
