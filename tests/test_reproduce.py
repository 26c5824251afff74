"""`llmboost reproduce`: stage selection, overrides, reuse, failure isolation and the combined report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmboost import reproduce as rp
from llmboost.cli import main
from llmboost.config import ConfigError
from tests.helpers_reproduce import experiment as fake_experiment

FAKE = "tests.helpers_reproduce"


@pytest.fixture
def fake_methods(monkeypatch: pytest.MonkeyPatch) -> dict[str, rp.Method]:
    methods = {
        key: rp.Method(key, f"Fake {key}", "arXiv 0000.00000", FAKE, {"quick": 1, "cpu": 2, "full": 3})
        for key in ("sllmr", "llm_i2i", "cemg", "hallucination")
    }
    monkeypatch.setattr(rp, "METHODS", methods)
    fake_experiment.CALLS.clear()
    return methods


def test_only_accepts_aliases_keeps_canonical_order_and_rejects_unknown(fake_methods) -> None:
    assert rp.parse_only("cemg,i2i") == ["llm_i2i", "cemg"]
    assert rp.parse_only(None) == list(fake_methods)
    with pytest.raises(ConfigError, match="unknown method 'tiger'"):
        rp.parse_only("sllmr,tiger")


def test_overrides_must_name_a_method_and_a_valid_key(fake_methods, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"<method>\.<key>=<value>"):
        rp.split_overrides(["seeds=[0]"], ["sllmr"])
    with pytest.raises(ConfigError, match="sllmr"):
        rp.reproduce(tmp_path, only="sllmr", overrides=["sllmr.nope=1"], echo=lambda _: None)
    assert fake_experiment.CALLS == []  # validated before any stage ran


def test_second_run_reuses_finished_stages_and_a_changed_setting_reruns_only_its_stage(
    fake_methods, tmp_path: Path
) -> None:
    rp.reproduce(tmp_path, only="sllmr,cemg", echo=lambda _: None)
    assert fake_experiment.CALLS == [3, 3]
    rp.reproduce(tmp_path, only="sllmr,cemg", echo=lambda _: None)
    assert fake_experiment.CALLS == [3, 3]  # nothing recomputed
    rp.reproduce(tmp_path, only="sllmr,cemg", overrides=["cemg.size=5"], echo=lambda _: None)
    assert fake_experiment.CALLS == [3, 3, 5]  # only the changed stage
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["stages"]["sllmr"]["status"] == "reused"
    # a reused stage keeps the wall time of the run that made it, in the record and the report's table
    made_in = record["stages"]["sllmr"]["made_in_seconds"]
    assert made_in == json.loads((tmp_path / "sllmr" / "stage.json").read_text())["seconds"] > 0
    assert f"| reused | 0.0 (made in {made_in / 60:.1f}) |" in (tmp_path / "report.md").read_text()
    assert record["stages"]["cemg"]["config"]["size"] == 5
    assert record["stages"]["cemg"]["results"]["headline"]["NDCG@10"]["mean"] == pytest.approx(0.5)


def test_each_stage_starts_with_the_callers_torch_thread_count(fake_methods, tmp_path: Path) -> None:
    """A stage that changes torch's thread count (a method setting, or numba's OpenMP pool) does not change it
    for the stages after it: each runs on the count the command started with."""
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        rp.reproduce(tmp_path, only="sllmr,cemg", overrides=["sllmr.torch_threads=3"], echo=lambda _: None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_failing_stage_keeps_the_others_and_is_rerun_by_the_same_command(fake_methods, tmp_path: Path) -> None:
    with pytest.raises(rp.ReproduceError, match="llm_i2i"):
        rp.reproduce(tmp_path, overrides=["llm_i2i.fail=true"], echo=lambda _: None)
    assert len(fake_experiment.CALLS) == 4  # the stages after the failure still ran
    assert "boom" in (tmp_path / "llm_i2i" / "error.txt").read_text()
    report = (tmp_path / "report.md").read_text()
    assert "| failed |" in report and report.count("| done |") == 3
    fake_experiment.CALLS.clear()
    rp.reproduce(tmp_path, echo=lambda _: None)  # fixed setting: only the failed stage runs
    assert fake_experiment.CALLS == [3]
    assert not (tmp_path / "llm_i2i" / "error.txt").exists()


def test_report_embeds_each_method_report_with_links_into_its_folder(fake_methods, tmp_path: Path) -> None:
    rp.reproduce(tmp_path, only="hallucination", echo=lambda _: None)
    report = (tmp_path / "report.md").read_text()
    assert "![curve](hallucination/plot.png)" in report
    assert "### Fake" in report  # the stage's headings are nested under the method's
    assert "NDCG@10 0.3000 ± 0.0100" in report
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert set(timings) == {"quick/hallucination"}


def test_cli_runs_the_selected_preset_and_reports_failures_as_errors(fake_methods, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["reproduce", "--preset", "cpu", "--only", "sllmr", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert fake_experiment.CALLS == [10]
    assert "[1/1] sllmr" in result.output and "ETA" in result.output
    result = runner.invoke(main, ["reproduce", "--only", "cemg", "--out", str(tmp_path / "b"), "cemg.fail=true"])
    assert result.exit_code != 0 and "1 stage(s) failed: cemg" in result.output
