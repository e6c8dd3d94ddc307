"""The batched decoder's sampler against a direct transcription of llama.cpp's sampler chain
(top-k, top-p, min-p, temperature) and against draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthrank.llm.backends.sampling import candidate_distribution, sample_token


def chain_by_hand(logits, temperature, top_p, top_k, min_p):
    """llama.cpp's order, written out token by token on a plain list."""
    ranked = sorted(range(len(logits)), key=lambda i: -logits[i])[:top_k]
    z = sum(math.exp(logits[i]) for i in ranked)
    kept, mass = [], 0.0
    for i in ranked:
        kept.append(i)
        mass += math.exp(logits[i]) / z
        if mass >= top_p:
            break
    best = math.exp(logits[kept[0]]) / z
    kept = [i for i in kept if math.exp(logits[i]) / z >= min_p * best]
    weights = {i: math.exp(logits[i] / temperature) for i in kept}
    total = sum(weights.values())
    return {i: w / total for i, w in weights.items()}


@pytest.mark.parametrize("seed", range(20))
def test_candidates_match_the_chain_written_by_hand(seed):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=60) * rng.uniform(0.5, 4)).astype(np.float32)
    temperature, top_p = rng.uniform(0.2, 1.5), rng.uniform(0.5, 1.0)
    top_k, min_p = int(rng.integers(1, 70)), rng.uniform(0, 0.2)
    ids, probs = candidate_distribution(logits, temperature, top_p, top_k=top_k, min_p=min_p)
    expected = chain_by_hand(logits.astype(float).tolist(), temperature, top_p, top_k, min_p)
    assert set(ids.tolist()) == set(expected)
    for i, p in zip(ids.tolist(), probs.tolist(), strict=True):
        assert p == pytest.approx(expected[i], rel=1e-9)


def test_small_cases_by_hand():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    ids, probs = candidate_distribution(logits, 1.0, 0.75, top_k=40, min_p=0.0)
    assert ids.tolist() == [0, 1] and probs.tolist() == pytest.approx([0.625, 0.375])
    ids, _ = candidate_distribution(logits, 1.0, 1.0, top_k=40, min_p=0.2)
    assert ids.tolist() == [0, 1, 2]  # 0.05 < 0.2 * 0.5
    ids, _ = candidate_distribution(logits, 1.0, 1.0, top_k=2, min_p=0.0)
    assert ids.tolist() == [0, 1]


def test_draws_follow_the_distribution_and_zero_temperature_is_greedy():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    rng = np.random.default_rng(0)
    draws = np.bincount(
        [sample_token(logits, 1.0, 1.0, rng, min_p=0.0) for _ in range(20_000)], minlength=4
    )
    assert draws / draws.sum() == pytest.approx([0.4, 0.3, 0.2, 0.1], abs=0.015)
    assert sample_token(np.array([0.1, 2.0, 1.9]), 0.0, 0.5, rng) == 1
    again = [sample_token(logits, 0.8, 0.95, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(again)) == 1  # the same seed draws the same token
