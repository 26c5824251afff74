"""The LLM-I2I experiment end to end on real MovieLens-100K at a tiny budget: zero-shot SmolLM2 generator,
head discriminator, ItemCF; report, resume and the cold stage timings kept across a resumed run."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from llmboost.methods.llm_i2i.config import load
from llmboost.methods.llm_i2i.experiment import first_run_timings, run_experiment


def test_first_run_timings_keep_the_first_completed_stage(tmp_path: Path) -> None:
    path = tmp_path / "stage_timings.json"
    assert first_run_timings(path, "k", {"generator_s": 90.0}) == {"generator_s": 90.0}
    again = first_run_timings(path, "k", {"generator_s": 2.0, "llm_judge_s": 5.0})  # resumed: generator was warm
    assert again == {"generator_s": 90.0, "llm_judge_s": 5.0}
    assert first_run_timings(path, "other settings", {"generator_s": 7.0}) == {"generator_s": 7.0}
    assert set(json.loads(path.read_text())) == {"k", "other settings"}


@pytest.mark.realdata
def test_tiny_experiment_reports_and_resumes(shared_datasets: Path, tmp_path: Path) -> None:
    overrides = [
        f"data_root={shared_datasets}",
        "datasets=[movielens-100k]",
        "seeds=[0,1]",
        "variants=[base,generator,discriminator]",
        "models.names=[itemcf]",
        "generator.tail_pool=2",
        "generator.tail_items=2",
        "generator.candidates_per_item=2",
        "generator.per_item=1",
        "generator.budget=2",
        "discriminator.train_events=1000",
        "discriminator.heldout_pairs=200",
        "discriminator.drop_grid=[0.0,0.05]",
    ]
    config = load("quick", overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NaN-mean or degenerate-test warnings in the summary
        first = run_experiment(config, tmp_path, progress=False)
    info = first["datasets"]["movielens-100k"]
    assert info["generator_model_fingerprint"] is not None and "@" not in info["generator_model_fingerprint"]
    assert info["generator_llm_pairs"] == 4  # 2 pool items x 2 pre-selected users, scored by the LLM
    table = {e["variant"]: e for e in info["table"]}
    assert set(table) == {"base", "generator", "discriminator"}
    assert table["generator"]["synthetic_kept"] == 2 and table["base"]["Recall@20"]["std"] == 0.0  # ItemCF: no seed
    report = (tmp_path / "report.md").read_text()
    assert "| itemcf | discriminator |" in report and "stage seconds" in report
    header = next(line for line in report.splitlines() if line.startswith("| model | variant |"))
    row = next(line for line in report.splitlines() if line.startswith("| itemcf | base |"))
    cells = dict(zip(header.strip("|").split("|"), row.strip("|").split("|"), strict=True))
    assert re.fullmatch(r"\d\.\d{4} ± \d\.\d{4}", cells[" Recall@20 "].strip())
    assert re.fullmatch(r"\d+\.\d ± \d+\.\d", cells[" hits@20 "].strip())  # counts: one decimal
    assert (tmp_path / "movielens-100k_recall.png").is_file()

    cold = info["first_run_timings"]
    again = run_experiment(config, tmp_path, progress=False)  # everything reused: same numbers, cold times kept
    assert again["headline"] == first["headline"]
    assert again["datasets"]["movielens-100k"]["first_run_timings"] == cold
