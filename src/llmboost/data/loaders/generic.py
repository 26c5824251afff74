"""Generic layouts: RecBole atomic files and CSV / TSV / Parquet tables with a column mapping."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

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
# RecBole user fields parsed as nullable integers.
RECBOLE_INT_USER_FIELDS = ("age",)
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


def read_atomic(
    path: Path, *, encoding: str = "utf-8", on_bad_rows: str = "error"
) -> tuple[Table, dict[str, str]]:
    """Read a RecBole atomic file; columns are keyed by the field name without its ``:type``.

    Returns the table and each field's declared type.
    """
    table = read_delimited(
        path, sep="\t", header=True, encoding=encoding, on_bad_rows=check_mode(on_bad_rows)
    )
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
    table.columns = {
        raw.partition(":")[0]: col
        for raw, col in zip(table.header or [], table.columns.values(), strict=True)
    }
    table.header = list(types)
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
    require_columns(inter.header or [], ("user_id", "item_id"), inter_path)
    has_time = "timestamp" in inter.columns
    if not has_time:
        inter.columns["timestamp"] = pa.array(np.arange(len(inter)).astype(str))
    rating = "rating" if "rating" in inter.columns else None
    events = events_from(inter, "user_id", "item_id", "timestamp", rating)
    tables = [inter]
    notes = (
        [] if has_time else [f"{inter_path.name}: no timestamp field; used each row's position in the file"]
    )

    item_meta = None
    item_path = inter_path.with_name(stem + ".item")
    if item_path.is_file():
        items, _ = read_atomic(item_path, encoding=encoding, on_bad_rows=on_bad_rows)
        require_columns(items.header or [], ("item_id",), item_path)
        item_meta = pd.DataFrame(index=pd.Index(strings(items, "item_id"), name="item"))
        for field_name in items.header or []:
            if field_name == "item_id":
                continue
            target = RECBOLE_ITEM_FIELDS.get(field_name, field_name)
            if target in item_meta.columns:
                continue
            values = pd.Series(strings(items, field_name), index=item_meta.index)
            if target == "year":
                values = pd.to_numeric(values, errors="coerce").astype("Int64")
            elif target == "genres":
                values = values.str.split().str.join("|")
            item_meta[target] = values
        tables.append(items)

    user_meta = None
    user_path = inter_path.with_name(stem + ".user")
    if user_path.is_file():
        users, _ = read_atomic(user_path, encoding=encoding, on_bad_rows=on_bad_rows)
        require_columns(users.header or [], ("user_id",), user_path)
        user_meta = pd.DataFrame(index=pd.Index(strings(users, "user_id"), name="user"))
        for field_name in users.header or []:
            if field_name == "user_id":
                continue
            values = pd.Series(strings(users, field_name), index=user_meta.index)
            if field_name in RECBOLE_INT_USER_FIELDS:
                values = pd.to_numeric(values, errors="coerce").astype("Int64")
            user_meta[field_name] = values
        tables.append(users)
    return finish(name or stem, events, item_meta, user_meta, tables, notes)


# ---------------------------------------------------------------------------------------- tables
def _default_sep(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    return "\t" if suffixes and suffixes[-1] in (".tsv", ".tab", ".txt") else ","


def read_table(
    path: Path, *, sep: str | None = None, encoding: str = "utf-8", on_bad_rows: str = "error"
) -> Table:
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
            _all_lines=np.arange(1, arrow.num_rows + 1, dtype=np.int64),
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
    found = table.header or list(table.columns)
    mapping = dict(columns) if columns is not None else {c: c for c in found if c != id_column}
    require_columns(found, [id_column, *mapping.values()], table.path)
    meta = pd.DataFrame(
        {target: strings(table, source) for target, source in mapping.items()},
        index=pd.Index(strings(table, id_column), name=index_name),
    )
    return meta


def load_table(
    path: str | Path,
    *,
    user: str = "user",
    item: str = "item",
    timestamp: str | None = "timestamp",
    rating: str | None = None,
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
    """Load events from a CSV / TSV / Parquet table, naming its columns.

    ``sep`` defaults to a tab for ``.tsv``/``.tab``/``.txt`` and a comma otherwise (ignored for
    Parquet). ``timestamp=None`` uses each row's position in the file. Item metadata comes from
    ``item_meta_path`` (keyed by column ``item_id``, default: the ``item`` column's name), or, when
    only ``item_columns`` is given, from the events table itself (first row per item).
    ``item_columns`` maps metadata names to source columns, e.g. ``{"title": "name"}``; by default
    all columns of the metadata file are kept. User metadata works the same way.
    """
    mode = check_mode(on_bad_rows)
    path = Path(path)
    table = read_table(path, sep=sep, encoding=encoding, on_bad_rows=mode)
    wanted = [c for c in (user, item, timestamp, rating) if c is not None]
    require_columns(table.header or [], wanted, path)
    notes: list[str] = []
    if timestamp is None:
        timestamp = "\x00position"
        table.columns[timestamp] = pa.array(np.arange(len(table)).astype(str))
        notes.append(f"{path.name}: no timestamp column; used each row's position in the file")
    events = events_from(table, user, item, timestamp, rating)
    tables = [table]

    item_meta = None
    if item_meta_path is not None:
        meta_table = read_table(Path(item_meta_path), sep=sep, encoding=encoding, on_bad_rows=mode)
        item_meta = _meta(meta_table, item_id or item, item_columns, "item")
        tables.append(meta_table)
    elif item_columns is not None:
        item_meta = _meta(table, item, item_columns, "item")
        item_meta = item_meta[~item_meta.index.duplicated(keep="first")]
    user_meta = None
    if user_meta_path is not None:
        meta_table = read_table(Path(user_meta_path), sep=sep, encoding=encoding, on_bad_rows=mode)
        user_meta = _meta(meta_table, user_id or user, user_columns, "user")
        tables.append(meta_table)
    elif user_columns is not None:
        user_meta = _meta(table, user, user_columns, "user")
        user_meta = user_meta[~user_meta.index.duplicated(keep="first")]
    stem = path.name.split(".")[0]
    return finish(name or stem, events, item_meta, user_meta, tables, notes)
