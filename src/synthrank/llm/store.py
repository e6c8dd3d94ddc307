"""The output folder of a generation job: append-only, one commit per query, repairable.

``lists.jsonl`` is the journal: one line per finished query (its text, kept passages with
grades, failures), written only once all the query's LLM calls are done, and fsynced (queries
settled together are fsynced as one group). It is the
single source of truth. ``generation.jsonl`` gets the query's call records just before its
journal line. The BEIR files (``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv``) are a view
of the journal, appended after each commit.

A query whose calls failed in the backend (server down past all retries) is not committed: its
call records go to ``generation.jsonl`` marked ``"abandoned": true`` (with the server's status and
message), so a user can see why, and the next run asks again.

After a crash (``kill -9`` included), :meth:`GenerationStore.open` cuts a torn last journal
line, cuts call records of the query that was neither committed nor abandoned, and rewrites the
BEIR view from the journal, so the next run continues with no query lost, duplicated or
half-kept.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Generic, Protocol, TypeVar

from synthrank.data import Document, Query, write_corpus, write_queries
from synthrank.data.beir import QRELS_HEADER
from synthrank.errors import SynthrankError
from synthrank.fileio import FolderLock, atomic_path, naming

JOURNAL = "lists.jsonl"
CALLS = "generation.jsonl"
META = "meta.json"
SPLIT = "train"


class JournalRecord(Protocol):
    """A journal line's record: what :class:`JournalStore` commits."""

    def to_json(self) -> str: ...

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JournalRecord: ...


R = TypeVar("R", bound=JournalRecord)


@dataclass(frozen=True)
class Passage:
    id: str
    grade: int
    text: str
    strategy: str


@dataclass(frozen=True)
class QueryRecord:
    """Everything kept for one query; ``failures`` are (grade, index, reason) of passages that
    ran out of attempts."""

    query_id: str
    query: str
    passages: tuple[Passage, ...]
    failures: tuple[dict[str, Any], ...] = ()
    plan: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> QueryRecord:
        return cls(
            query_id=raw["query_id"],
            query=raw["query"],
            passages=tuple(Passage(**p) for p in raw["passages"]),
            failures=tuple(raw.get("failures", ())),
            plan=raw.get("plan", {}),
        )


def valid_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(end offset, record) of each complete, parseable line of a JSONL file, in order; stops
    at the first torn or unparseable line (only the last line can be torn by a crash)."""
    offset = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                return
            try:
                record = json.loads(raw)
            except ValueError:
                return
            offset += len(raw)
            yield offset, record


def iter_journal(out: Path) -> Iterator[QueryRecord]:
    """The committed queries of a generation folder, in commit order, read one at a time."""
    path = out / JOURNAL
    if path.is_file():
        for _, record in valid_lines(path):
            yield QueryRecord.from_dict(record)


def read_journal(out: Path) -> list[QueryRecord]:
    """The committed queries of a generation folder, in commit order."""
    return list(iter_journal(out))


LISTS_FORMAT = "synthrank-lists/1"
"""The first line of a published lists file (``synthrank export``)."""


def text_digest(text: str) -> str:
    """A short SHA-256 (16 hex digits) of ``text``'s UTF-8: what a published file records of the
    query (or document) a line was generated for, so the line is reused only for that text,
    without publishing it."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def same_text(line: dict[str, Any], text: str, field: str = "query_digest") -> bool:
    """Whether a published ``line`` was generated for ``text``: its ``field`` digest matches
    (a line published before digests were recorded is taken on trust)."""
    recorded = line.get(field)
    return recorded is None or recorded == text_digest(text)


