"""Property tests of the line parsers: valid rows round-trip, a corrupted row is named exactly."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmboost.data import DataFormatError
from llmboost.data.loaders import load_amazon_p5, load_recbole
from llmboost.data.loaders._parse import (
    decode,
    events_from,
    read_csv,
    read_delimited,
    read_json_records,
)
from llmboost.data.loaders.amazon import _REVIEW_FIELDS

# LLMBOOST_HYPOTHESIS_EXAMPLES=500 for a longer search.
SETTINGS = settings(
    max_examples=int(os.environ.get("LLMBOOST_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-", min_size=1, max_size=8)
ratings = st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 3.5, 4.0, 5.0, -2.25, 10.0])
timestamps = st.integers(min_value=-(2**40), max_value=2**40)
rows = st.lists(st.tuples(ids, ids, ratings, timestamps), min_size=1, max_size=30)


def tmp_file(name: str, data: bytes) -> tuple[tempfile.TemporaryDirectory[str], Path]:
    folder = tempfile.TemporaryDirectory()
    path = Path(folder.name) / name
    path.write_bytes(data)
    return folder, path


def tsv(records: list[tuple[str, str, float, int]], blank_after: set[int]) -> tuple[str, list[int]]:
    """A u.data-style file and the 1-based line of each record (blank lines interleaved)."""
    out: list[str] = []
    lines: list[int] = []
    for k, (u, i, r, t) in enumerate(records):
        out.append(f"{u}\t{i}\t{r!r}\t{t}")
        lines.append(len(out))
        if k in blank_after:
            out.append("")
    return "\n".join(out) + "\n", lines


@SETTINGS
@given(rows, st.sets(st.integers(0, 30)))
def test_valid_tsv_rows_round_trip(records: list[tuple[str, str, float, int]], blanks: set[int]) -> None:
    text, _ = tsv(records, blanks)
    folder, path = tmp_file("u.data", text.encode())
    with folder:
        table = read_delimited(path, sep="\t", fields=("user", "item", "rating", "timestamp"))
        events = events_from(table, "user", "item", "timestamp", "rating")
    assert events["user"].tolist() == [r[0] for r in records]
    assert events["item"].tolist() == [r[1] for r in records]
    assert events["rating"].tolist() == [r[2] for r in records]
    assert events["timestamp"].tolist() == [r[3] for r in records]


CORRUPTIONS = {
    "rating": lambda u, i, r, t: f"{u}\t{i}\tbad\t{t}",
    "timestamp": lambda u, i, r, t: f"{u}\t{i}\t{r}\t12:30",
    "missing": lambda u, i, r, t: f"{u}\t{i}\t{r}",
    "extra": lambda u, i, r, t: f"{u}\t{i}\t{r}\t{t}\textra",
}
EXPECTED_FIELD = {"rating": "rating", "timestamp": "timestamp", "missing": "timestamp", "extra": None}


@SETTINGS
@given(rows, st.sets(st.integers(0, 30)), st.data(), st.sampled_from(sorted(CORRUPTIONS)))
def test_a_corrupted_row_is_named_exactly(
    records: list[tuple[str, str, float, int]], blanks: set[int], data: st.DataObject, kind: str
) -> None:
    bad = data.draw(st.integers(0, len(records) - 1))
    text, lines = tsv(records, blanks)
    physical = text.split("\n")
    physical[lines[bad] - 1] = CORRUPTIONS[kind](*records[bad])
    folder, path = tmp_file("u.data", "\n".join(physical).encode())
    with folder, pytest.raises(DataFormatError) as err:
        table = read_delimited(path, sep="\t", fields=("user", "item", "rating", "timestamp"))
        events_from(table, "user", "item", "timestamp", "rating")
    assert err.value.line == lines[bad]
    assert err.value.field == EXPECTED_FIELD[kind]
    assert str(err.value).startswith(f"{path}:{lines[bad]}: ")


@SETTINGS
@given(rows, st.sets(st.integers(0, 30)), st.data())
def test_skip_mode_drops_exactly_the_corrupted_rows(
    records: list[tuple[str, str, float, int]], blanks: set[int], data: st.DataObject
) -> None:
    bad = data.draw(st.sets(st.integers(0, len(records) - 1), min_size=1))
    kinds = data.draw(st.lists(st.sampled_from(sorted(CORRUPTIONS)), min_size=len(bad), max_size=len(bad)))
    text, lines = tsv(records, blanks)
    physical = text.split("\n")
    for k, kind in zip(sorted(bad), kinds, strict=True):
        physical[lines[k] - 1] = CORRUPTIONS[kind](*records[k])
    folder, path = tmp_file("u.data", "\n".join(physical).encode())
    with folder:
        if len(bad) == len(records):
            with pytest.raises(DataFormatError):
                table = read_delimited(
                    path, sep="\t", fields=("user", "item", "rating", "timestamp"), on_bad_rows="skip"
                )
                events_from(table, "user", "item", "timestamp", "rating")
            return
        table = read_delimited(path, sep="\t", fields=("user", "item", "rating", "timestamp"), on_bad_rows="skip")
        events = events_from(table, "user", "item", "timestamp", "rating")
    kept = [r for k, r in enumerate(records) if k not in bad]
    assert events["timestamp"].tolist() == [r[3] for r in kept]
    assert table.skipped == len(bad)
    assert table.first_skipped is not None and table.first_skipped[0] == lines[min(bad)]


titles = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from(',"\n'),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() == s and s.strip())


@SETTINGS
@given(st.lists(st.tuples(ids, titles), min_size=1, max_size=20), st.data())
def test_quoted_csv_round_trips_and_names_physical_lines(pairs: list[tuple[str, str]], data: st.DataObject) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["movieId", "title", "score"])
    starts: list[int] = []
    for k, (movie, title) in enumerate(pairs):
        starts.append(buffer.getvalue().count("\n") + 1)
        writer.writerow([movie, title, k])
    folder, path = tmp_file("movies.csv", buffer.getvalue().encode())
    with folder:
        table = read_csv(path)
        assert [str(v) for v in table["title"].to_pylist()] == [t for _, t in pairs]
        bad = data.draw(st.integers(0, len(pairs) - 1))
        lines = buffer.getvalue().split("\n")
        # corrupt the score (last field, on the record's last physical line)
        end = starts[bad] + pairs[bad][1].count("\n")
        lines[end - 1] = lines[end - 1].rsplit(",", 1)[0] + ",oops"
        path.write_text("\n".join(lines))
        with pytest.raises(DataFormatError) as err:
            table = read_csv(path)
            events_from(table, "movieId", "title", "score")
    assert (err.value.line, err.value.field) == (starts[bad], "score")


@SETTINGS
@given(st.lists(st.text(alphabet="abc xyz019", max_size=15), min_size=1, max_size=15), st.data())
def test_undecodable_byte_is_located_by_line(lines: list[str], data: st.DataObject) -> None:
    bad = data.draw(st.integers(0, len(lines) - 1))
    lines[bad] = lines[bad] + "é!"
    raw = "\n".join(lines).encode("latin-1")
    with pytest.raises(DataFormatError) as err:
        decode(raw, Path("f.txt"), "utf-8")
    assert err.value.line == bad + 1 and "encoding='latin-1'" in err.value.reason
    assert decode(raw, Path("f.txt"), "latin-1") == "\n".join(lines)


reviews = st.lists(
    st.fixed_dictionaries(
        {"reviewerID": ids, "asin": ids, "overall": ratings, "unixReviewTime": st.integers(0, 2**40)},
        optional={"reviewText": st.text(max_size=10), "helpful": st.lists(st.integers(0, 5), max_size=2)},
    ),
    min_size=1,
    max_size=20,
)


@SETTINGS
@given(reviews, st.booleans(), st.data())
def test_json_lines_round_trip_and_locate_bad_lines(
    records: list[dict[str, object]], gz: bool, data: st.DataObject
) -> None:
    text = "\n".join(json.dumps(r) for r in records) + "\n"
    blob = gzip.compress(text.encode()) if gz else text.encode()
    folder, path = tmp_file("reviews_X_5.json" + (".gz" if gz else ""), blob)
    with folder:
        table = read_json_records(path, _REVIEW_FIELDS)
        assert table["asin"].to_pylist() == [r["asin"] for r in records]
        assert np.asarray(table["unixReviewTime"]).tolist() == [r["unixReviewTime"] for r in records]
        bad = data.draw(st.integers(0, len(records) - 1))
        field = data.draw(st.sampled_from(sorted(_REVIEW_FIELDS)))
        broken = dict(records[bad])
        del broken[field]
        lines = text.split("\n")
        lines[bad] = json.dumps(broken)
        path.write_bytes("\n".join(lines).encode())
        with pytest.raises(DataFormatError) as err:
            read_json_records(path, _REVIEW_FIELDS)
    assert (err.value.line, err.value.field) == (bad + 1, field)


@SETTINGS
@given(st.dictionaries(ids, st.lists(ids, min_size=1, max_size=8), min_size=1, max_size=10))
def test_p5_sequences_round_trip(sequences: dict[str, list[str]]) -> None:
    text = "".join(f"{user} {' '.join(items)}\n" for user, items in sequences.items())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "user_sequence.txt").write_text(text)
        ds = load_amazon_p5(tmp)
    for user, items in sequences.items():
        u = int(ds.users.encode([user])[0])
        start, stop = ds.interactions.user_ptr[u], ds.interactions.user_ptr[u + 1]
        timestamps = ds.interactions.timestamps[start:stop]
        history = list(ds.items.decode(ds.interactions.history(u)))
        # repeats of the same item at the same position cannot happen, so nothing is dropped
        assert history == items and timestamps.tolist() == list(range(len(items)))


@SETTINGS
@given(rows)
def test_recbole_inter_round_trips(records: list[tuple[str, str, float, int]]) -> None:
    body = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in records)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.inter"
        path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + body)
        ds = load_recbole(path)
    unique = {(u, i, t): r for u, i, r, t in reversed(records)}  # duplicates: the first is kept
    frame = ds.interactions.frame
    got = {
        (ds.users.ids[u], ds.items.ids[i], int(t)): float(r)
        for u, i, t, r in zip(frame["user"], frame["item"], frame["timestamp"], frame["rating"], strict=True)
    }
    assert got == {k: float(np.float32(v)) for k, v in unique.items()}
