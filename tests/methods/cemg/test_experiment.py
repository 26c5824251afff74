"""Configuration, presets and a tiny end-to-end experiment on real data (resumable, honest modalities)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmboost.config import ConfigError
from llmboost.methods.cemg.config import PRESETS, CEMGConfig, load_config, preset


def test_presets_and_overrides(tmp_path: Path) -> None:
    for name in PRESETS:
        config = preset(name)
        assert isinstance(config, CEMGConfig)
    assert preset("cpu").rqvae.levels == 3 and preset("cpu").rqvae.codebook_size == 256
    with pytest.raises(ValueError, match="presets"):
        preset("huge")
    config = load_config("quick", ["rqvae.epochs=7", "seeds=[1,2,3]", "generator.beam=5"])
    assert config.rqvae.epochs == 7 and config.seeds == [1, 2, 3] and config.generator.beam == 5
    with pytest.raises(ConfigError, match="unknown variant"):
        load_config("quick", ["variants=[cemg,magic]"])
    with pytest.raises(ConfigError, match=r"rqvae\.nope"):
        load_config("quick", ["rqvae.nope=1"])
    assert load_config("quick", ["generator.llm_precision=bf16"]).generator.llm_precision == "bf16"
    assert load_config("quick", ["generator.llm_precision=bfloat16"]).generator.llm_precision == "bf16"
    with pytest.raises(ConfigError, match=r"generator\.llm_precision"):
        load_config("quick", ["generator.llm_precision=int4"])
    (tmp_path / "c.yaml").write_text("fusion:\n  dim: 8\nseeds: [4]\n")
    config = load_config(tmp_path / "c.yaml")
    assert config.fusion.dim == 8 and config.seeds == [4] and config.rqvae.codebook_size == 256


def test_llm_settings_change_only_the_llm_variants_run_key() -> None:
    """Changing the LLM generator's settings reruns ``cemg_llm`` only; every other variant keeps its stored run
    (its key hashes the LLM settings at their defaults), and a non-LLM setting changes every generator's key."""
    from llmboost.methods.cemg.experiment import _stage_key

    base = preset("cpu")
    llm_changed = load_config(
        "cpu", ["generator.llm_examples=1500", "generator.llm_method=lora", "generator.llm_lr=1e-3"]
    )
    other_changed = load_config("cpu", ["generator.epochs=7"])
    for variant in ("tiger", "cemg", "cemg_no_fusion", "cemg_collab_only", "sasrec"):
        assert _stage_key(llm_changed, variant, "data", 0) == _stage_key(base, variant, "data", 0), variant
    assert _stage_key(llm_changed, "cemg_llm", "data", 0) != _stage_key(base, "cemg_llm", "data", 0)
    for variant in ("tiger", "cemg", "cemg_llm"):
        assert _stage_key(other_changed, variant, "data", 0) != _stage_key(base, variant, "data", 0), variant


def tiny(shared: Path, **changes: object) -> CEMGConfig:
    config = load_config(
        "quick",
        [
            f"datasets=[{shared / 'movielens-100k'}]",
            "seeds=[0]",
            "max_users=40",
            "test_users=30",
            "variants=[sasrec,tiger,cemg,cemg_collab_only]",
            "sasrec_params={epochs: 2, hidden: 16}",
            "features.collab_params={epochs: 2, hidden: 16}",
            "rqvae.codebook_size=16",
            "rqvae.epochs=4",
            "rqvae.hidden=[32]",
            "fusion.epochs=2",
            "fusion.dim=16",
            "generator.d_model=16",
            "generator.heads=2",
            "generator.ff=32",
            "generator.epochs=1",
            "generator.valid_users=20",
            "generator.targets_per_user=2",
            "generator.beam=10",
            *[f"{k}={v}" for k, v in changes.items()],
        ],
    )
    return config


