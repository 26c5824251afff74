"""Loaders: every layout on tiny files, every bad-input case, and the real datasets."""

from __future__ import annotations

import gzip
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from llmboost.data import DataFormatError, Dataset, DatasetNotFoundError
from llmboost.data.loaders import (
    detect_format,
    load_amazon_p5,
    load_amazon_reviews,
    load_amazon_unisrec,
    load_movielens_1m,
    load_movielens_100k,
    load_movielens_latest,
    load_path,
    load_recbole,
    load_table,
    source_files,
)
from llmboost.data.loaders.movielens import ML100K_GENRES


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def history_ids(ds: Dataset, user: str) -> list[str]:
    """The source item ids of ``user``'s events in time order."""
    return list(ds.items.decode(ds.interactions.history(int(ds.users.encode([user])[0]))))


def meta_of(ds: Dataset, item: str) -> pd.Series:
    return ds.item_meta.iloc[int(ds.items.encode([item])[0])]


def flags(*on: str) -> str:
    return "|".join("1" if g in on else "0" for g in ML100K_GENRES)


# ---------------------------------------------------------------------------------------- fixtures
U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t4\t881250900\n22\t377\t1\t878887116\n"
U_ITEM = (
    f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{flags('Comedy')}\n"
    f"302|L.A. Confidential (1997)|01-Jan-1997||http://x|{flags('Crime', 'Film-Noir', 'Thriller')}\n"
    f"377|Heavyweights (1994)|01-Jan-1994||http://y|{flags('Children', 'Comedy')}\n"
    f"999|Unwatched (1990)|01-Jan-1990||http://z|{flags('Drama')}\n"
)
U_GENRE = "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n"
U_USER = "196|49|M|writer|55105\n186|39|F|executive|00000\n22|25|M|writer|40206\n"


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-100k"
    write(folder / "u.data", U_DATA)
    write(folder / "u.item", U_ITEM, "latin-1")
    write(folder / "u.genre", U_GENRE)
    write(folder / "u.user", U_USER)
    return folder


def recbole_ml(folder: Path) -> Path:
    """The same tiny data as :data:`U_DATA` in RecBole atomic files."""
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + U_DATA
    write(folder / "ml-100k.inter", inter)
    write(
        folder / "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir Thriller\n"
        "377\tHeavyweights\t1994\tComedy\n999\tUnwatched\tunkonwn\tDrama\n",
    )
    write(
        folder / "ml-100k.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" + U_USER.replace("|", "\t"),
    )
    return folder


# ---------------------------------------------------------------------------------------- MovieLens
def test_ml100k_layout(ml100k: Path) -> None:
    ds = load_movielens_100k(ml100k)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (3, 3, 4)
    assert history_ids(ds, "196") == ["302", "242"]  # sorted by time: 881250900 < 881250949
    kolya = meta_of(ds, "242")
    assert (kolya["title"], kolya["year"], kolya["genres"]) == ("Kolya", 1996, "Comedy")
    assert meta_of(ds, "302")["genres"] == "Crime|Film-Noir|Thriller"
    assert ds.user_meta["age"].tolist() == [49, 39, 25]
    assert ds.interactions.frame["rating"].tolist() == [4.0, 3.0, 3.0, 1.0]
    assert any("1 items that have metadata but no interactions" in line for line in ds.log)


def test_ml100k_genre_names_come_from_u_genre(ml100k: Path) -> None:
    renamed = "".join(f"G{i}|{i}\n" for i in range(19))
    write(ml100k / "u.genre", renamed)
    ds = load_movielens_100k(ml100k)
    assert meta_of(ds, "242")["genres"] == f"G{ML100K_GENRES.index('Comedy')}"


def test_ml100k_and_recbole_copies_agree(ml100k: Path, tmp_path: Path) -> None:
    grouplens = load_movielens_100k(ml100k)
    recbole = load_recbole(recbole_ml(tmp_path / "recbole"))
    pd.testing.assert_frame_equal(grouplens.interactions.frame, recbole.interactions.frame)
    assert grouplens.items == recbole.items and grouplens.users == recbole.users
    for column in ("title", "year", "genres"):
        assert grouplens.item_meta[column].tolist() == recbole.item_meta[column].tolist(), column
    assert recbole.user_meta["age"].tolist() == [49, 39, 25]


def test_recbole_year_placeholder_becomes_missing(tmp_path: Path) -> None:
    folder = recbole_ml(tmp_path / "rb")
    write(folder / "ml-100k.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t999\t5.0\n")
    ds = load_recbole(folder / "ml-100k.inter")
    assert pd.isna(meta_of(ds, "999")["year"]) and meta_of(ds, "999")["title"] == "Unwatched"
    assert not ds.has_ratings and ds.interactions.timestamps.tolist() == [5]


