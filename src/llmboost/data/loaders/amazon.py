"""Amazon review datasets: the P5 and UniSRec preprocessed layouts and the raw 2014 / 2018 dumps."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from llmboost.data.dataset import Dataset
from llmboost.data.errors import DataFormatError, DatasetNotFoundError
from llmboost.data.loaders._parse import (
    OnBadRows,
    Table,
    check_mode,
    decode,
    finish,
    numbers,
    parse_record,
    read_bytes,
    read_delimited,
    read_json_records,
    read_token_lines,
    split_lines,
    strings,
)
from llmboost.data.loaders.generic import read_atomic, require_columns

P5_SEQUENCES = "user_sequence.txt"
P5_ITEM_TEXT = "item_generative_indexing_phase_0.txt"
UNISREC_SPLITS = ("train", "valid", "test")


# ---------------------------------------------------------------------------------------- P5
def load_amazon_p5(
    path: str | Path,
    *,
    name: str | None = None,
    encoding: str = "utf-8",
    on_bad_rows: str = "error",
) -> Dataset:
    """Load the P5 layout: ``user_sequence.txt`` (``user item1 item2 ...`` per line, in time order)
    and, when present, ``item_generative_indexing_phase_0.txt`` (``ASIN title words``) as titles.

    The files carry no timestamps: each event's timestamp is its 0-based position in the user's
    sequence, so only the order within a user is meaningful. A user on more than one line is a bad row.
    """
    mode = check_mode(on_bad_rows)
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    seq_path = folder / P5_SEQUENCES
    if not seq_path.is_file():
        raise DatasetNotFoundError(f"{folder}: not a P5 folder: missing {P5_SEQUENCES}")
    tokens, _, table = read_token_lines(
        seq_path,
        min_tokens=2,
        what="a user id followed by at least one item",
        encoding=encoding,
        on_bad_rows=mode,
    )
    first = pc.list_element(tokens, 0)
    users = np.asarray(first.to_numpy(zero_copy_only=False), dtype=object)
    repeated = pd.Series(users).duplicated(keep="first").to_numpy()
    if repeated.any():
        first_line = {u: table.line(i) for i, u in reversed(list(enumerate(users)))}
        (tokens,) = table.reject(
            repeated,
            lambda row: (
                "user",
                f"user {users[row]!r} already has a sequence on line {first_line[users[row]]}",
            ),
            tokens,
        )
    lengths = np.asarray(pc.list_value_length(tokens), dtype=np.int64)
    flat = np.asarray(pc.list_flatten(tokens).to_numpy(zero_copy_only=False), dtype=object)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    parent = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(flat), dtype=np.int64) - starts[parent]
    is_item = position > 0
    events = pd.DataFrame(
        {
            "user": flat[starts][parent[is_item]],
            "item": flat[is_item],
            "timestamp": position[is_item] - 1,
        }
    )
    tables = [table]
    item_meta = None
    text_path = folder / P5_ITEM_TEXT
    if text_path.is_file():
        item_tokens, _, text_table = read_token_lines(
            text_path, min_tokens=1, what="an item id", encoding=encoding, on_bad_rows=mode, max_splits=1
        )
        pairs = item_tokens.to_pylist()
        item_meta = pd.DataFrame(
            {"title": [p[1].strip() if len(p) > 1 else "" for p in pairs]},
            index=pd.Index([p[0] for p in pairs], name="item"),
        )
        tables.append(text_table)
    return finish(name or folder.name, events, item_meta, None, tables)


# ---------------------------------------------------------------------------------------- UniSRec
def unisrec_stem(path: str | Path) -> tuple[Path, str]:
    """The folder and dataset stem (``Scientific``) of a UniSRec layout, given the folder or a file."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    stems = sorted({p.name[: -len(".train.inter")] for p in folder.glob("*.train.inter")})
    if path.is_file():
        stems = [s for s in stems if path.name.startswith(s + ".")] or stems
    if len(stems) != 1:
        found = ", ".join(s + ".train.inter" for s in stems) or "none"
        raise DatasetNotFoundError(f"{folder}: expected exactly one '<Name>.train.inter' file, found {found}")
    return folder, stems[0]


