"""Streaming readers and writers for BEIR folders, with errors that name file, line and field.

A BEIR folder holds ``corpus.jsonl`` ({"_id", "title", "text"} per line), ``queries.jsonl``
({"_id", "text"}) and ``qrels/<split>.tsv`` (header ``query-id corpus-id score``; graded
integer scores). Readers stream line by line, keep going past a bad record so that one run reports
every problem of a file (the first few in full, and how many in all), then raise
:class:`DataError` before any caller acts on a partly valid file. A UTF-8 byte-order mark at the
start of a file is dropped (in JSON lines files, at the start of any line, as concatenated files
have them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthrank.errors import SynthrankError
from synthrank.fileio import TEXT_ENCODING

Qrels = dict[str, dict[str, int]]
"""query id -> {document id -> graded relevance}."""

QRELS_HEADER = ("query-id", "corpus-id", "score")
_LISTED_PROBLEMS = 5


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""

    def full_text(self) -> str:
        """Title and body as BEIR and MTEB encode them: ``title + " " + text``, stripped."""
        return f"{self.title} {self.text}".strip()


@dataclass(frozen=True)
class Query:
    id: str
    text: str


@dataclass(frozen=True)
class Problem:
    """One bad record: where it is and what is wrong with it."""

    path: Path
    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}, line {self.line}"
        if self.field is not None:
            where += f', field "{self.field}"'
        return f"{where}: {self.message}"


class DataError(SynthrankError):
    """A file has bad records. ``problems`` lists the first few, ``total`` counts them all."""

    def __init__(self, problems: list[Problem], total: int) -> None:
        self.problems = problems
        self.total = total
        message = str(problems[0])
        if total > 1:
            lines = ", ".join(str(p.line) for p in problems[1:])
            more = "" if total <= len(problems) else ", ..."
            message += f" (and {total - 1} more bad records in this file: lines {lines}{more})"
        super().__init__(message)


class _ProblemLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.listed: list[Problem] = []
        self.total = 0
        self._last_line = 0

    def add(self, line: int, field: str | None, message: str) -> None:
        """Record a problem; only the first of a record's problems is kept and counted."""
        if line == self._last_line:
            return
        self._last_line = line
        self.total += 1
        if len(self.listed) < _LISTED_PROBLEMS:
            self.listed.append(Problem(self.path, line, field, message))

    def raise_if_any(self) -> None:
        if self.total:
            raise DataError(self.listed, self.total)


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise SynthrankError(f"{path}: file not found")


