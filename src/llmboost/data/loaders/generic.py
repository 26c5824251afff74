"""Generic layouts: RecBole atomic files and CSV / TSV / Parquet tables with a column mapping."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from llmboost.data.dataset import Dataset
from llmboost.data.errors import DataFormatError, DatasetNotFoundError
from llmboost.data.loaders._parse import (
    Table,
    check_mode,
    events_from,
    finish,
    read_csv,
    read_delimited,
    require_columns,
    strings,
)

RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
# RecBole item fields renamed to llmboost's metadata names.
RECBOLE_ITEM_FIELDS = {
    "movie_title": "title",
    "title": "title",
    "release_year": "year",
    "year": "year",
    "class": "genres",
}
# RecBole item/user fields (after renaming) parsed as nullable integers; non-numbers become missing.
RECBOLE_INT_FIELDS = ("year", "age")
PARQUET_SUFFIXES = (".parquet", ".pq")
SPLIT_SUFFIXES = (".train.inter", ".valid.inter", ".test.inter")


# ---------------------------------------------------------------------------------------- RecBole
def recbole_inter_file(path: str | Path) -> Path:
    """The ``<name>.inter`` file of a RecBole dataset given the file itself or its folder."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DatasetNotFoundError(f"{path}: no such file or folder")
    candidates = sorted(p for p in path.glob("*.inter") if not p.name.endswith(SPLIT_SUFFIXES))
    preferred = [p for p in candidates if p.stem == path.name]
    if len(preferred) == 1:
        return preferred[0]
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise DatasetNotFoundError(
            f"{path}: expected exactly one RecBole '<name>.inter' file, found {found}; pass the file's path"
        )
    return candidates[0]


def read_atomic(path: Path, *, encoding: str = "utf-8", on_bad_rows: str = "error") -> tuple[Table, dict[str, str]]:
    """Read a RecBole atomic file; columns are keyed by the field name without its ``:type``.

    Returns the table and each field's declared type.
    """
    table = read_delimited(path, sep="\t", header=True, encoding=encoding, on_bad_rows=check_mode(on_bad_rows))
    types: dict[str, str] = {}
    for raw in table.header or []:
        fname, _, ftype = raw.partition(":")
        if ftype not in RECBOLE_TYPES:
            raise DataFormatError(
                f"header field {raw!r} must read 'name:type' with type one of {list(RECBOLE_TYPES)}",
                path=path,
                line=1,
                field=raw,
            )
        types[fname] = ftype
    table.rename({raw: raw.partition(":")[0] for raw in table.header or []})
    return table, types


def load_recbole(
    path: str | Path,
    *,
    name: str | None = None,
    encoding: str = "utf-8",
    on_bad_rows: str = "error",
) -> Dataset:
    """Load RecBole atomic files ``<name>.inter`` (+ ``.item``, ``.user`` when present), tab-separated
    with typed headers (``user_id:token  item_id:token  rating:float  timestamp:float``).

    The ``.inter`` file needs ``user_id`` and ``item_id``; without ``timestamp`` the row's position in
    the file is used as its timestamp. Item fields ``movie_title``/``title`` become ``title``,
    ``release_year`` becomes ``year`` (non-numeric years, e.g. ``unknown``, become missing) and
    ``class`` becomes ``genres`` (``|``-separated); other fields are kept as text.
    """
    inter_path = recbole_inter_file(path)
    stem = inter_path.name[: -len(".inter")]
    inter, _ = read_atomic(inter_path, encoding=encoding, on_bad_rows=on_bad_rows)
    require_columns(inter.names, ("user_id", "item_id"), inter_path)
    has_time = "timestamp" in inter.columns
    if not has_time:
        inter.add_column("timestamp", pa.array(np.arange(len(inter)).astype(str)))
    rating = "rating" if "rating" in inter.columns else None
    events = events_from(inter, "user_id", "item_id", "timestamp", rating)
    tables = [inter]
    notes = [] if has_time else [f"{inter_path.name}: no timestamp field; used each row's position in the file"]

    item_meta = user_meta = None
    item_path, user_path = inter_path.with_name(stem + ".item"), inter_path.with_name(stem + ".user")
    if item_path.is_file():
        item_meta, items = _recbole_meta(item_path, "item", RECBOLE_ITEM_FIELDS, encoding, on_bad_rows)
        tables.append(items)
    if user_path.is_file():
        user_meta, users = _recbole_meta(user_path, "user", {}, encoding, on_bad_rows)
        tables.append(users)
    return finish(name or stem, events, item_meta, user_meta, tables, notes)