def read_published(
    archive: Path, format_name: str, what: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header ``meta`` and the other lines of a gzipped JSONL file published by ``synthrank
    export`` whose first line is ``{"format": format_name, "meta": {...}}``; a
    :class:`SynthrankError` naming the file (and line) when it is missing, not gzip, cut short,
    or not that kind of file. ``what`` names the kind in messages (``lists``)."""
    import zlib

    if not archive.is_file():
        raise SynthrankError(f"{archive}: no such {what} file")
    lines: list[dict[str, Any]] = []
    try:
        with gzip.open(archive, "rt", encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    lines.append(json.loads(text))
                except json.JSONDecodeError as exc:
                    raise SynthrankError(
                        f"{archive}, line {number}: not JSON ({exc.msg})"
                    ) from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise SynthrankError(
            f"{archive}: not a synthrank {what} file (not a whole gzip file: {exc})"
        ) from None
    header = lines[0] if lines else None
    if (
        not isinstance(header, dict)
        or header.get("format") != format_name
        or not isinstance(header.get("meta"), dict)
    ):
        raise SynthrankError(f"{archive}: not a synthrank {what} file (no {format_name} header)")
    for number, line in enumerate(lines[1:], start=2):
        if not isinstance(line, dict):
            raise SynthrankError(f"{archive}, line {number}: expected a JSON object")
    return header["meta"], lines[1:]


def read_lists_file(archive: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The generation ``meta`` and the per-query lines (query id, passages, failures, plan; no
    query text) of a lists file written by ``synthrank export``; a :class:`SynthrankError`
    when ``archive`` is not one (:func:`read_published`)."""
    return read_published(archive, LISTS_FORMAT, "lists")


def iter_calls(out: Path) -> Iterator[dict[str, Any]]:
    """The LLM call records of a generation folder."""
    path = out / CALLS
    if path.is_file():
        for _, record in valid_lines(path):
            yield record


def truncate_file(path: Path, size: int) -> None:
    """Cut ``path`` to its first ``size`` bytes (a missing file is left alone)."""
    if path.is_file() and path.stat().st_size != size:
        with path.open("r+b") as handle:
            handle.truncate(size)


class Committed(Generic[R]):
    """The records of a journal's first ``size`` bytes, read from the file each time they are
    iterated (a job of any size holds none of them): what :meth:`JournalStore.open` found
    committed, whatever is appended after."""

    def __init__(self, path: Path, size: int, load: Callable[[dict[str, Any]], R]) -> None:
        self.path, self.size, self.load = path, size, load

    def __iter__(self) -> Iterator[R]:
        if self.size:
            for offset, raw in valid_lines(self.path):
                if offset > self.size:
                    return
                yield self.load(raw)


def repair_journal(
    out: Path, journal: str, id_field: str, load: Callable[[dict[str, Any]], R]
) -> Committed[R]:
    """Repair a journal and its call log after a crash; return the committed records.

    Cuts a torn or unparseable last line of ``out/journal`` (each complete line is one
    committed record, read with ``load``, whose id is its field ``id_field``) and cuts
    ``generation.jsonl`` from the first call record whose ``id_field`` names an item that was
    neither committed nor marked ``"abandoned"``: the calls of the item in flight when the
    crash came. Both files are read one line at a time; only the committed ids are held."""
    journal_path = out / journal
    kept_journal = 0
    committed: set[str] = set()
    if journal_path.is_file():
        for offset, raw in valid_lines(journal_path):
            committed.add(raw[id_field])
            kept_journal = offset
        truncate_file(journal_path, kept_journal)
    calls_path = out / CALLS
    kept_calls = 0
    if calls_path.is_file():
        for offset, call in valid_lines(calls_path):
            if call.get(id_field) not in committed and not call.get("abandoned"):
                break
            kept_calls = offset
        truncate_file(calls_path, kept_calls)
    return Committed(journal_path, kept_journal, load)


class JournalStore(Generic[R]):
    """An output folder with a journal (one fsynced line per committed item, the source of
    truth), a call log (``generation.jsonl``) and a view of the journal. Subclasses name the
    journal file, the id field its records and call records share, how a journal line is read,
    and how the view is rewritten and extended."""

    journal: ClassVar[str]
    record_type: ClassVar[type[JournalRecord]]
    """The class of a journal line's record (read with its ``from_dict``)."""
    id_field: ClassVar[str]
    name: ClassVar[str]
    """What the store is called in errors ("generation store")."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._journal: IO[str] | None = None
        self._calls: IO[str] | None = None
        self._lock = FolderLock(out)

    def _rewrite_view(self, records: Iterable[R]) -> None:
        raise NotImplementedError

    def _append_view(self, record: R) -> None:
        raise NotImplementedError

    def open(self) -> Committed[R]:
        """Take the folder's lock (:class:`~synthrank.fileio.FolderLock`: a second writer is
        refused, naming the holder), repair the folder after a crash (:func:`repair_journal`,
        then rewrite the view from the journal) and open it for appending; return the committed
        records."""
        self._lock.acquire()
        load = self.record_type.from_dict
        records = repair_journal(self.out, self.journal, self.id_field, load)
        self._rewrite_view(records)
        self._journal = (self.out / self.journal).open("a", encoding="utf-8")
        self._calls = (self.out / CALLS).open("a", encoding="utf-8")
        return records

    def commit(self, record: R, calls: list[dict[str, Any]], *, sync: bool = True) -> None:
        """Append one finished item: its call records, its journal line (flushed, and fsynced
        unless ``sync`` is False: a caller committing a group fsyncs once after it with
        :meth:`sync`), its view. A process killed at any point leaves what was flushed; a
        torn last line is cut by the next :meth:`open`."""
        if self._journal is None or self._calls is None:
            raise SynthrankError(f"{self.name} is not open")
        with naming(self.out / CALLS):
            self._calls.write("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in calls))
            self._calls.flush()
        with naming(self.out / self.journal):
            self._journal.write(record.to_json() + "\n")
            self._journal.flush()
        if sync:
            self.sync()
        with naming(self.out):
            self._append_view(record)

    def sync(self) -> None:
        """fsync the journal: the commits so far survive a power cut."""
        if self._journal is None:
            raise SynthrankError(f"{self.name} is not open")
        with naming(self.out / self.journal):
            os.fsync(self._journal.fileno())

    def abandon(self, calls: list[dict[str, Any]]) -> None:
        """Record the calls of an item that failed in the backend, marked ``abandoned``: kept
        as the record of what the server said, never committed (the item is asked again)."""
        if self._calls is None:
            raise SynthrankError(f"{self.name} is not open")
        with naming(self.out / CALLS):
            for call in calls:
                line = json.dumps({**call, "abandoned": True}, ensure_ascii=False)
                self._calls.write(line + "\n")
            self._calls.flush()

    def close(self) -> None:
        """Close the files (a failure to flush them is raised once both are closed, naming the
        file) and release the folder's lock."""
        failure: OSError | None = None
        for handle, name in ((self._journal, self.journal), (self._calls, CALLS)):
            if handle is None:
                continue
            try:
                with naming(self.out / name):
                    handle.close()
            except OSError as exc:
                failure = failure or exc
        self._journal = self._calls = None
        self._lock.release()
        if failure is not None:
            raise failure


