"""The scheduler under every LLM job: the slots it is offered stay full while work remains, and
timing changes nothing that is kept (same seeds, byte-identical outputs under shuffled reply
delays, at any concurrency, interrupted by kill -9 or not)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

from fake_llm_server import FakeLLMServer
from test_generate import _check_each_record_once

from synthrank.generate import BackendSpec, GenerateJob, GenerationConfig, Level, generate
from synthrank.llm.backends import ChatRequest, Completion
from synthrank.llm.scheduler import BatchStream, ItemWork, Scheduler
from synthrank.llm.store import read_journal

LEVELS = (
    Level(3, "perfectly relevant", "answers the query completely and directly"),
    Level(2, "highly relevant", "gives background on the query's subject"),
    Level(1, "related", "answers a different question", strategy="related-question"),
    Level(0, "irrelevant", "is about an unrelated topic", strategy="other-topic"),
)
"""One planning call (the related question) and four passages a query."""

VIEWS = ("lists.jsonl", "corpus.jsonl", "queries.jsonl", "qrels/train.tsv")


def _queries(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "queries.jsonl"
    with path.open("w") as handle:
        for i in range(n):
            text = f"what is the role of protein {i} in cell signalling"
            handle.write(json.dumps({"_id": f"q{i}", "text": text}) + "\n")
    return path


def _job(queries: Path, out: Path, url: str, concurrency: int, **config) -> GenerateJob:
    spec = BackendSpec(
        backend="openai",
        model="fake",
        endpoints=(url,),
        concurrency=concurrency,
        timeout_s=30.0,
        retry_backoff_s=0.01,
    )
    settings = GenerationConfig(levels=LEVELS, min_words=10, docs_per_level=1, **config)
    return GenerateJob(str(queries), out, config=settings, backend=spec)


def _views(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in VIEWS}


def test_the_slots_stay_full_while_work_remains(tmp_path):
    # The server answers only once 8 requests wait: a client that lets a slot idle while a
    # call could go out leaves a group short until the gate gives up on it. Until the last
    # query's first call, a new query always has calls to make, so every group is full; after
    # it, the last calls wait on answers in their own group (a passage on its plan).
    queries = _queries(tmp_path, 24)
    with FakeLLMServer(gate=8, gate_timeout_s=2.0) as server:
        result = generate(_job(queries, tmp_path / "gen", server.url, 8), progress=False)
    assert result.done_now == 24 and server.requests == 24 * 5
    last = next(
        n
        for n, (bodies, _) in enumerate(server.groups)
        if any("protein 23 " in b["messages"][-1]["content"] for b in bodies)
    )
    assert last >= 10
    assert all(len(bodies) == 8 and full for bodies, full in server.groups[:last])
    assert sum(len(bodies) for bodies, _ in server.groups) == 120


def test_same_seeds_give_byte_identical_outputs_under_shuffled_delays(tmp_path):
    # Passages of four words overlap, so the near-duplicate check rejects some and they are
    # retried: which are kept depends on the order the answers are judged in.
    queries = _queries(tmp_path, 12)
    outputs = []
    for run, (concurrency, jitter_seed) in enumerate([(1, 0), (8, 1), (8, 2), (3, 3)]):
        out = tmp_path / f"gen{run}"
        with FakeLLMServer(jitter_s=0.03, jitter_seed=jitter_seed, vocabulary_size=4) as server:
            job = _job(queries, out, server.url, concurrency, duplicate_threshold=0.3)
            generate(job, progress=False)
        outputs.append(_views(out))
    calls = [json.loads(line) for line in (tmp_path / "gen0" / "generation.jsonl").open()]
    near_duplicates = [c for c in calls if c["reason"] == "near-duplicate"]
    assert near_duplicates and any(c["accepted"] and c["attempt"] > 0 for c in calls)
    assert all(output == outputs[0] for output in outputs[1:])


def test_kill_9_mid_job_then_rerun_gives_the_uninterrupted_output(tmp_path):
    queries = _queries(tmp_path, 40)
    out = tmp_path / "gen"
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from pathlib import Path
        from test_scheduler import _job
        from synthrank.generate import generate
        generate(_job(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], 8), progress=False)
        """
    )
    with FakeLLMServer(delay_s=0.05, jitter_s=0.05, vocabulary_size=4) as server:
        args = [sys.executable, "-c", script, str(Path(__file__).parent), str(queries), str(out)]
        process = subprocess.Popen([*args, server.url], stderr=subprocess.PIPE)
        deadline = time.time() + 60
        journal = out / "lists.jsonl"
        while time.time() < deadline and process.poll() is None:
            if journal.is_file() and journal.read_text().count("\n") >= 10:
                break
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        done_at_kill = len(read_journal(out))
        assert 10 <= done_at_kill < 40
        finished = subprocess.run([*args, server.url], capture_output=True, text=True, timeout=120)
        assert finished.returncode == 0, finished.stderr
        fresh = tmp_path / "fresh"
        generate(_job(queries, fresh, server.url, 8), progress=False)
    _check_each_record_once(out, [f"q{i}" for i in range(40)])
    assert _views(out) == _views(fresh)


class _Recording:
    """A backend that answers a list at a time and records each list's size."""

    name = "recording"

    def __init__(self) -> None:
        self.lists: list[int] = []

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        self.lists.append(len(requests))
        return [Completion(f"answer {r.seed}", "stop") for r in requests]


class _Steps(ItemWork):
    """An item of ``steps`` steps of ``width`` calls each, a step once the last is absorbed;
    records the answers it absorbed."""

    def __init__(self, item_id: str, steps: int, width: int) -> None:
        super().__init__(item_id, None, [])
        self.steps, self.width, self.seen = steps, width, []

    def next_calls(self) -> list:
        done = len(self.seen) // self.width
        if self.in_flight or done == self.steps:
            return []
        request = ChatRequest((("user", self.item_id),), 8, 0.0, 1.0, seed=0)
        return [
            type("Call", (), {"key": k, "request": replace(request, seed=done * self.width + k)})()
            for k in range(self.width)
        ]

    def absorb(self, call, completion: Completion, model: str) -> None:
        self.seen.append(completion.text)


def test_items_are_bounded_and_come_back_in_input_order():
    backend = _Recording()
    scheduler = Scheduler(BatchStream(backend, 6), "m", max_items=4)
    works = [_Steps(f"i{n}", steps=1 + n % 3, width=2) for n in range(10)]
    started = []
    source = (started.append(w.item_id) or w for w in works)
    returned = []
    for group in scheduler.run(source):
        returned += group
        # At most max_items admitted and not yet handed back.
        assert len(started) - len(returned) <= 4
    assert [w.item_id for w in returned] == [w.item_id for w in works]
    assert all(w.seen == [f"answer {s}" for s in range(len(w.seen))] for w in works)
    assert [len(w.seen) for w in works] == [2 * (1 + n % 3) for n in range(10)]
    assert max(backend.lists) <= 6 and scheduler.calls == sum(backend.lists)
