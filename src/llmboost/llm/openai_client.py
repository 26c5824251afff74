"""A :class:`~llmboost.llm.base.LanguageModel` served over an OpenAI-compatible HTTP API.

Works with llama-cpp-python's server (``python -m llama_cpp.server``), vLLM (``vllm serve``), and any
server speaking the OpenAI *completions* API with ``logprobs``. Requests go through one keep-alive HTTP client
(``httpx2``, Pydantic's maintained fork of ``httpx``, or ``httpx``; the ``client`` extra), so a run of many
requests reuses its connections instead of opening one per request.

**Many prompts per request.** ``/v1/completions`` accepts a list of prompts (one answer per prompt, matched by
``index``): every completions call sends up to ``prompts_per_request`` prompts at once. With
``multi_prompt=None`` (the default) the first such request decides whether the server allows it: a server that
rejects a list (llama-cpp-python answers HTTP 500, Ollama 400) or answers it with the wrong number of choices is
remembered as single-prompt and asked one prompt per request from then on (``concurrency`` of them in flight).

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

import importlib
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Literal

import numpy as np

from llmboost._optional import MissingExtraError
from llmboost.llm.base import ChoiceRequest, per_request

__all__ = ["LLMServerError", "OpenAICompatibleModel"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_BUSY_STATUS = frozenset({408, 409, 425, 429, 503})
"""Statuses that say "not now" rather than "not this request": they never decide that lists are unsupported."""
_SNIPPET = 500


def http_client_module() -> ModuleType:
    """The keep-alive HTTP client library: ``httpx2`` (Pydantic's maintained fork of httpx), else ``httpx``."""
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise MissingExtraError(
        "'httpx2' (or 'httpx') is needed to talk to an OpenAI-compatible server but is not installed; "
        "install it with: pip install 'llmboost[client]'"
    )


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


def _ended_at_once(choice: dict[str, Any]) -> bool:
    """A completion that stopped before its first token (no tokens, ``finish_reason`` ``stop``)."""
    lp = choice.get("logprobs")
    return choice.get("finish_reason") == "stop" and isinstance(lp, dict) and not lp.get("tokens")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class OpenAICompatibleModel:
    """A model behind an OpenAI-compatible server (see the module docstring for how scores are computed).

    ``base_url`` is the server root or its ``/v1`` path. ``model`` is the served model's name (asked from
    ``/v1/models`` when ``None``). ``fingerprint`` defaults to ``"served:<model name>"``; pass the local
    model's fingerprint to share stored scores between a local and a served copy of the same weights.
    ``timeout`` is the socket timeout per request in seconds; a request is tried ``1 + max_retries`` times,
    waiting ``backoff * 2**attempt`` seconds (at most ``max_backoff``) between tries. ``concurrency``
    requests may be in flight at once (over as many kept-alive connections). ``prompts_per_request`` caps the
    prompts sent in one completions request and ``multi_prompt`` says whether the server takes a list of prompts
    (``None``: find out on the first request). ``echo`` (``None``: check once, then decide),
    ``echo_check_atol`` (tolerance of that check; llama.cpp's quantized batch paths differ by ~0.1 nat) and
    ``top_logprobs`` (alternatives asked for in the no-echo fallback; OpenAI allows 5, llama.cpp and vLLM more)
    choose how choices are scored, see the module docstring. ``close()`` (or ``with``) closes the connections.
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
        prompts_per_request: int = 32,
        multi_prompt: bool | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if generation not in ("chat", "completions"):
            raise ValueError(f"generation must be 'chat' or 'completions', got {generation!r}")
        if max_retries < 0 or timeout <= 0 or backoff < 0 or concurrency < 1 or top_logprobs < 1:
            raise ValueError("need max_retries >= 0, timeout > 0, backoff >= 0, concurrency >= 1, top_logprobs >= 1")
        if prompts_per_request < 1:
            raise ValueError(f"prompts_per_request must be >= 1, got {prompts_per_request}")
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
        self.prompts_per_request = int(prompts_per_request)
        self.multi_prompt = multi_prompt
        self._fingerprint = fingerprint
        self._lock = threading.RLock()
        self._client: Any = None

    def __repr__(self) -> str:
        return f"OpenAICompatibleModel({self.base_url!r}, model={self.model!r})"

    # -- HTTP -----------------------------------------------------------------------------------------

    def _http(self) -> Any:
        """The keep-alive HTTP client (made on first use; one connection pool shared by all threads)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    httpx = http_client_module()
                    headers = {"Accept": "application/json"}
                    if self.api_key:
                        headers["Authorization"] = f"Bearer {self.api_key}"
                    limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
                    self._client = httpx.Client(headers=headers, timeout=self.timeout, limits=limits)
        return self._client

    def close(self) -> None:
        """Close the kept-alive connections (a later request opens new ones)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> OpenAICompatibleModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _request(
        self, method: str, path: str, payload: dict[str, Any] | None = None, *, retry: bool = True
    ) -> tuple[dict[str, Any], str]:
        """Send one JSON request (with retries unless ``retry=False``); return ``(decoded JSON object, body)``."""
        httpx = http_client_module()
        client = self._http()
        url = self.base_url + path
        data = None if payload is None else json.dumps(payload).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        tries = self.max_retries + 1 if retry else 1
        last: LLMServerError | None = None
        retry_after: float | None = None
        for attempt in range(tries):
            if attempt:
                delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
                if retry_after is not None:
                    delay = min(max(delay, retry_after), self.max_backoff)
                logger.warning("retrying %s in %.2fs (attempt %d): %s", url, delay, attempt + 1, last)
                time.sleep(delay)
            try:
                resp = client.request(method, url, content=data, headers=headers)
            except httpx.TimeoutException as exc:
                last = LLMServerError(f"{method} {path} timed out ({type(exc).__name__}: {exc})", url)
                retry_after = None
                continue
            except httpx.TransportError as exc:
                last = LLMServerError(f"{method} {path} connection failed ({type(exc).__name__}: {exc})", url)
                retry_after = None
                continue
            status, text = resp.status_code, resp.text
            if status >= 400:
                err = LLMServerError(f"{method} {path} failed", url, status, text)
                if status not in _RETRY_STATUS and not 500 <= status < 600:
                    raise err
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                last = err
                continue
            try:
                obj = json.loads(text, parse_constant=_reject_constant)
            except ValueError as exc:
                raise LLMServerError(f"malformed JSON in response ({exc})", url, status, text) from None
            if not isinstance(obj, dict):
                raise LLMServerError("response is not a JSON object", url, status, text)
            return obj, text
        assert last is not None
        if not retry:
            raise last
        raise LLMServerError(
            f"gave up after {self.max_retries + 1} attempts; last error: {last}",
            last.url,
            last.status,
            last.body,
        )

    def _post(self, path: str, payload: dict[str, Any], *, retry: bool = True) -> tuple[dict[str, Any], str]:
        if self.model_name is not None:
            payload = {"model": self.model_name, **payload}
        return self._request("POST", path, payload, retry=retry)

    def _complete(self, prompts: Sequence[str], body: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
        """``/completions`` with ``body`` for each prompt: ``(choice object, response body)`` per prompt, in order.

        Up to ``prompts_per_request`` prompts go in one request where the server takes a list (decided on the
        first request that sends one, unless ``multi_prompt`` was given); otherwise one prompt per request."""
        self.model_name  # noqa: B018 - resolve once before any threads start
        prompts = list(prompts)
        done: list[tuple[dict[str, Any], str]] = []
        if self.multi_prompt is None and len(prompts) > 1 and self.prompts_per_request > 1:
            with self._lock:
                if self.multi_prompt is None:
                    head = prompts[: self.prompts_per_request]
                    got = self._probe_multi(head, body)
                    if got is not None:
                        done, prompts = got, prompts[len(head) :]
        size = self.prompts_per_request if self.multi_prompt else 1
        chunks = [prompts[i : i + size] for i in range(0, len(prompts), size)]
        for part in self._map(lambda chunk: self._complete_chunk(chunk, body), chunks):
            done.extend(part)
        return done

    def _complete_chunk(
        self, prompts: list[str], body: dict[str, Any], *, retry: bool = True
    ) -> list[tuple[dict[str, Any], str]]:
        payload = {"prompt": prompts[0] if len(prompts) == 1 else prompts, **body}
        obj, raw = self._post("/completions", payload, retry=retry)
        return [(c, raw) for c in _choices(obj, len(prompts), self.base_url + "/completions", raw)]

    def _probe_multi(self, prompts: list[str], body: dict[str, Any]) -> list[tuple[dict[str, Any], str]] | None:
        """Send a list of prompts once (no retries): the answers if the server took it, else ``None``, with
        :attr:`multi_prompt` set to what was learned (left undecided when the server was only busy or down)."""
        try:
            answers = self._complete_chunk(prompts, body, retry=False)
        except LLMServerError as exc:
            if exc.status is not None and exc.status not in _BUSY_STATUS:
                logger.warning("%s: a list of prompts was refused (%s); sending one prompt per request", self, exc)
                self.multi_prompt = False
            return None
        self.multi_prompt = True
        return answers

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
        return per_request(requests, self._score_echo(pairs))

    def _echo_is_sound(self, prompt: str) -> bool:
        """Check once that echoed prompt log-probs agree with the next-token log-prob the server reports.

        The server picks the next token ``t`` of ``prompt``; the echo of ``prompt + t`` must give ``t`` the
        same log-prob (within ``echo_check_atol``). Servers that ignore ``echo``, reject it, or report echoed
        log-probs shifted by one position (llama-cpp-python up to at least 0.3.36 does so for models whose
        tokenizer adds no BOS token) fail the check, and the client uses ``top_logprobs`` instead.
        """
        url = self.base_url + "/completions"
        ((first, raw),) = self._complete_first_token([prompt], {"max_tokens": 1, "temperature": 0.0, "logprobs": 1})
        lp = first.get("logprobs")
        tokens = lp.get("tokens") if isinstance(lp, dict) else None
        values = lp.get("token_logprobs") if isinstance(lp, dict) else None
        if not (isinstance(tokens, list) and isinstance(values, list) and tokens and values):
            raise LLMServerError("response lacks logprobs.tokens / token_logprobs", url, 200, raw)
        token, expected = tokens[0], values[0]
        if not isinstance(token, str) or not token or not _finite(expected):
            logger.warning("%s: cannot check echo (next token %r); trusting echoed log-probs", self, token)
            return True
        try:
            (echoed,) = self._score_echo([(prompt, token)])
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

    def _score_echo(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """log P(choice | prompt) for each ``(prompt, choice)``: the echoed log-probs of ``prompt + choice``."""
        for _, choice in pairs:
            if not choice:
                raise ValueError("choices must be non-empty strings")
        body = {"max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}
        answers = self._complete([p + c for p, c in pairs], body)
        url = self.base_url + "/completions"
        return [_echoed_choice(first, p, c, url, raw) for (p, c), (first, raw) in zip(pairs, answers, strict=True)]

    def _complete_first_token(self, prompts: Sequence[str], body: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
        """:meth:`_complete` for requests that read the first generated token (``max_tokens=1``, no echo).

        Where the most likely next token ends the text, llama.cpp stops before it and returns no token and no
        alternatives; those prompts are asked again with ``min_tokens=1`` (llama.cpp and vLLM take it), which
        keeps the end of text out of the first position (the other tokens' log-probs relative to each other do
        not change)."""
        answers = self._complete(prompts, body)
        ended = [i for i, (first, _) in enumerate(answers) if _ended_at_once(first)]
        if ended:
            again = self._complete([prompts[i] for i in ended], {**body, "min_tokens": 1})
            for i, answer in zip(ended, again, strict=True):
                answers[i] = answer
        return answers

    def _score_top(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        """No-echo fallback: each choice must be one of the ``top_logprobs`` next tokens after the prompt."""
        url = self.base_url + "/completions"
        body = {"max_tokens": 1, "temperature": 0.0, "logprobs": self.top_logprobs}
        answers = self._complete_first_token([r.prompt for r in requests], body)
        out = []
        for req, (first, raw) in zip(requests, answers, strict=True):
            lp = first.get("logprobs")
            top = lp.get("top_logprobs") if isinstance(lp, dict) else None
            if not isinstance(top, list) or not top or not isinstance(top[0], dict):
                raise LLMServerError("response lacks logprobs.top_logprobs[0]", url, 200, raw)
            alternatives = top[0]
            values = []
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
                values.append(float(val))
            out.append(np.array(values, dtype=np.float64))
        return out

    # -- generation -----------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        """One continuation per prompt via ``/chat/completions`` (one prompt per request) or ``/completions``
        (many prompts per request where the server allows)."""
        self.model_name  # noqa: B018
        body: dict[str, Any] = {"max_tokens": int(max_new_tokens), "temperature": float(temperature)}
        if stop:
            body["stop"] = list(stop)
        if self.generation == "completions":
            url = self.base_url + "/completions"
            texts = []
            for first, raw in self._complete(prompts, body):
                text = first.get("text")
                if not isinstance(text, str):
                    raise LLMServerError("response lacks choices[0].text", url, 200, raw)
                texts.append(text)
            return texts

        def one(prompt: str) -> str:
            path = "/chat/completions"
            obj, raw = self._post(path, {**body, "messages": [{"role": "user", "content": prompt}]})
            message = _choices(obj, 1, self.base_url + path, raw)[0].get("message")
            text = message.get("content") if isinstance(message, dict) else None
            if not isinstance(text, str):
                raise LLMServerError("response lacks choices[0].message.content", self.base_url + path, 200, raw)
            return text

        return self._map(one, list(prompts))


def _choices(obj: dict[str, Any], n: int, url: str, raw: str) -> list[dict[str, Any]]:
    """The ``n`` answers of a completions response (one per prompt), in prompt order (by ``index`` if given)."""
    choices = obj.get("choices")
    if not isinstance(choices, list) or len(choices) != n or not all(isinstance(c, dict) for c in choices):
        got = len(choices) if isinstance(choices, list) else "no"
        what = "exactly one entry" if n == 1 else f"{n} entries (one per prompt)"
        raise LLMServerError(f"expected {what} in 'choices', got {got}", url, 200, raw)
    if n > 1:
        index = [c.get("index") for c in choices]
        if all(isinstance(i, int) for i in index):
            if sorted(index) != list(range(n)):  # type: ignore[type-var]
                raise LLMServerError(f"'choices' indices {index} are not 0..{n - 1}", url, 200, raw)
            choices = sorted(choices, key=lambda c: c["index"])
    return choices


def _echoed_choice(first: dict[str, Any], prompt: str, choice: str, url: str, raw: str) -> float:
    """log P(choice | prompt): the sum of the echoed log-probs of the tokens spelling ``choice``.

    Tokens are matched from the end of the echoed text (``prompt + choice + generated``) by their strings, so
    servers whose ``text_offset`` skips special tokens (llama.cpp) or counts bytes work too.
    """
    full = prompt + choice
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


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form only)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
