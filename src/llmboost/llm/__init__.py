"""The LLM layer shared by all methods: one :class:`LanguageModel` interface and its backends.

* :mod:`~llmboost.llm.base` — the interface (:class:`LanguageModel`, :class:`ChoiceRequest`);
* :mod:`~llmboost.llm.models` — model settings (built-in SmolLM2, GGUF, folders, adapters, Hub ids, server URLs)
  and :func:`load_model`;
* :mod:`~llmboost.llm.precision` — the ``precision`` setting (``auto``: bf16 only where it beats float32);
* :mod:`~llmboost.llm.hf` — the local Transformers backend :class:`HFModel`, built from
  :mod:`~llmboost.llm.loading` (model and tokenizer), :mod:`~llmboost.llm.batching` (the padded batch loop),
  :mod:`~llmboost.llm.logprobs` (batched, prefix-sharing choice scoring), :mod:`~llmboost.llm.prefix` (its
  planner), :mod:`~llmboost.llm.attention` (its shared-prefix attention) and :mod:`~llmboost.llm.generation`;
* :mod:`~llmboost.llm.prompts` — versioned prompt templates;
* :mod:`~llmboost.llm.scoring` — pairwise preferences (both orders) and yes/no probabilities;
* :mod:`~llmboost.llm.tracing` — per-layer hidden states and per-head attention outputs (local models);
* :mod:`~llmboost.llm.finetune` — LoRA / full fine-tuning on interaction-derived text tasks;
* :mod:`~llmboost.llm.store` — the durable score store (SQLite, WAL), keyed by model, template version, input;
* :mod:`~llmboost.llm.jobs` — resumable scoring jobs that compute only what the store lacks;
* :mod:`~llmboost.llm.openai_client` — any OpenAI-compatible server (vLLM, llama.cpp, Ollama, hosted APIs);
* :mod:`~llmboost.llm.distributed` — the same jobs on Ray (the ``ray`` extra; vLLM workers with ``vllm``).

Transformers and PEFT (the ``llm`` extra) are imported only when a model is loaded.
"""

from llmboost.llm.base import ChoiceRequest, LanguageModel
from llmboost.llm.finetune import (
    TextExample,
    build_examples,
    finetune,
    next_item_examples,
    pairwise_examples,
    read_training_log,
    yes_no_examples,
)
from llmboost.llm.hf import HFModel
from llmboost.llm.jobs import JobError, JobResult, run_job
from llmboost.llm.models import DEFAULT_MODEL, ModelSpec, cache_root, dequantize_gguf, load_model, resolve_model
from llmboost.llm.precision import resolve_precision
from llmboost.llm.prompts import (
    NEXT_ITEM,
    PAIRWISE,
    TEMPLATES,
    YES_NO,
    PromptTemplate,
    format_history,
    get_template,
    register_template,
)
from llmboost.llm.scoring import (
    PairwiseScores,
    pairwise_preferences,
    pairwise_scores,
    run_pairwise_job,
    yes_logodds,
    yes_probabilities,
)
from llmboost.llm.store import Record, ScoreStore, StoreError, template_key
from llmboost.llm.tracing import Trace, trace

__all__ = [
    "DEFAULT_MODEL",
    "NEXT_ITEM",
    "PAIRWISE",
    "TEMPLATES",
    "YES_NO",
    "ChoiceRequest",
    "HFModel",
    "JobError",
    "JobResult",
    "LanguageModel",
    "ModelSpec",
    "PairwiseScores",
    "PromptTemplate",
    "Record",
    "ScoreStore",
    "StoreError",
    "TextExample",
    "Trace",
    "build_examples",
    "cache_root",
    "dequantize_gguf",
    "finetune",
    "format_history",
    "get_template",
    "load_model",
    "next_item_examples",
    "pairwise_examples",
    "pairwise_preferences",
    "pairwise_scores",
    "read_training_log",
    "register_template",
    "resolve_model",
    "resolve_precision",
    "run_job",
    "run_pairwise_job",
    "template_key",
    "trace",
    "yes_logodds",
    "yes_no_examples",
    "yes_probabilities",
]
