"""Resumable scoring jobs, including SIGKILL at random moments of a real subprocess."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llmboost.llm.base import ChoiceRequest
from llmboost.llm.jobs import JobError, ScoringError, run_job
from llmboost.llm.store import Record, ScoreStore

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))

from fake_llm import TEMPLATE, FakeModel, fake_logprob, fake_text, make_inputs, prompt_of  # noqa: E402

TV = TEMPLATE


def _expected(inputs) -> dict[str, Record]:
    out = {}
    for key, req in inputs.items():
        if isinstance(req, str):
            out[key] = Record(text=fake_text(req))
        else:
            out[key] = Record(vector=np.array([fake_logprob(req.prompt, c) for c in req.choices]))
    return out


def test_job_stores_everything_then_skips_all(tmp_path):
    inputs = make_inputs(30)
    model = FakeModel()
    with ScoreStore(tmp_path / "s.sqlite") as store:
        res = run_job(model, store, TV, inputs, batch_size=4, progress=False)
        assert (res.total, res.skipped, res.computed, res.remaining) == (30, 0, 30, 0)
        assert store.get_many(model.fingerprint, TV, inputs) == _expected(inputs)
        calls = model.calls
        res2 = run_job(model, store, TV, inputs, batch_size=4, progress=False)
        assert (res2.skipped, res2.computed, res2.batches) == (30, 0, 0)
        assert model.calls == calls


def test_job_computes_only_missing_keys(tmp_path):
    inputs = make_inputs(20)
    model = FakeModel()
    with ScoreStore(tmp_path / "s.sqlite") as store:
        done = {k: v for i, (k, v) in enumerate(_expected(inputs).items()) if i % 3 == 0}
        store.put_many(model.fingerprint, TV, done)
        res = run_job(model, store, TV, inputs, batch_size=5, progress=False)
        assert res.skipped == len(done) and res.computed == 20 - len(done)
        assert sorted(model.seen) == sorted(prompt_of(inputs[k]) for k in inputs if k not in done)
        assert store.get_many(model.fingerprint, TV, inputs) == _expected(inputs)


def test_generator_inputs_with_small_lookahead(tmp_path):
    inputs = make_inputs(23)
    model = FakeModel()
    with ScoreStore(tmp_path / "s.sqlite") as store:
        store.put_many(model.fingerprint, TV, {"k0005": _expected(inputs)["k0005"]})
        from llmboost.llm import jobs

        batches = list(jobs.batches(store, model.fingerprint, TV, iter(inputs.items()), 4, lookahead=3))
        assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 2]
        assert "k0005" not in [k for b in batches for k, _ in b]
        res = run_job(model, store, TV, ((k, v) for k, v in inputs.items()), batch_size=4, progress=False)
        assert (res.total, res.skipped, res.computed) == (23, 1, 22)
        assert store.count() == 23


def test_duplicate_and_bad_keys(tmp_path):
    with ScoreStore(tmp_path / "s.sqlite") as store:
        dup = [("a", "p"), ("b", "q"), ("a", "p")]
        model = FakeModel()
        with pytest.raises(ValueError, match="'a' appears more than once"):
            run_job(model, store, TV, dup, batch_size=1, progress=False)
        assert store.count() == 0  # detected while reading ahead, before any batch
        with pytest.raises(TypeError, match="keys must be str"):
            run_job(model, store, TV, [(1, "p")], progress=False)
        with pytest.raises(ValueError):
            run_job(FakeModel(), store, TV, {"a": "p"}, batch_size=0, progress=False)


class _BadModel(FakeModel):
    def __init__(self, mode: str, bad_call: int) -> None:
        super().__init__()
        self.mode, self.bad_call = mode, bad_call

    def choice_logprobs(self, requests):
        out = super().choice_logprobs(requests)
        if self.calls != self.bad_call:
            return out
        if self.mode == "count":
            return out[:-1]
        if self.mode == "length":
            return [v[:-1] if len(v) > 1 else np.append(v, -1.0) for v in out]
        if self.mode == "nan":
            out[0][0] = np.nan
        if self.mode == "positive":
            out[0][0] = 3.0
        return out


@pytest.mark.parametrize("mode", ["count", "length", "nan", "positive"])
def test_malformed_model_output_is_refused(tmp_path, mode):
    inputs = {f"k{i}": ChoiceRequest(f"p{i}", (" a", " b")) for i in range(12)}
    model = _BadModel(mode, bad_call=3)
    with ScoreStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(JobError, match="ScoringError") as info:
            run_job(model, store, TV, inputs, batch_size=4, progress=False)
        assert isinstance(info.value.__cause__, ScoringError)
        assert info.value.result.computed == 8
        assert info.value.result.failed_keys == ["k8", "k9", "k10", "k11"]
        assert store.keys(model.fingerprint, TV) == sorted(f"k{i}" for i in range(8))


def test_failure_keeps_committed_batches_and_resume_finishes(tmp_path):
    inputs = dict([(k, v) for k, v in make_inputs(30).items() if isinstance(v, ChoiceRequest)][:25])
    with ScoreStore(tmp_path / "s.sqlite") as store:
        failing = FakeModel(fail_on_call=4)
        with pytest.raises(JobError, match=r"failed after committing 15 new records in 3 batches") as info:
            run_job(failing, store, TV, inputs, batch_size=5, progress=False)
        assert isinstance(info.value.__cause__, ConnectionError)
        assert info.value.result.remaining == 10
        assert store.count() == 15
        model = FakeModel()
        res = run_job(model, store, TV, inputs, batch_size=5, progress=False)
        assert (res.skipped, res.computed) == (15, 10)
        assert len(model.seen) == 10
        assert store.get_many(model.fingerprint, TV, inputs) == _expected(inputs)
        store.integrity_check()


def test_progress_bar_shows_rate_and_eta(tmp_path, capsys):
    inputs = make_inputs(10)
    with ScoreStore(tmp_path / "s.sqlite") as store:
        run_job(FakeModel(), store, TV, dict(list(inputs.items())[:4]), batch_size=2, progress=True)
        capsys.readouterr()
        run_job(FakeModel(), store, TV, inputs, batch_size=2, progress=True, desc="demo")
    err = capsys.readouterr().err
    assert "demo" in err and "6/6" in err and "req/s" in err and "<" in err  # elapsed<remaining
    assert "stored_before=4" in err


def _read_log(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 2:
            out.append((parts[0], parts[1]))
    return out


def _stored_keys(store_path: Path) -> set[str]:
    with ScoreStore(store_path) as s:
        return set(s.keys("fake:fake-v1", TV))


def test_sigkill_at_random_moments_then_resume(tmp_path):
    """Kill the job process with SIGKILL several times; the final store equals an uninterrupted run."""
    n, batch_size, delay = 400, 4, 0.03  # >= 100 batches x 30 ms: 5 kills (<= 0.4 s each) never finish it
    seed = int(os.environ.get("LLMBOOST_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    store_path, log_path = tmp_path / "killed.sqlite", tmp_path / "calls.log"
    helper = [sys.executable, str(HELPERS / "run_fake_job.py"), str(store_path), str(log_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), *sys.path])}

    kills = 0
    for run in range(5):
        before = _stored_keys(store_path) if store_path.exists() else set()
        run_id = f"run{run}"
        proc = subprocess.Popen(
            [*helper, run_id, str(n), str(batch_size), str(delay)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # The first kill may land during start-up; the others once the run has called the model.
        if run > 0:
            deadline = time.monotonic() + 120  # generous: a starved process on a loaded machine starts slowly
            while not any(r == run_id for r, _ in _read_log(log_path)) and proc.poll() is None:
                assert time.monotonic() < deadline, "helper never called the model"
                time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        calls = [p for r, p in _read_log(log_path) if r == run_id]
        recomputed = before & {f"k{int(p.split()[-1]):04d}" for p in calls}
        assert not recomputed, f"seed {seed}: run {run} recomputed stored keys {sorted(recomputed)[:5]}"

    before = _stored_keys(store_path)
    assert kills >= 3, f"seed {seed}: only {kills} kills landed while running"
    assert len(before) < n, f"seed {seed}: the job finished before the last kill"
    final = subprocess.run([*helper, "final", str(n), str(batch_size), "0"], env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary == {"total": n, "skipped": len(before), "computed": n - len(before)}
    calls = [p for r, p in _read_log(log_path) if r == "final"]
    keys_called = [f"k{int(p.split()[-1]):04d}" for p in calls]
    assert len(keys_called) == n - len(before) and not (set(keys_called) & before)

    # Every key computed at most once per run, at most once more than its final value across kills.
    all_calls = _read_log(log_path)
    assert len(all_calls) <= n + kills * batch_size

    # The killed-and-resumed store equals an uninterrupted run, bit for bit.
    with ScoreStore(tmp_path / "clean.sqlite") as clean:
        run_job(FakeModel(), clean, TV, make_inputs(n), batch_size=batch_size, progress=False)
        reference = clean.export()
    with ScoreStore(store_path) as resumed:
        resumed.integrity_check()
        got = resumed.export()
    assert list(got["key"]) == list(reference["key"]) == sorted(make_inputs(n))
    for a, b, ta, tb in zip(got["vector"], reference["vector"], got["text"], reference["text"], strict=True):
        assert (a is None and b is None) or a.tobytes() == b.tobytes()
        assert ta == tb
