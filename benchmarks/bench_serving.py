"""Keeping a served engine busy: synthrank's scheduler against a minimal reference client on the
same simulated OpenAI-compatible server, in one run.

The server (a process of its own, asyncio, HTTP/1.1 keep-alive) answers every request at once,
as a continuous-batching engine below saturation does, after a latency drawn like a served 8B
model's: ``base + tokens x per_token``; a quarter of the calls are short answers of
``short_tokens`` tokens, the others ``tokens ~ lognormal(median, sigma)``, each cut at the
request's ``max_tokens``. Each request's draw
is seeded by its body, so the same request costs the same time whoever sends it. The model is
printed with the results.

1. synthrank ``generate --backend openai`` with the planned levels (:data:`LEVELS`) for SciFact
   train claims at concurrency C (one
   endpoint, then two endpoints of C/2); then the reference client (httpx AsyncClient,
   keep-alive, C requests always in flight, no validation) replays the very same requests
   (read back from generation.jsonl), and the same minimal client on aiohttp (synthrank's HTTP
   library). Reported: wall time of each, the lower bound (sum of the server's latencies / C),
   synthrank's throughput against each reference client's, and the mean busy share of the C
   slots (the server's time spent on requests / (C x wall)).
2. The orchestrator's ceiling: the same against a server that answers at once (latency 0):
   calls per second of synthrank and of the reference client, and their ratio.

3. With ``--scale N``: a job of N queries (MS MARCO dev queries, repeated with a variant
   number to reach N; levels 3 and 0, two calls a query) on the server that answers at once,
   run as ``synthrank generate`` in a process of its own: killed with SIGKILL when half the
   queries are committed, then run again to the end. Reported: wall time, peak RSS of each
   process (``VmHWM``) against a job of ``--scale-base`` queries, the seconds from the rerun's
   start to its first new commit, and the journal check of the kill -9 test (every query,
   corpus line and call record once).

    python benchmarks/bench_serving.py [--claims 64] [--claims-wide 600] [--ceiling-claims 300]
        [--scale 100000 --scale-base 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import multiprocessing
import os
import random
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_llm_server import fake_passage

from synthrank.generate import (
    BackendSpec,
    GenerateJob,
    GenerationConfig,
    Level,
    generate,
)
from synthrank.llm.store import iter_calls

DATA = Path(os.environ.get("SYNTHRANK_DATA", "../shared/data"))

LEVELS = (
    Level(
        3, "perfectly relevant", "answers the query completely and directly, with specific facts"
    ),
    Level(
        2,
        "highly relevant",
        "introduces the query's subject without addressing the query itself",
        strategy="subject-background",
    ),
    Level(1, "related", "covers another topic of the query's broad field", strategy="broad-field"),
    Level(0, "irrelevant", "is about an unrelated, named topic", strategy="other-topic"),
)
"""The planned levels (examples/levels/planned.toml): two short planning calls (the query's
subject and field), then four passages; six calls a query when none is rejected."""


@dataclass(frozen=True)
class Latency:
    base_s: float = 0.15
    per_token_s: float = 0.025
    median_tokens: float = 150.0
    sigma: float = 0.5
    short_share: float = 0.25
    short_tokens: int = 20
    scale: float = 1.0
    """1.0: the served model; 0.0: a server that answers at once."""

    def tokens(self, body: bytes) -> int:
        rng = random.Random(hashlib.sha256(body).digest())
        if rng.random() < self.short_share:
            return self.short_tokens
        return max(1, round(rng.lognormvariate(math.log(self.median_tokens), self.sigma)))

    def seconds(self, tokens: int) -> float:
        return self.scale * (self.base_s + tokens * self.per_token_s)

    def describe(self) -> str:
        if self.scale == 0:
            return "latency 0 (answers at once)"
        return (
            f"latency = {self.base_s} s + tokens x {self.per_token_s * 1000:g} ms; "
            f"{self.short_share:.0%} of calls {self.short_tokens} tokens, the others "
            f"lognormal(median {self.median_tokens:g}, sigma {self.sigma}); every request "
            "served at once"
        )


def _answer_text(prompt: str, seed: int) -> str:
    if "Answer with" in prompt:
        return fake_passage(prompt, seed, 3)[:-1]
    if "different search query" in prompt:
        return "How does " + fake_passage(prompt, seed, 6)[:-1] + "?"
    return fake_passage(prompt, seed, 60)


async def _serve(ports: list[int], latency: Latency, ready) -> None:
    stats = {"busy_s": 0.0, "requests": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                length = 0
                for line in lines:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                start = time.perf_counter()
                if request_line.startswith("GET /stats"):
                    payload = json.dumps(stats).encode()
                elif request_line.startswith("POST /reset"):
                    stats.update(busy_s=0.0, requests=0)
                    payload = b"{}"
                else:
                    request = json.loads(body)
                    tokens = min(latency.tokens(body), request.get("max_tokens") or 10**9)
                    delay = latency.seconds(tokens)
                    if delay:
                        await asyncio.sleep(delay)
                    prompt = request["messages"][-1]["content"]
                    text = _answer_text(prompt, request.get("seed", 0))
                    payload = json.dumps(
                        {
                            "object": "chat.completion",
                            "model": request.get("model"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {
                                "prompt_tokens": len(prompt) // 4,
                                "completion_tokens": tokens,
                            },
                        }
                    ).encode()
                    stats["requests"] += 1
                    stats["busy_s"] += time.perf_counter() - start
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    servers = [
        await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024) for port in ports
    ]
    ready.set()
    await asyncio.gather(*(s.serve_forever() for s in servers))


def _server_main(ports: list[int], latency: Latency, ready) -> None:
    asyncio.run(_serve(ports, latency, ready))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """The simulated server in a process of its own, on ``endpoints`` ports."""

    def __init__(self, latency: Latency, endpoints: int) -> None:
        self.ports = [_free_port() for _ in range(endpoints)]
        self.urls = [f"http://127.0.0.1:{port}/v1" for port in self.ports]
        ready = multiprocessing.Event()
        self.process = multiprocessing.Process(
            target=_server_main, args=(self.ports, latency, ready), daemon=True
        )
        self.process.start()
        ready.wait(30)

    def _call(self, method: str, path: str) -> dict:
        import httpx

        return httpx.request(method, f"http://127.0.0.1:{self.ports[0]}{path}").json()

    def reset(self) -> None:
        self._call("POST", "/reset")

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def close(self) -> None:
        self.process.terminate()
        self.process.join()


async def _reference(urls: list[str], bodies: list[dict], concurrency: int) -> float:
    """C workers per the reference client: always C requests in flight, no validation."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue = iter(enumerate(bodies))
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600)) as client:

        async def worker() -> None:
            for index, body in queue:
                url = urls[index % len(urls)]
                response = await client.post(f"{url}/chat/completions", json=body)
                response.json()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


