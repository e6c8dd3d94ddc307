"""Generation throughput: synthrank's overhead over direct llama-cpp-python calls, the batched
llama.cpp backend against them, and the HTTP backend at concurrency 1 vs 4 against a local
llama.cpp server.

1. synthrank generates for N real MS MARCO queries with the in-process llama.cpp backend, one
   call at a time (``parallel = 1``); then the very same calls (messages, sampling parameters,
   seeds, read back from generation.jsonl) are replayed directly on the same loaded model. Both
   are timed by wall clock, in alternating repetitions; overhead = direct tokens/s / synthrank
   tokens/s (goal <= 1.05).
2. The same job with ``parallel = P`` (continuous batching): tokens/s and seconds per query
   against the direct replay, in the same repetitions (speed-up = batched / direct tokens/s);
   and against the reference way of driving the same decoder, lists of 2 x P calls each decoded
   to its end before the next list goes in (slots drain at each list's tail), on the same
   loaded model (streamed / lists tokens/s).
3. ``python -m llama_cpp.server`` on loopback; synthrank's OpenAI backend generates for the same
   queries at concurrency 1 and 4.

With ``--experiment FILE`` the job is that experiment's generation (its queries, levels and
settings, its model and ``parallel``), e.g. the demo's: ``--experiment examples/quickstart.toml
--batched-only --reps 1`` times the demo's generation streamed against lists.

    python benchmarks/bench_generate.py [--model smollm2-135m] [--queries 4] [--reps 2]
        [--parallel 8] [--skip-http] [--batched-only] [--experiment FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from synthrank.generate import BackendSpec, GenerateJob, GenerationConfig, generate, make_backend
from synthrank.llm.scheduler import BatchStream
from synthrank.llm.store import iter_calls

QUERIES = (
    Path(os.environ.get("SYNTHRANK_DATA", "../shared/data")) / "queries/msmarco-dev-small.jsonl"
)


def _tokens(out: Path) -> int:
    return sum(c["completion_tokens"] for c in iter_calls(out))


def run_synthrank(job: GenerateJob, backend) -> tuple[float, int, list[dict]]:
    shutil.rmtree(job.out, ignore_errors=True)
    start = time.perf_counter()
    generate(job, backend=backend, progress=False)
    seconds = time.perf_counter() - start
    return seconds, _tokens(job.out), list(iter_calls(job.out))


def run_direct(llm, calls: list[dict]) -> tuple[float, int]:
    start = time.perf_counter()
    tokens = 0
    for call in calls:
        response = llm.create_chat_completion(messages=call["messages"], **call["sampling"])
        tokens += response["usage"]["completion_tokens"]
    return time.perf_counter() - start, tokens


class _Lists:
    """The batched llama.cpp backend driven a list at a time: 2 x parallel calls per
    ``complete``, the next list only once the last call of this one is done (the reference)."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name = backend.name

    def stream(self) -> BatchStream:
        return BatchStream(self.backend, 2 * self.backend.parallel)

    def complete(self, requests):
        return self.backend.complete(requests)

    def describe(self) -> dict:
        return self.backend.describe()

    def close(self) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_throughput(job: GenerateJob, model_path: Path, threads: int) -> dict[int, float]:
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            str(threads),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        results = {}
        for concurrency in (1, 4):
            spec = replace(job.backend, backend="openai", endpoints=(url,), concurrency=concurrency)
            http_job = replace(job, out=job.out.with_name(f"http{concurrency}"), backend=spec)
            start = time.perf_counter()
            generate(http_job, progress=False)
            results[concurrency] = _tokens(http_job.out) / (time.perf_counter() - start)
        return results
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8, help="batched run's slots (8)")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--batched-only",
        action="store_true",
        help="only the batched decoder, streamed against lists (no sequential, direct or HTTP)",
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        help="take the queries, generation settings, model and parallel from this experiment file",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    job = GenerateJob(
        str(QUERIES),
        work / "ours",
        limit=args.queries,
        config=GenerationConfig(),
        backend=BackendSpec(model=args.model, threads=args.threads, parallel=1),
    )
    if args.experiment is not None:
        from synthrank.experiment import load_experiment

        experiment = load_experiment(args.experiment)
        q = experiment.queries
        if q is None or q.limit is None:
            raise SystemExit(f"{args.experiment}: give [queries] with a limit to time")
        job = GenerateJob(
            q.source,
            work / "ours",
            split=q.split,
            limit=q.limit,
            config=experiment.generation,
            backend=replace(experiment.backend, threads=args.threads, parallel=1),
        )
        args.model, args.queries = experiment.backend.model, q.limit
        args.parallel = experiment.backend.parallel
    batched_job = replace(
        job, out=work / "batched", backend=replace(job.backend, parallel=args.parallel)
    )
    lists_job = replace(batched_job, out=work / "lists")
    backend = None if args.batched_only else make_backend(job.backend)
    batched_backend = make_backend(batched_job.backend)
    runs: dict[str, list[tuple[float, int]]] = {}
    for rep in range(args.reps):
        line = []
        if backend is not None:
            seconds, tokens, calls = run_synthrank(job, backend)
            runs.setdefault("synthrank", []).append((seconds, tokens))
            runs.setdefault("direct", []).append(run_direct(backend.llm, calls))
            line.append(f"sequential {len(calls)} calls")
        for name, run_job, engine in (
            ("lists", lists_job, _Lists(batched_backend)),
            ("batched", batched_job, batched_backend),
        ):
            seconds, tokens, _ = run_synthrank(run_job, engine)
            runs.setdefault(name, []).append((seconds, tokens))
        line += [
            f"{name} {tokens} tokens in {seconds:.1f}s ({tokens / seconds:.1f} tok/s)"
            for name, values in runs.items()
            for seconds, tokens in values[-1:]
        ]
        print(f"rep {rep}: " + "; ".join(line), flush=True)

    def tps(name: str) -> float:
        return sum(t / s for s, t in runs[name]) / len(runs[name])

    def seconds_per_query(name: str) -> float:
        return round(sum(s for s, _ in runs[name]) / len(runs[name]) / args.queries, 2)

    result: dict = {"model": args.model, "queries": args.queries, "threads": args.threads}
    if backend is not None:
        result.update(
            synthrank_tokens_per_s=round(tps("synthrank"), 2),
            direct_tokens_per_s=round(tps("direct"), 2),
            overhead_ratio=round(tps("direct") / tps("synthrank"), 3),
            batched_speedup_vs_direct=round(tps("batched") / tps("direct"), 3),
        )
    result.update(
        batched_parallel=args.parallel,
        batched_tokens_per_s=round(tps("batched"), 2),
        lists_tokens_per_s=round(tps("lists"), 2),
        streamed_vs_lists=round(tps("batched") / tps("lists"), 3),
        seconds_per_query={name: seconds_per_query(name) for name in runs},
    )
    batched_backend.close()
    if backend is not None:
        model_path = backend.model.path
        backend.close()
        if not args.skip_http:
            http = http_throughput(job, model_path, args.threads)
            result["http_tokens_per_s"] = {str(k): round(v, 2) for k, v in http.items()}
            result["http_concurrency_4_vs_1"] = round(http[4] / http[1], 3)
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
