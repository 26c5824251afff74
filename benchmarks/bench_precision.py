"""float32 vs bfloat16 on this CPU: what ``precision="auto"`` should pick (llmboost.llm.precision).

One process, one thread, each measurement alternated fp32 / bf16 ``--repeats`` times (so a shared machine slows
both alike); process CPU seconds are the clock:

* a 1024 x 1024 x 1024 matrix product (GFLOP/s);
* a no-grad forward of the built-in SmolLM2-135M-Instruct over 4 x 512 tokens (tokens/s), bf16 by autocast;
* LoRA fine-tuning (r=16, 2,048-token steps, first step not counted) on "history -> next title" examples
  (tokens/s, from ``finetune``'s own training log).

Prints the bf16 / fp32 ratios and writes the raw numbers as JSON. ::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_precision.py --out benchmarks/results/precision.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from llmboost.llm.finetune import finetune, next_item_examples, read_training_log
from llmboost.llm.loading import load_transformers_model
from llmboost.llm.models import resolve_model
from llmboost.llm.precision import cpu_flags

PRECISIONS = ("fp32", "bf16")


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    started = time.process_time()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.process_time() - started) / 1e9


def forward_tokens_per_s(model: torch.nn.Module, precision: str, ids: torch.Tensor) -> float:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        model(input_ids=ids[:1, :64])  # warm-up
        started = time.process_time()
        model(input_ids=ids)
        return ids.numel() / (time.process_time() - started)


def train_tokens_per_s(precision: str, steps: int) -> float:
    titles = [f"Movie number {i} (199{i % 10}) | Drama, Comedy" for i in range(400)]
    examples = []
    for user in range(40):
        history = titles[user * 7 : user * 7 + 14]
        examples += next_item_examples(history, max_history=10, min_history=2, last_n=3, item_kind="movies")
    with tempfile.TemporaryDirectory() as folder:
        finetune(
            "smollm2-135m-instruct",
            examples,
            folder,
            r=16,
            max_steps=steps,
            batch_tokens=2048,
            precision=precision,
            log_every=0,
            progress=False,
            checkpoint_minutes=None,
        )
        log = read_training_log(folder)
    return sum(log["step_tokens"][1:]) / sum(log["step_seconds"][1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="fine-tuning steps per measurement")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    flags = cpu_flags()
    model, _ = load_transformers_model(resolve_model("smollm2-135m-instruct"), device="cpu", precision=torch.float32)
    model.eval()
    ids = torch.randint(100, 40_000, (4, 512), generator=torch.Generator().manual_seed(0))
    runs: dict[str, dict[str, list[float]]] = {"matmul_gflops": {}, "forward_tokens_s": {}, "train_tokens_s": {}}
    for _ in range(args.repeats):
        for precision in PRECISIONS:
            dtype = torch.float32 if precision == "fp32" else torch.bfloat16
            runs["matmul_gflops"].setdefault(precision, []).append(matmul_gflops(dtype))
            runs["forward_tokens_s"].setdefault(precision, []).append(forward_tokens_per_s(model, precision, ids))
            runs["train_tokens_s"].setdefault(precision, []).append(train_tokens_per_s(precision, args.steps))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "command": f"benchmarks/bench_precision.py --repeats {args.repeats} --steps {args.steps}",
        "commit": commit,
        "threads": 1,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
        "runs": runs,
        "bf16_over_fp32": {
            name: max(values["bf16"]) / max(values["fp32"]) for name, values in runs.items()
        },  # best of the repeats, each
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    for name, ratio in result["bf16_over_fp32"].items():
        fp32, bf16 = max(runs[name]["fp32"]), max(runs[name]["bf16"])
        print(f"{name:18s} fp32 {fp32:8.1f}  bf16 {bf16:8.1f}  bf16/fp32 {ratio:.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
