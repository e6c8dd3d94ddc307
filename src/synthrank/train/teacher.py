"""Teacher scores on graded lists: a strong encoder's score of every (query, passage) pair of
each query's list, stored beside the list's grades, for list-wise distillation (GPL scores
generated queries with a cross-encoder; CADET distils a cross-encoder's list-wise
distribution).

The lists are a dataset's judged passages per query (synthetic lists: the levels an LLM wrote;
real lists: their qrels); with ``bm25_top``, each query's top N BM25 passages of the corpus
instead (real text graded by the teacher instead of by labels); with ``teacher_top``, the judged
passages plus the teacher's own top N other passages of the corpus (hard negatives mined by the
teacher, as GPL and CADET mine theirs with a dense retriever: on a synthetic corpus, passages
written for other queries of the same field). :func:`score_lists` writes a folder:

- ``scores.jsonl``: one line per pair, ``query_id``, ``doc_id``, ``score`` (the teacher's cosine,
  or dot product for a dot-product model), ``grade`` (the dataset's label, or null for a BM25
  passage it does not judge), ``bm25_rank`` (with ``bm25_top``) or ``teacher_rank`` (a mined
  passage's rank among the unjudged passages, with ``teacher_top``); keyed by ids only, so it is
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
import math
import time
from pathlib import Path
from typing import Any

from synthrank.errors import SynthrankError
from synthrank.fileio import (
    FolderLock,
    atomic_open,
    read_text,
    require_writable_dir,
    write_json_atomic,
)

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
    with opener(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if raw.strip():
                query_id, doc_id, score = _score_row(raw, f"{path}, line {line_no}")
                scores[(query_id, doc_id)] = score
    return scores


def _score_row(raw: bytes, where: str) -> tuple[str, str, float]:
    """(query id, passage id, score) of one line of a scores file; :class:`SynthrankError`
    naming ``where`` and the field for a line that is not one."""
    try:
        row = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise SynthrankError(f"{where}: not UTF-8 text ({exc.reason})") from None
    except ValueError as exc:
        raise SynthrankError(f"{where}: not a JSON line ({exc})") from None
    if not isinstance(row, dict):
        raise SynthrankError(f"{where}: not a JSON object")
    for field in ("query_id", "doc_id"):
        if not isinstance(row.get(field), str) or not row[field]:
            raise SynthrankError(f"{where}: field {field!r}: missing or not an id")
    score = row.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise SynthrankError(f"{where}: field 'score': not a finite number (got {score!r})")
    return row["query_id"], row["doc_id"], float(score)


def scores_meta(folder: Path) -> dict[str, Any]:
    """The ``meta.json`` of a :func:`score_lists` folder; ``{}`` when it has none (scores
    written by other tools)."""
    path = folder / META
    return json.loads(read_text(path)) if path.is_file() else {}


def check_scored_content(folder: Path, dataset_root: Path) -> None:
    """:class:`SynthrankError` when the corpus or queries of ``dataset_root`` are not the
    content ``folder``'s scores were made on (the SHA-256 that ``meta.json`` recorded): a score
    of other text would train the student on it. Other files (qrels: a list cut to some queries)
    may differ; a folder without those records is taken as it is."""
    from synthrank.fingerprint import file_digest

    reads = scores_meta(folder).get("reads") or {}
    for name in ("corpus.jsonl", "queries.jsonl"):
        recorded = (reads.get(name) or {}).get("sha256")
        current = dataset_root / name
        if recorded and current.is_file() and file_digest(current) != recorded:
            raise SynthrankError(
                f"teacher scores {folder} were made on other content than {current} (its SHA-256 "
                f"differs from meta.json's): score these lists again (synthrank score)"
            )


def score_lists(
    dataset: str | Path,
    out: str | Path,
    *,
    teacher: str = "embeddinggemma",
    split: str = "train",
    bm25_top: int | None = None,
    teacher_top: int | None = None,
    max_length: int | None = 256,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every pair of each query's list of ``dataset``'s ``split`` with encoder ``teacher``
    (a model name or folder, see :func:`~synthrank.evaluate.models.load_model`) at
    ``max_length`` tokens, and write ``out`` (see the module docstring); return its meta.
    ``limit`` takes the first queries (by id). ``teacher_top`` encodes the whole corpus with
    the teacher (about 2 passages a second for EmbeddingGemma on 2 CPU cores; cached per text).
    :class:`SynthrankError` for a split without queries, an unwritable ``out``, one another
    process writes, or both ``bm25_top`` and ``teacher_top``. ``dataset`` is a BEIR folder or
    ``beir:NAME``."""
    for name, value in (("bm25_top", bm25_top), ("teacher_top", teacher_top)):
        if value is not None and value < 1:
            raise SynthrankError(f"{name} must be >= 1 (got {value})")
    if bm25_top is not None and teacher_top is not None:
        raise SynthrankError("bm25_top and teacher_top are two kinds of list: choose one")
    out = Path(out)
    with FolderLock(out):
        require_writable_dir(out)
        return _score(
            str(dataset), out, teacher, split, bm25_top, teacher_top, max_length, limit, progress
        )


