"""Getting data: :func:`load_dataset` and the chain it follows.

For a built-in name (``movielens-100k``, ``movielens-1m``, ``movielens-latest-small``,
``amazon-beauty``) or any path, in this order:

1. an explicit path (a folder, file or ``.zip``) is loaded from there;
2. the cache (``cache_dir``, default ``$LLMBOOST_CACHE`` or ``~/.cache/llmboost``):
   ``sources/<name>/`` holds downloaded (or hand-unpacked) source files, and ``parsed/<key>/``
   holds parsed datasets written with :meth:`Dataset.save`, where ``key`` is the sha256 over the
   source files' contents, the layout, the load options and :data:`LOADER_VERSION` — a changed
   source file is therefore re-parsed, an unchanged one is not;
3. the official download (MovieLens only, from files.grouplens.org, short timeout, checksum or
   archive members verified), unpacked into ``sources/<name>/``;
4. for MovieLens-100K only, the copy shipped in the ``recbole`` wheel
   (``recbole/dataset_example/ml-100k``, located without importing recbole).

When all fail, :class:`DatasetNotFoundError` says which URL to download and where to unpack it.
Set ``LLMBOOST_OFFLINE=1`` (or pass ``download=False``) to skip the network step.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmboost.data import loaders
from llmboost.data.dataset import Dataset
from llmboost.data.errors import DatasetNotFoundError
from llmboost.jsonio import write_json

logger = logging.getLogger(__name__)

# Bump when a loader's output changes, so datasets parsed by an older version are re-parsed.
LOADER_VERSION = 2  # 2: table columns recognised by name, ISO 8601 timestamps
DOWNLOAD_TIMEOUT_S = 15.0
_urlopen = urllib.request.urlopen  # module-level so tests can replace the network


@dataclass(frozen=True)
class Builtin:
    """A dataset known by name: where to get it and how to check it."""

    name: str
    format: str
    folder: str  # the archive's top folder (and the usual name of an unpacked copy)
    members: tuple[str, ...]  # files the source folder must hold
    url: str | None = None
    md5: str | None = None  # the archive's MD5 as published by GroupLens (<url>.md5)
    recbole: str | None = None  # sub-folder of recbole/dataset_example holding a RecBole copy
    manual: str = ""  # how to get it when there is no URL


_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
BUILTINS: dict[str, Builtin] = {
    "movielens-100k": Builtin(
        "movielens-100k",
        "movielens-100k",
        "ml-100k",
        ("u.data", "u.item", "u.user", "u.genre"),
        url=_GROUPLENS + "ml-100k.zip",
        md5="0e33842e24a9c977be4e0107933c0723",
        recbole="ml-100k",
    ),
    "movielens-1m": Builtin(
        "movielens-1m",
        "movielens-1m",
        "ml-1m",
        ("ratings.dat", "movies.dat", "users.dat"),
        url=_GROUPLENS + "ml-1m.zip",
        md5="c4d9eecfca2ab87c1945afe126590906",
    ),
    # GroupLens re-issues ml-latest-small (its contents change between releases), so no checksum
    # can be pinned: the archive is verified by its expected member files instead.
    "movielens-latest-small": Builtin(
        "movielens-latest-small",
        "movielens-latest",
        "ml-latest-small",
        ("ratings.csv", "movies.csv"),
        url=_GROUPLENS + "ml-latest-small.zip",
    ),
    "amazon-beauty": Builtin(
        "amazon-beauty",
        "p5",
        "Beauty",
        ("user_sequence.txt", "item_generative_indexing_phase_0.txt"),
        manual=(
            "has no official download: take user_sequence.txt and item_generative_indexing_phase_0.txt "
            "from the P5 preprocessing of Amazon 2014 Beauty (e.g. github.com/agiresearch/IDGenRec, "
            "rec_datasets/Beauty)"
        ),
    ),
}
ALIASES = {
    "ml-100k": "movielens-100k",
    "ml-1m": "movielens-1m",
    "ml-latest-small": "movielens-latest-small",
    "beauty": "amazon-beauty",
}


class DownloadError(OSError):
    """A download failed or did not verify."""


def default_cache_dir() -> Path:
    """``$LLMBOOST_CACHE`` or ``~/.cache/llmboost``."""
    env = os.environ.get("LLMBOOST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llmboost"


def builtin(name: str) -> Builtin | None:
    """The built-in dataset called ``name`` (or an alias), if any."""
    key = name.lower()
    return BUILTINS.get(ALIASES.get(key, key))


# ---------------------------------------------------------------------------------------- main entry
def load_dataset(
    name_or_path: str | Path,
    *,
    cache_dir: str | Path | None = None,
    download: bool = True,
    cache: bool = True,
    **options: Any,
) -> Dataset:
    """Load a dataset by built-in name or path, following the chain in the module docstring.

    ``options`` go to the loader: ``format=`` forces a layout, plus ``name``, ``encoding``,
    ``on_bad_rows`` ("error" or "skip") and layout-specific ones (see :mod:`llmboost.data.loaders`).
    ``cache=False`` neither reads nor writes parsed datasets.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _load_source(path, options, root, cache)
    spec = builtin(str(name_or_path))
    if spec is None:
        known = ", ".join(BUILTINS)
        raise DatasetNotFoundError(f"{name_or_path}: no such file or folder, and not a built-in dataset ({known})")
    options = {"format": spec.format, "name": spec.name, **options}

    pointer = _pointer_path(root, options)
    cached = cached_source(spec, root)
    if cached is not None:
        return _load_source(cached, options, root, cache, pointer)
    if cache:
        ds = _from_pointer(spec, pointer, root)
        if ds is not None:
            return ds

    problems: list[str] = []
    if spec.url is None:
        problems.append(f"{spec.name} {spec.manual}")
    elif not download:
        problems.append("downloading was disabled (download=False)")
    elif os.environ.get("LLMBOOST_OFFLINE", "").lower() in ("1", "true", "yes"):
        problems.append("downloading was disabled (LLMBOOST_OFFLINE is set)")
    else:
        try:
            folder = fetch_builtin(spec, root)
        except DownloadError as err:
            logger.warning("%s", err)
            problems.append(str(err))
        else:
            return _load_source(folder, options, root, cache, pointer)

    if spec.recbole is not None:
        copy = recbole_copy(spec.recbole)
        if copy is not None:
            logger.info("%s: using the copy shipped with the recbole package at %s", spec.name, copy)
            return _load_source(copy, {**options, "format": "recbole"}, root, cache, pointer)
        problems.append(f"the recbole package (whose wheel ships {spec.recbole}) is not installed")
    raise DatasetNotFoundError(_not_found_message(spec, root, problems))


