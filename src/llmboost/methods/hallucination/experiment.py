"""The hallucination-detector experiment (arXiv 2510.14330 §4): generate and trace answers, label them, fit the
detector ensemble on random splits, compare abstention strategies by CRAG-MM truthfulness, write a report.

Stages, each resumable (finished work under ``out_dir`` is reused; a changed setting reruns what it affects):

1. ``generations/<key>/``: greedy answers + averaged activations, in chunks of :data:`CHUNK` prompts;
2. ``idk/<key>.json``: answers to the "say I don't know" prompts (the prompting baseline);
3. ``labels_<key>.json``: exact-match (or judge) outcomes;
4. ``seeds/seed_<s>_<key>.json``: detectors, thresholds and metrics of one random split;
5. ``report.md``, ``results.json``, ``detectors_auroc.png``, ``reliability/`` (the fitted reliability score).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from llmboost.jsonio import digest, write_json
from llmboost.methods.hallucination.config import HallucinationConfig, as_dict
from llmboost.methods.hallucination.data import (
    QAItem,
    crag_items,
    few_shot_prompt,
    fingerprint_items,
    geonames_qa,
    load_crag_mm,
    load_qa_file,
    multi_turn_truthfulness,
    sample_items,
)
from llmboost.methods.hallucination.detectors import Probe, auroc
from llmboost.methods.hallucination.ensemble import DetectorEnsemble, abstain_outcomes, tune_threshold
from llmboost.methods.hallucination.features import Features
from llmboost.methods.hallucination.labels import label_answer, rates

CHUNK = 64
METHODS = ("no_abstention", "logprob", "idk_prompt", "best_single", "concat_probe", "ensemble", "ensemble_paper")
LABELS = {
    "no_abstention": "no abstention (always answer)",
    "logprob": "mean token log-prob threshold",
    "idk_prompt": 'prompting: "say I don\'t know"',
    "best_single": "best single detector",
    "concat_probe": "all features in one probe",
    "ensemble": "ensemble (tuned threshold)",
    "ensemble_paper": "ensemble (threshold 0.65)",
}


# ------------------------------------------------------------------------------------------------ questions
def build_questions(config: HallucinationConfig) -> tuple[list[QAItem], list[str], list[str]]:
    """Evaluated questions with their few-shot prompts and "say I don't know" prompts. Shots come from the same
    kind/file and are never evaluated."""
    d = config.data
    groups: dict[str, list[QAItem]] = defaultdict(list)
    if d.n_geonames > 0:
        for it in geonames_qa(d.geonames_kinds):
            groups[it.kind].append(it)
        per_kind = math.ceil(d.n_geonames / max(1, len(d.geonames_kinds)))
        budget = {k: per_kind for k in groups}
    else:
        budget = {}
    for f in d.files:
        items = crag_items(load_crag_mm(f[5:])) if f.startswith("crag:") else load_qa_file(f)
        name = f"file:{f}"
        groups[name] = items
        budget[name] = d.n_per_file
    chosen: list[QAItem] = []
    prompts: list[str] = []
    idk_prompts: list[str] = []
    for name in sorted(groups):
        items = sample_items(groups[name], None, d.seed)
        shots, pool = items[: d.n_shots], items[d.n_shots :]
        for it in pool[: budget[name]]:
            chosen.append(it)
            prompts.append(few_shot_prompt(it, shots))
            idk_prompts.append(few_shot_prompt(it, shots, idk=True))
    if d.n_geonames > 0 and len([c for c in chosen if not c.kind.startswith("file")]) > d.n_geonames:
        keep = sample_items(range(len(chosen)), None, d.seed)  # type: ignore[arg-type]
        drop = set(sorted(i for i in keep if not chosen[i].kind.startswith("file"))[d.n_geonames :])
        chosen = [c for i, c in enumerate(chosen) if i not in drop]
        prompts = [p for i, p in enumerate(prompts) if i not in drop]
        idk_prompts = [p for i, p in enumerate(idk_prompts) if i not in drop]
    if not chosen:
        raise ValueError("no questions: set data.n_geonames > 0 or data.files")
    return chosen, prompts, idk_prompts


# ------------------------------------------------------------------------------------------------ stages
def generate_features(
    model: Any, prompts: list[str], config: HallucinationConfig, folder: Path, progress: bool
) -> tuple[Features, list[str]]:
    """Stage 1: traced greedy answers, one ``.npz`` + ``.json`` per chunk (resumable)."""
    from llmboost.llm.tracing import trace_generation

    folder.mkdir(parents=True, exist_ok=True)
    parts: list[Features] = []
    texts: list[str] = []
    chunks = range(0, len(prompts), CHUNK)
    for start in tqdm(chunks, desc="generate+trace", disable=not progress):
        npz, meta = folder / f"chunk_{start:05d}.npz", folder / f"chunk_{start:05d}.json"
        if npz.exists() and meta.exists():
            feats = Features.load(npz)
            chunk_texts = json.loads(meta.read_text())["texts"]
        else:
            tr = trace_generation(
                model,
                prompts[start : start + CHUNK],
                max_new_tokens=config.model.max_new_tokens,
                heads=config.detectors.heads,
                stop=["\n"],
                batch_size=config.model.batch_size,
            )
            feats = Features.from_trace(tr)
            chunk_texts = tr.texts
            feats.save(npz)
            write_json(meta, {"texts": chunk_texts, "token_ids": tr.token_ids})
        parts.append(feats)
        texts += chunk_texts
    heads = None if parts[0].heads is None else np.concatenate([p.heads for p in parts])  # type: ignore[misc]
    return Features(
        np.concatenate([p.hidden for p in parts]),
        heads,
        np.concatenate([p.mean_logprob for p in parts]),
        np.concatenate([p.n_tokens for p in parts]),
    ), texts


def generate_idk(model: Any, prompts: list[str], config: HallucinationConfig, path: Path, progress: bool) -> list[str]:
    """Stage 2: answers to the "say I don't know" prompts (plain greedy generation, resumable by chunk)."""
    done: list[str] = json.loads(path.read_text()) if path.exists() else []
    for start in tqdm(range(len(done), len(prompts), CHUNK), desc="idk prompts", disable=not progress):
        done += model.generate(prompts[start : start + CHUNK], max_new_tokens=config.model.max_new_tokens, stop=["\n"])
        write_json(path, done)
    return done


def split_indices(
    n: int, config: HallucinationConfig, seed: int, groups: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Random train / selection / calibration / test indices. With ``groups`` (CRAG-MM conversations), every
    turn of a conversation falls in the same split: conversations are shuffled and the cuts move to the next
    conversation boundary."""
    s = config.split
    if min(s.train, s.selection, s.calibration) <= 0 or s.train + s.selection + s.calibration >= 1:
        raise ValueError("split fractions must be positive and leave a test split (train+selection+calibration < 1)")
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        cuts = []
    else:
        if len(groups) != n:
            raise ValueError(f"{len(groups)} group ids for {n} questions")
        uniq = list(dict.fromkeys(groups))
        rank = {uniq[j]: pos for pos, j in enumerate(rng.permutation(len(uniq)))}
        perm = np.asarray(sorted(range(n), key=lambda i: (rank[groups[i]], i)))
        cuts = [k for k in range(1, n) if groups[perm[k]] != groups[perm[k - 1]]] + [n]
    a = round(n * s.train)
    b = a + round(n * s.selection)
    c = b + round(n * s.calibration)
    if cuts:
        a, b, c = (min(k for k in cuts if k >= t) for t in (a, b, c))
    return {"train": perm[:a], "selection": perm[a:b], "calibration": perm[b:c], "test": perm[c:]}


