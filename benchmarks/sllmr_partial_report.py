"""Report what an unfinished S-LLMR experiment has measured so far, without training or scoring anything.

Reads ``<out>/config.json``, the cached reference backbones, the score store and every finished run folder
(``runs/<backbone>/<variant>/seed-N`` of ``<out>`` and of any ``--extra`` folders), and writes
``<report-dir>/report.md`` + ``results.json`` with the same tables as ``run_experiment``. Teachers are
evaluated on the users whose requests are all in the store (the A/B teacher's are counted per user); runs
count only where ``summary.json`` exists. Used on the shared 2-core machine, where the ``cpu`` preset did not
finish in the session (see docs/sllmr.md).

    PYTHONPATH=src python benchmarks/sllmr_partial_report.py runs/sllmr-cpu2-ml100k --out docs/sllmr/partial
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmboost.config import from_mapping
from llmboost.jsonio import write_json
from llmboost.llm.store import ScoreStore
from llmboost.methods.sllmr.candidates import build_candidates, make_pairs, select_users
from llmboost.methods.sllmr.config import SLLMRConfig
from llmboost.methods.sllmr.experiment import (
    accuracy_table,
    activation_stats,
    aggregate_runs,
    candidates_summary,
    choice_subset,
    fit_gate,
    make_teacher,
    prepare_data,
    reference_path,
    significance,
)
from llmboost.methods.sllmr.loss import backbone_pair_stats
from llmboost.methods.sllmr.report import write_report
from llmboost.methods.sllmr.teachers import SupervisionError, item_texts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="more folders with runs/<b>/<v>/seed-N")
    parser.add_argument("--out", type=Path, required=True, help="where report.md and results.json go")
    args = parser.parse_args()
    started = time.perf_counter()
    config = from_mapping(SLLMRConfig, json.loads((args.out_dir / "config.json").read_text()))
    data = prepare_data(config)
    split = data["split"]
    from llmboost.models import Recommender

    references = {}
    for b in config.backbones:
        path = reference_path(b, config, data, args.out_dir)
        if path.exists():
            references[b] = Recommender.load(path)
    users = select_users(split.train, split.valid, config.embedding_users, config.min_history, config.subset_seed)
    top, _ = references[config.backbones[0]].recommend(
        users, k=config.n_candidates, exclude_seen=True, history=split.train
    )
    cands = build_candidates(top, users, split.train, split.valid, config.subset_seed)
    pairs = make_pairs(cands)
    llm_users = np.intersect1d(
        select_users(split.train, split.valid, config.llm_users, config.min_history, config.subset_seed), users
    )
    choice_users = choice_subset(llm_users, config.choice_users, config.subset_seed)
    texts = {
        "embedding": item_texts(data["dataset"], config.item_fields),
        "llm": item_texts(data["dataset"], ["title"]),
    }
    store = ScoreStore(config.store or args.out_dir / "scores.sqlite")
    judged: dict[str, Any] = {}
    for name in config.teachers:
        scored = users if name == "embedding" else (choice_users if name == "choice" else llm_users)
        teacher = make_teacher(name, config, data, texts["llm"], args.out_dir, llm_users)
        tx = texts["embedding"] if name == "embedding" else texts["llm"]
        complete, parts = [], []
        for u in scored if name == "choice" else [scored]:  # the A/B teacher: user by user (partly scored)
            rows = np.flatnonzero(np.isin(cands.users, np.atleast_1d(u)))
            mask = np.isin(pairs.row, rows)
            sub_pairs = pairs.take(mask)
            remap = np.full(len(cands), -1)
            remap[rows] = np.arange(len(rows))
            sub_pairs.row = remap[sub_pairs.row]
            try:
                j = teacher.judge(cands.subset(rows), sub_pairs, split.train, tx, store, compute=False)
            except (SupervisionError, KeyError):
                continue
            complete.append(np.atleast_1d(u))
            parts.append((mask, j))
        if not parts:
            continue
        mask = np.logical_or.reduce([m for m, _ in parts])
        order = np.concatenate([np.flatnonzero(m) for m, _ in parts])
        prob = np.concatenate([j.prob for _, j in parts])[np.argsort(order)]
        agree = np.concatenate([j.agreement for _, j in parts])[np.argsort(order)]
        judged[name] = {
            "mask": mask,
            "judgements": type(parts[0][1])(prob, agree, name),
            "users": int(sum(len(c) for c in complete)),
        }
    results: dict[str, Any] = {
        "config": json.loads((args.out_dir / "config.json").read_text()),
        "seeds": list(config.seeds),
        "data_fingerprint": data["fingerprint"],
        "candidates": candidates_summary(cands, pairs),
        "teachers": {
            t: {"users": v["users"], "pairs": int(v["mask"].sum()), "seconds": 0.0} for t, v in judged.items()
        },
        "gate": {},
        "teachers_accuracy": {},
        "gate_activation": {},
    }
    for b, ref in references.items():
        margin, mc = backbone_pair_stats(
            ref, pairs.user, pairs.item_i, pairs.item_j, config.gate.mc_samples, config.gate.mc_dropout
        )
        results["teachers_accuracy"][b] = {}
        for t, info in judged.items():
            m, j = info["mask"], info["judgements"]
            g = fit_gate(config, data, pairs.take(m), j, margin[m], mc[m], config.gate.features)
            results["gate"][f"{b}/{t}"] = {k: g[k] for k in ("auc_heldout", "auc_train", "n_fit", "n_heldout")}
            results["teachers_accuracy"][b][t] = accuracy_table(pairs.take(m), j, margin[m], data)
            if t == config.teacher:
                results["gate_activation"][b] = activation_stats(pairs.take(m), g["activation"], data)
    runs: dict[str, list[dict[str, Any]]] = {}
    per_user: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for folder in [args.out_dir, *args.extra]:
        for summary in sorted((folder / "runs").glob("*/*/seed-*/summary.json")):
            b, v = summary.parts[-4], summary.parts[-3]
            if any(s.get("_from") == str(summary.parent.name) for s in runs.get(f"{b}/{v}", [])):
                continue  # the same seed from another folder
            s = json.loads(summary.read_text()) | {"_from": summary.parent.name}
            runs.setdefault(f"{b}/{v}", []).append(s)
            per_user.setdefault((b, v), []).append(pd.read_csv(summary.parent / "per_user.csv"))
    for v in runs.values():
        for s in v:
            s.pop("_from")
    results["runs"] = runs
    results["aggregate"] = aggregate_runs(runs)
    results["significance"] = significance(per_user, data["slices"])
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(results, config, args.out)
    write_json(args.out / "results.json", results)
    print(args.out / "report.md")


if __name__ == "__main__":
    main()
