"""The LLM-I2I experiment: for each dataset, seed, variant (base / +generator / +discriminator / +both) and I2I
model, Recall@K and hits overall and on long-tail targets (full ranking, leave-one-out test); paired tests
against base; synthetic events made, real events dropped, the generator's hit rate, the judges' AUC.

Resumable: LLM outputs live in the score store (``llm_store.sqlite``), fine-tuned adapters in their folders,
sentence embeddings in ``embed_cache``, and every (dataset, seed, variant, model) result in ``runs/`` under a
key that hashes the configuration and data fingerprint (a changed setting reruns).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmboost.config import to_dict
from llmboost.data.fetch import load_dataset
from llmboost.data.text import ItemText
from llmboost.evaluation import evaluate
from llmboost.jsonio import digest, write_json
from llmboost.llm.precision import resolved_precision_name
from llmboost.methods.llm_i2i import discriminator as disc
from llmboost.methods.llm_i2i import generator as gen
from llmboost.methods.llm_i2i.config import Config, validate
from llmboost.methods.llm_i2i.fusion import build_model, fuse
from llmboost.models import ItemCF
from llmboost.splitting import leave_one_out, make_slices

logger = logging.getLogger(__name__)

ITEM_KIND = {"movielens-100k": "movies", "amazon-scientific": "products", "amazon-beauty": "products"}


def item_text(dataset: Any, fields: list[str], max_chars: int) -> tuple[ItemText, np.ndarray]:
    """Item texts; items without text get the placeholder ``item <id>`` (returned mask: has real text); they
    are never generator targets."""
    text = ItemText.from_dataset(
        dataset, fields=tuple(f for f in fields if f in dataset.item_meta.columns) or ("title",), max_chars=max_chars
    )
    has = np.array([bool(t.strip()) for t in text.texts])
    if not has.all():
        texts = [t if h else f"item {i}" for i, (t, h) in enumerate(zip(text.texts, has, strict=True))]
        text = ItemText(texts)
    return text, has


def _load_llm(setting: str, adapter_dir: Path | None, precision: str) -> Any:
    """The generator's or judge's LLM (with its LoRA adapter); ``precision`` applies to local models."""
    from llmboost.llm.models import load_model, resolve_model

    target = str(adapter_dir) if adapter_dir is not None else setting
    if resolve_model(target).kind == "url":
        return load_model(target)
    return load_model(target, precision=precision)


def _scores_from_store(store: Any, model: Any, job: str, requests: dict, progress: bool, batch: int) -> dict[str, Any]:
    from llmboost.llm.jobs import run_job

    run_job(model, store, job, requests, batch_size=batch, progress=progress, desc=job)
    return store.get_many(model.fingerprint, job, list(requests))


def first_run_timings(path: Path, key: str, timings: dict[str, float]) -> dict[str, float]:
    """Stage seconds of the first run of these settings that completed each stage (kept in ``path``): a
    resumed run reuses the stored LLM outputs and adapters, so only this record says what the stages cost
    cold."""
    ledger = json.loads(path.read_text()) if path.is_file() else {}
    first = ledger.setdefault(key, {})
    for stage, seconds in timings.items():
        first.setdefault(stage, seconds)
    write_json(path, ledger, indent=1)
    return dict(first)


def _value(record: Any) -> np.ndarray:
    return np.asarray(record.vector if hasattr(record, "vector") else record, dtype=np.float64)


def run_dataset(name: str, config: Config, out: Path, store: Any, progress: bool) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = load_dataset(Path(config.data_root) / name, cache=False)
    split = leave_one_out(dataset)
    train = split.train
    slices = make_slices(train)
    fingerprint = dataset.fingerprint()
    ledger, stage_key = out / "stage_timings.json", digest([to_dict(config), fingerprint, name])

    first_timings: dict[str, float] = {}

    def finished(stage: str, started: float) -> None:
        timings[stage] = time.perf_counter() - started
        first_timings.update(first_run_timings(ledger, stage_key, timings))

    text, has_text = item_text(dataset, config.text_fields.get(name, ["title"]), config.max_text_chars)
    kind = ITEM_KIND.get(name, "items")
    from llmboost.llm.embeddings import encode_texts

    vectors = encode_texts(
        text.texts, config.discriminator.embedding_model, cache_dir=out.parent / "embed_cache", progress=progress
    )
    finished("data_and_embeddings_s", t0)
    info: dict[str, Any] = {
        "data_fingerprint": fingerprint,
        "items_without_text": int((~has_text).sum()),
        "long_tail_items": int(slices.long_tail_items.sum()),
        "notes": [],
    }
    gcfg, dcfg = config.generator, config.discriminator
    need_gen = gcfg.enabled and any(v in ("generator", "both") for v in config.variants)
    need_disc = dcfg.enabled and any(v in ("discriminator", "both") for v in config.variants)
    future = split.valid.__class__.concat([split.valid, split.test])

    # ---------------------------------------------------------------- generator: pool, pre-selection, LLM scores
    pool = np.zeros(0, np.int64)
    cand = pre = llm = None
    if need_gen:
        t = time.perf_counter()
        pool = gen.tail_pool(slices.long_tail_items & has_text, train, gcfg.tail_pool, config.llm_seed)
        if len(pool) == 0:
            info["notes"].append("empty long-tail set: the generator synthesizes nothing")
        cooc = ItemCF(k=config.models.k, last_n=config.models.last_n, iuf=True, progress=False).fit(train)
        profiles = gen.user_profiles(train, vectors, config.models.last_n)
        cand, pre = gen.preselect(train, pool, profiles, vectors, cooc, gcfg.candidates_per_item, gcfg.text_weight)
        llm = np.full(cand.shape, -np.inf)
        adapter = None
        if gcfg.mode == "finetune" and len(pool):
            key = digest([to_dict(gcfg), config.llm_seed, fingerprint, resolved_precision_name(config.precision)])
            adapter = out / f"generator_lora_{key}"
            if not gen.model_dir_done(adapter):
                from llmboost.llm.finetune import finetune

                examples, users = gen.finetune_examples(
                    text, train, gcfg.finetune_users, gcfg.finetune_last_n, gcfg.max_history, kind, config.llm_seed
                )
                info["generator_finetune_users"] = len(users)
                info["generator_finetune_examples"] = len(examples)
                finetune(
                    gcfg.model,
                    examples,
                    adapter,
                    r=gcfg.lora_r,
                    max_steps=gcfg.finetune_steps,
                    batch_tokens=gcfg.finetune_batch_tokens,
                    pack_length=256,
                    seed=config.llm_seed,
                    precision=config.precision,
                    progress=progress,
                )
        rows = np.argwhere(cand >= 0)
        if len(rows):
            model = _load_llm(gcfg.model, adapter, config.precision)
            pairs = np.stack([cand[rows[:, 0], rows[:, 1]], pool[rows[:, 0]]], axis=1)
            reqs = gen.likelihood_requests(model, text, train, pairs, gcfg.max_history, kind)
            got = _scores_from_store(store, model, gen.LIKELIHOOD_JOB, reqs, progress, gcfg.batch_size)
            keys = list(reqs)
            for (r, c), key in zip(rows.tolist(), keys, strict=True):
                llm[r, c] = float(_value(got[key])[0])
            info["generator_llm_pairs"] = len(keys)
            info["generator_model_fingerprint"] = model.fingerprint
        finished("generator_s", t)

    # ---------------------------------------------------------------- LLM judge: AUC on held-out pairs
    if need_disc and dcfg.llm_judge:
        t = time.perf_counter()
        info["llm_judge"] = llm_judge(config, text, split, store, out, kind, fingerprint, progress)
        finished("llm_judge_s", t)

    # ---------------------------------------------------------------- per seed
    runs: dict[str, Any] = {}
    per_user: dict[str, np.ndarray] = {}
    key_base = digest([to_dict(config), fingerprint, name])
    for seed in config.seeds:
        rng = np.random.default_rng(seed)
        seed_info: dict[str, Any] = {}
        syn = None
        if need_gen:
            take = min(gcfg.tail_items, len(pool))
            chosen = np.sort(rng.choice(len(pool), take, replace=False)) if take else np.zeros(0, np.int64)
            synthesis = gen.select_synthetic(
                train, pool[chosen], cand[chosen], pre[chosen], llm[chosen], gcfg.per_item, gcfg.budget
            )
            syn = synthesis.events
            seed_info["synthetic_events"] = len(syn)
            seed_info["generator"] = gen.hit_rate(syn, future)
            # the same budget chosen by pre-selection alone (no LLM): does the LLM add anything?
            pre_only = gen.select_synthetic(
                train, pool[chosen], cand[chosen], pre[chosen], pre[chosen], gcfg.per_item, gcfg.budget
            )
            seed_info["preselect_only"] = gen.hit_rate(pre_only.events, future)
            seed_info["notes"] = synthesis.notes
        real_scores = syn_scores = None
        if need_disc:
            head = disc.HeadDiscriminator(vectors, dcfg.profile_items, dcfg.train_events, seed=seed)
            real_scores = head.fit_score(train)
            users_v = split.valid.users.astype(np.int64)
            prof_v = gen.user_profiles(train, vectors, dcfg.profile_items)[users_v]
            neg_v = disc.matched_negatives(users_v, split.valid.items, train, rng)
            sel = np.flatnonzero(neg_v >= 0)[: dcfg.heldout_pairs]
            seed_info["head_auc"] = disc.auc(
                head.score_pairs(prof_v[sel], split.valid.items[sel]), head.score_pairs(prof_v[sel], neg_v[sel])
            )
            seed_info["text_cosine_auc"] = disc.auc(
                (prof_v[sel] * vectors[split.valid.items[sel]]).sum(1), (prof_v[sel] * vectors[neg_v[sel]]).sum(1)
            )
            if syn is not None and len(syn):
                prof_all = gen.user_profiles(train, vectors, dcfg.profile_items)
                syn_scores = head.score_pairs(prof_all[syn["user"].to_numpy()], syn["item"].to_numpy())
                seed_info["synthetic_mean_score"] = float(syn_scores.mean())
            seed_info["real_mean_score"] = float(np.nanmean(real_scores))
        for variant in config.variants:
            use_gen = variant in ("generator", "both") and syn is not None
            use_disc = variant in ("discriminator", "both") and real_scores is not None
            vsyn = syn if use_gen else None
            keep_real = None
            vinfo: dict[str, Any] = {}
            if use_disc:

                def score_fraction(
                    threshold: float, vsyn: Any = vsyn, rs: Any = real_scores, ss: Any = syn_scores
                ) -> float:
                    keep = disc.apply_threshold(rs, threshold)
                    s = None if vsyn is None else vsyn[disc.apply_threshold(ss, threshold)]
                    events, w = fuse(train, keep, s, gcfg.weight)
                    model = ItemCF(k=config.models.k, last_n=config.models.last_n, iuf=True, progress=False)
                    return evaluate(model.fit(events, weights=w), split, "valid", ks=(config.ks[0],)).summary()[
                        f"Recall@{config.ks[0]}"
                    ]

                if dcfg.threshold is not None:
                    disc.check_fixed_threshold(real_scores, dcfg.threshold)
                    threshold, fraction, grid = dcfg.threshold, None, {}
                else:
                    fraction, threshold, grid = disc.choose_threshold(real_scores, dcfg.drop_grid, score_fraction)
                keep_real = disc.apply_threshold(real_scores, threshold)
                if vsyn is not None:
                    vsyn = vsyn[disc.apply_threshold(syn_scores, threshold)]
                vinfo |= {
                    "drop_fraction": fraction,
                    "threshold": threshold,
                    "valid_recall_by_fraction": {str(k): v for k, v in grid.items()},
                    "real_dropped": int((~keep_real).sum()),
                }
            vinfo["synthetic_kept"] = 0 if vsyn is None else len(vsyn)
            if vsyn is not None and len(vsyn):
                vinfo["generator_kept"] = gen.hit_rate(vsyn, future)
            events, weights = fuse(train, keep_real, vsyn, gcfg.weight)
            for mname in config.models.names:
                path = out / "runs" / f"s{seed}" / f"{variant}-{mname}.json"
                arrays = path.with_suffix(".npz")
                if path.is_file() and arrays.is_file():
                    saved = json.loads(path.read_text())
                    if saved.get("key") == key_base:
                        runs[f"{seed}/{variant}/{mname}"] = saved
                        per_user[f"{seed}/{variant}/{mname}"] = np.load(arrays)["recall"]
                        continue
                t = time.perf_counter()
                model = build_model(mname, config.models.k, config.models.last_n, seed, to_dict(config.models))
                model.fit(events, weights=weights)
                fit_s = time.perf_counter() - t
                res = evaluate(model, split, "test", ks=tuple(config.ks), slices=slices)
                summ = res.summary()
                frame = res.per_user
                row = {
                    "key": key_base,
                    "seed": seed,
                    "variant": variant,
                    "model": mname,
                    "fit_seconds": fit_s,
                    "train_events": len(events),
                    **vinfo,
                }
                recall = []
                for k in config.ks:
                    row[f"Recall@{k}"] = summ[f"Recall@{k}"]
                    row[f"long_tail/Recall@{k}"] = summ.get(f"long_tail/Recall@{k}", float("nan"))
                    row[f"hits@{k}"] = float((frame[f"Recall@{k}"] * frame["n_targets"]).sum())
                    row[f"long_tail/hits@{k}"] = float(np.nansum(frame[f"long_tail/Recall@{k}"]))
                    recall.append(frame[f"Recall@{k}"].to_numpy())
                    recall.append(frame[f"long_tail/Recall@{k}"].to_numpy())
                path.parent.mkdir(parents=True, exist_ok=True)
                write_json(path, row, indent=1)
                np.savez(arrays, recall=np.stack(recall))
                runs[f"{seed}/{variant}/{mname}"] = row
                per_user[f"{seed}/{variant}/{mname}"] = np.stack(recall)
        info.setdefault("seeds", {})[str(seed)] = seed_info
    info["timings"] = timings
    info["first_run_timings"] = first_timings
    info["table"] = summarize(config, runs, per_user)
    return info


def llm_judge(
    config: Config, text: ItemText, split: Any, store: Any, out: Path, kind: str, fp: str, progress: bool
) -> dict[str, Any]:
    """The LLM yes/no judge: LoRA on real positives vs popularity-matched negatives (a recorded user subset);
    its AUC on held-out validation pairs."""
    dcfg = config.discriminator
    train = split.train
    rng = np.random.default_rng(config.llm_seed)
    adapter = None
    info: dict[str, Any] = {}
    if dcfg.llm_finetune_steps > 0:
        key = digest([to_dict(dcfg), config.llm_seed, fp, resolved_precision_name(config.precision)])
        adapter = out / f"judge_lora_{key}"
        if not gen.model_dir_done(adapter):
            from llmboost.llm.finetune import finetune

            eligible = np.flatnonzero(train.user_counts() >= 4)
            users = np.sort(rng.choice(eligible, min(dcfg.llm_finetune_users, len(eligible)), replace=False))
            examples = disc.judge_examples(text, train, users, config.generator.max_history, kind, rng)
            info["finetune_examples"] = len(examples)
            finetune(
                dcfg.llm_model,
                examples,
                adapter,
                r=config.generator.lora_r,
                max_steps=dcfg.llm_finetune_steps,
                batch_tokens=config.generator.finetune_batch_tokens,
                pack_length=256,
                seed=config.llm_seed,
                precision=config.precision,
                progress=progress,
            )
    model = _load_llm(dcfg.llm_model, adapter, config.precision)
    users = split.valid.users.astype(np.int64)
    neg = disc.matched_negatives(users, split.valid.items, train, np.random.default_rng(config.llm_seed + 1))
    sel = np.flatnonzero(neg >= 0)[: dcfg.llm_heldout_pairs // 2]
    hist = gen.last_items(train, users[sel], config.generator.max_history)
    pos_req = disc.judge_requests(model, text, hist, split.valid.items[sel], kind)
    neg_req = disc.judge_requests(model, text, hist, neg[sel], kind)
    got = _scores_from_store(store, model, disc.JUDGE_JOB, {**pos_req, **neg_req}, progress, 8)

    def logodds(keys: list[str]) -> np.ndarray:
        return np.array([_value(got[k])[0] - _value(got[k])[1] for k in keys])

    info |= {
        "auc": disc.auc(logodds(list(pos_req)), logodds(list(neg_req))),
        "pairs": 2 * len(sel),
        "finetuned": adapter is not None,
        "model_fingerprint": model.fingerprint,
    }
    return info


def _paired_t_p(mine: list[float], base: list[float]) -> float:
    """Paired t-test p-value over seeds; 1.0 where every seed is unchanged, NaN where it is undefined (one
    seed, or the same nonzero difference in every seed: no variance to test against)."""
    from scipy import stats

    diff = np.asarray(mine, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    if len(mine) != len(base) or len(diff) < 2:
        return float("nan")
    if np.all(diff == diff[0]):
        return 1.0 if diff[0] == 0 else float("nan")
    return float(stats.ttest_rel(mine, base).pvalue)


def _seed_mean(per_seed: list[np.ndarray]) -> np.ndarray:
    """Per user, the mean over seeds of a metric; NaN for users outside the slice (NaN in every seed)."""
    stacked = np.stack(per_seed)
    counts = (~np.isnan(stacked)).sum(axis=0)
    return np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)


def summarize(config: Config, runs: dict[str, Any], per_user: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (variant, model), with paired tests against base."""
    from scipy import stats

    table = []
    for mname in config.models.names:
        for variant in config.variants:
            rows = [runs[f"{s}/{variant}/{mname}"] for s in config.seeds if f"{s}/{variant}/{mname}" in runs]
            if not rows:
                continue
            entry: dict[str, Any] = {"model": mname, "variant": variant, "seeds": len(rows)}
            for col in [c for c in rows[0] if "Recall@" in c or "hits@" in c]:
                v = np.array([r[col] for r in rows], dtype=np.float64)
                entry[col] = {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0}
            for col in ("real_dropped", "synthetic_kept", "drop_fraction"):
                if col in rows[0] and rows[0][col] is not None:
                    entry[col] = float(np.mean([r[col] for r in rows]))
            if variant != "base":
                tests = {}
                for j, col in enumerate(c for k in config.ks for c in (f"Recall@{k}", f"long_tail/Recall@{k}")):
                    base = [runs[f"{s}/base/{mname}"][col] for s in config.seeds if f"{s}/base/{mname}" in runs]
                    mine = [r[col] for r in rows]
                    t_p = _paired_t_p(mine, base)
                    a = _seed_mean([per_user[f"{s}/{variant}/{mname}"][j] for s in config.seeds])
                    b = _seed_mean([per_user[f"{s}/base/{mname}"][j] for s in config.seeds])
                    ok = ~(np.isnan(a) | np.isnan(b))
                    diff = a[ok] - b[ok]
                    w_p = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
                    tests[col] = {"seed_ttest_p": t_p, "user_wilcoxon_p": w_p}
                entry["tests_vs_base"] = tests
            table.append(entry)
    return table


