"""MovieLens in the official GroupLens layouts: ml-100k, ml-1m and ml-latest(-small).

Item metadata gets ``title`` (the year suffix `` (1995)`` removed), ``year`` (nullable integer) and
``genres`` (``|``-separated names). Ratings are floats; timestamps are Unix seconds. For the RecBole
atomic-file copies of MovieLens see :func:`llmboost.data.loaders.generic.load_recbole`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from llmboost.data.dataset import Dataset
from llmboost.data.errors import DatasetNotFoundError
from llmboost.data.loaders._parse import (
    check_mode,
    events_from,
    finish,
    numbers,
    read_csv,
    read_delimited,
    require_columns,
    strings,
)

# Genre names in u.item's flag order (the contents of ml-100k's u.genre), used when u.genre is absent.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip

# Occupation codes of ml-1m's users.dat (from the ml-1m README).
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip

_YEAR_SUFFIX = r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$"


def _need(folder: Path, *names: str, layout: str) -> list[Path]:
    paths = [folder / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{folder}: not a {layout} folder: missing {', '.join(missing)} (expected {', '.join(names)})"
        )
    return paths


def split_title_year(titles: pd.Series) -> pd.DataFrame:
    """``Toy Story (1995)`` -> title ``Toy Story``, year 1995 (titles without a year are kept as they are)."""
    titles = titles.astype(str).str.strip()
    parts = titles.str.extract(_YEAR_SUFFIX)
    has_year = parts["year"].notna()
    title = titles.where(~has_year, parts["title"])
    year = pd.to_numeric(parts["year"], errors="coerce").astype("Int64")
    return pd.DataFrame({"title": title, "year": year}, index=titles.index)


def load_movielens_100k(
    path: str | Path,
    *,
    name: str = "movielens-100k",
    encoding: str = "latin-1",
    on_bad_rows: str = "error",
) -> Dataset:
    """Load the GroupLens ml-100k folder: ``u.data``, ``u.item`` (``u.genre``, ``u.user`` optional).

    Item metadata: title, year, genres, release_date, imdb_url. User metadata: age, gender,
    occupation, zip_code.
    """
    read = functools.partial(read_delimited, encoding=encoding, on_bad_rows=check_mode(on_bad_rows))
    folder = Path(path)
    data_path, item_path = _need(folder, "u.data", "u.item", layout="MovieLens-100K")
    ratings = read(data_path, sep="\t", fields=("user", "item", "rating", "timestamp"))
    events = events_from(ratings, "user", "item", "timestamp", "rating")

    genres = list(ML100K_GENRES)
    genre_path = folder / "u.genre"
    if genre_path.is_file():
        gtable = read_delimited(genre_path, sep="|", fields=("genre", "index"), encoding=encoding)
        idx = numbers(gtable, {"index": "int"})["index"]
        genres = [str(g) for _, g in sorted(zip(idx, strings(gtable, "genre"), strict=True))]
    fields = ("item", "title", "release_date", "video_release_date", "imdb_url", *genres)
    items = read(item_path, sep="|", fields=fields)
    flags = np.stack([strings(items, g) for g in genres], axis=1)
    bad = ~np.isin(flags, ["0", "1"]).all(axis=1)

    def explain(row: int) -> tuple[str, str]:
        j = int(np.flatnonzero(~np.isin(flags[row], ["0", "1"]))[0])
        return genres[j], f"genre flag must be 0 or 1, found {flags[row, j]!r}"

    if bad.any():
        items.reject(bad, explain)
        flags = flags[~bad]
    is_set = flags == "1"
    names = np.array(genres, dtype=object)
    item_meta = split_title_year(pd.Series(strings(items, "title")))
    release = pd.Series(strings(items, "release_date"))
    release_year = pd.to_numeric(release.str.extract(r"(\d{4})\s*$")[0], errors="coerce").astype("Int64")
    item_meta["year"] = item_meta["year"].fillna(release_year)
    item_meta["genres"] = ["|".join(names[row]) for row in is_set]
    item_meta["release_date"] = release.to_numpy()
    item_meta["imdb_url"] = strings(items, "imdb_url")
    item_meta.index = pd.Index(strings(items, "item"), name="item")

    tables = [ratings, items]
    user_meta = None
    user_path = folder / "u.user"
    if user_path.is_file():
        users = read(user_path, sep="|", fields=("user", "age", "gender", "occupation", "zip_code"))
        age = numbers(users, {"age": "int"})["age"]
        user_meta = pd.DataFrame(
            {"age": age, **{c: strings(users, c) for c in ("gender", "occupation", "zip_code")}},
            index=pd.Index(strings(users, "user"), name="user"),
        )
        tables.append(users)
    return finish(name, events, item_meta, user_meta, tables)


def load_movielens_1m(
    path: str | Path,
    *,
    name: str = "movielens-1m",
    encoding: str = "latin-1",
    on_bad_rows: str = "error",
) -> Dataset:
    """Load the GroupLens ml-1m folder: ``ratings.dat``, ``movies.dat`` (``users.dat`` optional),
    ``::``-separated, latin-1.

    Item metadata: title, year, genres. User metadata: gender, age (the age-group code), occupation
    (the name for the code, per the ml-1m README), zip_code.
    """
    read = functools.partial(read_delimited, encoding=encoding, on_bad_rows=check_mode(on_bad_rows))
    folder = Path(path)
    ratings_path, movies_path = _need(folder, "ratings.dat", "movies.dat", layout="MovieLens-1M")
    ratings = read(ratings_path, sep="::", fields=("UserID", "MovieID", "Rating", "Timestamp"))
    events = events_from(ratings, "UserID", "MovieID", "Timestamp", "Rating")
    movies = read(movies_path, sep="::", fields=("MovieID", "Title", "Genres"))
    item_meta = split_title_year(pd.Series(strings(movies, "Title")))
    item_meta["genres"] = strings(movies, "Genres")
    item_meta.index = pd.Index(strings(movies, "MovieID"), name="item")
    tables = [ratings, movies]
    user_meta = None
    users_path = folder / "users.dat"
    if users_path.is_file():
        users = read(users_path, sep="::", fields=("UserID", "Gender", "Age", "Occupation", "Zip-code"))
        nums = numbers(users, {"Age": "int", "Occupation": "int"})
        occupation = np.array(ML1M_OCCUPATIONS, dtype=object)
        codes = nums["Occupation"]
        known = (codes >= 0) & (codes < len(occupation))
        user_meta = pd.DataFrame(
            {
                "gender": strings(users, "Gender"),
                "age": nums["Age"],
                "occupation": np.where(known, occupation[np.clip(codes, 0, len(occupation) - 1)], codes.astype(str)),
                "zip_code": strings(users, "Zip-code"),
            },
            index=pd.Index(strings(users, "UserID"), name="user"),
        )
        tables.append(users)
    return finish(name, events, item_meta, user_meta, tables)


def load_movielens_latest(
    path: str | Path,
    *,
    name: str = "movielens-latest-small",
    encoding: str = "utf-8",
    on_bad_rows: str = "error",
) -> Dataset:
    """Load a GroupLens CSV-layout folder (ml-latest-small, ml-latest, ml-20m, ml-25m):
    ``ratings.csv`` and ``movies.csv`` with headers, utf-8, quoted titles.

    Item metadata: title, year, genres (``(no genres listed)`` becomes ``""``).
    """
    mode = check_mode(on_bad_rows)
    folder = Path(path)
    ratings_path, movies_path = _need(folder, "ratings.csv", "movies.csv", layout="MovieLens CSV")
    ratings = read_csv(ratings_path, encoding=encoding, on_bad_rows=mode)
    require_columns(ratings.names, ("userId", "movieId", "rating", "timestamp"), ratings_path)
    events = events_from(ratings, "userId", "movieId", "timestamp", "rating")
    movies = read_csv(movies_path, encoding=encoding, on_bad_rows=mode)
    require_columns(movies.names, ("movieId", "title", "genres"), movies_path)
    item_meta = split_title_year(pd.Series(strings(movies, "title")))
    genres = pd.Series(strings(movies, "genres"))
    item_meta["genres"] = genres.where(genres != "(no genres listed)", "").to_numpy()
    item_meta.index = pd.Index(strings(movies, "movieId"), name="item")
    return finish(name, events, item_meta, None, [ratings, movies])
