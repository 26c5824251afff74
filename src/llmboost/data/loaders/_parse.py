"""Shared line-level reading and validation for the loaders.

Every reader turns one file into a :class:`Table`: string columns (Arrow arrays) plus the 1-based
line number of every row, header counted, so any later check can name the exact line. Parsing is
vectorised with pyarrow; a slower second pass runs only to locate an error.

Documented treatments, common to all readers:

* blank (or whitespace-only) lines are ignored;
* a UTF-8 byte-order mark at the start of a file is ignored; gzip files (``.gz`` or gzip magic bytes)
  are decompressed transparently;
* leading and trailing whitespace around delimited fields is removed;
* a bad row (wrong number of fields, a non-numeric rating or timestamp, an undecodable JSON line) is a
  :class:`DataFormatError` naming file, line and field with ``on_bad_rows="error"`` (the default);
  with ``on_bad_rows="skip"`` it is dropped, and the count and the first offending line are logged
  (logger ``llmboost.data.loaders``) and recorded in the dataset's ``log``;
* a fractional timestamp is truncated to whole units; an ISO 8601 date or datetime (``2020-01-31``,
  ``2020-01-31T12:00:00+02:00``) becomes Unix seconds, read as UTC when it has no offset (a value that
  is a plain number is always a number); ratings must be finite numbers;
* an empty file (no data rows) is always an error.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from llmboost.data.dataset import Dataset
from llmboost.data.errors import DataFormatError

logger = logging.getLogger("llmboost.data.loaders")

OnBadRows = Literal["error", "skip"]
NumberKind = Literal["int", "float", "time"]
_MODES = ("error", "skip")


def check_mode(on_bad_rows: str) -> OnBadRows:
    """Validate an ``on_bad_rows`` option."""
    if on_bad_rows not in _MODES:
        raise ValueError(f"on_bad_rows must be one of {_MODES}, got {on_bad_rows!r}")
    return on_bad_rows  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------- bytes/text
def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip-compressed."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise DataFormatError(f"corrupt gzip data ({err})", path=path) from None
    return data


def guess_encoding(data: bytes) -> str:
    """A likely encoding of ``data``: utf-16 (by BOM), utf-8, else latin-1, or cp1252 when bytes
    0x80-0x9f (control characters in latin-1, punctuation in cp1252) occur."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    if re.search(rb"[\x80-\x9f]", data):
        try:
            data.decode("cp1252")
        except UnicodeDecodeError:
            return "latin-1"
        return "cp1252"
    return "latin-1"


