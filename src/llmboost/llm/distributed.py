"""Scale a scoring job out over a Ray cluster (the ``ray`` extra; vLLM workers with the ``vllm`` extra).

:func:`run_job_ray` does what :func:`llmboost.llm.jobs.run_job` does, with the model calls spread over Ray
workers:

1. the driver asks the :class:`~llmboost.llm.store.ScoreStore` which keys are missing and cuts them into
   batches exactly as ``run_job`` would (same order, same ``batch_size``);
2. Ray Data shards those batches over ``num_workers`` actors (``Dataset.map_batches`` with an actor
   class); each actor loads its own model once, from a model setting string or a factory;
3. the driver streams the results back and commits each block of results in one transaction, so the
   store has a single writer and a killed driver resumes like ``run_job``.

Because a batch holds the same requests in both paths, a local backend gives the same numbers here as in a
single process (bit for bit when the thread count matches: Ray runs each 1-CPU actor with one thread).

**Experimental, opt-in:** only ``engine="vllm"`` makes each actor wrap vLLM's offline engine in
:class:`VLLMLanguageModel` (``"auto"`` never picks it). That path needs a GPU and vLLM, neither of which the
project's CI has, so it is written against vLLM's documented API but has not been run by any test; it warns
when used. The tested path (Transformers, or an OpenAI-compatible client) is the default.
"""

from __future__ import annotations

import gc
import json
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from llmboost._optional import require
from llmboost.llm.base import ChoiceRequest, LanguageModel, per_request
from llmboost.llm.jobs import Inputs, JobError, JobResult, Request, batches, score_batch
from llmboost.llm.store import ScoreStore, TemplateRef, Value, template_key

__all__ = ["ModelSource", "ScoringActor", "VLLMLanguageModel", "build_model", "run_job_ray"]

ModelSource = str | Callable[[], LanguageModel]
"""A model setting string (see :mod:`llmboost.llm.models`) or a picklable zero-argument factory."""

Engine = Literal["auto", "local", "vllm"]


# -- building a model inside a worker ----------------------------------------------------------------


VLLM_WARNING = (
    "engine='vllm' is experimental: VLLMLanguageModel has not been tested on a GPU yet; "
    "compare a sample of its scores with engine='local' before relying on them"
)


def build_model(model: ModelSource, engine: Engine = "local", **model_kwargs: Any) -> LanguageModel:
    """Build a model in the current process: call the factory, or load the setting string.

    ``engine="local"`` (and ``"auto"``, the same) uses :func:`llmboost.llm.models.load_model` (Transformers,
    or an OpenAI-compatible client for ``http(s)://`` settings). ``"vllm"`` — an explicit, experimental opt-in,
    untested until a GPU run tests it — uses :class:`VLLMLanguageModel` and warns. ``model_kwargs`` go to the
    backend.
    """
    if callable(model):
        if model_kwargs:
            raise TypeError("model_kwargs apply to model settings, not to factories")
        return model()
    if engine not in ("auto", "local", "vllm"):
        raise ValueError(f"engine must be 'auto', 'local' or 'vllm', got {engine!r}")
    if engine == "vllm":
        warnings.warn(VLLM_WARNING, UserWarning, stacklevel=2)
        return VLLMLanguageModel(model, **model_kwargs)
    from llmboost.llm.models import load_model

    return load_model(model, **model_kwargs)


