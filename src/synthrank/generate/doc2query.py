"""Queries for documents: a corpus in, K LLM-written queries per document out, each judged
relevant (grade 1) to the document it was written from.

This is how InPars (Bonifacio et al. 2022, arXiv 2202.05144), GPL (Wang et al. 2022) and
docT5query (Nogueira and Lin 2019) make training data for a target corpus that has no queries:

>>> from synthrank.generate.doc2query import QueryGenJob, generate_queries, filter_queries
>>> generate_queries(QueryGenJob("beir:scifact", Path("runs/d2q"), docs_limit=500))
>>> filter_queries(Path("runs/d2q"), top_k=3)

Each document is shown to the LLM through one ``str.format`` template (``{document}``: title and
text cut to ``doc_words`` words; ``{title}``; ``{style}``); its K queries are K calls with seeds
``stable_hash(seed, doc id, k, attempt)``. A reply is kept as a query when its first line (after
reasoning blocks, "Here is a query:" preambles, labels, list markers and quotes are removed) has
``min_words``..``max_words`` words, is not a refusal or meta-text ("this document"), not a copy
of the document's title or first sentence, and not a duplicate of a query already kept for the
document; otherwise it is retried with a new seed up to ``max_attempts`` calls, then recorded as
a failure with its reason. A document with neither title nor text gets no call and no query (it
is counted as skipped); one with only a title is shown by its title.

The output folder is crash-safe as the passage generator's (:mod:`synthrank.llm.store`):
``documents.jsonl`` is the journal (one fsynced line per finished document: its kept queries,
ids ``{doc_id}-q{k}``, and failures), ``generation.jsonl`` every call, written just before the
document's journal line. ``queries.jsonl`` and ``qrels/train.tsv`` are a view of the journal;
``corpus.jsonl`` is a symbolic link to the source corpus (:func:`link_corpus`), so the folder is
a BEIR dataset that ``synthrank train --data OUT,bm25=2:0`` reads.

:func:`filter_queries` is the round-trip consistency filter of Promptagator (Dai et al. 2022,
arXiv 2209.11755) and InPars-v2 (Jeronymo et al. 2023), with BM25 as the retriever: a query is
kept only if its source document ranks in the top K of BM25 over the whole corpus.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synthrank import __version__
from synthrank.data import Document, Query, iter_corpus, resolve_dataset, write_queries
from synthrank.data.beir import QRELS_HEADER
from synthrank.errors import SynthrankError
from synthrank.fileio import (
    TEXT_ENCODING,
    FolderLock,
    atomic_open,
    atomic_path,
    listed,
    warn,
    write_json_atomic,
)
from synthrank.generate.config import Fingerprinted, check_shared_settings, check_template
from synthrank.generate.prompts import stable_hash
from synthrank.generate.validate import REFUSAL, empty_reason, jaccard, strip_reasoning, words
from synthrank.llm.backends import Backend, BackendSpec, ChatRequest, Completion, make_backend
from synthrank.llm.jobs import (
    JobResult,
    call_counts,
    call_record,
    chat_request,
    check_reusable,
    check_same_job,
    job_identity,
)
from synthrank.llm.scheduler import ItemWork, job_scheduler, settle
from synthrank.llm.store import (
    META,
    SPLIT,
    JournalStore,
    read_published,
    text_digest,
    valid_lines,
)

JOURNAL = "documents.jsonl"
FILTER = "filter.jsonl"
QUERIES_FORMAT = "synthrank-queries-for-documents/1"
"""The first line of a published queries file (``synthrank export`` of such a folder)."""
CORPUS = "corpus.jsonl"
GRADE = 1
"""The grade of a generated query's source document in ``qrels/train.tsv``."""

DEFAULT_TEMPLATE = (
    "Document: {document}\n\n"
    "Write one {style} that this document answers. Write only the query, on one line."
)
"""The InPars-style prompt: the document, then the request for one query."""
DEFAULT_SYSTEM_PROMPT = (
    "You write search queries for a search engine test collection. You write only the query "
    "itself: no introduction, no quotes, no comments."
)
TEMPLATE_FIELDS = frozenset({"document", "title", "style"})


