"""trec_eval measures checked against a plain-Python implementation of their definitions."""

from __future__ import annotations

import math
import random

import pytest

from synthrank.evaluate import MEASURES, cut_run, mean_measures, per_query_measures
from synthrank.evaluate.metrics import trec_order


def _reference(judged: dict[str, int], ranking: dict[str, float], level: int) -> dict[str, float]:
    order = trec_order(ranking)
    gains = [judged.get(d, 0) for d in order]
    relevant = {d for d, r in judged.items() if r >= level}
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10]))
    ideal = sorted((r for r in judged.values() if r > 0), reverse=True)
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:10]))
    hits_10 = [d in relevant for d in order[:10]]
    rr = next((1 / (i + 1) for i, hit in enumerate(hits_10) if hit), 0.0)
    precisions = [
        sum(d in relevant for d in order[: i + 1]) / (i + 1)
        for i, d in enumerate(order[:100])
        if d in relevant
    ]
    return {
        "nDCG@10": dcg / idcg if idcg else 0.0,
        "RR@10": rr,
        "R@100": len(relevant & set(order[:100])) / len(relevant) if relevant else 0.0,
        "AP@100": sum(precisions) / len(relevant) if relevant else 0.0,
        "P@10": sum(hits_10) / 10,
    }


def _random_case(seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(300)]
    qrels, run = {}, {}
    for q in range(25):
        judged = rng.sample(docs, rng.randint(1, 30))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        pool = rng.sample(docs, 150)
        # half the scores tie in pairs, so trec_eval's tie-breaking is exercised too
        run[f"q{q}"] = {d: round(rng.random(), 2) for d in pool}
    return qrels, run


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measures_match_reference_definitions(seed: int, level: int) -> None:
    qrels, run = _random_case(seed)
    ours = per_query_measures(qrels, run, relevance_level=level)
    assert set(ours) == set(qrels)
    for query_id, values in ours.items():
        expected = _reference(qrels[query_id], run[query_id], level)
        for measure in MEASURES:
            assert values[measure] == pytest.approx(expected[measure], abs=1e-4), (
                query_id,
                measure,
            )


def test_hand_computed_case() -> None:
    qrels = {"q": {"a": 3, "b": 1, "c": 2}}
    run = {"q": {"x": 0.9, "b": 0.8, "a": 0.7, "y": 0.6}}
    values = per_query_measures(qrels, run)["q"]
    dcg = 1 / math.log2(3) + 3 / math.log2(4)
    idcg = 3 + 2 / math.log2(3) + 1 / math.log2(4)
    assert values["nDCG@10"] == pytest.approx(dcg / idcg, abs=1e-4)
    assert values["RR@10"] == pytest.approx(0.5)
    assert values["R@100"] == pytest.approx(2 / 3)
    assert values["AP@100"] == pytest.approx((1 / 2 + 2 / 3) / 3, abs=1e-4)
    assert values["P@10"] == pytest.approx(0.2)
    strict = per_query_measures(qrels, run, relevance_level=2)["q"]
    assert strict["RR@10"] == pytest.approx(1 / 3), "b (grade 1) no longer counts"
    assert strict["nDCG@10"] == pytest.approx(values["nDCG@10"]), "nDCG keeps graded gains"


def test_ties_follow_trec_eval_order() -> None:
    ranking = {"a": 1.0, "c": 1.0, "b": 2.0}
    assert trec_order(ranking) == ["b", "c", "a"]
    assert cut_run({"q": ranking}, 2) == {"q": {"b": 2.0, "c": 1.0}}


def test_mean_measures() -> None:
    per_query = {"a": {"P@10": 0.2}, "b": {"P@10": 0.4}}
    assert mean_measures(per_query, ["P@10"]) == {"P@10": pytest.approx(0.3)}
    assert mean_measures({}, ["P@10"]) == {"P@10": 0.0}
