"""``llmboost reproduce``: the four systems on the built-in defaults, one report folder.

Each method package (:mod:`llmboost.methods`) exposes ``config.preset(name)`` and
``experiment.run_experiment(config, out_dir, progress) -> dict``. This module runs them as stages:

* a stage that finished with the same resolved configuration is not run again (its ``results.json`` is
  reused); a changed setting makes the stage run again, and the method's own resumable stages (LLM
  outputs in the score store, trained models) decide what inside it is recomputed;
* a failing stage does not lose the others: its traceback goes to ``<stage>/error.txt``, the remaining
  stages run, and the command exits non-zero naming what failed;
* progress is printed per stage with an ETA from the previous run's timings (or the preset's estimate);
* the report folder gets ``report.md`` (each method's tables and plots under one header), ``results.json``
  (every number with its config, seeds, data and model fingerprints, versions and timings) and, when
  MLflow is installed and asked for, one MLflow run per stage.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import platform
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmboost.config import ConfigError, apply_overrides, from_mapping, to_dict
from llmboost.jsonio import write_json
from llmboost.threads import torch_threads_kept

logger = logging.getLogger(__name__)

PRESETS = ("quick", "cpu", "full")


@dataclass(frozen=True)
class Method:
    """One of the four systems: where its package lives and what the report calls it."""

    key: str  #: stage name and report folder
    title: str
    paper: str
    package: str  #: module path holding ``config`` and ``experiment``
    expected_seconds: dict[str, float]  #: rough wall time per preset on 2 CPU cores (ETA before a first run)


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method(
            "sllmr",
            "S-LLMR: selective LLM-guided regularization",
            "arXiv 2512.21526",
            "llmboost.methods.sllmr",
            {"quick": 300, "cpu": 1800, "full": 3600},
        ),
        Method(
            "llm_i2i",
            "LLM-I2I: LLM-refined data for item-to-item models",
            "arXiv 2512.21595",
            "llmboost.methods.llm_i2i",
            {"quick": 300, "cpu": 1800, "full": 3600},
        ),
        Method(
            "cemg",
            "CEMG: collaborative-enhanced multimodal generative recommendation",
            "arXiv 2512.21543",
            "llmboost.methods.cemg",
            {"quick": 300, "cpu": 1800, "full": 3600},
        ),
        Method(
            "hallucination",
            "Hallucination-detector ensemble with abstention",
            "arXiv 2510.14330",
            "llmboost.methods.hallucination",
            {"quick": 300, "cpu": 1800, "full": 3600},
        ),
    )
}
ALIASES = {"i2i": "llm_i2i", "llm-i2i": "llm_i2i", "s-llmr": "sllmr", "halluc": "hallucination"}


class ReproduceError(RuntimeError):
    """One or more stages failed; the message names them and where their tracebacks are."""


def parse_only(only: str | Sequence[str] | None) -> list[str]:
    """The stages named by ``--only`` (comma-separated; aliases allowed), in the canonical order."""
    if not only:
        return list(METHODS)
    names = only.split(",") if isinstance(only, str) else list(only)
    wanted = set()
    for raw in names:
        name = ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if not name:
            continue
        if name not in METHODS:
            raise ConfigError(f"--only: unknown method {raw.strip()!r}; choose from {', '.join(METHODS)}")
        wanted.add(name)
    return [m for m in METHODS if m in wanted]


def split_overrides(overrides: Sequence[str], stages: Sequence[str]) -> dict[str, list[str]]:
    """``sllmr.seeds=[0,1]`` -> ``{"sllmr": ["seeds=[0,1]"]}``; every override must name a known method."""
    by_stage: dict[str, list[str]] = {m: [] for m in METHODS}
    for item in overrides:
        key, sep, value = item.partition("=")
        head, dot, rest = key.partition(".")
        stage = ALIASES.get(head.lower(), head.lower())
        if not sep or not dot or stage not in METHODS:
            raise ConfigError(
                f"override {item!r} must look like <method>.<key>=<value> with <method> one of {', '.join(METHODS)}"
            )
        by_stage[stage].append(f"{rest}={value}")
    return {m: by_stage[m] for m in stages}


def stage_config(method: Method, preset: str, overrides: Sequence[str]) -> Any:
    """The method's preset configuration with ``key=value`` overrides applied and validated."""
    config_module = importlib.import_module(f"{method.package}.config")
    base = config_module.preset(preset)
    raw = to_dict(base)
    try:
        apply_overrides(raw, overrides)
        return from_mapping(type(base), raw, method.key)
    except ConfigError as exc:
        raise ConfigError(f"{method.key}: {exc}") from exc