@dataclass(frozen=True)
class QueryGenConfig(Fingerprinted):
    """Everything that decides what the LLM is asked for each document and what is kept.

    ``queries_per_doc`` queries (K) per document, each asked for with ``template`` (fields in
    :data:`TEMPLATE_FIELDS`) after ``system_prompt`` ("" sends no system turn). A query is kept
    when it has ``min_words``..``max_words`` words and its word set's Jaccard similarity to the
    title's or the first sentence's is below ``copy_threshold``, and to every query already kept
    for the document below ``duplicate_threshold``; otherwise it is retried with a new seed, up
    to ``max_attempts`` calls per query. ``seed`` also draws the documents of ``docs_limit``.
    """

    queries_per_doc: int = 1
    """Queries (K) per document (>= 1), each its own call."""
    template: str = DEFAULT_TEMPLATE
    """The ``str.format`` prompt: ``{document}`` (required: title and text cut to
    ``doc_words`` words), ``{title}``, ``{style}``."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """The system turn of every call ("" sends none)."""
    style: str = "search query"
    """What to ask for, as ``{style}`` in the prompt ("question a scientist would ask")."""
    doc_words: int = 300
    """Words of each document shown as ``{document}`` (>= 1)."""
    min_words: int = 3
    """A query with fewer words is rejected as too short and asked again (>= 1)."""
    max_words: int = 40
    """A query with more words is rejected as too long and asked again (>= ``min_words``)."""
    max_tokens: int = 64
    """Tokens the LLM may write per call (>= 1); a reply cut before its first line ends is
    rejected as truncated."""
    temperature: float = 0.7
    """Sampling temperature (>= 0; 0: greedy)."""
    top_p: float = 0.9
    """Nucleus sampling: the smallest set of tokens whose probability reaches this share, in
    (0, 1]."""
    seed: int = 0
    """Base of every call's sampling seed (a hash of it, the document, the query's index and
    the attempt), and of the documents drawn for ``docs_limit``."""
    max_attempts: int = 3
    """Calls per query (>= 1): a rejected reply is asked again with a new seed until this many
    calls, then the query is recorded as failed with its reason."""
    copy_threshold: float = 0.8
    """A query whose word-set Jaccard similarity to the document's title or first sentence
    reaches this, in (0, 1], is a copy and asked again."""
    duplicate_threshold: float = 0.8
    """A query whose word-set Jaccard similarity to a query already kept for the document
    reaches this, in (0, 1], is a duplicate and asked again."""

    def validate(self, where: str = "query generation config") -> None:
        """Raise :class:`SynthrankError` naming ``where`` (the file) and the setting to fix."""
        check_shared_settings(
            self,
            where,
            counts=("queries_per_doc", "doc_words"),
            thresholds=("copy_threshold", "duplicate_threshold"),
        )
        if "document" not in check_template(self.template, TEMPLATE_FIELDS, where):
            raise SynthrankError(f"{where}: template must show the document ({{document}})")


@dataclass(frozen=True)
class QueryGenJob:
    """One job: which documents (``corpus``, ``docs_limit``, ``shard``), where the output goes,
    what to ask and with which engine."""

    corpus: str
    out: Path
    docs_limit: int | None = None
    shard: tuple[int, int] | None = None
    config: QueryGenConfig = field(default_factory=QueryGenConfig)
    backend: BackendSpec = field(default_factory=BackendSpec)
    reuse: tuple[Path, ...] = ()
    """Published queries files (:func:`export_queries`) of the same corpus, model and settings:
    a selected document they hold is taken from them as it is, not generated again."""
    reuse_only: bool = False
    """Refuse to generate: every document must come from the journal or ``reuse`` (rebuilding a
    finished folder, whose queries new LLM calls would not reproduce)."""

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        return job_identity(self, corpus=self.corpus, docs_limit=self.docs_limit)


@dataclass
class QueryGenResult(JobResult):
    """A :func:`generate_queries` run; its items are documents, ``reused`` of them taken from
    published queries files (``QueryGenJob.reuse``), not generated."""

    reused: int = 0


@dataclass(frozen=True)
class GeneratedQuery:
    id: str
    """``{doc_id}-q{index}``."""
    index: int
    text: str


@dataclass(frozen=True)
class DocumentRecord:
    """Everything kept for one document; ``failures`` are (index, reason) of queries that ran out
    of attempts; ``doc_digest`` (:func:`~synthrank.llm.store.text_digest` of the title and
    text the LLM was shown) lets a published record be reused only for that document text
    (None in records written before it was kept: taken on trust)."""

    doc_id: str
    queries: tuple[GeneratedQuery, ...]
    failures: tuple[dict[str, Any], ...] = ()
    doc_digest: str | None = None

    def to_json(self) -> str:
        fields = asdict(self)
        if fields["doc_digest"] is None:
            del fields["doc_digest"]
        return json.dumps(fields, ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DocumentRecord:
        return cls(
            doc_id=raw["doc_id"],
            queries=tuple(GeneratedQuery(**q) for q in raw["queries"]),
            failures=tuple(raw.get("failures", ())),
            doc_digest=raw.get("doc_digest"),
        )


# --- documents ----------------------------------------------------------------------------------


def corpus_path(source: str) -> Path:
    """The ``corpus.jsonl`` of ``source``: a corpus ``.jsonl`` file itself, or a BEIR folder's or
    ``beir:NAME``'s (a folder needs only ``corpus.jsonl``)."""
    path = Path(source).expanduser()
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise SynthrankError(f"{path}: file not found")
        return path
    if path.is_dir() and (path / CORPUS).is_file():
        return path / CORPUS
    return resolve_dataset(source).corpus_path


