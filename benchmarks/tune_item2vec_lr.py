"""Choose the compiled item2vec trainer's starting learning rate on Amazon Beauty's validation split (never test).

Prints one JSON line per (method, lr, epochs): validation Recall@20 served from the neighbours, fit seconds and
the last epoch's mean loss. The runs behind ``DEFAULT_LR``: ``benchmarks/results/i2v-beauty-valid-lr.jsonl``
(the committed trainer) and ``i2v-beauty-valid-lr-1cffb4b.jsonl`` (a wider grid, and the torch trainer, with the
binary-search negative sampler of that commit).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/tune_item2vec_lr.py --lrs 0.1 0.3 --epochs 3 5 10 20``
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from llmboost.data.fetch import load_dataset
from llmboost.evaluation import evaluate
from llmboost.models import Item2Vec
from llmboost.splitting import leave_one_out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/datasets/amazon-beauty")
    ap.add_argument("--method", default="numba", choices=["numba", "torch"])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.8])
    ap.add_argument("--epochs", type=int, nargs="+", default=[3, 5, 10, 20])
    args = ap.parse_args()
    torch.set_num_threads(1)
    split = leave_one_out(load_dataset(args.data, cache=False))
    for epochs in args.epochs:
        for lr in args.lrs:
            t, c = time.perf_counter(), time.process_time()
            model = Item2Vec(
                k=50, dim=32, window=5, negatives=5, epochs=epochs, lr=lr, method=args.method, progress=False
            )
            try:
                model.fit(split.train)
            except FloatingPointError:
                print(json.dumps({"method": args.method, "lr": lr, "epochs": epochs, "diverged": True}), flush=True)
                continue
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            recall = evaluate(model, split, "valid", ks=(20,)).summary()["Recall@20"]
            row = {"method": args.method, "lr": lr, "epochs": epochs, "valid_recall@20": recall}
            print(json.dumps({**row, "wall_s": wall, "cpu_s": cpu, "loss": model.loss_history_[-1]}), flush=True)


if __name__ == "__main__":
    main()
