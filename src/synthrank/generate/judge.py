"""An independent check of intended levels: a judge scores every (query, passage) pair, and a rule
keeps, drops or relabels the passages whose judged level disagrees with the intended one.

Judges:

- ``encoder``: a sentence-transformers model's query-passage cosine. Within a query, the judged
  order is the order of cosines; the largest set of passages whose cosines fall strictly (by
  ``margin``) as the intended grade falls agrees with the judge (ties prefer higher grades);
  every other passage disagrees. Its judged level is the intended grade of the rank it holds.
- ``llm``: an instruction LLM asked for a 0-3 grade (one digit) through any generate backend.
  A passage disagrees when its judged grade differs from the intended one by more than
  ``tolerance``.

Rules: ``keep`` (only record agreement), ``drop`` (drop disagreeing passages), ``relabel`` (give
disagreeing passages their judged level). Every decision is written to ``judgments.jsonl`` with
its reason; nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthrank.errors import SettingError, SynthrankError
from synthrank.evaluate.models import TORCH, Runtime
from synthrank.fileio import LOCK_FILE, TEXT_ENCODING, FolderLock, write_json_atomic
from synthrank.generate.validate import strip_reasoning
from synthrank.llm.store import (
    CALLS,
    META,
    GenerationStore,
    QueryRecord,
    read_journal,
)

if TYPE_CHECKING:
    from synthrank.llm.backends import ChatRequest

JUDGMENTS = "judgments.jsonl"
JUDGES = ("encoder", "llm")
RULES = ("keep", "drop", "relabel")

LLM_JUDGE_PROMPT = (
    "Search query: {query}\n\nPassage: {passage}\n\n"
    "How relevant is the passage to the search query?\n"
    "3 = it answers the query completely\n"
    "2 = it is about the query's subject but answers it only partly\n"
    "1 = it is on a related topic but does not answer the query\n"
    "0 = it is about something else\n"
    "Answer with one digit: 0, 1, 2 or 3."
)
_DIGIT = re.compile(r"[0-3]")


@dataclass(frozen=True)
class JudgeConfig:
    judge: str = "encoder"
    """Who judges: ``encoder`` (a reference encoder's query-passage cosine orders each query's
    passages) or ``llm`` (an LLM grades each passage 0-3 through a generate backend, which the
    caller passes)."""
    encoder: str = "mpnet"
    """The encoder judge: all-mpnet-base-v2 by default, a model other than the usual student
    (minilm), as ``synthrank judge --judge-encoder`` defaults to."""
    rule: str = "drop"
    """What happens to a passage whose judged level disagrees with its intended one: ``keep``
    it (the disagreement is only recorded), ``drop`` it, or ``relabel`` it with the judged
    level."""
    margin: float = 0.0
    """Encoder judge: the cosine gap (>= 0) by which a passage must score above each agreeing
    passage of a lower level to agree."""
    tolerance: int = 0
    """LLM judge: the grade difference (>= 0) that still counts as agreeing."""
    runtime: Runtime = TORCH
    """How the encoder judge runs (:class:`~synthrank.evaluate.models.Runtime`)."""

    def validate(self) -> None:
        if self.judge not in JUDGES:
            raise SettingError("judge", f"must be one of {', '.join(JUDGES)} (got {self.judge!r})")
        if self.rule not in RULES:
            raise SettingError("rule", f"must be one of {', '.join(RULES)} (got {self.rule!r})")
        for name in ("margin", "tolerance"):
            if getattr(self, name) < 0:
                raise SettingError(name, f"must be >= 0 (got {getattr(self, name)})")
        self.runtime.validate()


def agreeing_chain(grades: list[int], scores: list[float], margin: float = 0.0) -> set[int]:
    """Indices of the largest set of items whose scores fall strictly (by more than ``margin``)
    as their grades fall; items of equal grade never constrain each other. Among sets of the
    same size, the one keeping higher grades wins. O(n^2) over a query's few passages."""
    order = sorted(range(len(grades)), key=lambda i: (-grades[i], -scores[i]))
    best: list[tuple[int, tuple[int, ...], list[int]]] = []
    for position, i in enumerate(order):
        size, key, chain = 1, (grades[i],), [i]
        for earlier in range(position):
            j = order[earlier]
            compatible = grades[j] == grades[i] or scores[j] - scores[i] > margin
            if not compatible:
                continue
            prev_size, prev_key, prev_chain = best[earlier]
            candidate = (prev_size + 1, tuple(sorted((*prev_key, grades[i]), reverse=True)))
            if candidate > (size, key):
                size, key, chain = candidate[0], candidate[1], [*prev_chain, i]
        best.append((size, key, chain))
    return set(max(best, key=lambda entry: (entry[0], entry[1]))[2]) if best else set()


