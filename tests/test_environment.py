"""``llmboost env``: the precision ``auto`` picks and why, extras, built-in models (mocked CPUs)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from llmboost import environment
from llmboost.cli import main
from llmboost.llm import precision as P


@pytest.fixture
def cpu(monkeypatch):
    """Set the CPU torch and /proc/cpuinfo report; ``auto`` is not overridden by the test suite's setting."""
    monkeypatch.delenv(P.AUTO_OVERRIDE_ENV, raising=False)

    def set_cpu(capability: str, flags: set[str]) -> None:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(P, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))
        monkeypatch.setattr(environment, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))
        P.cpu_has_native_bf16.cache_clear()
        P.cpu_has_fast_bf16.cache_clear()

    yield set_cpu
    P.cpu_has_native_bf16.cache_clear()
    P.cpu_has_fast_bf16.cache_clear()


@pytest.mark.parametrize(
    ("capability", "flags", "precision", "why"),
    [
        ("AVX512", {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "bf16", "AMX"),
        ("AVX512", {"avx512f", "avx512_bf16"}, "fp32", "measured slower"),
        ("AVX2", {"avx2"}, "fp32", "emulated"),
    ],
)
def test_env_says_what_auto_picks_and_why(cpu, capability, flags, precision, why):
    cpu(capability, flags)
    info = environment.describe_environment()
    assert info["cpu"]["auto_precision"] == precision and why in info["cpu"]["why"]
    assert set(info["extras"]) == set(environment.EXTRAS) and info["extras"]["llm"] is True
    text = CliRunner().invoke(main, ["env"], catch_exceptions=False).output
    assert f"precision auto on cpu: {precision}" in text and why in text
    as_json = json.loads(CliRunner().invoke(main, ["env", "--json"], catch_exceptions=False).output)
    assert as_json["cpu"]["auto_precision"] == precision


def test_env_names_the_override(cpu, monkeypatch):
    cpu("AVX512", {"avx512f", "amx_bf16"})
    monkeypatch.setenv(P.AUTO_OVERRIDE_ENV, "fp32")
    info = environment.describe_environment()
    assert info["cpu"]["auto_precision"] == "fp32" and info["precision_override"] == "fp32"
    assert f"${P.AUTO_OVERRIDE_ENV}=fp32" in environment.format_environment(info)


def test_reproduce_records_the_same_machine_facts(cpu):
    from pathlib import Path

    from llmboost.reproduce import _results_record

    cpu("AVX512", {"avx512f", "avx512_bf16"})
    machine = _results_record(Path("unused"), "quick", [], {}, [], 1.0)["machine"]
    info = environment.describe_environment()
    assert machine["cpu_capability"] == "AVX512" and machine["auto_precision"] == info["cpu"]["auto_precision"]
    assert machine["threads"] == info["torch_threads"]
