"""Shared-prefix beam search (``HFModel.beam_search``) against Transformers' beam search, on a small random
Llama with a word-level tokenizer (no download, seconds of CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.factories import save_tiny_llama

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

WORDS = [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def random_llm(tmp_path_factory: pytest.TempPathFactory) -> object:
    """A 2-layer Llama with large random weights (well-separated scores, no ties) as an :class:`HFModel`."""
    from llmboost.llm.hf import HFModel

    folder = save_tiny_llama(
        tmp_path_factory.mktemp("random-llama"), WORDS, layers=2, initializer_range=0.5, whitespace=True
    )
    return HFModel(str(folder), batch_size=4, precision="fp32")


class EvenTokensThenEOS:
    """Allows only even word ids for the first ``n`` generated tokens, then only EOS (a stand-in for a trie)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = torch.cumprod((input_ids >= 2).flip(1) & (input_ids % 2 == 0).flip(1), 1).sum(1)
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        allowed[:, 2::2] = True
        allowed[generated >= self.n] = False
        allowed[generated >= self.n, 1] = True
        return scores.masked_fill(~allowed, float("-inf"))


def _prompts(n: int) -> list[str]:
    rng = np.random.default_rng(1)  # odd words only, so the processor can count the generated (even) ones
    return [" ".join(rng.choice(WORDS[1::2], int(rng.integers(1, 9)))) for _ in range(n)]


def _teacher_forced(model: object, prompt: str, new: list[int], processor: object) -> float:
    ids = torch.tensor([model.encode(prompt) + new])
    with torch.no_grad():
        log_probs = torch.log_softmax(model.model(input_ids=ids).logits[0].float(), -1)
    start = ids.shape[1] - len(new)
    return sum(
        float(processor(ids[:, : start + t], log_probs[start + t - 1][None])[0, token]) for t, token in enumerate(new)
    )


def test_shared_prefix_beam_search_finds_transformers_beams_with_their_exact_scores(random_llm: object) -> None:
    prompts = _prompts(10)  # different lengths: left-padded batches of 4
    processor = EvenTokensThenEOS(n=3)
    shared = random_llm.beam_search(prompts, max_new_tokens=4, num_beams=6, logits_processor=processor)
    reference = random_llm.generate_ids(
        prompts, max_new_tokens=4, num_beams=6, num_return_sequences=6, logits_processor=processor
    )
    assert [[seq for seq, _ in beams] for beams in shared] == reference
    for prompt, beams in zip(prompts, shared, strict=True):
        scores = [score for _, score in beams]
        assert scores == sorted(scores, reverse=True)
        for seq, score in beams:
            assert len(seq) == 4 and seq[-1] == 1 and all(t % 2 == 0 for t in seq[:3])
            assert score == pytest.approx(_teacher_forced(random_llm, prompt, seq, processor), abs=1e-4)


def test_beam_search_drops_impossible_beams_and_stops_at_eos(random_llm: object) -> None:
    only_two = EvenTokensThenEOS(n=1)  # one even token then EOS: 20 possible answers
    (beams,) = random_llm.beam_search(_prompts(1), max_new_tokens=5, num_beams=25, logits_processor=only_two)
    assert len(beams) == 20 and {len(seq) for seq, _ in beams} == {2}  # token + EOS, nothing after EOS
    assert len({tuple(seq) for seq, _ in beams}) == 20
    with pytest.raises(ValueError, match="num_beams"):
        random_llm.beam_search(_prompts(1), max_new_tokens=2, num_beams=0)
