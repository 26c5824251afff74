"""Run configurations: YAML/TOML files, key=value overrides, errors that name the key."""

from __future__ import annotations

import pytest

from llmboost.config import ConfigError, RunConfig, describe_options, load_config, save_config


def test_defaults_train_sasrec_on_movielens() -> None:
    config = load_config()
    assert config.data.source == "movielens-100k" and config.model.name == "sasrec"
    assert config.split.strategy == "leave_one_out" and config.seeds == [0]


def test_yaml_then_overrides(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  name: bprmf\n  params: {factors: 32}\nseeds: [1]\n")
    config = load_config(path, ["model.params.factors=16", "seeds=[0,1,2]", "split.test_fraction=0.2"])
    assert config.model.name == "bprmf" and config.model.params == {"factors": 16}
    assert config.seeds == [0, 1, 2] and config.split.test_fraction == 0.2


def test_toml_files(tmp_path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('seeds = [3]\n[data]\nsource = "x"\nkcore = 5\n')
    config = load_config(path)
    assert config.data.source == "x" and config.data.kcore == 5 and config.seeds == [3]


def test_int_and_exponent_strings_accepted_for_float() -> None:
    assert load_config(overrides=["slices.head_fraction=1"]).slices.head_fraction == 1.0
    # YAML 1.1 reads 1e-1 (no dot) as a string; a float setting takes it as the number it spells
    assert load_config(overrides=["slices.head_fraction=1e-1"]).slices.head_fraction == 0.1
    with pytest.raises(ConfigError, match=r"slices\.head_fraction must be float"):
        load_config(overrides=["slices.head_fraction=a-fifth"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.nme=x", "unknown config key 'model.nme'"),
        ("seeds=3", "seeds must be a list"),
        ("data.kcore=many", "data.kcore must be int"),
        ("split", "must look like key=value"),
        ("evaluation.ks=[10, x]", r"evaluation.ks\[1\] must be int"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(broken)


def test_saved_config_reloads_identically(tmp_path) -> None:
    config = load_config(overrides=["model.name=bprmf", "seeds=[4,5]", "data.min_rating=4"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_every_option_is_documented() -> None:
    rows = describe_options(RunConfig)
    keys = {key for key, _, _ in rows}
    assert {"data.source", "model.params", "seeds", "slices.head_fraction"} <= keys
    assert all(text for _, _, text in rows), [key for key, _, text in rows if not text]


def test_shipped_configs_load() -> None:
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.toml"))
    assert files
    for path in files:
        config = load_config(path)
        assert config.model.name in {"sasrec", "bprmf", "popular"}


# -- the method loaders read files and overrides through the same helpers -------------------------------------

_METHOD_LOADERS = {
    # method: (loader, file text, override, check of the loaded config, what a missing source says)
    "sllmr": ("llmboost.methods.sllmr.config:load_config", "lam: 0.2\n", "gate.mode=hard",
              lambda c: c.lam == 0.2 and c.gate.mode == "hard", "neither a preset"),
    "llm_i2i": ("llmboost.methods.llm_i2i.config:load", "preset: quick\ngenerator: {budget: 7}\n", "seeds=[3]",
                lambda c: c.generator.budget == 7 and c.datasets == ["movielens-100k"] and c.seeds == [3],
                "not a preset"),
    "hallucination": ("llmboost.methods.hallucination.config:load", "data: {n_geonames: 50}\n", "split.seeds=[4]",
                      lambda c: c.data.n_geonames == 50 and c.split.seeds == [4], "neither a preset"),
    "cemg": ("llmboost.methods.cemg.config:load_config", "seeds: [5]\n", "rqvae.levels=2",
             lambda c: c.seeds == [5] and c.rqvae.levels == 2, "neither a preset"),
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(_METHOD_LOADERS))
def test_method_loaders_share_file_and_override_parsing(method: str, tmp_path) -> None:
    import importlib
    import json

    import yaml

    target, text, override, check, missing = _METHOD_LOADERS[method]
    module, _, name = target.partition(":")
    load = getattr(importlib.import_module(module), name)
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert check(load(path, [override]))
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps(yaml.safe_load(text)))
    assert check(load(as_json, [override]))
    with pytest.raises(ConfigError, match=missing):
        load(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lam: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: cannot parse"):
        load(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: top level must be a mapping"):
        load(listed)
    with pytest.raises(ConfigError, match=r"override 'oops' must look like key=value \(e\.g\. "):
        load(path, ["oops"])


def test_merge_mapping_keeps_atomic_sections_whole() -> None:
    from llmboost.config import merge_mapping

    base = {"a": {"x": 1, "y": 2}, "params": {"epochs": 3, "hidden": 8}}
    new = {"a": {"y": 5}, "params": {"epochs": 1}}
    merged = merge_mapping(base, new, atomic={"params"})
    assert merged == {"a": {"x": 1, "y": 5}, "params": {"epochs": 1}}
    new["params"]["epochs"] = 99
    assert merged["params"]["epochs"] == 1, "values are copied"
