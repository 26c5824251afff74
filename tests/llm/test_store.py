"""ScoreStore: durable, duplicate-free, bit-exact storage of model outputs."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmboost.llm.prompts import PromptTemplate
from llmboost.llm.store import Record, ScoreStore, StoreError, template_key

FP = "fake:model"
TV = PromptTemplate("tmpl", 1, "Score {x}", choices=("A", "B"))
TV2 = PromptTemplate("tmpl", 2, "Score {x}", choices=("A", "B"))
TV3 = PromptTemplate("tmpl", 3, "Rate {x}", choices=("A", "B"))


@pytest.fixture
def store(tmp_path):
    with ScoreStore(tmp_path / "scores.sqlite") as s:
        yield s


def test_roundtrip_vector_text_and_both(store):
    vec = np.array([-0.5, -1e-300, -np.inf, 0.0], dtype=np.float32)
    store.put_many(FP, TV, {"a": vec, "b": "hello ✓", "c": Record(np.array([-1.0]), "yes"), "d": [-2.0, -3.0]})
    got = store.get_many(FP, TV, ["a", "b", "c", "d", "zz"])
    assert list(got) == ["a", "b", "c", "d"]
    assert got["a"].vector.dtype == np.float64
    assert got["a"].vector.tobytes() == vec.astype(np.float64).tobytes()
    assert got["a"].text is None
    assert got["b"] == Record(text="hello ✓")
    assert got["c"] == Record(np.array([-1.0]), "yes")
    assert got["d"] == Record(np.array([-2.0, -3.0]))
    assert store.get(FP, TV, "zz") is None


def test_keys_are_scoped_by_model_and_template(store):
    store.put_many(FP, TV, {"k": [-1.0]})
    store.put_many("other", TV, {"k": [-2.0]})
    store.put_many(FP, TV2, {"k": [-3.0]})
    assert store.get(FP, TV, "k").vector.tolist() == [-1.0]
    assert store.get("other", TV, "k").vector.tolist() == [-2.0]
    assert store.get(FP, TV2, "k").vector.tolist() == [-3.0]
    assert store.missing(FP, TV3, ["k"]) == ["k"]
    assert store.groups() == [(FP, TV.fingerprint, 1), (FP, TV2.fingerprint, 1), ("other", TV.fingerprint, 1)]
    assert store.count() == 3 and store.count(FP) == 2 and len(store) == 3


def test_missing_keeps_order_and_drops_repeats(store):
    store.put_many(FP, TV, {"b": [-1.0], "d": [-1.0]})
    assert store.missing(FP, TV, ["e", "a", "b", "c", "a", "d"]) == ["e", "a", "c"]


def test_many_keys_beyond_query_chunk(store):
    items = {f"k{i:05d}": [-float(i)] for i in range(2500)}
    store.put_many(FP, TV, items)
    keys = [f"k{i:05d}" for i in range(0, 3000, 3)]
    assert store.missing(FP, TV, keys) == [k for k in keys if int(k[1:]) >= 2500]
    got = store.get_many(FP, TV, keys)
    assert len(got) == 834 and got["k00003"].vector.tolist() == [-3.0]
    assert store.keys(FP, TV) == sorted(items)


def test_conflicts_error_ignore_replace_and_atomicity(store):
    store.put_many(FP, TV, {"a": [-1.0]})
    with pytest.raises(StoreError, match="already stored"):
        store.put_many(FP, TV, {"new": [-5.0], "a": [-2.0]})
    assert store.missing(FP, TV, ["new"]) == ["new"], "a failed batch must write nothing"
    assert store.put_many(FP, TV, {"a": [-2.0], "b": [-3.0]}, on_conflict="ignore") == 1
    assert store.get(FP, TV, "a").vector.tolist() == [-1.0]
    store.put_many(FP, TV, {"a": [-2.0]}, on_conflict="replace")
    assert store.get(FP, TV, "a").vector.tolist() == [-2.0]
    assert store.count() == 2


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([-1.0, float("nan")], "NaN"),
        (np.zeros((2, 2)), "1-D"),
        (Record(), "neither"),
        (["x"], "not numeric"),
        (Record(np.array([-1.0]), 5), "text must be a str"),  # type: ignore[arg-type]
    ],
)
def test_invalid_values_rejected_whole_batch(store, value, match):
    with pytest.raises(StoreError, match=match):
        store.put_many(FP, TV, {"ok": [-1.0], "bad": value})
    assert store.count() == 0


def test_non_string_keys_rejected(store):
    with pytest.raises(StoreError, match="keys must be str"):
        store.put_many(FP, TV, {1: [-1.0]})  # type: ignore[dict-item]
    with pytest.raises(StoreError, match="keys must be str"):
        store.missing(FP, TV, [1])  # type: ignore[list-item]


def test_sqlite_settings_and_primary_key(tmp_path):
    path = tmp_path / "s.sqlite"
    with ScoreStore(path, synchronous="FULL") as s:
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        s.put_many(FP, TV, {"a": [-1.0]})
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent
    pk = [r[1] for r in raw.execute("PRAGMA table_info(records)") if r[5] > 0]
    assert pk == ["model_fp", "template_version", "key"]
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
            (FP, TV.fingerprint, "a", np.zeros(1).tobytes(), 1, None, 0.0),
        )
    with pytest.raises(sqlite3.IntegrityError):  # vector length must match its byte size
        raw.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", (FP, TV.fingerprint, "b", b"\0" * 8, 2, None, 0.0)
        )
    raw.close()
    with pytest.raises(ValueError):
        ScoreStore(path, synchronous="OFF")  # type: ignore[arg-type]


def test_persists_and_concurrent_reader_sees_commits(tmp_path):
    path = tmp_path / "s.sqlite"
    writer = ScoreStore(path, synchronous="NORMAL")
    reader = ScoreStore(path)
    writer.put_many(FP, TV, {"a": [-1.0]})
    assert reader.get(FP, TV, "a").vector.tolist() == [-1.0]
    writer.checkpoint()
    writer.close()
    writer.close()  # idempotent
    reader.close()
    with ScoreStore(path) as again:
        assert again.keys(FP, TV) == ["a"]
        again.integrity_check()


def test_delete(store):
    store.put_many(FP, TV, {"a": [-1.0], "b": [-1.0], "c": "t"})
    assert store.delete(FP, TV, ["a", "zz"]) == 1
    assert store.keys(FP, TV) == ["b", "c"]
    assert store.delete(FP, TV) == 2
    assert store.count() == 0


def test_export_dataframe_and_parquet(store, tmp_path):
    store.put_many(FP, TV, {"b": [-1.0, -2.0], "a": "text"})
    store.put_many("other", TV, {"c": Record(np.array([-0.25]), "both")})
    df = store.export()
    assert list(df.columns) == ["model_fp", "template_version", "key", "vector", "text", "created_at"]
    assert list(df["key"]) == ["a", "b", "c"]
    only = store.export(tmp_path / "out.parquet", model_fp=FP)
    assert list(only["key"]) == ["a", "b"]
    back = pd.read_parquet(tmp_path / "out.parquet")
    assert list(back["key"]) == ["a", "b"]
    assert back["vector"].iloc[0] is None
    assert list(back["vector"].iloc[1]) == [-1.0, -2.0]
    assert back["text"].iloc[0] == "text"


def test_schema_version_mismatch(tmp_path):
    path = tmp_path / "s.sqlite"
    ScoreStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="schema version 99"):
        ScoreStore(path)


def test_file_that_is_not_a_store_gets_a_clear_error(tmp_path):
    text = tmp_path / "notes.csv"
    text.write_text("user,item\n1,2\n" * 200)
    with pytest.raises(StoreError, match=r"notes\.csv: not a score store") as info:
        ScoreStore(text)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert text.read_text().startswith("user,item")  # left untouched

    other = tmp_path / "other.db"
    raw = sqlite3.connect(other)
    raw.execute("CREATE TABLE movies (id INTEGER)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match=r"other\.db: an SQLite database but not a score store.*movies"):
        ScoreStore(other)
    with pytest.raises(StoreError, match="is a folder"):
        ScoreStore(tmp_path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    vectors=st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.lists(st.floats(allow_nan=False, width=64), min_size=0, max_size=6),
        max_size=8,
    )
)
def test_property_bit_exact_roundtrip(store, vectors):
    tv = PromptTemplate("prop", len(store.groups()) + 1, "{x}")
    store.put_many(FP, tv, vectors)
    got = store.get_many(FP, tv, list(vectors))
    assert set(got) == set(vectors)
    for key, vec in vectors.items():
        assert got[key].vector.tobytes() == np.asarray(vec, dtype=np.float64).tobytes()
    assert store.missing(FP, tv, list(vectors)) == []


def test_records_are_keyed_by_the_template_fingerprint(store):
    """A changed wording is a different key even under the same name and version; free labels are refused."""
    reworded = PromptTemplate("tmpl", 1, "Judge {x}", choices=("A", "B"))
    store.put_many(FP, TV, {"k": [-1.0]})
    assert template_key(TV) == TV.fingerprint and TV.fingerprint.startswith("tmpl@v1:")
    assert store.get(FP, TV.fingerprint, "k").vector.tolist() == [-1.0]  # the fingerprint string works too
    assert store.missing(FP, reworded, ["k"]) == ["k"]
    assert store.groups() == [(FP, TV.fingerprint, 1)]
    for label in ("tmpl-v1", "tmpl@v1", "pairwise"):
        with pytest.raises(StoreError, match="pass the PromptTemplate"):
            store.put_many(FP, label, {"k": [-1.0]})
