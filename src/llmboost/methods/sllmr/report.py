"""The S-LLMR report: tables in ``report.md`` and gate-activation plots (PNG) in the output folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from llmboost.methods.sllmr.config import SLLMRConfig


def _f(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def _ms(stats: dict[str, dict[str, float]], key: str) -> str:
    s = stats.get(key)
    return "–" if s is None else f"{_f(s['mean'])} ± {_f(s['std'])}"


def plot_activation(results: dict[str, Any], out_dir: Path) -> list[str]:
    """``gate_activation_<backbone>.png``: mean gate activation by history length and by item popularity."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = []
    for backbone, stats in results["gate_activation"].items():
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, key, label in zip(
            axes,
            ("history_length", "item_popularity"),
            ("user history length (train events)", "popularity of the less popular item"),
            strict=True,
        ):
            bins = stats[key]
            ax.bar(range(len(bins)), [b["activation"] for b in bins], color="tab:blue")
            ax.set_xticks(range(len(bins)), [f"{b['low']:.0f}-{b['high']:.0f}" for b in bins], rotation=30, fontsize=8)
            ax.set(xlabel=label, ylabel="mean gate activation", ylim=(0, 1))
            ax.grid(alpha=0.3, axis="y")
        fig.suptitle(f"S-LLMR gate activation ({backbone}, teacher {results['config']['teacher']})")
        fig.tight_layout()
        name = f"gate_activation_{backbone}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def write_report(results: dict[str, Any], config: SLLMRConfig, out_dir: Path) -> Path:
    """Write ``report.md`` (and plots) from the results dict."""
    lines = [
        f"# S-LLMR report: {config.source}",
        "",
        f"Seeds {config.seeds}; data fingerprint `{results['data_fingerprint']}`; teacher of the main runs: "
        f"`{config.teacher}`; lambda {config.lam}, target {config.target}, gate mode {config.gate.mode}; "
        f"wall time {results['seconds'] / 60:.1f} min.",
        "",
        f"Candidates: {results['candidates']['users']} users x {results['candidates']['per_user_candidates']} "
        f"candidates (top-{config.n_candidates} of the reference backbone + validation positive + one sampled "
        f"negative) = {results['candidates']['pairs']} pairs, of which {results['candidates']['labelled_pairs']} "
        "labelled (validation item vs another candidate: gate training/evaluation only).",
        "",
        "## Test metrics (mean ± std over seeds, full ranking)",
        "",
        "| backbone/variant | NDCG@10 | Recall@10 | AUC | cold NDCG@10 | cold Recall@10 | tail NDCG@10 "
        "| tail Recall@10 | act. rate | s/epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, stats in results["aggregate"].items():
        lines.append(
            f"| {key} | {_ms(stats, 'NDCG@10')} | {_ms(stats, 'Recall@10')} | {_ms(stats, 'AUC')} | "
            f"{_ms(stats, 'cold_users/NDCG@10')} | {_ms(stats, 'cold_users/Recall@10')} | "
            f"{_ms(stats, 'long_tail/NDCG@10')} | {_ms(stats, 'long_tail/Recall@10')} | "
            f"{_f(stats.get('activation_rate', {}).get('mean'), 3)} | "
            f"{_f(stats.get('seconds_per_epoch', {}).get('mean'), 3)} |"
        )
    lines += [
        "",
        "## Paired test vs the backbone (Wilcoxon signed-rank over users, seed-averaged NDCG@10)",
        "",
        "Rows `<backbone>/selective-vs-global` compare the learned gate with global distillation instead.",
        "",
        "| backbone/variant | users | mean diff | p | cold users | mean diff | p | long tail | mean diff | p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, row in results["significance"].items():
        cells = []
        for s in ("all", "cold_users", "long_tail"):
            r = row[s]
            cells += [str(r["users"]), _f(r["mean_diff"], 5), _f(r["p_value"], 3)]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Teachers: pairwise accuracy on labelled pairs (validation item vs another candidate)",
        "",
        "Same pairs for the teacher, the reference backbone (trained without the regularizer) and item popularity.",
        "",
        "| backbone | teacher | slice | pairs | teacher | backbone | popularity |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for backbone, table in results.get("teachers_accuracy", {}).items():
        for teacher, rows in table.items():
            for slice_name, r in rows.items():
                lines.append(
                    f"| {backbone} | {teacher} | {slice_name} | {r['pairs']} | {_f(r['teacher'], 3)} | "
                    f"{_f(r['backbone'], 3)} | {_f(r['popularity'], 3)} |"
                )
    lines += [
        "",
        "Teacher cost: "
        + "; ".join(
            f"{t}: {v['users']} users, {v['pairs']} pairs, {v['seconds']:.0f} s" for t, v in results["teachers"].items()
        )
        + ".",
        "",
        "## Gate: AUC at predicting teacher correctness",
        "",
        "| backbone/teacher or ablation | held-out AUC | train AUC |",
        "| --- | --- | --- |",
    ]
    for key, g in results["gate"].items():
        lines.append(f"| {key} | {_f(g['auc_heldout'], 3)} | {_f(g['auc_train'], 3)} |")
    lines += ["", "## Gate activation", ""]
    for name in plot_activation(results, out_dir):
        lines.append(f"![{name}]({name})")
    for backbone, stats in results["gate_activation"].items():
        for key, bins in stats.items():
            lines.append(
                f"- {backbone}, by {key}: "
                + ", ".join(
                    f"[{b['low']:.0f}, {b['high']:.0f}] {b['activation']:.2f} ({b['pairs']} pairs)" for b in bins
                )
            )
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