def _score(
    dataset: str,
    out: Path,
    teacher: str,
    split: str,
    bm25_top: int | None,
    teacher_top: int | None,
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
    cache = EmbeddingCache(cache_root() / "embeddings")
    if teacher_top is not None:
        mined = _teacher_mined(model, loaded, query_ids, lists, teacher_top, cache, progress)
        ranks = [
            [None] * len(docs) + list(range(1, len(more) + 1))
            for docs, more in zip(lists, mined, strict=True)
        ]
        lists = [docs + more for docs, more in zip(lists, mined, strict=True)]
    values = grouped_scores(
        model,
        [loaded.queries[q].text for q in query_ids],
        [[loaded.corpus[d].full_text() for d in docs] for docs in lists],
        cosine=(model.similarity_fn_name or "cosine") == "cosine",
        cache=cache,
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
                    line["bm25_rank" if bm25_top is not None else "teacher_rank"] = rank
                handle.write(json.dumps(line) + "\n")
                pairs += 1
    meta = {
        "kind": KIND,
        "teacher": teacher,
        "teacher_fingerprint": model_fingerprint(model),
        "max_length": model.max_seq_length,
        "dataset": dataset,
        "split": split,
        "lists": _list_kind(bm25_top, teacher_top),
        "reads": fingerprints({name: data.root / name for name in read}),
        "counts": {"queries": len(query_ids), "pairs": pairs},
        "warnings": loaded.warnings,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(out / META, meta)
    return meta


def _list_kind(bm25_top: int | None, teacher_top: int | None) -> str:
    if bm25_top is not None:
        return f"bm25 top {bm25_top}"
    if teacher_top is not None:
        return f"judged + teacher top {teacher_top}"
    return "judged"


def _teacher_mined(
    model: Any,
    loaded: Any,
    query_ids: list[str],
    judged: list[list[str]],
    top: int,
    cache: Any,
    progress: bool,
) -> list[list[str]]:
    """Per query, the ids of the ``top`` corpus passages it does not judge that the teacher
    scores highest, best first (equal scores in id order)."""
    import numpy as np

    from synthrank.evaluate.encode import encode_texts, model_fingerprint

    key = model_fingerprint(model)
    corpus_ids = sorted(loaded.corpus)
    documents = encode_texts(
        model,
        [loaded.corpus[d].full_text() for d in corpus_ids],
        role="document",
        cache=cache,
        model_key=key,
        progress=progress,
    )
    queries = encode_texts(
        model,
        [loaded.queries[q].text for q in query_ids],
        role="query",
        cache=cache,
        model_key=key,
        progress=progress,
    )
    if (model.similarity_fn_name or "cosine") == "cosine":
        documents = documents / np.maximum(np.linalg.norm(documents, axis=1, keepdims=True), 1e-12)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    mined = []
    for vector, own in zip(queries, judged, strict=True):
        skip = set(own)
        scores = documents @ vector
        # Only the best len(own) + top can hold the answer: partition, then sort those.
        best = min(len(own) + top, len(scores))
        candidates = np.argpartition(-scores, best - 1)[:best]
        candidates = candidates[np.lexsort((candidates, -scores[candidates]))]
        mined.append([corpus_ids[i] for i in candidates if corpus_ids[i] not in skip][:top])
    return mined
