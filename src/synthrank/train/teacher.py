"""Teacher scores on graded lists: a strong encoder's score of every (query, passage) pair of
each query's list, stored beside the list's grades, for list-wise distillation (GPL scores
generated queries with a cross-encoder; CADET distils a cross-encoder's list-wise
distribution).

The lists are a dataset's judged passages per query (synthetic lists: the levels an LLM wrote;
real lists: their qrels), or, with ``bm25_top``, each query's top N BM25 passages of the corpus
(real text graded by the teacher instead of by labels). :func:`score_lists` writes a folder:

- ``scores.jsonl``: one line per pair, ``query_id``, ``doc_id``, ``score`` (the teacher's cosine,
  or dot product for a dot-product model), ``grade`` (the dataset's label, or null for a BM25
  passage it does not judge) and ``bm25_rank`` (with ``bm25_top``); keyed by ids only, so it is
  published beside the lists without any benchmark text;
- ``meta.json``: the teacher, its fingerprint, the source, split, list kind, the content of the
  files read (:func:`synthrank.fingerprint.fingerprints`), counts and seconds.

Embeddings go through the per-text cache (:class:`~synthrank.evaluate.encode.EmbeddingCache`):
an interrupted run encodes only what it had not, and passages already encoded for an
evaluation of the same corpus are not encoded again.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

from synthrank.errors import SynthrankError
from synthrank.fileio import FolderLock, atomic_open, require_writable_dir, write_json_atomic

SCORES = "scores.jsonl"
META = "meta.json"
KIND = "teacher-scores"


def read_scores(folder: Path) -> dict[tuple[str, str], float]:
    """(query id, passage id) -> teacher score of a :func:`score_lists` folder: its
    ``scores.jsonl``, or ``scores.jsonl.gz`` as published (``gzip`` of the same file)."""
    path = folder / SCORES
    if not path.is_file() and (folder / f"{SCORES}.gz").is_file():
        path = folder / f"{SCORES}.gz"
    if not path.is_file():
        raise SynthrankError(f"{folder}: not a teacher-scores folder ({SCORES} not found)")
    scores = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            scores[(row["query_id"], row["doc_id"])] = float(row["score"])
    return scores


def score_lists(
    dataset: str | Path,
    out: str | Path,
    *,
    teacher: str = "embeddinggemma",
    split: str = "train",
    bm25_top: int | None = None,
    max_length: int | None = 256,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every pair of each query's list of ``dataset``'s ``split`` with encoder ``teacher``
    (a model name or folder, see :func:`~synthrank.evaluate.models.load_model`) at
    ``max_length`` tokens, and write ``out`` (see the module docstring); return its meta.
    ``limit`` takes the first queries (by id). :class:`SynthrankError` for a split without
    queries, an unwritable ``out`` or one another process writes. ``dataset`` is a BEIR folder
    or ``beir:NAME``."""
    if bm25_top is not None and bm25_top < 1:
        raise SynthrankError(f"bm25_top must be >= 1 (got {bm25_top})")
    out = Path(out)
    with FolderLock(out):
        require_writable_dir(out)
        return _score(str(dataset), out, teacher, split, bm25_top, max_length, limit, progress)


def _score(
    dataset: str,
    out: Path,
    teacher: str,
    split: str,
    bm25_top: int | None,
    max_length: int | None,
    limit: int | None,
    progress: bool,
) -> dict[str, Any]:
    from synthrank.data.resolve import cache_root, resolve_dataset
    from synthrank.evaluate.encode import EmbeddingCache, grouped_scores, model_fingerprint
    from synthrank.evaluate.models import load_model
    from synthrank.fingerprint import fingerprints

    started = time.perf_counter()
    data = resolve_dataset(dataset)
    loaded = data.load_split(split)
    query_ids = sorted(loaded.queries)[:limit]
    if not query_ids:
        raise SynthrankError(f"{dataset}: split {split} has no judged queries with text")
    lists: list[list[str]]
    ranks: list[list[int | None]]
    if bm25_top is None:
        lists = [sorted(d for d in loaded.qrels[q] if d in loaded.corpus) for q in query_ids]
        ranks = [[None] * len(docs) for docs in lists]
    else:
        from synthrank.data.bm25 import bm25_search

        corpus_ids = list(loaded.corpus)
        hits, _ = bm25_search(
            [loaded.corpus[d].full_text() for d in corpus_ids],
            [loaded.queries[q].text for q in query_ids],
            bm25_top,
        )
        lists = [[corpus_ids[i] for i in row] for row in hits]
        ranks = [list(range(1, len(row) + 1)) for row in lists]
    model = load_model(teacher, max_length=max_length)
    values = grouped_scores(
        model,
        [loaded.queries[q].text for q in query_ids],
        [[loaded.corpus[d].full_text() for d in docs] for docs in lists],
        cosine=(model.similarity_fn_name or "cosine") == "cosine",
        cache=EmbeddingCache(cache_root() / "embeddings"),
        progress=progress,
    )
    read = ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv")
    pairs = 0
    with atomic_open(out / SCORES) as handle:
        for query_id, docs, row, row_ranks in zip(query_ids, lists, values, ranks, strict=True):
            for doc_id, score, rank in zip(docs, row, row_ranks, strict=True):
                line: dict[str, Any] = {
                    "query_id": query_id,
                    "doc_id": doc_id,
                    "score": round(score, 6),
                    "grade": loaded.qrels.get(query_id, {}).get(doc_id),
                }
                if rank is not None:
                    line["bm25_rank"] = rank
                handle.write(json.dumps(line) + "\n")
                pairs += 1
    meta = {
        "kind": KIND,
        "teacher": teacher,
        "teacher_fingerprint": model_fingerprint(model),
        "max_length": model.max_seq_length,
        "dataset": dataset,
        "split": split,
        "lists": "judged" if bm25_top is None else f"bm25 top {bm25_top}",
        "reads": fingerprints({name: data.root / name for name in read}),
        "counts": {"queries": len(query_ids), "pairs": pairs},
        "warnings": loaded.warnings,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / META, meta)
    return meta
