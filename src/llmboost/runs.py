"""Reproducible runs: train and evaluate a recommender over seeds, writing everything beside results.

A run folder holds ``config.yaml`` (resolved config), ``run.json`` (data fingerprint, split and slice
summaries, versions, the command that reproduces it), one ``seed-<s>/`` folder per seed (model,
training history, per-user metrics, summary) and ``metrics.json`` (mean and spread over seeds).
Seeds already finished are not redone when a stopped run is started again.
"""

from __future__ import annotations

import json
import logging
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmboost import __version__
from llmboost.config import RunConfig, save_config, to_dict
from llmboost.data.dataset import Dataset
from llmboost.evaluation import aggregate, evaluate
from llmboost.models import Recommender, build
from llmboost.splitting import Slices, Split, make_slices, split_dataset

logger = logging.getLogger(__name__)


@dataclass
class Experiment:
    """The data side of a run: the prepared dataset, its split and slices."""

    dataset: Dataset
    split: Split
    slices: Slices


def prepare(config: RunConfig) -> Experiment:
    """Load, filter and split the data named by ``config``, and compute the slices."""
    from llmboost.data import load_dataset
    from llmboost.data.filters import kcore, min_rating
    from llmboost.data.loaders import column_options

    columns = column_options(config.data.columns)
    dataset = load_dataset(config.data.source, format=config.data.format, **columns)
    if config.data.min_rating is not None:
        dataset = min_rating(dataset, config.data.min_rating)
    if config.data.kcore:
        dataset = kcore(dataset, config.data.kcore, config.data.kcore)
    options: dict[str, Any] = {"keep_unseen_items": config.split.keep_unseen_items}
    if config.split.strategy != "leave_one_out":
        options |= {"valid_fraction": config.split.valid_fraction, "test_fraction": config.split.test_fraction}
    split = split_dataset(dataset, config.split.strategy, **options)
    slices = make_slices(
        split.train, config.slices.cold_user_max_history, config.slices.cold_user_fraction, config.slices.head_fraction
    )
    return Experiment(dataset, split, slices)


def run_dir(config: RunConfig) -> Path:
    name = config.name or f"{Path(config.data.source).name}-{config.model.name}"
    return Path(config.output_dir) / name


def train_and_evaluate(config: RunConfig, progress: bool = True) -> Path:
    """Train ``config.model`` once per seed, evaluate on test, write results; returns the run folder."""
    if config.threads:
        torch.set_num_threads(config.threads)
    out = run_dir(config)
    out.mkdir(parents=True, exist_ok=True)
    experiment = prepare(config)
    save_config(config, out / "config.yaml")
    _write_json(out / "run.json", _run_record(config, experiment, out))
    summaries = []
    for seed in config.seeds:
        seed_dir = out / f"seed-{seed}"
        done = seed_dir / "summary.json"
        if done.exists():
            logger.info("seed %d already finished in %s; reusing it", seed, seed_dir)
            summaries.append(json.loads(done.read_text()))
            continue
        summaries.append(_train_one_seed(config, experiment, seed, seed_dir, progress))
    metrics = {"seeds": list(config.seeds), "metrics": aggregate(summaries)}
    _write_json(out / "metrics.json", metrics)
    return out


def _train_one_seed(config: RunConfig, experiment: Experiment, seed: int, seed_dir: Path, progress: bool) -> dict:
    params = dict(config.model.params)
    model = build(config.model.name, **params)
    for name, value in (("seed", seed), ("progress", progress)):
        if name in model.get_params():
            setattr(model, name, value)
    started = time.perf_counter()
    model.fit(experiment.split.train, experiment.split.valid)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = evaluate(
        model, experiment.split, "test", config.evaluation.ks, experiment.slices, config.evaluation.batch_size, progress
    )
    summary = result.summary() | {"fit_seconds": fit_seconds, "eval_seconds": time.perf_counter() - started}
    seed_dir.mkdir(parents=True, exist_ok=True)
    model.save(seed_dir / "model.pt")
    result.per_user.to_parquet(seed_dir / "per_user.parquet", index=False)
    _write_json(seed_dir / "history.json", getattr(model, "history_", []))
    _write_json(seed_dir / "summary.json", summary)  # written last: marks the seed as finished
    return summary


def evaluate_run(path: str | Path, stage: str = "test", ks: list[int] | None = None) -> dict[str, Any]:
    """Re-evaluate every saved seed model of a run folder; checks the data still matches."""
    from llmboost.config import load_config

    path = Path(path)
    config = load_config(path / "config.yaml")
    experiment = prepare(config)
    recorded = json.loads((path / "run.json").read_text())["data_fingerprint"]
    if experiment.dataset.fingerprint() != recorded:
        raise ValueError(
            f"the data behind {path} changed: fingerprint {experiment.dataset.fingerprint()} != recorded {recorded}"
        )
    summaries = []
    for seed in config.seeds:
        model = Recommender.load(path / f"seed-{seed}" / "model.pt")
        result = evaluate(model, experiment.split, stage, ks or config.evaluation.ks, experiment.slices)
        summaries.append(result.summary())
    return {"seeds": list(config.seeds), "stage": stage, "metrics": aggregate(summaries)}


def _run_record(config: RunConfig, experiment: Experiment, out: Path) -> dict[str, Any]:
    return {
        "llmboost": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "seeds": list(config.seeds),
        "data_fingerprint": experiment.dataset.fingerprint(),
        "dataset": experiment.dataset.describe() | {"log": experiment.dataset.log},
        "split": experiment.split.describe(),
        "slices": experiment.slices.describe(),
        "config": to_dict(config),
        "reproduce": f"llmboost train {shlex.quote(str(out / 'config.yaml'))}",
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