def test_recbole_without_timestamp_uses_file_order(tmp_path: Path) -> None:
    write(tmp_path / "x.inter", "user_id:token\titem_id:token\n1\ta\n1\tb\n2\ta\n")
    ds = load_recbole(tmp_path)
    assert ds.interactions.timestamps.tolist() == [0, 1, 2]
    assert any("no timestamp field" in line for line in ds.log)


def test_ml1m_layout_latin1(tmp_path: Path) -> None:
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    write(
        tmp_path / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Misérables, Les (1995)::Drama|Musical\n",
        "latin-1",
    )
    write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    ds = load_movielens_1m(tmp_path)
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (2, 2, 3)
    les = meta_of(ds, "661")
    assert (les["title"], les["year"], les["genres"]) == ("Misérables, Les", 1995, "Drama|Musical")
    assert ds.user_meta["occupation"].tolist() == ["K-12 student", "self-employed"]
    assert ds.user_meta["age"].tolist() == [1, 56]


def test_ml_latest_small_layout_quoted_titles(tmp_path: Path) -> None:
    write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,2.5,964982224\n",
    )
    write(
        tmp_path / "movies.csv",
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n"
        '3,"Grumpier Old Men, The ""Two"" (1995)",(no genres listed)\n',
    )
    ds = load_movielens_latest(tmp_path)
    grumpier = meta_of(ds, "3")
    assert (grumpier["title"], grumpier["year"], grumpier["genres"]) == (
        'Grumpier Old Men, The "Two"',
        1995,
        "",
    )
    assert ds.interactions.frame["rating"].tolist() == [4.5, 4.0, 2.5]  # user 1 sorted by time


# ---------------------------------------------------------------------------------------- Amazon
def test_p5_layout_positions_are_timestamps(tmp_path: Path) -> None:
    write(tmp_path / "user_sequence.txt", "A1 B001 B002 B003\n  A2  B002\tB004 \r\n")
    write(tmp_path / "item_generative_indexing_phase_0.txt", "B001 red nail polish\nB002\nB003 soap\nB004 x\n")
    ds = load_amazon_p5(tmp_path)
    assert history_ids(ds, "A1") == ["B001", "B002", "B003"] and history_ids(ds, "A2") == ["B002", "B004"]
    assert ds.interactions.frame.query("user == 0")["timestamp"].tolist() == [0, 1, 2]
    assert meta_of(ds, "B001")["title"] == "red nail polish" and meta_of(ds, "B002")["title"] == ""
    assert ds.name == tmp_path.name


def write_unisrec(folder: Path, sequences: dict[str, list[str]], max_len: int) -> None:
    """UniSRec files for ``sequences`` (user -> ASINs), histories truncated to ``max_len``."""
    asins = sorted({a for seq in sequences.values() for a in seq})
    item_index = {a: str(i) for i, a in enumerate(asins)}
    user_index = {u: str(i) for i, u in enumerate(sequences)}
    write(folder / "Toy.item2index", "".join(f"{a}\t{i}\n" for a, i in item_index.items()))
    write(folder / "Toy.user2index", "".join(f"{u}\t{i}\n" for u, i in user_index.items()))
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    rows: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for user, seq in sequences.items():
        idx = [item_index[a] for a in seq]
        n = len(idx)
        for k in range(n - 3, 0, -1):  # train: augmented prefixes, longest first (as UniSRec writes them)
            rows["train"].append(f"{user_index[user]}\t{' '.join(idx[max(0, k - max_len) : k])}\t{idx[k]}")
        for split, k in (("valid", n - 2), ("test", n - 1)):
            rows[split].append(f"{user_index[user]}\t{' '.join(idx[max(0, k - max_len) : k])}\t{idx[k]}")
    for split, lines in rows.items():
        write(folder / f"Toy.{split}.inter", header + "\n".join(lines) + "\n")
    write(
        folder / "Toy.text",
        "item_id:token\ttext:token_seq\n" + "".join(f"{a}\tTitle {a}. Brand.\n" for a in asins),
    )


def test_unisrec_rebuilds_truncated_sequences(tmp_path: Path) -> None:
    sequences = {"U1": ["a", "b", "c", "d", "e", "f", "g", "a"], "U2": ["c", "d", "e", "f"]}
    write_unisrec(tmp_path, sequences, max_len=3)
    ds = load_amazon_unisrec(tmp_path)
    assert history_ids(ds, "U1") == sequences["U1"]  # longer than max_len + 1: needs chaining
    assert history_ids(ds, "U2") == sequences["U2"]
    assert len(ds.interactions) == 12 and ds.name == "Toy"
    assert meta_of(ds, "a")["title"] == "Title a. Brand."
    assert not any("do not chain" in line for line in ds.log)


