"""Dataset loaders, one per source layout, and layout detection.

:func:`load_path` loads any supported folder or file, detecting its layout from the file names
present (or taking ``format=``). Layouts (``format`` names):

* ``saved`` — a folder written by :meth:`Dataset.save` (``dataset.json``);
* ``movielens-100k`` (``u.data``), ``movielens-1m`` (``ratings.dat``), ``movielens-latest``
  (``ratings.csv`` + ``movies.csv``) — the GroupLens layouts;
* ``recbole`` — RecBole atomic files (``<name>.inter`` [+ ``.item``, ``.user``]);
* ``p5`` — Amazon in the P5 layout (``user_sequence.txt``);
* ``unisrec`` — Amazon in the UniSRec layout (``<Name>.train.inter`` + ``<Name>.item2index``);
* ``amazon`` — raw Amazon 2014/2018 review + metadata JSON lines (``reviews_X_5.json.gz``, ``X_5.json.gz``);
* ``table`` — a CSV / TSV / Parquet file; columns recognised by common names (user_id, userId,
  reviewerID, item_id, movieId, asin, timestamp, unixReviewTime, rating, overall, ...) or named with
  ``user=``, ``item=``, ``timestamp=``, ``rating=`` (see :func:`load_table`);
* a ``.zip`` archive of any folder layout is unpacked to a temporary folder first.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmboost.data.dataset import Dataset
from llmboost.data.errors import DatasetNotFoundError
from llmboost.data.loaders.amazon import (
    P5_ITEM_TEXT,
    P5_SEQUENCES,
    find_amazon_files,
    load_amazon_p5,
    load_amazon_reviews,
    load_amazon_unisrec,
    unisrec_stem,
)
from llmboost.data.loaders.generic import (
    COLUMN_ROLES,
    KNOWN_COLUMNS,
    PARQUET_SUFFIXES,
    SPLIT_SUFFIXES,
    column_options,
    load_recbole,
    load_table,
    recbole_inter_file,
)
from llmboost.data.loaders.movielens import load_movielens_1m, load_movielens_100k, load_movielens_latest

__all__ = [
    "FORMATS",
    "KNOWN_COLUMNS",
    "column_options",
    "detect_format",
    "load_amazon_p5",
    "load_amazon_reviews",
    "load_amazon_unisrec",
    "load_movielens_1m",
    "load_movielens_100k",
    "load_movielens_latest",
    "load_path",
    "load_recbole",
    "load_table",
    "source_files",
]


def _existing(folder: Path, *names: str) -> list[Path]:
    return [folder / n for n in names if (folder / n).is_file()]


def _folder(path: Path) -> Path:
    return path.parent if path.is_file() else path


def _recbole_files(path: Path, options: dict[str, Any]) -> list[Path]:
    inter = recbole_inter_file(path)
    stem = inter.name[: -len(".inter")]
    return [inter, *_existing(inter.parent, stem + ".item", stem + ".user")]


def _unisrec_files(path: Path, options: dict[str, Any]) -> list[Path]:
    folder, stem = unisrec_stem(path)
    names = [f"{stem}.{s}.inter" for s in ("train", "valid", "test")]
    return _existing(folder, *names, f"{stem}.item2index", f"{stem}.user2index", f"{stem}.text")


def _amazon_files(path: Path, options: dict[str, Any]) -> list[Path]:
    reviews, meta = find_amazon_files(path)
    given = options.get("meta_path")
    meta = Path(given) if given is not None else meta
    return [reviews, *([meta] if meta is not None else [])]


def _table_files(path: Path, options: dict[str, Any]) -> list[Path]:
    extra = [Path(options[k]) for k in ("item_meta_path", "user_meta_path") if options.get(k) is not None]
    return [path, *extra]


def _saved_files(path: Path, options: dict[str, Any]) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file())


@dataclass(frozen=True)
class Layout:
    """A source layout: how to load it and which files it reads."""

    name: str
    load: Callable[..., Dataset]
    files: Callable[[Path, dict[str, Any]], list[Path]]


FORMATS: dict[str, Layout] = {
    "saved": Layout("saved", lambda path, **_: Dataset.load(path), _saved_files),
    "movielens-100k": Layout(
        "movielens-100k",
        load_movielens_100k,
        lambda p, o: _existing(_folder(p), "u.data", "u.item", "u.genre", "u.user"),
    ),
    "movielens-1m": Layout(
        "movielens-1m",
        load_movielens_1m,
        lambda p, o: _existing(_folder(p), "ratings.dat", "movies.dat", "users.dat"),
    ),
    "movielens-latest": Layout(
        "movielens-latest",
        load_movielens_latest,
        lambda p, o: _existing(_folder(p), "ratings.csv", "movies.csv"),
    ),
    "recbole": Layout("recbole", load_recbole, _recbole_files),
    "p5": Layout("p5", load_amazon_p5, lambda p, o: _existing(_folder(p), P5_SEQUENCES, P5_ITEM_TEXT)),
    "unisrec": Layout("unisrec", load_amazon_unisrec, _unisrec_files),
    "amazon": Layout("amazon", load_amazon_reviews, _amazon_files),
    "table": Layout("table", load_table, _table_files),
}

_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".csv.gz", ".tsv.gz", *PARQUET_SUFFIXES)
_JSON_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz")


def _detect_folder(folder: Path) -> str | None:
    names = {p.name for p in folder.iterdir() if p.is_file()}
    if "dataset.json" in names:
        return "saved"
    if "u.data" in names:
        return "movielens-100k"
    if "ratings.dat" in names:
        return "movielens-1m"
    if {"ratings.csv", "movies.csv"} <= names:
        return "movielens-latest"
    if P5_SEQUENCES in names:
        return "p5"
    if any(n.endswith(".train.inter") for n in names) and any(n.endswith(".item2index") for n in names):
        return "unisrec"
    if any(n.endswith(".inter") and not n.endswith(SPLIT_SUFFIXES) for n in names):
        return "recbole"
    if any(n.endswith(_JSON_SUFFIXES) and not n.startswith("meta_") for n in names):
        return "amazon"
    return None


def detect_format(path: str | Path) -> str:
    """The layout name of a folder or file, from the file names present."""
    path = Path(path)
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        found = _detect_folder(path)
        if found is None:
            listing = ", ".join(sorted(p.name for p in path.iterdir())[:20]) or "nothing"
            raise DatasetNotFoundError(
                f"{path}: cannot tell the dataset layout from the files present ({listing}); expected one of "
                "u.data (MovieLens-100K), ratings.dat (MovieLens-1M), ratings.csv + movies.csv "
                "(MovieLens CSV), <name>.inter (RecBole), user_sequence.txt (P5), <Name>.train.inter + "
                "<Name>.item2index (UniSRec), reviews_X_5.json.gz / X_5.json.gz (raw Amazon), "
                "dataset.json (saved); or pass format="
            )
        return found
    name = path.name.lower()
    if name.endswith(".inter"):
        return "unisrec" if name.endswith(SPLIT_SUFFIXES) else "recbole"
    if name.endswith(_JSON_SUFFIXES):
        return "amazon"
    if name.endswith(_TABLE_SUFFIXES):
        if name == "ratings.csv" and (path.parent / "movies.csv").is_file():
            return "movielens-latest"
        return "table"
    found = _detect_folder(path.parent)
    if found is not None and found != "saved":
        return found
    raise DatasetNotFoundError(f"{path}: cannot tell the dataset layout from the file name; pass format=")


def _layout(format: str) -> Layout:
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; known formats: {sorted(FORMATS)}")
    return FORMATS[format]


def source_files(path: str | Path, format: str | None = None, **options: Any) -> list[Path]:
    """The files a load of ``path`` reads (what a cache key must hash)."""
    path = Path(path)
    layout = _layout(format or detect_format(path))
    return layout.files(path, options)


def load_path(path: str | Path, *, format: str | None = None, **options: Any) -> Dataset:
    """Load the dataset at ``path`` (a folder, a file, or a ``.zip`` of a folder layout).

    ``format`` names the layout (see the module docstring); by default it is detected from the file
    names. Other options (``name``, ``encoding``, ``on_bad_rows``, column names for ``table``...) go
    to the layout's loader.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".zip":
        with tempfile.TemporaryDirectory(prefix="llmboost-") as tmp:
            root = extract_zip(path, Path(tmp))
            return load_path(root, format=format, **options)
    layout = _layout(format or detect_format(path))
    named = [role for role in COLUMN_ROLES if role in options]
    if named and layout.name != "table":
        raise ValueError(
            f"{path}: column names ({', '.join(named)}) apply to CSV/TSV/Parquet tables (format 'table'), "
            f"but this is read as {layout.name!r}"
        )
    if layout.name in ("movielens-100k", "movielens-1m", "movielens-latest", "p5") and path.is_file():
        path = path.parent
    return layout.load(path, **options)


def extract_zip(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into ``dest`` (refusing paths that escape it); the single top folder if any."""
    dest = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = (dest / member).resolve()
            if not target.is_relative_to(dest):
                raise ValueError(f"{archive}: member {member!r} would unpack outside {dest}")
        zf.extractall(dest)
    entries = [p for p in dest.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest
