"""Item-to-item neighbour building on Amazon Beauty (issue 8).

* Swing (llmboost, vectorized) against a straightforward pure-Python Swing (below) on the same data — the
  reference runs on a user subset when ``--reference-users`` is given and both are then timed on that subset;
  llmboost's compiled kernel with one thread and with ``--threads`` (the reference is one thread by nature);
* ItemCF (llmboost, cosine) against implicit's ``CosineRecommender`` (same K), with one thread each and with
  ``--threads`` each;
* item2vec (llmboost's compiled SGNS trainer and its torch fallback) against gensim's ``Word2Vec`` (skip-gram,
  negative sampling, same window, dimension, negatives and epochs): time, and neighbour quality as the
  leave-one-out test Recall@20 of serving from each model's neighbours (the same neighbour step and aggregation).

Wall and CPU seconds of this process are both recorded (the machine is shared; CPU time is the steadier
measure; with threads, wall time is what they buy). Each time is the best of ``--repeats`` runs. The compiled
kernels (numba) are called once on a tiny slice first; that first call (compilation or loading numba's on-disk
cache) is reported apart.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_i2i.py --out benchmarks/results/i2i-beauty.json``
"""

from __future__ import annotations

import argparse
import importlib.util
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
from llmboost.models.item2vec import DEFAULT_LR
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
    """(value, wall seconds, CPU seconds of this process)."""
    t, c = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - t, time.process_time() - c


def best_of(n: int, fn) -> dict:
    runs = [timed(fn)[1:] for _ in range(n)]
    return {"wall_s": min(r[0] for r in runs), "cpu_s": min(r[1] for r in runs), "runs": n}


def compare_swing(ref: list[list], model: Swing, n_items: int, k: int) -> dict:
    """Neighbour sets equal to the reference's where it has fewer than ``k`` neighbours; top-``k`` values equal
    (relative error) where it has more."""
    same, max_rel = [], 0.0
    for i in range(n_items):
        ids, vals = model.similar_items(i)
        want = dict(ref[i])
        if ref[i] and len(ref[i]) < k:
            same.append(set(want) == set(ids.tolist()))
        for j, v in zip(ids.tolist(), vals.tolist(), strict=True):
            if j in want:
                max_rel = max(max_rel, abs(want[j] - v) / abs(want[j]))
    return {"neighbour_sets_equal_share": float(np.mean(same)), "max_relative_error": max_rel}


def bench_swing(train, k: int, reference_users: int | None, threads: int, repeats: int) -> dict:
    """Best of ``repeats`` for the pure-Python reference and for each llmboost method (the compiled kernel with
    1 and with ``threads`` threads); the reference is one thread by nature."""
    sub = train if reference_users is None else train.select(train.users < reference_users)
    hist = [sub.history(u).tolist() for u in range(sub.n_users)]
    # first call of the compiled kernels: numba compiles them (or loads its on-disk cache); timed apart
    _, warm_wall, warm_cpu = timed(lambda: Swing(k=k, method="numba", progress=False).fit(sub.select(sub.users < 50)))
    ref, t_ref, c_ref = timed(lambda: swing_reference(hist, sub.n_items, 1.0, 0.5, k))
    ref_best = best_of(repeats - 1, lambda: swing_reference(hist, sub.n_items, 1.0, 0.5, k))
    t_ref, c_ref = min(t_ref, ref_best["wall_s"]), min(c_ref, ref_best["cpu_s"])
    out: dict = {
        "reference_subset_users": reference_users or train.n_users,
        "reference_events": len(sub),
        "repeats": repeats,
        "pure_python_wall_s": t_ref,
        "pure_python_cpu_s": c_ref,
        "numba_first_call_wall_s": warm_wall,
        "numba_first_call_cpu_s": warm_cpu,
    }
    runs = {"numba": ("numba", 1), f"numba_{threads}_threads": ("numba", threads), "pairs": ("pairs", 1)}
    for name, (method, n_threads) in runs.items():

        def fit(m=method, t=n_threads) -> Swing:
            return Swing(k=k, alpha=1.0, user_power=0.5, method=m, num_threads=t, progress=False).fit(sub)

        model, t, c = timed(fit)
        again = best_of(repeats - 1, fit)
        wall, cpu = min(t, again["wall_s"]), min(c, again["cpu_s"])
        out[name] = {
            "threads": n_threads,
            "wall_s": wall,
            "cpu_s": cpu,
            "speedup_wall": t_ref / wall,
            "speedup_cpu": c_ref / cpu,
            **compare_swing(ref, model, sub.n_items, k),
        }
    return out


