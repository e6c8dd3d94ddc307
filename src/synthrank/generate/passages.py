"""Run a generation job: real queries in, a graded synthetic BEIR folder out.

Each query is an item of the :mod:`~synthrank.llm.scheduler`: it asks for what it can ask
now (its planning calls and the passages that need no plan, then each passage whose plan is
in, then retries of rejected passages), its answers are validated in the order its calls were
made, and the scheduler keeps the backend's slots busy with the calls of other queries.
Queries are committed to the store in input order as they settle. A query whose calls failed
in the backend (server down after all retries) is not committed; the next run of the same
command retries it. A call the engine refused (a prompt beyond its context, a 4xx answer:
asking again gives the same answer) is settled as a failed slot with the engine's message,
like a rejected passage; a job whose every call is refused stops with that message
(:class:`RefusalWatch`) instead of committing empty lists.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthrank import __version__
from synthrank.data import Query
from synthrank.errors import SynthrankError
from synthrank.fileio import FolderLock, listed, warn, write_json_atomic
from synthrank.generate.config import GenerationConfig, Level
from synthrank.generate.prompts import (
    PLAN_FIELDS,
    level_template,
    parse_plan_answer,
    pick,
    plan_rejection,
    stable_hash,
    template_fields,
)
from synthrank.generate.validate import accept_response, empty_reason
from synthrank.llm.backends import (
    Backend,
    BackendSpec,
    ChatRequest,
    Completion,
    make_backend,
)
from synthrank.llm.jobs import (
    JobResult,
    call_record,
    chat_request,
    check_reusable,
    check_same_job,
    job_identity,
    load_queries,
    select_queries,
    summarize,
)
from synthrank.llm.scheduler import ItemWork, job_scheduler, settle
from synthrank.llm.store import (
    META,
    GenerationStore,
    Passage,
    QueryRecord,
    read_lists_file,
    same_text,
)

PLAN_MAX_TOKENS = 48


@dataclass(frozen=True)
class GenerateJob:
    """One generation job: which queries, where the output goes, what and how to generate."""

    queries: str
    out: Path
    split: str | None = None
    limit: int | None = None
    shard: tuple[int, int] | None = None
    config: GenerationConfig = field(default_factory=GenerationConfig)
    backend: BackendSpec = field(default_factory=BackendSpec)
    reuse: tuple[Path, ...] = ()
    """Published lists files (``synthrank export``) of the same model and generation settings:
    their lists of this job's queries are taken instead of generated (:func:`reusable_lists`)."""
    reuse_only: bool = False
    """Refuse to generate: every list must come from the journal or ``reuse`` (rebuilding the
    lists of a finished run, which new LLM calls would not reproduce)."""

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        return job_identity(self, queries=self.queries, split=self.split, limit=self.limit)


@dataclass
class GenerateResult(JobResult):
    """A :func:`generate` run; its items are queries; ``reused`` of them were taken from
    published lists (``GenerateJob.reuse``), not generated."""

    reused: int = 0


@dataclass
class _Call:
    key: str | tuple[int, int]
    """A plan field name, or (grade, index) of a passage."""
    attempt: int
    request: ChatRequest
    strategy: str
    inputs: dict[str, str]


