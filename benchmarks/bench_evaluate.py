"""Wall time of a full SciFact evaluation: synthrank (each encoding runtime, cold; and warm
cache) against BEIR's own.

Runs in one process on the same machine and model: BEIR's ``EvaluateRetrieval`` over
``DenseRetrievalExactSearch`` at its default batch size (128) and at synthrank's (8), and
``synthrank.evaluate.evaluate`` with an empty embedding cache, then again with the cache warm.
The sides alternate over ``--reps`` repetitions (BEIR first, then synthrank first), so neither
always starts with warm model and data files; each side's time is its median. Checks the metrics
agree and prints the ratios: BEIR at synthrank's batch size against BEIR at its own says how much
of the difference is the batch size, and synthrank against BEIR at the same batch size how much
is the rest (length-bucketed batches, one matrix product for the search). Then each OpenVINO
runtime (``--runtimes``: fp32, bf16 where the CPU has it, int8 weights), cold: an empty cache,
so the one-off export to OpenVINO IR is in its time; its nDCG@10 shift against torch fp32 is
printed beside its time. Goals (issue 16): cold <= 0.4x BEIR with |nDCG@10 shift| <= 0.002,
warm <= 0.01x BEIR.

    python benchmarks/bench_evaluate.py [--dataset beir:scifact] [--model minilm] [--reps 2]
        [--runtimes openvino-fp32,openvino-bf16,openvino-fp32-int8,openvino-bf16-int8]
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
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


def run_ours(model: str, dataset: str, split: str, cache_dir: str, runtime) -> tuple[dict, float]:
    from synthrank.evaluate import evaluate

    started = time.perf_counter()
    result = evaluate(model, dataset, split, cache_dir=cache_dir, progress=False, runtime=runtime)
    return result.metrics, time.perf_counter() - started


def parse_runtime(label: str):
    """``openvino-bf16-int8`` -> Runtime("openvino", "bf16", "int8")."""
    from synthrank.evaluate.models import Runtime

    backend, precision, *quantize = label.split("-")
    return Runtime(backend, precision, quantize[0] if quantize else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beir:scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--beir-batch-size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=2, help="repetitions, sides alternating (2)")
    parser.add_argument(
        "--runtimes",
        default="openvino-fp32,openvino-bf16,openvino-fp32-int8,openvino-bf16-int8",
        help="OpenVINO runtimes to time beside torch (bf16 ones are skipped on a CPU without "
        "bf16); empty for none",
    )
    args = parser.parse_args()

    from synthrank.data import resolve_dataset
    from synthrank.errors import SynthrankError
    from synthrank.evaluate import evaluate
    from synthrank.evaluate.models import TORCH, resolve_model_path

    runtimes = []
    for label in filter(None, args.runtimes.split(",")):
        runtime = parse_runtime(label)
        try:
            runtime.validate()
        except SynthrankError as exc:
            print(f"skipping {label}: {exc}")
            continue
        runtimes.append(runtime)

    ours_batch = inspect.signature(evaluate).parameters["batch_size"].default
    data_root = str(resolve_dataset(args.dataset).root)
    model_path = resolve_model_path(args.model)
    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")

    times: dict[str, list[float]] = {}
    metrics: dict[str, dict] = {}

    def beir(batch: int) -> None:
        name = f"BEIR batch {batch}"
        metrics[name], elapsed = run_beir(model_path, data_root, args.split, batch)
        times.setdefault(name, []).append(elapsed)
        print(f"{name:24s} {elapsed:8.1f}s  {metrics[name]}")

    def ours() -> None:
        # Each group starts from an empty $SYNTHRANK_CACHE: embeddings and OpenVINO exports, so
        # each runtime's cold time includes its one-off export.
        groups = [[("synthrank cold", TORCH), ("synthrank warm cache", TORCH)]]
        groups += [[(f"synthrank {r.label} cold", r)] for r in runtimes]
        for group in groups:
            with tempfile.TemporaryDirectory() as cache:
                os.environ["SYNTHRANK_CACHE"] = cache
                for name, runtime in group:
                    metrics[name], elapsed = run_ours(
                        args.model, args.dataset, args.split, f"{cache}/embeddings", runtime
                    )
                    times.setdefault(name, []).append(elapsed)
                    print(f"{name:32s} {elapsed:8.1f}s  {metrics[name]}")

    sides = [lambda: beir(args.beir_batch_size), lambda: beir(ours_batch), ours]
    for rep in range(args.reps):
        for side in sides if rep % 2 == 0 else sides[::-1]:
            side()

    cold = metrics["synthrank cold"]
    for name, values in metrics.items():
        if any(f" {r.label} " in name for r in runtimes):
            continue
        for measure, value in values.items():
            if abs(value - cold[measure]) > 5e-4:
                raise SystemExit(
                    f"metrics disagree on {measure}: {name} {value}, ours {cold[measure]}"
                )
    print("metrics agree (|diff| <= 5e-4 on nDCG@10, R@100, AP@100, P@10)")
    median = {name: statistics.median(values) for name, values in times.items()}
    beir_own, beir_ours = (
        median[f"BEIR batch {args.beir_batch_size}"],
        median[f"BEIR batch {ours_batch}"],
    )
    print(f"medians over {args.reps} repetitions, sides alternating:")
    print(
        f"  BEIR batch {ours_batch} / BEIR batch {args.beir_batch_size}: "
        f"{beir_ours / beir_own:.3f}  (the batch size alone)"
    )
    print(
        f"  synthrank cold / BEIR batch {ours_batch}: {median['synthrank cold'] / beir_ours:.3f}  "
        "(the rest, at the same batch size)"
    )
    print(
        f"  synthrank cold / BEIR batch {args.beir_batch_size}: "
        f"{median['synthrank cold'] / beir_own:.3f}  (goal <= 0.8)"
    )
    print(
        f"  synthrank warm / BEIR batch {args.beir_batch_size}: "
        f"{median['synthrank warm cache'] / beir_own:.3f}  (goal <= 0.01)"
    )
    for runtime in runtimes:
        name = f"synthrank {runtime.label} cold"
        shift = metrics[name]["nDCG@10"] - cold["nDCG@10"]
        verdict = "within" if abs(shift) <= 0.002 else "BEYOND"
        print(
            f"  {name} / BEIR batch {args.beir_batch_size}: {median[name] / beir_own:.3f}  "
            f"(goal <= 0.4); nDCG@10 shift {shift:+.4f} ({verdict} 0.002)"
        )


if __name__ == "__main__":
    main()
