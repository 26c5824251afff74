"""Choose BPR-MF's and SASRec's default hyperparameters on the VALIDATION split only, then report test once.

For each model, every point of a small grid is trained on MovieLens-100K's leave-one-out training
split with early stopping on validation NDCG@10 (one seed per point); the point with the highest
validation NDCG@10 is chosen, and only that point is trained with seeds 0, 1, 2 and evaluated on the
test split (mean +- std). Results go to ``benchmarks/results/tuning-<model>.json``, written after every
run, and finished runs are skipped on rerun (the script is resumable)::

    nice -n 10 python benchmarks/tune_backbones.py --model bprmf
    nice -n 10 python benchmarks/tune_backbones.py --model sasrec

``--shard K/N`` runs every N-th grid point (and test seed) so N processes share the work; they merge
their results into the one JSON file under a file lock. Test runs start only once every grid point is done.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from llmboost.data import load_dataset
from llmboost.evaluation import aggregate, evaluate
from llmboost.models import build
from llmboost.splitting import leave_one_out

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "movielens-100k"
GRIDS: dict[str, dict[str, list]] = {
    "bprmf": {"lr": [1e-3, 5e-3, 1e-2], "reg": [0.0, 1e-5, 1e-4], "init_std": [0.01, 0.1]},
    "sasrec": {"lr": [1e-3, 2e-3], "dropout": [0.2, 0.5]},
}
# what fits on 2 shared cores in about 20 minutes (--grid small): BPR without the slow lr 1e-3,
# SASRec's current default against a higher dropout, with a capped epoch budget (--epochs/--patience)
SMALL_GRIDS: dict[str, dict[str, list]] = {
    "bprmf": {"lr": [5e-3, 1e-2], "reg": [0.0, 1e-5, 1e-4], "init_std": [0.01, 0.1]},
    "sasrec": {"lr": [1e-3], "dropout": [0.3, 0.5]},
}
# the SASRec grid of 2026-12-01 (--grid sasrec8): lr x dropout x hidden, run with a capped epoch budget
SASREC8: dict[str, list] = {"lr": [1e-3, 3e-3], "dropout": [0.2, 0.5], "hidden": [32, 64]}
TEST_SEEDS = (0, 1, 2)


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


@contextlib.contextmanager
def _merged(out: Path):
    """The results file, read under an exclusive lock and written back on exit (shards share it)."""
    with open(Path(tempfile.gettempdir()) / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(out.read_text()) if out.exists() else {}
        yield results
        out.write_text(json.dumps(results, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(GRIDS), required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", choices=["full", "small", "sasrec8"], default="full")
    parser.add_argument("--shard", default="0/1", help="K/N: this process runs grid points and seeds K, K+N, ...")
    parser.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: the model's)")
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience (default: the model's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = SASREC8 if args.grid == "sasrec8" else (GRIDS if args.grid == "full" else SMALL_GRIDS)[args.model]
    shard, n_shards = (int(x) for x in args.shard.split("/"))
    budget = {k: v for k, v in (("epochs", args.epochs), ("patience", args.patience)) if v is not None}
    out = args.out or ROOT / "benchmarks" / "results" / f"tuning-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    command = f"OMP_NUM_THREADS=1 nice -n {os.nice(0)} python benchmarks/tune_backbones.py " + " ".join(sys.argv[1:])
    with _merged(out) as results:
        results |= {
            "model": args.model,
            "dataset": "movielens-100k",
            "split": "leave_one_out",
            "grid": grid,
            "budget": budget,
            "selection": "max validation NDCG@10 (early-stopping epoch), seed 0",
            "threads": args.threads,
            "commit": commit.stdout.strip(),
            "command": command.replace(f" --shard {args.shard}", ""),
        }
        results.setdefault("valid", {})
    split = leave_one_out(load_dataset(str(DATA)))
    names = list(grid)
    points = [dict(zip(names, v, strict=True)) for v in itertools.product(*grid.values())]
    for index, params in enumerate(points):
        with _merged(out) as results:
            skip = _key(params) in results["valid"] or index % n_shards != shard
        if skip:
            continue
        started, cpu = time.perf_counter(), time.process_time()
        model = build(args.model, progress=False, seed=0, **budget, **params).fit(split.train, split.valid)
        record = {
            "params": params,
            "valid_NDCG@10": model.best_valid_ndcg_,
            "epochs": len(model.history_),
            "best_epoch": int(max(model.history_, key=lambda h: h["valid_NDCG@10"])["epoch"]) + 1,
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu,
        }
        with _merged(out) as results:
            results["valid"][_key(params)] = record
        print(params, record, flush=True)
    with _merged(out) as results:
        done = [r for r in results["valid"].values() if r["params"] in points]
    if len(done) < len(points):
        print(f"{len(points) - len(done)} grid points still running elsewhere; rerun for the test stage")
        return
    best = max(done, key=lambda r: r["valid_NDCG@10"])
    with _merged(out) as results:
        results["chosen"] = best["params"]
        results.setdefault("test", {})
        if results["test"].get("params") != best["params"]:
            results["test"] = {"params": best["params"], "per_seed": {}}
    for seed in TEST_SEEDS[shard::n_shards]:
        with _merged(out) as results:
            skip = str(seed) in results["test"]["per_seed"]
        if skip:
            continue
        model = build(args.model, progress=False, seed=seed, **budget, **best["params"]).fit(split.train, split.valid)
        summary = evaluate(model, split, "test", ks=(10, 20)).summary()
        with _merged(out) as results:
            results["test"]["per_seed"][str(seed)] = summary | {"valid_NDCG@10": model.best_valid_ndcg_}
        print("test", seed, summary, flush=True)
    with _merged(out) as results:
        if len(results["test"]["per_seed"]) == len(TEST_SEEDS):
            results["test"]["aggregate"] = aggregate(list(results["test"]["per_seed"].values()))


if __name__ == "__main__":
    main()
