"""Resumable scoring jobs: compute only what the store lacks, one atomic batch at a time.

:func:`run_job` asks the :class:`~llmboost.llm.store.ScoreStore` which keys are missing for
``(model.fingerprint, template fingerprint)``, sends them to the model in batches and commits each batch's
results in one transaction. Killing the process at any moment (even ``SIGKILL``) loses at most the batch in
flight; running the same job again finishes the remaining keys only.

Inputs are ``key -> ChoiceRequest`` (stored as the vector of choice log-probabilities) or ``key -> str``
(a prompt; stored as the generated text).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from llmboost.llm.base import ChoiceRequest, LanguageModel
from llmboost.llm.store import ScoreStore, TemplateRef, Value, template_key

__all__ = ["Inputs", "JobError", "JobResult", "Request", "ScoringError", "batches", "run_job", "score_batch"]

Request = ChoiceRequest | str
"""A unit of work: a :class:`ChoiceRequest` (choice log-probs) or a prompt string (generation)."""

Inputs = Mapping[str, Request] | Iterable[tuple[str, Request]]
"""``key -> request`` mapping, or an iterable (e.g. a generator) of ``(key, request)`` pairs."""


class ScoringError(RuntimeError):
    """The model returned something that cannot be stored (wrong count, wrong length, NaN, wrong type)."""


class JobError(RuntimeError):
    """A job stopped early; everything committed before the failure stays in the store.

    ``result`` tells how far it got; ``__cause__`` is the original exception.
    """

    def __init__(self, message: str, result: JobResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class JobResult:
    """What one :func:`run_job` call did."""

    model_fp: str
    template_version: str
    total: int = 0  # distinct input keys seen
    skipped: int = 0  # already stored before this run
    computed: int = 0  # computed and committed by this run
    batches: int = 0  # batches committed by this run
    seconds: float = 0.0
    failed_keys: list[str] = field(default_factory=list)  # the batch in flight when the job failed

    @property
    def remaining(self) -> int:
        """Keys still missing after this run (0 when the job completed)."""
        return self.total - self.skipped - self.computed


def _validate_vectors(keys: Sequence[str], reqs: Sequence[ChoiceRequest], out: Any) -> list[np.ndarray]:
    if not isinstance(out, list | tuple) or len(out) != len(reqs):
        n = len(out) if isinstance(out, list | tuple) else type(out).__name__
        raise ScoringError(f"choice_logprobs returned {n} results for a batch of {len(reqs)} requests")
    vectors = []
    for key, req, vec in zip(keys, reqs, out, strict=True):
        arr = np.asarray(vec, dtype=np.float64)
        if arr.shape != (len(req.choices),):
            raise ScoringError(
                f"key {key!r}: expected {len(req.choices)} log-probs (one per choice), got shape {arr.shape}"
            )
        if np.isnan(arr).any() or (arr > 1e-3).any():
            raise ScoringError(f"key {key!r}: invalid log-probs {arr.tolist()} (NaN or positive)")
        vectors.append(arr)
    return vectors


def score_batch(
    model: LanguageModel,
    keys: Sequence[str],
    requests: Sequence[Request],
    generate_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Value]:
    """Run one batch through ``model`` and check the results; returns ``key -> value`` ready to store."""
    out: dict[str, Value] = {}
    choice_idx = [i for i, r in enumerate(requests) if isinstance(r, ChoiceRequest)]
    text_idx = [i for i, r in enumerate(requests) if isinstance(r, str)]
    if len(choice_idx) + len(text_idx) != len(requests):
        bad = next(r for r in requests if not isinstance(r, ChoiceRequest | str))
        raise TypeError(f"requests must be ChoiceRequest or str, got {type(bad).__name__}")
    if choice_idx:
        ckeys = [keys[i] for i in choice_idx]
        creqs = [requests[i] for i in choice_idx]
        vectors = _validate_vectors(ckeys, creqs, model.choice_logprobs(creqs))  # type: ignore[arg-type]
        out.update(zip(ckeys, vectors, strict=True))
    if text_idx:
        tkeys = [keys[i] for i in text_idx]
        texts = model.generate([requests[i] for i in text_idx], **dict(generate_kwargs or {}))  # type: ignore[misc]
        if not isinstance(texts, list | tuple) or len(texts) != len(tkeys):
            raise ScoringError(f"generate returned {len(texts)} texts for a batch of {len(tkeys)} prompts")
        for key, text in zip(tkeys, texts, strict=True):
            if not isinstance(text, str):
                raise ScoringError(f"key {key!r}: generate returned {type(text).__name__}, not str")
            out[key] = text
    return {k: out[k] for k in keys}


def _iter_items(inputs: Inputs) -> Iterator[tuple[str, Request]]:
    if isinstance(inputs, Mapping):
        yield from inputs.items()
    else:
        yield from inputs


def batches(
    store: ScoreStore,
    model_fp: str,
    template: TemplateRef,
    inputs: Inputs,
    batch_size: int,
    *,
    lookahead: int = 4096,
    result: JobResult | None = None,
) -> Iterator[list[tuple[str, Request]]]:
    """Yield the not-yet-stored ``(key, request)`` pairs of ``inputs``, in order, ``batch_size`` at a time.

    Inputs are read ``lookahead`` at a time, so a generator of any length is fine. The same key twice in
    ``inputs`` raises ``ValueError``. ``result`` (if given) gets its ``total`` and ``skipped`` counts updated.
    """
    template_version = template_key(template)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seen: set[str] = set()
    pending: list[tuple[str, Request]] = []
    it = _iter_items(inputs)
    while True:
        chunk = list(islice(it, max(lookahead, batch_size)))
        if not chunk:
            break
        for key, _ in chunk:
            if not isinstance(key, str):
                raise TypeError(f"input keys must be str, got {type(key).__name__} {key!r}")
            if key in seen:
                raise ValueError(f"input key {key!r} appears more than once")
            seen.add(key)
        todo = set(store.missing(model_fp, template_version, [k for k, _ in chunk]))
        if result is not None:
            result.total += len(chunk)
            result.skipped += len(chunk) - len(todo)
        pending.extend((k, r) for k, r in chunk if k in todo)
        while len(pending) >= batch_size:
            yield pending[:batch_size]
            pending = pending[batch_size:]
    if pending:
        yield pending


def run_job(
    model: LanguageModel,
    store: ScoreStore,
    template: TemplateRef,
    inputs: Inputs,
    batch_size: int = 16,
    *,
    progress: bool = True,
    generate_kwargs: Mapping[str, Any] | None = None,
    desc: str | None = None,
) -> JobResult:
    """Compute and store the outputs of ``inputs`` that ``store`` lacks; resumable after any crash.

    ``inputs`` maps (or yields ``(key, request)`` pairs) string keys to a :class:`ChoiceRequest` (stores
    the float vector of its choices' log-probs) or a prompt ``str`` (stores ``model.generate`` text, with
    ``generate_kwargs``). Each batch is checked (count, length, no NaN) and committed in one transaction.

    Raises :class:`JobError` (``__cause__`` = the model's or server's exception) if the model fails;
    committed batches stay stored and the next call resumes from there.
    """
    template_version = template_key(template)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model_fp = model.fingerprint
    result = JobResult(model_fp=model_fp, template_version=template_version)
    start = time.monotonic()
    if isinstance(inputs, Mapping):
        # Count the work up front so the bar's total, rate and ETA cover only what is computed now.
        todo = store.missing(model_fp, template_version, list(inputs))
        result.total, result.skipped = len(inputs), len(inputs) - len(todo)
        pending = batches(store, model_fp, template_version, [(k, inputs[k]) for k in todo], batch_size)
        bar_total: int | None = len(todo)
    else:
        pending = batches(store, model_fp, template_version, inputs, batch_size, result=result)
        bar_total = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=bar_total, desc=desc or f"scoring {template_version}", unit="req", dynamic_ncols=True)
    shown_skipped = -1
    try:
        while True:
            batch = next(pending, None)  # input errors (repeated or non-str keys) propagate as they are
            if bar is not None and shown_skipped != result.skipped:
                shown_skipped = result.skipped
                bar.set_postfix(stored_before=result.skipped)
            if batch is None:
                break
            keys = [k for k, _ in batch]
            try:
                values = score_batch(model, keys, [r for _, r in batch], generate_kwargs)
                # "ignore": a concurrent runner of the same job may have stored a key meanwhile.
                store.put_many(model_fp, template_version, values, on_conflict="ignore")
            except Exception as exc:
                result.failed_keys = keys
                result.seconds = time.monotonic() - start
                raise JobError(
                    f"scoring job {template_version!r} with model {model_fp!r} failed after committing "
                    f"{result.computed} new records in {result.batches} batches ({result.skipped} were "
                    f"already stored; the {len(keys)} keys of the failed batch are not stored; rerun to "
                    f"resume): {type(exc).__name__}: {exc}",
                    result,
                ) from exc
            result.computed += len(batch)
            result.batches += 1
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.monotonic() - start
    return result
