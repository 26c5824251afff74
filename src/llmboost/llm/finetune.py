"""Fine-tuning a local model on text tasks built from interaction data (LoRA through PEFT, or full).

Tasks, built from one user's history (item titles, oldest first) by the example builders:

* :func:`next_item_examples` — "history -> next item" (generation; :data:`~llmboost.llm.prompts.NEXT_ITEM`);
* :func:`yes_no_examples` — "history + item -> Yes/No" (the true next item vs a sampled negative);
* :func:`pairwise_examples` — "history + two items -> A/B" (the true next item vs a negative, random slot).

Each :class:`TextExample` keeps its template and fields, so training formats prompts exactly as inference does
(:meth:`~llmboost.llm.prompts.PromptTemplate.prompt`, chat template included). :func:`finetune` tokenizes every
example once, trains on the answer tokens only, and *packs* examples into rows of ``pack_length`` tokens
(first-fit decreasing); position ids restart at each example and Transformers turns those restarts into a
block-diagonal causal mask, so packed examples never see each other and almost no compute goes to padding.
The head is applied only where a loss is taken. The output folder loads like any model setting: an adapter
folder (``adapter_config.json``) for LoRA, a full checkpoint for ``method="full"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from llmboost._optional import require
from llmboost.jsonio import digest
from llmboost.llm.loading import encode_continuation, encode_prompt, load_transformers_model, resize_embeddings
from llmboost.llm.models import ADAPTER_META, TRAINING_LOG, resolve_model
from llmboost.llm.precision import precision_name, resolve_precision
from llmboost.llm.prompts import NEXT_ITEM, PAIRWISE, YES_NO, PromptTemplate, format_history

logger = logging.getLogger(__name__)
CHECKPOINT_DIR = ".checkpoint"  #: inside a fine-tune's output folder while it runs (see ``checkpoint_minutes``)

IGNORE = -100


@dataclass(frozen=True)
class TextExample:
    """One training example: a template, its fields, and the answer the model should give."""

    template: PromptTemplate
    fields: Mapping[str, str] = field(hash=False)
    answer: str
    task: str = ""


def _targets(n: int, min_history: int, last_n: int | None) -> range:
    start = max(min_history, 1)
    if last_n is not None:
        start = max(start, n - last_n)
    return range(start, n)


def _sample_negative(rng: np.random.Generator, negatives: Sequence[str], exclude: set[str]) -> str | None:
    for _ in range(50):
        cand = negatives[int(rng.integers(len(negatives)))]
        if cand not in exclude:
            return cand
    return None


def next_item_examples(
    history: Sequence[str],
    *,
    template: PromptTemplate = NEXT_ITEM,
    max_history: int = 20,
    min_history: int = 3,
    last_n: int | None = None,
    **fields: str,
) -> list[TextExample]:
    """ "history -> next item": for each position ``t >= min_history`` (only the last ``last_n`` if given), the
    previous ``max_history`` titles and the title at ``t``."""
    return [
        TextExample(
            template,
            {"history": format_history(history[:t], max_history), **fields},
            history[t],
            "next_item",
        )
        for t in _targets(len(history), min_history, last_n)
    ]


def yes_no_examples(
    history: Sequence[str],
    negatives: Sequence[str],
    *,
    template: PromptTemplate = YES_NO,
    max_history: int = 20,
    min_history: int = 3,
    last_n: int | None = None,
    seed: int = 0,
    **fields: str,
) -> list[TextExample]:
    """ "history + item -> Yes/No": the true next item answered with the template's first choice, a sampled
    item the user never chose (from ``negatives``) with the second."""
    rng = np.random.default_rng(seed)
    seen = set(history)
    yes, no = template.choices
    out: list[TextExample] = []
    for t in _targets(len(history), min_history, last_n):
        h = format_history(history[:t], max_history)
        out.append(TextExample(template, {"history": h, "item": history[t], **fields}, yes, "yes_no"))
        neg = _sample_negative(rng, negatives, seen)
        if neg is not None:
            out.append(TextExample(template, {"history": h, "item": neg, **fields}, no, "yes_no"))
    return out


def pairwise_examples(
    history: Sequence[str],
    negatives: Sequence[str],
    *,
    template: PromptTemplate = PAIRWISE,
    max_history: int = 20,
    min_history: int = 3,
    last_n: int | None = None,
    both_orders: bool = False,
    seed: int = 0,
    **fields: str,
) -> list[TextExample]:
    """ "history + two items -> which one": the true next item against a sampled negative, in a random slot
    (or in both slots with ``both_orders``); the answer is the slot's choice ("A"/"B")."""
    rng = np.random.default_rng(seed)
    seen = set(history)
    first, second = template.choices
    out: list[TextExample] = []
    for t in _targets(len(history), min_history, last_n):
        neg = _sample_negative(rng, negatives, seen)
        if neg is None:
            continue
        h = format_history(history[:t], max_history)
        pos_first = [True, False] if both_orders else [bool(rng.integers(2))]
        for pf in pos_first:
            a, b = (history[t], neg) if pf else (neg, history[t])
            out.append(
                TextExample(
                    template, {"history": h, "item_a": a, "item_b": b, **fields}, first if pf else second, "pairwise"
                )
            )
    return out