def _index_map(path: Path, key: str, encoding: str) -> pd.Series:
    """``<Name>.item2index`` / ``.user2index``: external id -> integer index, as index -> id."""
    table = read_delimited(path, sep="\t", fields=(key, "index"), encoding=encoding)
    index = numbers(table, {"index": "int"})["index"]
    ids = strings(table, key)
    for values, field_name in ((index, "index"), (ids, key)):
        dup = pd.Series(values).duplicated().to_numpy()
        if dup.any():
            row = int(np.flatnonzero(dup)[0])
            raise DataFormatError(f"duplicate value {values[row]!r}", path=path, line=table.line(row), field=field_name)
    return pd.Series(ids, index=pd.Index(index.astype(str)))


def _reconstruct(rows: list[tuple[tuple[str, ...], str]]) -> list[str] | None:
    """A user's full sequence from (history window, target) rows, or ``None`` if they do not chain.

    Rows are UniSRec's augmented prefixes: the history before each target, truncated to the last
    ``max_len`` items. Starting from the shortest history, each next target is the row whose
    history equals the current sequence's last ``max_len`` items.
    """
    rows = sorted(rows, key=lambda r: len(r[0]))
    max_len = len(rows[-1][0])
    windows: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for hist, target in rows[1:]:
        windows[hist].append(target)
    seq = [*rows[0][0], rows[0][1]]
    used = 1
    while True:
        key = tuple(seq[-max_len:]) if max_len else ()
        targets = windows.get(key)
        if not targets:
            break
        seq.append(targets.pop(0))
        used += 1
    return seq if used == len(rows) else None


def load_amazon_unisrec(
    path: str | Path,
    *,
    name: str | None = None,
    encoding: str = "utf-8",
    on_bad_rows: str = "error",
) -> Dataset:
    """Load the UniSRec layout: ``<Name>.{train,valid,test}.inter`` (``user_id:token
    item_id_list:token_seq item_id:token`` with integer indexes), ``<Name>.item2index``,
    ``<Name>.user2index`` and ``<Name>.text`` (``item_id:token text:token_seq`` keyed by ASIN).

    Each user's full sequence is rebuilt from the rows of the three files (train rows are augmented
    prefixes, histories truncated to the last ``max_len`` items) by chaining history windows; for a
    user whose rows do not chain, the longest history + target (the latest split's on ties) is used
    and the count is logged.
    Indexes are mapped back to ASINs and user ids; timestamps are positions in the sequence (the
    files carry no times). ``text`` becomes ``title``.
    """
    mode = check_mode(on_bad_rows)
    folder, stem = unisrec_stem(path)
    base = folder / stem
    items_by_index = _index_map(Path(f"{base}.item2index"), "item", encoding)
    users_by_index = _index_map(Path(f"{base}.user2index"), "user", encoding)
    item_index = pd.Index(items_by_index.index)
    user_index = pd.Index(users_by_index.index)

    rows_by_user: dict[str, list[tuple[tuple[str, ...], str]]] = defaultdict(list)
    last_row: dict[str, tuple[tuple[str, ...], str, int]] = {}  # the longest row, latest split first
    tables: list[Table] = []
    for rank, split in enumerate(UNISREC_SPLITS):
        inter_path = Path(f"{base}.{split}.inter")
        if not inter_path.is_file():
            raise DatasetNotFoundError(f"{folder}: UniSRec layout is missing {inter_path.name}")
        table, _ = read_atomic(inter_path, encoding=encoding, on_bad_rows=mode)
        require_columns(table.names, ("user_id", "item_id_list", "item_id"), inter_path)
        _check_known(table, "user_id", user_index)
        _check_known(table, "item_id", item_index)
        hists = _check_history(table, item_index, stem)
        for user, hist, target in zip(
            strings(table, "user_id"), hists.to_pylist(), strings(table, "item_id"), strict=True
        ):
            row = (tuple(hist), target)
            rows_by_user[user].append(row)
            best = last_row.get(user)
            if best is None or (len(row[0]), rank) >= (len(best[0]), best[2]):
                last_row[user] = (*row, rank)
        tables.append(table)

    users: list[str] = []
    items: list[str] = []
    times: list[np.ndarray] = []
    broken = 0
    for user, rows in rows_by_user.items():
        seq = _reconstruct(rows)
        if seq is None:
            broken += 1
            hist, target, _ = last_row[user]
            seq = [*hist, target]
        users.extend([user] * len(seq))
        items.extend(seq)
        times.append(np.arange(len(seq), dtype=np.int64))
    events = pd.DataFrame(
        {
            "user": users_by_index.loc[users].to_numpy(),
            "item": items_by_index.loc[items].to_numpy(),
            "timestamp": np.concatenate(times) if times else np.zeros(0, dtype=np.int64),
        }
    )
    notes = []
    if broken:
        notes.append(
            f"{stem}: {broken} users' rows do not chain into one sequence; used their longest history + target"
        )

    item_meta = None
    text_path = Path(f"{base}.text")
    if text_path.is_file():
        text, _ = read_atomic(text_path, encoding=encoding, on_bad_rows=mode)
        require_columns(text.names, ("item_id", "text"), text_path)
        item_meta = pd.DataFrame(
            {"title": strings(text, "text")}, index=pd.Index(strings(text, "item_id"), name="item")
        )
        tables.append(text)
    return finish(name or stem, events, item_meta, None, tables, notes)


