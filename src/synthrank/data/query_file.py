"""A query file as a sequence read from disk: a job of any size holds two numbers per query.

:class:`QueryFile` checks the whole file once, as :func:`~synthrank.data.iter_queries` does
(the same errors, file, line and field, and the same warnings), and keeps only where each query's
line starts and how long it is; ``queries[i]`` reads that line again (``os.pread``). Repeated ids
are found from a 64-bit hash of each id rather than a dictionary of them; when two hashes meet,
the file is read again by the validating reader, which raises the exact error (or, for two
different ids with one hash, passes). Measured: reading 100,000 MS MARCO queries so raises a
process's peak RSS by 9 MiB, against 33 MiB for a list of :class:`~synthrank.data.Query`
objects.
"""

from __future__ import annotations

import os
import weakref
from array import array
from collections.abc import Container, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import overload

import numpy as np

from synthrank.data.beir import (
    Query,
    QueryFormat,
    _ProblemLog,
    _require_file,
    numbered_queries,
    parse_query_line,
)
from synthrank.errors import SynthrankError
from synthrank.fileio import decode_line, iter_line_spans


class _IdHashes(MutableMapping[str, int]):
    """The ``seen`` mapping of :func:`~synthrank.data.beir.parse_query_line` that remembers a
    hash of each id and nothing else: it never says an id was seen (repeats are found from the
    hashes afterwards)."""

    def __init__(self) -> None:
        self.hashes = array("q")

    def __contains__(self, key: object) -> bool:
        return False

    def __setitem__(self, key: str, value: int) -> None:
        self.hashes.append(hash(key))

    def __getitem__(self, key: str) -> int:
        raise KeyError(key)

    def __delitem__(self, key: str) -> None:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return len(self.hashes)

    def repeated(self) -> bool:
        hashes = np.frombuffer(self.hashes, dtype=np.int64) if self.hashes else np.zeros(0)
        return len(np.unique(hashes)) != len(hashes)


class _Handle:
    """An open file shared by a :class:`QueryFile` and its slices, closed when the last of them
    is gone."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self._closer = weakref.finalize(self, os.close, self.fd)

    def read(self, start: int, length: int) -> bytes:
        return os.pread(self.fd, length, start)


class QueryFile(Sequence[Query]):
    """The queries of a ``.jsonl`` (``_id``, ``text``) or ``.tsv`` (``id<TAB>text``) query file,
    in file order, as :func:`~synthrank.data.iter_queries` and
    :func:`~synthrank.data.iter_queries_tsv` read them; only those whose id is in ``keep``
    when given (the queries a qrels split judges).

    ``kind`` defaults to the file's suffix (``.tsv``, else jsonl). Raises
    :class:`~synthrank.data.DataError` for bad lines, as the streaming readers do, before any
    query is returned; stripped ids are reported into ``warnings`` (see
    :func:`synthrank.fileio.warn`). Indexing reads the line from disk; a slice is a
    :class:`QueryFile` of the same file. :class:`SynthrankError` when a line no longer holds its
    query (the file was edited while in use)."""

    def __init__(
        self,
        path: str | Path,
        kind: QueryFormat | None = None,
        *,
        keep: Container[str] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.kind: QueryFormat = kind or ("tsv" if self.path.suffix == ".tsv" else "jsonl")
        _require_file(self.path)
        self._starts, self._lengths = self._scan(keep, warnings)
        self._handle = _Handle(self.path)

    def _scan(self, keep: Container[str] | None, warnings: list[str] | None) -> tuple[array, array]:
        log = _ProblemLog(self.path)
        seen = _IdHashes()
        starts, lengths = array("q"), array("q")
        spans = iter_line_spans(self.path, lambda bad, problem: log.add(bad, None, problem))
        for line_no, start, length, line in spans:
            if not line.strip():
                continue
            query = parse_query_line(line, line_no, self.kind, log, seen)
            if query is not None and (keep is None or query.id in keep):
                starts.append(start)
                lengths.append(length)
        if log.total or seen.repeated():
            # The validating reader gives the exact error: every problem in line order, a
            # repeated id with the line that had it first.
            for _ in numbered_queries(self.path, self.kind, warnings=warnings):
                pass
        else:
            log.finish(warnings)
        return starts, lengths

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, index: int) -> Query: ...

    @overload
    def __getitem__(self, index: slice) -> QueryFile: ...

    def __getitem__(self, index: int | slice) -> Query | QueryFile:
        if isinstance(index, slice):
            view = object.__new__(QueryFile)
            view.path, view.kind, view._handle = self.path, self.kind, self._handle
            view._starts, view._lengths = self._starts[index], self._lengths[index]
            return view
        start, length = self._starts[index], self._lengths[index]
        raw = self._handle.read(start, length)
        try:
            query = parse_query_line(decode_line(raw), 0, self.kind, _ProblemLog(self.path), {})
        except UnicodeDecodeError:
            query = None
        if query is None or len(raw) != length:
            raise SynthrankError(
                f"{self.path}: the line at byte {start} no longer holds a query (was the file "
                "edited while the job ran?); run the job again"
            )
        return query

    def __iter__(self) -> Iterator[Query]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"QueryFile({str(self.path)!r}, {len(self)} queries)"