async def _reference_aiohttp(urls: list[str], bodies: list[dict], concurrency: int) -> float:
    """The same minimal client on aiohttp (the library synthrank's openai backend uses, and vLLM's
    serving benchmark): what the HTTP layer alone allows, so the ratio shows synthrank's own
    cost per call."""
    import aiohttp

    queue = iter(enumerate(bodies))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for index, body in queue:
                url = urls[index % len(urls)]
                async with session.post(f"{url}/chat/completions", json=body) as response:
                    await response.json()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


def _claims(n: int) -> Path:
    from synthrank.llm.jobs import load_queries

    queries = load_queries(str(DATA / "beir" / "scifact"), "train")[:n]
    if len(queries) < n:
        raise SystemExit(f"SciFact train has {len(queries)} claims, fewer than {n}")
    path = Path(tempfile.mkdtemp()) / "claims.jsonl"
    with path.open("w") as handle:
        for q in queries:
            handle.write(json.dumps({"_id": q.id, "text": q.text}) + "\n")
    return path


def measure(latency: Latency, claims: int, concurrency: int, endpoints: int, work: Path) -> dict:
    server = Server(latency, endpoints)
    try:
        queries = _claims(claims)
        spec = BackendSpec(
            backend="openai",
            model="sim",
            endpoints=tuple(server.urls),
            concurrency=concurrency // endpoints,
            timeout_s=600.0,
        )
        out = work / f"gen-{claims}-{concurrency}-{endpoints}-{latency.scale}"
        shutil.rmtree(out, ignore_errors=True)
        job = GenerateJob(str(queries), out, config=GenerationConfig(levels=LEVELS), backend=spec)
        server.reset()
        start = time.perf_counter()
        result = generate(job, progress=False)
        ours = time.perf_counter() - start
        busy_ours = server.stats()["busy_s"]
        calls = list(iter_calls(out))
        bodies = [{"model": "sim", "messages": c["messages"], **c["sampling"]} for c in calls]
        server.reset()
        reference = asyncio.run(_reference(server.urls, bodies, concurrency))
        stats = server.stats()
        server.reset()
        aiohttp_reference = asyncio.run(_reference_aiohttp(server.urls, bodies, concurrency))
        aiohttp_stats = server.stats()
    finally:
        server.close()
    assert stats["requests"] == len(bodies) == aiohttp_stats["requests"], stats
    return {
        "claims": claims,
        "concurrency": concurrency,
        "endpoints": endpoints,
        "calls": len(calls),
        "queries_done": result.done_now,
        "synthrank_wall_s": round(ours, 2),
        "reference_wall_s": round(reference, 2),
        "lower_bound_s": round(stats["busy_s"] / concurrency, 2),
        "aiohttp_reference_wall_s": round(aiohttp_reference, 2),
        "throughput_vs_reference": round(reference / ours, 3),
        "throughput_vs_aiohttp_reference": round(aiohttp_reference / ours, 3),
        "busy_share_synthrank": round(busy_ours / (concurrency * ours), 3),
        "busy_share_reference": round(stats["busy_s"] / (concurrency * reference), 3),
        "busy_share_aiohttp_reference": round(
            aiohttp_stats["busy_s"] / (concurrency * aiohttp_reference), 3
        ),
        "calls_per_s_synthrank": round(len(calls) / ours, 1),
        "calls_per_s_reference": round(len(calls) / reference, 1),
        "calls_per_s_aiohttp_reference": round(len(calls) / aiohttp_reference, 1),
    }


