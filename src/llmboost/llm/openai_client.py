"""A :class:`~llmboost.llm.base.LanguageModel` served over an OpenAI-compatible HTTP API.

Works with llama-cpp-python's server (``python -m llama_cpp.server``), vLLM (``vllm serve``), and any
server speaking the OpenAI *completions* API with ``logprobs``. Only the standard library is used
(``urllib``), so the client adds no dependency.

Choice log-probabilities (:meth:`OpenAICompatibleModel.choice_logprobs`) come from the completions API
with ``echo=True``: for every choice, ``prompt + choice`` is sent with ``max_tokens=1`` and ``logprobs``;
the server returns the log-probability of every prompt token, and the log-probs of the tokens that spell
the choice are summed. Those tokens are found from the *end* of the echoed text by their strings (not by
``text_offset``, which llama.cpp counts without special tokens); a token straddling the prompt/choice
boundary (possible when the prompt ends in a space) counts toward the choice.

With ``echo=None`` (the default) the first call checks once that echo works and is aligned: the echoed
log-prob of the server's own next token after the first prompt must match the next-token log-prob. If
the server ignores or rejects ``echo``, or shifts echoed log-probs by one position (llama-cpp-python
<= 0.3.36 does so for models whose tokenizer adds no BOS token, e.g. SmolLM2 on raw prompts; prompts in
the chat format start with a BOS token and are fine), the client falls back to ``top_logprobs`` of the
first generated token: each choice must then be a *single token* among the ``top_logprobs`` most likely
next tokens, otherwise :class:`LLMServerError` is raised; the fallback never guesses a score.
``echo=True`` skips the check, ``echo=False`` always uses the fallback.

Generation (:meth:`OpenAICompatibleModel.generate`) uses ``/chat/completions`` (the prompt is the user
turn) or, with ``generation="completions"``, the raw completions API.

Every failure is an :class:`LLMServerError` naming the URL, the HTTP status and a snippet of the body:
connection errors, timeouts, HTTP 408/429/5xx (after ``max_retries`` retries with exponential backoff,
honouring ``Retry-After``), any other 4xx at once, and malformed responses (invalid JSON, missing fields,
NaN or infinite log-probs, wrong number of tokens or choices).
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

from llmboost.llm.base import ChoiceRequest

__all__ = ["LLMServerError", "OpenAICompatibleModel"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_SNIPPET = 500


class LLMServerError(RuntimeError):
    """A served model failed or answered something unusable.

    ``url``, ``status`` (HTTP status, or ``None`` when no response came) and ``body`` (a snippet of the
    response) are kept as attributes and shown in the message.
    """

    def __init__(self, message: str, url: str, status: int | None = None, body: str = "") -> None:
        self.url = url
        self.status = status
        self.body = body[:_SNIPPET]
        where = f"{url} (HTTP {status})" if status is not None else url
        text = f"{message} [{where}]"
        if self.body:
            text += f": {self.body!r}"
        super().__init__(text)


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} in JSON")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class OpenAICompatibleModel:
    """A model behind an OpenAI-compatible server (see the module docstring for how scores are computed).

    ``base_url`` is the server root or its ``/v1`` path. ``model`` is the served model's name (asked from
    ``/v1/models`` when ``None``). ``fingerprint`` defaults to ``"served:<model name>"``; pass the local
    model's fingerprint to share stored scores between a local and a served copy of the same weights.
    ``timeout`` is the socket timeout per request in seconds; a request is tried ``1 + max_retries`` times,
    waiting ``backoff * 2**attempt`` seconds (at most ``max_backoff``) between tries. ``concurrency``
    requests may be in flight at once. ``echo`` (``None``: check once, then decide), ``echo_check_atol``
    (tolerance of that check; llama.cpp's quantized batch paths differ by ~0.1 nat) and ``top_logprobs``
    (alternatives asked for in the no-echo fallback; OpenAI allows 5, llama.cpp and vLLM more) choose
    how choices are scored, see the module docstring.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        *,
        max_backoff: float = 30.0,
        echo: bool | None = None,
        echo_check_atol: float = 0.25,
        top_logprobs: int = 20,
        generation: Literal["chat", "completions"] = "chat",
        concurrency: int = 1,
        fingerprint: str | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if generation not in ("chat", "completions"):
            raise ValueError(f"generation must be 'chat' or 'completions', got {generation!r}")
        if max_retries < 0 or timeout <= 0 or backoff < 0 or concurrency < 1 or top_logprobs < 1:
            raise ValueError("need max_retries >= 0, timeout > 0, backoff >= 0, concurrency >= 1, top_logprobs >= 1")
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        self.model = model
        self.api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.echo = echo
        self.echo_check_atol = float(echo_check_atol)
        self.top_logprobs = int(top_logprobs)
        self.generation = generation
        self.concurrency = int(concurrency)
        self._fingerprint = fingerprint
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAICompatibleModel({self.base_url!r}, model={self.model!r})"

    # -- HTTP -----------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
        """Send one JSON request with retries; return ``(decoded JSON object, body text)``."""
        url = self.base_url + path
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: LLMServerError | None = None
        retry_after: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
                if retry_after is not None:
                    delay = min(max(delay, retry_after), self.max_backoff)
                logger.warning("retrying %s in %.2fs (attempt %d): %s", url, delay, attempt + 1, last)
                time.sleep(delay)
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    status, body = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                try:
                    text = exc.read().decode("utf-8", "replace")
                except (OSError, http.client.HTTPException):
                    text = ""
                err = LLMServerError(f"{method} {path} failed", url, exc.code, text)
                if exc.code not in _RETRY_STATUS and not 500 <= exc.code < 600:
                    raise err from None
                retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                last = err
                continue
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                kind = "timed out" if isinstance(reason, TimeoutError | socket.timeout) else "connection failed"
                last = LLMServerError(f"{method} {path} {kind} ({type(reason).__name__}: {reason})", url)
                retry_after = None
                continue
            text = body.decode("utf-8", "replace")
            try:
                obj = json.loads(text, parse_constant=_reject_constant)
            except ValueError as exc:
                raise LLMServerError(f"malformed JSON in response ({exc})", url, status, text) from None
            if not isinstance(obj, dict):
                raise LLMServerError("response is not a JSON object", url, status, text)
            return obj, text
        assert last is not None
        raise LLMServerError(
            f"gave up after {self.max_retries + 1} attempts; last error: {last}",
            last.url,
            last.status,
            last.body,
        )

    def _post(self, path: str, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        if self.model_name is not None:
            payload = {"model": self.model_name, **payload}
        return self._request("POST", path, payload)

    # -- identity -------------------------------------------------------------------------------------

    @property
    def model_name(self) -> str | None:
        """The served model's name (``model``, or the first entry of ``/v1/models``)."""
        if self.model is None:
            with self._lock:
                if self.model is None:
                    obj, raw = self._request("GET", "/models")
                    try:
                        name = obj["data"][0]["id"]
                    except (KeyError, IndexError, TypeError):
                        name = None
                    if not isinstance(name, str) or not name:
                        url = self.base_url + "/models"
                        raise LLMServerError("no model id listed by /models; pass model=", url, 200, raw)
                    self.model = name
        return self.model

    @property
    def fingerprint(self) -> str:
        """``fingerprint=`` if given, else ``"served:<model name>"``."""
        if self._fingerprint is None:
            self._fingerprint = f"served:{self.model_name}"
        return self._fingerprint

    # -- scoring --------------------------------------------------------------------------------------

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))

    def choice_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        """Summed log-prob of each choice's tokens after its prompt (echo, or the top-logprobs fallback)."""
        self.model_name  # noqa: B018 - resolve once before any threads start
        if self.echo is None and requests:
            with self._lock:
                if self.echo is None:
                    self.echo = self._echo_is_sound(requests[0].prompt)
        if self.echo is False:
            return self._score_top(requests)
        pairs = [(r.prompt, c) for r in requests for c in r.choices]
        return _split(requests, self._map(lambda p: self._score_echo(*p), pairs))

    def _echo_is_sound(self, prompt: str) -> bool:
        """Check once that echoed prompt log-probs agree with the next-token log-prob the server reports.

        The server picks the next token ``t`` of ``prompt``; the echo of ``prompt + t`` must give ``t`` the
        same log-prob (within ``echo_check_atol``). Servers that ignore ``echo``, reject it, or report echoed
        log-probs shifted by one position (llama-cpp-python up to at least 0.3.36 does so for models whose
        tokenizer adds no BOS token) fail the check, and the client uses ``top_logprobs`` instead.
        """
        url = self.base_url + "/completions"
        payload = {"prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": 1}
        obj, raw = self._post("/completions", payload)
        lp = _first_choice(obj, url, raw).get("logprobs")
        tokens = lp.get("tokens") if isinstance(lp, dict) else None
        values = lp.get("token_logprobs") if isinstance(lp, dict) else None
        if not (isinstance(tokens, list) and isinstance(values, list) and tokens and values):
            raise LLMServerError("response lacks logprobs.tokens / token_logprobs", url, 200, raw)
        token, expected = tokens[0], values[0]
        if not isinstance(token, str) or not token or not _finite(expected):
            logger.warning("%s: cannot check echo (next token %r); trusting echoed log-probs", self, token)
            return True
        try:
            echoed = self._score_echo(prompt, token)
        except LLMServerError as exc:
            if exc.status is None or exc.status >= 500:
                raise  # the server is down or failing, not unable to echo
            logger.warning("%s: echo of prompt log-probs unusable (%s); using top_logprobs", self, exc)
            return False
        if abs(echoed - float(expected)) > self.echo_check_atol:
            logger.warning(
                "%s: echoed log-prob of %r is %.4f but the next-token log-prob is %.4f: the server's echoed "
                "log-probs are misaligned; using top_logprobs (single-token choices only)",
                self,
                token,
                echoed,
                expected,
            )
            return False
        return True

    def _score_echo(self, prompt: str, choice: str) -> float:
        """log P(choice | prompt): the sum of the echoed log-probs of the tokens spelling ``choice``.

        Tokens are matched from the end of the echoed text (``prompt + choice + generated``) by their
        strings, so servers whose ``text_offset`` skips special tokens (llama.cpp) or counts bytes work too.
        """
        if not choice:
            raise ValueError("choices must be non-empty strings")
        full = prompt + choice
        url = self.base_url + "/completions"
        payload = {"prompt": full, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}
        obj, raw = self._post("/completions", payload)
        first = _first_choice(obj, url, raw)
        lp, text = first.get("logprobs"), first.get("text")
        if not isinstance(lp, dict) or not isinstance(text, str):
            raise LLMServerError("response lacks choices[0].logprobs or choices[0].text", url, 200, raw)
        tokens, values = lp.get("tokens"), lp.get("token_logprobs")
        if not (isinstance(tokens, list) and isinstance(values, list)):
            raise LLMServerError("logprobs lacks tokens or token_logprobs lists", url, 200, raw)
        offsets = lp.get("text_offset")
        if len(tokens) != len(values) or (isinstance(offsets, list) and len(offsets) != len(tokens)):
            n_off = len(offsets) if isinstance(offsets, list) else None
            raise LLMServerError(
                f"logprobs lists differ in length (tokens {len(tokens)}, token_logprobs {len(values)}, "
                f"text_offset {n_off})",
                url,
                200,
                raw,
            )
        if not all(isinstance(t, str) for t in tokens):
            raise LLMServerError("logprobs.tokens holds non-strings", url, 200, raw)
        if not text.startswith(full):
            raise LLMServerError("server did not echo the prompt (echo unsupported?); use echo=False", url, 200, raw)
        span = _choice_tokens(tokens, choice, text[len(full) :])
        if span is None:
            raise LLMServerError(
                f"echoed tokens do not spell prompt + {choice!r} + generated text at their end "
                "(log-probs missing or shifted)",
                url,
                200,
                raw,
            )
        total = 0.0
        for i in span:
            if not _finite(values[i]):
                raise LLMServerError(
                    f"no finite log-prob for choice token {i} ({tokens[i]!r}: {values[i]!r}) "
                    "(the first token of a text has none, so the prompt must not be empty)",
                    url,
                    200,
                    raw,
                )
            total += float(values[i])
        return total

    def _score_top(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        """No-echo fallback: each choice must be one of the ``top_logprobs`` next tokens after the prompt."""
        url = self.base_url + "/completions"

        def one(req: ChoiceRequest) -> np.ndarray:
            payload = {
                "prompt": req.prompt,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": self.top_logprobs,
            }
            obj, raw = self._post("/completions", payload)
            lp = _first_choice(obj, url, raw).get("logprobs")
            top = lp.get("top_logprobs") if isinstance(lp, dict) else None
            if not isinstance(top, list) or not top or not isinstance(top[0], dict):
                raise LLMServerError("response lacks logprobs.top_logprobs[0]", url, 200, raw)
            alternatives = top[0]
            out = []
            for choice in req.choices:
                val = alternatives.get(choice)
                if val is None:
                    raise LLMServerError(
                        f"choice {choice!r} is not among the top {self.top_logprobs} next tokens; without "
                        "echo only single-token choices that rank in top_logprobs can be scored",
                        url,
                        200,
                        raw,
                    )
                if not _finite(val):
                    raise LLMServerError(f"log-prob of {choice!r} is not a finite number: {val!r}", url, 200, raw)
                out.append(float(val))
            return np.array(out, dtype=np.float64)

        return self._map(one, list(requests))

    # -- generation -----------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        """One continuation per prompt via ``/chat/completions`` (or ``/completions``)."""
        self.model_name  # noqa: B018

        def one(prompt: str) -> str:
            body: dict[str, Any] = {"max_tokens": int(max_new_tokens), "temperature": float(temperature)}
            if stop:
                body["stop"] = list(stop)
            if self.generation == "chat":
                path, body["messages"] = "/chat/completions", [{"role": "user", "content": prompt}]
            else:
                path, body["prompt"] = "/completions", prompt
            obj, raw = self._post(path, body)
            first = _first_choice(obj, self.base_url + path, raw)
            if self.generation == "chat":
                message = first.get("message")
                text = message.get("content") if isinstance(message, dict) else None
            else:
                text = first.get("text")
            if not isinstance(text, str):
                field = "message.content" if self.generation == "chat" else "text"
                raise LLMServerError(f"response lacks choices[0].{field}", self.base_url + path, 200, raw)
            return text

        return self._map(one, list(prompts))


def _first_choice(obj: dict[str, Any], url: str, raw: str) -> dict[str, Any]:
    choices = obj.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        n = len(choices) if isinstance(choices, list) else "no"
        raise LLMServerError(f"expected exactly one entry in 'choices', got {n}", url, 200, raw)
    return choices[0]


def _choice_tokens(tokens: Sequence[str], choice: str, generated: str) -> list[int] | None:
    """Indices of the echoed tokens that spell ``choice``, found from the end; ``None`` if they do not.

    The last tokens must spell ``generated`` (a trailing token with no text, e.g. an end-of-sequence
    marker, may follow when nothing was generated); the tokens before them must end with ``choice``. A
    token reaching back into the prompt counts toward the choice; tokens with no text just before the
    choice are byte fragments of its first character when that character is not ASCII.
    """
    ends = [len(tokens)]
    if not generated and tokens:
        ends.append(len(tokens) - 1)  # a generated special token that adds no text
    for end in ends:
        k, acc = end, ""
        while len(acc) < len(generated) and k > 0:
            k -= 1
            acc = tokens[k] + acc
        if acc != generated:
            continue
        while k > 0 and tokens[k - 1] == "":
            k -= 1  # text-less tokens after the choice were generated (its last token carries text)
        j, acc = k, ""
        while len(acc) < len(choice) and j > 0:
            j -= 1
            acc = tokens[j] + acc
        if not acc.endswith(choice) or j == k:
            continue
        if not choice[0].isascii():
            while j > 0 and tokens[j - 1] == "":
                j -= 1
        return list(range(j, k))
    return None


def _split(requests: Sequence[ChoiceRequest], scores: Sequence[float | None]) -> list[np.ndarray]:
    out, i = [], 0
    for req in requests:
        n = len(req.choices)
        out.append(np.array(scores[i : i + n], dtype=np.float64))
        i += n
    return out


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form only)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
