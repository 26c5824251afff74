"""Time to equal validation accuracy: llmboost vs RecBole 1.2.1 (SASRec, BPR) and implicit (BPR).

One protocol for every system: after each training epoch, validation NDCG@10 is computed by llmboost's
own evaluator (``evaluate_targets``: full ranking, the user's training items masked, pessimistic ties)
on the model as it is at that moment; RecBole's and implicit's models are wrapped so that evaluator
scores them. Training seconds exclude that evaluation; each epoch records wall seconds and the
process's CPU seconds (``time.process_time``: every thread of this process, not other processes), the
fair clock on a shared machine. Each epoch appends one JSON line to ``--out``,
so a run cut by ``--deadline`` keeps every epoch it finished. RecBole runs in its own venv
(``make recbole-venv``); llmboost must be importable there (``PYTHONPATH=src``).

    PYTHONPATH=src nice -n 5 python benchmarks/bench_curves.py --system llmboost --model sasrec \\
        --out benchmarks/results/curves.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "movielens-100k"
# Architecture of llmboost's SASRec (feed-forward width = hidden, dropout 0.2 since 2026-12-01 05:30 UTC; the
# RecBole "same" run of 2026-12-01 used 0.3, the default of the llmboost curves it is compared with).
SAME_SASREC = {
    "hidden_size": 64,
    "inner_size": 64,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_dropout_prob": 0.2,
    "attn_dropout_prob": 0.2,
    "MAX_ITEM_LIST_LENGTH": 50,
}


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def _split():
    from llmboost.data import load_dataset
    from llmboost.splitting import leave_one_out

    return leave_one_out(load_dataset(str(DATA)), keep_unseen_items=True)


def _valid_ndcg(scorer, split) -> float:
    from llmboost.evaluation.evaluate import evaluate_targets

    return evaluate_targets(scorer, split.train, split.valid, ks=(10,), coverage=False).summary()["NDCG@10"]


class _Emit:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.train_seconds, self.cpu_seconds, self.epoch = args, 0.0, 0.0, 0
        self.last_epoch_wall, self.mark = 0.0, time.time()
        self.best, self.stale = -1.0, 0
        self.base = {
            "system": args.system,
            "model": args.model,
            "setting": args.setting,
            "lr": args.lr,
            "dropout": args.dropout,
            "seed": args.seed,
            "threads": args.threads,
            "commit": _commit(),
            "command": " ".join(sys.argv),
        }

    def __call__(self, seconds: float, ndcg: float, eval_seconds: float, cpu_seconds: float) -> bool:
        """Record one epoch (wall and process-CPU training seconds); True when the run should stop (flat
        curve, or the next epoch would not end before the deadline, judged by this epoch's wall time)."""
        self.train_seconds += seconds
        self.cpu_seconds += cpu_seconds
        now = time.time()
        self.last_epoch_wall, self.mark = now - self.mark, now
        self.epoch += 1
        if ndcg > self.best + 1e-4:
            self.best, self.stale = ndcg, 0
        else:
            self.stale += 1
        row = self.base | {
            "epoch": self.epoch,
            "train_seconds": self.train_seconds,
            "train_cpu_seconds": self.cpu_seconds,
            "valid_ndcg@10": ndcg,
            "eval_seconds": eval_seconds,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "utc": time.strftime("%H:%M:%S", time.gmtime()),
        }
        with open(self.args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        late = self.args.deadline and now + self.last_epoch_wall > self.args.deadline
        return bool(late) or self.stale >= self.args.patience or self.epoch >= self.args.epochs


def run_llmboost(args: argparse.Namespace, split, emit: _Emit) -> None:
    from llmboost.models import build

    evaluation = importlib.import_module("llmboost.evaluation.evaluate")  # the module, not the function

    params = {"train_on": args.setting} if args.model == "sasrec" else {}
    if args.lr is not None:
        params["lr"] = args.lr
    if args.dropout is not None:
        params["dropout"] = args.dropout
    model = build(args.model, epochs=args.epochs, patience=args.patience, seed=args.seed, progress=False, **params)
    done = {"epochs": 0, "stop": False}

    def flush() -> None:  # write every epoch `fit` has recorded so far
        for h in getattr(model, "history_", [])[done["epochs"] :]:
            done["stop"] = (
                emit(h["train_seconds"], h["valid_NDCG@10"], h["eval_seconds"], h["train_cpu_seconds"]) or done["stop"]
            )
            done["epochs"] += 1

    original = evaluation.evaluate_targets

    def evaluate_targets(*a, **k):  # fit's per-epoch validation: emit the epochs before it, then evaluate
        flush()
        if done["stop"]:
            raise KeyboardInterrupt  # fit catches it and keeps its best state
        return original(*a, **k)

    evaluation.evaluate_targets = evaluate_targets
    try:
        model.fit(split.train, split.valid)
    finally:
        evaluation.evaluate_targets = original
    flush()


def run_implicit(args: argparse.Namespace, split, emit: _Emit) -> None:
    import scipy.sparse as sp
    import torch
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    train = split.train
    matrix = sp.csr_matrix((np.ones(len(train)), (train.users, train.items)), shape=(train.n_users, train.n_items))
    model = BayesianPersonalizedRanking(
        factors=args.factors, num_threads=args.threads, random_state=args.seed, iterations=args.epochs
    )

    class Scorer:
        ranks_only = False

        def score(self, users, history=None):
            return torch.from_numpy(model.user_factors[users] @ model.item_factors.T)

    state = {"last": time.perf_counter(), "cpu": time.process_time(), "stop": False}

    def callback(epoch, elapsed, *rest):  # called after each epoch; the evaluation is not timed
        seconds, cpu = time.perf_counter() - state["last"], time.process_time() - state["cpu"]
        started = time.perf_counter()
        ndcg = _valid_ndcg(Scorer(), split)
        state["stop"] = state["stop"] or emit(seconds, ndcg, time.perf_counter() - started, cpu)
        state["last"], state["cpu"] = time.perf_counter(), time.process_time()
        if state["stop"]:
            raise StopIteration

    with contextlib.suppress(StopIteration):
        model.fit(matrix, show_progress=False, callback=callback)


def run_recbole(args: argparse.Namespace, split, emit: _Emit) -> None:
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.utils import get_model, get_trainer, init_seed

    folder = Path(tempfile.mkdtemp(prefix="bench-recbole-"))
    (folder / "bench").mkdir()
    # train + valid + test events in user time order; timestamps = rank, so RecBole's split is llmboost's
    events = np.concatenate([s.frame[["user", "item"]].to_numpy() for s in (split.train, split.valid, split.test)])
    stage = np.concatenate([np.full(len(s), k) for k, s in enumerate((split.train, split.valid, split.test))])
    order = np.lexsort((stage, events[:, 0]))
    with open(folder / "bench" / "bench.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        users = events[order, 0]
        starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
        rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        for (u, i), t in zip(events[order], rank, strict=True):
            f.write(f"{u}\t{i}\t{t}\n")
    os.chdir(folder)
    model_name = "SASRec" if args.model == "sasrec" else "BPR"
    settings = {
        "data_path": str(folder),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "epochs": args.epochs,
        "use_gpu": False,
        "show_progress": False,
        "checkpoint_dir": str(folder / "saved"),
        "seed": args.seed,
    }
    if args.model == "sasrec":
        settings |= {"train_neg_sample_args": None, "loss_type": "CE"}
        if args.setting == "same":
            settings |= SAME_SASREC
    else:
        settings |= {"embedding_size": args.factors}
    torch.set_num_threads(args.threads)
    config = Config(model=model_name, dataset="bench", config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    item_of = torch.tensor([dataset.field2token_id["item_id"][str(i)] for i in range(split.train.n_items)])
    user_of = np.array([dataset.field2token_id["user_id"].get(str(u), 0) for u in range(split.train.n_users)])
    max_len = config["MAX_ITEM_LIST_LENGTH"] if args.model == "sasrec" else 0

    class Scorer:
        ranks_only = False

        @torch.no_grad()
        def score(self, users, history=None):
            model.eval()
            if args.model == "sasrec":
                seq = torch.zeros(len(users), max_len, dtype=torch.long)
                lengths = torch.zeros(len(users), dtype=torch.long)
                for row, u in enumerate(users):
                    items = history.items[history.user_ptr[u] : history.user_ptr[u + 1]][-max_len:]
                    seq[row, : len(items)] = item_of[torch.from_numpy(items.astype(np.int64))]
                    lengths[row] = len(items)
                inter = Interaction({model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: lengths})
            else:
                inter = Interaction({model.USER_ID: torch.from_numpy(user_of[users])})
            scores = model.full_sort_predict(inter).view(len(users), -1)
            return scores[:, item_of]

    for epoch in range(args.epochs):
        started, cpu = time.perf_counter(), time.process_time()
        model.train()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        started = time.perf_counter()
        ndcg = _valid_ndcg(Scorer(), split)
        if emit(seconds, ndcg, time.perf_counter() - started, cpu):
            break


def _deadline(text: str) -> float:
    """'HH:MM' (UTC, today) or a Unix time; 0 = none."""
    if ":" not in text:
        return float(text)
    hours, minutes = (int(x) for x in text.split(":"))
    today = time.gmtime()
    return float(time.mktime((today.tm_year, today.tm_mon, today.tm_mday, hours, minutes, 0, 0, 0, 0)) - time.timezone)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=["llmboost", "recbole", "implicit"], required=True)
    parser.add_argument("--model", choices=["sasrec", "bprmf"], required=True)
    parser.add_argument(
        "--setting",
        default="default",
        help="llmboost SASRec: last_window | all_windows; RecBole SASRec: default | same",
    )
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--patience", type=int, default=10, help="Stop after this many epochs without gain.")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="llmboost only: learning rate (default: the model's)")
    parser.add_argument("--dropout", type=float, default=None, help="llmboost SASRec only (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--deadline",
        default="0",
        help="Unix time, or UTC HH:MM today, by which the run ends: no epoch starts that "
        "would end later (judged by the previous epoch's wall time).",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "curves.jsonl")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.deadline = _deadline(args.deadline)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    split = _split()
    emit = _Emit(args)
    {"llmboost": run_llmboost, "recbole": run_recbole, "implicit": run_implicit}[args.system](args, split, emit)


if __name__ == "__main__":
    main()
