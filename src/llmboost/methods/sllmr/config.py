"""S-LLMR settings: one dataclass, loadable from YAML/TOML with ``key=value`` overrides, and three presets.

* ``quick`` — a few minutes on 2 CPU cores: MovieLens-100K, BPR-MF, the sentence-embedding teacher on all
  users and the zero-shot likelihood teacher on 40 users, 3 seeds, the main variants only.
* ``cpu`` — the issue's CPU configuration: every variant and ablation on BPR-MF (40-epoch cap), backbone /
  selective / global / random / oracle on SASRec (10-epoch cap); three teachers: sentence embeddings on all
  users, zero-shot likelihood on ``llm_users`` = 100 and the zero-shot A/B choice teacher on ``choice_users`` =
  32 of those, so the LLM stage fits 15 minutes (13.9 min measured on Amazon Scientific, whose long titles make
  it the slower dataset; docs/sllmr.md). Subsets are drawn uniformly at random with ``subset_seed``
  from users with at least ``min_history`` training events and a validation item, and recorded in
  ``stages/subsets.json``.
* ``full`` — paper scale (a GPU job): all users for every teacher, LoRA teacher fine-tuned on all histories.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from llmboost.config import ConfigError, apply_overrides, from_mapping, read_config_file

TEACHERS = ("embedding", "likelihood", "likelihood_lora", "choice", "served")
"""Teacher names: sentence-embedding similarity, zero-shot title likelihood, likelihood after LoRA,
zero-shot A/B choice (both orders, debiased), and an OpenAI-compatible served model (``served_model`` URL)."""

VARIANTS = ("backbone", "selective", "global", "random", "oracle", "no_feature", "teachers")
"""Runs compared: backbone alone, learned gate, gate always on, random gate at the same activation rate,
oracle gate, the gate without each feature (one run per feature), and the learned gate with each teacher."""


@dataclass
class GateConfig:
    """The reliability gate (Sec. 3.3): a small MLP on registered features."""

    features: list[str] = field(
        default_factory=lambda: [
            "history_length",
            "popularity_i",
            "popularity_j",
            "margin_uncertainty",
            "mc_dropout_uncertainty",
            "llm_confidence",
            "order_agreement",
        ]
    )  #: names from the feature registry (gate.FEATURES)
    hidden: int = 16  #: hidden units of the gate MLP
    epochs: int = 300  #: full-batch Adam steps on the gate's own objective
    lr: float = 0.01  #: gate learning rate
    weight_decay: float = 1e-4  #: gate weight decay
    mode: str = "soft"  #: soft (weight = gate) | hard (weight = gate > threshold)
    threshold: float = 0.5  #: hard mode: activation threshold
    heldout_fraction: float = 0.3  #: share of labelled users held out to measure the gate's AUC
    mc_samples: int = 8  #: stochastic forward passes for the MC-dropout feature
    mc_dropout: float = 0.1  #: dropout rate on the user representation for MC-dropout


@dataclass
class SLLMRConfig:
    """One S-LLMR experiment: data, backbone(s), teachers, gate, loss, variants and seeds."""

    source: str = "movielens-100k"  #: built-in dataset name or path
    format: str | None = None  #: loader; guessed when None
    item_fields: list[str] = field(default_factory=lambda: ["title", "genres"])  #: item text fields
    backbones: list[str] = field(default_factory=lambda: ["bprmf"])  #: bprmf | sasrec
    backbone_params: dict[str, Any] = field(default_factory=dict)  #: per backbone name: constructor overrides
    teacher: str = "embedding"  #: the teacher of the main (selective, global, ablation) runs
    teachers: list[str] = field(default_factory=lambda: ["embedding", "likelihood"])  #: teachers scored/compared
    llm_model: str = "smollm2-135m-instruct"  #: model setting of the LLM teachers
    served_model: str | None = None  #: URL of an OpenAI-compatible server for teacher "served"
    served_kind: str = "likelihood"  #: likelihood | choice: how the served teacher is asked
    embedding_model: str = "all-minilm-l6-v2"  #: sentence model of the embedding teacher
    n_candidates: int = 5  #: backbone top-N candidates per user (plus held-out positive and a negative)
    max_history: int = 10  #: history items shown to the teacher (most recent last)
    min_history: int = 3  #: users with fewer training events get no LLM supervision
    llm_users: int | None = 200  #: users scored by LLM teachers (random subset); None = all
    choice_users: int | None = None  #: users of the A/B teachers (choice; served with served_kind=choice): a seeded
    #: random subset of the LLM users
    #: (it costs N(N-1) prompts per user against one request for the likelihood teacher); None = all LLM users
    embedding_users: int | None = None  #: users scored by the embedding teacher; None = all
    subset_seed: int = 0  #: seed of the user subsets and sampled negatives
    likelihood_norm: str = "sum"  #: sum | mean (per token) log-likelihood of a title
    temperature: float = 1.0  #: p_ij = sigmoid((s_i - s_j) / T) for pointwise teachers
    lora_users: int = 200  #: users whose histories train the LoRA teacher (recorded)
    lora_steps: int | None = 30  #: LoRA optimizer steps (None = one epoch)
    lora_last_n: int = 3  #: training positions per user for the LoRA teacher
    llm_batch_size: int = 16  #: requests per scoring batch (one store transaction)
    gate: GateConfig = field(default_factory=GateConfig)
    lam: float = 0.5  #: weight of the LLM regularizer
    target: str = "soft"  #: soft (BCE to p_ij) | hard (BPR towards the LLM's preferred item)
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))  #: runs to compare (see VARIANTS)
    sasrec_variants: list[str] = field(default_factory=lambda: ["backbone", "selective", "global"])  #: for SASRec
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  #: one training per seed and variant
    epochs: int | None = None  #: backbone epoch cap (None = the backbone's default)
    threads: int = 1  #: torch threads
    store: str | None = None  #: score store path; default: <out_dir>/scores.sqlite
    cold_user_fraction: float = 0.2  #: cold users = shortest-history fraction
    head_fraction: float = 0.2  #: head items = most popular fraction


_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "teachers": ["embedding", "likelihood"],
        "llm_users": 40,
        "n_candidates": 4,
        "variants": ["backbone", "selective", "global", "random", "oracle"],
        "backbones": ["bprmf"],
        "epochs": 20,
        "gate": {"epochs": 200},
    },
    "cpu": {
        "teachers": ["embedding", "likelihood", "choice"],
        "llm_users": 100,
        "choice_users": 32,
        "n_candidates": 5,
        "backbones": ["bprmf", "sasrec"],
        "sasrec_variants": ["backbone", "selective", "global", "random", "oracle"],
        "epochs": 40,
        "backbone_params": {"sasrec": {"epochs": 10}},
    },
    "full": {
        "teachers": ["embedding", "likelihood", "likelihood_lora", "choice"],
        "llm_users": None,
        "lora_users": 100000,
        "lora_steps": None,
        "lora_last_n": 50,
        "n_candidates": 10,
        "backbones": ["bprmf", "sasrec"],
        "sasrec_variants": list(VARIANTS),
        "seeds": [0, 1, 2, 3, 4],
    },
}


def preset(name: str) -> SLLMRConfig:
    """The ``quick`` / ``cpu`` / ``full`` configuration; unknown names raise ``ValueError`` listing presets."""
    if name not in _PRESETS:
        raise ValueError(f"unknown S-LLMR preset {name!r}; presets: {sorted(_PRESETS)}")
    return validate(from_mapping(SLLMRConfig, _deepcopy(_PRESETS[name])))


def load_config(source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> SLLMRConfig:
    """A preset name or a YAML/TOML file (or defaults), then ``key=value`` overrides, validated."""
    raw: dict[str, Any] = {}
    if source is not None and str(source) in _PRESETS:
        raw = _deepcopy(_PRESETS[str(source)])
    elif source is not None:
        if not Path(source).exists():
            raise ConfigError(f"{source!r} is neither a preset {sorted(_PRESETS)} nor an existing config file")
        raw = read_config_file(source)
    apply_overrides(raw, overrides, example="lam=0.1")
    return validate(from_mapping(SLLMRConfig, raw))


def validate(config: SLLMRConfig) -> SLLMRConfig:
    """Check names and ranges; errors name the key."""
    for t in [config.teacher, *config.teachers]:
        if t not in TEACHERS:
            raise ConfigError(f"teacher {t!r} unknown; teachers: {list(TEACHERS)}")
    if config.teacher not in config.teachers:
        config = replace(config, teachers=[config.teacher, *config.teachers])
    for v in [*config.variants, *config.sasrec_variants]:
        if v not in VARIANTS:
            raise ConfigError(f"variant {v!r} unknown; variants: {list(VARIANTS)}")
    for b in config.backbones:
        if b not in ("bprmf", "sasrec"):
            raise ConfigError(f"backbones: {b!r} unknown; use bprmf or sasrec")
    if config.gate.mode not in ("soft", "hard"):
        raise ConfigError(f"gate.mode must be soft or hard, not {config.gate.mode!r}")
    if config.target not in ("soft", "hard"):
        raise ConfigError(f"target must be soft or hard, not {config.target!r}")
    if config.likelihood_norm not in ("sum", "mean"):
        raise ConfigError(f"likelihood_norm must be sum or mean, not {config.likelihood_norm!r}")
    if config.n_candidates < 2:
        raise ConfigError(f"n_candidates must be >= 2, not {config.n_candidates}")
    if "served" in config.teachers and not config.served_model:
        raise ConfigError("teacher 'served' needs served_model=<URL of an OpenAI-compatible server>")
    if config.served_kind not in ("likelihood", "choice"):
        raise ConfigError(f"served_kind must be likelihood or choice, not {config.served_kind!r}")
    if not config.seeds:
        raise ConfigError("seeds must not be empty")
    from llmboost.methods.sllmr.gate import FEATURES

    for f in config.gate.features:
        if f not in FEATURES:
            raise ConfigError(f"gate.features: {f!r} unknown; registered: {sorted(FEATURES)}")
    return config


def _deepcopy(raw: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(yaml.safe_dump(raw))