def rank_levels(grades: list[int], scores: list[float]) -> list[int]:
    """The level each item holds by score: the intended grades, sorted high to low, handed out
    in order of falling score."""
    by_score = sorted(range(len(scores)), key=lambda i: -scores[i])
    handed = sorted(grades, reverse=True)
    judged = [0] * len(grades)
    for rank, i in enumerate(by_score):
        judged[i] = handed[rank]
    return judged


def parse_grade(response: str) -> int | None:
    """The first digit 0-3 of a judge's answer, after its reasoning block (None: no grade)."""
    match = _DIGIT.search(strip_reasoning(response)[0])
    return int(match.group()) if match else None


def _encoder_scores(
    records: list[QueryRecord], encoder: str, progress: bool, runtime: Runtime
) -> list[list[float]]:
    from synthrank.data.resolve import cache_root
    from synthrank.evaluate.encode import EmbeddingCache, grouped_scores
    from synthrank.evaluate.models import load_model

    return grouped_scores(
        load_model(encoder, runtime=runtime),
        [r.query for r in records],
        [[p.text for p in r.passages] for r in records],
        cache=EmbeddingCache(cache_root() / "embeddings"),
        progress=progress,
    )


def judge_request(query: str, passage: str) -> ChatRequest:
    """The LLM judge's call for one (query, passage) pair: :data:`LLM_JUDGE_PROMPT`, greedy,
    room for one digit."""
    from synthrank.llm.backends import ChatRequest

    return ChatRequest(
        messages=(("user", LLM_JUDGE_PROMPT.format(query=query, passage=passage)),),
        max_tokens=4,
        temperature=0.0,
        top_p=1.0,
        seed=0,
    )


def _llm_grades(
    records: list[QueryRecord], backend: Any
) -> tuple[list[list[int | None]], dict[str, str]]:
    """The LLM judge's grade of every passage (None: no grade in the reply, or the engine
    refused the call), and the engine's message per refused passage id. A call the engine could
    not answer (a server down past its retries) stops the job: nothing is written, and the same
    command asks again; so does a job whose every call is refused."""
    from synthrank.llm.backends import RefusalWatch

    requests = [judge_request(r.query, p.text) for r in records for p in r.passages]
    completions = backend.complete(requests)
    watch = RefusalWatch()
    refused: dict[str, str] = {}
    passages = [p for r in records for p in r.passages]
    for passage, completion in zip(passages, completions, strict=True):
        if completion.error is not None and not completion.refused:
            raise SynthrankError(
                f"passage {passage.id}: the judge's call failed ({completion.error}); nothing "
                "was written: run the same command again"
            )
        watch.observe(completion)
        if completion.refused:
            refused[passage.id] = completion.error or "refused"
    if watch.hopeless(finished=True):
        raise watch.error()
    grades, row = [], 0
    for record in records:
        count = len(record.passages)
        grades.append([parse_grade(c.text) for c in completions[row : row + count]])
        row += count
    return grades, refused


