"""JSON on disk for runs and stage caches: atomic writes, numpy-aware encoding, short content digests.

Every run folder and cache marker in llmboost is written with :func:`write_json` (a temporary file, then an
atomic rename), so a job stopped mid-write never leaves a half-written file that a resumed run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars and arrays as Python numbers and lists, anything else as ``str``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: str | Path, payload: Any, indent: int = 2) -> None:
    """Write ``payload`` to ``path`` atomically (parent folders created; numpy values converted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=indent, default=to_jsonable))
    tmp.replace(path)


def digest(payload: Any, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``payload`` as canonical JSON (sorted keys): a stable
    key for a configuration, so that a changed setting gets a new cache entry."""
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