def _recbole_meta(
    path: Path, kind: str, rename: Mapping[str, str], encoding: str, on_bad_rows: str
) -> tuple[pd.DataFrame, Table]:
    """A ``.item`` / ``.user`` file as metadata indexed by ``<kind>_id``: fields renamed by ``rename``
    (the first of two fields with one target wins), :data:`RECBOLE_INT_FIELDS` as nullable integers,
    ``genres`` ``|``-joined."""
    table, _ = read_atomic(path, encoding=encoding, on_bad_rows=on_bad_rows)
    id_field = f"{kind}_id"
    require_columns(table.names, (id_field,), path)
    meta = pd.DataFrame(index=pd.Index(strings(table, id_field), name=kind))
    for field_name in table.names:
        target = rename.get(field_name, field_name)
        if field_name == id_field or target in meta.columns:
            continue
        values = pd.Series(strings(table, field_name), index=meta.index)
        if target in RECBOLE_INT_FIELDS:
            values = pd.to_numeric(values, errors="coerce").astype("Int64")
        elif target == "genres":
            values = values.str.split().str.join("|")
        meta[target] = values
    return meta, table


# ---------------------------------------------------------------------------------------- tables
def _default_sep(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return "\t" if suffixes and suffixes[-1] in (".tsv", ".tab", ".txt") else ","


def read_table(path: Path, *, sep: str | None = None, encoding: str = "utf-8", on_bad_rows: str = "error") -> Table:
    """Read a CSV / TSV (header line, quoting allowed) or Parquet file as string columns.

    For Parquet the ``line`` of an error is the 1-based row number.
    """
    mode = check_mode(on_bad_rows)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such file")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            arrow = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataFormatError(f"cannot read as Parquet: {err}", path=path) from None
        if arrow.num_rows == 0:
            raise DataFormatError("empty file: no data rows", path=path)
        columns = {name: _as_strings(arrow.column(name).combine_chunks()) for name in arrow.column_names}
        return Table(
            path,
            columns,
            mode,
            list(arrow.column_names),
            lines=np.arange(1, arrow.num_rows + 1, dtype=np.int64),
        )
    return read_csv(path, sep=sep or _default_sep(path), encoding=encoding, on_bad_rows=mode)


def _as_strings(column: pa.Array) -> pa.Array:
    """A Parquet column as strings; timestamps become integer Unix seconds."""
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        seconds = pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64())
        return pc.cast(seconds, pa.string())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.fill_null("")
    return pc.cast(column, pa.string()).fill_null("")


def _meta(table: Table, id_column: str, columns: Mapping[str, str] | None, index_name: str) -> pd.DataFrame:
    """Metadata indexed by ``id_column``; ``columns`` maps target names to source columns."""
    found = table.names
    mapping = dict(columns) if columns is not None else {c: c for c in found if c != id_column}
    require_columns(found, [id_column, *mapping.values()], table.path)
    meta = pd.DataFrame(
        {target: strings(table, source) for target, source in mapping.items()},
        index=pd.Index(strings(table, id_column), name=index_name),
    )
    return meta