def test_unisrec_rows_that_do_not_chain_fall_back_to_the_longest(tmp_path: Path) -> None:
    write_unisrec(tmp_path, {"U1": ["a", "b", "c", "d", "e", "f"]}, max_len=2)
    train = (tmp_path / "Toy.train.inter").read_text().splitlines()
    write(tmp_path / "Toy.train.inter", "\n".join(train[:2] + train[3:]) + "\n")  # drop one middle row
    ds = load_amazon_unisrec(tmp_path)
    assert history_ids(ds, "U1") == ["d", "e", "f"]  # the test row: history (d, e) + target f
    assert any("1 users' rows do not chain" in line for line in ds.log)


def review(user: str, asin: str, rating: float, time: int, **extra: object) -> dict[str, object]:
    return {"reviewerID": user, "asin": asin, "overall": rating, "unixReviewTime": time, **extra}


def write_lines(path: Path, lines: list[str], gz: bool) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_amazon_2014_raw_gzip(tmp_path: Path) -> None:
    reviews = [
        review("U1", "B1", 5.0, 1400000000, reviewText="great"),
        review("U1", "B2", 3.0, 1300000000),
        review("U2", "B1", 4.0, 1350000000, helpful=[0, 1]),
    ]
    write_lines(tmp_path / "reviews_Beauty_5.json.gz", [json.dumps(r) for r in reviews], gz=True)
    meta = [
        repr(
            {
                "asin": "B1",
                "title": "Rose & Lily Soap",
                "imUrl": "http://img/b1.jpg",
                "brand": "Acme",
                "categories": [["Beauty", "Bath"], ["Beauty", "Skin"]],
                "salesRank": {"Beauty": 3},
            }
        ),
        repr({"asin": "B2", "description": "No title here", "related": {"also_bought": ["B1"]}}),
        repr({"asin": "B9", "title": "never reviewed"}),
    ]
    write_lines(tmp_path / "meta_Beauty.json.gz", meta, gz=True)
    ds = load_path(tmp_path)
    assert ds.name == "amazon-beauty"
    assert history_ids(ds, "U1") == ["B2", "B1"]
    b1 = meta_of(ds, "B1")
    assert (b1["title"], b1["brand"], b1["image_path"]) == ("Rose & Lily Soap", "Acme", "http://img/b1.jpg")
    assert b1["categories"] == "Beauty|Bath|Skin"
    assert meta_of(ds, "B2")["title"] == "" and meta_of(ds, "B2")["description"] == "No title here"
    assert ds.interactions.frame["rating"].tolist() == [3.0, 5.0, 4.0]


def test_amazon_2018_raw_plain(tmp_path: Path) -> None:
    reviews = [
        review("U1", "S1", 5.0, 1500000000, style={"Size:": "L"}, vote="2"),
        review("U2", "S1", 1.0, 1500000001, image=["x"]),
        review("U2", "S2", 2.0, 1500000002),
    ]
    write_lines(tmp_path / "Industrial_and_Scientific_5.json", [json.dumps(r) for r in reviews], gz=False)
    meta = [
        {
            "asin": "S1",
            "title": "Gorilla Glue &amp; Tape",
            "brand": "Gorilla",
            "category": ["Industrial", "Glue"],
            "description": ["Strong.", "Waterproof."],
            "imageURL": ["http://s/1.jpg"],
            "imageURLHighRes": ["http://l/1.jpg"],
        },
        {"asin": "S2", "title": "Sandpaper", "imageURL": []},
    ]
    write_lines(tmp_path / "meta_Industrial_and_Scientific.json", [json.dumps(m) for m in meta], gz=False)
    ds = load_amazon_reviews(tmp_path / "Industrial_and_Scientific_5.json")
    assert ds.name == "amazon-industrial-and-scientific"
    s1 = meta_of(ds, "S1")
    assert (s1["title"], s1["categories"], s1["description"]) == (
        "Gorilla Glue & Tape",
        "Industrial|Glue",
        "Strong. Waterproof.",
    )
    assert s1["image_path"] == "http://l/1.jpg" and meta_of(ds, "S2")["image_path"] == ""


def test_amazon_duplicate_reviews_are_dropped_and_logged(tmp_path: Path) -> None:
    r = json.dumps(review("U1", "B1", 5.0, 1))
    write_lines(tmp_path / "reviews_X_5.json", [r, r, json.dumps(review("U1", "B2", 4.0, 2))], gz=False)
    ds = load_amazon_reviews(tmp_path)
    assert len(ds.interactions) == 2
    assert any("dropped 1 duplicate events" in line for line in ds.log)


