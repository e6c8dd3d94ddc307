"""The generate stage with a real LLM: SmolLM2 (the embedded default) through llama.cpp in
process, through llama.cpp's OpenAI-compatible server on loopback, and through transformers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from synthrank.data import BeirDataset
from synthrank.errors import SynthrankError
from synthrank.generate import (
    LEVEL_PRESETS,
    BackendSpec,
    GenerateJob,
    GenerationConfig,
    generate,
    resolve_gguf,
)
from synthrank.llm.backends import ChatRequest, make_backend
from synthrank.llm.models import GGUF_MODELS, sha256_file
from synthrank.llm.scheduler import open_stream

pytest.importorskip("llama_cpp", reason="needs synthrank[llama]")

# Every test here runs a real LLM (minutes of CPU): `pytest -m "not llm"` skips them.
pytestmark = pytest.mark.llm

MODEL = "smollm2-135m"
# The related-question levels (a plan and four passages a query), which SmolLM2 follows well
# enough for the counts below; the planned default is the 0.5B generator's.
CONFIG = GenerationConfig(
    levels=LEVEL_PRESETS["related"], max_tokens=120, target_words=50, min_words=12, max_attempts=2
)


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return resolve_gguf(MODEL).path


def _check_generation(out: Path, n_queries: int) -> list[dict]:
    """Every query committed, every passage either kept (in the BEIR files with its grade) or
    recorded as failed with a reason; every call logged with prompt, response and sampling."""
    journal = [json.loads(x) for x in (out / "lists.jsonl").read_text().splitlines()]
    assert len(journal) == n_queries
    dataset = BeirDataset(out, "gen")
    corpus, qrels = dataset.corpus(), dataset.qrels("train")
    for record in journal:
        kept = {(p["grade"], p["id"]) for p in record["passages"]}
        failed = {f["grade"] for f in record["failures"]}
        assert len(kept) + len(failed) == 4
        assert all(f["reason"] for f in record["failures"])
        assert {(g, d) for d, g in qrels.get(record["query_id"], {}).items()} == kept
        assert all(corpus[d].text for _, d in kept)
    calls = [json.loads(x) for x in (out / "generation.jsonl").read_text().splitlines()]
    assert calls and all(c["messages"] and "seed" in c["sampling"] for c in calls)
    assert all(c["accepted"] or c["reason"] for c in calls)
    assert sum(c["accepted"] and c["kind"] == "passage" for c in calls) == len(corpus)
    return calls


def test_llama_cpp_generates_graded_passages_for_scifact_queries(tmp_path, smollm2):
    assert sha256_file(smollm2) == GGUF_MODELS[MODEL].sha256
    job = GenerateJob(
        "beir:scifact",
        tmp_path / "gen",
        split="train",
        limit=3,
        config=CONFIG,
        backend=BackendSpec(model=MODEL, threads=2),
    )
    result = generate(job, progress=False)
    assert result.done_now == 3 and result.unfinished == []
    calls = _check_generation(job.out, 3)
    assert any(c["completion_tokens"] > 0 for c in calls)
    meta = json.loads((job.out / "meta.json").read_text())
    assert meta["backend"]["model_sha256"] == GGUF_MODELS[MODEL].sha256
    assert meta["status"] == "complete" and meta["counts"]["queries"] == 3
    assert meta["counts"]["passages"] >= 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Gemma's chat template refuses a system turn, as Gemma's own GGUF and HF templates do.
NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def no_system_model(smollm2, tmp_path_factory) -> Path:
    """SmolLM2 with a chat template that has no system role (a copy made by gguf's own
    gguf_new_metadata script)."""
    pytest.importorskip("gguf", reason="needs the gguf package")
    out = tmp_path_factory.mktemp("gguf") / "smollm2-no-system.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            str(smollm2),
            str(out),
            "--chat-template",
            NO_SYSTEM_TEMPLATE,
            "--force",
        ],
        check=True,
        capture_output=True,
    )
    return out


def _start_server(model: Path):
    pytest.importorskip("uvicorn", reason="needs llama-cpp-python[server]")
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            "2",
            "--n_ctx",
            "2048",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).read()
                break
            except OSError:
                assert process.poll() is None, "llama_cpp.server exited"
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start in 120 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def llama_server(smollm2):
    yield from _start_server(smollm2)


@pytest.fixture(scope="module")
def no_system_server(no_system_model):
    yield from _start_server(no_system_model)


def test_openai_backend_against_a_real_llama_cpp_server(tmp_path, llama_server):
    queries = tmp_path / "queries.tsv"
    queries.write_text(
        "id\ttext\nm1\twhat causes the northern lights\nm2\thow long to boil an egg\n"
    )
    job = GenerateJob(
        str(queries),
        tmp_path / "gen",
        config=CONFIG,
        backend=BackendSpec(
            # llama.cpp's Python server runs one request at a time (README: use concurrency 1
            # with it); concurrency and retries are tested against the fault-injecting server.
            backend="openai",
            model=MODEL,
            endpoints=(llama_server,),
            concurrency=1,
        ),
    )
    result = generate(job, progress=False)
    assert result.done_now == 2 and result.unfinished == []
    calls = _check_generation(job.out, 2)
    assert all(c["endpoint"] == llama_server and c["tries"] == 1 for c in calls), [
        (c["tries"], c["finish_reason"], c["latency_s"], c["reason"]) for c in calls
    ]
    assert all(c["completion_tokens"] > 0 for c in calls)


def test_transformers_backend_runs_the_gguf_model(smollm2):
    pytest.importorskip("gguf", reason="transformers reads GGUF files through the gguf package")
    backend = make_backend(BackendSpec(backend="transformers", model=MODEL, timeout_s=60))
    request = ChatRequest(
        messages=(("user", "Name one planet of the solar system."),),
        max_tokens=8,
        temperature=0.0,
        top_p=1.0,
        seed=0,
    )
    completion = backend.complete([request])[0]
    backend.close()
    assert completion.error is None and completion.text.strip()
    assert 0 < completion.completion_tokens <= 8 and completion.prompt_tokens > 5
    assert backend.describe()["gguf_file"] == smollm2.name


def test_planned_levels_with_smollm2_use_their_plans_and_lose_nothing(tmp_path, smollm2):
    from synthrank.config import read_toml
    from synthrank.generate import config_from_dict
    from synthrank.generate.judge import JudgeConfig, judge_dataset

    planned = Path(__file__).parent.parent / "examples" / "levels" / "planned.toml"
    config = config_from_dict(read_toml(planned), str(planned))
    job = GenerateJob(
        "beir:scifact",
        tmp_path / "gen",
        split="train",
        limit=2,
        config=replace(config, max_tokens=120, target_words=50, min_words=12, max_attempts=2),
        backend=BackendSpec(model=MODEL, threads=2),
    )
    assert generate(job, progress=False).done_now == 2
    calls = _check_generation(job.out, 2)
    journal = [json.loads(x) for x in (job.out / "lists.jsonl").read_text().splitlines()]
    for record in journal:
        mine = [c for c in calls if c["query_id"] == record["query_id"]]
        assert {c["strategy"] for c in mine if c["kind"] == "plan"} == {
            "plan:subject",
            "plan:field",
        }
        for call in (c for c in mine if c["kind"] == "passage" and c["grade"] in (1, 2)):
            for name in ("subject", "field"):
                if name in call["inputs"]:
                    assert call["inputs"][name] == record["plan"][name]
                    assert record["plan"][name] in call["messages"][-1]["content"]
    summary = judge_dataset(
        job.out, tmp_path / "judged", JudgeConfig(encoder="minilm", rule="drop"), progress=False
    )
    judged = [
        json.loads(x) for x in (tmp_path / "judged" / "judgments.jsonl").read_text().splitlines()
    ]
    kept = sum(len(r["passages"]) for r in journal)
    assert len(judged) == kept == summary["passages"]
    assert summary["decisions"].get("keep", 0) + summary["decisions"].get("drop", 0) == kept
    remaining = BeirDataset(tmp_path / "judged", "j").corpus()
    assert len(remaining) == summary["decisions"].get("keep", 0)


def _requests(max_tokens: list[int], temperature: float) -> list[ChatRequest]:
    topics = ["vitamin D", "malaria vaccines", "sleep and memory", "gut bacteria", "statins"]
    return [
        ChatRequest(
            (("system", "You are a helpful assistant."), ("user", f"Write about {t}. " * (i + 1))),
            max_tokens=n,
            temperature=temperature,
            top_p=0.95,
            seed=i,
        )
        for i, (t, n) in enumerate(zip(topics, max_tokens, strict=False))
    ]


def test_batched_llama_cpp_decodes_like_the_sequential_engine(smollm2):
    """Greedy decoding of three requests in one batch gives exactly what llama-cpp-python's
    chat API gives for each alone (SmolLM2's Q4_1 kernels are exact across batch sizes)."""
    requests = _requests([30, 30, 30], temperature=0.0)
    one = make_backend(BackendSpec(model=MODEL, threads=2, parallel=1))
    batched = make_backend(BackendSpec(model=MODEL, threads=2, parallel=4))
    try:
        expected, got = one.complete(requests), batched.complete(requests)
    finally:
        one.close()
        batched.close()
    for a, b in zip(expected, got, strict=True):
        assert b.text == a.text and b.text
        assert (b.prompt_tokens, b.completion_tokens) == (a.prompt_tokens, a.completion_tokens)
        assert b.finish_reason == a.finish_reason


def test_batched_llama_cpp_queues_more_requests_than_slots(smollm2):
    """Five sampled requests through two slots: every one answered, in order (prompts of
    different lengths), each within its own token limit, the same again for the same seeds;
    a request that cannot fit the context fails alone; a time limit stops a call."""
    backend = make_backend(BackendSpec(model=MODEL, threads=2, parallel=2, context_length=512))
    try:
        requests = _requests([5, 9, 3, 12, 7], temperature=0.8)
        first, second = backend.complete(requests), backend.complete(requests)
        assert [c.text for c in first] == [c.text for c in second]
        prompt_tokens = [c.prompt_tokens for c in first]
        assert prompt_tokens == sorted(prompt_tokens) and len(set(prompt_tokens)) == 5
        for request, completion in zip(requests, first, strict=True):
            assert completion.error is None and completion.completion_tokens >= 1
            assert completion.completion_tokens <= request.max_tokens
            if completion.finish_reason == "length":
                assert completion.completion_tokens == request.max_tokens
        too_long = replace(requests[0], max_tokens=600)
        mixed = backend.complete([too_long, requests[1]])
        assert mixed[0].finish_reason == "error" and "context length" in mixed[0].error
        assert mixed[1].text == first[1].text
        backend.batched.timeout_s = 0.0
        timed = backend.complete([replace(requests[3], max_tokens=50)])[0]
        assert timed.finish_reason == "time" and timed.completion_tokens == 1
    finally:
        backend.close()


def test_batched_llama_cpp_answers_each_call_as_it_finishes(smollm2):
    """The batched decoder is the scheduler's stream: with two slots, a short call comes back
    while a long one goes on decoding, the freed slot takes the next call at once, and every
    answer is the one a list of the same calls gets; a cancelled stream serves again."""
    backend = make_backend(BackendSpec(model=MODEL, threads=2, parallel=2, context_length=512))
    try:
        stream = open_stream(backend, 1)
        assert stream is backend.batched and stream.capacity == 2
        requests = _requests([3, 12, 5, 7, 9], temperature=0.8)
        expected = backend.complete(requests)
        index_of = {stream.submit(requests[0]): 0, stream.submit(requests[1]): 1}
        first = stream.wait()
        assert [index_of[token] for token, _ in first] == [0]  # call 1 is still decoding
        got = {0: first[0][1]}
        queued = iter(range(2, len(requests)))
        while len(got) < len(requests):
            while len(index_of) - len(got) < stream.capacity:
                i = next(queued, None)
                if i is None:
                    break
                index_of[stream.submit(requests[i])] = i
            got.update((index_of[token], c) for token, c in stream.wait())
        assert [got[i].text for i in range(len(requests))] == [c.text for c in expected]
        assert [got[i].completion_tokens for i in range(5)] == [
            c.completion_tokens for c in expected
        ]
        stream.submit(requests[1])
        stream.cancel()
        assert stream.wait() == []
        assert backend.complete(requests[:2])[1].text == expected[1].text
    finally:
        backend.close()


def test_replies_slower_than_5_s_from_a_real_server_are_kept(tmp_path, llama_server):
    """llama.cpp's Python server answers one request at a time: with eight in flight, the last
    waits for the seven before it, as long as a loaded vLLM server takes. An HTTP client's own
    default timeout (httpx's 5 s) failed every such call."""
    queries = tmp_path / "queries.tsv"
    queries.write_text("id\ttext\ns1\twhy do cats purr\ns2\thow do tides form\n")
    config = replace(CONFIG, max_tokens=200, target_words=120, min_words=12)
    job = GenerateJob(
        str(queries),
        tmp_path / "gen",
        config=config,
        backend=BackendSpec(
            backend="openai",
            model=MODEL,
            endpoints=(llama_server,),
            concurrency=8,
            max_retries=0,
        ),
    )
    result = generate(job, progress=False)
    assert result.unfinished == [] and result.done_now == 2
    calls = _check_generation(job.out, 2)
    assert all(c["tries"] == 1 and not c.get("abandoned") for c in calls)
    assert max(c["latency_s"] for c in calls) > 5.0, [c["latency_s"] for c in calls]


def test_a_template_without_a_system_role(tmp_path, no_system_model, no_system_server):
    queries = tmp_path / "queries.tsv"
    queries.write_text("id\ttext\nm1\twhat causes the northern lights\n")

    def job(out: str, system_prompt: str, backend: BackendSpec) -> GenerateJob:
        return GenerateJob(
            str(queries),
            tmp_path / out,
            config=replace(CONFIG, system_prompt=system_prompt),
            backend=backend,
        )

    server = BackendSpec(
        backend="openai",
        model=MODEL,
        endpoints=(no_system_server,),
        concurrency=1,
        max_retries=0,
    )
    # With a system prompt llama-cpp-python's server fails every call with HTTP 500 (a server
    # error, so retried and left for the next run): recorded with its message.
    failed = generate(job("refused", "You write passages.", server), progress=False)
    assert failed.unfinished == ["m1"]
    calls = [json.loads(x) for x in (tmp_path / "refused" / "generation.jsonl").open()]
    assert calls and all(c["abandoned"] for c in calls)
    assert all("System role not supported" in c["reason"] for c in calls), calls[0]["reason"]
    assert all("HTTP 500" in c["reason"] for c in calls), calls[0]["reason"]
    # An empty system prompt sends no system turn: the same server then answers.
    done = generate(job("served", "", server), progress=False)
    assert done.unfinished == [] and done.done_now == 1
    _check_generation(tmp_path / "served", 1)
    local = BackendSpec(model=str(no_system_model), threads=2)
    # In process the template error is the engine refusing the request: the job stops with it.
    with pytest.raises(SynthrankError, match="chat template error: System role not supported"):
        generate(job("local", "You write passages.", local), progress=False)
    calls = [json.loads(x) for x in (tmp_path / "local" / "generation.jsonl").open()]
    assert calls and all(c["abandoned"] and c["reason"].startswith("refused: ") for c in calls)
    assert all("chat template error: System role not supported" in c["reason"] for c in calls)


def test_queries_for_scifact_documents_with_smollm2(tmp_path, smollm2):
    """Queries for documents (generate-queries) with the real model on four SciFact documents:
    every document settled, every kept query valid and linked to its document, every call
    logged; the BM25 consistency filter then runs over the real corpus."""
    from synthrank.data import read_qrels
    from synthrank.generate.doc2query import (
        QueryGenConfig,
        QueryGenJob,
        filter_queries,
        generate_queries,
        read_documents,
    )

    out = tmp_path / "d2q"
    job = QueryGenJob(
        "beir:scifact",
        out,
        docs_limit=4,
        config=QueryGenConfig(queries_per_doc=2, max_tokens=40),
        backend=BackendSpec(model=MODEL, threads=2),
    )
    result = generate_queries(job, progress=False)
    assert not result.unfinished
    records = read_documents(out)
    assert len(records) == 4
    qrels = read_qrels(out / "qrels" / "train.tsv")
    queries = {
        json.loads(x)["_id"]: json.loads(x)["text"]
        for x in (out / "queries.jsonl").read_text().splitlines()
    }
    for record in records:
        assert len(record.queries) + len(record.failures) == 2
        for query in record.queries:
            assert qrels[query.id] == {record.doc_id: 1}
            assert queries[query.id] == query.text and 3 <= len(query.text.split()) <= 40
    calls = [json.loads(x) for x in (out / "generation.jsonl").read_text().splitlines()]
    assert len(calls) >= sum(len(r.queries) for r in records)
    assert all(c["model"] and c["messages"] for c in calls)
    assert sum(len(r.queries) for r in records) >= 4  # half of the 8 asked for, at least
    summary = filter_queries(out, top_k=10)
    assert summary["checked"] == sum(len(r.queries) for r in records)


def test_graded_real_lists_with_smollm2(tmp_path, smollm2):
    """synthrank grade with the real model: SciFact train claims' BM25 top 3 graded 0-3; every
    decision journaled with the reply, the output trainable."""
    import random

    from synthrank.generate.graded import GradeJob, grade_real_lists, read_grades
    from synthrank.train.data import SourceSpec, read_lists

    out = tmp_path / "graded"
    backend = make_backend(BackendSpec(model=MODEL, threads=2))
    try:
        meta = grade_real_lists(
            GradeJob("beir:scifact", out, top_n=3, limit=3), backend, progress=False
        )
    finally:
        backend.close()
    judgments = read_grades(out)
    assert len(judgments) == 9 and meta["counts"]["passages"] == 9
    assert all(j["reply"] is not None for j in judgments)
    graded = [j for j in judgments if j["grade"] is not None]
    assert len(graded) + meta["counts"]["no_grade"] == 9
    assert all(j["grade"] in (0, 1, 2, 3) for j in graded)
    if graded:
        pool = read_lists([SourceSpec.parse(str(out))], random.Random(0))
        assert sum(len(v) for v in pool.values()) == len(graded)
