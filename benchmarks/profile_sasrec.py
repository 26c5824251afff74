"""Where one llmboost SASRec epoch spends its CPU time, against this CPU's measured float32 matmul rate.

One training epoch (defaults, MovieLens-100K leave-one-out, 1 thread) and one validation pass are run
under ``torch.profiler`` with FLOP counting. Operators are grouped into matrix products (mm, addmm, bmm,
linear, attention's products), element-wise / normalisation / softmax work, embedding gathers and their
backward, the optimizer, and the rest; each group's share of the profiled self time is applied to the
epoch's process CPU seconds (``time.process_time``, so other processes on a shared machine do not
count). The matmul rate is measured here in CPU seconds on the shapes the epoch uses and on a large square
product; ``matmul FLOPs / rate`` is the epoch's matmul-bound time. Writes ``--out`` (JSON)::

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 python benchmarks/profile_sasrec.py \\
        --out benchmarks/results/profile-sasrec.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from llmboost.data import load_dataset
from llmboost.evaluation.evaluate import evaluate_targets
from llmboost.models import build
from llmboost.splitting import leave_one_out

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "movielens-100k"
MATMUL = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::matmul",
    "aten::linear",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_flash_attention_forward",
)
GATHER = (
    "aten::embedding",
    "aten::index",
    "aten::index_select",
    "aten::embedding_dense_backward",
    "aten::index_put_",
    "aten::_index_put_impl_",
    "aten::index_add_",
    "aten::embedding_backward",
)
OPTIMIZER = ("aten::_fused_adam_", "Optimizer.step", "Optimizer.zero_grad")


def _group(name: str) -> str:
    if name in MATMUL or "flash_attention" in name:
        return "matmul"
    if name in GATHER:
        return "gather"
    if any(name.startswith(o) for o in OPTIMIZER) or "adam" in name.lower():
        return "optimizer"
    if name.startswith("aten::"):
        return "element-wise"
    return "other"


def matmul_rate(shapes: list[tuple[int, int, int]], seconds: float = 2.0) -> dict[str, float]:
    """GFLOP/s in process CPU seconds for (m, k, n) float32 products."""
    rates = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        count, started = 0, time.process_time()
        while time.process_time() - started < seconds:
            torch.mm(a, b)
            count += 1
        rates[f"{m}x{k}@{k}x{n}"] = 2 * m * k * n * count / (time.process_time() - started) / 1e9
    return rates


def _breakdown(prof) -> tuple[dict[str, float], float, dict[str, float]]:
    groups: dict[str, float] = defaultdict(float)
    flops = 0.0
    top: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith(("ProfilerStep", "## ")):
            continue
        groups[_group(event.key)] += event.self_cpu_time_total
        flops += event.flops or 0
        top[event.key] = event.self_cpu_time_total
    total = sum(groups.values())
    shares = {k: v / total for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}
    top = {k: v / total for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:12]}
    return shares, flops, top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-on", default=None, help="SASRec train_on (default: the model's default)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "profile-sasrec.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = leave_one_out(load_dataset(str(DATA)), keep_unseen_items=True)
    params = {"train_on": args.train_on} if args.train_on else {}
    model = build("sasrec", epochs=1, progress=False, seed=0, **params).fit(split.train)  # warm-up epoch
    rng = np.random.default_rng(1)
    optimizer = model._optimizer(split.train)
    model.network_.train()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
        started = time.process_time()
        for raw in model._batches(split.train, rng):
            loss = model._loss(model._forward(raw))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        train_cpu = time.process_time() - started
    train_shares, train_flops, train_top = _breakdown(prof)
    model.network_.eval()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        started = time.process_time()
        evaluate_targets(model, split.train, split.valid, ks=(10,), coverage=False)
        eval_cpu = time.process_time() - started
    eval_shares, eval_flops, eval_top = _breakdown(prof)
    n_items, hidden = split.train.n_items, model.hidden
    rates = matmul_rate(
        [(128 * 50, hidden, n_items), (128 * 50, hidden, 3 * hidden), (128 * 50, n_items, hidden), (1024, 1024, 1024)]
    )
    best = max(rates.values())
    started = time.process_time()
    model.fit(split.train)  # the same epoch without the profiler, for its overhead
    plain_cpu = time.process_time() - started
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    result = {
        "model": "sasrec",
        "params": model.get_params() if hasattr(model, "get_params") else params,
        "train_on": model.train_on,
        "dataset": "movielens-100k",
        "threads": 1,
        "commit": commit.stdout.strip(),
        "cpu": "AMD EPYC (AVX2), 2 cores shared with other agents; times are process CPU seconds",
        "matmul_gflops": rates,
        "train_epoch": {
            "cpu_seconds_profiled": train_cpu,
            "cpu_seconds_fit_epoch_unprofiled": plain_cpu,
            "shares": train_shares,
            "cpu_seconds_by_group": {k: v * train_cpu for k, v in train_shares.items()},
            "matmul_gflop": train_flops / 1e9,
            "matmul_bound_seconds": train_flops / 1e9 / best,
            "achieved_gflops_over_epoch": train_flops / 1e9 / train_cpu,
            "top_ops": train_top,
        },
        "validation": {
            "cpu_seconds_profiled": eval_cpu,
            "shares": eval_shares,
            "matmul_gflop": eval_flops / 1e9,
            "matmul_bound_seconds": eval_flops / 1e9 / best,
            "top_ops": eval_top,
        },
        "command": "PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 python benchmarks/profile_sasrec.py "
        + (f"--train-on {args.train_on} " if args.train_on else "")
        + f"--out {args.out}",
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
