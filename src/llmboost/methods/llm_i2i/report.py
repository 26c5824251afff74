"""report.md and PNG plots of an LLM-I2I run."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(results: dict[str, Any], out_dir: Path) -> list[str]:
    """One PNG per dataset: Recall@K overall and on long-tail targets, per model and variant (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = results["config"]["ks"][0]
    names = []
    for name, info in results["datasets"].items():
        table = info["table"]
        models = list(dict.fromkeys(e["model"] for e in table))
        variants = list(dict.fromkeys(e["variant"] for e in table))
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        for ax, col in zip(axes, (f"Recall@{k}", f"long_tail/Recall@{k}"), strict=True):
            width = 0.8 / max(1, len(variants))
            for j, v in enumerate(variants):
                means = [
                    next((e[col]["mean"] for e in table if e["model"] == m and e["variant"] == v), np.nan)
                    for m in models
                ]
                stds = [
                    next((e[col]["std"] for e in table if e["model"] == m and e["variant"] == v), 0.0) for m in models
                ]
                ax.bar(np.arange(len(models)) + j * width, means, width, yerr=stds, label=v)
            ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2, models)
            ax.set_title(f"{name}: {col}")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        file = f"{name}_recall.png"
        fig.savefig(out_dir / file, dpi=100)
        plt.close(fig)
        names.append(file)
    return names


def _timings_line(info: dict[str, Any]) -> str:
    """Stage seconds of this run next to those of the first run that completed each stage (cold)."""
    first = info.get("first_run_timings", {})
    parts = [
        f"{stage.removesuffix('_s').replace('_', ' ')} {seconds:.1f}"
        + (f" / {first[stage]:.1f}" if stage in first else "")
        for stage, seconds in info["timings"].items()
    ]
    return "- stage seconds (this run / first run that completed the stage): " + ", ".join(parts)


def _fmt(stat: dict[str, float], column: str = "") -> str:
    """Mean ± std over seeds: hit counts with one decimal, rates with four."""
    digits = 1 if "hits@" in column else 4
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def write_report(results: dict[str, Any], out_dir: Path, plots: list[str]) -> Path:
    cfg = results["config"]
    ks = cfg["ks"]
    lines = [
        "# LLM-I2I report",
        "",
        f"Seeds {results['seeds']}; full ranking, leave-one-out test; {results['seconds']:.0f} s in all.",
        "",
    ]
    for name, info in results["datasets"].items():
        lines += [
            f"## {name}",
            "",
            f"Data fingerprint `{info['data_fingerprint']}`; long-tail items "
            f"{info['long_tail_items']}; items without text {info['items_without_text']}.",
            "",
        ]
        cols = [c for k in ks for c in (f"Recall@{k}", f"long_tail/Recall@{k}", f"hits@{k}", f"long_tail/hits@{k}")]
        lines.append(
            "| model | variant | " + " | ".join(cols) + " | real dropped | synthetic kept | p (user Wilcoxon, "
            f"Recall@{ks[0]} / tail) |"
        )
        lines.append("|" + "---|" * (len(cols) + 5))
        for e in info["table"]:
            tests = e.get("tests_vs_base", {})
            p = (
                " / ".join(
                    f"{tests[c]['user_wilcoxon_p']:.3g}"
                    for c in (f"Recall@{ks[0]}", f"long_tail/Recall@{ks[0]}")
                    if c in tests
                )
                or "–"
            )
            lines.append(
                f"| {e['model']} | {e['variant']} | "
                + " | ".join(_fmt(e[c], c) for c in cols)
                + f" | {e.get('real_dropped', 0):.0f} | {e.get('synthetic_kept', 0):.0f} | {p} |"
            )
        lines.append("")
        for seed, s in info.get("seeds", {}).items():
            parts = []
            if "generator" in s:
                g, p = s["generator"], s["preselect_only"]
                parts.append(
                    f"synthetic events {s['synthetic_events']}, generator hit rate {g['hit_rate']:.3f} "
                    f"({g['hits']:.0f} hits; pre-selection alone {p['hit_rate']:.3f})"
                )
            if "head_auc" in s:
                parts.append(
                    f"head discriminator AUC {s['head_auc']:.3f} (text cosine alone {s['text_cosine_auc']:.3f})"
                )
            lines.append(f"- seed {seed}: " + "; ".join(parts) + (f" — notes: {s['notes']}" if s.get("notes") else ""))
        if "llm_judge" in info:
            j = info["llm_judge"]
            lines.append(
                f"- LLM yes/no judge (fine-tuned: {j['finetuned']}): AUC {j['auc']:.3f} on {j['pairs']} held-out pairs"
            )
        lines += [f"- notes: {info['notes']}" if info["notes"] else "", _timings_line(info), ""]
    lines += [f"![{p}]({p})" for p in plots]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
