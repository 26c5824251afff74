"""Configuration of LLM-I2I (arXiv 2512.21595): data, generator, discriminator, fusion, I2I models, presets.

Loadable from YAML/TOML with ``key=value`` overrides (:func:`load`); :func:`preset` gives ``quick`` (a few
minutes on 2 CPU cores), ``cpu`` (the issue's CPU configuration: LLM stages within ~15 min per dataset) and
``full`` (paper-scale: every long-tail item, larger LLM budgets; a GPU job).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmboost.config import ConfigError, apply_overrides, from_mapping, merge_mapping, read_config_file, to_dict
from llmboost.llm.precision import normalize_precision

PRESETS = ("quick", "cpu", "full")


@dataclass
class GeneratorConfig:
    """Sec. 3.2 (generator): an LLM learned from "history -> next item" ranks pre-selected users per long-tail item."""

    enabled: bool = True
    model: str = "smollm2-135m-instruct"
    mode: str = "finetune"  # "finetune" (LoRA on history -> next item) | "zero_shot"
    finetune_users: int = 64  # users whose histories give the fine-tuning examples (a recorded subset)
    finetune_last_n: int = 2  # examples per user (their last positions)
    finetune_steps: int = 10
    finetune_batch_tokens: int = 1024
    lora_r: int = 8
    max_history: int = 8  # titles shown in a prompt (most recent)
    tail_pool: int = 60  # long-tail items whose candidates the LLM scores (shared by all seeds)
    tail_items: int = 40  # long-tail items boosted per seed (a seeded sample of the pool)
    candidates_per_item: int = 6  # users pre-selected per item (embedding + co-occurrence), scored by the LLM
    per_item: int = 2  # synthetic users kept per item (the best by LLM likelihood)
    budget: int = 80  # synthetic events at most, per seed
    text_weight: float = 0.5  # pre-selection score = w * text similarity + (1 - w) * co-occurrence (ranks)
    weight: float = 1.0  # weight of synthetic events in the I2I models (fusion)
    batch_size: int = 8


@dataclass
class DiscriminatorConfig:
    """Sec. 3.3 (discriminator): a user-item compatibility judge; events scoring below a threshold are dropped."""

    enabled: bool = True
    kind: str = "head"  # "head": logistic regression on frozen sentence embeddings (scores every event)
    embedding_model: str = "all-minilm-l6-v2"
    profile_items: int = 10  # items before an event that form the user profile
    train_events: int = 20000  # positives sampled to train the head (each with a popularity-matched negative)
    drop_grid: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.05, 0.1, 0.2])
    threshold: float | None = None  # fixed score threshold; None = choose the drop fraction on validation
    heldout_pairs: int = 2000  # held-out real-vs-negative pairs for the AUC (validation targets)
    # the LLM judge (yes/no, LoRA-tuned on real positives vs popularity-matched negatives): AUC on held-out pairs
    llm_judge: bool = True
    llm_model: str = "smollm2-135m-instruct"
    llm_finetune_users: int = 48
    llm_finetune_steps: int = 8
    llm_heldout_pairs: int = 60
    llm_score_synthetic: bool = True  # the LLM judge also scores every synthetic event (reported)


@dataclass
class ModelsConfig:
    """The unchanged I2I models trained on the fused data."""

    names: list[str] = field(default_factory=lambda: ["itemcf", "swing", "item2vec"])
    k: int = 50
    last_n: int = 10
    itemcf_iuf: bool = True
    swing_alpha: float = 1.0
    swing_max_item_users: int | None = None  # sample at most this many users per item in Swing (seeded); None = all
    item2vec_dim: int = 32
    item2vec_epochs: int = 3


@dataclass
class Config:
    """The whole LLM-I2I experiment."""

    datasets: list[str] = field(default_factory=lambda: ["movielens-100k", "amazon-scientific"])
    data_root: str = "../shared/datasets"
    text_fields: dict[str, list[str]] = field(
        default_factory=lambda: {"movielens-100k": ["title", "genres"], "amazon-scientific": ["title"]}
    )
    max_text_chars: int = 120
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    ks: list[int] = field(default_factory=lambda: [20, 50])
    variants: list[str] = field(default_factory=lambda: ["base", "generator", "discriminator", "both"])
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    llm_seed: int = 0  # seed of the (shared) LLM fine-tuning runs
    precision: str = "auto"  # LLM fine-tuning and scoring: auto (bf16 where faster: AMX, CUDA) | fp32 | bf16


VARIANTS = ("base", "generator", "discriminator", "both")


def validate(config: Config) -> Config:
    """Clear errors for settings that cannot work."""
    bad = [v for v in config.variants if v not in VARIANTS]
    if bad:
        raise ConfigError(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    try:
        config.precision = normalize_precision(config.precision)
    except ValueError as err:
        raise ConfigError(f"precision: {err}") from None
    if config.generator.mode not in ("finetune", "zero_shot"):
        raise ConfigError(f"generator.mode must be 'finetune' or 'zero_shot', not {config.generator.mode!r}")
    if config.discriminator.kind != "head":
        raise ConfigError(f"discriminator.kind must be 'head', not {config.discriminator.kind!r}")
    if not config.seeds:
        raise ConfigError("seeds must name at least one seed")
    if config.generator.weight <= 0:
        raise ConfigError(f"generator.weight must be > 0, got {config.generator.weight}")
    for name in ("tail_items", "candidates_per_item", "per_item", "budget"):
        if getattr(config.generator, name) < 0:
            raise ConfigError(f"generator.{name} must be >= 0")
    if any(not 0.0 <= f < 1.0 for f in config.discriminator.drop_grid):
        raise ConfigError("discriminator.drop_grid fractions must lie in [0, 1)")
    return config


def preset(name: str) -> Config:
    """The ``quick`` / ``cpu`` / ``full`` configuration; unknown names raise ``ValueError`` listing presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {list(PRESETS)}")
    config = Config()
    if name == "quick":
        # ~4 min cold on 2 busy cores: 24 zero-shot LLM prompts (8 pool items x 3 candidates, 4-title histories),
        # the head discriminator (3,000 training events, drop fraction 0 or 5 % chosen on validation), ItemCF
        # and Swing (at most 50 sampled users per item), 3 seeds; MovieLens-100K only.
        config.datasets = ["movielens-100k"]
        config.generator = GeneratorConfig(
            mode="zero_shot",
            max_history=4,
            tail_pool=8,
            tail_items=6,
            candidates_per_item=3,
            per_item=2,
            budget=12,
        )
        config.discriminator = DiscriminatorConfig(
            train_events=3000, drop_grid=[0.0, 0.05], heldout_pairs=500, llm_judge=False
        )
        config.models = ModelsConfig(names=["itemcf", "swing"], swing_max_item_users=50)
    elif name == "full":
        config.generator = GeneratorConfig(
            finetune_users=100000,
            finetune_last_n=5,
            finetune_steps=2000,
            finetune_batch_tokens=8192,
            lora_r=16,
            max_history=20,
            tail_pool=100000,
            tail_items=100000,
            candidates_per_item=50,
            per_item=5,
            budget=1000000,
        )
        config.discriminator = DiscriminatorConfig(
            train_events=200000,
            heldout_pairs=20000,
            llm_finetune_users=100000,
            llm_finetune_steps=2000,
            llm_heldout_pairs=5000,
        )
        config.models = ModelsConfig(item2vec_dim=64, item2vec_epochs=10)
        config.seeds = [0, 1, 2, 3, 4]
    return config


def from_dict(raw: dict[str, Any]) -> Config:
    return validate(from_mapping(Config, raw))


def load(source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A preset name or a YAML/TOML/JSON file (default: ``cpu``), then ``key=value`` overrides (values parsed
    as YAML: ``generator.budget=50``, ``models.names=[itemcf]``)."""
    if source is None or str(source) in PRESETS:
        raw = to_dict(preset(str(source) if source is not None else "cpu"))
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: not a preset ({list(PRESETS)}) and no such file")
        loaded = read_config_file(path)
        base = loaded.pop("preset", "cpu")
        raw = merge_mapping(to_dict(preset(base)), loaded, atomic={"text_fields"})
    apply_overrides(raw, overrides, example="generator.budget=50")
    return from_dict(raw)


def section_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
