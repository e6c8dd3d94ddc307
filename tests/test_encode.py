from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from synthrank.evaluate import encode as encode_module
from synthrank.evaluate.encode import (
    EmbeddingCache,
    EncodeStats,
    encode_texts,
    length_buckets,
    model_fingerprint,
)

TEXTS = [
    "short",
    "a somewhat longer text about retrieval " * 3,
    "mid length text here",
    "the longest text of all, " * 20,
    "x",
    "retrieval with graded relevance",
    "another one",
]


@pytest.fixture
def tiny(tiny_model_dir: Path) -> SentenceTransformer:
    return SentenceTransformer(str(tiny_model_dir), device="cpu")


def test_length_buckets_sort_longest_first() -> None:
    batches = length_buckets([3, 10, 1, 7, 7], 2)
    assert [b.tolist() for b in batches] == [[1, 3], [4, 0], [2]]


def test_encoding_matches_sentence_transformers(tiny: SentenceTransformer) -> None:
    ours = encode_texts(tiny, TEXTS, role="document", batch_size=3, progress=False)
    reference = tiny.encode_document(TEXTS, batch_size=64, convert_to_numpy=True)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_cache_skips_encoding_and_is_keyed_by_role(
    tiny: SentenceTransformer, tmp_path: Path
) -> None:
    cache = EmbeddingCache(tmp_path / "emb")
    first_stats, second_stats, query_stats = EncodeStats(), EncodeStats(), EncodeStats()
    first = encode_texts(
        tiny, TEXTS, role="document", cache=cache, progress=False, stats=first_stats
    )
    second = encode_texts(
        tiny, TEXTS, role="document", cache=cache, progress=False, stats=second_stats
    )
    encode_texts(tiny, TEXTS, role="query", cache=cache, progress=False, stats=query_stats)
    assert (first_stats.encoded, first_stats.from_cache) == (7, 0)
    assert (second_stats.encoded, second_stats.from_cache) == (0, 7)
    assert query_stats.from_cache == 0
    np.testing.assert_array_equal(first, second)


def test_fingerprint_follows_weights_and_settings(tiny: SentenceTransformer) -> None:
    before = model_fingerprint(tiny)
    assert model_fingerprint(tiny) == before
    tiny.max_seq_length = 64
    shorter = model_fingerprint(tiny)
    assert shorter != before
    with torch.no_grad():
        next(tiny.parameters()).add_(1e-3)
    assert model_fingerprint(tiny) != shorter


def test_interrupted_encoding_resumes_from_cached_chunks(
    tiny: SentenceTransformer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = EmbeddingCache(tmp_path / "emb")
    real_encode_chunk = encode_module._encode_chunk
    calls = []

    def crash_on_third_chunk(model, texts, role, batch_size, bar):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode_chunk(model, texts, role, batch_size, bar)

    monkeypatch.setattr(encode_module, "_encode_chunk", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        encode_texts(tiny, TEXTS, role="document", cache=cache, chunk_size=3, progress=False)
    monkeypatch.setattr(encode_module, "_encode_chunk", real_encode_chunk)
    stats = EncodeStats()
    resumed = encode_texts(
        tiny, TEXTS, role="document", cache=cache, chunk_size=3, progress=False, stats=stats
    )
    assert (stats.from_cache, stats.encoded) == (6, 1)
    np.testing.assert_allclose(
        resumed, encode_texts(tiny, TEXTS, role="document", progress=False), atol=1e-6
    )
    assert not list((tmp_path / "emb").rglob("*.tmp")), "no partial cache file is left"