def judge_dataset(
    source: Path,
    out: Path,
    config: JudgeConfig,
    *,
    backend: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Judge every passage of generation folder ``source`` and write the kept (and relabelled)
    passages to ``out``, a new generation folder with ``judgments.jsonl``; return the counts.
    A second process writing ``out`` meanwhile is refused (:class:`~synthrank.fileio.FolderLock`).
    """
    config.validate()
    records = read_journal(source)
    if not records:
        raise SynthrankError(f"{source}: no generated queries (lists.jsonl is missing or empty)")
    with FolderLock(out):
        if any(p.name != LOCK_FILE for p in out.iterdir()):
            raise SynthrankError(f"{out} is not empty; choose a new output folder")
        return _judge(records, source, out, config, backend, progress)


def _judge(
    records: list[QueryRecord],
    source: Path,
    out: Path,
    config: JudgeConfig,
    backend: Any,
    progress: bool,
) -> dict[str, Any]:
    refused: dict[str, str] = {}
    if config.judge == "encoder":
        scores = _encoder_scores(records, config.encoder, progress, config.runtime)
    else:
        if backend is None:
            raise SynthrankError("the llm judge needs a backend")
        scores, refused = _llm_grades(records, backend)
    decisions: Counter = Counter()
    agree = 0
    judged_records, lines = [], []
    for record, values in zip(records, scores, strict=True):
        grades = [p.grade for p in record.passages]
        if config.judge == "encoder":
            agreeing = agreeing_chain(grades, values, config.margin)
            judged = rank_levels(grades, values)
            verdicts = [i in agreeing for i in range(len(grades))]
        else:
            judged = [g if v is None else v for g, v in zip(grades, values, strict=True)]
            verdicts = [
                v is not None and abs(v - g) <= config.tolerance
                for g, v in zip(grades, values, strict=True)
            ]
        kept = []
        for passage, value, level, agrees in zip(
            record.passages, values, judged, verdicts, strict=True
        ):
            agree += agrees
            if agrees or config.rule == "keep":
                decision, reason = "keep", "agrees" if agrees else "disagrees; rule keep"
                kept.append(passage)
            elif passage.id in refused:
                decision, reason = "drop", f"refused: {refused[passage.id]}"
            elif config.rule == "drop":
                decision, reason = "drop", f"judged level {level}, intended {passage.grade}"
            else:
                decision, reason = "relabel", f"judged level {level}, intended {passage.grade}"
                kept.append(type(passage)(passage.id, level, passage.text, passage.strategy))
            decisions[decision] += 1
            lines.append(
                {
                    "query_id": record.query_id,
                    "passage_id": passage.id,
                    "intended": passage.grade,
                    "judge": config.judge,
                    "score": value,
                    "judged_level": level,
                    "agrees": agrees,
                    "decision": decision,
                    "reason": reason,
                }
            )
        judged_records.append(
            QueryRecord(record.query_id, record.query, tuple(kept), record.failures, record.plan)
        )
    out.mkdir(parents=True, exist_ok=True)
    with (out / "lists.jsonl").open("w", encoding="utf-8") as journal:
        journal.writelines(r.to_json() + "\n" for r in judged_records)
    with (out / JUDGMENTS).open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    if (source / CALLS).is_file():
        shutil.copyfile(source / CALLS, out / CALLS)
    store = GenerationStore(out)
    store.open()
    store.close()
    total = sum(decisions.values())
    summary = {
        **asdict(config),
        "passages": total,
        "agreement": round(agree / total, 4) if total else None,
        "decisions": dict(decisions),
        "source": str(source),
    }
    meta = (
        json.loads((source / META).read_text(encoding=TEXT_ENCODING))
        if (source / META).is_file()
        else {}
    )
    write_json_atomic(out / META, {**meta, "judge": summary})
    return summary


def judgment_summary(root: Path) -> dict[str, Any] | None:
    """Agreement and decisions per intended level from a folder's ``judgments.jsonl``."""
    path = root / JUDGMENTS
    if not path.is_file():
        return None
    lines = [
        json.loads(x) for x in path.read_text(encoding=TEXT_ENCODING).splitlines() if x.strip()
    ]
    per_level: dict[str, dict[str, int]] = {}
    for line in lines:
        entry = per_level.setdefault(str(line["intended"]), {"passages": 0, "agree": 0})
        entry["passages"] += 1
        entry["agree"] += line["agrees"]
        entry[line["decision"]] = entry.get(line["decision"], 0) + 1
    return {
        "judge": lines[0]["judge"] if lines else None,
        "agreement": round(sum(x["agrees"] for x in lines) / len(lines), 4) if lines else None,
        "per_level": dict(sorted(per_level.items(), reverse=True)),
        "decisions": dict(Counter(x["decision"] for x in lines)),
    }
