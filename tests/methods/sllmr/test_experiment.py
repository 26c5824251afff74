"""The S-LLMR experiment end to end on a small real slice, its presets and its command line."""

from __future__ import annotations

import json

import pytest

from llmboost.config import ConfigError
from llmboost.methods.sllmr.config import load_config, preset


def test_presets_and_overrides():
    assert preset("quick").llm_users == 40 and preset("cpu").backbones == ["bprmf", "sasrec"]
    with pytest.raises(ValueError, match="presets"):
        preset("huge")
    cfg = load_config("cpu", ["lam=0.1", "gate.mode=hard"])
    assert cfg.lam == 0.1 and cfg.gate.mode == "hard"
    with pytest.raises(ConfigError, match="teacher"):
        load_config("quick", ["teacher=oracle"])
    with pytest.raises(ConfigError, match="registered"):
        load_config("quick", ["gate.features=[nope]"])
    with pytest.raises(ConfigError, match="served_model"):
        load_config("quick", ["teachers=[served]"])
    with pytest.raises(ConfigError, match="served_kind"):
        load_config("quick", ["teachers=[served]", "served_model=http://127.0.0.1:1", "served_kind=yesno"])
    cpu = preset("cpu")  # the CPU configuration: three teachers, both backbones with the baselines
    assert {"embedding", "likelihood", "choice"} <= set(cpu.teachers) and cpu.choice_users < cpu.llm_users
    assert {"random", "oracle"} <= set(cpu.sasrec_variants)


def test_choice_subset_is_a_seeded_subset_of_the_llm_users():
    import numpy as np

    from llmboost.methods.sllmr.experiment import choice_subset

    llm = np.arange(0, 300, 3)
    sub = choice_subset(llm, 40, 0)
    assert len(sub) == 40 and np.isin(sub, llm).all() and (np.diff(sub) > 0).all()
    assert np.array_equal(sub, choice_subset(llm, 40, 0)) and not np.array_equal(sub, choice_subset(llm, 40, 1))
    assert np.array_equal(choice_subset(llm, None, 0), llm)


def test_a_served_model_asked_ab_questions_scores_the_choice_users_only():
    """The served teacher with ``served_kind=choice`` asks N(N-1) A/B prompts per user like the choice teacher,
    so it gets the same ``choice_users`` subset (and its runs are keyed by that subset and the kind)."""
    from llmboost.methods.sllmr.experiment import asks_choice

    served = ["teachers=[served]", "served_model=http://127.0.0.1:1"]
    assert asks_choice("choice", load_config("quick", []))
    assert asks_choice("served", load_config("quick", [*served, "served_kind=choice"]))
    assert not asks_choice("served", load_config("quick", served))  # likelihood: one request per user
    assert not asks_choice("likelihood", load_config("quick", [*served, "served_kind=choice"]))


@pytest.mark.realdata
def test_run_experiment_end_to_end_and_resume(ml_small, tmp_path):
    from fake_openai_server import FakeOpenAIServer

    from llmboost.methods.sllmr.experiment import run_experiment

    _, _, path = ml_small
    out = tmp_path / "run"
    with FakeOpenAIServer() as srv:
        cfg = load_config(
            None,
            [
                f"source={path}",
                "teacher=served",
                "teachers=[served]",
                f"served_model={srv.url}",
                "epochs=3",
                "seeds=[0,1,2]",
                "variants=[backbone,selective,global,random,oracle]",
                "llm_users=60",
                "n_candidates=3",
                "gate.epochs=50",
                "gate.mc_samples=2",
            ],
        )
        results = run_experiment(cfg, out, progress=False)
        report = (out / "report.md").read_text()
        assert {"headline", "config", "seeds", "data_fingerprint", "model_fingerprint"} <= set(results)
        assert (out / "gate_activation_bprmf.png").exists() and "gate_activation_bprmf.png" in report
        for variant in ("backbone", "selective", "global", "random", "oracle"):
            stats = results["aggregate"][f"bprmf/{variant}"]["NDCG@10"]
            assert stats["n"] == 3 and 0 <= stats["mean"] <= 1
        assert results["significance"]["bprmf/selective"]["all"]["users"] > 100
        assert results["significance"]["bprmf/selective-vs-global"]["all"]["users"] > 100
        subsets = json.loads((out / "stages/subsets.json").read_text())
        assert len(subsets["llm_users"]) == 60 and set(subsets["choice_users"]) <= set(subsets["llm_users"])
        acc = results["teachers_accuracy"]["bprmf"]["served"]["all"]
        assert acc["pairs"] > 0 and 0 <= acc["teacher"] <= 1 and 0 <= acc["backbone"] <= 1
        sel, rnd = results["aggregate"]["bprmf/selective"], results["aggregate"]["bprmf/random"]
        assert sel["activation_rate"]["mean"] == pytest.approx(rnd["activation_rate"]["mean"])  # same rate
        assert json.loads((out / "results.json").read_text())["headline"] == results["headline"]
        # resume: finished runs are reused (no retraining), results identical
        stamp = (out / "runs/bprmf/selective/seed-0/summary.json").stat().st_mtime_ns
        again = run_experiment(cfg, out, progress=False)
        assert (out / "runs/bprmf/selective/seed-0/summary.json").stat().st_mtime_ns == stamp
        assert again["aggregate"] == results["aggregate"]


def test_cli_reports_bad_configuration_cleanly():
    from click.testing import CliRunner

    from llmboost.cli import main

    result = CliRunner().invoke(main, ["sllmr", "run", "nonexistent-preset"])
    assert result.exit_code != 0 and "neither a preset" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["sllmr", "run", "quick", "lam=oops"])
    assert result.exit_code != 0 and "lam" in result.output