def decode(data: bytes, path: Path, encoding: str) -> str:
    """Decode ``data``; a decoding failure becomes a :class:`DataFormatError` naming the line."""
    try:
        text = data.decode(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        guess = guess_encoding(data)
        hint = ""
        if guess.replace("-", "").lower() != encoding.replace("-", "").replace("_", "").lower():
            hint = f"; the file looks like {guess}: pass encoding={guess!r}"
        raise DataFormatError(
            f"cannot decode byte 0x{data[err.start]:02x} (byte {column} of the line) as {encoding}{hint}",
            path=path,
            line=line,
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def split_lines(text: str) -> pa.Array:
    """The lines of ``text`` as an Arrow string array (``\\r\\n`` handled, no final empty line)."""
    lines = pc.list_flatten(pc.split_pattern(pa.array([text], type=pa.large_string()), "\n"))
    if text.endswith("\n"):
        lines = lines.slice(0, len(lines) - 1)
    if "\r" in text:
        lines = pc.utf8_rtrim(lines, characters="\r")
    return lines


def _nonblank(lines: pa.Array) -> np.ndarray:
    return np.asarray(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0), dtype=bool)


# ---------------------------------------------------------------------------------------- tables
class Table:
    """String columns read from one file, with the line number of every row.

    ``header`` is the list of column names as written in the file (``None`` for headerless files).
    ``lines`` gives each row's 1-based line; ``line_finder`` computes them lazily instead (quoted CSV
    needs a second pass). Columns are read with ``table[name]`` / :attr:`columns` and changed only
    through :meth:`add_column`, :meth:`rename` and :meth:`reject` (or :meth:`set_rows` by readers that
    build rows one at a time), so rows and their line numbers stay aligned. :attr:`notes` records the
    rows skipped under ``on_bad_rows="skip"``.
    """

    def __init__(
        self,
        path: Path,
        columns: Mapping[str, pa.Array],
        on_bad_rows: OnBadRows,
        header: list[str] | None = None,
        *,
        lines: np.ndarray | None = None,
        line_finder: Callable[[], np.ndarray | None] | None = None,
        n_rows: int | None = None,
    ) -> None:
        self.path = path
        self.on_bad_rows = on_bad_rows
        self.header = header
        self.skipped = 0
        self.first_skipped: tuple[int | None, str] | None = None
        self._columns: dict[str, pa.Array] = {}
        self._all_lines: np.ndarray | None = None
        self._line_finder: Callable[[], np.ndarray | None] | None = None
        self._rows = np.zeros(0, dtype=np.int64)
        self.set_rows(columns, lines, line_finder=line_finder, n_rows=n_rows)

    def set_rows(
        self,
        columns: Mapping[str, pa.Array],
        lines: np.ndarray | None = None,
        *,
        line_finder: Callable[[], np.ndarray | None] | None = None,
        n_rows: int | None = None,
    ) -> None:
        """Replace all rows: ``columns`` (equal lengths) and each row's line (or a ``line_finder``)."""
        lengths = {len(v) for v in columns.values()}
        if n_rows is None:
            n_rows = lengths.pop() if lengths else (0 if lines is None else len(lines))
        if lengths - {n_rows} or (lines is not None and len(lines) != n_rows):
            raise ValueError(f"{self.path}: columns and line numbers of different lengths")
        self._columns = dict(columns)
        self._all_lines = None if lines is None else np.asarray(lines, dtype=np.int64)
        self._line_finder = line_finder
        self._rows = np.arange(n_rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, name: str) -> pa.Array:
        return self._columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    @property
    def columns(self) -> Mapping[str, pa.Array]:
        """The columns by name (read-only)."""
        return MappingProxyType(self._columns)

    @property
    def names(self) -> list[str]:
        """The column names: the header when the file has one, else the columns held."""
        return list(self.header) if self.header is not None else list(self._columns)

    def add_column(self, name: str, values: pa.Array) -> None:
        """Add (or replace) a column with one value per row."""
        if len(values) != len(self):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(self)} rows")
        self._columns[name] = values

    def rename(self, mapping: Mapping[str, str]) -> None:
        """Rename columns (and their header entries) ``old -> new``."""
        self._columns = {mapping.get(k, k): v for k, v in self._columns.items()}
        if self.header is not None:
            self.header = [mapping.get(h, h) for h in self.header]

    def line(self, row: int) -> int | None:
        """The 1-based line of row ``row`` (``None`` when it cannot be located)."""
        lines = self.lines()
        return None if lines is None else int(lines[row])

    def lines(self) -> np.ndarray | None:
        """The line number of every row (``None`` when lines cannot be located)."""
        if self._all_lines is None and self._line_finder is not None:
            self._all_lines = self._line_finder()
            self._line_finder = None
        return None if self._all_lines is None else self._all_lines[self._rows]

    def value(self, name: str, row: int) -> str:
        return str(self._columns[name][row].as_py())

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where ``mask`` is true."""
        arrow_mask = pa.array(mask, type=pa.bool_())
        self._columns = {k: pc.filter(v, arrow_mask) for k, v in self._columns.items()}
        self._rows = self._rows[mask]

    def reject(
        self, bad: np.ndarray, explain: Callable[[int], tuple[str | None, str]], *aligned: pa.Array
    ) -> tuple[pa.Array, ...]:
        """Handle the rows flagged in ``bad``: raise for the first, or drop them all and note it.

        ``explain(row)`` gives ``(field, message)`` for a bad row. ``aligned`` arrays (one value per
        row, not columns of the table) are filtered the same way and returned.
        """
        if not bad.any():
            return aligned
        first = int(np.flatnonzero(bad)[0])
        field_name, message = explain(first)
        line = self.line(first)
        if self.on_bad_rows == "error":
            raise DataFormatError(message, path=self.path, line=line, field=field_name)
        where = f"field {field_name!r}: " if field_name else ""
        self.note_skipped(int(bad.sum()), line, where + message)
        self.keep(~bad)
        if len(self) == 0:
            raise DataFormatError(
                f"no valid data rows: all rows were bad (first: {where}{message})",
                path=self.path,
                line=line,
                field=field_name,
            )
        good = pa.array(~bad, type=pa.bool_())
        return tuple(pc.filter(a, good) for a in aligned)

    def note_skipped(self, count: int, line: int | None, message: str) -> None:
        self.skipped += count
        if self.first_skipped is None or (
            line is not None and (self.first_skipped[0] is None or line < self.first_skipped[0])
        ):
            self.first_skipped = (line, message)

    @property
    def notes(self) -> list[str]:
        """Log lines describing skipped rows (empty when none were skipped)."""
        if not self.skipped or self.first_skipped is None:
            return []
        line, message = self.first_skipped
        where = f"line {line}" if line is not None else "unknown line"
        note = f"{self.path.name}: skipped {self.skipped} bad rows (first: {where}: {message})"
        return [note]


def require_columns(found: Sequence[str], expected: Iterable[str], path: Path, *, line: int | None = 1) -> None:
    """Raise naming the missing column, the columns found and the ones expected."""
    expected = list(expected)
    missing = [c for c in expected if c not in found]
    if missing:
        raise DataFormatError(
            f"missing column {missing[0]!r}; found columns {list(found)}, expected {expected}",
            path=path,
            line=line,
            field=missing[0],
        )


def _check_header(names: list[str], path: Path) -> None:
    seen: set[str] = set()
    for name in names:
        if not name:
            raise DataFormatError(f"empty column name in header {names}", path=path, line=1)
        if name in seen:
            raise DataFormatError(f"duplicate column name in header {names}", path=path, line=1, field=name)
        seen.add(name)


def read_delimited(
    path: Path,
    *,
    sep: str,
    fields: Sequence[str] | None = None,
    header: bool = False,
    encoding: str = "utf-8",
    on_bad_rows: OnBadRows = "error",
) -> Table:
    """Read an unquoted delimited file (one record per line, ``sep`` between fields).

    Headerless files take column names from ``fields``; otherwise the first line is the header.
    Rows with the wrong number of fields are bad rows.
    """
    text = decode(read_bytes(path), path, encoding)
    lines = split_lines(text)
    numbers = np.arange(1, len(lines) + 1, dtype=np.int64)
    keep = _nonblank(lines)
    if header:
        if not len(lines) or not keep[0]:
            raise DataFormatError("empty file: expected a header line", path=path, line=1)
        names = [n.strip() for n in str(lines[0].as_py()).split(sep)]
        _check_header(names, path)
        keep[0] = False
    else:
        if fields is None:
            raise ValueError("read_delimited needs fields= or header=True")
        names = list(fields)
    if not keep.any():
        raise DataFormatError("empty file: no data rows", path=path)
    data = pc.filter(lines, pa.array(keep))
    table = Table(path, {}, on_bad_rows, names if header else None, lines=numbers[keep])
    n = len(names)
    counts = np.asarray(pc.count_substring(data, sep), dtype=np.int64) + 1
    bad = counts != n

    def explain(row: int) -> tuple[str | None, str]:
        found = int(counts[row])
        missing = names[found] if found < n else None
        return missing, f"expected {n} fields separated by {sep!r} ({', '.join(names)}), found {found}"

    (data,) = table.reject(bad, explain, data)
    parts = pc.split_pattern(data, sep)
    for j, name in enumerate(names):
        table.add_column(name, pc.utf8_trim_whitespace(pc.list_element(parts, j)))
    return table


def read_token_lines(
    path: Path,
    *,
    min_tokens: int,
    what: str,
    encoding: str = "utf-8",
    on_bad_rows: OnBadRows = "error",
    max_splits: int | None = None,
) -> tuple[pa.ListArray, np.ndarray, Table]:
    """Split each non-blank line on whitespace; lines with fewer than ``min_tokens`` are bad rows.

    Returns the token lists, their line numbers and the (column-less) table holding skip notes.
    """
    text = decode(read_bytes(path), path, encoding)
    lines = split_lines(text)
    keep = _nonblank(lines)
    if not keep.any():
        raise DataFormatError("empty file: no data rows", path=path)
    numbers = np.arange(1, len(lines) + 1, dtype=np.int64)[keep]
    table = Table(path, {"_": pc.filter(lines, pa.array(keep))}, on_bad_rows, lines=numbers)
    tokens = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(table["_"]), max_splits=max_splits)
    lengths = np.asarray(pc.list_value_length(tokens), dtype=np.int64)
    bad = lengths < min_tokens
    if bad.any():
        table.reject(bad, lambda row: (None, f"expected {what}, found {int(lengths[row])} fields"))
        tokens = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(table["_"]), max_splits=max_splits)
    lines_out = table.lines()
    assert lines_out is not None
    return tokens, lines_out, table


def read_csv(path: Path, *, sep: str = ",", encoding: str = "utf-8", on_bad_rows: OnBadRows = "error") -> Table:
    """Read a CSV file with a header line and standard double-quote quoting (values may hold ``sep``
    or newlines inside quotes). All columns are read as strings."""
    raw = read_bytes(path)
    text = decode(raw, path, encoding)
    if not text.strip():
        raise DataFormatError("empty file: expected a header line", path=path, line=1)
    first = text.split("\n", 1)[0].rstrip("\r")
    names = [n.strip() for n in next(csv.reader([first], delimiter=sep))]
    _check_header(names, path)
    invalid: list[int] = []

    def on_invalid(row: Any) -> str:
        invalid.append(int(row.actual_columns))
        return "skip"

    data = (
        raw
        if encoding.replace("-", "").lower() in ("utf8", "ascii") and raw[:3] != b"\xef\xbb\xbf"
        else (text.encode("utf-8"))
    )
    try:
        arrow = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as err:
        return _read_csv_python(path, text, names, sep, on_bad_rows, str(err))
    if invalid:
        # Locate the rows pyarrow rejected with the (slower) Python csv module.
        return _read_csv_python(path, text, names, sep, on_bad_rows, None)
    if arrow.num_rows == 0:
        raise DataFormatError("empty file: a header but no data rows", path=path)
    columns = {n: pc.utf8_trim_whitespace(arrow.column(n).combine_chunks()) for n in names}
    return Table(path, columns, on_bad_rows, names, line_finder=lambda: _csv_lines(text, sep, len(names)))


def _csv_records(text: str, sep: str) -> Iterable[tuple[int, list[str]]]:
    """(start line, fields) of every non-blank record after the header."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    previous = 0
    seen_header = False
    for record in reader:
        start, previous = previous + 1, reader.line_num
        if not record:
            continue
        if not seen_header:
            seen_header = True
            continue
        yield start, record