def build_examples(
    histories: Mapping[Any, Sequence[str]] | Sequence[Sequence[str]],
    negatives: Sequence[str],
    tasks: Sequence[str] = ("next_item", "yes_no", "pairwise"),
    *,
    seed: int = 0,
    **kwargs: Any,
) -> list[TextExample]:
    """Examples of the chosen ``tasks`` for many users' histories (keyword arguments go to every builder)."""
    items = histories.values() if isinstance(histories, Mapping) else histories
    out: list[TextExample] = []
    for u, h in enumerate(items):
        h = list(h)
        if "next_item" in tasks:
            out += next_item_examples(h, **kwargs)
        if "yes_no" in tasks:
            out += yes_no_examples(h, negatives, seed=seed + 2 * u, **kwargs)
        if "pairwise" in tasks:
            out += pairwise_examples(h, negatives, seed=seed + 2 * u + 1, **kwargs)
    return out


# ---------------------------------------------------------------------------------------------- tokenization


@dataclass
class TokenizedExample:
    """Token ids and labels (``-100`` where no loss is taken) of one example."""

    ids: list[int]
    labels: list[int]


def tokenize_examples(
    tokenizer: Any, examples: Sequence[TextExample], max_length: int = 1024, train_on_prompt: bool = False
) -> list[TokenizedExample]:
    """Format each example as inference does (chat template when the tokenizer has one) and tokenize it once.

    Generation tasks (templates without choices) end with the EOS token so the model learns to stop. Examples
    longer than ``max_length`` lose prompt tokens from the left.
    """
    out: list[TokenizedExample] = []
    eos = tokenizer.eos_token_id
    for ex in examples:
        prompt = ex.template.prompt(tokenizer, **ex.fields)
        p_ids = encode_prompt(tokenizer, prompt)
        c_ids = encode_continuation(tokenizer, ex.template.answer_text(ex.answer, tokenizer))
        if not ex.template.choices and eos is not None:
            c_ids = [*c_ids, int(eos)]
        ids = p_ids + c_ids
        labels = ([*p_ids[1:]] if train_on_prompt else [IGNORE] * (len(p_ids) - 1)) + c_ids
        labels = [IGNORE, *labels]
        if len(ids) > max_length:
            ids, labels = ids[-max_length:], labels[-max_length:]
            labels[0] = IGNORE
        out.append(TokenizedExample(ids, labels))
    return out


