"""LLM pairwise-preference scoring speed: one prompt per pass vs batched vs shared prefix, in one run.

MovieLens-100K users (histories = each user's last ``--history`` titles by timestamp, read straight from the
RecBole files) are asked "which of these two movies next?" about random candidate pairs with the built-in
SmolLM2-135M-Instruct (float32, CPU). Every pair is asked in both orders (two prompts per pair). Three ways:

(a) one prompt per forward pass; (b) batched, length-sorted, no prefix sharing; (c) batched with each user's
prompt prefix run once and its keys/values reused by every continuation (shared-prefix attention).

FLOP counting: achieved FLOP/s = [2 x (decoder-block parameters) x (non-padding tokens run through the blocks)
+ 2 x vocab x hidden x (positions where the LM head is applied)] / wall seconds. Attention-score FLOPs, padding
and the LM head at unused positions are not counted (so this is conservative). The bound is ``torch.matmul`` of
two 2048 x 2048 float32 matrices, best of 3, measured before each method in the same process with the same
thread count; fractions use the largest bound seen for that thread count.

``--threads 1 2`` measures each thread count in turn. The machine is shared with other jobs: OpenMP threads that
spin while waiting for a descheduled sibling make two threads several times slower than one, so this script sets
``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it (``OMP_WAIT_POLICY=ACTIVE ...`` to compare).
``--train`` also measures LoRA fine-tuning tokens/s on MovieLens pairwise + yes/no examples. ::

    .venv/bin/python benchmarks/bench_llm_scoring.py --threads 1 2 --train --write-docs
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "movielens-100k"
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "LLM pairwise scoring"
FIELDS = {"item_kind": "movies"}


def load_movielens(folder: Path, history: int, min_events: int = 40) -> tuple[dict[int, list[str]], list[str]]:
    """Users' last ``history`` titles (time order; users with at least ``min_events`` ratings) and the catalog
    by popularity. Titles get their release year: "Toy Story (1995)"."""
    inter = pd.read_csv(folder / "ml-100k.inter", sep="\t")
    items = pd.read_csv(folder / "ml-100k.item", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    items.columns = [c.split(":")[0] for c in items.columns]
    year = items["release_year"].astype("string").fillna("").str.replace(r"\.0$", "", regex=True)
    title = items["movie_title"].astype(str).str.strip()
    items["title"] = np.where(year != "", title + " (" + year + ")", title)
    names = dict(zip(items["item_id"], items["title"], strict=True))
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable")
    histories = {
        int(u): [names[i] for i in g["item_id"].tolist()[-history:]]
        for u, g in inter.groupby("user_id", sort=True)
        if len(g) >= min_events
    }
    popular = [names[i] for i in inter["item_id"].value_counts().index]
    return histories, popular


def matmul_gflops(n: int = 2048, tries: int = 3) -> float:
    """Best-of-``tries`` float32 ``torch.matmul`` speed in GFLOP/s."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(tries):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def measure(model: Any, pairs: list, args: argparse.Namespace) -> dict[str, Any]:
    """(a), (b), (c) at the current thread count."""
    from llmboost.llm import PAIRWISE, format_history, pairwise_scores

    n_layer = model.n_layer_params
    head_flops = 2 * model.config.vocab_size * model.config.hidden_size

    def run(name: str, subset: list, share: bool, one_by_one: bool) -> dict[str, Any]:
        bound = matmul_gflops()
        m = model.options(share_prefix=share)
        t = time.perf_counter()
        if one_by_one:  # both orders, each prompt its own forward pass
            probs = []
            for h, a, b in subset:
                text = format_history(h, args.history)
                r1 = PAIRWISE.request(m, history=text, item_a=a, item_b=b, **FIELDS)
                r2 = PAIRWISE.request(m, history=text, item_a=b, item_b=a, **FIELDS)
                l1, l2 = m.choice_logprobs([r1])[0], m.choice_logprobs([r2])[0]
                probs.append(1 / (1 + np.exp(-0.5 * ((l1[0] - l1[1]) + (l2[1] - l2[0])))))
            prob = np.array(probs)
        else:
            prob = pairwise_scores(m, PAIRWISE, subset, max_history=args.history, **FIELDS).prob
        dt = time.perf_counter() - t
        s = m.stats
        flops = 2 * n_layer * s.tokens + head_flops * s.head_rows
        return {
            "name": name,
            "pairs": len(subset),
            "seconds": dt,
            "pairs_per_s": len(subset) / dt,
            "tokens": s.tokens,
            "forward_calls": s.forward_calls,
            "gflops": flops / dt / 1e9,
            "naive_gflops": 2 * model.n_params * s.tokens / dt / 1e9,
            "bound": bound,
            "prob": prob,
        }

    res = [
        run("(a) one prompt per pass", pairs[: args.single_pairs], share=False, one_by_one=True),
        run("(b) batched", pairs[: args.batched_pairs], share=False, one_by_one=False),
        run("(c) shared prefix", pairs, share=True, one_by_one=False),
    ]
    bound = max(matmul_gflops(), *(r["bound"] for r in res))
    return {"results": res, "bound": bound}


