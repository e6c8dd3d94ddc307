"""Wall time of a full SciFact evaluation: synthrank (cold and warm cache) against BEIR's own.

Runs in one process on the same machine and model: BEIR's ``EvaluateRetrieval`` over
``DenseRetrievalExactSearch`` (its default batch size, 128, unless --beir-batch-size), then
``synthrank.evaluate.evaluate`` with an empty embedding cache, then again with the cache warm.
Checks the metrics agree and prints each wall time and the ratios (goals: cold <= 0.8x BEIR,
warm < 0.1x BEIR).

    python benchmarks/bench_evaluate.py [--dataset beir:scifact] [--model minilm]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def run_beir(model_path: str, data_root: str, split: str, batch_size: int) -> tuple[dict, float]:
    from beir.datasets.data_loader import GenericDataLoader
    from beir.retrieval import models
    from beir.retrieval.evaluation import EvaluateRetrieval
    from beir.retrieval.search.dense import DenseRetrievalExactSearch

    started = time.perf_counter()
    corpus, queries, qrels = GenericDataLoader(data_folder=data_root).load(split=split)
    retriever = EvaluateRetrieval(
        DenseRetrievalExactSearch(models.SentenceBERT(model_path), batch_size=batch_size),
        score_function="cos_sim",
        k_values=[10, 100],
    )
    results = retriever.retrieve(corpus, queries)
    ndcg, _map, recall, precision = retriever.evaluate(qrels, results, retriever.k_values)
    elapsed = time.perf_counter() - started
    metrics = {
        "nDCG@10": ndcg["NDCG@10"],
        "R@100": recall["Recall@100"],
        "AP@100": _map["MAP@100"],
        "P@10": precision["P@10"],
    }
    return metrics, elapsed


def run_ours(model: str, dataset: str, split: str, cache_dir: str) -> tuple[dict, float]:
    from synthrank.evaluate import evaluate

    started = time.perf_counter()
    result = evaluate(model, dataset, split, cache_dir=cache_dir, progress=False)
    return result.metrics, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beir:scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--beir-batch-size", type=int, default=128)
    args = parser.parse_args()

    from synthrank.data import resolve_dataset
    from synthrank.evaluate.models import resolve_model_path

    data_root = str(resolve_dataset(args.dataset).root)
    model_path = resolve_model_path(args.model)
    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")

    beir_metrics, beir_time = run_beir(model_path, data_root, args.split, args.beir_batch_size)
    print(f"BEIR (batch {args.beir_batch_size}): {beir_time:8.1f}s  {beir_metrics}")
    with tempfile.TemporaryDirectory() as cache:
        cold_metrics, cold_time = run_ours(args.model, args.dataset, args.split, cache)
        print(f"synthrank cold:       {cold_time:8.1f}s  {cold_metrics}")
        warm_metrics, warm_time = run_ours(args.model, args.dataset, args.split, cache)
        print(f"synthrank warm cache: {warm_time:8.1f}s")

    for name, value in beir_metrics.items():
        if abs(value - cold_metrics[name]) > 5e-4:
            raise SystemExit(
                f"metrics disagree on {name}: BEIR {value}, synthrank {cold_metrics[name]}"
            )
    assert warm_metrics == cold_metrics, "the cache changed the metrics"
    print("metrics agree (|diff| <= 5e-4 on nDCG@10, R@100, AP@100, P@10)")
    print(f"ratio cold / BEIR: {cold_time / beir_time:.3f}  (goal <= 0.8)")
    print(f"ratio warm / BEIR: {warm_time / beir_time:.3f}  (goal < 0.1)")


if __name__ == "__main__":
    main()
