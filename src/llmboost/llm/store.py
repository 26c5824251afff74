"""Durable, offline store of every language-model output used for training.

Records are keyed by ``(model fingerprint, template fingerprint, input key)``. The template part is derived
from the :class:`~llmboost.llm.prompts.PromptTemplate` itself (:attr:`PromptTemplate.fingerprint`: a hash of
its name, version, text, choices, system turn and answer prefix), never from a free caller string, so outputs of
different wordings never mix; a string is accepted only when it is such a fingerprint. Records live in one
SQLite file in WAL mode. Each :meth:`ScoreStore.put_many` call is one transaction, so a process killed at any moment
leaves either the whole batch or none of it; the primary key on the triple makes duplicates impossible.

A record holds a float vector (e.g. the log-probabilities of a request's choices), a text (a generation),
or both. Vectors are stored as little-endian float64 bytes and come back bit-for-bit identical.

>>> store = ScoreStore("scores.sqlite")                                           # doctest: +SKIP
>>> store.put_many("smollm2-135m@abc", PAIRWISE, {"u1|i7": np.array([-0.1, -2.3])})  # doctest: +SKIP
>>> store.missing("smollm2-135m@abc", PAIRWISE, ["u1|i7", "u2|i9"])          # doctest: +SKIP
['u2|i9']
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from llmboost.llm.prompts import PromptTemplate

__all__ = ["Record", "ScoreStore", "StoreError", "TemplateRef", "Value", "template_key"]

_SCHEMA_VERSION = 1
_CHUNK = 500  # keys per ``IN (...)`` query, well under SQLite's bound-parameter limit


class StoreError(RuntimeError):
    """A value cannot be stored, a record conflicts, or the file is not a score store."""


TemplateRef = PromptTemplate | str
"""A prompt template, or its :attr:`~llmboost.llm.prompts.PromptTemplate.fingerprint` string."""

_FINGERPRINT = re.compile(r"^\S+@v\d+:[0-9a-f]{12}$")


def template_key(template: TemplateRef) -> str:
    """The store key of a template: its fingerprint (name, version and a hash of its wording).

    A string must already be a fingerprint (``name@vN:<12 hex>``); anything else is refused so that stored
    outputs are never filed under a caller-chosen label that could outlive a change of wording."""
    if isinstance(template, PromptTemplate):
        return template.fingerprint
    if isinstance(template, str) and _FINGERPRINT.match(template):
        return template
    raise StoreError(
        f"template {template!r}: pass the PromptTemplate (or its .fingerprint); stored outputs are keyed by the "
        "template's fingerprint so that different wordings never mix"
    )


@dataclass(frozen=True, eq=False)
class Record:
    """One stored output: a float vector, a text, or both."""

    vector: np.ndarray | None = None
    text: str | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        if self.text != other.text:
            return False
        if self.vector is None or other.vector is None:
            return self.vector is None and other.vector is None
        return self.vector.shape == other.vector.shape and self.vector.tobytes() == other.vector.tobytes()

    __hash__ = None  # type: ignore[assignment]


Value = Record | np.ndarray | Sequence[float] | str
"""What :meth:`ScoreStore.put_many` accepts: a :class:`Record`, a float vector, or a text."""


def _encode(key: str, value: Value) -> tuple[bytes | None, int | None, str | None]:
    """Validate one value and turn it into ``(vector bytes, vector length, text)``."""
    if isinstance(value, str):
        return None, None, value
    if isinstance(value, Record):
        vector, text = value.vector, value.text
    else:
        vector, text = value, None
    if text is not None and not isinstance(text, str):
        raise StoreError(f"record {key!r}: text must be a str, got {type(text).__name__}")
    if vector is None:
        if text is None:
            raise StoreError(f"record {key!r} has neither a vector nor a text")
        return None, None, text
    try:
        arr = np.asarray(vector, dtype="<f8")
    except (TypeError, ValueError) as exc:
        raise StoreError(f"record {key!r}: vector is not numeric: {exc}") from exc
    if arr.ndim != 1:
        raise StoreError(f"record {key!r}: vector must be 1-D, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise StoreError(f"record {key!r}: vector contains NaN: {arr.tolist()}")
    return arr.tobytes(), int(arr.shape[0]), text


def _decode(blob: bytes | None, length: int | None, text: str | None) -> Record:
    vector = None
    if blob is not None:
        vector = np.frombuffer(blob, dtype="<f8").astype(np.float64)
        if length is not None and vector.shape[0] != length:
            raise StoreError(f"corrupt record: vector of {vector.shape[0]} values, expected {length}")
    return Record(vector=vector, text=text)


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise StoreError(f"keys must be str (got {type(key).__name__} {key!r}); build string keys explicitly")
    return key


def _chunks(seq: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


class ScoreStore:
    """SQLite-backed store of model outputs keyed by (model fingerprint, template version, key).

    ``synchronous="FULL"`` (default) makes every committed batch survive a power cut as well as a killed
    process; ``"NORMAL"`` is faster and still survives a killed process. Several processes may read the
    file at once; writers wait up to ``busy_timeout`` seconds for each other.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "FULL",
        busy_timeout: float = 60.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a score store file")
        try:
            # isolation_level=None: no implicit transactions; every batch is an explicit BEGIN IMMEDIATE/COMMIT.
            self._conn = sqlite3.connect(str(self.path), timeout=busy_timeout, isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._check_is_store()
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: could not switch SQLite to WAL mode (got {mode!r})")
            self._conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            conn = getattr(self, "_conn", None)
            if conn is not None:
                conn.close()
            raise StoreError(f"{self.path}: not a score store (SQLite cannot read it: {exc})") from exc
        except StoreError:
            self._conn.close()
            raise

    def _check_is_store(self) -> None:
        """Refuse a file that is not an SQLite database (SQLite reports that on the first read) or an SQLite
        database of another program (it has tables, but not this store's)."""
        tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not {"meta", "records"} <= tables:
            raise StoreError(
                f"{self.path}: an SQLite database but not a score store (tables {sorted(tables)[:10]}, "
                "expected 'meta' and 'records')"
            )

    def _init_schema(self) -> None:
        with self._transaction():
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
            )
            self._conn.execute(
                """CREATE TABLE IF NOT EXISTS records (
                    model_fp TEXT NOT NULL,
                    template_version TEXT NOT NULL,
                    key TEXT NOT NULL,
                    vector BLOB,
                    vector_len INTEGER,
                    text TEXT,
                    created_at REAL NOT NULL,
                    PRIMARY KEY (model_fp, template_version, key),
                    CHECK (vector IS NOT NULL OR text IS NOT NULL),
                    CHECK ((vector IS NULL) = (vector_len IS NULL)),
                    CHECK (vector IS NULL OR length(vector) = 8 * vector_len)
                ) WITHOUT ROWID"""
            )
            row = self._conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('schema_version', ?)", (str(_SCHEMA_VERSION),)
                )
            elif int(row[0]) != _SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {row[0]}, this code reads {_SCHEMA_VERSION}")

    # -- transactions ---------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends normally, rolled back otherwise."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    # -- writing --------------------------------------------------------------------------------------

    def put_many(
        self,
        model_fp: str,
        template: TemplateRef,
        items: Mapping[str, Value],
        *,
        on_conflict: Literal["error", "ignore", "replace"] = "error",
    ) -> int:
        """Store ``items`` in one transaction: all of them or, on any error, none. Returns rows written.

        ``on_conflict`` decides what happens to a key that is already stored: ``"error"`` raises
        :class:`StoreError` (and writes nothing), ``"ignore"`` keeps the stored record, ``"replace"``
        overwrites it.
        """
        template_version = template_key(template)
        if on_conflict not in ("error", "ignore", "replace"):
            raise ValueError(f"on_conflict must be 'error', 'ignore' or 'replace', got {on_conflict!r}")
        now = time.time()
        rows = []
        for key, value in items.items():
            blob, length, text = _encode(_check_key(key), value)
            rows.append((model_fp, template_version, key, blob, length, text, now))
        if not rows:
            return 0
        verb = {"error": "INSERT", "ignore": "INSERT OR IGNORE", "replace": "INSERT OR REPLACE"}[on_conflict]
        sql = (
            f"{verb} INTO records (model_fp, template_version, key, vector, vector_len, text, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        try:
            with self._transaction() as conn:
                before = conn.total_changes
                conn.executemany(sql, rows)
                return conn.total_changes - before
        except sqlite3.IntegrityError as exc:
            raise StoreError(
                f"{self.path}: a key of this batch is already stored for model {model_fp!r}, template "
                f"{template_version!r} (pass on_conflict='ignore' or 'replace'): {exc}"
            ) from exc

    def delete(self, model_fp: str, template: TemplateRef, keys: Iterable[str] | None = None) -> int:
        """Delete the given keys (or every key) of one model and template version; returns rows deleted."""
        template_version = template_key(template)
        with self._transaction() as conn:
            before = conn.total_changes
            if keys is None:
                conn.execute(
                    "DELETE FROM records WHERE model_fp = ? AND template_version = ?",
                    (model_fp, template_version),
                )
            else:
                keys = [_check_key(k) for k in keys]
                for chunk in _chunks(keys):
                    conn.execute(
                        "DELETE FROM records WHERE model_fp = ? AND template_version = ? "
                        f"AND key IN ({','.join('?' * len(chunk))})",
                        (model_fp, template_version, *chunk),
                    )
            return conn.total_changes - before

    # -- reading --------------------------------------------------------------------------------------

    def get_many(self, model_fp: str, template: TemplateRef, keys: Iterable[str]) -> dict[str, Record]:
        """The stored records of ``keys`` (keys not stored are absent from the result)."""
        template_version = template_key(template)
        keys = list(dict.fromkeys(_check_key(k) for k in keys))
        out: dict[str, Record] = {}
        for chunk in _chunks(keys):
            cur = self._conn.execute(
                "SELECT key, vector, vector_len, text FROM records "
                "WHERE model_fp = ? AND template_version = ? "
                f"AND key IN ({','.join('?' * len(chunk))})",
                (model_fp, template_version, *chunk),
            )
            for key, blob, length, text in cur:
                out[key] = _decode(blob, length, text)
        return {k: out[k] for k in keys if k in out}

    def get(self, model_fp: str, template: TemplateRef, key: str) -> Record | None:
        """One stored record, or ``None``."""
        return self.get_many(model_fp, template, [key]).get(key)

    def missing(self, model_fp: str, template: TemplateRef, keys: Iterable[str]) -> list[str]:
        """The keys (in the given order, without repeats) that are not stored yet."""
        template_version = template_key(template)
        keys = list(dict.fromkeys(_check_key(k) for k in keys))
        present: set[str] = set()
        for chunk in _chunks(keys):
            cur = self._conn.execute(
                "SELECT key FROM records WHERE model_fp = ? AND template_version = ? "
                f"AND key IN ({','.join('?' * len(chunk))})",
                (model_fp, template_version, *chunk),
            )
            present.update(row[0] for row in cur)
        return [k for k in keys if k not in present]

    def keys(self, model_fp: str, template: TemplateRef) -> list[str]:
        """Every stored key of one model and template version, sorted."""
        template_version = template_key(template)
        cur = self._conn.execute(
            "SELECT key FROM records WHERE model_fp = ? AND template_version = ? ORDER BY key",
            (model_fp, template_version),
        )
        return [row[0] for row in cur]

    def count(self, model_fp: str | None = None, template: TemplateRef | None = None) -> int:
        """Number of records, optionally of one model and/or template version."""
        where, params = self._where(model_fp, template)
        return int(self._conn.execute(f"SELECT COUNT(*) FROM records{where}", params).fetchone()[0])

    def __len__(self) -> int:
        return self.count()

    def groups(self) -> list[tuple[str, str, int]]:
        """``(model fingerprint, template version, record count)`` of every group in the store."""
        cur = self._conn.execute(
            "SELECT model_fp, template_version, COUNT(*) FROM records "
            "GROUP BY model_fp, template_version ORDER BY model_fp, template_version"
        )
        return [(fp, tv, int(n)) for fp, tv, n in cur]

    @staticmethod
    def _where(model_fp: str | None, template: TemplateRef | None) -> tuple[str, tuple[str, ...]]:
        clauses, params = [], []
        if model_fp is not None:
            clauses.append("model_fp = ?")
            params.append(model_fp)
        if template is not None:
            clauses.append("template_version = ?")
            params.append(template_key(template))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)

    def export(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        model_fp: str | None = None,
        template: TemplateRef | None = None,
    ) -> pd.DataFrame:
        """All records (optionally of one model / template version) as a DataFrame, sorted by key.

        Columns: ``model_fp``, ``template_version``, ``key``, ``vector`` (float64 arrays or ``None``),
        ``text`` (str or ``None``), ``created_at`` (Unix seconds). With ``path`` the frame is also written
        to Parquet there.
        """
        import pandas as pd

        where, params = self._where(model_fp, template)
        cur = self._conn.execute(
            "SELECT model_fp, template_version, key, vector, vector_len, text, created_at "
            f"FROM records{where} ORDER BY model_fp, template_version, key",
            params,
        )
        cols: dict[str, list] = {c: [] for c in ("model_fp", "template_version", "key", "vector", "text")}
        created: list[float] = []
        for fp, tv, key, blob, length, text, created_at in cur:
            rec = _decode(blob, length, text)
            for col, val in zip(cols, (fp, tv, key, rec.vector, rec.text), strict=True):
                cols[col].append(val)
            created.append(created_at)
        # object columns keep ``None`` for a missing vector or text (not NaN)
        df = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in cols.items()})
        df["created_at"] = pd.Series(created, dtype=np.float64)
        if path is not None:
            out = df.copy()
            out["vector"] = [None if v is None else v.tolist() for v in out["vector"]]
            out.to_parquet(path, index=False)
        return df

    # -- maintenance ----------------------------------------------------------------------------------

    def integrity_check(self) -> None:
        """Raise :class:`StoreError` unless SQLite's integrity check passes and every vector decodes."""
        result = [row[0] for row in self._conn.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            raise StoreError(f"{self.path}: integrity check failed: {result[:10]}")
        for key, blob, length in self._conn.execute("SELECT key, vector, vector_len FROM records"):
            if blob is not None:
                vec = _decode(blob, length, None).vector
                assert vec is not None
                if any(math.isnan(x) for x in vec):
                    raise StoreError(f"{self.path}: record {key!r} holds NaN")

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the main file (optional; SQLite also does this by itself)."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ScoreStore({str(self.path)!r})"
