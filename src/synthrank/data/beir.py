"""Streaming readers and writers for BEIR folders, with errors that name file, line and field.

A BEIR folder holds ``corpus.jsonl`` ({"_id", "title", "text"} per line), ``queries.jsonl``
({"_id", "text"}) and ``qrels/<split>.tsv`` (header ``query-id corpus-id score``; graded
integer scores). Readers stream line by line, keep going past a bad record so that one run reports
every problem of a file (the first few in full, and how many in all), then raise
:class:`DataError` before any caller acts on a partly valid file. Files must be UTF-8; a
byte-order mark at the start of any line is dropped (files joined together have them), and text
holding a lone surrogate (a JSON escape such as ``"\\ud83c"``, half of an emoji) is a bad record.

Every id (``_id``, ``query-id``, ``corpus-id``) is read without its leading and trailing
whitespace, by every reader alike, so that ``"d1 "`` in the corpus and ``d1`` in the qrels are
one document; each id read so is reported in a warning naming file, line and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from synthrank.errors import SynthrankError
from synthrank.fileio import iter_lines, lone_surrogate, quoted, warn

Qrels = dict[str, dict[str, int]]
"""query id -> {document id -> graded relevance}."""

QRELS_HEADER = ("query-id", "corpus-id", "score")
QUERIES_TSV_HEADERS = frozenset({"id", "_id", "query-id", "qid"})
"""First column names that make the first line of a queries TSV file a header."""
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
    """A file's bad records (raised as one :class:`DataError`) and its ids read without their
    surrounding whitespace (reported as one warning), each the first few in full and a count."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listed: list[Problem] = []
        self.total = 0
        self._last_line = 0
        self.stripped: list[Problem] = []
        self.stripped_total = 0

    def add(self, line: int, field: str | None, message: str) -> None:
        """Record a problem; only the first of a record's problems is kept and counted."""
        if line == self._last_line:
            return
        self._last_line = line
        self.total += 1
        if len(self.listed) < _LISTED_PROBLEMS:
            self.listed.append(Problem(self.path, line, field, message))

    def read_id(self, raw: str, line: int, field: str) -> str:
        """``raw`` without its surrounding whitespace; an id that had some is noted."""
        value = raw.strip()
        if value and value != raw:
            self.stripped_total += 1
            if len(self.stripped) < _LISTED_PROBLEMS:
                sides = [("leading", raw != raw.lstrip()), ("trailing", raw != raw.rstrip())]
                where = " and ".join(side for side, found in sides if found)
                message = f"{quoted(raw)} has {where} whitespace; read as {quoted(value)}"
                self.stripped.append(Problem(self.path, line, field, message))
        return value

    def finish(self, warnings: list[str] | None) -> None:
        """Raise :class:`DataError` if any record was bad, else report the stripped ids (into
        ``warnings``, see :func:`synthrank.fileio.warn`)."""
        if self.total:
            raise DataError(self.listed, self.total)
        if self.stripped_total:
            message = str(self.stripped[0])
            if self.stripped_total > 1:
                lines = ", ".join(dict.fromkeys(str(p.line) for p in self.stripped[1:]))
                more = "" if self.stripped_total <= len(self.stripped) else ", ..."
                message += (
                    f" (and {self.stripped_total - 1} more ids with surrounding whitespace in "
                    f"this file, read without it: lines {lines}{more})"
                )
            warn(message, warnings)


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise SynthrankError(f"{path}: file not found")


def _iter_text_lines(path: Path, log: _ProblemLog) -> Iterator[tuple[int, str]]:
    _require_file(path)
    for line_no, line in iter_lines(path, lambda bad, problem: log.add(bad, None, problem)):
        if line.strip():
            yield line_no, line


def _json_object(line: str, line_no: int, log: _ProblemLog) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        log.add(line_no, None, f"malformed JSON ({exc.msg} at column {exc.colno})")
        return None
    if not isinstance(record, dict):
        log.add(line_no, None, f"expected a JSON object, got {type(record).__name__}")
        return None
    return record


def _iter_json_objects(path: Path, log: _ProblemLog) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in _iter_text_lines(path, log):
        record = _json_object(line, line_no, log)
        if record is not None:
            yield line_no, record


