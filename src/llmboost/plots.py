"""Plots of a run folder: training curves per seed and metrics per slice (the ``plot`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

from llmboost._optional import require


def plot_run(run: str | Path, metric: str = "NDCG@10") -> list[Path]:
    """Write ``curves.png`` (training loss and validation NDCG@10 by epoch, one line per seed) and
    ``slices.png`` (``metric`` overall, on cold-start users and on long-tail targets, mean ± std over
    seeds) into the run folder; returns their paths."""
    matplotlib = require("matplotlib", "plot")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "plot")
    run = Path(run)
    metrics = json.loads((run / "metrics.json").read_text())
    written = []

    fig, (loss_ax, valid_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for seed in metrics["seeds"]:
        history = json.loads((run / f"seed-{seed}" / "history.json").read_text())
        if not history:
            continue
        epochs = [h["epoch"] + 1 for h in history]
        loss_ax.plot(epochs, [h["loss"] for h in history], label=f"seed {seed}")
        if "valid_NDCG@10" in history[0]:
            valid_ax.plot(epochs, [h["valid_NDCG@10"] for h in history], label=f"seed {seed}")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    valid_ax.set(xlabel="epoch", ylabel="NDCG@10", title="Validation NDCG@10 (early stopping)")
    for ax in (loss_ax, valid_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(run.name)
    fig.tight_layout()
    written.append(run / "curves.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    names = [
        ("overall", metric),
        ("cold-start users", f"cold_users/{metric}"),
        ("long-tail targets", f"long_tail/{metric}"),
    ]
    present = [(label, key) for label, key in names if key in metrics["metrics"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    means = [metrics["metrics"][key]["mean"] for _, key in present]
    stds = [metrics["metrics"][key]["std"] for _, key in present]
    ax.bar([label for label, _ in present], means, yerr=stds, capsize=6, color=["#4c72b0", "#dd8452", "#55a868"])
    ax.set(ylabel=f"test {metric}", title=f"{run.name}\nmean ± std over {len(metrics['seeds'])} seed(s)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    written.append(run / "slices.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written