def bench_itemcf(train, k: int, threads: int, repeats: int) -> dict:
    """llmboost's ItemCF against implicit's ``CosineRecommender``, both with 1 and with ``threads`` threads."""
    from implicit.nearest_neighbours import CosineRecommender
    from threadpoolctl import threadpool_limits

    csr = train.csr().tocsr()
    out: dict = {"repeats": repeats}
    ItemCF(k=k, method="numba", progress=False).fit(train.select(train.users < 50))  # compile / load cache
    for n_threads in sorted({1, threads}):
        suffix = "" if n_threads == 1 else f"_{n_threads}_threads"
        fits = (  # the same order as ``names`` below
            lambda t=n_threads: CosineRecommender(K=k, num_threads=t).fit(csr, show_progress=False),
            lambda t=n_threads: ItemCF(k=k, method="numba", num_threads=t, progress=False).fit(train),
            lambda: ItemCF(k=k, method="numpy", progress=False).fit(train),
        )
        with threadpool_limits(n_threads):
            # interleaved, so all three see the same load; (wall, CPU) per fit
            rounds = [[timed(fit)[1:] for fit in fits] for _ in range(repeats)]
        names = [f"implicit_cosine{suffix}", f"llmboost_numba{suffix}", f"llmboost_numpy{suffix}"]
        for j, name in enumerate(names):
            out[name] = {"wall_s": min(r[j][0] for r in rounds), "cpu_s": min(r[j][1] for r in rounds)}
        for name in names[1:]:
            out[f"ratio_{name}_over_implicit_wall"] = out[name]["wall_s"] / out[names[0]]["wall_s"]
            out[f"ratio_{name}_over_implicit_cpu"] = out[name]["cpu_s"] / out[names[0]]["cpu_s"]
    a = ItemCF(k=k, method="numba", progress=False).fit(train)
    b = CosineRecommender(K=k, num_threads=1)
    b.fit(csr, show_progress=False)
    sim = b.similarity.tocsr()
    overlap = []
    for i in range(0, train.n_items, 7):
        row = sim[i]
        theirs = set(row.indices[row.indices != i][np.argsort(-row.data[row.indices != i])][:k].tolist())
        mine = set(a.similar_items(i)[0].tolist())
        if theirs:
            overlap.append(len(mine & theirs) / len(theirs))
    out["neighbour_overlap_with_implicit"] = float(np.mean(overlap))
    return out


def gensim_vectors(train, epochs: int, alpha: float) -> tuple[np.ndarray, float, float]:
    """gensim ``Word2Vec`` (skip-gram, negative sampling) on the users' sequences: (item vectors, wall s, CPU s)."""
    from gensim.models import Word2Vec

    sentences = [[str(i) for i in train.history(u)] for u in range(train.n_users) if len(train.history(u))]
    w2v, wall, cpu = timed(
        lambda: Word2Vec(
            sentences,
            vector_size=32,
            window=5,
            sg=1,
            hs=0,
            negative=5,
            min_count=1,
            workers=1,
            epochs=epochs,
            seed=0,
            sample=0,
            alpha=alpha,
        )
    )
    vectors = np.zeros((train.n_items, 32), np.float32)
    for i in range(train.n_items):
        if str(i) in w2v.wv:
            vectors[i] = w2v.wv[str(i)]
    return vectors, wall, cpu