def _csv_lines(text: str, sep: str, n: int) -> np.ndarray | None:
    lines = [start for start, record in _csv_records(text, sep) if len(record) == n]
    return np.asarray(lines, dtype=np.int64)


def _read_csv_python(
    path: Path, text: str, names: list[str], sep: str, on_bad_rows: OnBadRows, arrow_error: str | None
) -> Table:
    """The slow path: parse with the csv module, which knows each record's line."""
    n = len(names)
    lines: list[int] = []
    values: list[list[str]] = [[] for _ in names]
    table = Table(path, {}, on_bad_rows, names)
    try:
        for start, record in _csv_records(text, sep):
            if len(record) != n:
                missing = names[len(record)] if len(record) < n else None
                message = f"expected {n} fields separated by {sep!r} ({', '.join(names)}), found {len(record)}"
                if on_bad_rows == "error":
                    raise DataFormatError(message, path=path, line=start, field=missing)
                where = f"field {missing!r}: " if missing else ""
                table.note_skipped(1, start, where + message)
                continue
            lines.append(start)
            for j, v in enumerate(record):
                values[j].append(v.strip())
    except csv.Error as err:
        raise DataFormatError(f"CSV syntax error: {err}", path=path) from None
    if not lines:
        if table.skipped:
            raise DataFormatError("no valid data rows (all rows were bad)", path=path)
        if arrow_error is not None:
            raise DataFormatError(f"cannot parse as CSV: {arrow_error}", path=path)
        raise DataFormatError("empty file: a header but no data rows", path=path)
    columns = {name: pa.array(vals, type=pa.string()) for name, vals in zip(names, values, strict=True)}
    table.set_rows(columns, np.asarray(lines, dtype=np.int64))
    return table