class _QueryWork(ItemWork):
    """The state of one query's passages while its calls are in flight."""

    def __init__(self, query: Query, config: GenerationConfig, pool: Sequence[Query]) -> None:
        super().__init__(
            query.id,
            config,
            [(level.grade, k) for level in config.levels for k in range(config.docs_per_level)],
        )
        self.query = query
        self.pool = pool
        self.plan: dict[str, str] = {}
        self.plan_failed: dict[str, str] = {}
        self.plan_needed = sorted(set().union(*(level.plan_fields() for level in config.levels)))

    def _request(self, prompt: str, seed: int, max_tokens: int) -> ChatRequest:
        config = self.config
        return chat_request(
            config.system_prompt,
            prompt,
            max_tokens=max_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=seed,
        )

    def next_calls(self) -> list[_Call]:
        if self.settled:
            return []
        config, qid = self.config, self.query.id
        calls = []
        for name in self.plan_needed:
            if name in self.plan or name in self.plan_failed or name in self.in_flight:
                continue
            attempt = self.attempts[name]
            seed = stable_hash(config.seed, qid, name, attempt)
            prompt = PLAN_FIELDS[name].prompt.format(query=self.query.text)
            request = self._request(prompt, seed, PLAN_MAX_TOKENS)
            calls.append(_Call(name, attempt, request, f"plan:{name}", {}))
        for grade, k in self.slots:
            if (grade, k) in self.kept or (grade, k) in self.failed or (grade, k) in self.in_flight:
                continue
            level = config.level(grade)
            needs = level.plan_fields()
            failed_plans = sorted(needs & self.plan_failed.keys())
            if failed_plans:
                name = failed_plans[0]
                self.failed[(grade, k)] = f"no {name} ({self.plan_failed[name]})"
                continue
            if not needs <= self.plan.keys():
                continue
            attempt = self.attempts[(grade, k)]
            inputs = self._inputs(level, k, attempt)
            seed = stable_hash(config.seed, qid, grade, k, attempt)
            prompt = level_template(level.strategy, level.template).format(
                query=self.query.text,
                definition=level.definition,
                style=config.style,
                words=config.target_words,
                **inputs,
            )
            request = self._request(prompt, seed, config.max_tokens)
            calls.append(_Call((grade, k), attempt, request, level.strategy, inputs))
        return calls

    def refuse(self, key: Any, reason: str) -> None:
        if isinstance(key, str):
            self.plan_failed[key] = f"plan failed: {reason}"
        else:
            self.failed[key] = reason

    def _inputs(self, level: Level, k: int, attempt: int) -> dict[str, str]:
        """The values for ``{topic}``, ``{other_query}`` and the plan fields; a retry draws a
        new topic and other query."""
        key = (self.config.seed, self.query.id, level.grade, k, attempt)
        used = template_fields(level_template(level.strategy, level.template))
        inputs = {name: self.plan[name] for name in level.plan_fields()}
        if "topic" in used:
            inputs["topic"] = pick(self.config.topics, *key)
        if "other_query" in used:
            index = stable_hash(*key) % len(self.pool)
            if self.pool[index].id == self.query.id and len(self.pool) > 1:
                index = (index + 1) % len(self.pool)
            inputs["other_query"] = self.pool[index].text
        return inputs

    def absorb(self, call: _Call, completion: Completion, model: str) -> None:
        is_plan = isinstance(call.key, str)
        record = call_record(
            call.request,
            completion,
            model,
            query_id=self.query.id,
            kind="plan" if is_plan else "passage",
            grade=None if is_plan else call.key[0],
            index=None if is_plan else call.key[1],
            attempt=call.attempt,
            strategy=call.strategy,
            inputs=call.inputs,
        )
        if self._failed_in_backend(call.key, record, completion):
            return
        if is_plan:
            answer = parse_plan_answer(completion.text)
            reason = empty_reason(
                completion.text, stopped_by_limit=completion.stopped_by_limit
            ) or plan_rejection(call.key, answer, self.query.text)
            if reason is None:
                self.plan[call.key] = answer
        else:
            reason = self._absorb_passage(call, completion, record)
        if self._judged(call.key, record, reason):
            if is_plan:
                self.plan_failed[call.key] = f"plan failed: {reason}"
            else:
                self.failed[call.key] = reason

    def _absorb_passage(
        self, call: _Call, completion: Completion, record: dict[str, Any]
    ) -> str | None:
        config = self.config
        grade, k = call.key
        text, reason = accept_response(
            completion.text,
            self.query.text,
            [p.text for p in self.kept.values()],
            stopped_by_limit=completion.stopped_by_limit,
            min_words=config.min_words,
            max_words=config.max_words,
            echo_threshold=config.echo_threshold,
            duplicate_threshold=config.duplicate_threshold,
        )
        if reason is None:
            passage_id = f"{self.query.id}-{grade}-{k}"
            self.kept[call.key] = Passage(passage_id, grade, text, call.strategy)
            record["passage_id"] = passage_id
        return reason

    def record(self) -> QueryRecord:
        return QueryRecord(
            query_id=self.query.id,
            query=self.query.text,
            passages=tuple(self.kept[s] for s in self.slots if s in self.kept),
            failures=tuple(
                {"grade": s[0], "index": s[1], "reason": self.failed[s]}
                for s in self.slots
                if s in self.failed
            ),
            plan=dict(self.plan),
        )