def run_seed(
    features: Features,
    outcomes: list[str],
    idk_outcomes: list[str] | None,
    config: HallucinationConfig,
    seed: int,
    progress: bool = False,
    conversations: tuple[list[str], list[int]] | None = None,
) -> tuple[dict[str, Any], DetectorEnsemble]:
    """Stage 4 for one random split: fit, select, calibrate, evaluate every method on the test split. With
    ``conversations`` (session id and turn index per question, CRAG-MM multi-turn), splits keep conversations
    whole and every method also gets the multi-turn truthfulness (early-stop rule, :func:`multi_turn_truthfulness`)
    of its answers after abstention."""
    det = config.detectors
    idx = split_indices(len(outcomes), config, seed, None if conversations is None else conversations[0])
    y = np.asarray([o == "correct" for o in outcomes], dtype=int)
    out = np.asarray(outcomes)
    tr, se, ca, te = (idx[k] for k in ("train", "selection", "calibration", "test"))
    ens = DetectorEnsemble(det.f1_threshold, det.pca_variance, det.C, det.layers, det.heads, seed=seed)
    ens.fit(features[tr], y[tr], features[se], y[se], progress=progress)
    test_out, cal_out = list(out[te]), list(out[ca])
    scores_cal: dict[str, np.ndarray] = {}
    scores_test: dict[str, np.ndarray] = {}
    scores_cal["logprob"], scores_test["logprob"] = features.mean_logprob[ca], features.mean_logprob[te]
    scores_cal["best_single"] = ens.best_probe_.predict_proba(features[ca].block(ens.best_key_))
    scores_test["best_single"] = ens.best_probe_.predict_proba(features[te].block(ens.best_key_))
    concat = Probe(det.pca_variance, det.C, seed=seed).fit(features[tr].concat(), y[tr])
    scores_cal["concat_probe"] = concat.predict_proba(features[ca].concat())
    scores_test["concat_probe"] = concat.predict_proba(features[te].concat())
    scores_cal["ensemble"], scores_test["ensemble"] = ens.predict_proba(features[ca]), ens.predict_proba(features[te])
    metrics: dict[str, dict[str, float]] = {"no_abstention": rates(test_out)}
    thresholds: dict[str, float] = {}
    for name in ("logprob", "best_single", "concat_probe", "ensemble"):
        t = (
            tune_threshold(cal_out, scores_cal[name])
            if not (name == "ensemble" and det.abstain_threshold)
            else float(
                det.abstain_threshold  # type: ignore[arg-type]
            )
        )
        thresholds[name] = t
        metrics[name] = {
            **rates(abstain_outcomes(test_out, scores_test[name], t)),
            "auroc": auroc(y[te], scores_test[name]),
        }
    metrics["ensemble_paper"] = rates(abstain_outcomes(test_out, scores_test["ensemble"], det.paper_threshold))
    if idk_outcomes is not None:
        metrics["idk_prompt"] = rates([idk_outcomes[i] for i in te])
    if conversations is not None:
        sess, turn = [conversations[0][i] for i in te], [conversations[1][i] for i in te]
        after = {
            "no_abstention": test_out,
            "ensemble_paper": abstain_outcomes(test_out, scores_test["ensemble"], det.paper_threshold),
        }
        after |= {m: abstain_outcomes(test_out, scores_test[m], thresholds[m]) for m in thresholds}
        if idk_outcomes is not None:
            after["idk_prompt"] = [idk_outcomes[i] for i in te]
        for m, outs in after.items():
            metrics[m]["multi_turn_truthfulness"] = multi_turn_truthfulness(outs, sess, turn)
    per_detector = ens.detector_proba(features[te])
    det_auc = {"/".join(map(str, k)): auroc(y[te], p) for k, p in per_detector.items()}
    result = {
        "seed": seed,
        "sizes": {k: len(v) for k, v in idx.items()},
        "test_correct_share": float(y[te].mean()),
        "metrics": metrics,
        "thresholds": thresholds,
        "n_detectors": len(ens.all_keys_),
        "kept": ["/".join(map(str, k)) for k in ens.kept_],
        "best_single": "/".join(map(str, ens.best_key_)),
        "selection_f1": {"/".join(map(str, k)): v for k, v in ens.selection_f1_.items()},
        "test_auroc": det_auc,
    }
    ens.abstain_threshold_ = thresholds["ensemble"]
    return result, ens