# Column names recognised in a user's table when none is given, in order of preference; matched
# ignoring case and any character that is not a letter or digit (``user_id`` = ``userId`` = ``User ID``).
COLUMN_ROLES = ("user", "item", "timestamp", "rating")
KNOWN_COLUMNS: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_id", "userId", "uid", "reviewerID", "customer_id", "visitor_id", "member_id"),
    "item": (
        "item", "item_id", "itemId", "iid", "movieId", "asin", "product_id", "parent_asin", "book_id", "isbn",
        "track_id", "song_id", "article_id", "business_id",
    ),
    "timestamp": (
        "timestamp", "unixReviewTime", "time", "ts", "datetime", "date", "event_time", "created_at",
        "rating_timestamp",
    ),
    "rating": ("rating", "overall", "stars", "score", "rating_value"),
}  # fmt: skip
AUTO = "auto"  #: a column argument of :func:`load_table`: recognise it from :data:`KNOWN_COLUMNS`


def column_options(columns: Mapping[str, str | None] | str | None) -> dict[str, str | None]:
    """:func:`load_table` column arguments from a mapping or ``"user=uid,item=iid,timestamp="``.

    Keys are ``user``, ``item``, ``timestamp``, ``rating``; an empty value (or ``none``/``null``) means
    no such column (timestamp: each row's position; rating: none), ``auto`` recognises it by name.
    """
    if columns is None:
        return {}
    if isinstance(columns, str):
        pairs: dict[str, str | None] = {}
        for part in filter(None, (p.strip() for p in columns.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"columns: {part!r} must look like ROLE=COLUMN, e.g. user=user_id,item=movieId")
            pairs[key.strip()] = value.strip()
        columns = pairs
    out: dict[str, str | None] = {}
    for role, value in columns.items():
        if role not in COLUMN_ROLES:
            raise ValueError(f"columns: unknown role {role!r}; roles are {list(COLUMN_ROLES)}")
        if value is None or str(value).strip().lower() in ("", "none", "null"):
            if role in ("user", "item"):
                raise ValueError(f"columns: the {role} column cannot be none")
            out[role] = None
        else:
            out[role] = str(value).strip()
    return out


def _column_key(name: str) -> str:
    return "".join(c for c in name.casefold() if c.isalnum())


def find_column(header: Sequence[str], role: str) -> str | None:
    """The column of ``header`` that plays ``role`` (user, item, timestamp, rating) by its name, or None."""
    by_key: dict[str, str] = {}
    for name in header:
        by_key.setdefault(_column_key(name), name)
    for known in KNOWN_COLUMNS[role]:
        found = by_key.get(_column_key(known))
        if found is not None:
            return found
    return None


def resolve_columns(
    header: Sequence[str],
    path: Path,
    *,
    user: str | None,
    item: str | None,
    timestamp: str | None,
    rating: str | None,
) -> dict[str, str | None]:
    """The source column of each role: given names are checked, :data:`AUTO` (or ``None`` for user and
    item) is recognised from :data:`KNOWN_COLUMNS`; a timestamp or rating that is not found is ``None``."""
    given = {"user": user, "item": item, "timestamp": timestamp, "rating": rating}
    out: dict[str, str | None] = {}
    for role, name in given.items():
        if name is None and role in ("timestamp", "rating"):
            out[role] = None
        elif name is None or (name == AUTO and AUTO not in header):
            out[role] = find_column(header, role)
            if out[role] is None and role in ("user", "item"):
                raise DataFormatError(
                    f"no {role} column: found columns {list(header)}; recognised names are "
                    f"{list(KNOWN_COLUMNS[role])}; name it with {role}=COLUMN "
                    f"(command line: --columns {role}=COLUMN; run config: data.columns.{role})",
                    path=path,
                    line=1,
                    field=role,
                )
        else:
            out[role] = name
    require_columns(header, [c for c in out.values() if c is not None], path)
    return out


def load_table(
    path: str | Path,
    *,
    user: str | None = None,
    item: str | None = None,
    timestamp: str | None = AUTO,
    rating: str | None = AUTO,
    sep: str | None = None,
    encoding: str = "utf-8",
    item_meta_path: str | Path | None = None,
    item_id: str | None = None,
    item_columns: Mapping[str, str] | None = None,
    user_meta_path: str | Path | None = None,
    user_id: str | None = None,
    user_columns: Mapping[str, str] | None = None,
    name: str | None = None,
    on_bad_rows: str = "error",
) -> Dataset:
    """Load events from a CSV / TSV / Parquet table, naming its columns or letting them be recognised.

    Columns not named are recognised by common names (:data:`KNOWN_COLUMNS`, ignoring case and
    punctuation): ``user`` from user, user_id, userId, reviewerID, ...; ``item`` from item, item_id,
    movieId, asin, ...; ``timestamp`` from timestamp, unixReviewTime, time, date, ...; ``rating`` from
    rating, overall, stars, score. Without a timestamp column (or with ``timestamp=None``) each row's
    position in the file is its timestamp; without a rating column (or ``rating=None``) there are no
    ratings. Timestamps are integers (Unix seconds, or any integer order) or ISO 8601 dates/datetimes
    (converted to Unix seconds; without a UTC offset they are read as UTC).

    ``sep`` defaults to a tab for ``.tsv``/``.tab``/``.txt`` and a comma otherwise (ignored for
    Parquet). Item metadata comes from ``item_meta_path`` (keyed by column ``item_id``, default: the
    events' item column name when the file has it, else a recognised item column), or, when only
    ``item_columns`` is given, from the events table itself (first row per item).
    ``item_columns`` maps metadata names to source columns, e.g. ``{"title": "name"}``; by default
    all columns of the metadata file are kept. User metadata works the same way.
    """
    mode = check_mode(on_bad_rows)
    path = Path(path)
    table = read_table(path, sep=sep, encoding=encoding, on_bad_rows=mode)
    columns = resolve_columns(table.names, path, user=user, item=item, timestamp=timestamp, rating=rating)
    user, item = columns["user"], columns["item"]
    assert user is not None and item is not None
    notes: list[str] = []
    time_column = columns["timestamp"]
    if time_column is None:
        time_column = "\x00position"
        table.add_column(time_column, pa.array(np.arange(len(table)).astype(str)))
        notes.append(f"{path.name}: no timestamp column; used each row's position in the file")
    events = events_from(table, user, item, time_column, columns["rating"])
    tables = [table]

    read = {"sep": sep, "encoding": encoding, "on_bad_rows": mode}
    item_meta = _side_meta(table, item, "item", item_meta_path, item_id, item_columns, tables, read)
    user_meta = _side_meta(table, user, "user", user_meta_path, user_id, user_columns, tables, read)
    stem = path.name.split(".")[0]
    return finish(name or stem, events, item_meta, user_meta, tables, notes)


def _side_meta(
    events: Table,
    events_column: str,
    kind: str,
    meta_path: str | Path | None,
    id_column: str | None,
    columns: Mapping[str, str] | None,
    tables: list[Table],
    read: dict[str, Any],
) -> pd.DataFrame | None:
    """Item or user metadata for :func:`load_table`: from ``meta_path`` (appended to ``tables``), else
    ``columns`` of the events table (first row per id), else none."""
    if meta_path is not None:
        meta_table = read_table(Path(meta_path), **read)
        tables.append(meta_table)
        return _meta(meta_table, id_column or _meta_key(meta_table, events_column, kind), columns, kind)
    if columns is not None:
        meta = _meta(events, events_column, columns, kind)
        return meta[~meta.index.duplicated(keep="first")]
    return None


def _meta_key(table: Table, events_column: str, role: str) -> str:
    """The id column of a metadata file: the events' column name if present, else a recognised one."""
    header = table.names
    if events_column in header:
        return events_column
    return find_column(header, role) or events_column