def _iter_json_objects(path: Path, log: _ProblemLog) -> Iterator[tuple[int, dict[str, Any]]]:
    _require_file(path)
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode(TEXT_ENCODING))
            except UnicodeDecodeError as exc:
                log.add(line_no, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            except json.JSONDecodeError as exc:
                log.add(line_no, None, f"malformed JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                log.add(line_no, None, f"expected a JSON object, got {type(record).__name__}")
                continue
            yield line_no, record


def _record_id(
    record: dict[str, Any], line_no: int, seen: dict[str, int], log: _ProblemLog
) -> str | None:
    raw = record.get("_id")
    if raw is None:
        log.add(line_no, "_id", "missing")
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        log.add(line_no, "_id", f"expected a string, got {type(raw).__name__}")
        return None
    record_id = str(raw)
    if not record_id.strip():
        log.add(line_no, "_id", "empty")
        return None
    if record_id in seen:
        log.add(line_no, "_id", f'duplicate id "{record_id}" (first on line {seen[record_id]})')
        return None
    seen[record_id] = line_no
    return record_id


def _text_field(
    record: dict[str, Any], name: str, line_no: int, log: _ProblemLog, *, required: bool
) -> str | None:
    value = record.get(name)
    if value is None:
        if required:
            log.add(line_no, name, "missing")
            return None
        return ""
    if not isinstance(value, str):
        log.add(line_no, name, f"expected a string, got {type(value).__name__}")
        return None
    return value


def iter_corpus(path: str | Path) -> Iterator[Document]:
    """Stream the documents of a ``corpus.jsonl``; raise :class:`DataError` after the last one
    if any record was bad (missing or duplicate ``_id``, malformed JSON, non-string fields)."""
    path = Path(path)
    log = _ProblemLog(path)
    seen: dict[str, int] = {}
    for line_no, record in _iter_json_objects(path, log):
        doc_id = _record_id(record, line_no, seen, log)
        text = _text_field(record, "text", line_no, log, required=True)
        title = _text_field(record, "title", line_no, log, required=False)
        if doc_id is not None and text is not None and title is not None:
            yield Document(doc_id, text, title)
    log.raise_if_any()


def iter_queries(path: str | Path) -> Iterator[Query]:
    """Stream the queries of a ``queries.jsonl``; errors as :func:`iter_corpus`, and an empty
    query text is an error."""
    path = Path(path)
    log = _ProblemLog(path)
    seen: dict[str, int] = {}
    for line_no, record in _iter_json_objects(path, log):
        query_id = _record_id(record, line_no, seen, log)
        text = _text_field(record, "text", line_no, log, required=True)
        if text is not None and not text.strip():
            log.add(line_no, "text", "empty query text")
            text = None
        if query_id is not None and text is not None:
            yield Query(query_id, text)
    log.raise_if_any()


def _parse_score(value: str) -> int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def read_qrels(path: str | Path) -> Qrels:
    """Read graded judgments from a BEIR ``qrels/<split>.tsv`` (``query-id corpus-id score``,
    header optional) or a TREC qrels file (``query-id iteration corpus-id score``)."""
    path = Path(path)
    _require_file(path)
    log = _ProblemLog(path)
    qrels: Qrels = {}
    first_line: dict[tuple[str, str], int] = {}
    with path.open(encoding=TEXT_ENCODING, errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 1:
                fields = line.split()
            if not any(f.strip() for f in fields):
                continue
            if line_no == 1 and tuple(f.strip() for f in fields) == QRELS_HEADER:
                continue
            if len(fields) == 3:
                query_id, doc_id, raw_score = fields
            elif len(fields) == 4:
                query_id, _, doc_id, raw_score = fields
            else:
                log.add(line_no, None, f"expected 3 tab-separated columns, got {len(fields)}")
                continue
            query_id, doc_id, raw_score = query_id.strip(), doc_id.strip(), raw_score.strip()
            score = _parse_score(raw_score)
            if score is None:
                log.add(line_no, "score", f'expected an integer grade, got "{raw_score}"')
                continue
            if not query_id or not doc_id:
                log.add(line_no, "query-id" if not query_id else "corpus-id", "empty")
                continue
            key = (query_id, doc_id)
            if key in first_line:
                log.add(line_no, "corpus-id", f"judged twice (first on line {first_line[key]})")
                continue
            first_line[key] = line_no
            qrels.setdefault(query_id, {})[doc_id] = score
    log.raise_if_any()
    return qrels


def _write_jsonl(path: Path, records: Iterable[dict[str, str]], append: bool) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("a" if append else "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_corpus(path: str | Path, docs: Iterable[Document], *, append: bool = False) -> int:
    """Write documents as ``corpus.jsonl`` lines; return how many were written."""
    records = ({"_id": d.id, "title": d.title, "text": d.text} for d in docs)
    return _write_jsonl(Path(path), records, append)


def write_queries(path: str | Path, queries: Iterable[Query], *, append: bool = False) -> int:
    """Write queries as ``queries.jsonl`` lines; return how many were written."""
    return _write_jsonl(Path(path), ({"_id": q.id, "text": q.text} for q in queries), append)


def write_qrels(path: str | Path, qrels: Mapping[str, Mapping[str, int]]) -> int:
    """Write judgments as a BEIR qrels TSV with its header; return how many rows were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with path.open("w", encoding="utf-8") as handle:
        handle.write("\t".join(QRELS_HEADER) + "\n")
        for query_id, judged in qrels.items():
            for doc_id, score in judged.items():
                handle.write(f"{query_id}\t{doc_id}\t{int(score)}\n")
                rows += 1
    return rows


def _examples(ids: Iterable[str], limit: int = 3) -> str:
    listed = sorted(ids)[:limit]
    return ", ".join(f'"{i}"' for i in listed)


@dataclass(frozen=True)
class SplitData:
    """What evaluation needs of one split: the corpus, the judged queries and their qrels."""

    corpus: dict[str, Document]
    queries: dict[str, Query]
    qrels: Qrels
    warnings: list[str]


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR folder on disk. ``name`` is what reports call it (``beir:scifact``, a path...)."""

    root: Path
    name: str

    @property
    def corpus_path(self) -> Path:
        return self.root / "corpus.jsonl"

    @property
    def queries_path(self) -> Path:
        return self.root / "queries.jsonl"

    def qrels_path(self, split: str) -> Path:
        return self.root / "qrels" / f"{split}.tsv"

    def splits(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "qrels").glob("*.tsv"))

    def corpus(self) -> dict[str, Document]:
        return {doc.id: doc for doc in iter_corpus(self.corpus_path)}

    def queries(self) -> dict[str, Query]:
        return {query.id: query for query in iter_queries(self.queries_path)}

    def qrels(self, split: str) -> Qrels:
        path = self.qrels_path(split)
        if not path.is_file():
            available = ", ".join(self.splits()) or "none"
            raise SynthrankError(
                f'{self.name}: no split "{split}" ({path} not found); available splits: {available}'
            )
        return read_qrels(path)

    def load_split(self, split: str) -> SplitData:
        """Load corpus, queries and qrels of ``split``; keep only judged queries.

        Judgments naming a query that ``queries.jsonl`` lacks are dropped (the query has no
        text); judgments naming a document that ``corpus.jsonl`` lacks are kept, as BEIR does,
        since they still count in recall. Both are reported in ``warnings`` with counts.
        """
        qrels = self.qrels(split)
        all_queries = self.queries()
        corpus = self.corpus()
        qrels_file = self.qrels_path(split)
        warnings: list[str] = []
        unknown_queries = {q for q in qrels if q not in all_queries}
        if unknown_queries:
            rows = sum(len(qrels[q]) for q in unknown_queries)
            warnings.append(
                f"{qrels_file}: {rows} judgments name {len(unknown_queries)} query ids missing "
                f"from {self.queries_path.name} (e.g. {_examples(unknown_queries)}); skipped"
            )
            qrels = {q: judged for q, judged in qrels.items() if q not in unknown_queries}
        unknown_docs = {d for judged in qrels.values() for d in judged if d not in corpus}
        if unknown_docs:
            rows = sum(1 for judged in qrels.values() for d in judged if d in unknown_docs)
            warnings.append(
                f"{qrels_file}: {rows} judgments name {len(unknown_docs)} document ids missing "
                f"from {self.corpus_path.name} (e.g. {_examples(unknown_docs)}); they count as "
                "relevant but cannot be retrieved"
            )
        queries = {q: all_queries[q] for q in qrels}
        return SplitData(corpus=corpus, queries=queries, qrels=qrels, warnings=warnings)
