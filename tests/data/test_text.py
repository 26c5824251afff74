"""Item text: texts by item id, histories as text, and generated text back to item ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmboost.data import Dataset
from llmboost.data.loaders import load_path
from llmboost.data.text import ItemText, normalise_title
from llmboost.splitting import Split, leave_one_out


def movies() -> Dataset:
    events = pd.DataFrame(
        {
            "user": ["a", "a", "a", "b", "b", "b", "c"],
            "item": ["1", "2", "3", "1", "3", "4", "4"],
            "timestamp": [1, 2, 3, 1, 2, 3, 1],
        }
    )
    meta = pd.DataFrame(
        {
            "title": ["Toy Story", "Usual Suspects, The", "Amélie", "Toy Story"],
            "year": pd.array([1995, 1995, 2001, 2019], dtype="Int64"),
            "genres": ["Animation|Comedy", "Crime|Thriller", "Comedy|Romance", "Animation"],
        },
        index=["1", "2", "3", "4"],
    )
    return Dataset.from_events("toy-movies", events, meta)


def test_titles_keep_the_year_and_fields_are_labelled() -> None:
    ds = movies()
    text = ds.item_text()
    ids = {ds.items.ids[i]: i for i in range(ds.n_items)}
    assert text[ids["1"]] == "Toy Story (1995)"
    assert text[ids["2"]] == "Usual Suspects, The (1995)"
    full = ds.item_text(fields=("title", "genres"))
    assert full[ids["1"]] == "Toy Story (1995); genres: Animation, Comedy"
    assert len(full.texts) == ds.n_items
    short = ds.item_text(fields=("title", "genres"), max_chars=20)
    assert all(len(t) <= 21 for t in short.texts)
    assert short[ids["1"]].endswith("…")
    with pytest.raises(KeyError, match="no column 'plot'"):
        ds.item_text(fields=("title", "plot"))


def test_history_text_is_in_time_order_most_recent_last() -> None:
    ds = movies()
    text = ds.item_text()
    history = ds.interactions.history(int(ds.users.encode(["a"])[0]))
    assert text.history_text(history) == "Toy Story (1995)\nUsual Suspects, The (1995)\nAmélie (2001)"
    assert text.history_text(history, max_items=2, sep=" | ") == "Usual Suspects, The (1995) | Amélie (2001)"
    assert text.history_text(history, max_items=0) == ""


def test_lookup_exact_normalised_fuzzy() -> None:
    ds = movies()
    text = ds.item_text(fields=("title", "genres"))
    ids = {ds.items.ids[i]: i for i in range(ds.n_items)}
    assert text.lookup("Toy Story (1995)") == ids["1"]
    assert text.lookup(text[ids["2"]]) == ids["2"]  # the full text works too
    assert text.lookup("The Usual Suspects (1995)") == ids["2"]
    assert text.lookup('  2. "the usual suspects (1995)"') == ids["2"]
    assert text.lookup("Amelie (2001)") == ids["3"]  # accents
    assert text.lookup("Toy Story (2019)") == ids["4"]  # the year disambiguates
    assert text.lookup("Toy Story") == ids["1"]  # without the year: the most popular (2 events vs 2: lowest id)
    assert text.lookup("Usual Suspect (1995)") == ids["2"]  # fuzzy
    assert text.lookup("Usual Suspect (1995)", fuzzy=False) is None
    assert text.lookup("Star Wars (1977)") is None
    assert text.lookup("") is None
    got = text.lookup_many(["Amélie (2001)", "nothing like it", "toy story (2019)"])
    assert got.dtype == np.int64
    assert got.tolist() == [ids["3"], -1, ids["4"]]


def test_normalise_title() -> None:
    assert normalise_title("Usual Suspects, The (1995)") == "the usual suspects 1995"
    assert normalise_title("- “The Usual Suspects (1995)”") == "the usual suspects 1995"
    assert normalise_title("Usual Suspects, The (1995)", keep_year=False) == "the usual suspects"
    assert normalise_title("Pride & Prejudice") == "pride and prejudice"


def test_split_reaches_item_text(tmp_path: Path) -> None:
    ds = movies()
    split = leave_one_out(ds)
    assert split.dataset is ds
    assert split.item_text().texts == ds.item_text().texts
    loaded = Split.load(split.save(tmp_path / "split"))
    assert loaded.dataset is None
    with pytest.raises(ValueError, match="carries no dataset"):
        loaded.item_text()


@pytest.mark.realdata
def test_movielens_every_title_maps_back_to_its_id(shared_datasets: Path) -> None:
    ds = load_path(shared_datasets / "movielens-100k")
    text = ds.item_text()
    assert "Toy Story (1995)" in text.texts
    found = text.lookup_many(text.texts, fuzzy=False)
    assert (found >= 0).all()
    # Items listed twice under one title (MovieLens-100K has a few) map to the lowest id with that text.
    assert all(text[j] == text[i] for i, j in enumerate(found))
    assert (found == np.arange(len(text))).mean() > 0.98
    toy = text.texts.index("Toy Story (1995)")
    assert text.lookup("toy story (1995)") == toy
    assert text.lookup("Toy Stroy (1995)") == toy
    assert text.lookup("TOY  STORY") == toy
    suspects = text.texts.index("Usual Suspects, The (1995)")
    assert text.lookup("The Usual Suspets (1995)") == suspects
    # Fuzzy lookup of titles with a typo finds the item (or one with the same title) for most titles.
    rng = np.random.default_rng(0)
    sample = rng.choice(len(text), 200, replace=False)
    typos = []
    for i in sample:
        title = text[i]
        k = int(rng.integers(0, max(1, len(title) - 7)))  # not in the year
        typos.append(title[:k] + title[k + 1 :])
    got = text.lookup_many(typos)
    hits = np.mean([g >= 0 and text[g] == text[i] for g, i in zip(got, sample, strict=True)])
    assert hits > 0.9


@pytest.mark.realdata
@pytest.mark.parametrize(("folder", "example"), [("amazon-beauty", "sedu ionic"), ("amazon-scientific", "PORTER")])
def test_amazon_item_text(shared_datasets: Path, folder: str, example: str) -> None:
    ds = load_path(shared_datasets / folder)
    text = ItemText.from_dataset(ds, max_chars=60)
    assert len(text) == ds.n_items
    assert any(example in t for t in text.texts)
    assert max(len(t) for t in text.texts) <= 61
    assert np.mean([bool(t) for t in text.texts]) > 0.99
    sample = np.arange(0, ds.n_items, 97)
    exact = text.lookup_many([text.names[i] for i in sample], fuzzy=False)
    assert (exact >= 0).all()
    assert all(text.names[j] == text.names[i] for i, j in zip(sample, exact, strict=True))
