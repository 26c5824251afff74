"""Labels of generated answers (arXiv 2510.14330 §2; CRAG-MM scoring rules).

An answer is **correct** when a normalised gold alias is contained in the normalised answer (word boundaries),
**missing** when it says "I don't know" (or is empty), and **hallucinated** otherwise. An optional LLM judge
through any OpenAI-compatible endpoint decides the answers exact match did not accept, as CRAG-MM's evaluator
does: exact match first, "I don't know" is missing, then the judge.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

IDK = "I don't know"
OUTCOMES = ("correct", "missing", "hallucinated")
SCORE = {"correct": 1, "missing": 0, "hallucinated": -1}
MAX_ANSWER_CHARS = 2000
_IDK_PATTERNS = ("i don t know", "i do not know", "i dont know", "not sure", "unknown", "no idea")


def normalize(text: str) -> str:
    """Lower case, accents removed, punctuation to spaces, articles dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _check(answer: str) -> str:
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a string, got {type(answer).__name__}")
    if len(answer) > MAX_ANSWER_CHARS:
        raise ValueError(
            f"answer of {len(answer)} characters is longer than {MAX_ANSWER_CHARS}: containment matching would "
            "accept almost anything; cut answers (a stop string, max_new_tokens) before labelling"
        )
    return answer


def is_idk(answer: str) -> bool:
    """Whether an answer abstains (empty, or says it does not know)."""
    norm = normalize(_check(answer))
    return not norm or any(p in norm for p in _IDK_PATTERNS)


def exact_match(answer: str, aliases: Sequence[str]) -> bool:
    """Whether a normalised alias occurs in the normalised answer as whole words."""
    norm = f" {normalize(_check(answer))} "
    if not aliases:
        raise ValueError("no gold answers given")
    return any(a and f" {a} " in norm for a in (normalize(x) for x in aliases))


def label_answer(answer: str, aliases: Sequence[str]) -> str:
    """``correct`` / ``missing`` / ``hallucinated`` by exact match (see module docstring)."""
    if exact_match(answer, aliases):
        return "correct"
    if is_idk(answer):
        return "missing"
    return "hallucinated"


JUDGE_PROMPT = (
    "You judge answers to factual questions.\nQuestion: {question}\nGold answer: {gold}\nPrediction: {answer}\n"
    "Is the prediction correct (it states the gold answer or an equivalent one)? Reply with one word: "
    "correct or incorrect."
)


class LLMJudge:
    """CRAG-MM-style judge: exact match first, "I don't know" is missing, else an LLM says correct/incorrect.

    ``model`` is an object with ``generate(prompts, max_new_tokens=...) -> list[str]`` (an
    :class:`~llmboost.llm.openai_client.OpenAICompatibleModel`) or the URL of an OpenAI-compatible server."""

    def __init__(self, model: Any, max_new_tokens: int = 8) -> None:
        if isinstance(model, str):
            from llmboost.llm.openai_client import OpenAICompatibleModel

            model = OpenAICompatibleModel(model)
        self.model = model
        self.max_new_tokens = int(max_new_tokens)
        self.calls_ = 0

    def label(self, questions: Sequence[str], answers: Sequence[str], golds: Sequence[Sequence[str]]) -> list[str]:
        """Outcome per answer; only answers that exact match neither accepts nor marks missing reach the LLM."""
        if not (len(questions) == len(answers) == len(golds)):
            raise ValueError("questions, answers and golds differ in length")
        out = [label_answer(a, g) for a, g in zip(answers, golds, strict=True)]
        ask = [i for i, o in enumerate(out) if o == "hallucinated"]
        if ask:
            prompts = [JUDGE_PROMPT.format(question=questions[i], gold=golds[i][0], answer=answers[i]) for i in ask]
            replies = self.model.generate(prompts, max_new_tokens=self.max_new_tokens)
            self.calls_ += len(prompts)
            for i, reply in zip(ask, replies, strict=True):
                word = normalize(reply).split()
                if not word or word[0] not in ("correct", "incorrect"):
                    raise ValueError(f"judge reply {reply!r} is neither 'correct' nor 'incorrect'")
                out[i] = "correct" if word[0] == "correct" else "hallucinated"
        return out


def truthfulness(outcomes: Sequence[str]) -> float:
    """CRAG-MM truthfulness: mean of +1 (correct), 0 (missing), -1 (hallucinated)."""
    if not outcomes:
        raise ValueError("no outcomes")
    return float(sum(SCORE[o] for o in outcomes) / len(outcomes))


def rates(outcomes: Sequence[str]) -> dict[str, float]:
    """Truthfulness and the accuracy / missing / hallucination rates."""
    n = len(outcomes)
    return {
        "truthfulness": truthfulness(outcomes),
        "accuracy": sum(o == "correct" for o in outcomes) / n,
        "missing": sum(o == "missing" for o in outcomes) / n,
        "hallucination": sum(o == "hallucinated" for o in outcomes) / n,
    }
