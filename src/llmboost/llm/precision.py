"""Numeric precision of local models: one setting, ``"auto" | "fp32" | "bf16" | "fp16"``.

``"auto"`` picks bfloat16 only where the device runs it faster than float32 — a CPU with AMX (the ``amx_bf16``
flag, with torch dispatching AVX512/AMX kernels) or a CUDA GPU with bf16 support — and float32 everywhere
else. On CPUs without bf16 instructions bfloat16 is emulated (measured on an AVX2-only AMD EPYC: 1.3 GFLOP/s
against 60 for float32). CPUs with AVX512-BF16 but no AMX run it natively yet no faster: on such an Intel Xeon
(2026-12-01, one thread, ``benchmarks/bench_precision.py``) a 1024^3 product ran at 80 GFLOP/s in bf16 against
148 in float32, a SmolLM2-135M forward pass at 231 against 384 tokens/s under autocast, and LoRA training at 73
against 90 tokens/s, so ``auto`` keeps float32 there (``bf16`` can still be asked for).

The environment variable ``LLMBOOST_PRECISION`` (``fp32``, ``bf16``, ``fp16``) overrides what ``auto`` resolves
to, everywhere at once; explicit settings are never overridden. The test suite sets it to ``fp32`` so that its
numbers are the same on every CPU.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Accepted precision settings (``float32``, ``bfloat16``, ``float16`` are accepted as aliases)."""

_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # bf16 instructions: not emulated
_FAST_BF16_FLAGS = ("amx_bf16",)  # bf16 faster than float32 (AVX512-BF16 alone measured slower, see above)
AUTO_OVERRIDE_ENV = "LLMBOOST_PRECISION"
"""Environment variable that, when set, decides what ``"auto"`` resolves to."""


def normalize_precision(precision: str | torch.dtype | None) -> str:
    """The canonical name (``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``) of a precision setting or dtype."""
    if precision is None:
        return "auto"
    if isinstance(precision, torch.dtype):
        for name, dtype in _DTYPES.items():
            if dtype == precision:
                return name
        raise ValueError(f"unsupported precision {precision}; expected one of {PRECISIONS}")
    key = str(precision).strip().lower()
    if key == "auto":
        return "auto"
    if key not in _ALIASES:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return _ALIASES[key]


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in ``/proc/cpuinfo`` (empty where the file does not exist)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products with bf16 instructions (AMX or AVX512-BF16), i.e. not
    emulated.

    Torch must dispatch to AVX512 kernels (``get_cpu_capability()``: ``AVX512`` or ``AMX``-like) and the CPU must
    report ``amx_bf16`` or ``avx512_bf16``; AVX2-only and ARM-without-flags machines answer False."""
    return _avx512_dispatch() and any(flag in cpu_flags() for flag in _NATIVE_BF16_FLAGS)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether bfloat16 beats float32 on this CPU: AMX (``amx_bf16``) with AVX512/AMX kernels dispatched. What
    ``"auto"`` asks on a CPU."""
    return _avx512_dispatch() and any(flag in cpu_flags() for flag in _FAST_BF16_FLAGS)


def _avx512_dispatch() -> bool:
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    return "AVX512" in capability or "AMX" in capability


def device_prefers_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``"auto"`` picks bfloat16 on ``device`` (CUDA: ``torch.cuda.is_bf16_supported()``; CPU: see
    :func:`cpu_has_fast_bf16`; other devices: False)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def resolve_precision(precision: str | torch.dtype | None = "auto", device: str | torch.device = "cpu") -> torch.dtype:
    """The torch dtype for a precision setting on ``device``: explicit settings as given, ``"auto"`` (or None)
    ``$LLMBOOST_PRECISION`` where set, else bfloat16 where the device runs it faster (:func:`device_prefers_bf16`)
    and float32 otherwise."""
    name = normalize_precision(precision)
    if name == "auto":
        forced = os.environ.get(AUTO_OVERRIDE_ENV, "").strip()
        if forced and normalize_precision(forced) != "auto":
            return _DTYPES[normalize_precision(forced)]
        return torch.bfloat16 if device_prefers_bf16(device) else torch.float32
    return _DTYPES[name]


def precision_name(dtype: torch.dtype) -> str:
    """``"fp32"`` / ``"bf16"`` / ``"fp16"`` for a dtype."""
    return normalize_precision(dtype)


def resolved_precision_name(precision: str | torch.dtype | None = "auto", device: str | torch.device = "cpu") -> str:
    """The name (``"fp32"`` / ``"bf16"`` / ``"fp16"``) of what a precision setting resolves to on ``device``: what
    cache keys record, so that outputs computed at one precision are never reused for another."""
    return precision_name(resolve_precision(precision, device))
