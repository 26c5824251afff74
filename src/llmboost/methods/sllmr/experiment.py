"""The S-LLMR experiment: offline supervision, gate, regularized training of every variant, report.

Stages (each resumable; a finished stage is reused only when its settings are unchanged):

1. data: load, leave-one-out split, slices (cold users, long-tail items);
2. reference backbone (seed 0, no regularizer): candidates (top-N) and the gate's backbone features;
3. teachers: candidates scored once into the score store (``run_job``; resumable after any crash);
4. gate: fitted on labelled (validation-item) pairs of 70% of users, AUC on the other 30%;
5. training: every variant x seed, test evaluation with per-user metrics;
6. report: metrics mean ± std, paired Wilcoxon test over users, teacher vs backbone accuracy per slice,
   gate AUC, gate activation plots.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from llmboost.config import to_dict
from llmboost.jsonio import digest, to_jsonable, write_json
from llmboost.methods.sllmr.candidates import Candidates, Pairs, build_candidates, make_pairs, select_users
from llmboost.methods.sllmr.config import SLLMRConfig
from llmboost.methods.sllmr.gate import FeatureContext, GateModel, auc, feature_matrix
from llmboost.methods.sllmr.loss import SelectiveRegularizer, attach, backbone_pair_stats
from llmboost.methods.sllmr.teachers import (
    ChoiceTeacher,
    EmbeddingTeacher,
    Judgements,
    LikelihoodTeacher,
    SupervisionError,
    Teacher,
    finetune_likelihood_teacher,
    item_texts,
)

logger = logging.getLogger(__name__)
METRICS = ("NDCG@10", "Recall@10", "AUC")


# ---------------------------------------------------------------------------------------------- stages


def prepare_data(config: SLLMRConfig) -> dict[str, Any]:
    """Dataset, leave-one-out split and slices."""
    from llmboost.data import load_dataset
    from llmboost.splitting import leave_one_out, make_slices

    dataset = load_dataset(config.source, format=config.format)
    split = leave_one_out(dataset)
    slices = make_slices(split.train, cold_user_fraction=config.cold_user_fraction, head_fraction=config.head_fraction)
    return {"dataset": dataset, "split": split, "slices": slices, "fingerprint": dataset.fingerprint()}


def build_backbone(name: str, config: SLLMRConfig, seed: int) -> Any:
    from llmboost.models import build

    params = dict(config.backbone_params.get(name, {}))
    params |= {"seed": seed, "progress": False}
    if config.epochs is not None:  # a per-backbone ``backbone_params.<name>.epochs`` wins over the global cap
        params.setdefault("epochs", config.epochs)
    return build(name, **params)


def reference_path(name: str, config: SLLMRConfig, data: dict[str, Any], out: Path) -> Path:
    """Where the reference backbone of these settings and data is cached."""
    key = digest([name, config.backbone_params.get(name, {}), config.epochs, data["fingerprint"]])
    return out / "stages" / f"reference-{name}-{key}.pt"


def reference_backbone(name: str, config: SLLMRConfig, data: dict[str, Any], out: Path) -> Any:
    """The backbone trained once without the regularizer (seed 0); cached on disk by its settings."""
    from llmboost.models import Recommender

    path = reference_path(name, config, data, out)
    if path.exists():
        return Recommender.load(path)
    split = data["split"]
    model = build_backbone(name, config, 0).fit(split.train, split.valid)
    model.save(path)
    return model


def make_teacher(
    name: str, config: SLLMRConfig, data: dict[str, Any], texts: list[str], out: Path, users: np.ndarray
) -> Teacher:
    """A teacher by name (see :data:`~llmboost.methods.sllmr.config.TEACHERS`)."""
    from llmboost.llm.models import load_model

    kind = "movies" if "movielens" in config.source.lower() or "ml-" in config.source.lower() else "items"
    if name == "embedding":
        return EmbeddingTeacher(config.embedding_model, max_history=config.max_history)
    if name == "served":
        model = load_model(config.served_model or "")
        if config.served_kind == "choice":
            return ChoiceTeacher(model, "served", config.max_history, kind, config.llm_batch_size)
        return LikelihoodTeacher(
            model, "served", config.max_history, config.likelihood_norm, config.temperature, kind, config.llm_batch_size
        )
    setting = config.llm_model
    if name == "likelihood_lora":
        rng = np.random.default_rng(config.subset_seed + 1)
        pool = np.setdiff1d(np.flatnonzero(data["split"].train.user_counts() >= config.min_history), users)
        pool = pool if len(pool) else users
        chosen = np.sort(rng.choice(pool, min(config.lora_users, len(pool)), replace=False))
        setting = str(
            finetune_likelihood_teacher(
                config.llm_model,
                data["split"].train,
                texts,
                chosen,
                out / "stages" / "lora",
                config.max_history,
                config.lora_last_n,
                config.lora_steps,
                config.subset_seed,
                kind,
            )
        )
    model = load_model(setting, batch_size=16, max_batch_tokens=2048)
    if name == "choice":
        return ChoiceTeacher(model, "choice", config.max_history, kind, config.llm_batch_size)
    return LikelihoodTeacher(
        model, name, config.max_history, config.likelihood_norm, config.temperature, kind, config.llm_batch_size
    )


def supervision(config: SLLMRConfig, data: dict[str, Any], reference: Any, out: Path, progress: bool) -> dict[str, Any]:
    """Candidates, pairs and each teacher's judgements (scored into the store once)."""
    from llmboost.llm.store import ScoreStore

    split = data["split"]
    users = select_users(split.train, split.valid, config.embedding_users, config.min_history, config.subset_seed)
    if len(users) == 0:
        raise SupervisionError(f"no user has >= {config.min_history} training events and a validation item")
    top, _ = reference.recommend(users, k=config.n_candidates, exclude_seen=True, history=split.train)
    cands = build_candidates(top, users, split.train, split.valid, config.subset_seed)
    pairs = make_pairs(cands)
    llm_users = select_users(split.train, split.valid, config.llm_users, config.min_history, config.subset_seed)
    llm_users = np.intersect1d(llm_users, users)
    choice_users = choice_subset(llm_users, config.choice_users, config.subset_seed)
    write_json(
        out / "stages" / "subsets.json",
        {
            "rule": "uniform random (subset_seed) among users with >= min_history training events and a validation "
            "item; choice users: a uniform random subset of the LLM users (subset_seed + 2)",
            "subset_seed": config.subset_seed,
            "embedding_users": users,
            "llm_users": llm_users,
            "choice_users": choice_users,
        },
    )
    texts_emb = item_texts(data["dataset"], config.item_fields)
    texts_llm = item_texts(data["dataset"], ["title"])
    store = ScoreStore(config.store or out / "scores.sqlite")
    judged: dict[str, dict[str, Any]] = {}
    fingerprints: dict[str, str] = {}
    for name in config.teachers:
        started = time.perf_counter()
        scored = choice_users if asks_choice(name, config) else llm_users
        rows = np.arange(len(cands)) if name == "embedding" else np.flatnonzero(np.isin(cands.users, scored))
        sub = cands.subset(rows)
        mask = np.isin(pairs.row, rows)
        sub_pairs = pairs.take(mask)
        remap = np.full(len(cands), -1)
        remap[rows] = np.arange(len(rows))
        sub_pairs.row = remap[sub_pairs.row]
        teacher = make_teacher(name, config, data, texts_llm, out, llm_users)
        texts = texts_emb if name == "embedding" else texts_llm
        j = teacher.judge(sub, sub_pairs, split.train, texts, store, progress=progress)
        fingerprints[name] = getattr(getattr(teacher, "model", None), "fingerprint", None) or teacher.fingerprint
        judged[name] = {"mask": mask, "judgements": j, "seconds": time.perf_counter() - started, "users": len(rows)}
        logger.info("teacher %s: %d users, %d pairs, %.1fs", name, len(rows), int(mask.sum()), judged[name]["seconds"])
    store.close()
    return {"cands": cands, "pairs": pairs, "judged": judged, "fingerprints": fingerprints}


