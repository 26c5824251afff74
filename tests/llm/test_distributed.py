"""Ray scale-out of scoring jobs on a local 2-CPU Ray instance (fake model, then the real SmolLM2)."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from llmboost.llm.base import ChoiceRequest
from llmboost.llm.jobs import JobError, run_job
from llmboost.llm.store import ScoreStore

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))

from fake_llm import TEMPLATE, FailingOn, FakeModel, broken_factory, make_inputs  # noqa: E402

pytestmark = pytest.mark.slow

TV = TEMPLATE


@pytest.fixture(scope="module")
def ray_local():
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("ray is not installed but CI=true: pip install 'llmboost[ray]'")
        pytest.skip("ray is not installed (pip install 'llmboost[ray]')")
    import ray

    src = str(Path(__file__).parents[2] / "src")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
        # workers import the fake model from the test helpers
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(HELPERS), src])}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()


def _prompt_key(prompt: str) -> str:
    return f"k{int(prompt.split()[-1]):04d}"


def test_ray_job_equals_single_process_and_resumes(ray_local, tmp_path):
    from llmboost.llm.distributed import run_job_ray

    inputs = make_inputs(40)
    with ScoreStore(tmp_path / "single.sqlite") as single:
        run_job(FakeModel(), single, TV, inputs, batch_size=3, progress=False)
        reference = single.export()

    log = tmp_path / "calls.log"
    with ScoreStore(tmp_path / "ray.sqlite") as store:
        first = dict(list(inputs.items())[:10])
        run_job(FakeModel(), store, TV, first, batch_size=3, progress=False)
        factory = functools.partial(FakeModel, log_path=str(log), run_id="ray")
        res = run_job_ray(factory, store, TV, inputs, batch_size=3, num_workers=2, fingerprint="fake:fake-v1",
                          progress=False)  # fmt: skip
        assert (res.total, res.skipped, res.computed, res.batches) == (40, 10, 30, 10)
        called = [line.split("\t")[1] for line in log.read_text().splitlines()]
        assert sorted(_prompt_key(p) for p in called) == sorted(list(inputs)[10:]), "only missing keys computed"
        got = store.export()
        # again: nothing left to do, and the probe (no fingerprint given) finds the same fingerprint
        again = run_job_ray(FakeModel, store, TV, inputs, batch_size=3, progress=False)
        assert (again.skipped, again.computed) == (40, 0)
    assert list(got["key"]) == list(reference["key"])
    for a, b, ta, tb in zip(got["vector"], reference["vector"], got["text"], reference["text"], strict=True):
        assert (a is None and b is None) or a.tobytes() == b.tobytes()
        assert ta == tb


def test_ray_worker_failure_is_reported_and_resumable(ray_local, tmp_path):
    from llmboost.llm.distributed import run_job_ray

    inputs = {f"k{i:04d}": ChoiceRequest(f"prompt {i:04d}", (" yes", " no")) for i in range(12)}
    with ScoreStore(tmp_path / "ray.sqlite") as store:
        with pytest.raises(JobError, match="worker lost its accelerator") as info:
            run_job_ray(FailingOn("prompt 0007"), store, TV, inputs, batch_size=2, num_workers=2,
                        fingerprint="fake:fake-v1", progress=False)  # fmt: skip
        kept = store.count()
        assert kept == info.value.result.computed and kept <= 10
        res = run_job_ray(FakeModel, store, TV, inputs, batch_size=2, fingerprint="fake:fake-v1", progress=False)
        assert (res.skipped, res.computed) == (kept, 12 - kept)
        assert store.count() == 12


def test_ray_model_load_failure_is_reported(ray_local, tmp_path):
    from llmboost.llm.distributed import run_job_ray

    with ScoreStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(JobError, match="model file not found"):
            run_job_ray(broken_factory, store, TV, make_inputs(4), fingerprint="fake:fake-v1", progress=False)
        with pytest.raises(OSError, match="model file not found"):  # the fingerprint probe loads it too
            run_job_ray(broken_factory, store, TV, make_inputs(4), progress=False)
        assert store.count() == 0


def test_ray_rejects_bad_arguments(ray_local, tmp_path):
    from llmboost.llm.distributed import build_model, run_job_ray

    with ScoreStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(ValueError):
            run_job_ray(FakeModel, store, TV, {}, batch_size=0)
        with pytest.raises(ValueError):
            run_job_ray(FakeModel, store, TV, {}, num_workers=0)
        empty = run_job_ray(FakeModel, store, TV, {}, fingerprint="fake:fake-v1", progress=False)
        assert empty.total == 0
    with pytest.raises(ValueError):
        build_model("smollm2-135m-instruct", engine="tpu")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        build_model(FakeModel, dtype="float32")


def test_ray_hf_smollm2_matches_single_process(ray_local, smollm2, tmp_path):
    """2 Ray workers with the real SmolLM2 (HFModel) store the same scores as one process."""
    import torch

    from llmboost.llm.distributed import run_job_ray

    subjects = ["a quiet drama", "a space opera", "a cooking show", "a horror film"]
    inputs = {
        f"q{i:02d}": ChoiceRequest(
            f"The user loved {subjects[i % 4]} and {subjects[(i + 1) % 4]}. Like item {i}? Answer:",
            (" yes", " no") if i % 3 else (" A", " B", " maybe"),
        )
        for i in range(16)
    }
    # Same batches (batch_size=4 in both runs) and the same thread count (Ray gives each 1-CPU actor one
    # thread) make the two runs bitwise comparable; the assertion still allows 1e-5.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ScoreStore(tmp_path / "single.sqlite") as single:
            run_job(smollm2, single, TV, inputs, batch_size=4, progress=False)
            reference = single.get_many(smollm2.fingerprint, TV, inputs)
    finally:
        torch.set_num_threads(threads)
    kwargs = {"batch_size": smollm2.batch_size, "max_batch_tokens": smollm2.max_batch_tokens}

    with ScoreStore(tmp_path / "ray.sqlite") as store:
        res = run_job_ray("smollm2-135m-instruct", store, TV, inputs, batch_size=4, num_workers=2,
                          engine="local", model_kwargs=kwargs, progress=False)  # fmt: skip
        assert res.model_fp == smollm2.fingerprint  # probed on a worker
        assert (res.computed, res.batches) == (16, 4)
        got = store.get_many(smollm2.fingerprint, TV, inputs)
    assert set(got) == set(reference) == set(inputs)
    bitwise = 0
    for key in inputs:
        np.testing.assert_allclose(got[key].vector, reference[key].vector, rtol=0, atol=1e-5)
        assert np.isfinite(got[key].vector).all()
        bitwise += got[key].vector.tobytes() == reference[key].vector.tobytes()
    print(f"{bitwise}/{len(inputs)} score vectors bitwise identical to the single-process run")


def test_auto_engine_never_picks_vllm(monkeypatch):
    """vLLM is an explicit, experimental opt-in: ``auto`` loads the tested local backend even where vLLM and
    a GPU are present; ``engine="vllm"`` warns before anything else."""
    import importlib.util as iu

    import torch

    import llmboost.llm.models as models
    from llmboost.llm import distributed

    real_find_spec = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: object() if name == "vllm" else real_find_spec(name, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loaded = []
    monkeypatch.setattr(models, "load_model", lambda setting, **kw: loaded.append(setting) or "local-backend")
    assert distributed.build_model("smollm2-135m-instruct", engine="auto") == "local-backend"
    assert distributed.build_model("smollm2-135m-instruct") == "local-backend"
    assert loaded == ["smollm2-135m-instruct"] * 2

    monkeypatch.setattr(distributed, "VLLMLanguageModel", lambda setting, **kw: "vllm-backend")
    with pytest.warns(UserWarning, match="experimental"):
        assert distributed.build_model("smollm2-135m-instruct", engine="vllm") == "vllm-backend"
