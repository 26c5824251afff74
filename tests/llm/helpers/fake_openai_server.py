"""A scriptable in-process OpenAI-compatible HTTP server on 127.0.0.1, for testing every fault path.

By default it behaves like a tiny completions server: text is split into whitespace-led "tokens"
(``"Answer: yes"`` -> ``["Answer:", " yes"]``), each with a deterministic log-prob, and ``echo`` returns
the prompt's tokens with ``text_offset``. ``faults`` is a queue of overrides, each used for one
request: ``None`` (the normal answer), ``(status, body)``, ``(status, body, headers)``, ``("sleep", s)``
(wait, then answer normally), ``("close",)`` (drop the connection without answering), or a callable
``(path, payload) -> (status, body)``.

``/v1/completions`` takes a list of prompts (one choice per prompt, with its ``index``) like vLLM and OpenAI;
``multi_prompt=False`` makes it answer a list of more than one prompt with HTTP 500, as llama-cpp-python does.
``ends_after``: prompts ending with one of these strings have the end of text as their most likely next token, so
(without echo, like llama.cpp) the answer has no token and no alternatives, unless the request sets ``min_tokens``.
``connections`` counts the TCP connections accepted (to test keep-alive).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fake_llm import fake_logprob

MODEL = "fake-served-model"
GENERATED = " ok"


def tokenize(text: str) -> list[tuple[str, int]]:
    """Whitespace-led tokens with their character offsets."""
    return [(m.group(), m.start()) for m in re.finditer(r"\s*\S+|\s+$", text)]


def token_logprob(text: str, offset: int, token: str) -> float:
    return fake_logprob(text[:offset], token)


def expected_choice_logprob(prompt: str, choice: str) -> float:
    """What a correct client must compute for ``choice`` after ``prompt`` from this server's echo."""
    full = prompt + choice
    toks = tokenize(full)
    total = 0.0
    for i, (tok, off) in enumerate(toks):
        end = toks[i + 1][1] if i + 1 < len(toks) else off + len(tok)
        if end > len(prompt):
            total += token_logprob(full, off, tok)
    return total


def top_alternatives(prompt: str) -> dict[str, float]:
    """The next-token alternatives the fake server offers in top_logprobs (no echo)."""
    return {c: fake_logprob(prompt, c) for c in (" yes", " no", " A", " B")}


def answer(
    path: str,
    payload: dict[str, Any] | None,
    echo: bool | str = True,
    multi_prompt: bool = True,
    ends_after: tuple[str, ...] = (),
) -> tuple[int, Any]:
    """The normal answer of the fake server.

    ``echo=False``: a server that ignores ``echo``; ``echo="shifted"``: one that reports each echoed token's
    log-prob from the next position and drops the generated token (llama-cpp-python without BOS).
    """
    if path == "/v1/models":
        return 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
    assert payload is not None
    if path == "/v1/chat/completions":
        content = "chat:" + payload["messages"][-1]["content"][-10:]
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    if path != "/v1/completions":
        return 404, {"error": {"message": f"no route {path}"}}
    prompts = payload["prompt"]
    if isinstance(prompts, str):
        return 200, {"choices": [_completion(prompts, payload, echo, ends_after)]}
    if len(prompts) > 1 and not multi_prompt:
        return 500, {"error": {"message": "AssertionError: len(body.prompt) <= 1"}}
    choices = [{**_completion(p, payload, echo, ends_after), "index": i} for i, p in enumerate(prompts)]
    return 200, {"choices": choices}


def _completion(prompt: str, payload: dict[str, Any], echo: bool | str, ends_after: tuple[str, ...]) -> dict[str, Any]:
    """The choice answering one prompt."""
    if not payload.get("logprobs"):
        return {"index": 0, "text": " completion of " + prompt[-5:], "logprobs": None}
    if prompt.endswith(ends_after) and not payload.get("echo") and not payload.get("min_tokens"):
        empty: dict[str, list] = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
        return {"index": 0, "text": "", "logprobs": empty, "finish_reason": "stop"}
    full = prompt + GENERATED
    toks = tokenize(full)
    n_prompt = len(tokenize(prompt))
    if echo and payload.get("echo"):
        shown, text = toks, full
    else:
        shown, text = toks[n_prompt:], GENERATED
    logprobs = {
        "tokens": [t for t, _ in shown],
        "text_offset": [o for _, o in shown],
        "token_logprobs": [token_logprob(full, o, t) for t, o in shown],
        "top_logprobs": [top_alternatives(full[:o]) for _, o in shown],
    }
    if echo and payload.get("echo"):
        logprobs["token_logprobs"][0] = None
        logprobs["top_logprobs"][0] = None
    if echo == "shifted" and payload.get("echo"):
        for key in logprobs:
            logprobs[key] = logprobs[key][:-1]
        logprobs["token_logprobs"] = [None] + [token_logprob(full, o + len(t), t) for t, o in shown[1:-1]]
    return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}


class FakeOpenAIServer:
    """Start with ``with FakeOpenAIServer() as srv:``; ``srv.url`` is the base URL."""

    def __init__(self, *, echo: bool | str = True, multi_prompt: bool = True, ends_after: tuple[str, ...] = ()) -> None:
        self.echo = echo
        self.multi_prompt = multi_prompt
        self.ends_after = ends_after
        self.connections = 0
        self._count_lock = threading.Lock()
        self.faults: deque[Any] = deque()
        self.requests: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def paths(self) -> list[str]:
        return [p for _, p, _, _ in self.requests]

    def answer(self, path: str, payload: dict[str, Any] | None) -> tuple[int, Any]:
        return answer(path, payload, echo=self.echo, multi_prompt=self.multi_prompt, ends_after=self.ends_after)

    # -- HTTP plumbing --------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:  # once per TCP connection
                super().setup()
                with outer._count_lock:
                    outer.connections += 1

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                payload = json.loads(raw) if raw else None
                outer.requests.append((method, self.path, payload, dict(self.headers)))
                fault = outer.faults.popleft() if outer.faults else None
                headers: dict[str, str] = {}
                if fault is None:
                    status, body = outer.answer(self.path, payload)
                elif callable(fault):
                    status, body = fault(self.path, payload)
                elif fault[0] == "close":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                elif fault[0] == "sleep":
                    time.sleep(fault[1])
                    status, body = outer.answer(self.path, payload)
                else:
                    status, body = fault[0], fault[1]
                    if len(fault) > 2:
                        headers = fault[2]
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        return Handler


Fault = tuple[Any, ...] | Callable[[str, Any], tuple[int, Any]]
