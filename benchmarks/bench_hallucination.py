"""Feature-extraction overhead of trace_generation over plain greedy generation (same model, batch, prompts),
feature memory vs generated length, and detector-ensemble inference time per answer.

Usage: PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_hallucination.py [--n 16] [--tokens 12]
       PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_hallucination.py --inference-only [--features X.npz]
Writes benchmarks/results/hallucination.json (``--inference-only`` updates only the ``inference`` entry)."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def _time(fn: Callable[[], object], reps: int) -> dict[str, float]:
    """Wall and CPU (this process) microseconds per call, best of 3 rounds of ``reps`` calls."""
    fn()
    walls, cpus = [], []
    for _ in range(3):
        w, c = time.perf_counter(), time.process_time()
        for _ in range(reps):
            fn()
        walls.append((time.perf_counter() - w) / reps * 1e6)
        cpus.append((time.process_time() - c) / reps * 1e6)
    return {"wall_us": min(walls), "cpu_us": min(cpus)}


def inference(features_path: str | None, batch: int) -> dict[str, object]:
    """Detector-ensemble inference per answer: the stacked ensemble (one batched matrix product per feature type)
    against, in the same run, scikit-learn's pipelines probe by probe and the folded probes one by one."""
    from llmboost.methods.hallucination.ensemble import DetectorEnsemble
    from llmboost.methods.hallucination.features import Features

    if features_path:
        feats = Features.load(features_path)
        source = f"traced SmolLM2-135M features ({features_path})"
    else:  # SmolLM2-135M shapes: 30 layers x 576, 30 x 9 heads x 64
        rng = np.random.default_rng(0)
        n = 96
        feats = Features(
            rng.normal(size=(n, 30, 576)).astype(np.float32),
            rng.normal(size=(n, 30, 9, 64)).astype(np.float32),
            np.zeros(n),
            np.full(n, 4),
        )
        source = "synthetic features of SmolLM2-135M's shapes"
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, len(feats))
    y[:2] = [0, 1]
    ens = DetectorEnsemble(f1_threshold=0.0).fit(feats, y, feats, y)  # keep every detector: the worst case
    one, many = feats[:1], feats[:batch]

    def sklearn_loop(f: Features) -> np.ndarray:
        return np.mean(
            [ens.probes_[k].pipeline_.predict_proba(f.block(k).astype(np.float64))[:, 1] for k in ens.kept_], axis=0
        )

    def folded_loop(f: Features) -> np.ndarray:
        return np.mean([ens.probes_[k].predict_proba(f.block(k)) for k in ens.kept_], axis=0)

    diff = float(np.abs(ens.predict_proba(many) - sklearn_loop(many)).max())
    single = _time(lambda: ens.predict_proba(one), 2000)
    batched = {k: v / len(many) for k, v in _time(lambda: ens.predict_proba(many), 50).items()}
    ref_single = _time(lambda: sklearn_loop(one), 3)
    ref_folded = _time(lambda: folded_loop(one), 20)
    return {
        "features": source,
        "detectors_in_ensemble": len(ens.kept_),
        "feature_values_per_answer": int(feats.concat().shape[1]),
        "stacked_single_answer": single,
        f"stacked_per_answer_in_batch_of_{len(many)}": batched,
        "reference_sklearn_pipelines_single_answer": ref_single,
        "reference_folded_probe_loop_single_answer": ref_folded,
        "speedup_vs_sklearn_single_wall": ref_single["wall_us"] / single["wall_us"],
        "max_abs_diff_vs_sklearn": diff,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--inference-only", action="store_true", help="only time detector inference")
    ap.add_argument("--features", default=None, help="a Features .npz (e.g. a stored chunk of a run)")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path("benchmarks/results/hallucination.json")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if args.inference_only:
        previous = json.loads(out.read_text()) if out.exists() else {}
        res = inference(args.features, args.batch)
        extra = f" --features {args.features}" if args.features else ""
        res["command"] = (
            "PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_hallucination.py --inference-only"
            f"{extra} --batch {args.batch}"
        )
        res["commit"] = commit
        res["threads"] = 1
        previous["inference"] = res
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(previous, indent=2))
        print(json.dumps(res, indent=2))
        return
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
    if out.exists() and "inference" in (previous := json.loads(out.read_text())):
        result["inference"] = previous["inference"]  # kept from the last --inference-only run
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
