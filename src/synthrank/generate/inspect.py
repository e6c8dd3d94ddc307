"""What a person needs to know about a graded dataset before training on it.

Works on any BEIR folder with graded qrels (synthetic or real); for a generation folder it also
reads the call log (rejection reasons) and ``meta.json`` (strategies). The level-separation check
embeds every query and passage with a reference encoder and reports the mean query-passage
cosine per level, which must fall from the top level to the bottom one for the levels to carry
more than "on topic or not", and the share of queries whose levels are fully ordered.

Data worth training on is *correct* (an independent judge agrees with its grades: the judge
stage's agreement per level) and *hard* (the student still orders some of its pairs wrong:
:func:`misorder_rates` under the student encoder). Wide separation under the student is the
opposite of hard: a level order the student already reproduces holds nothing for it to learn.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from synthrank.data import BeirDataset
from synthrank.errors import SynthrankError
from synthrank.evaluate.models import TORCH, Runtime
from synthrank.fileio import TEXT_ENCODING
from synthrank.generate.judge import judgment_summary
from synthrank.generate.validate import jaccard, shingles, words
from synthrank.llm.store import META, SPLIT

NEAR_DUPLICATE = 0.6


def length_stats(lengths: list[int]) -> dict[str, float]:
    ordered = sorted(lengths)
    return {
        "n": len(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


def fully_ordered(mean_by_grade: dict[int, float]) -> bool:
    """Whether scores strictly decrease as the grade decreases."""
    grades = sorted(mean_by_grade, reverse=True)
    return all(mean_by_grade[a] > mean_by_grade[b] for a, b in itertools.pairwise(grades))


def level_separation(
    cosines: dict[str, dict[int, list[float]]],
) -> dict[str, Any]:
    """Mean cosine per level over all pairs, gaps between adjacent levels, and the share of
    queries (among those with every level) whose per-level mean cosines are fully ordered."""
    all_grades = sorted({g for per_grade in cosines.values() for g in per_grade}, reverse=True)
    pooled: dict[int, list[float]] = defaultdict(list)
    for per_grade in cosines.values():
        for grade, values in per_grade.items():
            pooled[grade].extend(values)
    mean = {g: float(np.mean(pooled[g])) for g in all_grades}
    complete = [q for q, per_grade in cosines.items() if set(per_grade) == set(all_grades)]
    ordered = sum(
        fully_ordered({g: float(np.mean(v)) for g, v in cosines[q].items()}) for q in complete
    )
    return {
        "mean_cosine": {str(g): round(mean[g], 4) for g in all_grades},
        "gaps": {
            f"{a}-{b}": round(mean[a] - mean[b], 4) for a, b in itertools.pairwise(all_grades)
        },
        "queries_with_all_levels": len(complete),
        "fully_ordered": ordered,
        "fully_ordered_share": round(ordered / len(complete), 4) if complete else None,
    }


def misorder_rates(scores: dict[str, dict[int, list[float]]]) -> dict[str, Any]:
    """Student difficulty: per pair of grades ``a > b``, how many of one query's ordered passage
    pairs (one at grade a, one at grade b) the student scores in the wrong order: score(b) >
    score(a) counts 1, a tie 1/2 (the expected error of a random tie break). ``scores`` is query
    id -> grade -> the student's scores of that query's passages at that grade. Returns
    ``{"3>2": {"pairs": n, "misordered": m, "rate": m / n}, ...}`` for every grade pair with
    pairs, plus ``"adjacent"`` (pairs of neighbouring grades present in the data) and ``"all"``.
    """
    per_pair: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0, 0.0])
    for per_grade in scores.values():
        for a, b in itertools.permutations(sorted(per_grade), 2):
            if a <= b:
                continue
            counts = per_pair[(a, b)]
            for high in per_grade[a]:
                for low in per_grade[b]:
                    counts[0] += 1
                    counts[1] += 1.0 if low > high else 0.5 if low == high else 0.0
    grades = sorted({g for per_grade in scores.values() for g in per_grade}, reverse=True)
    adjacent = set(itertools.pairwise(grades))

    def entry(pairs: int, misordered: float) -> dict[str, Any]:
        return {
            "pairs": pairs,
            "misordered": misordered,
            "rate": round(misordered / pairs, 4) if pairs else None,
        }

    result = {
        f"{a}>{b}": entry(*per_pair[(a, b)])
        for a, b in sorted(per_pair, key=lambda ab: (-ab[0], -ab[1]))
    }
    for name, keys in (("adjacent", adjacent), ("all", set(per_pair))):
        chosen = [per_pair[k] for k in keys if k in per_pair]
        result[name] = entry(sum(c[0] for c in chosen), sum(c[1] for c in chosen))
    return result


def judge_agreement(
    scores: dict[str, dict[int, list[float]]], margin: float = 0.0
) -> dict[str, Any]:
    """Label correctness under an encoder judge: per intended grade, the share of passages in
    the largest set of a query's passages whose judge scores fall as their grades fall
    (:func:`synthrank.generate.judge.agreeing_chain`, the encoder judge's own rule)."""
    from synthrank.generate.judge import agreeing_chain

    per_grade: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for by_grade in scores.values():
        grades = [g for g, values in by_grade.items() for _ in values]
        values = [v for vs in by_grade.values() for v in vs]
        agreeing = agreeing_chain(grades, values, margin)
        for i, grade in enumerate(grades):
            per_grade[grade][0] += 1
            per_grade[grade][1] += i in agreeing
    total = sum(c[0] for c in per_grade.values())
    return {
        "agreement": round(sum(c[1] for c in per_grade.values()) / total, 4) if total else None,
        "per_level": {
            str(g): {"passages": n, "agree": k, "rate": round(k / n, 4)}
            for g, (n, k) in sorted(per_grade.items(), reverse=True)
        },
    }


def _cosines(
    dataset: BeirDataset,
    qrels: dict[str, dict[str, int]],
    texts: dict[str, str],
    encoder: str,
    progress: bool,
    runtime: Runtime,
) -> dict[str, dict[int, list[float]]]:
    from synthrank.data.resolve import cache_root
    from synthrank.evaluate.encode import EmbeddingCache, grouped_scores
    from synthrank.evaluate.models import load_model

    queries = dataset.queries()
    query_ids = [q for q in qrels if q in queries]
    judged = [[(d, g) for d, g in qrels[q].items() if d in texts] for q in query_ids]
    scores = grouped_scores(
        load_model(encoder, runtime=runtime),
        [queries[q].text for q in query_ids],
        [[texts[d] for d, _ in pairs] for pairs in judged],
        cache=EmbeddingCache(cache_root() / "embeddings"),
        progress=progress,
    )
    result: dict[str, dict[int, list[float]]] = {}
    for query_id, pairs, values in zip(query_ids, judged, scores, strict=True):
        per_grade: dict[int, list[float]] = defaultdict(list)
        for (_, grade), value in zip(pairs, values, strict=True):
            per_grade[grade].append(value)
        result[query_id] = dict(per_grade)
    return result


def _rejections(root: Path) -> dict[str, Any] | None:
    from synthrank.llm.store import CALLS, iter_calls

    if not (root / CALLS).is_file():
        return None
    reasons: Counter = Counter()
    calls = tokens = 0
    seconds = 0.0
    queries: set[str] = set()
    for call in iter_calls(root):
        calls += 1
        queries.add(call.get("query_id"))
        tokens += call.get("completion_tokens") or 0
        seconds += call.get("latency_s") or 0.0
        if not call.get("accepted"):
            reason = call.get("reason") or "unknown"
            reasons["backend error" if reason.startswith("backend error") else reason] += 1
    rejected = sum(reasons.values())
    return {
        "calls": calls,
        "rejected": rejected,
        "rate": round(rejected / calls, 4) if calls else 0.0,
        "reasons": dict(reasons.most_common()),
        "completion_tokens": tokens,
        "llm_seconds": round(seconds, 1),
        "queries": sorted(queries - {None}),
    }


def write_lists(source: str, out: Path) -> None:
    """Write the lists a training source spec gives (``beir:scifact,split=train,relabel=1:3,
    bm25=2:1``, as ``synthrank train --data`` reads it: every judged passage and every negative
    of each query, before groups are picked) to ``out`` as a graded BEIR folder."""
    import random

    from synthrank.data import Document, Query, write_corpus, write_qrels, write_queries
    from synthrank.train.data import SourceSpec, read_lists

    pool = read_lists([SourceSpec.parse(source)], random.Random(0))
    ids = {key: [f"{key[0]}-{i}" for i in range(len(entries))] for key, entries in pool.items()}
    write_corpus(
        out / "corpus.jsonl",
        (
            Document(i, text)
            for key, entries in pool.items()
            for i, (text, _) in zip(ids[key], entries, strict=True)
        ),
    )
    write_queries(out / "queries.jsonl", (Query(q, text) for q, text in pool))
    write_qrels(
        out / "qrels" / f"{SPLIT}.tsv",
        {
            key[0]: dict(zip(ids[key], (label for _, label in entries), strict=True))
            for key, entries in pool.items()
        },
    )


def inspect_dataset(
    path: str | Path,
    *,
    split: str = SPLIT,
    encoder: str | None = "minilm",
    judge: str | None = None,
    progress: bool = True,
    runtime: Runtime = TORCH,
) -> dict[str, Any]:
    """The inspection report of a graded BEIR folder as a JSON-ready dict; ``encoder=None``
    skips the separation and difficulty checks; ``judge``, an encoder other than the student
    (e.g. ``mpnet``), adds its agreement with the grades per level (:func:`judge_agreement`);
    both encoders run as ``runtime`` says (:class:`~synthrank.evaluate.models.Runtime`).
    ``path`` may also be a training source spec
    (:func:`write_lists`): the lists a model would be trained on, e.g. real SciFact positives
    against BM25 negatives."""
    root = Path(path)
    if not root.is_dir() and "," in str(path):
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            write_lists(str(path), Path(folder))
            report = inspect_dataset(
                folder, encoder=encoder, judge=judge, progress=progress, runtime=runtime
            )
        return {**report, "dataset": str(path)}
    dataset = BeirDataset(root, str(root))
    qrels = dataset.qrels(split)
    corpus = {d.id: d.full_text() for d in dataset.corpus().values()}
    if not qrels:
        raise SynthrankError(f"{root}: qrels/{split}.tsv has no judgments")
    by_grade: dict[int, list[str]] = defaultdict(list)
    for judged in qrels.values():
        for doc_id, grade in judged.items():
            if doc_id in corpus:
                by_grade[grade].append(doc_id)
    grades = sorted(by_grade, reverse=True)
    normalised = Counter(" ".join(words(text)) for text in corpus.values())
    exact_duplicates = sum(n - 1 for n in normalised.values() if n > 1)
    near_pairs = 0
    for judged in qrels.values():
        signatures = [shingles(words(corpus[d])) for d in judged if d in corpus]
        near_pairs += sum(
            jaccard(a, b) >= NEAR_DUPLICATE
            for i, a in enumerate(signatures)
            for b in signatures[i + 1 :]
        )
    report: dict[str, Any] = {
        "dataset": str(root),
        "split": split,
        "queries": len(qrels),
        "passages": len(corpus),
        "passages_per_level": {str(g): len(by_grade[g]) for g in grades},
        "words_per_level": {
            str(g): length_stats([len(words(corpus[d])) for d in by_grade[g]]) for g in grades
        },
        "duplicates": {
            "exact": exact_duplicates,
            "exact_rate": round(exact_duplicates / max(len(corpus), 1), 4),
            "near_duplicate_pairs_within_query": near_pairs,
        },
        "rejections": _rejections(root),
    }
    calls = report["rejections"]
    # Over the passages of the queries whose calls are in this folder's log: lists imported or
    # reused from an export (synthrank import, --reuse) were paid for elsewhere.
    called = set(calls.pop("queries")) if calls else set()
    paid = sum(d in corpus for q in called & set(qrels) for d in qrels[q])
    if paid:
        report["cost_per_kept_passage"] = {
            "completion_tokens": round(calls["completion_tokens"] / paid, 1),
            "llm_seconds": round(calls["llm_seconds"] / paid, 2),
            "passages": paid,
        }
    report["judge"] = judgment_summary(root)
    meta_path = root / META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding=TEXT_ENCODING))
        report["generation"] = {
            "status": meta.get("status"),
            "model": meta.get("backend", {}).get("model"),
            "strategies": meta.get("strategies"),
            "failed_passages": meta.get("counts", {}).get("failed_passages"),
        }
    if encoder is not None:
        cosines = _cosines(dataset, qrels, corpus, encoder, progress, runtime)
        report["separation"] = {"encoder": encoder, **level_separation(cosines)}
        report["difficulty"] = {"student": encoder, **misorder_rates(cosines)}
    if judge is not None:
        judged = _cosines(dataset, qrels, corpus, judge, progress, runtime)
        report["encoder_judge"] = {"judge": judge, **judge_agreement(judged)}
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a few plain-text tables."""
    lines = [
        f"{report['dataset']} ({report['split']}): {report['queries']} queries, "
        f"{report['passages']} passages"
    ]
    generation = report.get("generation")
    if generation:
        strategies = ", ".join(f"{g}: {s}" for g, s in (generation["strategies"] or {}).items())
        lines.append(
            f"generated by {generation['model']} ({generation['status']}); strategies {strategies}"
        )
    separation = report.get("separation")
    lines.append("")
    header = f"{'level':>5} {'passages':>9} {'words mean':>11} {'median':>7} {'min':>5} {'max':>5}"
    if separation:
        header += f" {'cosine':>8}"
    lines.append(header)
    for grade, count in report["passages_per_level"].items():
        stats = report["words_per_level"][grade]
        row = (
            f"{grade:>5} {count:>9} {stats['mean']:>11} {stats['median']:>7} "
            f"{stats['min']:>5} {stats['max']:>5}"
        )
        if separation:
            row += f" {separation['mean_cosine'].get(grade, float('nan')):>8.3f}"
        lines.append(row)
    if separation:
        gaps = ", ".join(f"{k}: {v:+.3f}" for k, v in separation["gaps"].items())
        share = separation["fully_ordered_share"]
        lines += [
            "",
            f"level separation ({separation['encoder']}): gaps {gaps}",
            f"fully ordered: {separation['fully_ordered']} of "
            f"{separation['queries_with_all_levels']} queries with every level"
            + ("" if share is None else f" ({share:.0%})"),
        ]
    difficulty = report.get("difficulty")
    if difficulty:
        pairs = [k for k in difficulty if ">" in k]
        rates = ", ".join(
            f"{k} {difficulty[k]['rate']:.1%} of {difficulty[k]['pairs']}" for k in pairs
        )
        adjacent = difficulty["adjacent"]
        lines.append(
            f"student difficulty ({difficulty['student']}, pairs scored in the wrong order): "
            f"adjacent levels {adjacent['rate']:.1%} of {adjacent['pairs']}; {rates}"
        )
    encoder_judge = report.get("encoder_judge")
    if encoder_judge:
        rates = ", ".join(
            f"{g}: {v['rate']:.0%} of {v['passages']}"
            for g, v in encoder_judge["per_level"].items()
        )
        lines.append(
            f"label correctness ({encoder_judge['judge']} as judge): agreement "
            f"{encoder_judge['agreement']:.0%}; per level {rates}"
        )
    duplicates = report["duplicates"]
    lines += [
        "",
        f"duplicates: {duplicates['exact']} exact ({duplicates['exact_rate']:.1%}), "
        f"{duplicates['near_duplicate_pairs_within_query']} near-duplicate pairs within a query",
    ]
    judge = report.get("judge")
    if judge:
        agreement = ", ".join(
            f"{g}: {v['agree']}/{v['passages']}" for g, v in judge["per_level"].items()
        )
        decisions = ", ".join(f"{k} {v}" for k, v in judge["decisions"].items())
        lines.append(
            f"{judge['judge']} judge: agreement {judge['agreement']:.0%} (per level {agreement}); "
            f"decisions: {decisions}"
        )
    rejections = report.get("rejections")
    if rejections:
        reasons = ", ".join(f"{k} {v}" for k, v in rejections["reasons"].items()) or "none"
        lines.append(
            f"LLM calls: {rejections['calls']}, rejected {rejections['rejected']} "
            f"({rejections['rate']:.0%}): {reasons}"
        )
        cost = report["cost_per_kept_passage"]
        lines.append(
            f"cost per kept passage: {cost['completion_tokens']} completion tokens, "
            f"{cost['llm_seconds']} s of LLM time (planning calls and rejections included; "
            f"over the {cost['passages']} passages generated in this folder)"
        )
    return "\n".join(lines)