def _not_found_message(spec: Builtin, root: Path, problems: list[str]) -> str:
    target = root / "sources" / spec.name
    lines = [f"{spec.name} is not available: no copy in the cache ({target})"]
    lines += [f"- {p}" for p in problems]
    if spec.url is not None:
        lines.append(
            f"Download {spec.url} and unpack it into {target} "
            f"(so that {target / spec.folder / spec.members[0]} exists), "
            f"or unpack it anywhere and pass that folder: load_dataset('/path/to/{spec.folder}').",
        )
    else:
        lines.append(
            f"Put {', '.join(spec.members)} into {target}, or pass their folder: "
            f"load_dataset('/path/to/{spec.folder}')."
        )
    if spec.recbole is not None:
        lines.append(f"Or install the recbole wheel, which ships {spec.recbole}: pip install --no-deps recbole==1.2.1")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- cache
def cached_source(spec: Builtin, root: Path) -> Path | None:
    """The folder under ``<root>/sources/<name>`` holding the dataset's files, if present."""
    base = root / "sources" / spec.name
    for folder in (base / spec.folder, base):
        if all((folder / m).is_file() for m in spec.members):
            return folder
    return None


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _options_json(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, default=str)


def cache_key(files: list[Path], options: dict[str, Any]) -> str:
    """sha256 over the files' names and contents, the load options and :data:`LOADER_VERSION`."""
    h = hashlib.sha256()
    h.update(f"llmboost-loader-v{LOADER_VERSION}\n{_options_json(options)}\n".encode())
    for path in sorted(files, key=lambda p: p.name):
        h.update(f"{path.name}\n{_file_sha256(path)}\n".encode())
    return h.hexdigest()


def _pointer_path(root: Path, options: dict[str, Any]) -> Path:
    digest = hashlib.sha256(_options_json(options).encode()).hexdigest()[:16]
    return root / "parsed" / "by-name" / f"{options.get('name', 'dataset')}-{digest}.json"


