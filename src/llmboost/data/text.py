"""Item text: what a language model reads and writes about items.

:class:`ItemText` holds one text per item id (built from the dataset's ``item_meta``: the title and any
other text fields), writes a user's history as text, and maps generated text back to item ids:

1. **exact** — the text equals an item's text or its name (the title, with the year for MovieLens);
2. **normalised** — equal after :func:`normalise_title`: case, accents, punctuation, surrounding
   quotes, list markers (``1.``, ``-``) and a trailing article (``Usual Suspects, The`` reads as
   ``The Usual Suspects``) ignored; a name given without its year matches the most popular item of
   that year-less name (the lowest id on ties);
3. **fuzzy** — the closest normalised name by edit similarity (``rapidfuzz``'s ``ratio``, 0-100) when it
   reaches ``fuzzy_cutoff`` (default 85: a typo or two in a title, not a different title).

Items that share a text (MovieLens-100K has a few titles listed twice) map to the lowest id.
MovieLens titles keep their year: the loaders store ``Toy Story`` and ``year`` 1995; the text reads
``Toy Story (1995)``, as the titles are usually written (and as LLMs know them).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from llmboost.data.dataset import Dataset

# Fields whose values are ``|``-separated lists (genres, categories): written with ", ".
LIST_FIELDS = ("genres", "categories")
_ARTICLE = re.compile(r"^(?P<head>.*?),\s*(?P<article>the|a|an|les|la|le|il|das|der|die|el)$")
_YEAR = re.compile(r"\s*\((?P<year>\d{4})\)\s*$")
_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_NON_WORD = re.compile(r"[^\w]+")


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def normalise_title(text: str, *, keep_year: bool = True) -> str:
    """A matching key: lower case, no accents or punctuation, leading article restored.

    ``"  2. \\"Usual Suspects, The (1995)\\""`` and ``"the usual suspects (1995)"`` both give
    ``"the usual suspects 1995"``; with ``keep_year=False`` the trailing ``(year)`` is dropped.
    """
    text = _MARKER.sub("", text.strip()).strip().strip("\"'`“”‘’").strip()
    match = _YEAR.search(text)
    year = match.group("year") if match else None
    if match:
        text = text[: match.start()]
    text = _strip_accents(text).casefold().strip()
    article = _ARTICLE.match(text)
    if article:
        text = f"{article.group('article')} {article.group('head')}"
    text = _NON_WORD.sub(" ", text.replace("&", " and ")).strip()
    if keep_year and year:
        text = f"{text} {year}"
    return text


def _field_text(value: object, field: str) -> str:
    if value is None or (not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value)):  # type: ignore[arg-type]
        return ""
    text = str(value).strip()
    if field in LIST_FIELDS:
        text = ", ".join(part.strip() for part in text.split("|") if part.strip())
    return text


def _truncate(text: str, max_chars: int | None) -> str:
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip(" ,;:.") + "…"


class ItemText:
    """One text per item id, a user's history as text, and generated text back to item ids.

    ``texts[i]`` is item ``i``'s text (what prompts show); ``names[i]`` its name (the title, with the
    year where known): both are matched by :meth:`lookup`. ``popularity`` (optional, one count per
    item) breaks ties between items that share a year-less title.
    """

    def __init__(
        self,
        texts: Sequence[str],
        names: Sequence[str] | None = None,
        *,
        popularity: Sequence[float] | np.ndarray | None = None,
        fuzzy_cutoff: float = 85.0,
    ) -> None:
        self.texts: list[str] = [str(t) for t in texts]
        self.names: list[str] = list(self.texts) if names is None else [str(n) for n in names]
        if len(self.names) != len(self.texts):
            raise ValueError(f"{len(self.names)} names for {len(self.texts)} texts")
        self.fuzzy_cutoff = float(fuzzy_cutoff)
        self._popularity = None if popularity is None else np.asarray(popularity, dtype=np.float64)
        self._exact: dict[str, int] = {}
        self._normal: dict[str, int] = {}
        self._no_year: dict[str, int] = {}
        for item in range(len(self.texts)):
            for source in (self.names[item], self.texts[item]):
                if source.strip():
                    self._exact.setdefault(source.strip(), item)
                    key = normalise_title(source)
                    if key:
                        self._normal.setdefault(key, item)
        # A name without its year: the most popular item with that year-less name.
        order = range(len(self.names))
        if self._popularity is not None:
            order = sorted(order, key=lambda i: (-self._popularity[i], i))  # type: ignore[index]
        for item in order:
            key = normalise_title(self.names[item], keep_year=False)
            if key:
                self._no_year.setdefault(key, item)
        self._choices: list[str] = list(self._normal)
        self._choice_items = np.array([self._normal[k] for k in self._choices], dtype=np.int64)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dataset(
        cls,
        dataset: Dataset,
        fields: Sequence[str] = ("title",),
        max_chars: int | None = None,
        *,
        with_year: bool = True,
        fuzzy_cutoff: float = 85.0,
    ) -> ItemText:
        """Texts from ``dataset.item_meta``: the first field as written (the title gets `` (year)``
        when the metadata has a ``year`` and ``with_year``), then ``name: value`` for each other
        non-empty field, joined by ``"; "`` (``|``-lists such as genres written with ``", "``).
        ``max_chars`` truncates each text at a word boundary (``…`` appended); names are not truncated.
        """
        meta = dataset.item_meta
        fields = list(fields)
        if not fields:
            raise ValueError("fields must name at least one item_meta column")
        missing = [f for f in fields if f not in meta.columns]
        if missing:
            raise KeyError(f"item_meta of {dataset.name!r} has no column {missing[0]!r}; columns: {list(meta.columns)}")
        titles = meta["title"].fillna("").astype(str).str.strip().tolist() if "title" in meta else [""] * len(meta)
        if with_year and "year" in meta.columns:
            years = pd.to_numeric(meta["year"], errors="coerce")
            titles = [
                t if pd.isna(y) or not t or t.endswith(f"({int(y)})") else f"{t} ({int(y)})"
                for t, y in zip(titles, years, strict=True)
            ]
        columns = {f: (titles if f == "title" else [_field_text(v, f) for v in meta[f]]) for f in fields}
        if with_year and "title" in fields and "year" in fields:
            del columns["year"]  # already in the title
        names = titles if "title" in meta.columns else columns[fields[0]]
        texts = []
        order = list(columns)
        for i in range(len(meta)):
            head = columns[order[0]][i]
            rest = [f"{f}: {columns[f][i]}" for f in order[1:] if columns[f][i]]
            texts.append(_truncate("; ".join([head, *rest]) if head else "; ".join(rest), max_chars))
        popularity = dataset.interactions.item_counts()
        return cls(texts, names, popularity=popularity, fuzzy_cutoff=fuzzy_cutoff)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, item_id: int) -> str:
        return self.texts[int(item_id)]

    def __repr__(self) -> str:
        return f"ItemText({len(self)} items)"

    def history_text(self, items: Sequence[int] | np.ndarray, max_items: int | None = 10, sep: str = "\n") -> str:
        """The texts of ``items`` (in time order: most recent last), the last ``max_items`` of them."""
        items = list(items)
        if max_items is not None:
            items = items[-max_items:] if max_items > 0 else []
        return sep.join(self.texts[int(i)] for i in items)

    # ------------------------------------------------------------------ lookup
    def lookup(self, text: str, fuzzy: bool = True) -> int | None:
        """The item id that ``text`` names (exact, then normalised, then fuzzy), or ``None``."""
        text = str(text)
        item = self._exact.get(text.strip())
        if item is not None:
            return item
        key = normalise_title(text)
        if not key:
            return None
        item = self._normal.get(key)
        if item is None and not _YEAR.search(text.strip().strip("\"'`“”‘’")):
            item = self._no_year.get(key)
        if item is not None or not fuzzy:
            return item
        return self._fuzzy(key)

    def lookup_many(self, texts: Iterable[str], fuzzy: bool = True) -> np.ndarray:
        """:meth:`lookup` for each text; ``-1`` where no item matches."""
        out = [self.lookup(t, fuzzy=fuzzy) for t in texts]
        return np.array([-1 if i is None else i for i in out], dtype=np.int64)

    def _fuzzy(self, key: str) -> int | None:
        if not self._choices:
            return None
        from rapidfuzz import fuzz, process

        best = process.extractOne(key, self._choices, scorer=fuzz.ratio, score_cutoff=self.fuzzy_cutoff)
        if best is None:
            return None
        return int(self._choice_items[best[2]])