def reusable_lists(job: GenerateJob) -> list[tuple[Path, dict[str, Any], list[dict[str, Any]]]]:
    """(file, its meta, its per-query lines) for each of ``job.reuse``'s files, every file
    checked before the job writes anything: a file made by another model or with other
    generation settings (``config_fingerprint``) is refused, since its levels would not be this
    job's."""
    files = [(archive, *read_lists_file(archive)) for archive in job.reuse]
    for archive, meta, _ in files:
        check_reusable(archive, meta, job, "lists")
    return files


def reuse_lists(
    files: list[tuple[Path, dict[str, Any], list[dict[str, Any]]]],
    store: GenerationStore,
    todo: list[Query],
) -> dict[str, dict[str, Any]]:
    """Commit to ``store`` the lists of :func:`reusable_lists` that belong to queries of
    ``todo`` (query text from the job's own source). Returns, per file that gave lists, their
    query ids and the time its own job took (``seconds_total`` of its meta, None where the
    file does not say): the reused queries have no calls in this folder's log, their cost was
    paid by the job that made them. A list written for another text of its query (its
    ``query_digest`` differs) is not taken: the query is generated anew, with a warning."""
    wanted = {query.id: query for query in todo}
    taken: dict[str, dict[str, Any]] = {}
    changed: list[str] = []
    for archive, meta, lines in files:
        for line in lines:
            query = wanted.get(line["query_id"])
            if query is not None and not same_text(line, query.text):
                changed.append(query.id)
                continue
            query = wanted.pop(line["query_id"], None)
            if query is not None:
                store.commit(QueryRecord.from_dict({**line, "query": query.text}), [])
                entry = taken.setdefault(
                    str(archive), {"ids": set(), "seconds_total": meta.get("seconds_total")}
                )
                entry["ids"].add(query.id)
    changed = [query_id for query_id in changed if query_id in wanted]
    if changed:
        warn(
            f"{len(changed)} queries' text differs from the text their published lists were "
            f"generated for ({listed(changed)}): "
            "their lists are generated anew",
            None,
        )
    return taken