def config_hash(config: Any) -> str:
    """A short hash of a resolved configuration: a different hash means a changed setting."""
    blob = json.dumps(to_dict(config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class StageOutcome:
    """What one stage did: ``done`` (ran now), ``reused`` (finished before, same config) or ``failed``."""

    key: str
    status: str
    seconds: float
    results: dict[str, Any] | None
    error: str | None = None
    made_in_seconds: float | None = None  #: a reused stage: the wall time of the run that made its results


def reproduce(
    out_dir: str | Path,
    preset: str = "quick",
    only: str | Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    mlflow: bool | None = None,
    echo: Callable[[str], None] = print,
) -> Path:
    """Run the selected methods' ``preset`` experiments into ``out_dir`` and write the combined report.

    Raises :class:`ReproduceError` after writing the report when any stage failed."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    stages = parse_only(only)
    per_stage = split_overrides(overrides, stages)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    started_all = time.perf_counter()
    outcomes: list[StageOutcome] = []
    configs = {}
    for key in stages:  # resolve every config first: a bad override fails before hours of work
        configs[key] = stage_config(METHODS[key], preset, per_stage[key])

    for index, key in enumerate(stages, 1):
        method = METHODS[key]
        expected = [timings.get(f"{preset}/{k}", METHODS[k].expected_seconds[preset]) for k in stages[index - 1 :]]
        echo(
            f"[{index}/{len(stages)}] {key} ({preset}): starting; "
            f"ETA for the rest {_minutes(sum(expected))} (this stage ~{_minutes(expected[0])})"
        )
        outcome = _run_stage(method, configs[key], out / key, progress)
        outcomes.append(outcome)
        if outcome.status == "done":
            timings[f"{preset}/{key}"] = outcome.seconds
            write_json(timings_path, timings)
        echo(f"[{index}/{len(stages)}] {key}: {outcome.status} in {outcome.seconds:.0f} s")
        if mlflow is not False and outcome.results is not None:
            _log_mlflow(key, preset, configs[key], outcome, required=bool(mlflow))

    total = time.perf_counter() - started_all
    record = _results_record(out, preset, stages, configs, outcomes, total)
    write_json(out / "results.json", record)
    (out / "report.md").write_text(render_report(record, out))
    echo(f"report: {out / 'report.md'} ({total:.0f} s)")
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        names = ", ".join(f"{o.key} (see {out / o.key / 'error.txt'})" for o in failed)
        raise ReproduceError(f"{len(failed)} stage(s) failed: {names}; rerun the same command to resume")
    return out


def _run_stage(method: Method, config: Any, stage_dir: Path, progress: bool) -> StageOutcome:
    """Run one method unless it already finished with this configuration."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    marker = stage_dir / "stage.json"
    digest = config_hash(config)
    if marker.exists():
        previous = json.loads(marker.read_text())
        results_path = stage_dir / "results.json"
        if previous.get("status") == "done" and previous.get("config_hash") == digest and results_path.exists():
            made_in = previous.get("seconds")
            return StageOutcome(method.key, "reused", 0.0, json.loads(results_path.read_text()), None, made_in)
    (stage_dir / "error.txt").unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        experiment = importlib.import_module(f"{method.package}.experiment")
        with torch_threads_kept():  # a stage's thread setting must not carry over to the next stage
            results = experiment.run_experiment(config, stage_dir, progress=progress)
    except KeyboardInterrupt:
        write_json(marker, {"status": "interrupted", "config_hash": digest})
        raise
    except Exception as exc:  # a failing stage must not lose the others
        seconds = time.perf_counter() - started
        (stage_dir / "error.txt").write_text(traceback.format_exc())
        write_json(marker, {"status": "failed", "config_hash": digest, "seconds": seconds, "error": repr(exc)})
        logger.error("stage %s failed: %r", method.key, exc)
        return StageOutcome(method.key, "failed", seconds, None, repr(exc))
    seconds = time.perf_counter() - started
    if not (stage_dir / "results.json").exists():
        write_json(stage_dir / "results.json", results)
    write_json(marker, {"status": "done", "config_hash": digest, "seconds": seconds})
    return StageOutcome(method.key, "done", seconds, results)


def _results_record(
    out: Path, preset: str, stages: list[str], configs: dict[str, Any], outcomes: list[StageOutcome], total: float
) -> dict[str, Any]:
    from llmboost.environment import describe_environment

    env = describe_environment()
    return {
        "command": "llmboost reproduce " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 1 and sys.argv[1] == "reproduce"
        else f"llmboost reproduce --preset {preset} --only {','.join(stages)} --out {shlex.quote(str(out))}",
        "preset": preset,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seconds": total,
        "versions": {"llmboost": env["llmboost"], "python": env["python"], "torch": env["torch"]},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_capability": env["cpu"]["capability"],
            "threads": env["torch_threads"],
            "auto_precision": env["cpu"]["auto_precision"],
        },
        "stages": {
            o.key: {
                "title": METHODS[o.key].title,
                "paper": METHODS[o.key].paper,
                "status": o.status,
                "seconds": o.seconds,
                "made_in_seconds": o.seconds if o.status == "done" else o.made_in_seconds,
                "config": to_dict(configs[o.key]),
                "config_hash": config_hash(configs[o.key]),
                "error": o.error,
                "results": o.results,
            }
            for o in outcomes
        },
    }


def render_report(record: dict[str, Any], out: Path) -> str:
    """``report.md``: a summary table of each method's headline numbers, then each method's own report
    with its image links rewritten to point into its stage folder."""
    lines = [
        f"# llmboost reproduce — preset `{record['preset']}`",
        "",
        f"Command: `{record['command']}`  ",
        f"Date: {record['date']}; total {record['seconds'] / 60:.1f} min; "
        f"llmboost {record['versions']['llmboost']}, torch {record['versions']['torch']}, "
        f"CPU capability {record['machine']['cpu_capability']}, {record['machine']['threads']} threads, "
        f"precision `auto` = {record['machine'].get('auto_precision', 'fp32')}.",
        "",
        "| method | paper | status | minutes | headline |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for stage in record["stages"].values():
        headline = (stage["results"] or {}).get("headline", {})
        text = "; ".join(f"{k} {_fmt(v)}" for k, v in headline.items()) or (stage["error"] or "")
        minutes = f"{stage['seconds'] / 60:.1f}"
        made_in = stage.get("made_in_seconds")
        if stage["status"] == "reused" and made_in is not None:
            minutes += f" (made in {made_in / 60:.1f})"
        lines.append(f"| {stage['title']} | {stage['paper']} | {stage['status']} | {minutes} | {text} |")
    lines.append("")
    for key, stage in record["stages"].items():
        lines += [f"## {stage['title']}", ""]
        report = out / key / "report.md"
        if stage["status"] == "failed":
            lines += [f"Failed: `{stage['error']}` — traceback in `{key}/error.txt`.", ""]
        elif report.exists():
            lines += [_demote_headings(_relink(report.read_text(), key)), ""]
        else:
            lines += ["(the method wrote no report.md)", ""]
    return "\n".join(lines)


def _relink(markdown: str, folder: str) -> str:
    """Point relative image and file links of a stage's report at ``folder/``."""
    import re

    def fix(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"^(?:[a-z]+:|/|#)", target):
            return match.group(0)
        return f"{match.group(1)}({folder}/{target})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", fix, markdown)


def _demote_headings(markdown: str) -> str:
    """Nest a stage's headings under the method's ``##`` heading."""
    return "\n".join("##" + line if line.startswith("#") else line for line in markdown.splitlines())


def _log_mlflow(key: str, preset: str, config: Any, outcome: StageOutcome, required: bool) -> None:
    """One MLflow run per stage (params = flattened config, metrics = numeric headline) when installed."""
    try:
        import mlflow
    except ImportError:
        if required:
            from llmboost._optional import MissingExtraError

            raise MissingExtraError("--mlflow needs mlflow: pip install 'llmboost[track]'") from None
        return
    with mlflow.start_run(run_name=f"{key}-{preset}"):
        mlflow.log_params({k: str(v)[:250] for k, v in _flatten(to_dict(config)).items()})
        headline = (outcome.results or {}).get("headline", {})
        mlflow.log_metrics({k.replace("@", "_at_"): float(v) for k, v in _flatten(headline).items() if _is_number(v)})
        mlflow.log_metric("seconds", outcome.seconds)


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in mapping.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            flat |= _flatten(v, name)
        else:
            flat[name] = v
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if isinstance(value, dict) and {"mean", "std"} <= set(value):
        return f"{value['mean']:.4f} ± {value['std']:.4f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
