"""CEMG speed: RQ-VAE fit time, trie-constrained beam-search latency per user (beam 20, batched) against
SASRec's full-catalog scoring of the same users in the same run, and peak memory.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_cemg.py --dataset amazon-beauty --threads 1

Latency does not depend on how well a model is trained, so both models are trained for one epoch only;
the generator has the CPU preset's shape. Writes ``benchmarks/results/cemg-<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from llmboost.data import load_dataset
    from llmboost.methods.cemg.config import preset
    from llmboost.methods.cemg.features import item_texts, text_modality
    from llmboost.methods.cemg.generator import GenerativeRecommender
    from llmboost.methods.cemg.rqvae import RQVAE
    from llmboost.methods.cemg.semantic_ids import SemanticIDs
    from llmboost.models import build
    from llmboost.splitting import leave_one_out

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--users", type=int, default=2048, help="users timed for generation and scoring")
    parser.add_argument("--batch", type=int, default=256, help="users per generation/scoring batch")
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--rq-epochs", type=int, default=50)
    parser.add_argument(
        "--generator-epochs", type=int, default=1, help="0 skips training the generator (latency does not depend on it)"
    )
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "embeddings"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = preset("cpu")
    out: dict = {
        "dataset": args.dataset,
        "threads": args.threads,
        "beam": args.beam,
        "batch": args.batch,
        "machine": platform.processor() or platform.machine(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
    }
    dataset = load_dataset(str(SHARED / args.dataset))
    split = leave_one_out(dataset)
    out["items"], out["users_total"] = dataset.n_items, dataset.n_users
    started = time.perf_counter()
    text = text_modality(item_texts(dataset, config.features.text_fields), cache_dir=args.cache)
    out["text_embedding_seconds"] = time.perf_counter() - started
    out["peak_rss_mib_after_text"] = peak_rss_mib()

    r = config.rqvae
    rq = RQVAE(
        r.levels, r.codebook_size, r.latent_dim, r.hidden, args.rq_epochs, r.batch_size, r.lr, r.beta, seed=0
    ).fit(text.values)
    out["rqvae"] = {
        "epochs": args.rq_epochs,
        "fit_seconds": rq.fit_seconds_,
        "seconds_per_epoch": rq.fit_seconds_ / args.rq_epochs,
        "levels": r.levels,
        "codebook_size": r.codebook_size,
    }
    ids = SemanticIDs.build(rq.encode(text.values), r.codebook_size, r.max_dedup)
    out["rqvae"]["collision_rate"] = ids.stats["collision_rate"]
    out["rqvae"]["utilisation"] = [lvl["utilisation"] for lvl in ids.stats["levels"]]
    out["peak_rss_mib_after_rqvae"] = peak_rss_mib()

    g = config.generator
    generator = GenerativeRecommender(
        ids.codes,
        ids.sizes,
        g.d_model,
        g.layers,
        g.heads,
        g.ff,
        g.dropout,
        g.max_history,
        targets_per_user=1,
        epochs=args.generator_epochs,
        beam=args.beam,
        progress=False,
    ).fit(split.train)
    sasrec = build("sasrec", epochs=1, progress=False).fit(split.train)
    if generator.history_:
        out["generator_epoch"] = {
            "examples": int(split.train.active_users().size),
            "seconds": generator.history_[0]["train_seconds"],
        }
    out["sasrec_epoch_seconds"] = sasrec.history_[0]["train_seconds"]
    history = split.history("test")
    users = split.test.active_users()[: args.users]

    def time_it(fn) -> float:  # seconds per user, best of two runs (the first warms caches)
        best = np.inf
        for _ in range(2):
            started = time.perf_counter()
            for start in range(0, len(users), args.batch):
                fn(users[start : start + args.batch])
            best = min(best, time.perf_counter() - started)
        return best / len(users)

    out["generation_ms_per_user"] = 1000 * time_it(
        lambda batch: generator.recommend(batch, k=10, history=history, batch_size=args.batch)
    )
    out["peak_rss_mib_after_generation"] = peak_rss_mib()
    out["sasrec_ms_per_user"] = 1000 * time_it(
        lambda batch: sasrec.recommend(batch, k=10, history=history, batch_size=args.batch)
    )
    out["ratio_generation_to_sasrec"] = out["generation_ms_per_user"] / out["sasrec_ms_per_user"]
    out["goal_ratio"] = 20.0
    out["peak_rss_mib"] = peak_rss_mib()
    out["users_timed"] = len(users)
    path = ROOT / "benchmarks" / "results" / f"cemg-{args.dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
