"""BM25 retrieval over a list of texts, the one used wherever synthrank needs lexical neighbours:
hard negatives for training, the round-trip filter of queries for documents, passages for the
LLM judge to grade."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bm25_search(
    documents: Sequence[str], queries: Sequence[str], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best documents of each query under BM25 (bm25s, its Okapi defaults, English
    stop words): document indices and scores, each of shape (queries, min(k, documents)), best
    first; equal scores keep bm25s's order, and documents sharing no term score 0."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(list(documents), stopwords="en", show_progress=False), show_progress=False
    )
    return retriever.retrieve(
        bm25s.tokenize(list(queries), stopwords="en", show_progress=False),
        k=min(k, len(documents)),
        show_progress=False,
    )