def candidates_summary(cands: Candidates, pairs: Pairs) -> dict[str, int]:
    """The counts of the candidate stage that every report shows."""
    return {
        "users": len(cands),
        "pairs": len(pairs),
        "labelled_pairs": int(pairs.labelled.sum()),
        "per_user_candidates": int(cands.items.shape[1]),
    }


def asks_choice(teacher: str, config: SLLMRConfig) -> bool:
    """Whether ``teacher`` is asked A/B questions (the choice teacher, or the served one with ``served_kind``
    ``choice``): those teachers score only the ``choice_users`` subset."""
    return teacher == "choice" or (teacher == "served" and config.served_kind == "choice")


def choice_subset(llm_users: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """The A/B teacher's users: a seeded uniform random subset of ``n`` LLM users (sorted); all when None."""
    if n is None or n >= len(llm_users):
        return llm_users
    return np.sort(np.random.default_rng(seed + 2).choice(llm_users, n, replace=False))


def test_items(split: Any, n_users: int) -> np.ndarray:
    out = np.full(n_users, -1, dtype=np.int64)
    out[split.test.users] = split.test.items
    return out


def fit_gate(
    config: SLLMRConfig,
    data: dict[str, Any],
    pairs: Pairs,
    judgements: Judgements,
    margin: np.ndarray,
    mc_std: np.ndarray,
    features: list[str],
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the gate on labelled pairs of a user split; weights for the regularization pairs."""
    ctx = FeatureContext(pairs, judgements, data["split"].train, margin, mc_std)
    x = feature_matrix(ctx, features)
    correct = (judgements.prob > 0.5).astype(np.float64)
    labelled = pairs.labelled
    users = np.unique(pairs.user)
    rng = np.random.default_rng(config.subset_seed + 7)
    held = rng.choice(users, round(config.gate.heldout_fraction * len(users)), replace=False)
    is_held = np.isin(pairs.user, held)
    fit_rows, eval_rows = labelled & ~is_held, labelled & is_held
    g = config.gate
    gate = GateModel(g.hidden, g.epochs, g.lr, g.weight_decay, seed).fit(x[fit_rows], correct[fit_rows])
    activation = gate.predict(x)
    weight = activation if g.mode == "soft" else (activation > g.threshold).astype(np.float64)
    return {
        "gate": gate,
        "activation": activation,
        "weight": weight,
        "correct": correct,
        "auc_heldout": auc(correct[eval_rows], activation[eval_rows]),
        "auc_train": auc(correct[fit_rows], activation[fit_rows]),
        "n_fit": int(fit_rows.sum()),
        "n_heldout": int(eval_rows.sum()),
    }


def variant_weights(
    variant: str, base: dict[str, Any], pairs: Pairs, prob: np.ndarray, test_item: np.ndarray, seed: int
) -> np.ndarray:
    """Per regularization pair weight for a variant built on the learned gate ``base``."""
    w = base["weight"]
    if variant == "global":
        return np.ones_like(w)
    if variant == "random":  # the learned weights shuffled over the regularization pairs: same activation rate
        w = w.copy()
        reg = ~pairs.labelled
        w[reg] = np.random.default_rng(seed + 1000).permutation(w[reg])
        return w
    if variant == "oracle":
        t = test_item[pairs.user]
        right_i = (pairs.item_i == t) & (prob > 0.5)
        right_j = (pairs.item_j == t) & (prob < 0.5)
        return (right_i | right_j).astype(np.float64)
    return w


def train_variant(
    backbone: str,
    variant: str,
    seed: int,
    config: SLLMRConfig,
    data: dict[str, Any],
    term: SelectiveRegularizer | None,
    folder: Path,
    setting: dict[str, Any],
) -> dict[str, Any]:
    """Train one backbone (with the term, if any) and evaluate on test; reuses a finished folder with the same
    setting."""
    from llmboost.evaluation import evaluate

    done = folder / "summary.json"
    if done.exists() and json.loads((folder / "setting.json").read_text()) == json.loads(
        json.dumps(setting, default=to_jsonable)
    ):
        return json.loads(done.read_text())
    split, slices = data["split"], data["slices"]
    model = build_backbone(backbone, config, seed)
    if term is not None:
        attach(model, term)
    started = time.perf_counter()
    model.fit(split.train, split.valid)
    seconds = time.perf_counter() - started
    result = evaluate(model, split, "test", ks=(10,), slices=slices)
    folder.mkdir(parents=True, exist_ok=True)
    result.per_user.to_csv(folder / "per_user.csv", index=False)
    epochs = len(model.history_)
    summary = result.summary() | {
        "train_seconds": seconds,
        "epochs": epochs,
        "seconds_per_epoch": float(np.mean([h["train_seconds"] for h in model.history_])) if epochs else float("nan"),
        "n_params": int(sum(p.numel() for p in model.network_.parameters())),
        "class": type(model).__name__,
    }
    write_json(folder / "setting.json", setting)
    write_json(done, summary)
    return summary


def expand_variants(variants: list[str], config: SLLMRConfig) -> list[str]:
    out = []
    for v in variants:
        if v == "no_feature":
            out += [f"no_{f}" for f in config.gate.features]
        elif v == "teachers":
            out += [f"teacher_{t}" for t in config.teachers if t != config.teacher]
        else:
            out.append(v)
    return out


# ---------------------------------------------------------------------------------------------- main


def run_experiment(config: SLLMRConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Run every stage and write ``report.md``, PNG plots and ``results.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, config.threads))
    (out_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2))
    started = time.perf_counter()
    data = prepare_data(config)
    split, slices = data["split"], data["slices"]
    references = {b: reference_backbone(b, config, data, out_dir) for b in config.backbones}
    sup = supervision(config, data, references[config.backbones[0]], out_dir, progress)
    pairs: Pairs = sup["pairs"]
    cands: Candidates = sup["cands"]
    test_item = test_items(split, split.n_users)
    results: dict[str, Any] = {
        "config": to_dict(config),
        "seeds": list(config.seeds),
        "data_fingerprint": data["fingerprint"],
        "model_fingerprint": sup["fingerprints"],
        "candidates": candidates_summary(cands, pairs),
        "teachers": {},
        "gate": {},
        "runs": {},
    }
    for t, info in sup["judged"].items():
        results["teachers"][t] = {"users": info["users"], "pairs": int(info["mask"].sum()), "seconds": info["seconds"]}
    per_user: dict[tuple[str, str], list[pd.DataFrame]] = {}
    gate_activation: dict[str, dict[str, Any]] = {}
    for backbone in config.backbones:
        reference = references[backbone]
        margin, mc = backbone_pair_stats(
            reference, pairs.user, pairs.item_i, pairs.item_j, config.gate.mc_samples, config.gate.mc_dropout
        )
        gates: dict[str, dict[str, Any]] = {}
        teacher_rows: dict[str, Any] = {}
        for t, info in sup["judged"].items():
            m = info["mask"]
            sub = pairs.take(m)
            j: Judgements = info["judgements"]
            gates[t] = fit_gate(config, data, sub, j, margin[m], mc[m], config.gate.features)
            teacher_rows[t] = accuracy_table(sub, j, margin[m], data)
            results["gate"][f"{backbone}/{t}"] = {
                k: gates[t][k] for k in ("auc_heldout", "auc_train", "n_fit", "n_heldout")
            }
        results["teachers_accuracy"] = results.get("teachers_accuracy", {}) | {backbone: teacher_rows}
        main = gates[config.teacher]
        main_mask, main_j = sup["judged"][config.teacher]["mask"], sup["judged"][config.teacher]["judgements"]
        main_pairs = pairs.take(main_mask)
        gate_activation[backbone] = activation_stats(main_pairs, main["activation"], data)
        variants = expand_variants(config.variants if backbone == "bprmf" else config.sasrec_variants, config)
        for variant in variants:
            for seed in config.seeds:
                teacher, base, sel = config.teacher, main, main_mask
                if variant.startswith("teacher_"):
                    teacher = variant.removeprefix("teacher_")
                    base, sel = gates[teacher], sup["judged"][teacher]["mask"]
                if variant.startswith("no_"):
                    feats = [f for f in config.gate.features if f != variant.removeprefix("no_")]
                    base = fit_gate(config, data, main_pairs, main_j, margin[main_mask], mc[main_mask], feats)
                    results["gate"][f"{backbone}/{variant}"] = {k: base[k] for k in ("auc_heldout", "auc_train")}
                j = sup["judged"][teacher]["judgements"]
                sub = pairs.take(sel)
                reg = ~sub.labelled
                term = None
                if variant != "backbone":
                    w = variant_weights(variant, base, sub, j.prob, test_item, seed)
                    term = SelectiveRegularizer(
                        split.n_users,
                        sub.user[reg],
                        sub.item_i[reg],
                        sub.item_j[reg],
                        j.prob[reg],
                        w[reg],
                        config.lam,
                        config.target,
                    )
                setting = {
                    "backbone": backbone,
                    "variant": variant,
                    "seed": seed,
                    "data": data["fingerprint"],
                    "params": config.backbone_params.get(backbone, {}),
                    "epochs": config.epochs,
                    "teacher": teacher,
                    "fp": sup["fingerprints"].get(teacher),
                    "lam": config.lam,
                    "target": config.target,
                    "gate": asdict(config.gate),
                    "n_candidates": config.n_candidates,
                    "users": [config.llm_users, config.embedding_users, config.subset_seed, config.min_history]
                    + ([config.choice_users] if asks_choice(teacher, config) else [])
                    + ([config.served_kind] if teacher == "served" else []),
                    "max_history": config.max_history,
                    "temperature": config.temperature,
                    "norm": config.likelihood_norm,
                    "fields": config.item_fields,
                }
                folder = out_dir / "runs" / backbone / variant / f"seed-{seed}"
                summary = train_variant(backbone, variant, seed, config, data, term, folder, setting)
                if term is not None:
                    summary["activation_rate"] = term.activation_rate
                results["runs"].setdefault(f"{backbone}/{variant}", []).append(summary)
                per_user.setdefault((backbone, variant), []).append(pd.read_csv(folder / "per_user.csv"))
                if progress:
                    logger.info("%s/%s seed %d: NDCG@10 %.4f", backbone, variant, seed, summary["NDCG@10"])
    results["aggregate"] = aggregate_runs(results["runs"])
    results["significance"] = significance(per_user, slices)
    results["gate_activation"] = gate_activation
    results["seconds"] = time.perf_counter() - started
    results["headline"] = headline(results, config)
    from llmboost.methods.sllmr.report import write_report

    write_report(results, config, out_dir)
    write_json(out_dir / "results.json", results)
    return json.loads(json.dumps(results, default=to_jsonable))


# ---------------------------------------------------------------------------------------------- analysis


def accuracy_table(
    pairs: Pairs, j: Judgements, margin: np.ndarray, data: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Teacher, reference backbone and popularity accuracy on the same labelled pairs, per slice."""
    split, slices = data["split"], data["slices"]
    lab = pairs.labelled
    pop = split.train.item_counts()
    rows = {
        "all": lab,
        "cold_users": lab & slices.cold_users[pairs.user],
        "warm_users": lab & ~slices.cold_users[pairs.user],
        "long_tail_target": lab & slices.long_tail_items[pairs.item_i],
        "head_target": lab & ~slices.long_tail_items[pairs.item_i],
    }
    out = {}
    for name, m in rows.items():
        n = int(m.sum())
        out[name] = {
            "pairs": n,
            "teacher": float(np.mean(j.prob[m] > 0.5)) if n else float("nan"),
            "backbone": float(np.mean(margin[m] > 0)) if n else float("nan"),
            "popularity": float(np.mean(pop[pairs.item_i[m]] > pop[pairs.item_j[m]])) if n else float("nan"),
        }
    return out


def activation_stats(pairs: Pairs, activation: np.ndarray, data: dict[str, Any]) -> dict[str, Any]:
    """Mean gate activation by user history length and by the less popular item's popularity (quantile bins)."""
    train = data["split"].train
    hist = train.user_counts()[pairs.user]
    pop = np.minimum(train.item_counts()[pairs.item_i], train.item_counts()[pairs.item_j])
    out = {}
    for name, values in (("history_length", hist), ("item_popularity", pop)):
        edges = np.unique(np.quantile(values, np.linspace(0, 1, 6)))
        bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, max(0, len(edges) - 2))
        out[name] = [
            {
                "low": float(edges[b]),
                "high": float(edges[min(b + 1, len(edges) - 1)]),
                "pairs": int((bins == b).sum()),
                "activation": float(activation[bins == b].mean()),
            }
            for b in range(max(1, len(edges) - 1))
            if (bins == b).any()
        ]
    return out


def aggregate_runs(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, float]]]:
    out = {}
    for key, summaries in runs.items():
        stats = {}
        for metric in [m for m in summaries[0] if isinstance(summaries[0][m], int | float)]:
            v = np.array([s.get(metric, np.nan) for s in summaries], dtype=np.float64)
            finite = v[np.isfinite(v)]
            stats[metric] = {
                "mean": float(finite.mean()) if len(finite) else float("nan"),
                "std": float(finite.std(ddof=1)) if len(finite) > 1 else 0.0,
                "n": len(finite),
            }
        out[key] = stats
    return out