class VLLMLanguageModel:
    """A :class:`LanguageModel` on vLLM's offline engine (``vllm.LLM``), for GPU workers.

    Choice log-probs: the prompt and each choice are tokenized separately (as
    :class:`~llmboost.llm.hf.HFModel` does), concatenated, and sent as token ids with
    ``SamplingParams(max_tokens=1, prompt_logprobs=0)``; the log-probs vLLM reports for the choice's
    prompt positions are summed. ``llm_kwargs`` go to ``vllm.LLM`` (``dtype``, ``gpu_memory_utilization``,
    ``tensor_parallel_size``, ...). The fingerprint is the same as the local backend's for the same
    weights (GGUF, folder or Hub id; adapters are not supported here).

    **Experimental:** not exercised by the test suite (it needs vLLM and a GPU); used only with
    ``engine="vllm"``.
    """

    def __init__(self, model: str, **llm_kwargs: Any) -> None:
        vllm = require("vllm", "vllm")
        from llmboost.llm.models import fingerprint_of, model_identity, resolve_model

        spec = resolve_model(model)
        if spec.kind not in ("gguf", "folder", "hub"):
            raise ValueError(f"VLLMLanguageModel loads GGUF files, folders and Hub ids, not {spec.kind!r}")
        self.setting = model
        self._fingerprint = fingerprint_of(model_identity(spec))
        self._vllm = vllm
        self.llm = vllm.LLM(model=spec.location, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    @property
    def fingerprint(self) -> str:
        """Same identity as the local backend: file hashes, or Hub id and revision."""
        return self._fingerprint

    def choice_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[np.ndarray]:
        """Summed log-prob of each choice's tokens after its prompt, from vLLM ``prompt_logprobs``."""
        from vllm.inputs import TokensPrompt

        from llmboost.llm.loading import encode_continuation, encode_prompt

        prompts, spans = [], []
        for req in requests:
            pids = encode_prompt(self.tokenizer, req.prompt)
            if not pids:
                raise ValueError("empty prompt")
            for choice in req.choices:
                cids = encode_continuation(self.tokenizer, choice)
                if not cids:
                    raise ValueError(f"choice {choice!r} has no tokens")
                prompts.append(TokensPrompt(prompt_token_ids=pids + cids))
                spans.append((len(pids), cids))
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        scores = []
        for out, (start, cids) in zip(outputs, spans, strict=True):
            plp = out.prompt_logprobs
            total = 0.0
            for j, tok in enumerate(cids):
                entry = plp[start + j] if plp is not None else None
                if entry is None or tok not in entry:
                    raise RuntimeError(f"vLLM returned no prompt log-prob for token {tok} at {start + j}")
                total += float(entry[tok].logprob)
            scores.append(total)
        return per_request(requests, scores)

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        """Greedy or sampled continuations of raw-text prompts."""
        params = self._vllm.SamplingParams(
            max_tokens=max_new_tokens, temperature=temperature, stop=list(stop) if stop else None
        )
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


# -- the Ray side ------------------------------------------------------------------------------------


def _encode_batch(batch_id: int, batch: list[tuple[str, Request]]) -> dict[str, Any]:
    items = [
        {"key": k, "prompt": r.prompt, "choices": list(r.choices)}
        if isinstance(r, ChoiceRequest)
        else {"key": k, "text": r}
        for k, r in batch
    ]
    return {"batch_id": batch_id, "payload": json.dumps(items)}


def _decode_batch(payload: str) -> tuple[list[str], list[Request]]:
    keys, reqs = [], []
    for item in json.loads(payload):
        keys.append(item["key"])
        if "text" in item:
            reqs.append(item["text"])
        else:
            reqs.append(ChoiceRequest(item["prompt"], tuple(item["choices"])))
    return keys, reqs


class ScoringActor:
    """Ray Data actor: loads one model at start-up and scores one pre-cut batch per input row."""

    def __init__(
        self,
        model: ModelSource,
        engine: Engine,
        model_kwargs: Mapping[str, Any],
        generate_kwargs: Mapping[str, Any] | None,
    ) -> None:
        self.model = build_model(model, engine, **dict(model_kwargs))
        self.fingerprint = self.model.fingerprint
        self.generate_kwargs = generate_kwargs

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, results = [], []
        for batch_id, payload in zip(rows["batch_id"], rows["payload"], strict=True):
            keys, reqs = _decode_batch(str(payload))
            values = score_batch(self.model, keys, reqs, self.generate_kwargs)
            # JSON keeps float64 exactly (shortest round-trip repr); -inf is written as -Infinity.
            out = {
                k: ({"text": v} if isinstance(v, str) else {"vector": [float(x) for x in v]})  # type: ignore[union-attr]
                for k, v in values.items()
            }
            ids.append(int(batch_id))
            results.append(json.dumps({"fingerprint": self.fingerprint, "values": out}))
        return {"batch_id": np.array(ids, dtype=np.int64), "result": np.array(results, dtype=object)}


def _stream_results(
    ray: Any,
    pending: list[dict[str, Any]],
    model: ModelSource,
    engine: Engine,
    model_kwargs: Mapping[str, Any],
    generate_kwargs: Mapping[str, Any] | None,
    num_workers: int,
    resources: Mapping[str, Any],
) -> Iterator[list[str]]:
    """Score the pending batches on a Ray Data actor pool; yield each block's JSON results as they come."""
    ds = ray.data.from_items(pending, override_num_blocks=min(len(pending), 4 * num_workers))
    scored = ds.map_batches(
        ScoringActor,
        fn_constructor_kwargs={
            "model": model,
            "engine": engine,
            "model_kwargs": dict(model_kwargs),
            "generate_kwargs": dict(generate_kwargs) if generate_kwargs else None,
        },
        batch_size=1,  # one row = one pre-cut batch, so batches match run_job's exactly
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        **resources,
    )
    for block in scored.iter_batches(batch_size=None, batch_format="numpy"):
        yield [str(raw) for raw in block["result"]]


def _release(exc: BaseException) -> None:
    """Drop the tracebacks of a failed Ray Data run so its actors (and their CPUs/GPUs) are freed now.

    The frames of Ray Data's iterator hold the actor pool; a caller keeping the exception (as
    ``pytest.raises`` does) would otherwise keep the workers alive and starve the next job. The remote
    traceback stays in the message of Ray's exception.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        stack.extend([e.__cause__, e.__context__])
    gc.collect()


def _probe_fingerprint(model: ModelSource, engine: Engine, model_kwargs: Mapping[str, Any]) -> str:
    return build_model(model, engine, **dict(model_kwargs)).fingerprint


def run_job_ray(
    model: ModelSource,
    store: ScoreStore,
    template: TemplateRef,
    inputs: Inputs,
    batch_size: int = 16,
    *,
    num_workers: int = 2,
    num_cpus_per_worker: float = 1.0,
    num_gpus_per_worker: float = 0.0,
    engine: Engine = "local",
    model_kwargs: Mapping[str, Any] | None = None,
    fingerprint: str | None = None,
    generate_kwargs: Mapping[str, Any] | None = None,
    address: str | None = None,
    progress: bool = True,
) -> JobResult:
    """Run :func:`~llmboost.llm.jobs.run_job` with the model calls sharded over Ray workers.

    ``model`` is a model setting string (each worker loads it with ``engine`` — ``"vllm"`` is an experimental,
    untested opt-in, see :func:`build_model` — passing ``model_kwargs``)
    or a picklable factory returning a :class:`LanguageModel`. ``fingerprint`` is the model's store key;
    when ``None`` one Ray task loads the model once to read it (pass it to skip that load for big models).
    ``address`` is given to ``ray.init`` if Ray is not initialised yet (``None``: ``$RAY_ADDRESS`` or a
    local instance). Results are written by this (driver) process only, one transaction per result block.

    Raises :class:`~llmboost.llm.jobs.JobError` if a worker fails; everything committed stays stored and a
    rerun resumes.
    """
    template_version = template_key(template)
    ray = require("ray", "ray")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    model_kwargs = dict(model_kwargs or {})
    if not ray.is_initialized():
        ray.init(address=address)
    resources: dict[str, Any] = {"num_cpus": num_cpus_per_worker}
    if num_gpus_per_worker:
        resources["num_gpus"] = num_gpus_per_worker
    if fingerprint is None:
        probe = ray.remote(max_calls=1, **resources)(_probe_fingerprint)
        fingerprint = str(ray.get(probe.remote(model, engine, model_kwargs)))

    start = time.monotonic()
    result = JobResult(model_fp=fingerprint, template_version=template_version)
    pending = [
        _encode_batch(i, b)
        for i, b in enumerate(batches(store, fingerprint, template_version, inputs, batch_size, result=result))
    ]
    n_pending = result.total - result.skipped
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=result.total, initial=result.skipped, desc=f"scoring {template_version} on Ray", unit="req")
        bar.set_postfix(stored_before=result.skipped, workers=num_workers)
    stream: Iterator[list[str]] | None = None
    try:
        if pending:
            ray.data.DataContext.get_current().enable_progress_bars = progress
            stream = _stream_results(ray, pending, model, engine, model_kwargs, generate_kwargs, num_workers, resources)
            for block in stream:
                values: dict[str, Value] = {}
                for raw in block:
                    res = json.loads(raw)
                    if res["fingerprint"] != fingerprint:
                        raise RuntimeError(
                            f"a worker's model has fingerprint {res['fingerprint']!r}, not {fingerprint!r} "
                            "(different model files on different nodes?)"
                        )
                    for key, val in res["values"].items():
                        values[key] = val["text"] if "text" in val else np.array(val["vector"], dtype=np.float64)
                store.put_many(fingerprint, template_version, values, on_conflict="ignore")
                result.computed += len(values)
                result.batches += len(block)
                if bar is not None:
                    bar.update(len(values))
    except Exception as exc:
        result.seconds = time.monotonic() - start
        _release(exc)
        raise JobError(
            f"Ray scoring job {template_version!r} with model {fingerprint!r} failed after committing "
            f"{result.computed} of {n_pending} pending records ({result.skipped} were already stored; rerun "
            f"to resume): {type(exc).__name__}: {exc}",
            result,
        ) from exc
    finally:
        if stream is not None:
            stream.close()  # stops the actor pool if the loop body failed
            del stream
        if bar is not None:
            bar.close()
    result.seconds = time.monotonic() - start
    return result
