"""Versioned prompt templates: rendering, versions/registry, chat formatting."""

from __future__ import annotations

import pytest

from llmboost.llm.base import ChoiceRequest
from llmboost.llm.prompts import (
    NEXT_ITEM,
    PAIRWISE,
    TEMPLATES,
    YES_NO,
    PromptTemplate,
    apply_chat,
    format_history,
    get_template,
    register_template,
)

T = PromptTemplate(
    "t",
    1,
    "History:\n{history}\nItem: {item} ({kind})",
    choices=("Yes", "No"),
    system="sys",
    defaults={"kind": "movie"},
)


class FakeTokenizer:
    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


class PlainTokenizer:
    chat_template = None

    def apply_chat_template(self, *a, **k):  # pragma: no cover - must not be called
        raise AssertionError


class ChatBackend:
    has_chat_template = True

    def format_chat(self, user, system=None):
        return f"[{system}|{user}]"


def test_fields_key_and_render():
    assert T.fields == ("history", "item", "kind")
    assert T.key == "t@v1"
    text = T.render(history=["a", "b"], item="c")
    assert text == "History:\n1. a\n2. b\nItem: c (movie)"
    assert T.render(history="x", item="c", kind="book").endswith("(book)")


def test_render_rejects_missing_and_unknown_fields():
    with pytest.raises(KeyError, match="needs fields"):
        T.render(history="h")
    with pytest.raises(KeyError, match="no fields"):
        T.render(history="h", item="i", colour="red")


def test_fingerprint_changes_with_wording_not_with_identity():
    same = PromptTemplate("t", 1, T.text, choices=T.choices, system="sys", defaults={"kind": "movie"})
    assert same.fingerprint == T.fingerprint
    reworded = PromptTemplate("t", 1, T.text + "?", choices=T.choices, system="sys", defaults={"kind": "movie"})
    assert reworded.fingerprint != T.fingerprint
    assert T.fingerprint.startswith("t@v1:")
    assert hash(T) == hash(same)


def test_plain_prompt_and_answers():
    req = T.request(None, history=["a"], item="b")
    assert isinstance(req, ChoiceRequest)
    assert req.prompt.endswith("Item: b (movie)\nAnswer:")
    assert req.choices == (" Yes", " No")
    assert T.prompt(PlainTokenizer(), history="h", item="i").endswith("\nAnswer:")


def test_chat_prompt_with_tokenizer_and_backend():
    tok = FakeTokenizer()
    p = T.prompt(tok, history="h", item="i")
    assert p.startswith("<system>sys</system><user>History:\nh\nItem: i (movie)</user><assistant>")
    assert T.request(tok, history="h", item="i").choices == ("Yes", "No")
    assert T.answer_text("Yes", tok) == "Yes"
    assert apply_chat(ChatBackend(), "u", system="s") == "[s|u]"
    assert apply_chat(None, "u") == "u"


def test_builtin_templates_registered_and_well_formed():
    assert PAIRWISE.fields == ("item_kind", "history", "item_a", "item_b")
    assert PAIRWISE.choices == ("A", "B") and YES_NO.choices == ("Yes", "No") and NEXT_ITEM.choices == ()
    # candidates come last so prompts of one user share the longest prefix
    text = PAIRWISE.render(history=["x"], item_a="AAA", item_b="BBB")
    assert text.index("AAA") > text.index("x") and text.rstrip().endswith("BBB")
    for t in (PAIRWISE, YES_NO, NEXT_ITEM):
        assert TEMPLATES[t.key] is t
    with pytest.raises(ValueError):
        NEXT_ITEM.request(None, history="h")


def test_registry_versions():
    v1 = PromptTemplate("regtest", 1, "a {x}")
    v2 = PromptTemplate("regtest", 2, "b {x}")
    register_template(v1)
    register_template(v2)
    register_template(v1)  # identical: fine
    assert get_template("regtest") is v2
    assert get_template("regtest", 1) is v1
    assert get_template("regtest@v1") is v1
    with pytest.raises(ValueError, match="bump the version"):
        register_template(PromptTemplate("regtest", 1, "changed {x}"))
    with pytest.raises(KeyError):
        get_template("no-such-template")


def test_format_history_keeps_last_items():
    assert format_history(["a", "b", "c"], max_items=2) == "1. b\n2. c"
    assert format_history(["a"], numbered=False) == "- a"
