"""Real lists graded by an LLM: each query's BM25 top-N passages from a real corpus, graded 0-3
by an LLM judge, a graded ranking context of real text for ws2, w1 and kl.

This sits between SyCL's synthetic passages (arXiv 2503.23239: no corpus needed) and queries for
documents (:mod:`synthrank.generate.doc2query`): the passages are real, the grades come from the
judge. The judge is :data:`synthrank.generate.judge.LLM_JUDGE_PROMPT` answered with one digit
(greedy, 4 tokens; :func:`~synthrank.generate.judge.parse_grade`), the scale of UMBRELA
(Upadhyay et al. 2024, arXiv 2406.06519) and of the graded levels generated here.

>>> grade_real_lists(GradeJob("beir:scifact", Path("runs/graded"), top_n=8), backend)

Output, a BEIR folder that ``synthrank train --data OUT`` reads: ``grades.jsonl`` is the
journal (every decision: query, passage, BM25 rank, the judge's reply and grade, the dataset's own
label when it has one; one fsynced block per group of finished queries, so an interrupted job
resumes at the first query without one), ``qrels/train.tsv`` and ``queries.jsonl`` are its view
(replies without a grade are left out and counted), ``corpus.jsonl`` links to the source corpus and
``meta.json`` holds the settings, the grade counts, what reading the dataset's files found
(``warnings``: ids read without surrounding whitespace, judged ids missing from the corpus;
also issued as :class:`~synthrank.fileio.SynthrankWarning` when read) and, where the dataset
has labels for the split, the judge's agreement with them: the share of labelled positives it
grades 2 or 3 and of the other retrieved passages it grades 0 or 1 (on sparsely judged sets
such as SciFact, some of those others are relevant; the second share is a lower bound).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synthrank import __version__
from synthrank.data import Query, resolve_dataset, write_qrels, write_queries
from synthrank.errors import SettingError, SynthrankError
from synthrank.evaluate.runner import profile_for
from synthrank.fileio import TEXT_ENCODING, FolderLock, warn, write_json_atomic
from synthrank.generate.judge import LLM_JUDGE_PROMPT, judge_request, parse_grade
from synthrank.llm.backends import Backend, ChatRequest, Completion
from synthrank.llm.scheduler import Scheduler, open_stream

GRADES = "grades.jsonl"
META = "meta.json"
SPLIT = "train"
ALL = "all"
KIND = "llm-graded-real-lists"


@dataclass(frozen=True)
class GradeJob:
    dataset: str
    """BEIR folder or ``beir:NAME``: the queries of ``split`` and the corpus they search."""
    out: Path
    """The output folder: a BEIR folder of the graded lists and its journal."""
    split: str = "train"
    """The queries judged in ``qrels/SPLIT.tsv`` (their labels are compared with the grades), or
    ``all``: every query of ``queries.jsonl``, for a dataset without labels."""
    top_n: int = 8
    """Passages per query: BM25's top ``top_n`` (bm25s, English stop words, title and text)."""
    limit: int | None = None
    """The first ``limit`` queries of the split in id order (None: all)."""
    passage_words: int = 200
    """Each passage is shown to the judge cut to this many words."""
    window: int = 4
    """With an engine that answers a list of requests at a time (in-process): the queries whose
    passages go in one list. An HTTP backend keeps its ``concurrency`` calls in flight
    instead."""

    def validate(self) -> None:
        for name in ("top_n", "passage_words", "window", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                flag = "--" + name.replace("_", "-")
                raise SettingError(name, f"({flag}) must be >= 1 (got {value})")

    def identity(self, model: str, dataset_root: Path) -> dict[str, Any]:
        """What a resumed job must share with the one that wrote ``out`` (``limit`` may
        grow or shrink: the view holds every query graded so far)."""
        return {
            "dataset": str(dataset_root.resolve()),
            "split": self.split,
            "top_n": self.top_n,
            "passage_words": self.passage_words,
            "model": model,
            "prompt": LLM_JUDGE_PROMPT,
        }


def read_grades(out: Path) -> list[dict[str, Any]]:
    """The decisions in ``out/grades.jsonl``; a torn last line (a crash mid-write) is ignored
    and rewritten by the next run."""
    path = out / GRADES
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text(encoding=TEXT_ENCODING).splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return lines


def agreement_with_labels(judgments: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How the judge's grades meet the dataset's own labels (None when it has none): the share
    of labelled positives graded 2 or 3, and of other retrieved passages graded 0 or 1."""
    graded = [j for j in judgments if j["grade"] is not None]
    if not any(j["label"] is not None for j in graded):
        return None
    positives = [j for j in graded if (j["label"] or 0) > 0]
    others = [j for j in graded if not (j["label"] or 0) > 0]

    def share(rows: list[dict[str, Any]], ok) -> dict[str, Any]:
        hits = sum(ok(j["grade"]) for j in rows)
        return {"n": len(rows), "agree": hits, "rate": round(hits / len(rows), 4) if rows else None}

    return {
        "positives_graded_2_or_3": share(positives, lambda g: g >= 2),
        "others_graded_0_or_1": share(others, lambda g: g <= 1),
    }


def _cut(text: str, words: int) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def _bm25_top(
    corpus_ids: list[str], texts: list[str], queries: list[tuple[str, str]], n: int, drop_self: bool
) -> list[list[tuple[str, float]]]:
    from synthrank.data.bm25 import bm25_search

    hits, scores = bm25_search(texts, [text for _, text in queries], n + int(drop_self))
    result = []
    for (query_id, _), row, values in zip(queries, hits, scores, strict=True):
        ranked = [
            (corpus_ids[i], float(s))
            for i, s in zip(row, values, strict=True)
            if s > 0 and not (drop_self and corpus_ids[i] == query_id)
        ]
        result.append(ranked[:n])
    return result


def _append(out: Path, lines: list[dict[str, Any]]) -> None:
    with (out / GRADES).open("a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
        handle.flush()
        os.fsync(handle.fileno())


def _write_view(out: Path, judgments: list[dict[str, Any]], queries: dict[str, str]) -> None:
    qrels: dict[str, dict[str, int]] = {}
    for j in judgments:
        if j["grade"] is not None:
            qrels.setdefault(j["query_id"], {})[j["doc_id"]] = j["grade"]
    write_queries(out / "queries.jsonl", (Query(q, queries[q]) for q in qrels))
    write_qrels(out / "qrels" / f"{SPLIT}.tsv", qrels)


@dataclass(frozen=True)
class _GradeCall:
    request: ChatRequest
    rank: int
    doc_id: str
    score: float

    @property
    def key(self) -> int:
        return self.rank


class _ListGrades:
    """One query's list as an item of the scheduler: one judge call per passage, its decision
    lines once all are answered. A call the engine could not answer stops the job (finished
    queries are kept)."""

    def __init__(
        self,
        query_id: str,
        query: str,
        hits: list[tuple[str, float]],
        corpus: dict[str, Any],
        labels: dict[str, int],
        job: GradeJob,
    ) -> None:
        self.query_id = query_id
        self.labels = labels
        self.out = job.out
        self.asked = False
        self.in_flight: set[int] = set()
        self.calls: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []
        self.requests = [
            _GradeCall(
                judge_request(query, _cut(corpus[d].full_text(), job.passage_words)), rank, d, score
            )
            for rank, (d, score) in enumerate(hits, start=1)
        ]

    def next_calls(self) -> list[_GradeCall]:
        if self.asked:
            return []
        self.asked = True
        return self.requests

    def absorb(self, call: _GradeCall, completion: Completion, model: str) -> None:
        if completion.error is not None and not completion.refused:
            raise SynthrankError(
                f"query {self.query_id}: the judge's call failed ({completion.error}); finished "
                f"queries are kept in {self.out}: run the same command to continue"
            )
        line = {
            "query_id": self.query_id,
            "doc_id": call.doc_id,
            "bm25_rank": call.rank,
            "bm25_score": round(call.score, 4),
            "reply": completion.text,
            "grade": parse_grade(completion.text),
            "label": self.labels.get(call.doc_id),
        }
        if completion.refused:  # settled ungraded, with the engine's reason
            line["refused"] = completion.error
        self.lines.append(line)


def grade_real_lists(job: GradeJob, backend: Backend, *, progress: bool = True) -> dict[str, Any]:
    """Grade the BM25 top ``job.top_n`` passages of each query with the LLM judge behind
    ``backend``; write or continue ``job.out`` (see the module docstring). Returns
    ``meta.json``'s content. :class:`SynthrankError` when ``out`` holds another job's work or
    another process is writing it (:class:`~synthrank.fileio.FolderLock`)."""
    job.validate()
    with FolderLock(job.out):
        return _grade_real_lists(job, backend, progress)


def _grade_real_lists(job: GradeJob, backend: Backend, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from synthrank.generate.doc2query import link_corpus

    started = time.perf_counter()
    dataset = resolve_dataset(job.dataset)
    identity = job.identity(str(backend.describe().get("model", "")), dataset.root)
    meta_path = job.out / META
    if meta_path.is_file():
        previous = json.loads(meta_path.read_text(encoding=TEXT_ENCODING)).get("job", {})
        changed = sorted(k for k in identity if previous.get(k) != identity[k])
        if changed:
            raise SynthrankError(
                f"{job.out} holds grades made with other settings ({', '.join(changed)}); "
                "choose a new output folder"
            )
    elif (job.out / GRADES).is_file():
        raise SynthrankError(f"{job.out}: {GRADES} without {META}; choose a new output folder")
    job.out.mkdir(parents=True, exist_ok=True)
    if not meta_path.is_file():  # the settings first, so a resumed job is checked against them
        write_json_atomic(meta_path, {"kind": KIND, "status": "running", "job": identity})
    warnings: list[str] = []
    if job.split == ALL:
        queries = dataset.queries(warnings=warnings)
        corpus, labels = dataset.corpus(warnings=warnings), {}
    else:
        split = dataset.load_split(job.split)
        queries, corpus, labels = split.queries, split.corpus, split.qrels
        warnings = split.warnings
    for warning in warnings:
        warn(warning, None)
    query_ids = sorted(queries)[: job.limit]
    if not query_ids:
        raise SynthrankError(f"{job.dataset}: split {job.split} has no queries with text")
    corpus_ids = list(corpus)
    if not corpus_ids:
        raise SynthrankError(f"{job.dataset}: the corpus is empty")
    ranked = _bm25_top(
        corpus_ids,
        [corpus[d].full_text() for d in corpus_ids],
        [(q, queries[q].text) for q in query_ids],
        job.top_n,
        profile_for(dataset).ignore_identical_ids,
    )
    judgments = read_grades(job.out)
    done = {j["query_id"] for j in judgments}
    # Rewrite the journal without a torn last line before appending to it.
    (job.out / GRADES).write_text(
        "".join(json.dumps(j) + "\n" for j in judgments), encoding="utf-8"
    )
    todo = [(q, hits) for q, hits in zip(query_ids, ranked, strict=True) if q not in done]
    scheduler = Scheduler(open_stream(backend, job.window * job.top_n), "")
    watch = scheduler.watch
    held: list[dict[str, Any]] = []
    works = (
        _ListGrades(q, queries[q].text, hits, corpus, labels.get(q, {}), job) for q, hits in todo
    )
    with tqdm(
        total=len(query_ids), initial=len(done), desc="grade", unit="query", disable=not progress
    ) as bar:
        for group in scheduler.run(works):
            held += [line for work in group for line in work.lines]
            bar.update(len(group))
            if watch.hopeless():
                raise watch.error()
            if watch.waiting:
                continue  # nothing kept while every call so far was refused
            _append(job.out, held)
            judgments += held
            held = []
        if held:
            raise watch.error()
    link_corpus(dataset.corpus_path, job.out)
    graded_ids = {j["query_id"] for j in judgments}
    _write_view(job.out, judgments, {q: queries[q].text for q in graded_ids})
    grades = Counter(j["grade"] for j in judgments)
    per_list: dict[str, set[int]] = {}
    for j in judgments:
        if j["grade"] is not None:
            per_list.setdefault(j["query_id"], set()).add(j["grade"])
    meta = {
        "synthrank_version": __version__,
        "kind": KIND,
        "status": "complete"
        if len({j["query_id"] for j in judgments}) >= len(query_ids)
        else "partial",
        "job": identity,
        "settings": {k: v for k, v in asdict(job).items() if k != "out"} | {"out": str(job.out)},
        "backend": backend.describe(),
        "counts": {
            "queries": len({j["query_id"] for j in judgments}),
            "passages": len(judgments),
            "per_grade": {str(g): grades[g] for g in (3, 2, 1, 0) if grades[g]},
            "no_grade": grades[None],
            "lists_with_two_grades": sum(len(g) > 1 for g in per_list.values()),
        },
        "warnings": warnings,
        "agreement_with_labels": agreement_with_labels(judgments),
        "example_reply": judgments[0]["reply"] if judgments else None,
        "seconds_this_run": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(meta_path, meta)
    return meta


def judge_failure(meta: dict[str, Any]) -> str | None:
    """What to tell the user when a grading run (``meta``, as returned by
    :func:`grade_real_lists`) made nothing to train on: no reply held a grade (the judge model
    does not follow the prompt), or no query's list holds two different grades (the judge cannot
    tell the passages apart, e.g. a small model that answers 0 to everything), so no list has an
    order for a loss to learn. None when some list can teach."""
    counts = meta["counts"]
    model = meta["backend"].get("model")
    if not counts["passages"]:
        return None
    if counts["no_grade"] == counts["passages"]:
        return (
            f"no reply held a grade 0-3 (e.g. {meta['example_reply']!r}); the judge model "
            f"({model}) does not follow the prompt: try another model"
        )
    if counts["lists_with_two_grades"] == 0:
        grades = ", ".join(f"{g}: {n}" for g, n in counts["per_grade"].items())
        return (
            f"the judge ({model}) gave every passage of each list the same grade (grades "
            f"{grades}): no list holds an order to learn; try a stronger judge (a served model: "
            "--backend openai --endpoint URL)"
        )
    return None