# ---------------------------------------------------------------------------------------- tables
def test_csv_table_with_column_mapping_and_item_meta(tmp_path: Path) -> None:
    write(tmp_path / "events.csv", "uid,iid,ts,stars\nu1,i1,10,5\nu1,i2,5,3\nu2,i1,7,4\n")
    write(tmp_path / "items.csv", 'iid,name,kind\ni1,"Widget, large",tool\ni2,Gadget,toy\ni3,Unused,x\n')
    ds = load_table(
        tmp_path / "events.csv",
        user="uid",
        item="iid",
        timestamp="ts",
        rating="stars",
        item_meta_path=tmp_path / "items.csv",
        item_columns={"title": "name"},
    )
    assert history_ids(ds, "u1") == ["i2", "i1"]
    assert meta_of(ds, "i1")["title"] == "Widget, large" and list(ds.item_meta.columns) == ["title"]
    assert ds.has_ratings and ds.name == "events"


def test_tsv_table_titles_from_the_events_file(tmp_path: Path) -> None:
    write(tmp_path / "log.tsv", "user\titem\ttitle\na\tx\tThe X\nb\tx\tThe X\nb\ty\tWhy\n")
    ds = load_table(tmp_path / "log.tsv", timestamp=None, item_columns={"title": "title"})
    assert ds.interactions.timestamps.tolist() == [0, 1, 2]
    assert meta_of(ds, "y")["title"] == "Why"


def test_parquet_table_with_datetime_timestamps(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "user": [1, 1, 2],
            "item": ["a", "b", "a"],
            "when": pd.to_datetime(["2020-01-01", "2019-01-01", "2021-01-01"]),
            "score": [1.0, 2.0, 3.0],
        }
    )
    frame.to_parquet(tmp_path / "ev.parquet")
    ds = load_path(tmp_path / "ev.parquet", timestamp="when", rating="score")
    assert history_ids(ds, "1") == ["b", "a"]
    assert ds.interactions.timestamps.tolist()[:2] == [1546300800, 1577836800]


def test_parquet_non_numeric_timestamp_names_the_row(tmp_path: Path) -> None:
    pd.DataFrame({"user": ["1", "2"], "item": ["a", "b"], "timestamp": ["5", "soon"]}).to_parquet(tmp_path / "e.pq")
    with pytest.raises(DataFormatError) as err:
        load_table(tmp_path / "e.pq")
    assert (err.value.line, err.value.field) == (2, "timestamp")


# ---------------------------------------------------------------------------------------- detection
def test_detect_format_by_file_names(ml100k: Path, tmp_path: Path) -> None:
    write_unisrec(tmp_path / "uni", {"U": ["a", "b", "c", "d"]}, max_len=5)
    write(tmp_path / "p5" / "user_sequence.txt", "A x y\n")
    write(tmp_path / "raw" / "reviews_X_5.json", json.dumps(review("u", "i", 1.0, 1)) + "\n")
    write(tmp_path / "t.csv", "user,item,timestamp\n")
    assert detect_format(ml100k) == "movielens-100k"
    assert detect_format(ml100k / "u.data") == "movielens-100k"
    assert detect_format(recbole_ml(tmp_path / "rb")) == "recbole"
    assert detect_format(tmp_path / "uni") == "unisrec"
    assert detect_format(tmp_path / "uni" / "Toy.test.inter") == "unisrec"
    assert detect_format(tmp_path / "p5") == "p5"
    assert detect_format(tmp_path / "raw") == "amazon"
    assert detect_format(tmp_path / "t.csv") == "table"
    assert {p.name for p in source_files(ml100k)} == {"u.data", "u.item", "u.genre", "u.user"}


def test_unknown_folder_lists_what_it_found(tmp_path: Path) -> None:
    write(tmp_path / "notes.md", "hi")
    with pytest.raises(DatasetNotFoundError, match=r"notes\.md.*expected one of.*u\.data"):
        load_path(tmp_path)


def test_format_option_and_saved_and_zip(ml100k: Path, tmp_path: Path) -> None:
    ds = load_path(ml100k / "u.data", format="movielens-100k")
    saved = load_path(ds.save(tmp_path / "saved"))
    assert saved.fingerprint() == ds.fingerprint()
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in ml100k.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    assert load_path(archive).fingerprint() == ds.fingerprint()
    with pytest.raises(ValueError, match="unknown format"):
        load_path(ml100k, format="nope")


def test_missing_required_file(tmp_path: Path) -> None:
    write(tmp_path / "u.data", U_DATA)
    with pytest.raises(DatasetNotFoundError, match=r"missing u\.item"):
        load_movielens_100k(tmp_path)


# ---------------------------------------------------------------------------------------- bad input
def bad_ml100k(ml100k: Path, data: str) -> DataFormatError:
    write(ml100k / "u.data", data)
    with pytest.raises(DataFormatError) as err:
        load_movielens_100k(ml100k)
    return err.value


def test_too_few_fields_names_line_and_missing_field(ml100k: Path) -> None:
    err = bad_ml100k(ml100k, "1\t2\t3\t4\n1\t3\t4\t5\n1\t4\t5\n")
    assert (err.path, err.line, err.field) == (ml100k / "u.data", 3, "timestamp")
    assert str(err).startswith(f"{ml100k / 'u.data'}:3: field 'timestamp': expected 4 fields")


