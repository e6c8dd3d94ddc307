from __future__ import annotations

import numpy as np
import pytest

from synthrank.evaluate import exact_search, faiss_search


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((37, 16)).astype(np.float32), rng.standard_normal((250, 16)).astype(
        np.float32
    )


@pytest.mark.parametrize(("query_block", "corpus_block"), [(1024, 65536), (7, 13), (1, 1)])
def test_blocked_search_equals_full_sort(query_block: int, corpus_block: int) -> None:
    queries, corpus = _data()
    scores, indices = exact_search(
        queries, corpus, 20, query_block=query_block, corpus_block=corpus_block
    )
    full = queries @ corpus.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-5)


def test_k_larger_than_corpus() -> None:
    queries, corpus = _data()
    scores, indices = exact_search(queries, corpus[:5], 10)
    assert scores.shape == indices.shape == (37, 5)
    assert sorted(indices[0]) == [0, 1, 2, 3, 4]


def test_faiss_flat_is_exact_and_hnsw_close() -> None:
    pytest.importorskip("faiss")
    queries, corpus = _data(1)
    _, exact = exact_search(queries, corpus, 10)
    _, flat = faiss_search(queries, corpus, 10, method="faiss-flat")
    np.testing.assert_array_equal(flat, exact)
    _, hnsw = faiss_search(queries, corpus, 10, method="faiss-hnsw")
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw, exact, strict=True)])
    assert overlap >= 0.95
