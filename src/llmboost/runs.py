"""Reproducible runs: train and evaluate a recommender over seeds, writing everything beside results.

A run folder holds ``config.yaml`` (resolved config), ``run.json`` (data fingerprint, split and slice
summaries, versions, the command that reproduces it), one ``seed-<s>/`` folder per seed (model,
training history, per-user metrics, summary) and ``metrics.json`` (mean and spread over seeds).
Seeds already finished are not redone when a stopped run is started again — but only when the run
folder was made by the same configuration on the same data: ``run.json`` records a hash of the resolved
configuration (every key except ``seeds``, ``output_dir``, ``name`` and ``threads``, with the model's
hyperparameters completed by their defaults) and the data fingerprint. A changed configuration is a new
run: reusing the folder is refused with the differences listed; give the run another ``name=`` to keep
both, or ``force=True`` (``llmboost train --force``) to delete the old seeds and train again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shlex
import shutil
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmboost import __version__
from llmboost.config import ConfigError, RunConfig, check_type, save_config, to_dict
from llmboost.data.dataset import Dataset
from llmboost.evaluation import aggregate, evaluate
from llmboost.jsonio import digest, write_json
from llmboost.models import REGISTRY, Recommender, build
from llmboost.splitting import Slices, Split, make_slices, split_dataset

logger = logging.getLogger(__name__)

# Keys that do not change what a run computes, left out of its configuration hash.
UNHASHED_KEYS = ("seeds", "output_dir", "name", "threads")
# Model parameters set per seed or for display only.
_PER_SEED_PARAMS = ("seed", "progress")


class RunConflictError(ValueError):
    """A run folder holds finished seeds of a different configuration or different data."""


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


def model_params(config: RunConfig) -> dict[str, Any]:
    """The model's hyperparameters: ``config.model.params`` checked against the constructor's types
    (a wrong type is a :class:`ConfigError` naming ``model.params.<key>`` and the type expected), then
    completed with the defaults. Strings that read as numbers are accepted for float parameters
    (YAML reads ``1e-3`` as a string)."""
    cls = REGISTRY.get(config.model.name)
    if cls is None:
        raise ConfigError(f"model.name: unknown model {config.model.name!r}; available: {sorted(REGISTRY)}")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # annotations that cannot be resolved: leave the check to the model
        hints = {}
    params: dict[str, Any] = {}
    for key, value in config.model.params.items():
        hint = hints.get(key)
        if hint is None:
            params[key] = value
            continue
        if isinstance(value, str) and float in (hint, *typing.get_args(hint)):
            with contextlib.suppress(ValueError):
                value = float(value)
        params[key] = check_type(value, hint, f"model.params.{key} (of model {config.model.name!r})")
    return build(config.model.name, **params).get_params()


def config_hash(config: RunConfig, params: dict[str, Any] | None = None) -> str:
    """A hash (hex, 16 chars) of what a run computes: the resolved config without :data:`UNHASHED_KEYS`."""
    resolved = _hashed_config(config, model_params(config) if params is None else params)
    return digest(resolved, 16)


def _hashed_config(config: RunConfig, params: dict[str, Any]) -> dict[str, Any]:
    resolved = to_dict(config)
    for key in UNHASHED_KEYS:
        resolved.pop(key, None)
    resolved["model"]["params"] = {k: v for k, v in params.items() if k not in _PER_SEED_PARAMS}
    return resolved


def train_and_evaluate(config: RunConfig, progress: bool = True, force: bool = False) -> Path:
    """Train ``config.model`` once per seed, evaluate on test, write results; returns the run folder.

    Finished seeds are reused only when the folder's recorded configuration hash and data fingerprint
    match; otherwise :class:`RunConflictError`, unless ``force`` (the old seeds are deleted).
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    out = run_dir(config)
    params = model_params(config)
    experiment = prepare(config)
    record = _run_record(config, experiment, out) | {
        "config_hash": config_hash(config, params),
        "resolved_config": _hashed_config(config, params),
    }
    _check_reuse(out, record, force)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    write_json(out / "run.json", record)
    summaries = []
    for seed in config.seeds:
        seed_dir = out / f"seed-{seed}"
        done = seed_dir / "summary.json"
        if done.exists():
            logger.info("seed %d already finished in %s; reusing it", seed, seed_dir)
            summaries.append(json.loads(done.read_text()))
            continue
        summaries.append(_train_one_seed(config, params, experiment, seed, seed_dir, progress))
    metrics = {"seeds": list(config.seeds), "metrics": aggregate(summaries)}
    write_json(out / "metrics.json", metrics)
    return out


def _finished_seeds(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("seed-*/summary.json"))


def _check_reuse(out: Path, record: dict[str, Any], force: bool) -> None:
    """Refuse (or with ``force`` clear) finished seeds made by another configuration or other data."""
    finished = _finished_seeds(out)
    if not finished:
        return
    try:
        old = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        old = {}
    keys = ("config_hash", "data_fingerprint")
    if all(old.get(k) == record[k] for k in keys):
        return
    if force:
        logger.warning("%s: deleting %d finished seed(s) of another configuration (--force)", out, len(finished))
        for folder in finished:
            shutil.rmtree(folder)
        (out / "metrics.json").unlink(missing_ok=True)
        return
    differences = _differences(old.get("resolved_config"), record["resolved_config"])
    if old.get("data_fingerprint") != record["data_fingerprint"]:
        differences.append(f"data fingerprint {old.get('data_fingerprint')} -> {record['data_fingerprint']}")
    if "config_hash" not in old:
        differences.append("the folder records no configuration hash (made by an older llmboost)")
    names = ", ".join(p.name for p in finished)
    raise RunConflictError(
        f"{out} holds finished seeds ({names}) of a different run: {'; '.join(differences[:6]) or 'changed'}. "
        f"A changed configuration is a new run: set name=<new name> to keep both, or pass --force "
        f"(train_and_evaluate(..., force=True)) to delete the old seeds and train again."
    )


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    if old == new or (old is None and not prefix):  # equal, or nothing recorded to compare with
        return []
    return [f"{prefix}: {old!r} -> {new!r}"]


def _train_one_seed(
    config: RunConfig, params: dict[str, Any], experiment: Experiment, seed: int, seed_dir: Path, progress: bool
) -> dict:
    model = build(config.model.name, **params)
    for name, value in (("seed", seed), ("progress", progress)):
        if name in params:
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
    write_json(seed_dir / "history.json", getattr(model, "history_", []))
    write_json(seed_dir / "summary.json", summary)  # written last: marks the seed as finished
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