def _check_history(table: Table, known: pd.Index, stem: str) -> pa.ListArray:
    """Split the ``item_id_list`` column; a row naming an index not in the item map is a bad row."""
    hists = pc.utf8_split_whitespace(table["item_id_list"])
    flat = np.asarray(pc.list_flatten(hists).to_numpy(zero_copy_only=False), dtype=object)
    unknown = known.get_indexer(pd.Index(flat, dtype=object)) < 0
    if not unknown.any():
        return hists
    bad = np.zeros(len(table), dtype=bool)
    bad[np.asarray(pc.list_parent_indices(hists))[unknown]] = True

    def explain(row: int) -> tuple[str, str]:
        first = next(t for t in table.value("item_id_list", row).split() if t not in known)
        return "item_id_list", f"unknown item index {first!r} (not in {stem}.item2index)"

    table.reject(bad, explain)
    return pc.utf8_split_whitespace(table["item_id_list"])


def _check_known(table: Table, column: str, known: pd.Index) -> None:
    values = strings(table, column)
    bad = known.get_indexer(pd.Index(values, dtype=object)) < 0
    table.reject(bad, lambda row: (column, f"unknown index {values[row]!r} (not in the id map)"))


# ---------------------------------------------------------------------------------------- raw dumps
_REVIEW_FIELDS = {
    "reviewerID": pa.string(),
    "asin": pa.string(),
    "overall": pa.float64(),
    "unixReviewTime": pa.int64(),
}
_ASIN = r"""["']asin["']\s*:\s*["'](?P<asin>[^"']*)["']"""
_JSON_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")


def _strip_json_suffix(name: str) -> str | None:
    for suffix in _JSON_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def find_amazon_files(path: str | Path) -> tuple[Path, Path | None]:
    """The review file and (when present) metadata file of a raw Amazon dump, given a folder or the
    review file: ``reviews_X_5.json.gz`` / ``meta_X.json.gz`` (2014) or ``X_5.json.gz`` /
    ``meta_X.json.gz`` (2018), plain or gzipped."""
    path = Path(path)
    if path.is_file():
        reviews = path
        folder = path.parent
    else:
        folder = path
        candidates = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and _strip_json_suffix(p.name) is not None and not p.name.startswith("meta_")
        )
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise DatasetNotFoundError(
                f"{folder}: expected exactly one Amazon review file (reviews_X_5.json.gz or X_5.json.gz), "
                f"found {found}; pass the review file's path"
            )
        reviews = candidates[0]
    stem = _strip_json_suffix(reviews.name) or reviews.stem
    category = stem.removeprefix("reviews_").removesuffix("_5")
    for suffix in _JSON_SUFFIXES:
        meta = folder / f"meta_{category}{suffix}"
        if meta.is_file():
            return reviews, meta
    return reviews, None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value if v is not None).strip()
    return html.unescape(str(value)).strip()


def _categories(record: dict[str, Any]) -> str:
    """2014 ``categories`` (list of paths) or 2018 ``category`` (list), as unique ``|``-joined names."""
    raw = record.get("categories", record.get("category")) or []
    names: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif value is not None:
            text = html.unescape(str(value)).strip()
            if text and text not in names:
                names.append(text)

    walk(raw)
    return "|".join(names)


def _image(record: dict[str, Any]) -> str:
    for key in ("imageURLHighRes", "imageURL", "imUrl"):
        value = record.get(key)
        if isinstance(value, list):
            value = next((v for v in value if v), None)
        if value:
            return str(value)
    return ""


