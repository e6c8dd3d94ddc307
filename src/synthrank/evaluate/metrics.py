"""Retrieval measures, computed by trec_eval through pytrec_eval.

Measures (``rel`` is the graded judgment, ``L`` the relevance level for binary measures):

- ``nDCG@10``: sum_{i<=10} rel_i / log2(i+1), over the same sum for the ideal ranking; graded
  gains, as trec_eval's ``ndcg_cut.10`` (Järvelin & Kekäläinen 2002).
- ``RR@10``: 1 / rank of the first document with rel >= L in the top 10, else 0 (MS MARCO's
  MRR@10); trec_eval's ``recip_rank`` on the run cut to 10.
- ``R@100``: share of the documents with rel >= L retrieved in the top 100 (``recall.100``).
- ``AP@100``: average precision over the top 100 (``map_cut.100``, BEIR's MAP@100).
- ``P@10``: share of the top 10 with rel >= L (``P.10``).

Ranks follow trec_eval: score descending, ties broken by document id descending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from synthrank.data import Qrels

Run = dict[str, dict[str, float]]
"""query id -> {document id -> score}."""

MEASURES: tuple[str, ...] = ("nDCG@10", "RR@10", "R@100", "AP@100", "P@10")

_TREC_EVAL: dict[str, tuple[str, str]] = {
    "nDCG@10": ("ndcg_cut.10", "ndcg_cut_10"),
    "R@100": ("recall.100", "recall_100"),
    "AP@100": ("map_cut.100", "map_cut_100"),
    "P@10": ("P.10", "P_10"),
}
_RR_DEPTH = 10


def trec_order(ranking: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval's order: score descending, then id descending."""
    return sorted(ranking, key=lambda doc: (ranking[doc], doc), reverse=True)


def cut_run(run: Mapping[str, Mapping[str, float]], depth: int) -> Run:
    """Keep each query's top ``depth`` documents in trec_eval's order."""
    return {q: {d: ranking[d] for d in trec_order(ranking)[:depth]} for q, ranking in run.items()}


def per_query_measures(
    qrels: Qrels, run: Mapping[str, Mapping[str, float]], *, relevance_level: int = 1
) -> dict[str, dict[str, float]]:
    """Every measure of :data:`MEASURES` for each query present in both ``qrels`` and ``run``."""
    import pytrec_eval

    qrels = {q: {d: int(r) for d, r in judged.items()} for q, judged in qrels.items()}
    run = {q: {d: float(s) for d, s in ranking.items()} for q, ranking in run.items()}
    trec_measures = {name for name, _ in _TREC_EVAL.values()}
    main = pytrec_eval.RelevanceEvaluator(qrels, trec_measures, relevance_level=relevance_level)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}, relevance_level=relevance_level)
    by_query = main.evaluate(run)
    rr_by_query = rr.evaluate(cut_run(run, _RR_DEPTH))
    result: dict[str, dict[str, float]] = {}
    for query_id, values in by_query.items():
        measures = {name: float(values[key]) for name, (_, key) in _TREC_EVAL.items()}
        measures["RR@10"] = float(rr_by_query[query_id]["recip_rank"])
        result[query_id] = {name: measures[name] for name in MEASURES}
    return result


def mean_measures(
    per_query: Mapping[str, Mapping[str, float]], measures: Iterable[str] = MEASURES
) -> dict[str, float]:
    """Mean of each measure over queries (0.0 for every measure when there are none)."""
    return {
        m: float(np.mean([v[m] for v in per_query.values()])) if per_query else 0.0
        for m in measures
    }
