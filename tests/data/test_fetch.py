"""load_dataset's chain: explicit path, cache, download (never the real network here), recbole copy."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import sys
import urllib.error
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmboost.data import Dataset, DatasetNotFoundError, fetch, load_dataset, loaders

U_DATA = "1\t10\t5\t100\n1\t20\t3\t200\n2\t10\t4\t150\n"
U_ITEM = "".join(f"{i}|Movie {i} (1999)|01-Jan-1999||http://x|" + "|".join(["0"] * 18 + ["1"]) + "\n" for i in (10, 20))


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never touch the user's cache or the network."""
    monkeypatch.setenv("LLMBOOST_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.delenv("LLMBOOST_OFFLINE", raising=False)
    monkeypatch.setattr(fetch, "_urlopen", no_network())


def no_network(calls: list[str] | None = None) -> Callable[..., Any]:
    def urlopen(url: str, timeout: float) -> Any:
        assert timeout <= 30, "downloads must use a short timeout"
        if calls is not None:
            calls.append(url)
        raise urllib.error.URLError("network is closed in tests")

    return urlopen


def ml100k_folder(root: Path, data: str = U_DATA) -> Path:
    folder = root / "ml-100k"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(data)
    (folder / "u.item").write_text(U_ITEM)
    (folder / "u.user").write_text("1|20|F|writer|1\n2|30|M|other|2\n")
    (folder / "u.genre").write_text("".join(f"g{i}|{i}\n" for i in range(19)))
    return folder


def ml100k_zip(root: Path) -> bytes:
    folder = ml100k_folder(root / "zip-src")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"ml-100k/{f.name}")
    return buffer.getvalue()