def pack(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """First-fit-decreasing packing of sequences (by length) into rows of at most ``max_length`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        for k, f in enumerate(free):
            if lengths[i] <= f:
                rows[k].append(i)
                free[k] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(max_length - lengths[i])
    return rows


@dataclass
class PackedBatch:
    """A padded batch of packed rows: ``input_ids``, per-example ``position_ids``, ``labels`` and the number of
    real (non-pad) tokens."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    tokens: int


def make_batches(
    examples: Sequence[TokenizedExample],
    max_length: int,
    batch_tokens: int,
    pad_id: int,
    rng: np.random.Generator | None = None,
) -> list[PackedBatch]:
    """Pack examples into rows, then rows into batches of at most ``batch_tokens`` padded tokens.

    Padding at the end of a row gets its own restarting positions (so it is a separate, label-free sequence).
    """
    idx = np.arange(len(examples))
    if rng is not None:
        rng.shuffle(idx)
    lengths = [len(examples[i].ids) for i in idx]
    rows = [[int(idx[j]) for j in row] for row in pack(lengths, max_length)]
    if rng is not None:
        rng.shuffle(rows)  # type: ignore[arg-type]
    rows_per_batch = max(1, batch_tokens // max_length)
    batches: list[PackedBatch] = []
    for start in range(0, len(rows), rows_per_batch):
        chunk = rows[start : start + rows_per_batch]
        width = max(sum(len(examples[i].ids) for i in row) for row in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        pos = torch.zeros((len(chunk), width), dtype=torch.long)
        lab = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
        n_tok = 0
        for b, row in enumerate(chunk):
            t = 0
            for i in row:
                ex = examples[i]
                n = len(ex.ids)
                ids[b, t : t + n] = torch.tensor(ex.ids)
                lab[b, t : t + n] = torch.tensor(ex.labels)
                pos[b, t : t + n] = torch.arange(n)
                t += n
            n_tok += t
            pos[b, t:] = torch.arange(width - t)
        batches.append(PackedBatch(ids, pos, lab, n_tok))
    return batches


def packed_loss(backbone: Any, lm_head: Any, batch: PackedBatch, device: torch.device) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over labelled positions of a packed batch (head applied there only);
    returns (loss, number of labelled tokens)."""
    ids = batch.input_ids.to(device)
    hidden = backbone(input_ids=ids, position_ids=batch.position_ids.to(device), use_cache=False).last_hidden_state
    labels = batch.labels.to(device)
    sel = labels[:, 1:] != IGNORE
    h = hidden[:, :-1][sel]
    target = labels[:, 1:][sel]
    logits = lm_head(h).float()
    return torch.nn.functional.cross_entropy(logits, target), int(target.numel())


# ---------------------------------------------------------------------------------------------- training


def finetune(
    model_setting: str,
    examples: Sequence[TextExample],
    output_dir: str | os.PathLike[str],
    method: str = "lora",
    r: int = 16,
    epochs: int = 1,
    lr: float | None = None,
    max_steps: int | None = None,
    batch_tokens: int = 4096,
    *,
    max_length: int = 1024,
    pack_length: int = 512,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    warmup_ratio: float = 0.05,
    weight_decay: float = 0.0,
    train_on_prompt: bool = False,
    seed: int = 0,
    device: str = "cpu",
    dtype: str | torch.dtype = "fp32",
    precision: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    eval_examples: Sequence[TextExample] | None = None,
    log_every: int = 10,
    new_tokens: Sequence[str] = (),
    train_new_embeddings: bool = True,
    progress: bool = True,
    checkpoint_minutes: float | None = 10.0,
) -> Path:
    """Fine-tune ``model_setting`` on ``examples`` and save to ``output_dir``; returns the folder.

    ``method="lora"`` trains rank-``r`` LoRA adapters (``alpha`` default ``2 r``) on ``target_modules`` and
    saves a PEFT adapter whose base model is ``model_setting``: ``HFModel(model_setting, adapter=path)`` or
    ``HFModel(path)`` loads it. ``method="full"`` trains every weight and saves a full checkpoint.
    ``lr`` defaults to 2e-4 (LoRA) / 2e-5 (full); AdamW with linear warm-up and linear decay to 10 %.
    ``precision`` (``"auto"`` | ``"fp32"`` | ``"bf16"``) is the compute precision: ``bf16`` runs forward/backward
    under bfloat16 autocast (weights and optimizer stay in ``dtype``); ``auto`` picks bf16 only where the device
    runs it faster than float32 (CPUs with AMX, CUDA GPUs with bf16) and float32 elsewhere
    (:func:`~llmboost.llm.precision.resolve_precision`): emulated bf16 is ~50x slower than float32.
    Examples longer than ``max_length`` tokens are cut from the left; examples are packed into rows of
    ``pack_length`` tokens (or the longest example); each step is one batch of at most ``batch_tokens`` tokens;
    ``max_steps`` (if given) overrides ``epochs``. LoRA dropout defaults to 0 (its random masks cost ~10 % of a
    CPU step). The training log (losses, tokens/s) is written to ``output_dir/llmboost_finetune.json`` (see
    :func:`read_training_log`); with ``eval_examples`` it also holds their mean loss before and after training
    (``eval_loss_before`` / ``eval_loss_after``). ``progress`` shows a bar over the optimizer steps (loss,
    tokens/s).

    Resumable: after the first step that ends ``checkpoint_minutes`` after the last save, the trainable weights,
    optimizer, schedule, data order, RNG and logs go to ``output_dir/.checkpoint`` (written atomically); a later
    call with the same settings and examples resumes there and ends bit-identical to an uninterrupted run on
    CPU, so a stopped job loses at most that much training. The checkpoint is deleted once the model is
    saved; ``None`` disables it.
    """
    if method not in ("lora", "full"):
        raise ValueError("method must be 'lora' or 'full'")
    compute = resolve_precision(precision, device)
    if compute == torch.float16:
        raise ValueError("precision 'fp16' is not supported for fine-tuning (no loss scaling); use 'bf16' or 'fp32'")
    autocast_bf16 = compute == torch.bfloat16
    if not examples:
        raise ValueError("no training examples")
    spec = resolve_model(model_setting)
    if spec.kind in ("url", "adapter"):
        raise ValueError(f"cannot fine-tune {model_setting!r}: give a base model (GGUF, folder, Hub id)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch.device(device)
    t_load = time.perf_counter()
    model, tokenizer = load_transformers_model(spec, device=device, precision=dtype, cache_dir=cache_dir)
    model.config.use_cache = False
    new_ids: list[int] = []
    if new_tokens:
        tokenizer.add_tokens(list(new_tokens))
        resize_embeddings(model, len(tokenizer))
        new_ids = [int(i) for i in tokenizer.convert_tokens_to_ids(list(new_tokens))]
    if method == "lora":
        peft = require("peft", "llm")
        cfg = peft.LoraConfig(
            r=r,
            lora_alpha=alpha if alpha is not None else 2 * r,
            lora_dropout=dropout,
            target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
            task_type="CAUSAL_LM",
            trainable_token_indices=new_ids if new_ids and train_new_embeddings else None,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            model = peft.get_peft_model(model, cfg)
        inner = model.get_base_model()
    else:
        inner = model
    model.train()
    backbone = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
    lm_head = inner.get_output_embeddings()
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    load_s = time.perf_counter() - t_load

    tokenized = tokenize_examples(tokenizer, examples, max_length=max_length, train_on_prompt=train_on_prompt)
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    # rows of pack_length tokens (at least the longest example): longer rows pack more examples but the
    # block-diagonal attention mask costs row_length^2 on CPU
    row_len = max(pack_length, *(len(t.ids) for t in tokenized))
    per_epoch = len(make_batches(tokenized, row_len, batch_tokens, pad_id))
    total = epochs * per_epoch if max_steps is None else int(max_steps)  # max_steps overrides epochs
    base_lr = lr if lr is not None else (2e-4 if method == "lora" else 2e-5)
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=weight_decay)
    warm = max(1, math.ceil(warmup_ratio * total)) if warmup_ratio > 0 else 0

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 1.0 - 0.9 * (step - warm) / max(1, total - warm)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    eval_tok = (
        tokenize_examples(tokenizer, eval_examples, max_length=max_length, train_on_prompt=train_on_prompt)
        if eval_examples
        else None
    )

    def evaluate() -> float | None:
        if not eval_tok:
            return None
        model.eval()
        total = count = 0.0
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            rows = max(pack_length, *(len(t.ids) for t in eval_tok))
            for batch in make_batches(eval_tok, rows, batch_tokens, pad_id):
                loss, n = packed_loss(backbone, lm_head, batch, dev)
                total += float(loss) * n
                count += n
        model.train()
        return total / max(count, 1)

    checkpoint = _Checkpoint(
        Path(output_dir) / CHECKPOINT_DIR,
        checkpoint_minutes,
        digest(
            {
                "model": model_setting,
                "method": method,
                "r": r,
                "alpha": alpha,
                "dropout": dropout,
                "target_modules": target_modules if isinstance(target_modules, str) else list(target_modules),
                "lr": base_lr,
                "total": total,
                "batch_tokens": batch_tokens,
                "row_len": row_len,
                "warmup_ratio": warmup_ratio,
                "weight_decay": weight_decay,
                "seed": seed,
                "dtype": str(dtype),
                "precision": precision_name(compute),
                "new_tokens": list(new_tokens),
                "train_new_embeddings": train_new_embeddings,
                "examples": _examples_digest(tokenized),
            },
            24,
        ),
    )
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    resumed = checkpoint.load(trainable, opt, sched, rng)
    resumed_at = int(resumed["step"]) if resumed else None
    # the loop's state: counters, per-step logs, and where in its epoch's batches training stands
    run: dict[str, Any] = resumed or {
        "step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "epoch_rng": rng.bit_generator.state,
        "train_s": 0.0,
        "eval_before": evaluate(),
        "losses": [],
        "step_tokens": [],
        "step_targets": [],
        "step_seconds": [],
        "step_epoch": [],
    }
    eval_before = run["eval_before"]
    losses: list[float] = run["losses"]
    step_tokens: list[int] = run["step_tokens"]
    step_targets: list[int] = run["step_targets"]
    step_seconds: list[float] = run["step_seconds"]
    step_epoch: list[int] = run["step_epoch"]
    train_s = float(run["train_s"])
    step, epoch = int(run["step"]), int(run["epoch"])
    bar = tqdm(total=total, initial=step, desc=f"fine-tune ({method})", unit="step", disable=not progress)
    while step < total:
        run["epoch_rng"] = rng.bit_generator.state  # restoring it regenerates this epoch's batch order
        skip = run["batch_in_epoch"]  # > 0 only in the epoch a resumed run stopped in
        for batch in make_batches(tokenized, row_len, batch_tokens, pad_id, rng=rng)[skip:]:
            if step >= total:
                break
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                loss, n_target = packed_loss(backbone, lm_head, batch, dev)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step_seconds.append(time.perf_counter() - t0)
            train_s += step_seconds[-1]
            losses.append(float(loss.detach()))
            step_tokens.append(batch.tokens)
            step_targets.append(n_target)
            step_epoch.append(epoch)
            step += 1
            run["batch_in_epoch"] += 1
            run |= {"step": step, "epoch": epoch, "train_s": train_s}
            checkpoint.maybe_save(run, trainable, opt, sched)
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{sum(step_tokens) / train_s:.0f}", refresh=False)
            if log_every and step % log_every == 0:
                logger.info("step %d/%d loss %.4f %.0f tokens/s", step, total, losses[-1], sum(step_tokens) / train_s)
        epoch += 1
        run["batch_in_epoch"] = 0
    bar.close()

    eval_after = evaluate()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    base_setting = _portable_setting(model_setting)
    if method == "lora":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            model.save_pretrained(out)
        cfg_path = out / "adapter_config.json"
        adapter_cfg = json.loads(cfg_path.read_text())
        adapter_cfg["base_model_name_or_path"] = base_setting
        cfg_path.write_text(json.dumps(adapter_cfg, indent=2, sort_keys=True) + "\n")
        (out / ADAPTER_META).write_text(json.dumps({"base_model": base_setting}, indent=1) + "\n")
        if new_ids:  # the adapter's vocabulary differs from the base model's: reload with this tokenizer
            tokenizer.save_pretrained(out)
    else:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    log = {
        "base_model": base_setting,
        "method": method,
        "r": r if method == "lora" else None,
        "alpha": (alpha if alpha is not None else 2 * r) if method == "lora" else None,
        "lr": base_lr,
        "steps": step,
        "epochs": epoch,
        "examples": len(examples),
        "tasks": sorted({e.task for e in examples}),
        "templates": sorted({e.template.fingerprint for e in examples}),
        "batch_tokens": batch_tokens,
        "max_length": max_length,
        "row_length": row_len,
        "trainable_params": n_trainable,
        "train_tokens": int(sum(step_tokens)),
        "train_seconds": train_s,
        "tokens_per_s": sum(step_tokens) / train_s if train_s > 0 else None,
        "load_seconds": load_s,
        "precision": precision_name(compute),
        "new_tokens": list(new_tokens),
        "losses": losses,
        "epoch_losses": _epoch_means(losses, step_targets, step_epoch),
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "step_tokens": step_tokens,
        "step_seconds": step_seconds,
        "resumed_at_step": resumed_at,
        "threads": torch.get_num_threads(),
        "device": str(dev),
    }
    (out / TRAINING_LOG).write_text(json.dumps(log, indent=1) + "\n")
    checkpoint.remove()
    return out


def _examples_digest(examples: Sequence[TokenizedExample]) -> str:
    """SHA-256 of the token ids and labels of every example, in order."""
    h = hashlib.sha256()
    for t in examples:
        h.update(np.asarray([len(t.ids)], np.int64).tobytes())
        h.update(np.asarray(t.ids, np.int64).tobytes())
        h.update(np.asarray(t.labels, np.int64).tobytes())
    return h.hexdigest()


class _Checkpoint:
    """The resumable state of one fine-tune, saved at step boundaries at most every ``minutes`` (0: every
    step) under a key of its settings and examples; a checkpoint with another key is ignored."""

    def __init__(self, folder: Path, minutes: float | None, key: str) -> None:
        self.folder, self.minutes, self.key = folder, minutes, key
        self.path = folder / "state.pt"
        self.last = time.monotonic()

    def load(self, trainable: dict[str, torch.nn.Parameter], opt: Any, sched: Any, rng: np.random.Generator) -> Any:
        """Restore weights, optimizer, schedule and RNGs and return the loop's state, or ``None``."""
        if self.minutes is None or not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state.get("key") != self.key or set(state["params"]) != set(trainable):
            logger.info("fine-tune: ignoring %s (other settings or examples)", self.path)
            return None
        with torch.no_grad():
            for name, p in trainable.items():
                p.copy_(state["params"][name])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        run = state["run"]
        rng.bit_generator.state = run["epoch_rng"]
        logger.info("fine-tune: resuming at step %d from %s", run["step"], self.path)
        return run

    def maybe_save(self, run: dict[str, Any], trainable: dict[str, torch.nn.Parameter], opt: Any, sched: Any) -> None:
        if self.minutes is None or time.monotonic() - self.last < 60.0 * self.minutes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {
            "key": self.key,
            "run": run,
            "params": {name: p.detach().clone() for name, p in trainable.items()},
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.path.with_name(f".state.{os.getpid()}.tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)
        self.last = time.monotonic()

    def remove(self) -> None:
        if self.path.exists():
            self.path.unlink()
        if self.folder.exists() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def _epoch_means(losses: list[float], weights: list[int], epochs: list[int]) -> list[float]:
    """Per-epoch mean loss, weighted by each step's number of target tokens."""
    out = []
    for e in sorted(set(epochs)):
        idx = [i for i, x in enumerate(epochs) if x == e]
        w = sum(weights[i] for i in idx)
        out.append(sum(losses[i] * weights[i] for i in idx) / max(w, 1))
    return out


def _portable_setting(setting: str) -> str:
    """A local path made absolute (so the adapter finds its base from anywhere); other settings as is."""
    p = Path(setting).expanduser()
    return str(p.resolve()) if p.exists() else setting


def read_training_log(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The training log :func:`finetune` wrote into ``path``."""
    return dict(json.loads((Path(path) / TRAINING_LOG).read_text()))
