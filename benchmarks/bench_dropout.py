"""CEMG's from-scratch generator: one training step (forward, backward, Adam) with torch's ``nn.Dropout`` against
the same network with ``llmboost.models.layers.Dropout`` swapped in (``use_fast_dropout``, what the generator
does since 2026-12-01), on a CPU, in one process, rounds interleaved so both see the same load.

The shape is the ``cpu`` preset's generator (d_model 64, 2 heads, feed-forward 256, 2 encoder and 2 decoder
layers, dropout 0.1, 20 history items of 4 codes, batch 256). Tokens are random: a step's cost does not depend
on them. The attention-weight dropout inside ``nn.MultiheadAttention`` is torch's in both.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_dropout.py --out benchmarks/results/dropout-cemg.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    from llmboost.methods.cemg.generator import Seq2SeqNetwork
    from llmboost.models.layers import Dropout

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/dropout-cemg.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes, history = [256, 256, 256, 16], 20
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, sum(sizes), (args.batch, history, len(sizes)), generator=gen)
    targets = torch.randint(0, 256, (args.batch, len(sizes)), generator=gen)

    def network(llmboost_masks: bool) -> tuple[Seq2SeqNetwork, torch.optim.Optimizer]:
        torch.manual_seed(0)
        net = Seq2SeqNetwork(sizes, history, 64, 2, 2, 256, 0.1)  # swaps its dropout modules itself
        if not llmboost_masks:  # back to torch's modules
            for parent in net.modules():
                for name, child in parent.named_children():
                    if type(child) is Dropout:
                        setattr(parent, name, torch.nn.Dropout(child.p))
        net.train()
        return net, torch.optim.Adam(net.parameters(), lr=1e-3)

    def step(net: Seq2SeqNetwork, opt: torch.optim.Optimizer) -> float:
        started = time.process_time()
        memory, pad = net.encode(tokens)
        logits = net.decode(memory, pad, targets[:, :-1] + 1)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.process_time() - started

    nets = {"torch": network(False), "llmboost": network(True)}
    assert sum(type(m) is Dropout for m in nets["llmboost"][0].modules()) == 14  # 2 x 3 encoder + 2 x 4 decoder
    assert not any(type(m) is Dropout for m in nets["torch"][0].modules())
    for net, opt in nets.values():  # warm-up
        step(net, opt)
    times: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(args.rounds):
        for name, (net, opt) in nets.items():
            times[name].append(step(net, opt))
    result = {
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": args.threads,
        "batch": args.batch,
        "rounds": args.rounds,
        **{f"{name}_step_cpu_s_min": min(t) for name, t in times.items()},
        **{f"{name}_step_cpu_s_median": float(np.median(t)) for name, t in times.items()},
    }
    result["speedup_min"] = result["torch_step_cpu_s_min"] / result["llmboost_step_cpu_s_min"]
    result["speedup_median"] = result["torch_step_cpu_s_median"] / result["llmboost_step_cpu_s_median"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
