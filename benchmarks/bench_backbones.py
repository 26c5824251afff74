"""Backbone speed and accuracy: llmboost's SASRec and BPR-MF against RecBole 1.2.1's, side by side.

Both run on the same leave-one-out split (RecBole's ``LS: valid_and_test`` with time order on the same
events, and llmboost's ``leave_one_out(keep_unseen_items=True)``) with full-ranking evaluation. Each
measurement runs in its own subprocess so peak memory (max RSS) is its own.

RecBole needs numpy<2 and lives in its own environment (see docs/benchmarks.md for the command)::

    python benchmarks/bench_backbones.py --recbole-python .venv-recbole/bin/python \
        --datasets movielens-100k amazon-beauty --recbole-epochs 1 300 --llmboost-epochs 200

Prints, per dataset and model: seconds per training epoch, evaluation seconds, peak memory, test
Recall@10 / NDCG@10, and llmboost's speed-up over RecBole measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
SOURCES = {"movielens-100k": SHARED / "movielens-100k", "amazon-beauty": SHARED / "amazon-beauty"}
RECBOLE_MODELS = {"sasrec": "SASRec", "bprmf": "BPR"}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------- llmboost worker
def llmboost_worker(dataset_name: str, model_name: str, epochs: int, threads: int, seed: int = 0) -> dict:
    import torch

    from llmboost.data import load_dataset
    from llmboost.evaluation import evaluate
    from llmboost.models import build
    from llmboost.splitting import leave_one_out

    torch.set_num_threads(threads)
    split = leave_one_out(load_dataset(str(SOURCES[dataset_name])), keep_unseen_items=True)
    model = build(model_name, epochs=epochs, progress=False, seed=seed)
    started = time.perf_counter()
    model.fit(split.train, split.valid)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    summary = evaluate(model, split, "test", ks=(10,)).summary()
    history = model.history_
    return {
        "epochs": len(history),
        "seconds_per_epoch": sum(h["train_seconds"] for h in history) / len(history),
        "valid_eval_seconds": sum(h["eval_seconds"] for h in history) / len(history),
        "fit_seconds": fit_seconds,
        "test_eval_seconds": time.perf_counter() - started,
        "recall@10": summary["Recall@10"],
        "ndcg@10": summary["NDCG@10"],
        "peak_rss_mb": _peak_rss_mb(),
    }


# ---------------------------------------------------------------------------- RecBole worker
def export_atomic(dataset_name: str, folder: Path) -> None:
    """Write the dataset as RecBole atomic files; timestamps become each event's rank in its user's
    time order, so RecBole's time-ordered split is exactly llmboost's leave-one-out."""
    from llmboost.data import load_dataset

    dataset = load_dataset(str(SOURCES[dataset_name]))
    frame = dataset.interactions.frame
    order = frame.groupby("user").cumcount()
    out = folder / "bench"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, i, t in zip(frame["user"], frame["item"], order, strict=True):
            f.write(f"{u}\t{i}\t{t}\n")


def recbole_worker(data_path: str, model_name: str, epochs: int, threads: int, seed: int = 0) -> dict:
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole 1.2.1 predates weights_only
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(threads)
    os.chdir(data_path)  # RecBole writes log/, log_tensorboard/ and saved/ into the working directory
    config = Config(
        model=RECBOLE_MODELS[model_name],
        dataset="bench",
        config_dict={
            "data_path": data_path,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
            "metrics": ["Recall", "NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "epochs": epochs,
            "stopping_step": 10,
            "use_gpu": False,
            "show_progress": False,
            "checkpoint_dir": tempfile.mkdtemp(),
            "train_neg_sample_args": None if model_name == "sasrec" else {"distribution": "uniform", "sample_num": 1},
            "loss_type": "CE" if model_name == "sasrec" else "BPR",
            "seed": seed,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epoch_seconds: list[float] = []
    eval_seconds: list[float] = []

    def timed(method, sink):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            result = method(*args, **kwargs)
            sink.append(time.perf_counter() - started)
            return result

        return wrapper

    trainer._train_epoch = timed(trainer._train_epoch, epoch_seconds)
    trainer._valid_epoch = timed(trainer._valid_epoch, eval_seconds)
    started = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=True, show_progress=False, verbose=False)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    return {
        "epochs": len(epoch_seconds),
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "valid_eval_seconds": sum(eval_seconds) / max(1, len(eval_seconds)),
        "fit_seconds": fit_seconds,
        "test_eval_seconds": time.perf_counter() - started,
        "recall@10": float(result["recall@10"]),
        "ndcg@10": float(result["ndcg@10"]),
        "peak_rss_mb": _peak_rss_mb(),
    }


# ---------------------------------------------------------------------------- driver
def _run(python: str, *args: str) -> dict:
    cmd = [python, __file__, "--worker", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT / "src")})
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--models", nargs="+", default=["sasrec", "bprmf"], choices=list(RECBOLE_MODELS))
    parser.add_argument("--recbole-python", default=None, help="Python of an environment with recbole==1.2.1.")
    parser.add_argument(
        "--recbole-epochs",
        nargs=2,
        type=int,
        default=[1, 300],
        metavar=("SASREC", "BPRMF"),
        help="Max epochs RecBole trains SASRec and BPR (its SASRec takes minutes per epoch: timing only).",
    )
    parser.add_argument("--llmboost-epochs", type=int, default=200, help="Max epochs (early stopping on).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="Seeds for both systems (mean ± std).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "backbones.json")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "export":
            export_atomic(rest[0], Path(rest[1]))
            print("{}")
            return
        worker = llmboost_worker if kind == "llmboost" else recbole_worker
        seed = int(rest[4]) if len(rest) > 4 else 0
        print(json.dumps(worker(rest[0], rest[1], int(rest[2]), int(rest[3]), seed)))
        return
    results = []
    for dataset in args.datasets:
        folder = Path(tempfile.mkdtemp(prefix="bench-recbole-"))
        _run(sys.executable, "export", dataset, str(folder))
        for model in args.models:
            row: dict = {"dataset": dataset, "model": model, "seeds": args.seeds}
            runs = [
                _run(sys.executable, "llmboost", dataset, model, str(args.llmboost_epochs), str(args.threads), str(s))
                for s in args.seeds
            ]
            row["llmboost"] = _summarize(runs)
            if args.recbole_python:
                epochs = str(args.recbole_epochs[0 if model == "sasrec" else 1])
                runs = [
                    _run(args.recbole_python, "recbole", str(folder), model, epochs, str(args.threads), str(s))
                    for s in args.seeds
                ]
                row["recbole"] = _summarize(runs)
                row["speedup_per_epoch"] = row["recbole"]["seconds_per_epoch"] / row["llmboost"]["seconds_per_epoch"]
            results.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    header = f"{'dataset':<16}{'model':<8}{'system':<10}{'epochs':>7}{'s/epoch':>9}{'eval s':>8}{'peak MB':>9}"
    print(f"\n{header}{'Recall@10':>18}{'NDCG@10':>18}")
    for row in results:
        for system in ("llmboost", "recbole"):
            if system in row:
                r = row[system]
                print(
                    f"{row['dataset']:<16}{row['model']:<8}{system:<10}{r['epochs']:>7.0f}{r['seconds_per_epoch']:>9.2f}"
                    f"{r['test_eval_seconds']:>8.2f}{r['peak_rss_mb']:>9.0f}"
                    f"{r['recall@10']:>10.4f} ± {r['recall@10_std']:.4f}{r['ndcg@10']:>10.4f} ± {r['ndcg@10_std']:.4f}"
                )
        if "speedup_per_epoch" in row:
            print(f"{'':<24}speed-up per epoch (RecBole / llmboost): {row['speedup_per_epoch']:.1f}x")


def _summarize(runs: list[dict]) -> dict:
    """Means over seeds; accuracy also with its standard deviation; peak memory as the maximum."""
    import statistics

    out = {key: statistics.fmean(r[key] for r in runs) for key in runs[0]}
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    for key in ("recall@10", "ndcg@10"):
        out[f"{key}_std"] = statistics.stdev(r[key] for r in runs) if len(runs) > 1 else 0.0
    out["runs"] = runs
    return out


if __name__ == "__main__":
    main()
