"""Torch's intra-op thread count, kept across code that may change it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Run a block (a parallel compiled kernel, a method's stage) without letting it change torch's thread count.

    With numba's OpenMP threading layer a parallel kernel (and, once its pool runs, ``numba.get_num_threads()``)
    sets the process's OpenMP thread count to numba's, and that count is also torch's intra-op one. After an
    ItemCF or Swing fit every torch operation of the process ran on numba's threads, not on the count the user
    set, and reductions summed in another order: the CEMG stage that ran after LLM-I2I in one ``llmboost
    reproduce`` process (its report header read "2 threads") trained on 2 threads where it ran on 1 alone. This
    restores torch's count when the block ends; ``llmboost reproduce`` also runs each stage inside it, so a
    stage's own thread setting does not carry over to the next."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