def significance(per_user: dict[tuple[str, str], list[pd.DataFrame]], slices: Any) -> dict[str, Any]:
    """Paired Wilcoxon signed-rank test over users of seed-averaged NDCG@10, each variant vs its backbone
    (and ``<backbone>/selective-vs-global``: the learned gate vs global distillation), overall, on cold users
    and on long-tail targets."""
    from scipy.stats import wilcoxon

    out: dict[str, Any] = {}

    def mean_over_seeds(frames: list[pd.DataFrame], col: str) -> pd.Series:
        return pd.concat([f.set_index("user")[col] for f in frames], axis=1).mean(axis=1)

    comparisons = [
        (f"{b}/{v}", frames, per_user[(b, "backbone")])
        for (b, v), frames in per_user.items()
        if v != "backbone" and (b, "backbone") in per_user
    ]
    comparisons += [  # the paper's claim against global distillation (Sec. 4), paired the same way
        (f"{b}/selective-vs-global", frames, per_user[(b, "global")])
        for (b, v), frames in per_user.items()
        if v == "selective" and (b, "global") in per_user
    ]
    for key, frames, base in comparisons:
        row = {}
        for label, col, filt in (
            ("all", "NDCG@10", None),
            ("cold_users", "NDCG@10", "cold"),
            ("long_tail", "long_tail/NDCG@10", None),
        ):
            a, b = mean_over_seeds(frames, col), mean_over_seeds(base, col)
            if filt == "cold":
                cold = frames[0].set_index("user")["cold_user"].astype(bool)
                a, b = a[cold], b[cold]
            both = pd.concat([a, b], axis=1).dropna()
            diff = both.iloc[:, 0] - both.iloc[:, 1]
            if len(both) == 0:
                row[label] = {"users": 0, "mean_diff": float("nan"), "p_value": float("nan"), "note": "empty slice"}
                continue
            p = float(wilcoxon(both.iloc[:, 0], both.iloc[:, 1]).pvalue) if (diff != 0).any() else 1.0
            row[label] = {"users": len(both), "mean_diff": float(diff.mean()), "p_value": p}
        out[key] = row
    return out


def headline(results: dict[str, Any], config: SLLMRConfig) -> dict[str, Any]:
    agg = results["aggregate"]
    out: dict[str, Any] = {}
    for key, stats in agg.items():
        if key.split("/")[1] in ("backbone", "selective", "global", "random", "oracle"):
            out[f"{key}/NDCG@10"] = stats["NDCG@10"]["mean"]
    for key, g in results["gate"].items():
        if key.endswith("/" + config.teacher):
            out[f"gate_auc/{key}"] = g["auc_heldout"]
    for key, sig in results["significance"].items():
        if key.endswith(("/selective", "/selective-vs-global")):
            out[f"p_value/{key}"] = sig["all"]["p_value"]
    return out