def _reused_record(
    previous: dict[str, Any] | None, taken: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """meta.json's ``reused``: per file, the lists taken from it by this folder's runs so far."""
    record = {k: dict(v) for k, v in ((previous or {}).get("reused") or {}).items()}
    for archive, entry in taken.items():
        before = record.get(archive, {}).get("queries", 0)
        record[archive] = {
            "queries": before + len(entry["ids"]),
            "seconds_total": entry["seconds_total"],
        }
    return record


def _meta(
    job: GenerateJob,
    backend: dict[str, Any],
    status: str,
    started: str,
    seconds: float,
    previous: dict[str, Any] | None,
    reused: dict[str, dict[str, Any]],
) -> dict:
    before = (previous or {}).get("seconds_total", 0.0)
    return {
        "synthrank_version": __version__,
        "status": status,
        "job": job.identity(),
        **({"reused": reused} if reused else {}),
        "strategies": {str(level.grade): level.strategy for level in job.config.levels},
        "levels": {str(level.grade): level.name for level in job.config.levels},
        "config": job.config.to_dict(),
        "backend": backend,
        "counts": summarize(job.out),
        "started": started,
        "seconds_this_run": round(seconds, 1),
        # Every run of this folder, an interrupted one and its continuations alike.
        "seconds_total": round(before + seconds, 1),
    }


def generate(
    job: GenerateJob, *, progress: bool = True, backend: Backend | None = None
) -> GenerateResult:
    """Generate graded passages for the job's queries into ``job.out`` (resuming what is there).

    ``backend`` lets a caller reuse a loaded engine; by default one is made from ``job.backend``.
    A second process on the same ``job.out`` is refused while this one runs
    (:class:`~synthrank.fileio.FolderLock`).
    """
    job.config.validate()
    pool = load_queries(job.queries, job.split)
    if not pool:
        raise SynthrankError(f"{job.queries}: no queries to generate for")
    selected = select_queries(pool, job.limit, job.shard)
    # One writer per folder, from the first look at its record to the last write of meta.json.
    with FolderLock(job.out):
        return _generate(job, pool, selected, progress, backend)


def _committed(
    records: Iterable[QueryRecord], selected: Sequence[Query]
) -> tuple[set[str], list[str]]:
    """The ids of the committed ``records``, and of those whose query text differs from the
    job's. The records are read one at a time and the job's queries once, in order: a resumed
    job of any size holds the committed ids and a hash of each one's text."""
    text_hashes: dict[str, int] = {}
    for record in records:
        text_hashes[record.query_id] = hash(record.query)
    changed = [
        query.id
        for query in (selected if text_hashes else ())
        if text_hashes.get(query.id, hash(query.text)) != hash(query.text)
    ]
    return set(text_hashes), changed


def _generate(
    job: GenerateJob,
    pool: Sequence[Query],
    selected: Sequence[Query],
    progress: bool,
    backend: Backend | None,
) -> GenerateResult:
    from tqdm.auto import tqdm

    on_record = check_same_job(job.out, job.identity())
    published = reusable_lists(job)
    store = GenerationStore(job.out)
    done_ids, changed = _committed(store.open(), selected)
    if changed:
        store.close()
        raise SynthrankError(
            f"{job.out}: {len(changed)} queries' text differs from the text their lists were "
            f"generated for ({listed(changed)}); "
            "generate into a new --out for the new text"
        )
    # The time and reuse on record describe the lists in the journal: a folder whose journal
    # is gone (copied without it) starts its record again.
    previous = on_record if done_ids else None
    # Positions, not queries: the job's queries stay on disk until their turn.
    todo = array("q", (i for i, q in enumerate(selected) if q.id not in done_ids))
    reused: set[str] = set()
    provenance = _reused_record(previous, {})
    owns_backend = backend is None
    started = previous["started"] if previous else time.strftime("%Y-%m-%dT%H:%M:%S")
    start = time.perf_counter()
    unfinished: list[str] = []
    committed = 0
    described: dict[str, Any] | None = None
    try:
        if published:
            taken = reuse_lists(published, store, [selected[i] for i in todo])
            reused = {query_id for entry in taken.values() for query_id in entry["ids"]}
            todo = array("q", (i for i in todo if selected[i].id not in reused))
            provenance = _reused_record(previous, taken)
        if todo and job.reuse_only:
            raise SynthrankError(
                f"{job.out}: the lists of {len(todo)} queries (first {selected[todo[0]].id}) are "
                "in neither its journal nor a reuse file, and new LLM calls would not reproduce "
                "them; name the file they were exported to (synthrank export) in reuse"
            )
        if not todo and backend is None:
            # Nothing to generate: the LLM is not loaded; the record keeps the engine it names.
            described = (on_record or {}).get("backend") or {
                "backend": job.backend.backend,
                "model": job.backend.model,
            }
        else:
            backend = backend or make_backend(job.backend)
            described = backend.describe()
        meta = _meta(job, described, "running", started, 0.0, previous, provenance)
        write_json_atomic(job.out / META, meta)
        bar = tqdm(total=len(todo), unit="query", disable=not progress, desc="generate")
        kept = 0
        scheduler = job_scheduler(backend, job.backend) if todo else None
        works = (_QueryWork(selected[i], job.config, pool) for i in todo)
        for done in settle(works, scheduler, store) if scheduler else ():
            if done.record is None:
                unfinished.append(done.work.item_id)
            else:
                committed += 1
                kept += len(done.record.passages)
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.update(1)
            bar.set_postfix(
                passages_per_s=f"{kept / elapsed:.2f}",
                tokens_per_s=f"{scheduler.tokens / elapsed:.1f}",
                rejected=f"{scheduler.rejected / max(scheduler.calls, 1):.0%}",
                refresh=False,
            )
        bar.close()
    finally:
        store.close()
        if described is not None:
            complete = len(done_ids) + len(reused) + committed == len(selected)
            status = "complete" if complete else "incomplete"
            seconds = time.perf_counter() - start
            meta = _meta(job, described, status, started, seconds, previous, provenance)
            write_json_atomic(job.out / META, meta)
        if owns_backend and backend is not None:
            backend.close()
    counts = summarize(job.out)
    return GenerateResult(
        out=job.out,
        selected=len(selected),
        done_before=len(done_ids),
        done_now=committed,
        unfinished=unfinished,
        counts=counts,
        seconds=time.perf_counter() - start,
        reused=len(reused),
    )