def serve(payload: bytes, calls: list[str]) -> Callable[..., Any]:
    def urlopen(url: str, timeout: float) -> io.BytesIO:
        calls.append(url)
        return io.BytesIO(payload)

    return urlopen


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every real parse (calls of loaders.load_path)."""
    parsed: list[Path] = []
    real = loaders.load_path

    def counting(path: Path, **kwargs: Any) -> Dataset:
        parsed.append(Path(path))
        return real(path, **kwargs)

    monkeypatch.setattr(loaders, "load_path", counting)
    return parsed


# ---------------------------------------------------------------------------------- explicit path + cache
def test_explicit_path_is_parsed_once_then_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    parsed = count_parses(monkeypatch)
    folder = ml100k_folder(tmp_path / "src")
    first = load_dataset(folder, cache_dir=tmp_path / "cache")
    second = load_dataset(folder, cache_dir=tmp_path / "cache")
    assert parsed == [folder]
    assert second.fingerprint() == first.fingerprint() and second.log == first.log
    assert second.item_meta["title"].tolist() == ["Movie 10", "Movie 20"]
    assert len(list((tmp_path / "cache" / "parsed").glob("*/dataset.json"))) == 1


def test_default_cache_dir_comes_from_the_environment(tmp_path: Path) -> None:
    load_dataset(ml100k_folder(tmp_path / "src"))
    assert fetch.default_cache_dir() == tmp_path / "default-cache"
    assert list((tmp_path / "default-cache" / "parsed").glob("*/dataset.json"))


def test_changed_source_is_parsed_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    parsed = count_parses(monkeypatch)
    folder = ml100k_folder(tmp_path / "src")
    assert len(load_dataset(folder, cache_dir=tmp_path / "c").interactions) == 3
    (folder / "u.data").write_text(U_DATA + "2\t20\t1\t300\n")
    assert len(load_dataset(folder, cache_dir=tmp_path / "c").interactions) == 4
    assert len(parsed) == 2


def test_different_options_are_cached_apart(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    parsed = count_parses(monkeypatch)
    folder = ml100k_folder(tmp_path / "src")
    assert load_dataset(folder, cache_dir=tmp_path / "c", name="a").name == "a"
    assert load_dataset(folder, cache_dir=tmp_path / "c", name="b").name == "b"
    assert len(parsed) == 2


def test_cache_false_never_writes(tmp_path: Path) -> None:
    load_dataset(ml100k_folder(tmp_path / "src"), cache_dir=tmp_path / "c", cache=False)
    assert not (tmp_path / "c").exists()


def test_corrupt_cache_entry_is_parsed_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    parsed = count_parses(monkeypatch)
    folder = ml100k_folder(tmp_path / "src")
    ds = load_dataset(folder, cache_dir=tmp_path / "c")
    (entry,) = (tmp_path / "c" / "parsed").glob("*/dataset.json")
    (entry.parent / "interactions.parquet").write_bytes(b"garbage")
    assert load_dataset(folder, cache_dir=tmp_path / "c").fingerprint() == ds.fingerprint()
    assert len(parsed) == 2


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="not a built-in dataset"):
        load_dataset("no-such-dataset", cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------- download
def test_download_failure_falls_back_to_the_recbole_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if fetch.recbole_copy() is None:
        pytest.skip("the recbole wheel is not installed")
    calls: list[str] = []
    monkeypatch.setattr(fetch, "_urlopen", no_network(calls))
    ds = load_dataset("movielens-100k", cache_dir=tmp_path)
    assert calls == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"]
    assert (ds.name, ds.n_users, ds.n_items, len(ds.interactions)) == ("movielens-100k", 943, 1682, 100_000)


def test_recbole_copy_is_found_without_importing_recbole() -> None:
    before = "recbole" in sys.modules
    copy = fetch.recbole_copy()
    if copy is None:
        pytest.skip("the recbole wheel is not installed")
    assert (copy / "ml-100k.inter").is_file() and copy.name == "ml-100k"
    assert ("recbole" in sys.modules) == before


def test_cache_is_used_before_the_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if fetch.recbole_copy() is None:
        pytest.skip("the recbole wheel is not installed")
    load_dataset("ml-100k", cache_dir=tmp_path)
    calls: list[str] = []
    monkeypatch.setattr(fetch, "_urlopen", no_network(calls))
    parsed = count_parses(monkeypatch)
    ds = load_dataset("ml-100k", cache_dir=tmp_path)
    assert calls == [] and parsed == []
    assert len(ds.interactions) == 100_000


def test_no_network_and_no_copy_says_what_to_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fetch, "recbole_copy", lambda subfolder="ml-100k": None)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("movielens-100k", cache_dir=tmp_path)
    message = str(err.value)
    target = tmp_path / "sources" / "movielens-100k"
    assert "could not download https://files.grouplens.org/datasets/movielens/ml-100k.zip" in message
    assert f"Download https://files.grouplens.org/datasets/movielens/ml-100k.zip and unpack it into {target}" in message
    assert str(target / "ml-100k" / "u.data") in message
    assert "load_dataset('/path/to/ml-100k')" in message and "pip install --no-deps recbole" in message


def test_no_url_dataset_says_where_to_put_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("amazon-beauty", cache_dir=tmp_path)
    assert "has no official download" in str(err.value) and "user_sequence.txt" in str(err.value)
    assert str(tmp_path / "sources" / "amazon-beauty") in str(err.value)


def test_hand_unpacked_copy_in_the_cache_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[str] = []
    monkeypatch.setattr(fetch, "_urlopen", no_network(calls))
    folder = tmp_path / "sources" / "amazon-beauty"
    folder.mkdir(parents=True)
    (folder / "user_sequence.txt").write_text("A x y\n")
    (folder / "item_generative_indexing_phase_0.txt").write_text("x X\ny Y\n")
    ds = load_dataset("amazon-beauty", cache_dir=tmp_path)
    assert (ds.name, len(ds.interactions), calls) == ("amazon-beauty", 2, [])


def test_download_false_and_offline_skip_the_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[str] = []
    monkeypatch.setattr(fetch, "_urlopen", no_network(calls))
    with pytest.raises(DatasetNotFoundError, match=r"download=False"):
        load_dataset("movielens-1m", cache_dir=tmp_path, download=False)
    monkeypatch.setenv("LLMBOOST_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match="LLMBOOST_OFFLINE"):
        load_dataset("movielens-1m", cache_dir=tmp_path)
    assert calls == []


def test_verified_download_is_unpacked_and_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    payload = ml100k_zip(tmp_path)
    spec = dataclasses.replace(fetch.BUILTINS["movielens-100k"], md5=hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(fetch.BUILTINS, "movielens-100k", spec)
    calls: list[str] = []
    monkeypatch.setattr(fetch, "_urlopen", serve(payload, calls))
    cache = tmp_path / "cache"
    ds = load_dataset("movielens-100k", cache_dir=cache)
    assert (cache / "sources" / "movielens-100k" / "ml-100k" / "u.data").is_file()
    assert (ds.name, len(ds.interactions)) == ("movielens-100k", 3)
    parsed = count_parses(monkeypatch)
    assert load_dataset("movielens-100k", cache_dir=cache).fingerprint() == ds.fingerprint()
    assert len(calls) == 1 and parsed == []


def test_checksum_mismatch_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fetch, "_urlopen", serve(ml100k_zip(tmp_path), []))
    monkeypatch.setattr(fetch, "recbole_copy", lambda subfolder="ml-100k": None)
    with pytest.raises(DatasetNotFoundError, match=r"checksum mismatch .* expected 0e33842e24a9c977be4e0107933c0723"):
        load_dataset("movielens-100k", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "downloads").iterdir())


def test_archive_without_expected_members_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,5\n")
    monkeypatch.setattr(fetch, "_urlopen", serve(buffer.getvalue(), []))
    with pytest.raises(DatasetNotFoundError, match=r"the archive lacks movies\.csv"):
        load_dataset("movielens-latest-small", cache_dir=tmp_path)


def test_not_a_zip_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fetch, "_urlopen", serve(b"<html>moved</html>", []))
    with pytest.raises(DatasetNotFoundError, match="not a valid zip archive"):
        load_dataset("movielens-latest-small", cache_dir=tmp_path)


def test_builtin_md5s_are_pinned() -> None:
    assert fetch.BUILTINS["movielens-100k"].md5 == "0e33842e24a9c977be4e0107933c0723"
    assert fetch.BUILTINS["movielens-1m"].md5 == "c4d9eecfca2ab87c1945afe126590906"
    assert all(b.url is None or b.url.startswith("https://files.grouplens.org/") for b in fetch.BUILTINS.values())
