"""Time to equal validation accuracy from the per-epoch JSON lines of ``bench_curves.py``; writes a
markdown table and a PNG of the curves. Times are process CPU seconds of training (the fair clock on a
shared machine; rows without them, from before 2026-12-01 04:00, fall back to wall seconds) with wall
seconds beside them.

    python benchmarks/summarize_curves.py benchmarks/results/curves-*.jsonl --plot docs/benchmarks-curves.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

LEVELS = (0.5, 0.75, 0.9, 0.95, 1.0)  # fractions of the lower of the two best validation NDCG@10


def load(paths: list[Path]) -> dict[tuple, list[dict]]:
    curves: dict[tuple, list[dict]] = defaultdict(list)
    for path in paths:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            setting = row["setting"] + (f" lr {row['lr']:g}" if row.get("lr") else "")
            setting += f" dropout {row['dropout']:g}" if row.get("dropout") is not None else ""
            curves[(row["model"], row["system"], setting, row["seed"])].append(row)
    return {k: sorted(v, key=lambda r: r["epoch"]) for k, v in curves.items()}


def cpu(row: dict) -> float:
    return row.get("train_cpu_seconds", row["train_seconds"])


def seconds_to(curve: list[dict], level: float, clock=cpu) -> float | None:
    return next((clock(r) for r in curve if r["valid_ndcg@10"] >= level - 1e-12), None)


def table(curves: dict[tuple, list[dict]], pairs: list[tuple[tuple, tuple]]) -> str:
    lines = [
        "| model | A | B | level (NDCG@10) | A CPU s | B CPU s | B / A (CPU) | A wall s | B wall s | B / A (wall) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    wall = lambda r: r["train_seconds"]  # noqa: E731
    for a, b in pairs:
        if a not in curves or b not in curves:
            continue
        best = min(max(r["valid_ndcg@10"] for r in curves[a]), max(r["valid_ndcg@10"] for r in curves[b]))
        for fraction in LEVELS:
            level = best * fraction
            sa, sb = seconds_to(curves[a], level), seconds_to(curves[b], level)
            wa, wb = seconds_to(curves[a], level, wall), seconds_to(curves[b], level, wall)
            lines.append(
                f"| {a[0]} | {a[1]} {a[2]} seed {a[3]} | {b[1]} {b[2]} seed {b[3]} | {level:.4f} | "
                f"{sa:.1f} | {sb:.1f} | {sb / sa:.2f}x | {wa:.1f} | {wb:.1f} | {wb / wa:.2f}x |"
            )
    return "\n".join(lines)


def describe(curves: dict[tuple, list[dict]]) -> str:
    lines = [
        "| model | system | setting | epochs | train CPU s | train wall s | best NDCG@10 (epoch) | last NDCG@10 "
        "| CPU s/epoch | peak RSS GiB | last epoch (UTC) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, curve in sorted(curves.items()):
        best = max(curve, key=lambda r: r["valid_ndcg@10"])
        last = curve[-1]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {last['epoch']} | {cpu(last):.1f} | "
            f"{last['train_seconds']:.1f} | {best['valid_ndcg@10']:.4f} ({best['epoch']}) | "
            f"{last['valid_ndcg@10']:.4f} | {cpu(last) / last['epoch']:.2f} | "
            f"{max(r['peak_rss_gib'] for r in curve):.2f} | {last['utc']} |"
        )
    return "\n".join(lines)


def plot(curves: dict[tuple, list[dict]], model: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, curve in sorted(curves.items()):
        if key[0] == model:
            label = f"{key[1]} {key[2]} seed {key[3]}"
            ax.plot([cpu(r) for r in curve], [r["valid_ndcg@10"] for r in curve], marker=".", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training CPU seconds of the process (1 thread, shared 2-core CPU; validation not counted)")
    ax.set_ylabel("validation NDCG@10 (llmboost evaluator)")
    ax.set_title(f"{model}, MovieLens-100K")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--plot-dir", type=Path, default=None)
    parser.add_argument("--plot-prefix", default="benchmarks-cpu-", help="PNG names: <prefix><model>-curves.png")
    args = parser.parse_args()
    curves = load(args.paths)
    print(describe(curves))
    pairs = []
    llm_sas = [k for k in curves if k[:2] == ("sasrec", "llmboost")]
    pairs += [(a, b) for a in llm_sas for b in curves if b[:2] == ("sasrec", "recbole")]
    pairs += [(a, b) for a in llm_sas for b in llm_sas if (a[2], b[2]) == ("last_window", "all_windows")]
    pairs += [
        (a, b)
        for a in curves
        if a[:2] == ("bprmf", "llmboost")
        for b in curves
        if b[0] == "bprmf" and b[1] != "llmboost"
    ]
    print()
    print(table(curves, pairs))
    if args.plot_dir:
        for model in sorted({k[0] for k in curves}):
            plot(curves, model, args.plot_dir / f"{args.plot_prefix}{model}-curves.png")


if __name__ == "__main__":
    main()