def _unique_id(
    raw: str, line_no: int, field: str, seen: MutableMapping[str, int], log: _ProblemLog
) -> str | None:
    """``raw`` read as an id (:meth:`_ProblemLog.read_id`) that no earlier line of the file has;
    None (and the problem logged) when it is empty or taken."""
    record_id = log.read_id(raw, line_no, field)
    if not record_id:
        log.add(line_no, field, "empty")
        return None
    if record_id in seen:
        read_as = "" if record_id == raw else f" read as {quoted(record_id)}"
        log.add(
            line_no,
            field,
            f"duplicate id {quoted(raw)}{read_as} (first on line {seen[record_id]})",
        )
        return None
    seen[record_id] = line_no
    return record_id


def _record_id(
    record: dict[str, Any], line_no: int, seen: MutableMapping[str, int], log: _ProblemLog
) -> str | None:
    raw = record.get("_id")
    if raw is None:
        log.add(line_no, "_id", "missing")
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        log.add(line_no, "_id", f"expected a string, got {type(raw).__name__}")
        return None
    text = str(raw)
    problem = lone_surrogate(text)
    if problem is not None:
        log.add(line_no, "_id", problem)
        return None
    return _unique_id(text, line_no, "_id", seen, log)


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
    problem = lone_surrogate(value)
    if problem is not None:
        log.add(line_no, name, problem)
        return None
    return value


def iter_corpus(path: str | Path, *, warnings: list[str] | None = None) -> Iterator[Document]:
    """Stream the documents of a ``corpus.jsonl``; raise :class:`DataError` after the last one
    if any record was bad (missing or duplicate ``_id``, malformed JSON, non-string fields, text
    that is not UTF-8 or not valid Unicode). Ids read without surrounding whitespace are reported
    into ``warnings`` (:func:`synthrank.fileio.warn`)."""
    path = Path(path)
    log = _ProblemLog(path)
    seen: dict[str, int] = {}
    for line_no, record in _iter_json_objects(path, log):
        doc_id = _record_id(record, line_no, seen, log)
        text = _text_field(record, "text", line_no, log, required=True)
        title = _text_field(record, "title", line_no, log, required=False)
        if doc_id is not None and text is not None and title is not None:
            yield Document(doc_id, text, title)
    log.finish(warnings)


def iter_queries(path: str | Path, *, warnings: list[str] | None = None) -> Iterator[Query]:
    """Stream the queries of a ``queries.jsonl``; errors and warnings as :func:`iter_corpus`, and
    an empty query text is an error."""
    return (query for _, query in numbered_queries(Path(path), "jsonl", warnings=warnings))


def iter_queries_tsv(path: str | Path, *, warnings: list[str] | None = None) -> Iterator[Query]:
    """Stream the queries of a TSV file of ``id<TAB>query text`` lines (a first line whose first
    column is one of :data:`QUERIES_TSV_HEADERS` is a header); errors and warnings as
    :func:`iter_queries`; the query text is read without surrounding whitespace."""
    return (query for _, query in numbered_queries(Path(path), "tsv", warnings=warnings))


QueryFormat = Literal["jsonl", "tsv"]


def numbered_queries(
    path: Path,
    kind: QueryFormat,
    *,
    warnings: list[str] | None = None,
    seen: MutableMapping[str, int] | None = None,
) -> Iterator[tuple[int, Query]]:
    """(line number, query) of each good line of a ``kind`` query file, as :func:`iter_queries`
    and :func:`iter_queries_tsv` read them. ``seen`` (id -> first line) finds repeated ids; a
    caller that checks repeats another way passes a mapping that never holds any."""
    log = _ProblemLog(path)
    seen = {} if seen is None else seen
    for line_no, line in _iter_text_lines(path, log):
        query = parse_query_line(line, line_no, kind, log, seen)
        if query is not None:
            yield line_no, query
    log.finish(warnings)


