"""What every LLM job shares above the scheduler: its identity on record (what a resumed run
must not change), its inputs (queries, shards), the request and record of one call, and the
counts of a job's folder (journal and call log, read one line at a time).

The jobs themselves (:mod:`synthrank.generate`: passages for queries, queries for documents,
grading) build on these, on :mod:`synthrank.llm.scheduler` and on :mod:`synthrank.llm.store`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthrank.data import Query, resolve_dataset
from synthrank.data.query_file import QueryFile
from synthrank.errors import SynthrankError
from synthrank.fileio import TEXT_ENCODING
from synthrank.llm.backends import ChatRequest, Completion
from synthrank.llm.store import META, iter_calls, iter_journal


def job_identity(job: Any, **inputs: Any) -> dict[str, Any]:
    """What must not change between a run of ``job`` and its resumption (``meta.json``'s
    ``job``, compared by :func:`check_same_job`): ``inputs`` (what the job reads, in the order
    given), then its ``shard`` as ``"i/n"``, its backend's model and its config's fingerprint."""
    shard = job.shard
    return {
        **inputs,
        "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
        "model": job.backend.model,
        "config_fingerprint": job.config.fingerprint(),
    }


@dataclass
class JobResult:
    """What a run of a generation job did: of the ``selected`` items, ``done_before`` were
    committed by earlier runs and ``done_now`` by this one; ``unfinished`` are the ids of those
    whose calls failed in the backend (left for the next run); ``counts`` are the folder's."""

    out: Path
    selected: int
    done_before: int
    done_now: int
    unfinished: list[str]
    counts: dict[str, Any]
    seconds: float


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise SynthrankError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise SynthrankError(f"--shard {text!r}: need 0 <= i < n")
    return index, count


def load_queries(source: str, split: str | None = None) -> QueryFile:
    """Queries from a ``.jsonl`` / ``.tsv`` file, or a BEIR dataset's ``queries.jsonl`` (those
    judged in ``split`` when given), in file order; read from disk when asked for
    (:class:`~synthrank.data.query_file.QueryFile`: a job of any size holds two numbers a
    query, and a BEIR split the ids it judges)."""
    path = Path(source).expanduser()
    if path.suffix in (".jsonl", ".tsv") and path.is_file():
        return QueryFile(path)
    dataset = resolve_dataset(source)
    judged = None if split is None else dataset.qrels(split)
    return QueryFile(dataset.queries_path, "jsonl", keep=judged)


def select_queries(
    queries: Sequence[Query], limit: int | None, shard: tuple[int, int] | None
) -> Sequence[Query]:
    """The first ``limit`` queries, then every n-th from position i for shard i/n: a
    deterministic split whose shards together are exactly the limited set (a
    :class:`~synthrank.data.query_file.QueryFile` stays one)."""
    if limit is not None:
        queries = queries[:limit]
    if shard is not None:
        index, count = shard
        queries = queries[index::count]
    return queries


def chat_request(
    system_prompt: str,
    prompt: str,
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
) -> ChatRequest:
    """The request for one call: ``system_prompt`` (stripped) as the system turn, then
    ``prompt`` as the user turn, with these sampling settings.

    An empty system prompt sends no system turn: some chat templates (Gemma's) have no system
    role, and their servers answer 400 to one."""
    system = system_prompt.strip()
    messages = ((("system", system),) if system else ()) + (("user", prompt),)
    return ChatRequest(
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )


def call_record(
    request: ChatRequest, completion: Completion, model: str, **identity: Any
) -> dict[str, Any]:
    """The record of one LLM call as ``generation.jsonl`` holds it: ``identity`` (what the call
    was for: the item's id, kind, slot, attempt; in the order given), then the request's
    messages and sampling, the model, and the reply with its finish reason, token counts,
    latency, transport tries and endpoint. The caller adds ``accepted`` and ``reason``."""
    return {
        **identity,
        "messages": request.message_dicts(),
        "sampling": request.sampling(),
        "model": model,
        "response": completion.text,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "latency_s": round(completion.latency_s, 4),
        "tries": completion.tries,
        "endpoint": completion.endpoint,
    }


_URL = re.compile(r"https?://\S+")


def reason_kind(reason: str) -> str:
    """A rejection reason with endpoint URLs blanked, so the same fault on several endpoints
    counts as one kind."""
    return _URL.sub("<endpoint>", reason)


def call_counts(out: Path) -> dict[str, Any]:
    """Counts of a generation folder's call log (``generation.jsonl``): calls, rejected calls and
    their reasons (commonest first, endpoints blanked), prompt and completion tokens, and the
    seconds the LLM took in all."""
    rejections: Counter = Counter()
    calls = prompt_tokens = completion_tokens = 0
    latency = 0.0
    for call in iter_calls(out):
        calls += 1
        prompt_tokens += call.get("prompt_tokens") or 0
        completion_tokens += call.get("completion_tokens") or 0
        latency += call.get("latency_s") or 0.0
        if not call.get("accepted"):
            rejections[reason_kind(call.get("reason") or "unknown")] += 1
    return {
        "calls": calls,
        "rejected_calls": sum(rejections.values()),
        "rejections": dict(rejections.most_common()),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "llm_seconds": round(latency, 2),
    }


def summarize(out: Path) -> dict[str, Any]:
    """Counts of a generation folder, from its journal and call log (read one line at a time)."""
    per_level: Counter = Counter()
    failed_per_level: Counter = Counter()
    queries = 0
    for record in iter_journal(out):
        queries += 1
        per_level.update(p.grade for p in record.passages)
        failed_per_level.update(f["grade"] for f in record.failures)
    return {
        "queries": queries,
        "passages": sum(per_level.values()),
        "passages_per_level": {str(g): per_level[g] for g in sorted(per_level, reverse=True)},
        "failed_passages": sum(failed_per_level.values()),
        "failed_per_level": {
            str(g): failed_per_level[g] for g in sorted(failed_per_level, reverse=True)
        },
        **call_counts(out),
    }


def check_same_job(out: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The ``meta.json`` of the job already in ``out`` (None for a new folder); a
    :class:`SynthrankError` naming the first key of ``identity`` that differs from it."""
    path = out / META
    if not path.is_file():
        return None
    previous = json.loads(path.read_text(encoding=TEXT_ENCODING))
    before = previous.get("job", {})
    changed = [k for k in identity if before.get(k) != identity[k]]
    if changed:
        key = changed[0]
        raise SynthrankError(
            f"{out} holds a generation job with a different {key} ({before.get(key)!r}, now "
            f"{identity[key]!r}); continue it with the same settings, or choose a new --out"
        )
    return previous


def check_reusable(archive: Path, meta: dict[str, Any], job: Any, what: str, **inputs: Any) -> None:
    """Refuse published ``what`` (file ``archive``, its header ``meta``) that ``job`` would not
    have made: another model or other settings (``config_fingerprint``), or other ``inputs``
    (for example the corpus)."""
    before = meta.get("job", {})
    expected = {
        **inputs,
        "model": job.backend.model,
        "config_fingerprint": job.config.fingerprint(),
    }
    for key, value in expected.items():
        if before.get(key) != value:
            raise SynthrankError(
                f"{archive}: made with a different {key} ({before.get(key)!r}, this job "
                f"{value!r}); reuse only {what} of the same {', '.join(inputs)}"
                f"{', ' if inputs else ''}model and settings"
            )
