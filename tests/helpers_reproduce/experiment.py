"""A stand-in experiment that records each call, can fail on demand and writes a report with a plot link."""

import json
from pathlib import Path

CALLS: list[int] = []


def run_experiment(config, out_dir: Path, progress: bool = True) -> dict:
    CALLS.append(config.size)
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    if config.fail:
        raise RuntimeError("boom: stage failed on purpose")
    (out_dir / "plot.png").write_bytes(b"png")
    (out_dir / "report.md").write_text("# Fake\n\n| metric | value |\n| --- | --- |\n| x | 1 |\n\n![curve](plot.png)\n")
    results = {"headline": {"NDCG@10": {"mean": 0.1 * config.size, "std": 0.01}}, "seeds": config.seeds}
    (out_dir / "results.json").write_text(json.dumps(results))
    return results