def _conversations(items: list[QAItem]) -> tuple[list[str], list[int]] | None:
    """Session id and turn index of every question when some CRAG-MM conversation has several turns (other
    questions are conversations of one turn); ``None`` otherwise (single-turn scoring only)."""
    sessions = [str(i.meta.get("session_id", f"q:{i.id}")) for i in items]
    if len(set(sessions)) == len(sessions):
        return None
    return sessions, [int(i.meta.get("turn", 0)) for i in items]


def _mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))])
    if not len(arr):
        return {"mean": float("nan"), "std": float("nan")}
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def aggregate(seed_results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over the random splits of every method's metrics."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for m in METHODS:
        rows = [r["metrics"][m] for r in seed_results if m in r["metrics"]]
        if rows:
            table[m] = {k: _mean_std([r.get(k, float("nan")) for r in rows]) for k in rows[0]}
    return table


def run_experiment(config: HallucinationConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the experiment; writes ``report.md``, ``results.json``, PNGs; returns the results dict."""
    import torch

    from llmboost.llm import load_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if config.model.threads:
        torch.set_num_threads(config.model.threads)
    items, prompts, idk_prompts = build_questions(config)
    data_fp = fingerprint_items(items)
    model = load_model(config.model.name, batch_size=config.model.batch_size)
    if not hasattr(model, "model"):
        raise ValueError(f"{config.model.name!r} is not a local model: tracing needs its activations")
    model_fp = model.fingerprint
    gen_key = digest((model_fp, data_fp, prompts, config.model.max_new_tokens, config.detectors.heads))
    features, texts = generate_features(model, prompts, config, out_dir / "generations" / gen_key, progress)
    idk_texts = None
    if config.idk_baseline:
        (out_dir / "idk").mkdir(exist_ok=True)
        idk_key = digest((model_fp, idk_prompts, config.model.max_new_tokens))
        idk_texts = generate_idk(model, idk_prompts, config, out_dir / "idk" / f"{idk_key}.json", progress)
    label_key = digest((gen_key, config.judge_url))
    label_path = out_dir / f"labels_{label_key}.json"
    if label_path.exists():
        labelled = json.loads(label_path.read_text())
    else:
        if config.judge_url:
            from llmboost.methods.hallucination.labels import LLMJudge

            judge = LLMJudge(config.judge_url)
            outcomes = judge.label([i.question for i in items], texts, [i.answers for i in items])
            idk_outcomes = (
                judge.label([i.question for i in items], idk_texts, [i.answers for i in items])
                if idk_texts is not None
                else None
            )
        else:
            outcomes = [label_answer(t, i.answers) for t, i in zip(texts, items, strict=True)]
            idk_outcomes = (
                [label_answer(t, i.answers) for t, i in zip(idk_texts, items, strict=True)]
                if idk_texts is not None
                else None
            )
        labelled = {"outcomes": outcomes, "idk_outcomes": idk_outcomes}
        write_json(label_path, labelled)
    outcomes, idk_outcomes = labelled["outcomes"], labelled["idk_outcomes"]
    write_json(
        out_dir / "answers.json",
        [
            {
                "id": i.id,
                "kind": i.kind,
                "question": i.question,
                "gold": i.answers[0],
                "answer": t,
                "outcome": o,
                "idk_answer": None if idk_texts is None else idk_texts[k],
                "mean_logprob": float(features.mean_logprob[k]),
            }
            for k, (i, t, o) in enumerate(zip(items, texts, outcomes, strict=True))
        ],
    )

    (out_dir / "seeds").mkdir(exist_ok=True)
    conversations = _conversations(items)
    det_key = digest((label_key, as_dict(config)["detectors"], as_dict(config)["split"] | {"seeds": None}))
    if conversations is not None:  # conversation-grouped splits differ from plain ones
        det_key = digest((det_key, "conversations"))
    seed_results = []
    first_ensemble = None
    for seed in tqdm(config.split.seeds, desc="splits", disable=not progress):
        path = out_dir / "seeds" / f"seed_{seed}_{det_key}.json"
        if path.exists() and (first_ensemble is not None or (out_dir / "reliability" / "ensemble.json").exists()):
            seed_results.append(json.loads(path.read_text()))
            continue
        res, ens = run_seed(features, outcomes, idk_outcomes, config, seed, progress, conversations)
        write_json(path, res)
        seed_results.append(res)
        if first_ensemble is None:
            first_ensemble = ens
            ens.save(
                out_dir / "reliability",
                model_fp,
                {"abstain_threshold": ens.abstain_threshold_, "split_seed": seed, "config": as_dict(config)},
            )
    table = aggregate(seed_results)
    n_layers = int(features.hidden.shape[1])
    n_heads = 0 if features.heads is None else int(features.heads.shape[2])
    heat = _heat(seed_results, n_layers, n_heads)
    plots = _plot(heat, out_dir)
    results = {
        "headline": {
            "truthfulness_ensemble": table["ensemble"]["truthfulness"]["mean"],
            "truthfulness_no_abstention": table["no_abstention"]["truthfulness"]["mean"],
            "truthfulness_best_baseline": max(
                table[m]["truthfulness"]["mean"] for m in ("logprob", "idk_prompt") if m in table
            ),
            "detectors_kept": _mean_std([len(r["kept"]) for r in seed_results])["mean"],
            "answer_accuracy": float(np.mean([o == "correct" for o in outcomes])),
        },
        "methods": table,
        "detectors": {
            "n_detectors": seed_results[0]["n_detectors"],
            "kept": _mean_std([len(r["kept"]) for r in seed_results]),
            "kept_per_seed": [r["kept"] for r in seed_results],
            "best_single_per_seed": [r["best_single"] for r in seed_results],
            "test_auroc_mean": {
                k: float(np.nanmean([r["test_auroc"].get(k, np.nan) for r in seed_results]))
                for k in seed_results[0]["test_auroc"]
            },
        },
        "per_seed": [{k: v for k, v in r.items() if k not in ("selection_f1", "test_auroc")} for r in seed_results],
        "n_questions": len(items),
        "question_kinds": {k: sum(i.kind == k for i in items) for k in sorted({i.kind for i in items})},
        "outcome_counts": {o: outcomes.count(o) for o in ("correct", "missing", "hallucinated")},
        "config": as_dict(config),
        "seeds": list(config.split.seeds),
        "data_fingerprint": data_fp,
        "model_fingerprint": model_fp,
        "model": config.model.name,
        "plots": plots,
        "seconds": time.time() - started,
    }
    write_json(out_dir / "results.json", results)
    (out_dir / "report.md").write_text(render_report(results))
    return results


def _heat(seed_results: list[dict[str, Any]], n_layers: int, n_heads: int) -> dict[str, np.ndarray]:
    auc = np.full((n_layers, n_heads + 1), np.nan)
    kept = np.zeros((n_layers, n_heads + 1))
    for layer in range(n_layers):
        for col in range(n_heads + 1):
            key = f"layer/{layer}" if col == 0 else f"head/{layer}/{col - 1}"
            vals = [r["test_auroc"].get(key) for r in seed_results]
            vals = [v for v in vals if v is not None and not math.isnan(v)]
            auc[layer, col] = np.mean(vals) if vals else np.nan
            kept[layer, col] = np.mean([key in r["kept"] for r in seed_results])
    return {"auroc": auc, "kept": kept}


def _plot(heat: dict[str, np.ndarray], out_dir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    for ax, (name, data, cmap) in zip(
        axes,
        [
            ("test AUROC (mean over splits)", heat["auroc"], "viridis"),
            ("share of splits where kept", heat["kept"], "Greens"),
        ],
        strict=True,
    ):
        im = ax.imshow(data, aspect="auto", cmap=cmap, origin="lower")
        ax.set_title(name)
        ax.set_xlabel("column 0: layer hidden state; column h+1: head h")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = out_dir / "detectors_auroc.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path.name]


def render_report(results: dict[str, Any]) -> str:
    """The Markdown report."""
    h, t = results["headline"], results["methods"]
    lines = [
        "# Hallucination-detector ensemble (arXiv 2510.14330) — measured report",
        "",
        f"Model `{results['model']}` (fingerprint `{results['model_fingerprint']}`), "
        f"{results['n_questions']} questions {results['question_kinds']} "
        f"(data fingerprint `{results['data_fingerprint']}`), greedy answers "
        f"{results['outcome_counts']}; {len(results['seeds'])} random train/selection/calibration/test "
        "splits "
        f"(seeds {results['seeds']}); {results['seconds']:.0f} s.",
        "",
        'CRAG-MM truthfulness = mean of +1 (correct), 0 (missing / "I don\'t know"), -1 (hallucinated), on the '
        "test split; mean ± std over the splits. Thresholds are tuned for truthfulness on the calibration split.",
        "",
    ]
    multi = any("multi_turn_truthfulness" in r for r in t.values())
    lines += [
        "| method | truthfulness | accuracy | missing | hallucination | AUROC (P(correct)) |"
        + (" multi-turn truthfulness |" if multi else ""),
        "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if multi else ""),
    ]
    for m in METHODS:
        if m not in t:
            continue
        r = t[m]

        def f(k: str, r: dict[str, dict[str, float]] = r) -> str:
            return "–" if k not in r or math.isnan(r[k]["mean"]) else f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}"

        lines.append(
            f"| {LABELS[m]} | {f('truthfulness')} | {f('accuracy')} | {f('missing')} | "
            f"{f('hallucination')} | {f('auroc')} |" + (f" {f('multi_turn_truthfulness')} |" if multi else "")
        )
    d = results["detectors"]
    best = sorted(d["test_auroc_mean"].items(), key=lambda kv: -np.nan_to_num(kv[1]))[:10]
    lines += [
        "",
        f"Detectors: {d['n_detectors']} fitted per split (one per layer, one per head); kept (selection F1 > "
        f"{results['config']['detectors']['f1_threshold']}): {d['kept']['mean']:.1f} ± {d['kept']['std']:.1f}. "
        f"Best single detector per split: {d['best_single_per_seed']}.",
        "",
        "Top-10 detectors by test AUROC (mean over splits): " + ", ".join(f"`{k}` {v:.3f}" for k, v in best),
        "",
        *[f"![{p}]({p})" for p in results["plots"]],
        "",
        f"Headline: ensemble truthfulness {h['truthfulness_ensemble']:.3f} vs {h['truthfulness_no_abstention']:.3f} "
        f"without abstention (paper, CRAG-MM with a VLM: 0.036 vs -0.528).",
        "",
    ]
    return "\n".join(lines)