def parse_query_line(
    line: str, line_no: int, kind: QueryFormat, log: _ProblemLog, seen: MutableMapping[str, int]
) -> Query | None:
    """The query of one line of a ``kind`` query file, or None with its problem in ``log`` (a
    TSV header line is None with no problem)."""
    if kind == "tsv":
        fields = line.split("\t")
        if line_no == 1 and fields[0].strip().lower() in QUERIES_TSV_HEADERS:
            return None
        if len(fields) != 2:
            log.add(line_no, None, "expected two tab-separated columns: id, query text")
            return None
        query_id = _unique_id(fields[0], line_no, "id", seen, log)
        text: str | None = fields[1].strip()
        if not text:
            log.add(line_no, "text", "empty query text")
            return None
        return None if query_id is None else Query(query_id, text)
    record = _json_object(line, line_no, log)
    if record is None:
        return None
    query_id = _record_id(record, line_no, seen, log)
    text = _text_field(record, "text", line_no, log, required=True)
    if text is not None and not text.strip():
        log.add(line_no, "text", "empty query text")
        text = None
    return None if query_id is None or text is None else Query(query_id, text)


def _parse_score(value: str) -> int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def read_qrels(path: str | Path, *, warnings: list[str] | None = None) -> Qrels:
    """Read graded judgments from a BEIR ``qrels/<split>.tsv`` (``query-id corpus-id score``,
    header optional) or a TREC qrels file (``query-id iteration corpus-id score``); errors and
    warnings as :func:`iter_corpus`."""
    path = Path(path)
    log = _ProblemLog(path)
    qrels: Qrels = {}
    first_line: dict[tuple[str, str], int] = {}
    for line_no, line in _iter_text_lines(path, log):
        fields = line.split("\t")
        if len(fields) == 1:
            fields = line.split()
        if line_no == 1 and tuple(f.strip() for f in fields) == QRELS_HEADER:
            continue
        if len(fields) == 3:
            raw_query, raw_doc, raw_score = fields
        elif len(fields) == 4:
            raw_query, _, raw_doc, raw_score = fields
        else:
            log.add(line_no, None, f"expected 3 tab-separated columns, got {len(fields)}")
            continue
        raw_score = raw_score.strip()
        score = _parse_score(raw_score)
        if score is None:
            log.add(line_no, "score", f"expected an integer grade, got {quoted(raw_score)}")
            continue
        query_id = log.read_id(raw_query, line_no, "query-id")
        doc_id = log.read_id(raw_doc, line_no, "corpus-id")
        if not query_id or not doc_id:
            log.add(line_no, "query-id" if not query_id else "corpus-id", "empty")
            continue
        key = (query_id, doc_id)
        if key in first_line:
            log.add(line_no, "corpus-id", f"judged twice (first on line {first_line[key]})")
            continue
        first_line[key] = line_no
        qrels.setdefault(query_id, {})[doc_id] = score
    log.finish(warnings)
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
    return ", ".join(quoted(i) for i in listed)


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

    def corpus(self, *, warnings: list[str] | None = None) -> dict[str, Document]:
        return {doc.id: doc for doc in iter_corpus(self.corpus_path, warnings=warnings)}

    def queries(self, *, warnings: list[str] | None = None) -> dict[str, Query]:
        return {q.id: q for q in iter_queries(self.queries_path, warnings=warnings)}

    def qrels(self, split: str, *, warnings: list[str] | None = None) -> Qrels:
        path = self.qrels_path(split)
        if not path.is_file():
            available = ", ".join(self.splits()) or "none"
            raise SynthrankError(
                f'{self.name}: no split "{split}" ({path} not found); available splits: {available}'
            )
        return read_qrels(path, warnings=warnings)

    def load_split(self, split: str) -> SplitData:
        """Load corpus, queries and qrels of ``split``; keep only judged queries.

        Judgments naming a query that ``queries.jsonl`` lacks are dropped (the query has no
        text); judgments naming a document that ``corpus.jsonl`` lacks are kept, as BEIR does,
        since they still count in recall. Both are reported in ``warnings`` with counts, after
        the ids that the readers read without their surrounding whitespace.
        """
        warnings: list[str] = []
        qrels = self.qrels(split, warnings=warnings)
        all_queries = self.queries(warnings=warnings)
        corpus = self.corpus(warnings=warnings)
        qrels_file = self.qrels_path(split)
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
