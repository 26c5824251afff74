"""Compiled skip-gram with negative sampling (numba, the ``fast`` extra; imported only when installed).

word2vec's SGNS update (Mikolov et al., 2013) over users' item sequences, as item2vec applies it (Barkan &
Koenigstein, 2016), in one thread and in the order of the C implementation:

* for each sequence (user, time order) and each position ``t``, a window ``b`` is drawn uniformly from
  ``1..window`` (word2vec's reduced window; ``b = window`` without ``shrink_window``) and every context position
  ``s`` with ``0 < |s - t| <= b`` gives one update of the context item's input vector ``v`` against the centre
  item's output vector (label 1) and ``negatives`` output vectors drawn from the unigram^``ns_power``
  distribution through word2vec's unigram table (label 0; a draw equal to the centre item is skipped);
* plain SGD, ``g = (label - s(<v, u>)) * lr_t * w_t * w_s`` (event weights), the learning rate decaying linearly
  from ``lr`` to ``lr * 1e-4`` over all positions of all epochs;
* random numbers from word2vec's linear congruential generator, so a seed fixes the result.
"""

from __future__ import annotations

import math

import numba
import numpy as np

LCG_MULTIPLIER = np.uint64(25214903917)  # word2vec's next_random
LCG_INCREMENT = np.uint64(11)


@numba.njit(cache=True, inline="always")
def _next(state: np.uint64) -> np.uint64:
    return state * LCG_MULTIPLIER + LCG_INCREMENT


def noise_table(probabilities: np.ndarray, min_size: int = 1 << 20) -> np.ndarray:
    """word2vec's unigram table: item ``i`` fills a share ``probabilities[i]`` of the slots, so a uniform slot is a
    draw from the noise distribution. Its length is a power of two, at least ``min_size`` and 64 slots per item."""
    size = 1 << (max(min_size, 64 * len(probabilities)) - 1).bit_length()
    slots = np.searchsorted(np.cumsum(probabilities), (np.arange(size) + 0.5) / size, side="right")
    return np.minimum(slots, len(probabilities) - 1).astype(np.int32)


@numba.njit(cache=True, fastmath=True)
def train_sgns(
    seq_ptr: np.ndarray,
    seq_items: np.ndarray,
    seq_weights: np.ndarray,
    noise_table: np.ndarray,
    in_vectors: np.ndarray,
    out_vectors: np.ndarray,
    window: int,
    shrink_window: bool,
    negatives: int,
    epochs: int,
    lr: float,
    seed: int,
) -> np.ndarray:
    """Train ``in_vectors`` / ``out_vectors`` (float32, updated in place) and return each epoch's mean loss per
    update, ``-log s(<v, u_pos>) - sum log s(-<v, u_neg>)``. ``seq_ptr`` / ``seq_items``: the sequences in CSR
    form; ``seq_weights``: one weight per event; ``noise_table``: :func:`noise_table` (power-of-two length)."""
    dim = in_vectors.shape[1]
    n_positions = len(seq_items)
    total = max(1, epochs * n_positions)
    min_lr = lr * 1e-4
    table_mask = np.uint64(len(noise_table) - 1)
    state = np.uint64(seed) * np.uint64(2654435761) + np.uint64(1)
    grad = np.zeros(dim, np.float32)
    losses = np.zeros(epochs)
    done = 0
    for epoch in range(epochs):
        loss, updates = 0.0, 0
        for user in range(len(seq_ptr) - 1):
            start, stop = seq_ptr[user], seq_ptr[user + 1]
            for t in range(start, stop):
                alpha = max(min_lr, lr * (1.0 - done / total))
                done += 1
                centre = seq_items[t]
                reach = window
                if shrink_window:
                    state = _next(state)
                    reach = 1 + int((state >> np.uint64(16)) % np.uint64(window))
                for s in range(max(start, t - reach), min(stop, t + reach + 1)):
                    if s == t:
                        continue
                    context = seq_items[s]
                    step = alpha * seq_weights[t] * seq_weights[s]
                    grad[:] = 0.0
                    likelihood = 1.0  # of this update's labels; one log per update
                    for d in range(negatives + 1):
                        if d == 0:
                            target, label = centre, 1.0
                        else:
                            state = _next(state)
                            target = noise_table[(state >> np.uint64(16)) & table_mask]
                            if target == centre:
                                continue
                            label = 0.0
                        dot = np.float32(0.0)
                        for k in range(dim):
                            dot += in_vectors[context, k] * out_vectors[target, k]
                        dot = min(max(dot, -30.0), 30.0)
                        prob = 1.0 / (1.0 + math.exp(-dot))
                        likelihood *= prob if label == 1.0 else 1.0 - prob
                        g = np.float32((label - prob) * step)
                        for k in range(dim):
                            grad[k] += g * out_vectors[target, k]
                            out_vectors[target, k] += g * in_vectors[context, k]
                    for k in range(dim):
                        in_vectors[context, k] += grad[k]
                    loss -= math.log(likelihood)
                    updates += 1
        losses[epoch] = loss / max(1, updates)
    return losses