@pytest.mark.realdata
def test_tiny_experiment_writes_report_and_resumes(shared_datasets: Path, tmp_path: Path) -> None:
    from llmboost.methods.cemg.experiment import run_experiment

    results = run_experiment(tiny(shared_datasets), tmp_path, progress=False)
    data = results["datasets"]["movielens-100k"]
    assert data["modalities"]["visual"] == "absent"  # no images in the shared data: said, never faked
    assert data["modalities"]["text"]["coverage"] == 1.0
    collaborative = data["modalities"]["collaborative"]  # added per seed for the variants that use it
    assert "trained per seed" in collaborative["source"] and "cemg" in collaborative["variants"]
    for variant in ("sasrec", "tiger", "cemg", "cemg_collab_only"):
        recall = data["metrics"][variant]["Recall@10"]["mean"]
        assert 0.0 <= recall <= 1.0
    for variant, book in data["codebook"].items():
        assert len(book["utilisation"]) == 3 and 0 <= book["collision_rate"] <= 1, variant
    assert {"headline", "config", "seeds", "data_fingerprint", "model_fingerprint"} <= set(results)
    # the headline names each dataset (a multi-dataset run summarises all of them, not the first)
    assert results["headline"]["movielens-100k/cemg/NDCG@10"] == data["metrics"]["cemg"]["NDCG@10"]["mean"]
    report = (tmp_path / "report.md").read_text()
    assert "| cemg |" in report and "collision rate" in report and "(ndcg.png)" in report
    assert (tmp_path / "ndcg.png").exists()
    table = tmp_path / "movielens-100k" / "seed-0" / "cemg"
    assert (table / "semantic_ids.parquet").exists() and json.loads((table / "semantic_ids.json").read_text())
    # rerun: finished stages are skipped; a changed RQ-VAE setting reruns only what it affects
    stamps = {
        v: (tmp_path / "movielens-100k" / "seed-0" / v / "metrics.json").stat().st_mtime_ns for v in ("sasrec", "tiger")
    }
    again = run_experiment(
        tiny(shared_datasets, **{"variants": "[sasrec,tiger]", "rqvae.epochs": 3}), tmp_path, progress=False
    )
    after = {
        v: (tmp_path / "movielens-100k" / "seed-0" / v / "metrics.json").stat().st_mtime_ns for v in ("sasrec", "tiger")
    }
    assert after["sasrec"] == stamps["sasrec"] and after["tiger"] != stamps["tiger"]
    assert again["datasets"]["movielens-100k"]["metrics"]["sasrec"] == data["metrics"]["sasrec"]


def test_each_variant_tokenizes_its_own_item_vectors() -> None:
    from llmboost.methods.cemg.experiment import item_vectors
    from tests.methods.cemg.test_features_fusion import synthetic_features

    features = synthetic_features(80)
    config = load_config("quick", ["fusion.epochs=1", "fusion.dim=8"])
    shapes = {
        v: item_vectors(v, config, features, 0)[0].shape
        for v in ("tiger", "cemg", "cemg_no_guidance", "cemg_no_fusion", "cemg_collab_only")
    }
    assert shapes == {
        "tiger": (80, 24),
        "cemg": (80, 8),
        "cemg_no_guidance": (80, 8),
        "cemg_no_fusion": (80, 24 + 12 + 8),
        "cemg_collab_only": (80, 8),
    }


def test_cli_reports_bad_config_and_shows_an_id_table(tmp_path: Path) -> None:
    import numpy as np
    from click.testing import CliRunner

    from llmboost.cli import main
    from llmboost.methods.cemg.semantic_ids import SemanticIDs

    runner = CliRunner()
    result = runner.invoke(main, ["cemg", "run", "nope"])
    assert result.exit_code != 0 and "neither a preset" in result.output
    result = runner.invoke(main, ["cemg", "run", "quick", "rqvae.levels=zero"])
    assert result.exit_code != 0 and "rqvae.levels must be int" in result.output
    SemanticIDs.build(np.array([[0, 1], [0, 1], [1, 0]]), 2).save(tmp_path)
    result = runner.invoke(main, ["cemg", "ids", str(tmp_path)])
    assert result.exit_code == 0 and '"collision_rate": 0.666' in result.output


@pytest.mark.realdata
def test_llm_variant_runs_in_the_experiment_and_records_its_fine_tune(
    shared_datasets: Path, tiny_llm: str, tmp_path: Path
) -> None:
    """``cemg_llm`` end to end on a real slice with a tiny Llama: valid metrics, the fine-tune's log in the run
    record, and a rerun that reuses the run."""
    pytest.importorskip("peft")
    from llmboost.methods.cemg.experiment import run_experiment

    changes = {
        "variants": "[cemg_llm]",
        "generator.llm_model": tiny_llm,
        "generator.llm_method": "lora",
        "generator.llm_examples": 40,
        "generator.llm_batch_tokens": 512,
        "generator.max_history": 4,
        "generator.beam": 5,
    }
    results = run_experiment(tiny(shared_datasets, **changes), tmp_path, progress=False)
    recall = results["datasets"]["movielens-100k"]["metrics"]["cemg_llm"]["Recall@10"]["mean"]
    assert 0.0 <= recall <= 1.0
    run = tmp_path / "movielens-100k" / "seed-0" / "cemg_llm"
    record = json.loads((run / "metrics.json").read_text())
    assert record["llm_training"]["method"] == "lora" and record["llm_training"]["examples"] == 40
    assert record["llm_training"]["steps"] >= 1 and (run / "llm" / "adapter_config.json").is_file()
    stamp = (run / "metrics.json").stat().st_mtime_ns
    run_experiment(tiny(shared_datasets, **changes), tmp_path, progress=False)
    assert (run / "metrics.json").stat().st_mtime_ns == stamp  # finished: reused, not fine-tuned again
