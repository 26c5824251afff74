"""S-LLMR training overhead: seconds per epoch of BPR-MF and SASRec with and without the regularizer.

MovieLens-100K, leave-one-out; the regularizer gets the pairs of the ``cpu`` preset's shape (every user with
7 candidates -> 21 pairs, soft gate weights). Goal (issue 7): at most 1.5x the backbone's time per epoch.
Writes ``benchmarks/results/sllmr.json``.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_sllmr.py [--epochs 8] [--threads 1] [--backbones sasrec]
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

from llmboost.data import load_dataset
from llmboost.methods.sllmr.loss import SelectiveRegularizer
from llmboost.models import build
from llmboost.splitting import leave_one_out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/datasets/movielens-100k")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs-per-user", type=int, default=21)
    parser.add_argument("--backbones", default="bprmf,sasrec", help="comma-separated: bprmf,sasrec")
    parser.add_argument("--out", default="benchmarks/results/sllmr.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = leave_one_out(load_dataset(args.data))
    rng = np.random.default_rng(0)
    n = split.n_users * args.pairs_per_user
    users = np.repeat(np.arange(split.n_users), args.pairs_per_user)
    i, j = rng.integers(0, split.n_items, n), rng.integers(0, split.n_items, n)
    rows = []
    backbones = [b for b in args.backbones.split(",") if b]
    for name in backbones:
        for regularized in (False, True, False, True):  # interleaved: machine load hits both alike
            model = build(name, epochs=args.epochs, progress=False, seed=0)
            if regularized:
                model.add_loss_term(SelectiveRegularizer(split.n_users, users, i, j, rng.random(n), rng.random(n)))
            started, cpu_started = time.perf_counter(), time.process_time()
            model.fit(split.train)
            cpu_seconds = time.process_time() - cpu_started
            per_epoch = [h["train_seconds"] for h in model.history_]
            rows.append(
                {
                    "backbone": name,
                    "regularized": regularized,
                    "median_seconds_per_epoch": float(np.median(per_epoch[1:] or per_epoch)),
                    "seconds_per_epoch": per_epoch,
                    "wall_seconds": time.perf_counter() - started,
                    # CPU time of the whole fit / epochs: robust to other processes on a shared machine
                    "cpu_seconds_per_epoch": cpu_seconds / max(1, len(per_epoch)),
                }
            )
            print(json.dumps(rows[-1]))
    summary = {}
    for name in backbones:
        base = np.median(
            [r["median_seconds_per_epoch"] for r in rows if r["backbone"] == name and not r["regularized"]]
        )
        reg = np.median([r["median_seconds_per_epoch"] for r in rows if r["backbone"] == name and r["regularized"]])
        cpu = {
            reg_: float(
                np.median(
                    [r["cpu_seconds_per_epoch"] for r in rows if r["backbone"] == name and r["regularized"] == reg_]
                )
            )
            for reg_ in (False, True)
        }
        summary[name] = {
            "backbone_s_per_epoch": base,
            "regularized_s_per_epoch": reg,
            "ratio": reg / base,
            "backbone_cpu_s_per_epoch": cpu[False],
            "regularized_cpu_s_per_epoch": cpu[True],
            "cpu_ratio": cpu[True] / cpu[False],
        }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    payload = {
        "command": "PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_sllmr.py "
        f"--epochs {args.epochs} --threads {args.threads} --backbones {args.backbones} --out {args.out}",
        "commit": commit,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "pairs": int(n),
        "summary": summary,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
