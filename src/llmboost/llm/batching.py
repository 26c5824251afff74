"""The one padded batch loop of the local backend: scoring, generation and tracing all run token rows through it.

Rows are sorted by length and cut into batches of at most ``batch_size`` rows and (optionally) ``max_tokens``
padded tokens; each batch comes as a :class:`PaddedBatch` (token ids, attention mask, and where each row starts)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass
class PaddedBatch:
    """``rows`` (indices into the sequences given) padded to one width: ``ids`` and ``mask`` are ``[n, width]``
    (CPU tensors) and row ``b``'s tokens stand at columns ``offsets[b] : offsets[b] + lengths[b]``."""

    rows: list[int]
    ids: torch.Tensor
    mask: torch.Tensor
    offsets: list[int]
    lengths: list[int]

    @property
    def width(self) -> int:
        """Padded length."""
        return int(self.ids.shape[1])


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None, extra: int = 0
) -> list[list[int]]:
    """Row indices in length-sorted batches of at most ``batch_size`` rows and, when ``max_tokens`` is given,
    at most ``max_tokens`` padded tokens (each row counted ``extra`` tokens longer)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    cur: list[int] = []
    for r in order:
        width = lengths[r] + extra  # sorted ascending: the newest row is the longest
        full = len(cur) + 1 > batch_size or (max_tokens is not None and (len(cur) + 1) * width > max_tokens)
        if cur and full:
            batches.append(cur)
            cur = []
        cur.append(r)
    if cur:
        batches.append(cur)
    return batches


def pad(
    seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Token rows padded to the longest with ``pad_id`` on ``side`` (``"left"`` | ``"right"``):
    ``(ids [n, width], mask [n, width], offsets)``."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', not {side!r}")
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    offsets = []
    for b, s in enumerate(seqs):
        off = width - len(s) if side == "left" else 0
        ids[b, off : off + len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[b, off : off + len(s)] = 1
        offsets.append(off)
    return ids, mask, offsets


def padded_batches(
    seqs: Sequence[Sequence[int]],
    pad_id: int,
    *,
    batch_size: int,
    max_tokens: int | None = None,
    side: str = "right",
    extra: int = 0,
) -> Iterator[PaddedBatch]:
    """``seqs`` in length-sorted, padded batches (see :func:`length_batches` and :func:`pad`)."""
    lengths = [len(s) for s in seqs]
    for rows in length_batches(lengths, batch_size, max_tokens, extra):
        ids, mask, offsets = pad([seqs[r] for r in rows], pad_id, side)
        yield PaddedBatch(rows=rows, ids=ids, mask=mask, offsets=offsets, lengths=[lengths[r] for r in rows])
