"""Item-to-item neighbour building on Amazon Beauty (issue 8).

* Swing (llmboost, vectorized) against a straightforward pure-Python Swing (below) on the same data — the
  reference runs on a user subset when ``--reference-users`` is given and both are then timed on that subset;
* ItemCF (llmboost, cosine) against implicit's ``CosineRecommender`` (same K, one thread each);
* item2vec (llmboost, torch SGNS) against gensim's ``Word2Vec`` (skip-gram, negative sampling, same window,
  dimension, negatives and epochs): time, and neighbour quality as the leave-one-out Recall@20 of serving from
  each model's neighbours (the same aggregation for both).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_i2i.py --out benchmarks/results/i2i-beauty.json``
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from llmboost.data.fetch import load_dataset
from llmboost.evaluation import evaluate
from llmboost.models import Item2Vec, ItemCF, Swing
from llmboost.splitting import leave_one_out


def swing_reference(histories: list[list[int]], n_items: int, alpha: float, power: float, k: int) -> list[list]:
    """Pure-Python Swing: for each item, every pair of its users, every item they share."""
    sets = [set(h) for h in histories]
    users_of: list[list[int]] = [[] for _ in range(n_items)]
    for u, h in enumerate(sets):
        for i in h:
            users_of[i].append(u)
    weight = [len(h) ** -power if h else 0.0 for h in sets]
    out = []
    for i in range(n_items):
        sim: dict[int, float] = {}
        for u, v in itertools.combinations(users_of[i], 2):
            common = sets[u] & sets[v]
            w = weight[u] * weight[v] / (alpha + len(common))
            for j in common:
                if j != i:
                    sim[j] = sim.get(j, 0.0) + w
        out.append(sorted(sim.items(), key=lambda x: -x[1])[:k])
    return out


def timed(fn):
    t = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/datasets/amazon-beauty")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--reference-users", type=int, default=None, help="run the pure-Python reference on a subset")
    ap.add_argument("--item2vec-epochs", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/i2i-beauty.json")
    ap.add_argument("--only-itemcf", action="store_true", help="only ItemCF vs implicit (best of 3)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    split = leave_one_out(load_dataset(args.data, cache=False))
    train = split.train
    res: dict = {
        "data": args.data,
        "train_events": len(train),
        "users": train.n_users,
        "items": train.n_items,
        "k": args.k,
        "threads": 1,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "cpu": platform.processor() or platform.machine(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    if args.only_itemcf:
        from implicit.nearest_neighbours import CosineRecommender

        csr = train.csr()
        runs = [
            (
                timed(lambda: CosineRecommender(K=args.k, num_threads=1).fit(csr, show_progress=False))[1],
                timed(lambda: ItemCF(k=args.k, progress=False).fit(train))[1],
            )
            for _ in range(3)
        ]
        t_imp, t_cf = min(r[0] for r in runs), min(r[1] for r in runs)
        res["itemcf"] = {"llmboost_s": t_cf, "implicit_cosine_s": t_imp, "ratio_llmboost_over_implicit": t_cf / t_imp}
        Path(args.out).write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return
    # ---- Swing vs pure Python
    sub = train
    if args.reference_users:
        sub = train.select(train.users < args.reference_users)
    hist = [sub.history(u).tolist() for u in range(sub.n_users)]
    ref, t_ref = timed(lambda: swing_reference(hist, sub.n_items, 1.0, 0.5, args.k))
    fast, t_fast_sub = timed(lambda: Swing(k=args.k, alpha=1.0, user_power=0.5, progress=False).fit(sub))
    agree = np.mean(
        [
            set(j for j, _ in ref[i]) == set(fast.similar_items(i)[0].tolist())
            for i in range(sub.n_items)
            if ref[i] and len(ref[i]) < args.k
        ]
    )
    _, t_swing_full = timed(lambda: Swing(k=args.k, progress=False).fit(train))
    res["swing"] = {
        "reference_subset_users": args.reference_users or train.n_users,
        "reference_events": len(sub),
        "pure_python_s": t_ref,
        "llmboost_same_subset_s": t_fast_sub,
        "speedup": t_ref / t_fast_sub,
        "neighbour_sets_equal_share": float(agree),
        "llmboost_full_s": t_swing_full,
    }
    # ---- ItemCF vs implicit CosineRecommender
    from implicit.nearest_neighbours import CosineRecommender
    from threadpoolctl import threadpool_limits

    csr = train.csr()
    with threadpool_limits(1):
        imp = CosineRecommender(K=args.k, num_threads=1)
        _, t_imp = timed(lambda: imp.fit(csr, show_progress=False))
    cf, t_cf = timed(lambda: ItemCF(k=args.k, progress=False).fit(train))
    res["itemcf"] = {"llmboost_s": t_cf, "implicit_cosine_s": t_imp, "ratio_llmboost_over_implicit": t_cf / t_imp}
    # ---- item2vec vs gensim
    from gensim.models import Word2Vec

    sentences = [[str(i) for i in train.history(u)] for u in range(train.n_users) if len(train.history(u))]
    ep = args.item2vec_epochs
    w2v, t_gensim = timed(
        lambda: Word2Vec(
            sentences,
            vector_size=32,
            window=5,
            sg=1,
            hs=0,
            negative=5,
            min_count=1,
            workers=1,
            epochs=ep,
            seed=0,
            sample=0,
        )
    )
    i2v, t_i2v = timed(lambda: Item2Vec(k=args.k, dim=32, window=5, negatives=5, epochs=ep, progress=False).fit(train))
    vectors = np.zeros((train.n_items, 32), np.float32)
    for i in range(train.n_items):
        if str(i) in w2v.wv:
            vectors[i] = w2v.wv[str(i)]
    gensim_model = Item2Vec(k=args.k, progress=False)
    gensim_model.train_ = train
    gensim_model.neighbors_, gensim_model.neighbor_scores_ = gensim_model._cosine_neighbors(vectors)
    gensim_model._finish()
    quality = {}
    for name, model in (("llmboost", i2v), ("gensim", gensim_model), ("itemcf", cf)):
        quality[name] = evaluate(model, split, "test", ks=(20,)).summary()["Recall@20"]
    res["item2vec"] = {"epochs": ep, "llmboost_s": t_i2v, "gensim_s": t_gensim, "test_recall@20": quality}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