def test_too_many_fields(ml100k: Path) -> None:
    err = bad_ml100k(ml100k, "1\t2\t3\t4\t5\n")
    assert (err.line, err.field) == (1, None) and "found 5" in err.reason


def test_non_numeric_rating_and_timestamp(ml100k: Path) -> None:
    err = bad_ml100k(ml100k, "1\t2\t3\t4\n\n1\t3\tfive\t5\n")  # the blank line still counts
    assert (err.line, err.field) == (3, "rating") and "'five'" in err.reason
    err = bad_ml100k(ml100k, "1\t2\t3\t4\r\n1\t3\t4\t\r\n")
    assert (err.line, err.field) == (2, "timestamp") and "empty value" in err.reason
    err = bad_ml100k(ml100k, "1\t2\t3\t4\n1\t3\tinf\t5\n")
    assert (err.line, err.field) == (2, "rating")
    err = bad_ml100k(ml100k, "1\t2\t3\t1e30\n")
    assert (err.line, err.field) == (1, "timestamp")


def test_fractional_timestamps_are_truncated(ml100k: Path) -> None:
    write(ml100k / "u.data", "196\t242\t3\t881250949.7\n")
    assert load_movielens_100k(ml100k).interactions.timestamps.tolist() == [881250949]


def test_bad_genre_flag(ml100k: Path) -> None:
    lines = U_ITEM.splitlines()
    lines[1] = lines[1][:-1] + "2"
    write(ml100k / "u.item", "\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        load_movielens_100k(ml100k)
    assert (err.value.line, err.value.field) == (2, "Western")


def test_csv_line_numbers_count_header_and_quoted_newlines(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,5\n\n1,2,4.0,x\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\n1,"Two\nLines (1999)",Drama\n2,B,C\n')
    with pytest.raises(DataFormatError) as err:
        load_movielens_latest(tmp_path)
    assert (err.value.line, err.value.field) == (4, "timestamp")
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,5\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\n1,"Two\nLines (1999)",Drama\n2,B\n')
    with pytest.raises(DataFormatError) as err:
        load_movielens_latest(tmp_path)
    assert (err.value.line, err.value.field) == (4, "genres")


def test_misnamed_column_lists_found_and_expected(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,itemId,rating,timestamp\n1,1,4.0,5\n")
    write(tmp_path / "movies.csv", "movieId,title,genres\n1,A,B\n")
    with pytest.raises(DataFormatError) as err:
        load_movielens_latest(tmp_path)
    assert (err.value.line, err.value.field) == (1, "movieId")
    assert "found columns ['userId', 'itemId', 'rating', 'timestamp']" in err.value.reason
    assert "expected ['userId', 'movieId', 'rating', 'timestamp']" in err.value.reason


def test_table_missing_column(tmp_path: Path) -> None:
    write(tmp_path / "e.csv", "u,i\n1,2\n")
    with pytest.raises(DataFormatError, match=r"missing column 'ts'; found columns \['u', 'i'\]"):
        load_table(tmp_path / "e.csv", user="u", item="i", timestamp="ts")


def test_recbole_untyped_header(tmp_path: Path) -> None:
    write(tmp_path / "d.inter", "user_id:token\titem_id\n1\t2\n")
    with pytest.raises(DataFormatError) as err:
        load_recbole(tmp_path)
    assert (err.value.line, err.value.field) == (1, "item_id")


def test_recbole_misnamed_column(tmp_path: Path) -> None:
    write(tmp_path / "d.inter", "uid:token\titem_id:token\n1\t2\n")
    with pytest.raises(DataFormatError, match=r"missing column 'user_id'; found columns \['uid', 'item_id'\]"):
        load_recbole(tmp_path)


def test_wrong_encoding_names_line_and_suggests_one(tmp_path: Path) -> None:
    write(tmp_path / "ratings.dat", "1::1::5::978300760\n")
    write(tmp_path / "movies.dat", "1::Toy Story (1995)::Comedy\n2::Misérables, Les (1995)::Drama\n", "latin-1")
    with pytest.raises(DataFormatError) as err:
        load_movielens_1m(tmp_path, encoding="utf-8")
    assert err.value.line == 2 and err.value.path == tmp_path / "movies.dat"
    assert "pass encoding='latin-1'" in err.value.reason
    write(
        tmp_path / "movies.dat",
        "1::Toy Story (1995)::Comedy\n\n2::Rock \u2019n\u2019 Roll (1995)::Drama\n",
        "cp1252",
    )
    with pytest.raises(DataFormatError, match="cp1252") as err:
        load_movielens_1m(tmp_path, encoding="utf-8")
    assert err.value.line == 3


def test_empty_files(ml100k: Path, tmp_path: Path) -> None:
    err = bad_ml100k(ml100k, "")
    assert "empty file" in err.reason and err.path == ml100k / "u.data"
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n")
    write(tmp_path / "movies.csv", "movieId,title,genres\n1,A,B\n")
    with pytest.raises(DataFormatError, match="header but no data rows"):
        load_movielens_latest(tmp_path)
    write(tmp_path / "x.inter", "\n\n")
    with pytest.raises(DataFormatError, match="empty file"):
        load_recbole(tmp_path / "x.inter")


def test_json_reviews_bad_lines(tmp_path: Path) -> None:
    good = json.dumps(review("U1", "B1", 5.0, 1))
    cases = [
        ([good, '{"reviewerID": "U2", "asin": "B1"', good], 2, None, "not a valid JSON object"),
        (
            [
                good,
                good.replace("U1", "U3"),
                json.dumps({"reviewerID": "U2", "asin": "B1", "unixReviewTime": 3}),
            ],
            3,
            "overall",
            "missing field",
        ),
        ([good, "", json.dumps(review("U2", "B1", "abc", 3))], 3, "overall", "'abc'"),  # type: ignore[arg-type]
        ([json.dumps([1, 2])], 1, None, "expected an object"),
    ]
    for lines, line, field, text in cases:
        path = write_lines(tmp_path / "reviews_X_5.json.gz", lines, gz=True)
        with pytest.raises(DataFormatError) as err:
            load_amazon_reviews(path)
        assert (err.value.line, err.value.field) == (line, field) and text in err.value.reason


def test_amazon_meta_bad_literal(tmp_path: Path) -> None:
    write_lines(tmp_path / "reviews_X_5.json", [json.dumps(review("U1", "B1", 5.0, 1))], gz=False)
    write_lines(tmp_path / "meta_X.json", [repr({"asin": "B0"}), "{'asin': 'B1', 'title': 'oops'"], gz=False)
    with pytest.raises(DataFormatError) as err:
        load_amazon_reviews(tmp_path)
    assert err.value.line == 2 and err.value.path == tmp_path / "meta_X.json"


def test_p5_bad_rows(tmp_path: Path) -> None:
    write(tmp_path / "user_sequence.txt", "A1 B1 B2\nA2\n")
    with pytest.raises(DataFormatError) as err:
        load_amazon_p5(tmp_path)
    assert err.value.line == 2 and "at least one item" in err.value.reason
    write(tmp_path / "user_sequence.txt", "A1 B1 B2\nA2 B1\nA1 B3\n")
    with pytest.raises(DataFormatError) as err:
        load_amazon_p5(tmp_path)
    assert (err.value.line, err.value.field) == (3, "user") and "line 1" in err.value.reason


def test_unisrec_unknown_index(tmp_path: Path) -> None:
    write_unisrec(tmp_path, {"U1": ["a", "b", "c", "d"]}, max_len=5)
    valid = (tmp_path / "Toy.valid.inter").read_text().replace("\t0 1\t", "\t0 7\t")
    write(tmp_path / "Toy.valid.inter", valid)
    with pytest.raises(DataFormatError) as err:
        load_amazon_unisrec(tmp_path)
    assert (err.value.line, err.value.field) == (2, "item_id_list") and "'7'" in err.value.reason


def test_skip_mode_logs_count_and_first_line(ml100k: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(ml100k / "u.data", "196\t242\t3\t1\n196\t302\tx\t2\n186\t302\n22\t377\t1\t3\n")
    with caplog.at_level(logging.WARNING, logger="llmboost.data.loaders"):
        ds = load_movielens_100k(ml100k, on_bad_rows="skip")
    assert len(ds.interactions) == 2
    assert ds.log[0] == (
        "u.data: skipped 2 bad rows (first: line 2: field 'rating': not a number: 'x' (expected a number))"
    )
    assert "skipped 2 bad rows" in caplog.text


def test_skip_mode_csv_and_json(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,5\n1,2\n1,3,4,5,6\n2,1,3,7\n")
    write(tmp_path / "movies.csv", "movieId,title,genres\n1,A (2000),B\n")
    ds = load_movielens_latest(tmp_path, on_bad_rows="skip")
    assert len(ds.interactions) == 2 and "skipped 2 bad rows (first: line 3" in ds.log[0]
    lines = [json.dumps(review("U1", "B1", 5.0, 1)), "not json", json.dumps(review("U2", "B1", 4.0, 2))]
    write_lines(tmp_path / "reviews_X_5.json", lines, gz=False)
    ds = load_amazon_reviews(tmp_path / "reviews_X_5.json", on_bad_rows="skip")
    assert len(ds.interactions) == 2 and "skipped 1 bad rows (first: line 2" in ds.log[0]


def test_on_bad_rows_is_validated(ml100k: Path) -> None:
    with pytest.raises(ValueError, match="on_bad_rows"):
        load_movielens_100k(ml100k, on_bad_rows="ignore")


def test_corrupt_gzip(tmp_path: Path) -> None:
    (tmp_path / "reviews_X_5.json.gz").write_bytes(gzip.compress(b'{"a": 1}\n')[:-6])
    with pytest.raises(DataFormatError, match="corrupt gzip"):
        load_amazon_reviews(tmp_path)


# ---------------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_movielens_100k(shared_datasets: Path) -> None:
    ds = load_path(shared_datasets / "movielens-100k")
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (943, 1682, 100_000)
    assert ds.has_ratings and set(np.unique(ds.interactions.frame["rating"])) == {1.0, 2.0, 3.0, 4.0, 5.0}
    toy = meta_of(ds, "1")
    assert (toy["title"], toy["year"], toy["genres"]) == ("Toy Story", 1995, "Animation|Children's|Comedy")
    assert ds.user_meta.columns.tolist() == ["age", "gender", "occupation", "zip_code"]
    assert ds.log == []


@pytest.mark.realdata
def test_real_amazon_beauty(shared_datasets: Path) -> None:
    ds = load_path(shared_datasets / "amazon-beauty")
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (22_363, 12_101, 198_502)
    assert (ds.item_meta["title"] != "").sum() == 12_100  # one item line carries no title words
    counts = ds.interactions.user_counts()
    assert counts.min() >= 5  # 5-core


@pytest.mark.realdata
def test_real_amazon_scientific(shared_datasets: Path) -> None:
    folder = shared_datasets / "amazon-scientific"
    ds = load_path(folder)
    item_map = pd.read_csv(folder / "Scientific.item2index", sep="\t", header=None, dtype=str)
    user_map = pd.read_csv(folder / "Scientific.user2index", sep="\t", header=None, dtype=str)
    train_rows = sum(1 for _ in (folder / "Scientific.train.inter").open()) - 1
    assert ds.n_users == len(user_map) == 8_442
    assert ds.n_items == len(item_map) == 4_385
    assert set(ds.items.ids) == set(item_map[0]) and set(ds.users.ids) == set(user_map[0])
    # every user: one first item + one target per train row + valid + test targets
    assert len(ds.interactions) == train_rows + 3 * ds.n_users == 59_427
    assert not any("do not chain" in line for line in ds.log)
    assert (ds.item_meta["title"] != "").all()
    # the test file's history + target is the tail of each rebuilt sequence
    test = pd.read_csv(folder / "Scientific.test.inter", sep="\t", dtype=str)
    row = test.iloc[0]
    asins = dict(zip(item_map[1], item_map[0], strict=True))
    tail = [asins[i] for i in row["item_id_list:token_seq"].split()] + [asins[row["item_id:token"]]]
    user = dict(zip(user_map[1], user_map[0], strict=True))[row["user_id:token"]]
    assert history_ids(ds, user)[-len(tail) :] == tail


# ---------------------------------------------------------------------------------------- own tables
@pytest.mark.parametrize(
    ("header", "row"),
    [
        ("user_id,item_id,rating,timestamp", "u{u},i{i},4,{t}"),
        ("userId,movieId,rating,timestamp", "u{u},i{i},4,{t}"),
        ("reviewerID,asin,overall,unixReviewTime", "u{u},i{i},4,{t}"),
        ("User ID,Item-ID,Stars,Time", "u{u},i{i},4,{t}"),
    ],
)
def test_table_columns_recognised_by_common_names(tmp_path: Path, header: str, row: str) -> None:
    lines = [row.format(u=u, i=i, t=10 * u + i) for u in range(3) for i in range(4)]
    write(tmp_path / "events.csv", header + "\n" + "\n".join(reversed(lines)) + "\n")
    ds = load_path(tmp_path / "events.csv")
    assert (ds.n_users, ds.n_items, len(ds.interactions)) == (3, 4, 12)
    assert history_ids(ds, "u1") == ["i0", "i1", "i2", "i3"]  # ordered by the recognised timestamp
    assert ds.has_ratings


def test_table_named_columns_override_recognition_and_none_disables(tmp_path: Path) -> None:
    write(tmp_path / "e.csv", "user_id,customer,sku,rating,when\nx,a,p,5,3\nx,a,q,1,2\nx,b,p,2,1\n")
    ds = load_table(tmp_path / "e.csv", user="customer", item="sku", timestamp="when", rating=None)
    assert sorted(ds.users.ids) == ["a", "b"] and not ds.has_ratings
    assert history_ids(ds, "a") == ["q", "p"]
    positions = load_table(tmp_path / "e.csv", user="customer", item="sku", timestamp=None)
    assert history_ids(positions, "a") == ["p", "q"]
    assert any("no timestamp column" in line for line in positions.log)


def test_table_without_a_recognisable_user_column_says_how_to_name_it(tmp_path: Path) -> None:
    write(tmp_path / "e.csv", "who,item_id\na,1\n")
    with pytest.raises(DataFormatError) as err:
        load_table(tmp_path / "e.csv")
    assert (err.value.line, err.value.field) == (1, "user")
    assert "found columns ['who', 'item_id']" in str(err.value) and "--columns user=COLUMN" in str(err.value)


def test_column_names_for_a_layout_that_is_not_a_table(tmp_path: Path) -> None:
    write(tmp_path / "p5" / "user_sequence.txt", "A x y\n")
    with pytest.raises(ValueError, match="apply to CSV/TSV/Parquet tables"):
        load_path(tmp_path / "p5", user="uid")


def test_column_options_parsing() -> None:
    from llmboost.data.loaders import column_options

    assert column_options("user=customer, item=sku,timestamp=,rating=none") == {
        "user": "customer", "item": "sku", "timestamp": None, "rating": None,
    }  # fmt: skip
    assert column_options({"item": "asin"}) == {"item": "asin"}
    with pytest.raises(ValueError, match="unknown role 'usr'"):
        column_options("usr=x")
    with pytest.raises(ValueError, match="ROLE=COLUMN"):
        column_options("user")
    with pytest.raises(ValueError, match="user column cannot be none"):
        column_options({"user": None})


# ---------------------------------------------------------------------------------------- ISO 8601 times
def test_iso_8601_timestamps_in_csv(tmp_path: Path) -> None:
    write(
        tmp_path / "e.csv",
        "user_id,item_id,date\n"
        "a,x,2020-01-02\n"
        "a,y,2020-01-01T12:00:00Z\n"
        "a,z,2020-01-01 13:00:00+02:00\n"
        "b,x,1577836800\n"
        "b,y,2020-01-01T00:00:00.750\n",
    )
    ds = load_path(tmp_path / "e.csv")
    assert history_ids(ds, "a") == ["z", "y", "x"]
    ts = ds.interactions.timestamps.tolist()  # rows: user a's events in time order, then user b's
    assert ts[:3] == [1577876400, 1577880000, 1577923200]  # +02:00 honoured; no offset: UTC
    assert ts[3:] == [1577836800, 1577836800]  # a number stays a number; fractions of a second truncated


def test_bad_iso_timestamp_names_file_line_field(tmp_path: Path) -> None:
    write(tmp_path / "e.csv", "user_id,item_id,timestamp\na,x,2020-01-02\na,y,2020-13-45\n")
    with pytest.raises(DataFormatError) as err:
        load_path(tmp_path / "e.csv")
    assert (err.value.line, err.value.field) == (3, "timestamp")
    assert "not a timestamp: '2020-13-45'" in str(err.value) and "ISO 8601" in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "e.csv") + ":3:")


def test_iso_timestamps_as_parquet_strings_and_skip_mode(tmp_path: Path) -> None:
    pd.DataFrame(
        {"user": ["1", "1", "2"], "item": ["a", "b", "a"], "time": ["2021-05-01", "2021-04-01T08:00", "never"]}
    ).to_parquet(tmp_path / "e.parquet")
    with pytest.raises(DataFormatError) as err:
        load_path(tmp_path / "e.parquet")
    assert (err.value.line, err.value.field) == (3, "time")
    ds = load_path(tmp_path / "e.parquet", on_bad_rows="skip")
    assert history_ids(ds, "1") == ["b", "a"] and len(ds.interactions) == 2
    assert any("skipped 1 bad rows" in line for line in ds.log)


def test_table_public_api_keeps_rows_and_lines_aligned(tmp_path: Path) -> None:
    from llmboost.data.loaders._parse import read_csv

    table = read_csv(write(tmp_path / "t.csv", "a,b\n1,x\n\n2,y\n3,z\n"), on_bad_rows="skip")
    assert table.names == ["a", "b"] and "a" in table and len(table) == 3
    with pytest.raises(TypeError):
        table.columns["c"] = table["a"]  # type: ignore[index]
    with pytest.raises(ValueError, match="2 values for 3 rows"):
        table.add_column("c", table["a"].slice(0, 2))
    table.add_column("c", table["b"])
    table.rename({"b": "bee"})
    assert table.names == ["a", "bee"] and "bee" in table.columns
    extra = pa.array([10, 20, 30])
    (kept,) = table.reject(np.array([False, True, False]), lambda row: ("a", "bad"), extra)
    assert kept.to_pylist() == [10, 30] and table["a"].to_pylist() == ["1", "3"]
    assert table.lines().tolist() == [2, 5]
    assert table.notes == ["t.csv: skipped 1 bad rows (first: line 4: field 'a': bad)"]
