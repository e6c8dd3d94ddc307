"""End-to-end evaluation with a tiny random encoder on real (subsampled) SciFact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


_COFFEE_DOCS = [
    Document("d1", "Caffeine in coffee causes a short rise in blood pressure.", "Coffee"),
    Document("d2", "Vaccines train the immune system with a harmless piece of a pathogen."),
    Document("d3", "The Eiffel Tower is a wrought-iron lattice tower in Paris, built in 1889."),
    Document("d4", "Tomatoes grow well on sunny balconies in large pots with daily watering."),
    Document("d5", "Green tea contains less caffeine than coffee and may lower blood pressure."),
]
_COFFEE_QUERIES = [
    Query("q1", "does coffee raise blood pressure"),
    Query("q2", "how do vaccines work"),
]


def _coffee_dataset(root: Path, qrels_text: str) -> BeirDataset:
    """Five documents, two queries that minilm answers perfectly, and qrels written as given."""
    write_corpus(root / "corpus.jsonl", _COFFEE_DOCS)
    write_queries(root / "queries.jsonl", _COFFEE_QUERIES)
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(qrels_text, encoding="utf-8")
    return BeirDataset(root, "coffee")


def test_qrels_with_a_byte_order_mark_and_no_header_judge_every_query(tmp_path: Path) -> None:
    dataset = _coffee_dataset(tmp_path, "\ufeffq1\td1\t2\nq1\td5\t1\nq2\td2\t2\n")
    result = evaluate("minilm", dataset, cache_dir=None, progress=False)
    assert result.n_queries == 2
    assert result.metrics["nDCG@10"] == 1.0 and result.metrics["RR@10"] == 1.0


def _read_run_file(path: Path) -> tuple[dict[str, dict[str, float]], list[tuple[str, str, int]]]:
    """The scores of a TREC run file, and its (query, document, rank) column order."""
    run: dict[str, dict[str, float]] = {}
    order = []
    for line in path.read_text().splitlines():
        query_id, _, doc_id, rank, score, _ = line.split()
        run.setdefault(query_id, {})[doc_id] = float(score)
        order.append((query_id, doc_id, int(rank)))
    return run, order


def _trec_eval_ndcg10(
    qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> dict[str, float]:
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})
    return {q: values["ndcg_cut_10"] for q, values in evaluator.evaluate(run).items()}


def test_run_file_keeps_full_scores_in_trec_eval_order(tmp_path: Path) -> None:
    """Rounded to 6 decimals, dA and dB of q1 would tie and trec_eval would rank dB (the higher
    id) first; q2's exact tie is written in trec_eval's order, dB before dA."""
    from synthrank.evaluate.runner import format_trec_run

    run = {"q1": {"dA": 0.87215013, "dB": 0.87214987, "dC": 0.1}, "q2": {"dA": 0.5, "dB": 0.5}}
    qrels = {"q1": {"dA": 1}, "q2": {"dA": 1}}
    (tmp_path / "run.trec").write_text(format_trec_run(run, tag="t"))
    reread, order = _read_run_file(tmp_path / "run.trec")
    assert reread == run
    assert order == [
        ("q1", "dA", 1),
        ("q1", "dB", 2),
        ("q1", "dC", 3),
        ("q2", "dB", 1),
        ("q2", "dA", 2),
    ]
    assert _trec_eval_ndcg10(qrels, reread) == {"q1": 1.0, "q2": pytest.approx(1 / np.log2(3))}


@pytest.mark.parametrize("first", ["dA", "dB"])
def test_run_file_of_identical_documents_reproduces_the_metrics(first: str, tmp_path: Path) -> None:
    """minilm scores two copies of a text a last bit apart, the higher one by its place in the
    batch (which place differs between machines); with dA, the relevant copy, higher, trec_eval
    on 6-decimal scores found a tie and ranked dB first (0.6309 against metrics.json's 1.0)."""
    text = "Caffeine in coffee causes a short rise in blood pressure."
    root = tmp_path / "ties"
    second = "dB" if first == "dA" else "dA"
    corpus = [Document(first, text), Document(second, text), Document("dC", "Tomatoes grow well.")]
    write_corpus(root / "corpus.jsonl", corpus)
    write_queries(root / "queries.jsonl", [Query("q1", "does coffee raise blood pressure")])
    write_qrels(root / "qrels" / "test.tsv", {"q1": {"dA": 1}})
    out = evaluate("minilm", BeirDataset(root, "ties"), cache_dir=None, progress=False).save(
        tmp_path / "out"
    )
    reported = json.loads((out / "metrics.json").read_text())["metrics"]["nDCG@10"]
    from_file, _ = _read_run_file(out / "run.trec")
    assert _trec_eval_ndcg10({"q1": {"dA": 1}}, from_file) == {"q1": reported}


def test_max_length_beyond_the_models_positions_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from synthrank.cli import main

    dataset = _coffee_dataset(tmp_path / "data", "q1\td1\t2\nq2\td2\t2\n")
    argv = ["evaluate", "--model", "minilm", "--dataset", str(dataset.root), "--quiet"]
    assert main([*argv, "--max-length", "1024", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "synthrank: error: max length 1024 is beyond the 512 tokens model minilm takes "
        "(its position embeddings); give --max-length 512 or less"
    ]
    assert not (tmp_path / "out").exists()
    result = evaluate("minilm", dataset, max_length=512, cache_dir=None, progress=False)
    assert result.settings["max_length"] == 512


def test_position_limit_of_bert_and_roberta_style_models() -> None:
    """BERT numbers tokens from position 0; RoBERTa and MPNet from padding_idx + 1 = 2, so 514
    positions (roberta-base, all-mpnet-base-v2) take 512 tokens."""
    from types import SimpleNamespace

    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    from synthrank.evaluate.models import position_limit

    shape = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    bert = BertModel(BertConfig(max_position_embeddings=512, **shape))
    roberta = RobertaModel(RobertaConfig(max_position_embeddings=514, pad_token_id=1, **shape))
    assert position_limit([SimpleNamespace(auto_model=bert)]) == 512  # type: ignore[arg-type]
    assert position_limit([SimpleNamespace(auto_model=roberta)]) == 512  # type: ignore[arg-type]
    assert position_limit([SimpleNamespace()]) is None  # type: ignore[arg-type]


def test_a_corpus_sample_scores_as_the_experiments_sample_copy(
    tiny_model_dir: Path, mini_scifact: BeirDataset, tmp_path: Path, capsys
) -> None:
    from synthrank.cli import main
    from synthrank.experiment.runner import sample_corpus

    copy = tmp_path / "sample"
    counts = sample_corpus(str(mini_scifact.root), "test", copy, others=20, seed=3)
    on_copy = evaluate(str(tiny_model_dir), str(copy), "test", cache_dir=None, progress=False)
    sampled = evaluate(
        str(tiny_model_dir), mini_scifact, "test", cache_dir=None, progress=False,
        corpus_sample=20, seed=3,
    )  # fmt: skip
    whole = evaluate(str(tiny_model_dir), mini_scifact, "test", cache_dir=None, progress=False)
    assert sampled.settings["corpus_size"] == counts["documents"] < counts["of"]
    assert (sampled.settings["corpus_sample"], sampled.settings["seed"]) == (20, 3)
    assert "corpus_sample" not in whole.settings
    assert sampled.per_query == on_copy.per_query
    assert sampled.run == on_copy.run != whole.run
    command = ["evaluate", "--model", str(tiny_model_dir), "--dataset", str(mini_scifact.root)]
    assert main([*command, "--corpus-sample", "-1"]) == 2
    assert "--corpus-sample must be >= 0 (got -1)" in capsys.readouterr().err