# ---------------------------------------------------------------------------------------- numbers
_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "time": "an integer or an ISO 8601 date/datetime such as 2020-01-31 or 2020-01-31T12:00:00Z",
}
_EPOCH = pd.Timestamp(0, tz="UTC")


def _parse_times(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Integers as they are, else ISO 8601 dates/datetimes as Unix seconds (UTC when no offset is given)."""
    values, bad = _parse_numbers(arr, "int")
    if not bad.any():
        return values, bad
    rows = np.flatnonzero(bad)
    raw = pd.Series(pc.take(pc.utf8_trim_whitespace(arr), pa.array(rows)).to_numpy(zero_copy_only=False), dtype=object)
    parsed = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
    ok = parsed.notna().to_numpy()
    seconds = (parsed[ok] - _EPOCH) // pd.Timedelta(seconds=1)
    values[rows[ok]] = seconds.to_numpy(dtype=np.int64)
    bad[rows[ok]] = False
    return values, bad


def _parse_numbers(arr: pa.Array, kind: NumberKind) -> tuple[np.ndarray, np.ndarray]:
    """Values and a bad-row mask; fast Arrow cast first, pandas coercion only when that fails."""
    if kind == "time":
        return _parse_times(arr)
    arr = pc.utf8_trim_whitespace(arr)
    values: np.ndarray | None = None
    if kind == "int":
        try:
            values = np.asarray(pc.cast(arr, pa.int64()), dtype=np.int64)
            return values, np.zeros(len(values), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    try:
        floats = np.asarray(pc.cast(arr, pa.float64()), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        floats = pd.to_numeric(pd.Series(arr.to_numpy(zero_copy_only=False), dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    bad = ~np.isfinite(floats)
    if kind == "float":
        return floats, bad
    bad |= np.abs(np.nan_to_num(floats)) >= 2.0**63  # beyond int64
    values = np.zeros(len(floats), dtype=np.int64)
    values[~bad] = np.trunc(floats[~bad]).astype(np.int64)
    return values, bad


def numbers(
    table: Table, kinds: Mapping[str, NumberKind], labels: Mapping[str, str] | None = None
) -> dict[str, np.ndarray]:
    """Parse the named columns as numbers; bad values are bad rows (error or skip).

    ``labels`` gives the field name to report for a column (default: the column name).
    """
    labels = labels or {}
    parsed = {col: _parse_numbers(table[col], kind) for col, kind in kinds.items()}
    bad = np.zeros(len(table), dtype=bool)
    for _, col_bad in parsed.values():
        bad |= col_bad

    def explain(row: int) -> tuple[str | None, str]:
        for col, (_, col_bad) in parsed.items():
            if col_bad[row]:
                raw = table.value(col, row)
                noun = "timestamp" if kinds[col] == "time" else "number"
                what = "empty value" if not raw.strip() else f"not a {noun}: {raw!r}"
                return labels.get(col, col), f"{what} (expected {_EXPECTED[kinds[col]]})"
        raise AssertionError("unreachable")

    if bad.any():
        table.reject(bad, explain)
        return {col: values[~bad] for col, (values, _) in parsed.items()}
    return {col: values for col, (values, _) in parsed.items()}


def strings(table: Table, column: str) -> np.ndarray:
    """A column as a NumPy object array of Python strings."""
    return np.asarray(table[column].to_numpy(zero_copy_only=False), dtype=object)


# ---------------------------------------------------------------------------------------- JSON lines
def read_json_records(
    path: Path,
    fields: Mapping[str, pa.DataType],
    *,
    encoding: str = "utf-8",
    on_bad_rows: OnBadRows = "error",
    optional: Sequence[str] = (),
) -> Table:
    """Read the named fields from a JSON-lines file (one object per line; other keys are ignored).

    The fast path is pyarrow's JSON reader; a per-line pass locates the line of any error.
    Every field not in ``optional`` must be present and non-null.
    """
    raw = read_bytes(path)
    text = decode(raw, path, encoding)
    if not text.strip():
        raise DataFormatError("empty file: no data rows", path=path)
    schema = pa.schema(list(fields.items()))
    data = raw if encoding.replace("-", "").lower() == "utf8" and raw[:3] != b"\xef\xbb\xbf" else (text.encode("utf-8"))
    try:
        arrow = pajson.read_json(
            io.BytesIO(data),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
    except pa.ArrowInvalid:
        arrow = None
    required = [f for f in fields if f not in optional]
    if arrow is not None and not any(arrow.column(f).null_count for f in required):
        columns = {f: arrow.column(f).combine_chunks() for f in fields}
        lines = split_lines(text)
        numbers_ = np.flatnonzero(_nonblank(lines)) + 1
        if len(numbers_) == arrow.num_rows:
            return Table(path, columns, on_bad_rows, lines=numbers_)
    return _read_json_python(path, text, fields, on_bad_rows, required, literal=False)


def parse_record(line: str, *, literal: bool) -> Any:
    """One JSON object; with ``literal`` also a Python dict literal (Amazon 2014 metadata)."""
    try:
        return json.loads(line)
    except ValueError:
        if not literal:
            raise
    return ast.literal_eval(line)


def _convert(value: Any, dtype: pa.DataType) -> Any:
    if pa.types.is_string(dtype):
        if isinstance(value, (dict, list)):
            raise TypeError(f"expected a string, found {type(value).__name__}")
        return str(value)
    if isinstance(value, bool):
        raise TypeError("expected a number, found a boolean")
    if pa.types.is_integer(dtype):
        number = float(value)
        if not np.isfinite(number):
            raise ValueError("not finite")
        return int(number)
    number = float(value)
    if not np.isfinite(number):
        raise ValueError("not finite")
    return number


def _read_json_python(
    path: Path,
    text: str,
    fields: Mapping[str, pa.DataType],
    on_bad_rows: OnBadRows,
    required: Sequence[str],
    *,
    literal: bool,
) -> Table:
    table = Table(path, {}, on_bad_rows)
    values: dict[str, list[Any]] = {f: [] for f in fields}
    lines: list[int] = []

    def bad(line: int, field_name: str | None, message: str) -> None:
        if on_bad_rows == "error":
            raise DataFormatError(message, path=path, line=line, field=field_name)
        table.note_skipped(1, line, (f"field {field_name!r}: " if field_name else "") + message)

    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = parse_record(line, literal=literal)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            bad(number, None, f"not a valid {'record' if literal else 'JSON object'} ({err})")
            continue
        if not isinstance(record, dict):
            bad(number, None, f"expected an object, found {type(record).__name__}")
            continue
        row: dict[str, Any] = {}
        for name, dtype in fields.items():
            value = record.get(name)
            if value is None:
                if name in required:
                    bad(number, name, f"missing field; found fields {sorted(record)}")
                    break
                row[name] = None
                continue
            try:
                row[name] = _convert(value, dtype)
            except (TypeError, ValueError, OverflowError):
                bad(number, name, f"not a valid value: {value!r} (expected {dtype})")
                break
        else:
            lines.append(number)
            for name in fields:
                values[name].append(row[name])
    if not lines:
        raise DataFormatError("no valid data rows" + (" (all rows were bad)" if table.skipped else ""), path=path)
    columns = {name: pa.array(vals, type=fields[name]) for name, vals in values.items()}
    table.set_rows(columns, np.asarray(lines, dtype=np.int64))
    return table


def emit(notes: list[str]) -> list[str]:
    """Log loader notes (skipped rows and similar) as warnings and return them."""
    for note in notes:
        logger.warning("%s", note)
    return notes


def events_from(table: Table, user: str, item: str, timestamp: str, rating: str | None = None) -> pd.DataFrame:
    """An events frame (user, item, timestamp[, rating]) from string columns of ``table``.

    Timestamps are integers or ISO 8601 dates/datetimes (Unix seconds; UTC unless an offset is given)."""
    kinds: dict[str, NumberKind] = {timestamp: "time"}
    if rating is not None:
        kinds[rating] = "float"
    nums = numbers(table, kinds)
    events = pd.DataFrame({"user": strings(table, user), "item": strings(table, item), "timestamp": nums[timestamp]})
    if rating is not None:
        events["rating"] = nums[rating]
    return events


def finish(
    name: str,
    events: pd.DataFrame,
    item_meta: pd.DataFrame | None,
    user_meta: pd.DataFrame | None,
    tables: Iterable[Table],
    notes: Iterable[str] = (),
) -> Dataset:
    """Build the dataset and put the loaders' notes (skipped rows etc.) first in its log."""
    ds = Dataset.from_events(name, events, item_meta, user_meta)
    ds.log[:0] = emit([*(note for t in tables for note in t.notes), *notes])
    return ds
