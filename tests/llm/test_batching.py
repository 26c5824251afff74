"""The padded batch loop shared by scoring, generation and tracing."""

from __future__ import annotations

import pytest
import torch

from llmboost.llm.batching import length_batches, pad, padded_batches


def test_length_batches_sorted_and_capped_by_rows_and_tokens():
    lengths = [5, 1, 3, 2, 8]
    assert length_batches(lengths, batch_size=2) == [[1, 3], [2, 0], [4]]
    # 3 rows of width 3 = 9 <= 12 tokens; a 4th row of width 5 would make 20
    assert length_batches(lengths, batch_size=10, max_tokens=12) == [[1, 3, 2], [0], [4]]
    # ``extra`` widens every row (the per-row prefix copy of the fallback scoring path)
    assert length_batches(lengths, batch_size=10, max_tokens=12, extra=2) == [[1, 3], [2], [0], [4]]
    with pytest.raises(ValueError, match="batch_size"):
        length_batches(lengths, batch_size=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_place_every_row_and_cover_each_once(side):
    seqs = [[7, 8, 9], [4], [1, 2], [5, 6, 7, 8]]
    seen = []
    for batch in padded_batches(seqs, pad_id=0, batch_size=3, side=side):
        for b, r in enumerate(batch.rows):
            off, n = batch.offsets[b], batch.lengths[b]
            assert batch.ids[b, off : off + n].tolist() == seqs[r]
            assert int(batch.mask[b].sum()) == n and bool(batch.mask[b, off : off + n].all())
            assert (off == batch.width - n) if side == "left" else (off == 0)
            seen.append(r)
    assert sorted(seen) == [0, 1, 2, 3]


def test_pad_rejects_unknown_side():
    ids, mask, offsets = pad([[1, 2], [3]], pad_id=9)
    assert ids.tolist() == [[1, 2], [3, 9]] and mask.dtype == torch.long and offsets == [0, 0]
    with pytest.raises(ValueError, match="padding side"):
        pad([[1]], pad_id=0, side="middle")