def run_experiment(config: Config, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Run every dataset; write ``results.json``, ``report.md`` and PNG plots into ``out_dir``; resumable."""
    from llmboost.llm.store import ScoreStore
    from llmboost.methods.llm_i2i.report import plot, write_report

    config = validate(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(to_dict(config), indent=1))
    t = time.perf_counter()
    store = ScoreStore(out_dir / "llm_store.sqlite")
    try:
        datasets = {name: run_dataset(name, config, out_dir / name, store, progress) for name in config.datasets}
    finally:
        store.close()
    headline = {}
    for name, info in datasets.items():
        for entry in info["table"]:
            k = config.ks[0]
            headline[f"{name}/{entry['model']}/{entry['variant']}/Recall@{k}"] = entry[f"Recall@{k}"]["mean"]
    results = {
        "headline": headline,
        "config": to_dict(config),
        "seeds": list(config.seeds),
        "data_fingerprint": {n: i["data_fingerprint"] for n, i in datasets.items()},
        "model_fingerprint": {n: i.get("generator_model_fingerprint") for n, i in datasets.items()},
        "datasets": datasets,
        "seconds": time.perf_counter() - t,
    }
    write_json(out_dir / "results.json", results, indent=1)
    plots = plot(results, out_dir)
    write_report(results, out_dir, plots)
    return results