SCALE_LEVELS = (
    Level(
        3, "perfectly relevant", "answers the query completely and directly, with specific facts"
    ),
    Level(0, "irrelevant", "is about an unrelated, named topic", strategy="other-topic"),
)

_SCALE_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench_serving import SCALE_LEVELS
from synthrank.generate import BackendSpec, GenerateJob, GenerationConfig, generate
spec = BackendSpec(backend="openai", model="sim", endpoints=(sys.argv[4],), concurrency=64)
config = GenerationConfig(levels=SCALE_LEVELS)
generate(GenerateJob(sys.argv[2], Path(sys.argv[3]), config=config, backend=spec), progress=False)
"""


def _scale_queries(n: int, work: Path) -> Path:
    from synthrank.data import iter_queries

    base = list(iter_queries(DATA / "queries" / "msmarco-dev-small.jsonl"))
    path = work / f"queries-{n}.jsonl"
    with path.open("w") as handle:
        for i in range(n):
            q = base[i % len(base)]
            text = q.text if i < len(base) else f"{q.text} (variant {i // len(base)})"
            handle.write(json.dumps({"_id": f"{q.id}-{i}", "text": text}) + "\n")
    return path


def _journal_lines(out: Path) -> int:
    path = out / "lists.jsonl"
    if not path.is_file():
        return 0
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _run_job(queries: Path, out: Path, url: str, *, kill_at: int | None = None) -> dict:
    """Run the scale job in a process of its own; with ``kill_at``, SIGKILL it once that many
    queries are committed. Returns its wall time, peak RSS, journal lines, and the seconds to
    its first new commit."""
    import signal
    import subprocess

    here = str(Path(__file__).resolve().parent)
    before = _journal_lines(out)
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", _SCALE_SCRIPT, here, str(queries), str(out), url],
        stderr=subprocess.PIPE,
    )
    peak, first_commit, polls = None, None, 0
    while process.poll() is None:
        time.sleep(0.05)
        peak = _peak_rss_mib(process.pid) or peak
        polls += 1
        if first_commit is None or (kill_at is not None and polls % 10 == 0):
            lines = _journal_lines(out)
            if first_commit is None and lines > before:
                first_commit = time.perf_counter() - start
            if kill_at is not None and lines >= kill_at:
                process.send_signal(signal.SIGKILL)
                process.wait()
                break
    stderr = process.stderr.read().decode() if process.stderr else ""
    if kill_at is None and process.returncode != 0:
        raise SystemExit(f"the scale job failed: {stderr[-2000:]}")
    return {
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round(peak or 0.0, 1),
        "journal_lines": _journal_lines(out),
        "first_new_commit_s": None if first_commit is None else round(first_commit, 2),
    }


def _check_once(out: Path, n: int) -> str:
    """The kill -9 test's journal check: every query, corpus line, qrels row and live call
    record once, and every accepted passage in the corpus."""
    from collections import Counter

    def lines(name: str) -> list[str]:
        return (out / name).read_text().splitlines()

    journal = [json.loads(x)["query_id"] for x in lines("lists.jsonl")]
    corpus = lines("corpus.jsonl")
    qrels = lines("qrels/train.tsv")[1:]
    calls = [json.loads(x) for x in lines("generation.jsonl")]
    live = [c for c in calls if not c.get("abandoned")]
    keys = Counter((c["query_id"], c["kind"], c["grade"], c["index"], c["attempt"]) for c in live)
    kept = sorted(c["passage_id"] for c in live if c["accepted"] and c["kind"] == "passage")
    problems = []
    if len(journal) != n or len(set(journal)) != n:
        problems.append(f"journal: {len(journal)} lines, {len(set(journal))} queries, want {n}")
    if (
        len(set(corpus)) != len(corpus)
        or len(qrels) != len(corpus)
        or len(set(qrels)) != len(qrels)
    ):
        problems.append("corpus or qrels lines repeated")
    if keys and max(keys.values()) > 1:
        problems.append("a call record written twice")
    if kept != sorted(json.loads(x)["_id"] for x in corpus):
        problems.append("accepted passages and corpus differ")
    return "passed" if not problems else "FAILED: " + "; ".join(problems)


def scale(n: int, base: int, work: Path) -> None:
    server = Server(Latency(scale=0.0), 1)
    try:
        small_queries = _scale_queries(base, work)
        small = _run_job(small_queries, work / "scale-small", server.urls[0])
        queries = _scale_queries(n, work)
        out = work / "scale"
        first = _run_job(queries, out, server.urls[0], kill_at=n // 2)
        second = _run_job(queries, out, server.urls[0])
    finally:
        server.close()
    print(f"\nscale: {n} queries, levels 3 and 0 (two calls a query), C=64, latency 0:")
    print(f"  {base}-query job: {small}")
    print(f"  {n}-query job until SIGKILL at {n // 2} committed: {first}")
    print(f"  its rerun to the end: {second}")
    print(f"  wall in all: {first['wall_s'] + second['wall_s']:.1f} s")
    peak = max(first["peak_rss_mib"], second["peak_rss_mib"])
    print(
        f"  peak RSS {peak} MiB against {small['peak_rss_mib']} MiB: "
        f"{peak / max(small['peak_rss_mib'], 1e-9):.2f}x"
    )
    print(f"  rerun's first new commit after {second['first_new_commit_s']} s")
    print(f"  journal check: {_check_once(out, n)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=int, default=64)
    parser.add_argument("--claims-wide", type=int, default=600)
    parser.add_argument("--ceiling-claims", type=int, default=300)
    parser.add_argument("--skip-wide", action="store_true")
    parser.add_argument("--scale", type=int, help="also run the scale job of this many queries")
    parser.add_argument("--scale-base", type=int, default=10000)
    parser.add_argument("--only-scale", action="store_true")
    args = parser.parse_args()
    served, instant = Latency(), Latency(scale=0.0)
    print(f"machine: {os.cpu_count()} cores, {_cpu_name()}; server and client share them")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"server: {served.describe()}")
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    runs = [("C=32, one endpoint", served, args.claims, 32, 1)]
    if not args.skip_wide:
        runs.append(("C=256, two endpoints of 128", served, args.claims_wide, 256, 2))
    runs.append(("ceiling: latency 0, C=64", instant, args.ceiling_claims, 64, 1))
    if args.only_scale:
        runs = []
    for name, latency, claims, concurrency, endpoints in runs:
        result = measure(latency, claims, concurrency, endpoints, work)
        print(f"\n{name} ({latency.describe()}):")
        for key, value in result.items():
            print(f"  {key}: {value}")
    if args.scale:
        scale(args.scale, args.scale_base, work)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    shutil.rmtree(work, ignore_errors=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
