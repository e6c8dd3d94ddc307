"""Top-k search over embeddings: exact by blocked matrix products, or approximate with FAISS.

Exact search scores a block of queries against a block of the corpus at a time and merges each
block's top-k into a running top-k, so memory is bounded by ``query_block * corpus_block``
scores whatever the corpus size.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SearchMethod = Literal["exact", "faiss-flat", "faiss-hnsw"]
SEARCH_METHODS: tuple[str, ...] = ("exact", "faiss-flat", "faiss-hnsw")


def exact_search(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    *,
    query_block: int = 1024,
    corpus_block: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` corpus rows by inner product for each query row.

    Returns ``(scores, indices)``, both ``[n_queries, min(k, n_corpus)]``, best first.
    """
    import torch

    k = min(k, len(corpus))
    corpus_t = torch.from_numpy(np.ascontiguousarray(corpus, dtype=np.float32))
    all_scores = np.empty((len(queries), k), dtype=np.float32)
    all_indices = np.empty((len(queries), k), dtype=np.int64)
    with torch.inference_mode():
        for q_start in range(0, len(queries), query_block):
            block = torch.from_numpy(
                np.ascontiguousarray(queries[q_start : q_start + query_block], dtype=np.float32)
            )
            best_scores = torch.full((len(block), 0), float("-inf"))
            best_indices = torch.empty((len(block), 0), dtype=torch.int64)
            for c_start in range(0, len(corpus_t), corpus_block):
                scores = block @ corpus_t[c_start : c_start + corpus_block].T
                top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                merged_scores = torch.cat([best_scores, top.values], dim=1)
                merged_indices = torch.cat([best_indices, top.indices + c_start], dim=1)
                keep = torch.topk(merged_scores, min(k, merged_scores.shape[1]), dim=1)
                best_scores = keep.values
                best_indices = torch.gather(merged_indices, 1, keep.indices)
            all_scores[q_start : q_start + len(block)] = best_scores.numpy()
            all_indices[q_start : q_start + len(block)] = best_indices.numpy()
    return all_scores, all_indices


def faiss_search(
    queries: np.ndarray, corpus: np.ndarray, k: int, *, method: SearchMethod = "faiss-hnsw"
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by inner product through FAISS: ``faiss-flat`` is exact, ``faiss-hnsw`` an
    HNSW graph (approximate, fast on corpora of millions). Needs ``pip install synthrank[faiss]``.
    """
    try:
        import faiss
    except ImportError as exc:
        from synthrank.errors import SynthrankError

        raise SynthrankError(
            f"search method {method} needs FAISS: pip install 'synthrank[faiss]'"
        ) from exc
    dim = corpus.shape[1]
    if method == "faiss-flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        index.hnsw.efSearch = max(2 * k, 128)
    index.add(np.ascontiguousarray(corpus, dtype=np.float32))
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    scores, indices = index.search(queries, min(k, len(corpus)))
    return scores, indices.astype(np.int64)


def search(
    queries: np.ndarray, corpus: np.ndarray, k: int, *, method: SearchMethod = "exact"
) -> tuple[np.ndarray, np.ndarray]:
    if method == "exact":
        return exact_search(queries, corpus, k)
    return faiss_search(queries, corpus, k, method=method)
