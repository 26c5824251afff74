"""The precision setting: ``auto`` is bf16 only where the device runs it faster than float32 (mocked
capabilities)."""

from __future__ import annotations

import pytest
import torch

from llmboost.llm import precision as P


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.delenv(P.AUTO_OVERRIDE_ENV, raising=False)  # the suite sets it to fp32 (tests/conftest.py)
    P.cpu_has_native_bf16.cache_clear()
    P.cpu_has_fast_bf16.cache_clear()
    yield
    P.cpu_has_native_bf16.cache_clear()
    P.cpu_has_fast_bf16.cache_clear()


def _cpu(monkeypatch, capability: str, flags: set[str]) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(P, "cpu_flags", lambda path="/proc/cpuinfo": frozenset(flags))


@pytest.mark.parametrize(
    ("capability", "flags", "native", "expected"),
    [
        ("AVX2", {"avx2", "fma"}, False, torch.float32),  # AMD EPYC without avx512: emulated bf16
        ("AVX2", {"avx2", "avx512_bf16"}, False, torch.float32),  # torch does not dispatch AVX512 kernels
        ("AVX512", {"avx512f", "avx512bw"}, False, torch.float32),  # AVX512 without the bf16 instructions
        ("AVX512", {"avx512f", "avx512_bf16"}, True, torch.float32),  # native but slower than fp32 (measured)
        ("AVX512", {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, True, torch.bfloat16),  # Sapphire Rapids
        ("DEFAULT", set(), False, torch.float32),  # ARM / unknown
    ],
)
def test_auto_picks_bf16_only_where_faster(monkeypatch, capability, flags, native, expected):
    _cpu(monkeypatch, capability, flags)
    assert P.cpu_has_native_bf16() is native
    assert P.resolve_precision("auto", "cpu") == expected
    assert P.resolve_precision(None, "cpu") == expected


def test_explicit_settings_and_aliases(monkeypatch):
    _cpu(monkeypatch, "AVX2", {"avx2"})
    assert P.resolve_precision("fp32") == torch.float32
    assert P.resolve_precision("float32") == torch.float32
    assert P.resolve_precision("bf16") == torch.bfloat16  # explicit: honoured even where emulated
    assert P.resolve_precision("bfloat16") == torch.bfloat16
    assert P.resolve_precision("fp16") == torch.float16
    assert P.resolve_precision(torch.bfloat16) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        P.resolve_precision("int8")


def test_cuda_auto_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.resolve_precision("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a T4 / V100
    assert P.resolve_precision("auto", "cuda:0") == torch.float32


def test_cpu_flags_reads_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert P.cpu_flags(str(info)) == {"fpu", "sse", "avx2", "amx_bf16"}
    assert P.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_finetune_rejects_fp16(tmp_path):
    from llmboost.llm.finetune import finetune, yes_no_examples

    ex = yes_no_examples(["a", "b", "c", "d"], ["x", "y"], min_history=3)
    with pytest.raises(ValueError, match="fp16"):
        finetune("smollm2-135m-instruct", ex, tmp_path, precision="fp16")


def test_environment_overrides_auto_but_not_explicit_settings(monkeypatch):
    _cpu(monkeypatch, "AVX512", {"avx512f", "amx_bf16"})
    monkeypatch.setenv(P.AUTO_OVERRIDE_ENV, "fp32")
    assert P.resolve_precision("auto", "cpu") == torch.float32
    assert P.resolve_precision("bf16", "cpu") == torch.bfloat16
    assert P.resolved_precision_name("auto") == "fp32" and P.resolved_precision_name("bfloat16") == "bf16"
    monkeypatch.setenv(P.AUTO_OVERRIDE_ENV, "auto")
    assert P.resolve_precision("auto", "cpu") == torch.bfloat16
    monkeypatch.setenv(P.AUTO_OVERRIDE_ENV, "fp8")
    with pytest.raises(ValueError, match="fp8"):
        P.resolve_precision("auto", "cpu")