def bench_item2vec(split, train, k: int, epochs: int, cf) -> dict:
    """llmboost's compiled SGD trainer (default learning rate, chosen on the validation split) and its torch
    fallback against gensim at word2vec's default ``alpha`` (0.025) and at llmboost's; every model's neighbours
    built by the same cosine top-``k`` step, which is timed apart (gensim's seconds exclude it)."""

    def item2vec(method: str) -> Item2Vec:
        return Item2Vec(k=k, dim=32, window=5, negatives=5, epochs=epochs, method=method, progress=False)

    # first call of the compiled trainer: numba compiles it (or loads its on-disk cache); timed apart
    _, warm_wall, warm_cpu = timed(lambda: item2vec("numba").fit(train.select(train.users < 50)))
    numba_runs = [timed(lambda: item2vec("numba").fit(train)) for _ in range(3)]
    numba_model = numba_runs[0][0]
    torch_model, torch_wall, torch_cpu = timed(lambda: item2vec("torch").fit(train))
    sgd_lr = DEFAULT_LR["numba"]
    gensim_runs = [gensim_vectors(train, epochs, 0.025) for _ in range(3)]
    gensim_same_lr = gensim_vectors(train, epochs, sgd_lr)[0]
    neighbours_runs = [timed(lambda: numba_model._cosine_neighbors(gensim_runs[0][0]))[1:] for _ in range(3)]
    models = {"llmboost_numba": numba_model, "llmboost_torch": torch_model, "itemcf": cf}
    for name, vectors in (("gensim_alpha_0.025", gensim_runs[0][0]), (f"gensim_alpha_{sgd_lr}", gensim_same_lr)):
        model = Item2Vec(k=k, progress=False)
        model.train_ = train
        model.neighbors_, model.neighbor_scores_ = model._cosine_neighbors(vectors)
        model._finish()
        models[name] = model
    out = {
        "epochs": epochs,
        "llmboost_numba_lr": sgd_lr,
        "llmboost_torch_lr": DEFAULT_LR["torch"],
        "numba_first_call_wall_s": warm_wall,
        "numba_first_call_cpu_s": warm_cpu,
        "llmboost_numba_fit_wall_s": min(r[1] for r in numba_runs),
        "llmboost_numba_fit_cpu_s": min(r[2] for r in numba_runs),
        "llmboost_torch_fit_wall_s": torch_wall,
        "llmboost_torch_fit_cpu_s": torch_cpu,
        "gensim_train_wall_s": min(r[1] for r in gensim_runs),
        "gensim_train_cpu_s": min(r[2] for r in gensim_runs),
        "cosine_neighbours_wall_s": min(r[0] for r in neighbours_runs),
        "cosine_neighbours_cpu_s": min(r[1] for r in neighbours_runs),
        "runs": "numba, gensim and the neighbour step: best of 3; torch: 1",
    }
    for clock in ("wall", "cpu"):
        gensim_end_to_end = out[f"gensim_train_{clock}_s"] + out[f"cosine_neighbours_{clock}_s"]
        numba_train = out[f"llmboost_numba_fit_{clock}_s"] - out[f"cosine_neighbours_{clock}_s"]
        out[f"ratio_numba_fit_over_gensim_plus_neighbours_{clock}"] = (
            out[f"llmboost_numba_fit_{clock}_s"] / gensim_end_to_end
        )
        out[f"ratio_numba_training_over_gensim_{clock}"] = numba_train / out[f"gensim_train_{clock}_s"]
        out[f"ratio_torch_fit_over_gensim_plus_neighbours_{clock}"] = (
            out[f"llmboost_torch_fit_{clock}_s"] / gensim_end_to_end
        )
    out["test_recall@20"] = {
        name: evaluate(model, split, "test", ks=(20,)).summary()["Recall@20"] for name, model in models.items()
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/datasets/amazon-beauty")
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--reference-users", type=int, default=None, help="run the pure-Python reference on a subset")
    ap.add_argument("--item2vec-epochs", type=int, default=3)
    ap.add_argument("--parts", default="swing,itemcf,item2vec", help="comma-separated subset of the comparisons")
    ap.add_argument("--out", default="benchmarks/results/i2i-beauty.json")
    ap.add_argument("--threads", type=int, default=2, help="Swing and ItemCF also run with this many threads")
    ap.add_argument("--repeats", type=int, default=5, help="best of this many runs (Swing reference included)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    parts = set(args.parts.split(","))
    split = leave_one_out(load_dataset(args.data, cache=False))
    train = split.train
    res: dict = {
        "data": args.data,
        "train_events": len(train),
        "users": train.n_users,
        "items": train.n_items,
        "k": args.k,
        "threads": f"1 (item2vec, gensim, torch); Swing and ItemCF 1 and {args.threads}",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "cpu": platform.processor() or platform.machine(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": os.getloadavg(),
        "numba": importlib.util.find_spec("numba") is not None,
    }
    if "swing" in parts:
        res["swing"] = bench_swing(train, args.k, args.reference_users, args.threads, args.repeats)
    if "itemcf" in parts:
        res["itemcf"] = bench_itemcf(train, args.k, args.threads, args.repeats)
    if "item2vec" in parts:
        cf = ItemCF(k=args.k, progress=False).fit(train)
        res["item2vec"] = bench_item2vec(split, train, args.k, args.item2vec_epochs, cf)
    res["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