def select_documents(
    docs: list[Document], limit: int | None, seed: int, shard: tuple[int, int] | None
) -> list[Document]:
    """The documents a job works on, in a deterministic order.

    Without ``limit``, all of them in corpus order; with it, the first ``limit`` of a permutation
    drawn with ``seed`` (so a larger limit extends the same draw). Shard i/n then takes every
    n-th from position i: the shards together are exactly the selected set."""
    if limit is not None:
        order = list(range(len(docs)))
        random.Random(seed).shuffle(order)
        docs = [docs[i] for i in order[:limit]]
    if shard is not None:
        index, count = shard
        docs = docs[index::count]
    return docs


def render_prompt(config: QueryGenConfig, doc: Document) -> str:
    """``config.template`` filled for ``doc``: ``{document}`` is the title and text (as BEIR
    encodes them) cut to ``doc_words`` whitespace-separated words."""
    shown = " ".join(doc.full_text().split()[: config.doc_words])
    return config.template.format(document=shown, title=doc.title, style=config.style)


# --- validation ---------------------------------------------------------------------------------

_PREAMBLE = re.compile(
    r"^(?:(?:sure|certainly|of course|okay|ok)[,!.]?\s*)?here(?:'s| is| are)\b[^:]*:\s*",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^(?:(?:generated|new|relevant|example)\s+)?(?:search\s+)?(?:query|question)\s*\d*"
    r"(?:\s*:|\s+-)\s*",
    re.IGNORECASE,
)
_LIST_MARKER = re.compile(r"^(?:[-*\u2022]|\d{1,2}[.)])\s+")
_QUERY_META = re.compile(
    r"\b(?:(?:this|the above|the following|the given|the provided) (?:document|passage|text|"
    r"article|abstract)|search query|write a query)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def parse_query(response: str) -> tuple[str, bool]:
    """The query in a reply and whether its line ended (a line break follows it).

    The query is the first non-empty line once a reasoning block, a "Here is a query:" preamble,
    a label ("Query:", "Relevant query:"), a list marker, markdown emphasis and surrounding
    quotes are removed; ``""`` when there is none."""
    lines = strip_reasoning(response)[0].replace("\r\n", "\n").split("\n")
    # The answer's last line ended if the reply ends with a line break (stripped above).
    last_ended = response.rstrip(" \t\r").endswith("\n")
    for number, line in enumerate(lines):
        line = _PREAMBLE.sub("", line.replace("**", "").strip())
        line = _LIST_MARKER.sub("", _LABEL.sub("", line)).strip().strip("\"'`").strip()
        if line:
            return line, number < len(lines) - 1 or last_ended
    return "", False


def first_sentence(text: str) -> str:
    """``text`` up to its first sentence end (``.``, ``!`` or ``?`` followed by a space)."""
    return _SENTENCE.split(text.strip(), maxsplit=1)[0]


def query_rejection(
    query: str, doc: Document, kept: list[str], config: QueryGenConfig
) -> str | None:
    """Why ``query`` (already parsed) cannot be kept for ``doc``, or None if it can. ``kept``
    are the queries already kept for the document. Reasons: ``empty``, ``refusal``,
    ``meta-text``, ``too short``, ``too long``, ``copy of the title``, ``copy of the first
    sentence``, ``duplicate``; similarity is the Jaccard index of the word sets."""
    tokens = words(query)
    if not tokens:
        return "empty"
    if REFUSAL.search(query):
        return "refusal"
    if _QUERY_META.search(query):
        return "meta-text"
    if len(tokens) < config.min_words:
        return "too short"
    if len(tokens) > config.max_words:
        return "too long"
    own = set(tokens)
    if doc.title and jaccard(own, set(words(doc.title))) >= config.copy_threshold:
        return "copy of the title"
    if jaccard(own, set(words(first_sentence(doc.text)))) >= config.copy_threshold:
        return "copy of the first sentence"
    if any(jaccard(own, set(words(other))) >= config.duplicate_threshold for other in kept):
        return "duplicate"
    return None


def accept_query(
    response: str, doc: Document, kept: list[str], config: QueryGenConfig, *, stopped_by_limit: bool
) -> tuple[str, str | None]:
    """The query made of ``response`` and the reason it is rejected (None: keep it).

    A reply with no answer is rejected with :func:`~synthrank.generate.validate.empty_reason`'s
    reason (``empty``, ``only reasoning``, ``empty at the limit``); a reply cut by the token or
    time limit before its first line ended as ``truncated``."""
    empty = empty_reason(response, stopped_by_limit=stopped_by_limit)
    if empty is not None:
        return "", empty
    query, line_ended = parse_query(response)
    if query and stopped_by_limit and not line_ended:
        return query, "truncated"
    return query, query_rejection(query, doc, kept, config)


# --- one document's calls -----------------------------------------------------------------------


@dataclass
class _Call:
    index: int
    attempt: int
    request: ChatRequest

    @property
    def key(self) -> int:
        return self.index


class _DocumentWork(ItemWork):
    """The state of one document's K queries while their calls are in flight; its slots are
    the query indexes 0..K-1."""

    def __init__(self, doc: Document, config: QueryGenConfig) -> None:
        super().__init__(doc.id, config, list(range(config.queries_per_doc)))
        self.doc = doc
        self.prompt = render_prompt(config, doc)

    def next_calls(self) -> list[_Call]:
        if self.settled:
            return []
        config = self.config
        calls = []
        for k in self.slots:
            if k in self.kept or k in self.failed or k in self.in_flight:
                continue
            attempt = self.attempts[k]
            request = chat_request(
                config.system_prompt,
                self.prompt,
                max_tokens=config.max_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                seed=stable_hash(config.seed, self.doc.id, k, attempt),
            )
            calls.append(_Call(k, attempt, request))
        return calls

    def absorb(self, call: _Call, completion: Completion, model: str) -> None:
        record = call_record(
            call.request,
            completion,
            model,
            doc_id=self.doc.id,
            kind="query",
            index=call.index,
            attempt=call.attempt,
        )
        if self._failed_in_backend(call.index, record, completion):
            return
        text, reason = accept_query(
            completion.text,
            self.doc,
            [q.text for q in self.kept.values()],
            self.config,
            stopped_by_limit=completion.stopped_by_limit,
        )
        if reason is None:
            query_id = f"{self.doc.id}-q{call.index}"
            self.kept[call.index] = GeneratedQuery(query_id, call.index, text)
            record["query_id"] = query_id
        if self._judged(call.index, record, reason):
            self.failed[call.index] = reason

    def record(self) -> DocumentRecord:
        return DocumentRecord(
            doc_id=self.doc.id,
            queries=tuple(self.kept[k] for k in self.slots if k in self.kept),
            failures=tuple(
                {"index": k, "reason": self.failed[k]} for k in self.slots if k in self.failed
            ),
            doc_digest=text_digest(self.doc.full_text()),
        )


# --- the output folder --------------------------------------------------------------------------


def read_documents(out: Path) -> list[DocumentRecord]:
    """The committed documents of a queries-for-documents folder, in commit order."""
    path = out / JOURNAL
    if not path.is_file():
        return []
    return [DocumentRecord.from_dict(raw) for _, raw in valid_lines(path)]


def read_filter(out: Path) -> dict[str, dict[str, Any]]:
    """The consistency filter's decisions (query id -> its ``filter.jsonl`` line); ``{}`` when
    the filter has not run."""
    path = out / FILTER
    if not path.is_file():
        return {}
    return {raw["query_id"]: raw for _, raw in valid_lines(path)}


def write_view(out: Path, records: Iterable[DocumentRecord]) -> None:
    """Rewrite ``queries.jsonl`` and ``qrels/train.tsv`` (atomically, each file) from the journal,
    leaving out the queries the consistency filter dropped."""
    decisions = read_filter(out)
    kept = [
        (q, r.doc_id)
        for r in records
        for q in r.queries
        if decisions.get(q.id, {}).get("kept", True)
    ]
    with atomic_path(out / "queries.jsonl") as tmp:
        write_queries(tmp, (Query(q.id, q.text) for q, _ in kept))
    with atomic_open(out / "qrels" / f"{SPLIT}.tsv") as handle:
        handle.write("\t".join(QRELS_HEADER) + "\n")
        handle.writelines(f"{q.id}\t{doc_id}\t{GRADE}\n" for q, doc_id in kept)


class QueryStore(JournalStore[DocumentRecord]):
    """Append-only, one commit per document, repairable; as
    :class:`~synthrank.llm.store.GenerationStore` is for queries' passages. The journal is
    ``documents.jsonl``, the view ``queries.jsonl`` and ``qrels/train.tsv`` (:func:`write_view`).
    """

    journal = JOURNAL
    record_type = DocumentRecord
    id_field = "doc_id"
    name = "query store"

    def _rewrite_view(self, records: Iterable[DocumentRecord]) -> None:
        write_view(self.out, records)

    def _append_view(self, record: DocumentRecord) -> None:
        queries = [Query(q.id, q.text) for q in record.queries]
        write_queries(self.out / "queries.jsonl", queries, append=True)
        with (self.out / "qrels" / f"{SPLIT}.tsv").open("a", encoding="utf-8") as handle:
            handle.writelines(f"{q.id}\t{record.doc_id}\t{GRADE}\n" for q in queries)


def link_corpus(source: Path, out: Path) -> bool:
    """Make ``out/corpus.jsonl`` a symbolic link to ``source`` (absolute); True when linked.

    Linked, not copied: a target corpus can be gigabytes (MS MARCO's 8.8M passages are 3 GB)
    while the generated data is the queries and their qrels, which name documents by id. Where a
    link cannot be made (file systems or Windows accounts without symlinks) the corpus is copied
    (atomically, and not again while the copy has the source's size): False."""
    dest = out / CORPUS
    target = source.resolve()
    if dest.is_symlink() and dest.resolve() == target:
        return True
    staging = out / f".{CORPUS}.link"
    staging.unlink(missing_ok=True)
    try:
        os.symlink(target, staging)
    except OSError:
        if dest.is_symlink() or not dest.is_file() or dest.stat().st_size != target.stat().st_size:
            dest.unlink(missing_ok=True)
            with atomic_path(dest) as tmp:
                shutil.copyfile(target, tmp)
        return False
    os.replace(staging, dest)
    return True


def summarize(out: Path) -> dict[str, Any]:
    """Counts of a queries-for-documents folder: documents, queries generated, queries that ran
    out of attempts, queries in the BEIR view, the filter's decisions (None before it runs;
    ``unchecked``: queries committed after it ran) and the call log's counts."""
    records = read_documents(out)
    generated = [q.id for r in records for q in r.queries]
    decisions = read_filter(out)
    checked = [decisions[i] for i in generated if i in decisions]
    filtered = None
    if decisions:
        filtered = {
            "top_k": next(iter(decisions.values()))["top_k"],
            "checked": len(checked),
            "kept": sum(d["kept"] for d in checked),
            "dropped": sum(not d["kept"] for d in checked),
            "unchecked": len(generated) - len(checked),
        }
    return {
        "documents": len(records),
        "queries": len(generated),
        "failed_queries": sum(len(r.failures) for r in records),
        "queries_in_view": len(generated) - (filtered["dropped"] if filtered else 0),
        "filter": filtered,
        **call_counts(out),
    }


# --- publishing and reuse ------------------------------------------------------------------------


def is_queries_folder(folder: Path) -> bool:
    """Whether ``folder``'s ``meta.json`` says it is a queries-for-documents folder."""
    try:
        meta = json.loads((folder / META).read_text(encoding=TEXT_ENCODING))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("kind") == "queries-for-documents"


def export_queries(folder: Path, out: Path) -> int:
    """Write the journal of queries-for-documents folder ``folder`` to ``out`` (``.jsonl.gz``):
    a first line ``{"format": QUERIES_FORMAT, "meta": ...}`` (its ``meta.json`` without counts),
    then one :class:`DocumentRecord` per line (document id, its queries, its failures). The
    queries are the LLM's text; the documents are named by id only. Returns the number of
    documents written."""
    meta_path = folder / META
    for path in (meta_path, folder / JOURNAL):
        if not path.is_file():
            raise SynthrankError(
                f"{folder}: not a queries-for-documents folder ({path.name} not found)"
            )
    meta = json.loads(meta_path.read_text(encoding=TEXT_ENCODING))
    records = read_documents(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as partial, gzip.open(partial, "wt", encoding="utf-8") as handle:
        header = {
            "format": QUERIES_FORMAT,
            "meta": {k: v for k, v in meta.items() if k != "counts"},
        }
        handle.write(json.dumps(header, ensure_ascii=False) + "\n")
        for record in records:
            handle.write(record.to_json() + "\n")
    return len(records)


def read_queries_file(archive: Path) -> tuple[dict[str, Any], list[DocumentRecord]]:
    """The generation ``meta`` and the document records of a file written by
    :func:`export_queries`; a :class:`SynthrankError` naming the file and line when it is not
    one (:func:`~synthrank.llm.store.read_published`)."""
    meta, lines = read_published(archive, QUERIES_FORMAT, "queries")
    records = []
    for number, raw in enumerate(lines, start=2):
        try:
            records.append(DocumentRecord.from_dict(raw))
        except (KeyError, TypeError) as exc:
            raise SynthrankError(
                f"{archive}, line {number}: not a document record ({exc})"
            ) from None
    return meta, records


def reusable_queries(job: QueryGenJob) -> list[tuple[Path, dict[str, Any], list[DocumentRecord]]]:
    """(file, its meta, its records) for each of ``job.reuse``'s files, all checked before the
    job writes anything: a file of another corpus, model or generation settings
    (``config_fingerprint``) is refused, since its queries would not be this job's."""
    files = [(archive, *read_queries_file(archive)) for archive in job.reuse]
    for archive, meta, _ in files:
        check_reusable(archive, meta, job, "queries", corpus=job.corpus)
    return files


def _reuse_documents(
    files: list[tuple[Path, dict[str, Any], list[DocumentRecord]]],
    store: QueryStore,
    todo: list[Document],
    before: dict[str, Any] | None,
) -> tuple[set[str], dict[str, dict[str, Any]]]:
    """Commit to ``store`` the records of ``files`` that belong to documents of ``todo``.
    Returns their ids and meta.json's ``reused``: per file, the documents taken from it by this
    folder's runs so far and the seconds its own job ran (its calls are not in this folder's
    log: their cost was paid there). A record written for another text of its document (its
    ``doc_digest`` differs) is not taken: the document's queries are written anew, with a
    warning."""
    wanted = {doc.id: text_digest(doc.full_text()) for doc in todo}
    taken: set[str] = set()
    changed: set[str] = set()
    record = {k: dict(v) for k, v in (before or {}).items()}
    for archive, meta, records in files:
        count = 0
        for found in records:
            digest = wanted.get(found.doc_id)
            if digest is not None and found.doc_digest not in (None, digest):
                changed.add(found.doc_id)
                continue
            if found.doc_id in wanted and found.doc_id not in taken:
                store.commit(found, [])
                taken.add(found.doc_id)
                count += 1
        if count:
            entry = record.setdefault(str(archive), {"documents": 0})
            entry["documents"] += count
            entry["seconds"] = meta.get("seconds_total", meta.get("seconds_this_run"))
    changed -= taken
    if changed:
        shown = sorted(changed)
        warn(
            f"{len(shown)} documents' text differs from the text their published queries were "
            f"written for ({listed(shown)}): their "
            "queries are written anew",
            None,
        )
    return taken, record


def _meta(
    job: QueryGenJob,
    backend: dict[str, Any],
    corpus: dict[str, Any],
    status: str,
    started: str,
    seconds: float,
    reused: dict[str, dict[str, Any]],
    seconds_before: float,
) -> dict[str, Any]:
    """``seconds_total``: this run's seconds and those of the earlier runs whose documents the
    journal holds."""
    return {
        "synthrank_version": __version__,
        "kind": "queries-for-documents",
        "status": status,
        "job": job.identity(),
        **({"reused": reused} if reused else {}),
        "config": job.config.to_dict(),
        "backend": backend,
        "corpus": corpus,
        "counts": {**summarize(job.out), "empty_documents_skipped": corpus["empty_documents"]},
        "started": started,
        "seconds_this_run": round(seconds, 1),
        "seconds_total": round(seconds_before + seconds, 1),
    }


# --- the job ------------------------------------------------------------------------------------


def _generate_documents(
    todo: list[Document],
    job: QueryGenJob,
    backend: Backend,
    store: QueryStore,
    progress: bool,
) -> tuple[int, list[str]]:
    """Ask for the queries of ``todo`` through the job's scheduler; commit each settled
    document in order, abandon those whose calls failed in the backend. Returns the number
    committed and the ids abandoned."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), unit="doc", disable=not progress, desc="generate-queries")
    start = time.perf_counter()
    committed = 0
    unfinished: list[str] = []
    scheduler = job_scheduler(backend, job.backend)
    works = (_DocumentWork(d, job.config) for d in todo)
    for done in settle(works, scheduler, store):
        if done.record is None:
            unfinished.append(done.work.item_id)
        else:
            committed += 1
        bar.update(1)
        bar.set_postfix(
            docs_per_s=f"{committed / max(time.perf_counter() - start, 1e-9):.2f}",
            rejected=f"{scheduler.rejected / max(scheduler.calls, 1):.0%}",
            refresh=False,
        )
    bar.close()
    return committed, unfinished


def generate_queries(
    job: QueryGenJob, *, progress: bool = True, backend: Backend | None = None
) -> QueryGenResult:
    """Write ``job.config.queries_per_doc`` queries for each of the job's documents into
    ``job.out``, resuming what is there (a different job there is refused, naming the setting).

    ``backend`` lets a caller reuse a loaded engine; by default one is made from ``job.backend``,
    unless every document is already done (then the call only repairs the folder and its view).
    Documents whose calls failed in the backend are listed in ``unfinished``; run again.

    A document whose title and text are both empty (after stripping) has nothing to write a
    query for: it is left out before ``docs_limit`` and ``shard`` select among the others, asks
    for no call, and is counted in meta.json's ``counts.empty_documents_skipped``. A corpus with
    no empty document selects exactly as before this rule. A document with a title and no text
    is kept: the prompt shows its title."""
    job.config.validate()
    if job.docs_limit is not None and job.docs_limit < 1:
        raise SynthrankError(f"docs_limit must be >= 1 (got {job.docs_limit})")
    source = corpus_path(job.corpus)
    if job.out.resolve() == source.parent.resolve():
        raise SynthrankError(
            f"{job.out} is the folder of the corpus itself; its files would be overwritten: "
            "choose a new output folder"
        )
    docs = list(iter_corpus(source))
    if not docs:
        raise SynthrankError(f"{source}: no documents to write queries for")
    with_text = [doc for doc in docs if doc.full_text()]
    if not with_text:
        raise SynthrankError(
            f"{source}: all {len(docs)} documents have an empty title and text: no documents to "
            "write queries for"
        )
    selected = select_documents(with_text, job.docs_limit, job.config.seed, job.shard)
    published = reusable_queries(job)
    # One writer per folder, from the first look at its record to the last write of meta.json.
    with FolderLock(job.out):
        return _generate_queries(job, progress, backend, source, docs, selected, published)


def _generate_queries(
    job: QueryGenJob,
    progress: bool,
    backend: Backend | None,
    source: Path,
    docs: list[Document],
    selected: list[Document],
    published: list[tuple[Path, dict[str, Any], list[DocumentRecord]]],
) -> QueryGenResult:
    previous = check_same_job(job.out, job.identity())
    ids = {doc.id for doc in docs}
    for archive, _, records in published:
        unknown = next((r.doc_id for r in records if r.doc_id not in ids), None)
        if unknown is not None:
            raise SynthrankError(
                f"{archive}: document {unknown!r} is not in {source}; reuse only queries written "
                "for this corpus"
            )
    store = QueryStore(job.out)
    done_ids = {r.doc_id for r in store.open()}
    # The time and reuse on record describe the documents in the journal: a folder whose
    # journal is gone starts them again.
    on_record = previous if done_ids else None
    corpus = {
        "source": job.corpus,
        "path": str(source.resolve()),
        "documents": len(docs),
        "empty_documents": sum(not doc.full_text() for doc in docs),
        "linked": link_corpus(source, job.out),
    }
    todo = [d for d in selected if d.id not in done_ids]
    owns_backend = backend is None
    started = previous["started"] if previous else time.strftime("%Y-%m-%dT%H:%M:%S")
    start = time.perf_counter()
    committed, unfinished = 0, []
    description = None
    reused_ids, reused = set(), (on_record or {}).get("reused") or {}
    before = (on_record or {}).get("seconds_total", (on_record or {}).get("seconds_this_run", 0))

    def meta(backend: dict[str, Any], status: str, seconds: float) -> dict[str, Any]:
        return _meta(job, backend, corpus, status, started, seconds, reused, before)

    try:
        if published and todo:
            reused_ids, reused = _reuse_documents(published, store, todo, reused)
            todo = [d for d in todo if d.id not in reused_ids]
        if reused_ids:
            # On record before the engine loads: a failed load keeps the provenance.
            write_json_atomic(job.out / META, meta(published[0][1]["backend"], "running", 0))
        if todo and job.reuse_only:
            raise SynthrankError(
                f"{job.out}: {len(todo)} documents' queries are in neither its journal nor a "
                "reuse file, and new LLM calls would not reproduce them; name the file they "
                "were exported to (synthrank export) in reuse"
            )
        if todo or backend is not None or (previous is None and not reused_ids):
            backend = backend or make_backend(job.backend)
            description = backend.describe()
            write_json_atomic(job.out / META, meta(description, "running", 0))
            committed, unfinished = _generate_documents(todo, job, backend, store, progress)
        else:
            # Nothing to generate: the engine that wrote the queries describes them.
            description = previous["backend"] if previous else published[0][1]["backend"]
    finally:
        store.close()
        if description is not None:
            done = {r.doc_id for r in read_documents(job.out)}
            status = "complete" if all(d.id in done for d in selected) else "incomplete"
            seconds = time.perf_counter() - start
            write_json_atomic(job.out / META, meta(description, status, seconds))
        if owns_backend and backend is not None:
            backend.close()
    return QueryGenResult(
        out=job.out,
        selected=len(selected),
        done_before=len(done_ids),
        done_now=committed,
        unfinished=unfinished,
        counts={**summarize(job.out), "empty_documents_skipped": corpus["empty_documents"]},
        reused=len(reused_ids),
        seconds=time.perf_counter() - start,
    )


# --- the consistency filter ---------------------------------------------------------------------


def source_ranks(
    corpus: list[Document], queries: list[str], sources: list[str], top_k: int
) -> list[int | None]:
    """For each query, the 1-based rank of its source document (``sources``, ids) under BM25
    over ``corpus`` (bm25s, English stop words, title and text, as ``synthrank train``'s BM25
    negatives), when it is among the ``top_k`` highest-scoring documents that match the query
    (score > 0); None otherwise. Equal scores keep bm25s's order."""
    from synthrank.data.bm25 import bm25_search

    hits, scores = bm25_search([doc.full_text() for doc in corpus], queries, top_k)
    ranks: list[int | None] = []
    for row, row_scores, source in zip(hits, scores, sources, strict=True):
        ranked = enumerate(zip(row, row_scores, strict=True), start=1)
        ranks.append(next((r for r, (i, s) in ranked if s > 0 and corpus[i].id == source), None))
    return ranks


def filter_queries(out: Path, top_k: int) -> dict[str, Any]:
    """The round-trip consistency filter (Promptagator, Dai et al. 2022; InPars-v2, Jeronymo et
    al. 2023) over the committed queries of folder ``out``: a query is kept only if its source
    document ranks in the top ``top_k`` of BM25 over the whole corpus (:func:`source_ranks`).

    Every decision goes to ``filter.jsonl`` (query id, doc id, rank or null, top_k, kept),
    replacing an earlier run's, so the filter can be run again with another K; the BEIR view then
    holds only kept queries, and ``meta.json``'s counts say how many. Returns the filter counts
    (:func:`summarize`'s ``filter``)."""
    if top_k < 1:
        raise SynthrankError(f"filter top k must be >= 1 (got {top_k})")
    meta_path = out / META
    if not (out / JOURNAL).is_file() or not meta_path.is_file():
        raise SynthrankError(f"{out}: not a queries-for-documents folder ({JOURNAL} not found)")
    records = read_documents(out)
    generated = [(q, r.doc_id) for r in records for q in r.queries]
    if not generated:
        raise SynthrankError(f"{out}: no generated queries to filter")
    ranks = source_ranks(
        list(iter_corpus(out / CORPUS)),
        [q.text for q, _ in generated],
        [doc_id for _, doc_id in generated],
        top_k,
    )
    with atomic_open(out / FILTER) as handle:
        for (query, doc_id), rank in zip(generated, ranks, strict=True):
            decision = {
                "query_id": query.id,
                "doc_id": doc_id,
                "rank": rank,
                "top_k": top_k,
                "kept": rank is not None,
            }
            handle.write(json.dumps(decision, ensure_ascii=False) + "\n")
    write_view(out, records)
    meta = json.loads(meta_path.read_text(encoding=TEXT_ENCODING))
    meta["counts"] = summarize(out)
    write_json_atomic(meta_path, meta)
    return meta["counts"]["filter"]