class GenerationStore(JournalStore[QueryRecord]):
    """A generation job's folder: journal ``lists.jsonl`` (one line per query), view the BEIR
    files ``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv``."""

    journal = JOURNAL
    record_type = QueryRecord
    id_field = "query_id"
    name = "generation store"

    def _rewrite_view(self, records: Iterable[QueryRecord]) -> None:
        """Rewrite the BEIR files from the journal (atomically, each file)."""
        for name, writer in (
            ("corpus.jsonl", lambda p: write_corpus(p, self._documents(records))),
            (
                "queries.jsonl",
                lambda p: write_queries(p, (Query(r.query_id, r.query) for r in records)),
            ),
            (f"qrels/{SPLIT}.tsv", lambda p: self._write_qrels(p, records, append=False)),
        ):
            with atomic_path(self.out / name) as tmp:
                writer(tmp)

    @staticmethod
    def _documents(records: Iterable[QueryRecord]) -> Iterator[Document]:
        for record in records:
            for passage in record.passages:
                yield Document(passage.id, passage.text)

    @staticmethod
    def _write_qrels(path: Path, records: Iterable[QueryRecord], *, append: bool) -> None:
        with path.open("a" if append else "w", encoding="utf-8") as handle:
            if not append:
                handle.write("\t".join(QRELS_HEADER) + "\n")
            for record in records:
                for passage in record.passages:
                    handle.write(f"{record.query_id}\t{passage.id}\t{passage.grade}\n")

    def _append_view(self, record: QueryRecord) -> None:
        write_corpus(self.out / "corpus.jsonl", self._documents([record]), append=True)
        self._write_qrels(self.out / "qrels" / f"{SPLIT}.tsv", [record], append=True)
        write_queries(
            self.out / "queries.jsonl", [Query(record.query_id, record.query)], append=True
        )
