"""Next-token sampling for the batched llama.cpp decoder, as a pure function of the logits.

It follows the order of llama-cpp-python's default chat sampler chain, so a batched run draws
from the same distribution as a sequential one: keep the ``top_k`` largest logits; with
``p = softmax(logits)`` over those, keep the smallest prefix (by decreasing p) whose mass
reaches ``top_p``, then the tokens with ``p >= min_p * max(p)``; finally draw from
``softmax(logits / temperature)`` over what is left. A temperature of 0 is greedy decoding.
"""

from __future__ import annotations

import numpy as np

TOP_K = 40
MIN_P = 0.05


def candidate_distribution(
    logits: np.ndarray,
    temperature: float,
    top_p: float,
    *,
    top_k: int = TOP_K,
    min_p: float = MIN_P,
) -> tuple[np.ndarray, np.ndarray]:
    """The token ids that may be drawn and their probabilities (summing to 1), per the chain
    in the module docstring; ``temperature`` must be positive."""
    k = min(top_k, logits.shape[0])
    ids = np.argpartition(logits, -k)[-k:]
    values = logits[ids].astype(np.float64)
    order = np.argsort(-values, kind="stable")
    ids, values = ids[order], values[order]
    probs = np.exp(values - values[0])
    probs /= probs.sum()
    keep = int(np.searchsorted(np.cumsum(probs), top_p) + 1) if top_p < 1.0 else k
    keep = min(max(keep, 1), k)
    kept = probs[:keep] >= min_p * probs[0]
    ids, values = ids[:keep][kept], values[:keep][kept]
    scaled = np.exp((values - values[0]) / temperature)
    return ids, scaled / scaled.sum()


def sample_token(
    logits: np.ndarray,
    temperature: float,
    top_p: float,
    rng: np.random.Generator,
    *,
    top_k: int = TOP_K,
    min_p: float = MIN_P,
) -> int:
    """One token id drawn from ``logits`` (one row, over the vocabulary)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    ids, probs = candidate_distribution(logits, temperature, top_p, top_k=top_k, min_p=min_p)
    return int(ids[rng.choice(len(ids), p=probs)])