def _from_pointer(spec: Builtin, pointer: Path, root: Path) -> Dataset | None:
    """The dataset last parsed for this name and options (re-checked against its source if present)."""
    if not pointer.is_file():
        return None
    try:
        record = json.loads(pointer.read_text())
        source = Path(record["source"])
        source_options = record["options"]
        key = record["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if source.exists():
        return _load_source(source, source_options, root, True, pointer)
    try:
        return Dataset.load(root / "parsed" / key)
    except (OSError, ValueError) as err:
        logger.warning("%s: cached dataset unreadable (%s)", spec.name, err)
        return None


def _load_source(
    path: Path, options: dict[str, Any], root: Path, use_cache: bool, pointer: Path | None = None
) -> Dataset:
    """Load ``path`` through the parsed-dataset cache; ``pointer`` records it for a built-in name."""
    options = dict(options)
    fmt = options.pop("format", None)
    is_zip = path.is_file() and path.suffix.lower() == ".zip"
    if fmt is None and not is_zip:
        fmt = loaders.detect_format(path)
    if fmt == "saved":
        return Dataset.load(path)
    if not use_cache:
        return loaders.load_path(path, format=fmt, **options)
    files = [path] if is_zip else loaders.source_files(path, fmt, **options)
    key_options = {"format": fmt, **options}
    key = cache_key(files, key_options)
    target = root / "parsed" / key
    if (target / "dataset.json").is_file():
        try:
            ds = Dataset.load(target)
        except (OSError, ValueError) as err:
            logger.warning("%s: cached dataset unreadable (%s); parsing the source again", target, err)
        else:
            logger.info("%s: loaded from cache %s", path, target)
            if pointer is not None and not pointer.is_file():
                write_json(pointer, {"source": str(path.resolve()), "options": key_options, "key": key})
            return ds
    ds = loaders.load_path(path, format=fmt, **options)
    _save(ds, target, {"source": str(path.resolve()), "files": [str(f) for f in files], "options": key_options})
    if pointer is not None:
        write_json(pointer, {"source": str(path.resolve()), "options": key_options, "key": key})
    return ds


def _save(ds: Dataset, target: Path, record: dict[str, Any]) -> None:
    """Write ``ds`` to ``target`` atomically (a temporary folder renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:16]}-", dir=target.parent))
    try:
        ds.save(tmp)
        (tmp / "source.json").write_text(json.dumps(record, indent=2))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    except OSError as err:
        logger.warning("could not write the dataset cache %s (%s)", target, err)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------- download
def download(url: str, dest: Path, *, md5: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` (via a temporary file), verifying ``md5`` when given."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with _urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not download {url}: {reason}") from err
    if md5 is not None and digest.hexdigest() != md5:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"{url}: checksum mismatch (md5 {digest.hexdigest()}, expected {md5})")
    tmp.replace(dest)
    return dest


def fetch_builtin(spec: Builtin, root: Path) -> Path:
    """Download and unpack a built-in dataset into ``<root>/sources/<name>``; its folder."""
    if spec.url is None:
        raise DownloadError(f"{spec.name} has no download URL")
    archive = download(spec.url, root / "downloads" / Path(spec.url).name, md5=spec.md5)
    base = root / "sources" / spec.name
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=archive.parent))
    try:
        try:
            folder = loaders.extract_zip(archive, staging)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            archive.unlink(missing_ok=True)
            raise DownloadError(f"{spec.url}: not a valid zip archive ({err})") from err
        missing = [m for m in spec.members if not (folder / m).is_file()]
        if missing:
            archive.unlink(missing_ok=True)
            raise DownloadError(f"{spec.url}: the archive lacks {', '.join(missing)}")
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        folder.rename(base / spec.folder)
        archive.unlink(missing_ok=True)  # unpacked and verified: the archive is no longer needed
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return base / spec.folder


def recbole_copy(subfolder: str = "ml-100k") -> Path | None:
    """The dataset copy in the installed recbole wheel (found without importing recbole), if any."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("recbole")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / "dataset_example" / subfolder for loc in spec.submodule_search_locations]
    try:
        dist = importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        candidates.append(Path(str(dist.locate_file(f"recbole/dataset_example/{subfolder}"))))
    for folder in candidates:
        if (folder / f"{subfolder}.inter").is_file():
            return folder
    return None
