"""The one dataset format: BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).

Real benchmarks and synthetic datasets share it, so every stage reads any of them alike.
"""

from __future__ import annotations

from synthrank.data.beir import (
    BeirDataset,
    DataError,
    Document,
    Problem,
    Qrels,
    Query,
    iter_corpus,
    iter_queries,
    iter_queries_tsv,
    read_qrels,
    write_corpus,
    write_qrels,
    write_queries,
)
from synthrank.data.resolve import BEIR_DATASETS, download_zip, resolve_dataset

__all__ = [
    "BEIR_DATASETS",
    "BeirDataset",
    "DataError",
    "Document",
    "Problem",
    "Qrels",
    "Query",
    "download_zip",
    "iter_corpus",
    "iter_queries",
    "iter_queries_tsv",
    "read_qrels",
    "resolve_dataset",
    "write_corpus",
    "write_qrels",
    "write_queries",
]