def read_amazon_meta(
    path: Path,
    wanted: Iterable[str] | None = None,
    *,
    encoding: str = "utf-8",
    on_bad_rows: OnBadRows = "error",
) -> tuple[pd.DataFrame, list[str]]:
    """Item metadata from a 2014 (Python dict literals) or 2018 (JSON) ``meta_X.json[.gz]`` file.

    Only lines whose ``asin`` is in ``wanted`` are parsed (lines without a recognisable asin are
    parsed too, to report them). Columns: title, brand, categories, description, image_path.
    """
    text = decode(read_bytes(path), path, encoding)
    lines = split_lines(text)
    numbers_ = np.arange(1, len(lines) + 1, dtype=np.int64)
    asins = pc.struct_field(pc.extract_regex(lines, _ASIN), [0])
    blank = np.asarray(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0), dtype=bool)
    if blank.all():
        raise DataFormatError("empty file: no data rows", path=path)
    keep = ~blank
    wanted_set = None if wanted is None else {str(w) for w in wanted}
    if wanted_set is not None:
        wanted_arr = pa.array(sorted(wanted_set), type=pa.string())
        matched = np.asarray(pc.is_in(asins, value_set=wanted_arr).fill_null(False), dtype=bool)
        no_asin = np.asarray(pc.is_null(asins), dtype=bool)
        keep &= matched | no_asin
    rows: list[dict[str, Any]] = []
    skipped = 0
    first: tuple[int, str] | None = None
    for number, line in zip(numbers_[keep], pc.filter(lines, pa.array(keep)).to_pylist(), strict=True):
        problem: tuple[str | None, str] | None = None
        try:
            record = parse_record(line, literal=True)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            record, problem = None, (None, f"not a JSON object or Python dict literal ({err})")
        if problem is None and not isinstance(record, dict):
            problem = (None, f"expected an object, found {type(record).__name__}")
        elif problem is None and not record.get("asin"):
            problem = ("asin", "missing field")
        if problem is not None:
            if on_bad_rows == "error":
                raise DataFormatError(problem[1], path=path, line=int(number), field=problem[0])
            skipped += 1
            if first is None:
                where = f"field {problem[0]!r}: " if problem[0] else ""
                first = (int(number), where + problem[1])
            continue
        assert isinstance(record, dict)
        if wanted_set is not None and str(record["asin"]) not in wanted_set:
            continue
        rows.append(
            {
                "item": str(record["asin"]),
                "title": _text(record.get("title")),
                "brand": _text(record.get("brand")),
                "categories": _categories(record),
                "description": _text(record.get("description")),
                "image_path": _image(record),
            }
        )
    notes = [f"{path.name}: skipped {skipped} bad rows (first: line {first[0]}: {first[1]})"] if first else []
    columns = ["title", "brand", "categories", "description", "image_path"]
    meta = pd.DataFrame(rows, columns=["item", *columns]).set_index("item")
    return meta, notes


def load_amazon_reviews(
    path: str | Path,
    meta_path: str | Path | None = None,
    *,
    name: str | None = None,
    encoding: str = "utf-8",
    on_bad_rows: str = "error",
) -> Dataset:
    """Load a raw Amazon review dump: 2014 (``reviews_X_5.json.gz`` + ``meta_X.json.gz`` with Python
    dict literals) or 2018 (``X_5.json.gz`` + ``meta_X.json.gz`` in JSON). Plain or gzipped.

    Events: reviewerID, asin, overall (rating), unixReviewTime (timestamp). Item metadata: title,
    brand, categories (``|``-joined), description, image_path (the first of imageURLHighRes,
    imageURL, imUrl: a URL). ``path`` may be the folder (one review file) or the review file; the
    metadata file is found next to it unless given.
    """
    mode = check_mode(on_bad_rows)
    reviews_path, found_meta = find_amazon_files(path)
    meta_file = Path(meta_path) if meta_path is not None else found_meta
    table = read_json_records(reviews_path, _REVIEW_FIELDS, encoding=encoding, on_bad_rows=mode)
    events = pd.DataFrame(
        {
            "user": strings(table, "reviewerID"),
            "item": strings(table, "asin"),
            "timestamp": np.asarray(table["unixReviewTime"], dtype=np.int64),
            "rating": np.asarray(table["overall"], dtype=np.float64),
        }
    )
    notes: list[str] = []
    item_meta = None
    if meta_file is not None:
        wanted = set(events["item"].unique())
        item_meta, notes = read_amazon_meta(meta_file, wanted, encoding=encoding, on_bad_rows=mode)
    stem = _strip_json_suffix(reviews_path.name) or reviews_path.stem
    default_name = "amazon-" + stem.removeprefix("reviews_").removesuffix("_5").lower().replace("_", "-")
    return finish(name or default_name, events, item_meta, None, [table], notes)
