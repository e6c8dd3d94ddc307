"""End-to-end evaluation with a tiny random encoder on real (subsampled) SciFact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthrank.data import BeirDataset, Document, Query, write_corpus, write_qrels, write_queries
from synthrank.errors import SynthrankError
from synthrank.evaluate import MEASURES, evaluate, load_metrics, per_query_measures


@pytest.fixture(scope="module")
def result(tiny_model_dir: Path, mini_scifact: BeirDataset, tmp_path_factory):
    cache = tmp_path_factory.mktemp("emb")
    return evaluate(str(tiny_model_dir), mini_scifact, "test", cache_dir=cache, progress=False)


def test_result_shape_and_run(result, mini_scifact: BeirDataset) -> None:
    qrels = mini_scifact.qrels("test")
    assert result.n_queries == 40
    assert set(result.per_query) == set(qrels)
    assert set(result.metrics) == set(MEASURES)
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    assert all(len(ranking) == 100 for ranking in result.run.values())
    corpus = mini_scifact.corpus()
    assert all(d in corpus for ranking in result.run.values() for d in ranking)
    assert result.settings["similarity"] == "cosine"
    assert result.settings["embeddings_encoded"] == 200 + 40


def test_metrics_agree_with_beir_evaluation(result, mini_scifact: BeirDataset) -> None:
    from beir.retrieval.evaluation import EvaluateRetrieval

    qrels = mini_scifact.qrels("test")
    ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(qrels, result.run, [10, 100])
    assert result.metrics["nDCG@10"] == pytest.approx(ndcg["NDCG@10"], abs=1e-5)
    assert result.metrics["R@100"] == pytest.approx(recall["Recall@100"], abs=1e-5)
    assert result.metrics["AP@100"] == pytest.approx(_map["MAP@100"], abs=1e-5)
    assert result.metrics["P@10"] == pytest.approx(precision["P@10"], abs=1e-5)


def test_saved_files(result, tmp_path: Path, mini_scifact: BeirDataset) -> None:
    out = result.save(tmp_path / "out")
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_queries"] == 40
    assert saved["metrics"] == result.metrics
    assert set(saved) >= {"model", "dataset", "split", "per_query", "timings"}
    lines = (out / "run.trec").read_text().splitlines()
    assert len(lines) == 40 * 100
    run: dict[str, dict[str, float]] = {}
    for line in lines:
        qid, q0, doc, rank, score, tag = line.split()
        assert q0 == "Q0" and int(rank) >= 1 and tag
        run.setdefault(qid, {})[doc] = float(score)
    from_file = per_query_measures(mini_scifact.qrels("test"), run)
    for qid, values in from_file.items():
        assert values["nDCG@10"] == pytest.approx(result.per_query[qid]["nDCG@10"], abs=1e-4)
    assert load_metrics(out)["metrics"] == result.metrics


def test_second_evaluation_reads_the_cache(
    tiny_model_dir: Path, mini_scifact: BeirDataset, tmp_path: Path
) -> None:
    first = evaluate(str(tiny_model_dir), mini_scifact, cache_dir=tmp_path, progress=False)
    second = evaluate(str(tiny_model_dir), mini_scifact, cache_dir=tmp_path, progress=False)
    assert first.settings["embeddings_encoded"] == 240
    assert (second.settings["embeddings_encoded"], second.settings["embeddings_from_cache"]) == (
        0,
        240,
    )
    assert second.metrics == first.metrics


def _self_retrieval_dataset(root: Path, name: str) -> BeirDataset:
    """Queries that are also corpus documents, as in ArguAna and Quora."""
    write_corpus(
        root / "corpus.jsonl",
        [
            Document("a", "cats purr when content"),
            Document("b", "why do cats purr"),
            Document("c", "dogs bark at strangers"),
        ],
    )
    write_queries(root / "queries.jsonl", [Query("a", "cats purr when content")])
    write_qrels(root / "qrels" / "test.tsv", {"a": {"b": 1}})
    return BeirDataset(root, name)


def test_identical_ids_are_dropped_for_arguana_like_data(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    quora = _self_retrieval_dataset(tmp_path / "quora", "beir:quora")
    dropped = evaluate(str(tiny_model_dir), quora, cache_dir=None, progress=False)
    assert "a" not in dropped.run["a"]
    assert dropped.settings["ignore_identical_ids"] is True
    kept = evaluate(
        str(tiny_model_dir), quora, cache_dir=None, progress=False, ignore_identical_ids=False
    )
    assert next(iter(kept.run["a"])) == "a", "the query's own text scores highest"
    rank_without_self = 1 / dropped.metrics["RR@10"]
    assert kept.metrics["RR@10"] == pytest.approx(1 / (rank_without_self + 1))


def test_trec_dl_profile_uses_relevance_level_two(tiny_model_dir: Path, tmp_path: Path) -> None:
    dl = _self_retrieval_dataset(tmp_path / "trec-dl-2019", str(tmp_path / "trec-dl-2019"))
    result = evaluate(str(tiny_model_dir), dl, cache_dir=None, progress=False)
    assert result.settings["relevance_level"] == 2
    assert result.metrics["R@100"] == 0.0, "grade 1 is not relevant at level 2"


def test_bad_model_is_a_clear_error(mini_scifact: BeirDataset, tmp_path: Path) -> None:
    with pytest.raises(SynthrankError, match=r"folder .* not found"):
        evaluate(str(tmp_path / "no-model"), mini_scifact, progress=False)