def table(threads: int, m: dict[str, Any]) -> list[str]:
    """Markdown lines for one thread count."""
    res, bound = m["results"], m["bound"]
    a, b, c = res
    before = ", ".join(f"{r['bound']:.0f}" for r in res)
    lines = [
        f"**{threads} thread(s)** — matmul bound {bound:.0f} GFLOP/s (measured before each method: {before})",
        "",
        "| method | pairs | seconds | pairs/s | tokens run | forward passes | GFLOP/s | % of matmul |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res:
        lines.append(
            f"| {r['name']} | {r['pairs']} | {r['seconds']:.1f} | {r['pairs_per_s']:.2f} | {r['tokens']} "
            f"| {r['forward_calls']} | {r['gflops']:.1f} | {100 * r['gflops'] / bound:.0f}% |"
        )
    agree_a = float(np.abs(a["prob"] - c["prob"][: len(a["prob"])]).max())
    agree_b = float(np.abs(b["prob"] - c["prob"][: len(b["prob"])]).max())
    lines += [
        "",
        f"- speed-up over (a): batched **{b['pairs_per_s'] / a['pairs_per_s']:.1f}x**, "
        f"shared prefix **{c['pairs_per_s'] / a['pairs_per_s']:.1f}x**",
        f"- shared prefix at **{100 * c['gflops'] / bound:.0f}%** of the matmul bound "
        f"({c['naive_gflops']:.0f} GFLOP/s if counted as 2 x all parameters x tokens)",
        f"- max |P(a>b)| difference on the same pairs: (a) vs (c) {agree_a:.1e}, (b) vs (c) {agree_b:.1e}",
        "",
    ]
    return lines


def measure_training(args: argparse.Namespace, histories: dict[int, list[str]], popular: list[str]) -> list[str]:
    """LoRA (r=16) fine-tuning tokens/s, float32 and bf16 autocast, on MovieLens pairwise + yes/no examples."""
    from llmboost.llm import DEFAULT_MODEL, build_examples, finetune, read_training_log

    users = sorted(histories)[: args.train_users]
    examples = build_examples(
        {u: histories[u] for u in users}, popular[:500], tasks=("pairwise", "yes_no"), min_history=15, **FIELDS
    )
    lines = [
        f"LoRA r=16 on all linear layers, {len(examples)} pairwise + yes/no examples from {len(users)} users "
        f"(histories of 15-19 titles), packed into rows of 512 tokens, {args.train_steps} steps of "
        f"<= 2048 tokens (tokens/s counts every non-padding token, forward + backward + optimizer step):",
        "",
        "| threads | precision | tokens/s | tokens | seconds |",
        "|---:|---|---:|---:|---:|",
    ]
    for threads in args.threads:
        torch.set_num_threads(threads)
        for precision in ("float32", "bf16"):
            with tempfile.TemporaryDirectory() as tmp:
                out = finetune(
                    DEFAULT_MODEL,
                    examples,
                    tmp,
                    r=16,
                    max_steps=args.train_steps,
                    batch_tokens=2048,
                    precision=precision,
                    log_every=0,
                )
                log = read_training_log(out)
            lines.append(
                f"| {threads} | {precision} | {log['tokens_per_s']:.0f} | {log['train_tokens']} "
                f"| {log['train_seconds']:.1f} |"
            )
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--users", type=int, default=8, help="users for (c); (a) and (b) use the first ones")
    ap.add_argument("--pairs-per-user", type=int, default=24)
    ap.add_argument("--single-pairs", type=int, default=6, help="pairs for (a)")
    ap.add_argument("--batched-pairs", type=int, default=24, help="pairs for (b)")
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-batch-tokens", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", action="store_true", help="also measure LoRA fine-tuning tokens/s")
    ap.add_argument("--train-users", type=int, default=20)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--write-docs", action="store_true", help=f"write the '{SECTION}' section of {DOCS}")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llmboost.llm import PAIRWISE, HFModel

    rng = np.random.default_rng(args.seed)
    histories, popular = load_movielens(args.data, args.history)
    users = sorted(rng.choice(sorted(histories), size=args.users, replace=False).tolist())
    pool = popular[:300]
    pairs: list[tuple[list[str], str, str]] = []
    for u in users:
        seen = set(histories[u])
        cands = [t for t in pool if t not in seen]
        for _ in range(args.pairs_per_user):
            a, b = rng.choice(len(cands), size=2, replace=False)
            pairs.append((histories[u], cands[a], cands[b]))

    started = time.perf_counter()
    model = HFModel(batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens)
    load_s = time.perf_counter() - started
    prompt_len = np.mean(
        [len(model.encode(PAIRWISE.prompt(model, history=h, item_a=a, item_b=b, **FIELDS))) for h, a, b in pairs]
    )
    lines = [
        f"Model {model.setting}: {model.n_params / 1e6:.1f} M parameters ({model.n_layer_params / 1e6:.1f} M in "
        f"decoder blocks), float32; CPU: {_cpu_name()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
        f"model load {load_s:.1f} s.",
        f"Data: {len(users)} MovieLens-100K users, last {args.history} titles each, {args.pairs_per_user} random "
        f"pairs per user, 2 prompts per pair, mean prompt {prompt_len:.0f} tokens.",
        "",
    ]
    for threads in args.threads:
        torch.set_num_threads(threads)
        lines += table(threads, measure(model, pairs, args))
        print("\n".join(lines), flush=True)
    if args.train:
        del model
        lines += ["### LoRA fine-tuning throughput", "", *measure_training(args, histories, popular), ""]
    lines.append(f"Total benchmark time {time.perf_counter() - started:.0f} s.")
    report = "\n".join(lines)
    print(report)
    if args.write_docs:
        command = ".venv/bin/python benchmarks/bench_llm_scoring.py " + " ".join(sys.argv[1:])
        write_section(report, command)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return "unknown"


def write_section(report: str, command: str) -> None:
    """Replace (or append) this benchmark's section of docs/benchmarks.md, leaving other sections alone."""
    body = (
        f"## {SECTION}\n\n"
        "Pairwise-preference scoring of MovieLens-100K users with the built-in SmolLM2-135M-Instruct on this "
        "machine's CPU (`benchmarks/bench_llm_scoring.py`; its docstring says how FLOPs are counted). "
        "The machine is shared with other jobs, so absolute numbers move from run to run; the ratios are "
        "measured within one run.\n\n"
        f"Command:\n\n```\n{command}\n```\n\n"
        f"Measured {time.strftime('%Y-%m-%d %H:%M')}:\n\n{report}\n\n"
    )
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^## {re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: body, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text)


if __name__ == "__main__":
    main()
