"""Versioned prompt templates.

A :class:`PromptTemplate` has a ``name``, an integer ``version`` and a ``text`` with named ``{fields}``;
:meth:`PromptTemplate.render` fills them. Changing a template's wording means a new version, so stored scores
(keyed by :attr:`PromptTemplate.key` / :attr:`PromptTemplate.fingerprint`) never mix wordings.

:meth:`PromptTemplate.prompt` turns the rendered text into what the model reads: when the target (an
:class:`~llmboost.llm.hf.HFModel`, a tokenizer, or any backend with ``format_chat``) has a chat template, the text
becomes the user turn and the prompt ends where the assistant's answer starts; otherwise ``answer_prefix`` is
appended and choices get a leading space (``"Answer:" + " A"``).

Built-in templates: :data:`PAIRWISE` (history + two items -> ``A``/``B``), :data:`YES_NO` (history + item ->
``Yes``/``No``) and :data:`NEXT_ITEM` (history -> the next item's title).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmboost.llm.base import ChoiceRequest


def format_history(items: Sequence[str], max_items: int | None = 20, numbered: bool = True) -> str:
    """Render a history (oldest first) as one line per item, keeping the last ``max_items``."""
    items = list(items)
    if max_items is not None and max_items > 0:
        items = items[-max_items:]
    if numbered:
        return "\n".join(f"{i}. {t}" for i, t in enumerate(items, 1))
    return "\n".join(f"- {t}" for t in items)


def has_chat_template(target: Any) -> bool:
    """Whether ``target`` (a backend with ``format_chat`` or a tokenizer) formats chat turns."""
    if target is None:
        return False
    flag = getattr(target, "has_chat_template", None)
    if isinstance(flag, bool):
        return flag
    if hasattr(target, "apply_chat_template"):
        return bool(getattr(target, "chat_template", None))
    return False


def apply_chat(target: Any, user: str, system: str | None = None) -> str:
    """Format one user turn (and optional system turn) with ``target``'s chat template, ending where the
    assistant's reply starts. Returns ``user`` unchanged when ``target`` has no chat template."""
    if not has_chat_template(target):
        return user
    if hasattr(target, "format_chat"):
        return str(target.format_chat(user, system=system))
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return str(target.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


@dataclass(frozen=True)
class PromptTemplate:
    """A named, versioned prompt with ``{field}`` placeholders.

    ``choices`` are the answers scored by :meth:`request` (empty for generation tasks); ``defaults`` fill fields
    the caller leaves out; ``system`` is the chat system turn; ``answer_prefix`` ends non-chat prompts.
    """

    name: str
    version: int
    text: str
    choices: tuple[str, ...] = ()
    system: str | None = None
    answer_prefix: str = "Answer:"
    defaults: Mapping[str, str] = field(default_factory=dict, hash=False)
    description: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        """The placeholder names in ``text``, in order of first appearance."""
        names: list[str] = []
        for _, fname, _, _ in string.Formatter().parse(self.text):
            if fname is not None and fname not in names:
                if not fname.isidentifier():
                    raise ValueError(f"template {self.name!r}: placeholder {{{fname}}} is not a plain name")
                names.append(fname)
        return tuple(names)

    @property
    def key(self) -> str:
        """``name@vVERSION``."""
        return f"{self.name}@v{self.version}"

    @property
    def fingerprint(self) -> str:
        """Hash of everything that changes what the model reads (store key component)."""
        blob = json.dumps(
            [
                self.name,
                self.version,
                self.text,
                list(self.choices),
                self.system,
                self.answer_prefix,
                sorted(self.defaults.items()),
            ]
        )
        return f"{self.key}:{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def render(self, **fields: Any) -> str:
        """Fill the placeholders. Sequences of strings (e.g. a history) become numbered lines
        (:func:`format_history`); missing or unknown fields raise ``KeyError``."""
        values = {**self.defaults, **fields}
        wanted = self.fields
        missing = [f for f in wanted if f not in values]
        if missing:
            raise KeyError(f"template {self.key} needs fields {missing}")
        unknown = sorted(set(fields) - set(wanted))
        if unknown:
            raise KeyError(f"template {self.key} has no fields {unknown}")
        out = {}
        for k in wanted:
            v = values[k]
            out[k] = format_history(v, max_items=None) if isinstance(v, Sequence) and not isinstance(v, str) else v
        return self.text.format(**out)

    def prompt(self, target: Any = None, **fields: Any) -> str:
        """The prompt as the model reads it: chat-formatted for chat models (``target`` is a backend or
        tokenizer), else the rendered text followed by a newline and ``answer_prefix``."""
        text = self.render(**fields)
        if has_chat_template(target):
            return apply_chat(target, text, system=self.system)
        return f"{text}\n{self.answer_prefix}" if self.answer_prefix else text

    def answer_text(self, answer: str, target: Any = None) -> str:
        """How an answer continues :meth:`prompt`: as is after a chat template, else after a space."""
        return answer if has_chat_template(target) or not self.answer_prefix else f" {answer}"

    def request(self, target: Any = None, **fields: Any) -> ChoiceRequest:
        """A :class:`ChoiceRequest` scoring this template's ``choices`` after :meth:`prompt`."""
        if not self.choices:
            raise ValueError(f"template {self.key} has no choices to score")
        return ChoiceRequest(
            prompt=self.prompt(target, **fields),
            choices=tuple(self.answer_text(c, target) for c in self.choices),
        )


_SYSTEM = "You are a recommender system. You predict what a user will enjoy from what they chose before."
_HISTORY = "A user chose these {item_kind} in this order (oldest first):\n{history}\n\n"
"""The opening every built-in template shares (so one user's prompts share a long token prefix)."""

PAIRWISE = PromptTemplate(
    name="pairwise_preference",
    version=1,
    text=(
        _HISTORY + "Which of the following two {item_kind} is the user more likely to choose next? "
        "Answer with a single letter, A or B.\n"
        "A: {item_a}\nB: {item_b}"
    ),
    choices=("A", "B"),
    system=_SYSTEM,
    defaults={"item_kind": "items"},
    description="history + two candidates -> which one (A/B); ask both orders to cancel position bias",
)
"""History + two items -> ``A`` or ``B``. The candidates come last so a user's prompts share a long prefix."""

YES_NO = PromptTemplate(
    name="yes_no",
    version=1,
    text=(_HISTORY + "Will the user like the following item? Answer with Yes or No.\nItem: {item}"),
    choices=("Yes", "No"),
    system=_SYSTEM,
    defaults={"item_kind": "items"},
    description="history + item -> Yes/No",
)
"""History + item -> ``Yes`` or ``No``."""

NEXT_ITEM = PromptTemplate(
    name="next_item",
    version=1,
    text=(_HISTORY + "What will the user choose next? Answer with the title only."),
    system=_SYSTEM,
    defaults={"item_kind": "items"},
    description="history -> the next item's title (generation)",
)
"""History -> the next item's title."""

TEMPLATES: dict[str, PromptTemplate] = {t.key: t for t in (PAIRWISE, YES_NO, NEXT_ITEM)}
"""Registered templates by :attr:`PromptTemplate.key`."""


def register_template(template: PromptTemplate, overwrite: bool = False) -> PromptTemplate:
    """Add a template to :data:`TEMPLATES`; re-registering a key with different content needs ``overwrite``."""
    old = TEMPLATES.get(template.key)
    if old is not None and old != template and not overwrite:
        raise ValueError(f"template {template.key} already exists with different content; bump the version")
    TEMPLATES[template.key] = template
    return template


def get_template(name: str | PromptTemplate, version: int | None = None) -> PromptTemplate:
    """A registered template by ``name`` (latest version unless ``version``), or ``"name@vN"``."""
    if isinstance(name, PromptTemplate):
        return name
    if "@v" in name:
        name, _, v = name.partition("@v")
        version = int(v)
    found = [t for t in TEMPLATES.values() if t.name == name and (version is None or t.version == version)]
    if not found:
        raise KeyError(f"no template {name!r}" + (f" version {version}" if version is not None else ""))
    return max(found, key=lambda t: t.version)
