"""The generate stage without a real LLM: validation, configs, the crash-safe store, retries
against a fault-injecting server, sharding and merging, kill -9 and resume."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fake_llm_server import FakeLLMServer

from synthrank.cli import main
from synthrank.data import BeirDataset, Query, read_qrels
from synthrank.errors import SynthrankError
from synthrank.fileio import SynthrankWarning
from synthrank.generate import (
    LEVEL_PRESETS,
    BackendSpec,
    GenerateJob,
    GenerationConfig,
    config_from_dict,
    generate,
    inspect_dataset,
    merge,
    resolve_gguf,
)
from synthrank.generate.inspect import fully_ordered, level_separation
from synthrank.generate.judge import (
    JudgeConfig,
    agreeing_chain,
    judge_dataset,
    parse_grade,
    rank_levels,
)
from synthrank.generate.prompts import parse_plan_answer, plan_rejection
from synthrank.generate.validate import (
    accept_response,
    clean_response,
    jaccard,
    shingles,
    trim_to_sentence,
    words,
)
from synthrank.llm.jobs import load_queries, select_queries
from synthrank.llm.store import (
    GenerationStore,
    Passage,
    QueryRecord,
    read_journal,
    text_digest,
)

CHECKS = {"min_words": 5, "max_words": 60, "echo_threshold": 0.8, "duplicate_threshold": 0.6}
PASSAGE = (
    "Insulin is a hormone made by beta cells in the pancreas. It lets cells take up glucose "
    "from the blood, which lowers blood sugar after a meal."
)


def _reason(text: str, query: str = "what does insulin do", kept=(), limit=False):
    return accept_response(text, query, kept, stopped_by_limit=limit, **CHECKS)[1]


def test_validation_keeps_a_good_passage_and_names_each_bad_one():
    assert _reason(PASSAGE) is None
    assert _reason("") == "empty"
    assert _reason("Insulin lowers sugar.") == "too short"
    assert _reason(" ".join(f"word{i}" for i in range(61)) + ".") == "too long"
    assert _reason("What does insulin do? Insulin, what does it do, insulin do.") == (
        "echo of the query"
    )
    assert _reason("I'm sorry, but I cannot write about that topic for you today.") == "refusal"
    assert _reason("As an AI language model, I think insulin is a hormone of the body.") == (
        "refusal"
    )
    assert _reason("This passage is highly relevant to the query because it covers it well.") == (
        "meta-text"
    )
    assert _reason("The answer to your query is that insulin lowers the sugar in blood.") == (
        "meta-text"
    )
    assert _reason("Stone river " * 10 + "stone.") == "repetitive"
    assert _reason(
        "Marathon training takes months of rest and running. Here is a scientific abstract on "
        "it: runners improve."
    ) == ("meta-text")
    assert plan_rejection("subject", "Search engine test collection", "q") == "meta-text"
    reworded = PASSAGE.replace("after a meal", "after eating")
    assert _reason(reworded, kept=[PASSAGE]) == "near-duplicate"
    assert (
        _reason("Glaciers carve valleys over thousands of years of slow movement.", kept=[PASSAGE])
        is None
    )


def test_cleaning_strips_wrappers_and_truncation_keeps_whole_sentences():
    assert clean_response(f'Sure! Here is a passage about insulin:\n\n"{PASSAGE}"') == PASSAGE
    assert clean_response(f"**Passage:** {PASSAGE}") == PASSAGE
    assert trim_to_sentence("One full sentence. And a cut one that") == "One full sentence."
    assert trim_to_sentence("no sentence end at all") == ""
    text, reason = accept_response(
        PASSAGE + " It also", "what does insulin do", [], stopped_by_limit=True, **CHECKS
    )
    assert reason is None and text == PASSAGE
    assert _reason("A passage cut before any sentence ended", limit=True) == "truncated"


def test_similarity_helpers_match_their_definitions():
    a = shingles(words("a b c d"))
    b = shingles(words("b c d e"))
    assert a == {("a", "b", "c"), ("b", "c", "d")}
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 0.0
    assert parse_plan_answer('New query: "How are glaciers formed?"\nextra') == (
        "How are glaciers formed?"
    )
    assert parse_plan_answer("1. What is jazz?") == "What is jazz?"
    assert parse_plan_answer("Subject: insulin signalling.") == "insulin signalling"
    assert plan_rejection("subject", "insulin", "what does insulin do") is None
    assert plan_rejection("subject", " ".join(["word"] * 9), "q") == "too long"
    assert plan_rejection("related_question", "insulin do what", "what does insulin do") == (
        "echo of the query"
    )
    assert plan_rejection("field", "", "q") == "empty"


def test_config_from_toml_values_and_errors_name_the_key(tmp_path):
    config = config_from_dict(
        {
            "docs_per_level": 2,
            "style": "a scientific abstract",
            "levels": [
                {"grade": 1, "name": "on topic", "definition": "is on topic"},
                {"grade": 0, "name": "off", "definition": "is off", "strategy": "other-query"},
            ],
        },
        "gen.toml",
    )
    assert config.docs_per_level == 2 and [lv.grade for lv in config.levels] == [1, 0]
    assert config.level(0).strategy == "other-query"
    with pytest.raises(SynthrankError, match=r"gen.toml: unknown key 'doc_per_level'"):
        config_from_dict({"doc_per_level": 2}, "gen.toml")
    with pytest.raises(SynthrankError, match=r"key 'target_words': expected int, got str"):
        config_from_dict({"target_words": "80"}, "gen.toml")
    with pytest.raises(SynthrankError, match=r"^gen.toml, levels\[0\].*strategy 'guess' is unkno"):
        config_from_dict(
            {"levels": [{"grade": 3, "name": "a", "definition": "b", "strategy": "guess"}]},
            "gen.toml",
        )
    with pytest.raises(SynthrankError, match=r"^gen.toml: max_words \(5\) is below min_words"):
        config_from_dict({"max_words": 5, "min_words": 10}, "gen.toml")
    with pytest.raises(SynthrankError, match=r"\{topics\}, which is not provided"):
        config_from_dict(
            {"levels": [{"grade": 3, "name": "a", "definition": "b", "template": "{topics}"}]}, "g"
        )
    with pytest.raises(SynthrankError, match="repeat a grade"):
        config_from_dict({"levels": [{"grade": 3, "name": "a", "definition": "b"}] * 2}, "g")
    bad = tmp_path / "bad.toml"
    bad.write_text("docs_per_level = \n")
    assert (
        main(
            ["generate", "--queries", "x.jsonl", "--out", str(tmp_path / "o"), "--config", str(bad)]
        )
        == 2
    )


def test_shards_partition_the_limited_queries():
    queries = [Query(str(i), f"q{i}") for i in range(10)]
    shards = [select_queries(queries, 7, (i, 3)) for i in range(3)]
    ids = sorted(q.id for shard in shards for q in shard)
    assert ids == sorted(str(i) for i in range(7))
    assert select_queries(queries, 7, (1, 3)) == shards[1]


def _record(query_id: str) -> QueryRecord:
    return QueryRecord(
        query_id,
        f"query {query_id}",
        (Passage(f"{query_id}-3-0", 3, f"text {query_id}", "direct"),),
    )


def test_store_repairs_a_torn_journal_and_uncommitted_calls(tmp_path):
    store = GenerationStore(tmp_path)
    store.open()
    store.commit(_record("a"), [{"query_id": "a", "accepted": True}])
    store.commit(_record("b"), [{"query_id": "b", "accepted": True}])
    store.close()
    with (tmp_path / "generation.jsonl").open("a") as calls:
        calls.write(json.dumps({"query_id": "c", "accepted": True}) + "\n")
        calls.write('{"query_id": "c", "acc')
    with (tmp_path / "lists.jsonl").open("a") as journal:
        journal.write('{"query_id": "c", "query"')
    with (tmp_path / "corpus.jsonl").open("a") as corpus:
        corpus.write('{"_id": "c-3-0", "text": "half')
    records = GenerationStore(tmp_path).open()
    assert [r.query_id for r in records] == ["a", "b"]
    assert [
        json.loads(x)["query_id"] for x in (tmp_path / "generation.jsonl").read_text().splitlines()
    ] == ["a", "b"]
    dataset = BeirDataset(tmp_path, "gen")
    assert sorted(dataset.corpus()) == ["a-3-0", "b-3-0"]
    assert sorted(dataset.queries()) == ["a", "b"]
    assert read_qrels(tmp_path / "qrels" / "train.tsv") == {"a": {"a-3-0": 3}, "b": {"b-3-0": 3}}


def _queries_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "queries.jsonl"
    topics = ["insulin", "volcano", "jazz", "glacier", "sourdough", "cricket", "tides", "bees"]
    lines = [
        json.dumps({"_id": f"q{i}", "text": f"how does {topics[i % len(topics)]} {i} work"})
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _job(tmp_path, url, out="gen", n=6, **backend):
    spec = BackendSpec(
        backend="openai",
        model="fake",
        endpoints=(url,),
        timeout_s=1.0,
        max_retries=4,
        retry_backoff_s=0.01,
        **backend,
    )
    # The related-question levels: a plan and four passages a query, which the counts below use.
    config = GenerationConfig(levels=LEVEL_PRESETS["related"], min_words=10)
    return GenerateJob(str(_queries_file(tmp_path, n)), tmp_path / out, config=config, backend=spec)


DEAD_ENDPOINT = "http://127.0.0.1:9/v1"


def _check_folder(out: Path, n: int, levels=4):
    dataset = BeirDataset(out, "gen")
    queries = dataset.queries()
    corpus = dataset.corpus()
    qrels = dataset.qrels("train")
    assert len(queries) == n and len(qrels) == n
    assert len(corpus) == n * levels
    assert all(sorted(judged.values()) == list(range(levels)) for judged in qrels.values())
    return corpus


def test_retries_survive_every_fault_and_log_each_call(tmp_path):
    faults = ["500", "429", "garbage", "no-choices", "drop", "stall", "500"]
    with FakeLLMServer(faults, stall_s=3.0) as server:
        result = generate(_job(tmp_path, server.url), progress=False)
    assert result.unfinished == [] and result.done_now == 6
    _check_folder(tmp_path / "gen", 6)
    calls = [
        json.loads(x) for x in (tmp_path / "gen" / "generation.jsonl").read_text().splitlines()
    ]
    assert sum(c["tries"] - 1 for c in calls) == len(faults)
    assert all(c["accepted"] and c["sampling"]["seed"] >= 0 and c["messages"] for c in calls)
    meta = json.loads((tmp_path / "gen" / "meta.json").read_text())
    assert meta["status"] == "complete"
    assert meta["strategies"] == {
        "3": "direct",
        "2": "direct",
        "1": "related-question",
        "0": "other-topic",
    }
    assert meta["counts"]["passages"] == 24


PLANNED = {
    "levels": [
        {"grade": 3, "name": "answer", "definition": "answers the query"},
        {"grade": 2, "name": "bg", "definition": "background", "strategy": "subject-background"},
        {"grade": 1, "name": "field", "definition": "same field", "strategy": "broad-field"},
        {"grade": 0, "name": "off", "definition": "off topic", "strategy": "other-query"},
    ],
    "min_words": 10,
}


def test_plan_answers_feed_the_prompts_that_use_them(tmp_path):
    with FakeLLMServer() as server:
        job = replace(_job(tmp_path, server.url, n=2), config=config_from_dict(PLANNED, "t"))
        generate(job, progress=False)
    calls = [json.loads(x) for x in (job.out / "generation.jsonl").read_text().splitlines()]
    records = read_journal(job.out)
    for record in records:
        assert set(record.plan) == {"subject", "field"}
        mine = [c for c in calls if c["query_id"] == record.query_id]
        assert sorted(c["strategy"] for c in mine if c["kind"] == "plan") == [
            "plan:field",
            "plan:subject",
        ]
        prompts = {c["grade"]: c["messages"][-1]["content"] for c in mine if c["kind"] == "passage"}
        assert record.plan["subject"] in prompts[2]
        assert record.plan["field"] in prompts[1]
        other = next(c for c in mine if c["grade"] == 0)["inputs"]["other_query"]
        assert other != record.query and other in prompts[0]
    assert len(records) == 2 and all(len(r.passages) == 4 for r in records)


def test_a_failed_plan_fails_its_levels_with_the_reason(tmp_path):
    with FakeLLMServer(phrase_words=12) as server:
        job = replace(_job(tmp_path, server.url, n=1), config=config_from_dict(PLANNED, "t"))
        result = generate(job, progress=False)
    (record,) = read_journal(job.out)
    assert result.done_now == 1
    assert sorted(p.grade for p in record.passages) == [0, 3]
    assert {f["grade"]: f["reason"] for f in record.failures} == {
        2: "no subject (plan failed: too long)",
        1: "no field (plan failed: too long)",
    }
    meta = json.loads((job.out / "meta.json").read_text())
    assert meta["counts"]["failed_per_level"] == {"2": 1, "1": 1}
    assert meta["counts"]["rejections"] == {"too long": 6}


def test_a_dead_server_loses_nothing_and_a_rerun_finishes(tmp_path, capsys):
    job = _job(tmp_path, "http://127.0.0.1:9/v1", n=3)
    job = replace(job, backend=replace(job.backend, max_retries=1))
    result = generate(job, progress=False)
    assert result.done_now == 0 and len(result.unfinished) == 3
    assert read_journal(job.out) == []
    assert json.loads((job.out / "meta.json").read_text())["status"] == "incomplete"
    with FakeLLMServer() as server:
        job = replace(job, backend=replace(job.backend, endpoints=(server.url,)))
        result = generate(job, progress=False)
    assert result.done_now == 3 and result.unfinished == []
    _check_folder(job.out, 3)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("400", "HTTP 400"),
        (
            "err200",
            "error body (code 400) in an HTTP 200: the request exceeds the available context size",
        ),
        ("empty-choices", 'no choices (content filter?): {"object": "chat.completion"'),
    ],
)
def test_a_refused_call_is_settled_once_with_the_servers_message(tmp_path, fault, message):
    with FakeLLMServer([fault]) as server:
        result = generate(_job(tmp_path, server.url, n=1, concurrency=1), progress=False)
    assert result.unfinished == [] and result.done_now == 1
    calls = _calls(tmp_path / "gen")
    (refused,) = [c for c in calls if not c["accepted"]]
    assert refused["reason"].startswith(f"refused: {message}"), refused["reason"]
    assert refused["tries"] == 1 and server.requests == len(calls)
    key = (refused["kind"], refused["grade"], refused["index"])
    assert [(c["kind"], c["grade"], c["index"]) for c in calls].count(key) == 1
    (record,) = read_journal(tmp_path / "gen")
    assert len(record.passages) == 3
    (failure,) = record.failures
    assert message in failure["reason"]
    assert json.loads((tmp_path / "gen" / "meta.json").read_text())["status"] == "complete"


def test_a_query_beyond_the_servers_context_does_not_block_the_job(tmp_path, capsys):
    queries = _queries_file(tmp_path, 2)
    long_text = "why do " + " ".join(["glaciers retreat faster in warm summers"] * 60)
    with queries.open("a") as handle:
        handle.write(json.dumps({"_id": "q2", "text": long_text}) + "\n")
    out = tmp_path / "gen"
    command = ["generate", "--queries", str(queries), "--out", str(out), "--llm-backend", "openai"]
    command += ["--model", "fake", "--max-retries", "2", "--quiet", "--endpoint"]
    with FakeLLMServer(max_prompt_chars=2000) as server:
        assert main([*command, server.url]) == 0
        first = server.requests
        assert main([*command, server.url]) == 0
        assert server.requests == first  # the rerun has nothing left to ask
    records = {r.query_id: r for r in read_journal(out)}
    # Level 0's prompt (a passage on another topic) does not hold the query: it fits.
    assert [len(records[q].passages) for q in ("q0", "q1", "q2")] == [4, 4, 1]
    reasons = [f["reason"] for f in records["q2"].failures]
    assert len(reasons) == 3 and all("maximum context length is 512" in r for r in reasons)
    refused = [c for c in _calls(out) if c["query_id"] == "q2" and not c["accepted"]]
    assert len(refused) == 3
    assert all(c["tries"] == 1 and c["reason"].startswith("refused: HTTP 400") for c in refused)
    assert json.loads((out / "meta.json").read_text())["status"] == "complete"
    assert "3 of 3 queries done" in capsys.readouterr().out


def test_concurrency_is_bounded_and_used(tmp_path):
    with FakeLLMServer(delay_s=0.2) as server:
        generate(_job(tmp_path, server.url, n=8, concurrency=3), progress=False)
        assert server.max_in_flight == 3


def test_resume_refuses_a_different_job(tmp_path):
    with FakeLLMServer() as server:
        job = _job(tmp_path, server.url, n=2)
        generate(job, progress=False)
        changed = replace(job, config=replace(job.config, target_words=50))
        with pytest.raises(SynthrankError, match="different config_fingerprint"):
            generate(changed, progress=False)
        again = generate(job, progress=False)
    assert again.done_before == 2 and again.done_now == 0


def test_shards_merge_into_the_whole_job(tmp_path):
    with FakeLLMServer() as server:
        for i in range(2):
            job = _job(tmp_path, server.url, out=f"shard{i}", n=5)
            generate(replace(job, shard=(i, 2)), progress=False)
        whole = _job(tmp_path, server.url, out="whole", n=5)
        generate(whole, progress=False)
    counts = merge(tmp_path / "merged", [tmp_path / "shard0", tmp_path / "shard1"])
    assert counts["queries"] == 5 and counts["passages"] == 20
    merged = _check_folder(tmp_path / "merged", 5)
    assert merged == BeirDataset(tmp_path / "whole", "w").corpus()
    with pytest.raises(SynthrankError, match="are both shard 0/2: give each shard once"):
        merge(tmp_path / "twice", [tmp_path / "shard0", tmp_path / "shard0"])
    with pytest.raises(SynthrankError, match="not empty"):
        merge(tmp_path / "merged", [tmp_path / "shard0"])
    assert json.loads((tmp_path / "merged" / "meta.json").read_text())["missing_shards"] == []


def test_merge_takes_the_shards_of_one_n_each_once_and_names_the_missing(tmp_path, capsys):
    with FakeLLMServer() as server:
        for shard in [(0, 3), (1, 3), (0, 4), (1, 2)]:
            job = _job(tmp_path, server.url, out=f"shard-{shard[0]}of{shard[1]}", n=6)
            generate(replace(job, shard=shard), progress=False)
        generate(_job(tmp_path, server.url, out="whole", n=6), progress=False)
    shard = {name: str(tmp_path / f"shard-{name}") for name in ["0of3", "1of3", "0of4", "1of2"]}
    whole = str(tmp_path / "whole")

    assert main(["merge", "--out", str(tmp_path / "m1"), shard["0of3"], shard["1of3"]]) == 2
    err = capsys.readouterr().err
    assert err == (
        "synthrank: error: merge: shard 2/3 is missing: give all 3 shard folders, or pass "
        "--allow-incomplete\n"
    )
    assert main(["merge", "--out", str(tmp_path / "m2"), shard["0of4"], shard["1of2"]]) == 2
    assert capsys.readouterr().err == (
        f"synthrank: error: merge: {shard['0of4']} is shard 0/4 but {shard['1of2']} is shard "
        "1/2: give the shards of one --shard n\n"
    )
    with pytest.raises(SynthrankError) as refused:
        merge(tmp_path / "m3", [Path(shard["0of3"]), Path(whole)])
    assert str(refused.value) == (
        f"merge: {whole} is a whole job (made without --shard), not a shard: give only the "
        "folders made with --shard i/n"
    )
    with pytest.raises(SynthrankError, match=r"shards 1/4, 2/4, 3/4 are missing: give all 4 "):
        merge(tmp_path / "m4", [Path(shard["0of4"])])
    assert not any((tmp_path / m).exists() for m in ["m1", "m2", "m3", "m4"])

    # Alone, a folder made without --shard is the whole job: nothing is missing.
    assert merge(tmp_path / "copy", [Path(whole)])["queries"] == 6
    assert json.loads((tmp_path / "copy" / "meta.json").read_text())["status"] == "complete"

    assert (
        main(
            [
                "merge",
                "--out",
                str(tmp_path / "m1"),
                shard["0of3"],
                shard["1of3"],
                "--allow-incomplete",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    assert f"merge: shard 2/3 is missing: {tmp_path / 'm1'} is marked incomplete" in out.err
    assert f"into {tmp_path / 'm1'}: 4 queries" in out.out
    meta = json.loads((tmp_path / "m1" / "meta.json").read_text())
    assert (meta["status"], meta["missing_shards"]) == ("incomplete", ["2/3"])
    assert sorted(BeirDataset(tmp_path / "m1", "w").queries()) == ["q0", "q1", "q3", "q4"]


def test_merge_refuses_another_jobs_shard_and_unfinished_shards(tmp_path, capsys):
    with FakeLLMServer() as server:
        job = _job(tmp_path, server.url, out="shard0", n=5)
        generate(replace(job, shard=(0, 2)), progress=False)
        other = replace(job, out=tmp_path / "other", config=replace(job.config, target_words=50))
        generate(replace(other, shard=(1, 2)), progress=False)
    shard0, other = tmp_path / "shard0", tmp_path / "other"
    with pytest.raises(SynthrankError) as refused:
        merge(tmp_path / "mixed", [shard0, other])
    assert f"merge: {other} is another job (config_fingerprint " in str(refused.value)
    assert f"while {shard0} has " in str(refused.value)
    assert not (tmp_path / "mixed").exists()

    # Shard 1 of the same job against a dead server: committed nothing, status incomplete.
    dead = replace(job, out=tmp_path / "shard1", shard=(1, 2))
    dead = replace(dead, backend=replace(dead.backend, endpoints=(DEAD_ENDPOINT,), max_retries=0))
    assert generate(dead, progress=False).unfinished == ["q1", "q3"]
    shard1 = tmp_path / "shard1"
    parts = [str(tmp_path / "whole"), str(shard0), str(shard1)]
    assert main(["merge", *parts]) == 2
    message = f"{shard1} is incomplete; finish it by running its command again, or pass "
    assert message + "--allow-incomplete" in capsys.readouterr().err
    assert not (tmp_path / "whole").exists()
    assert main(["merge", *parts, "--allow-incomplete"]) == 0
    meta = json.loads((tmp_path / "whole" / "meta.json").read_text())
    assert meta["status"] == "incomplete" and meta["counts"]["queries"] == 3
    assert sorted(BeirDataset(tmp_path / "whole", "w").queries()) == ["q0", "q2", "q4"]


def test_kill_9_then_rerun_loses_and_duplicates_nothing(tmp_path):
    queries = _queries_file(tmp_path, 12)
    out = tmp_path / "gen"
    with FakeLLMServer(delay_s=0.05) as server:
        command = [
            sys.executable,
            "-m",
            "synthrank.cli",
            "generate",
            "--queries",
            str(queries),
            "--out",
            str(out),
            "--llm-backend",
            "openai",
            "--endpoint",
            server.url,
            "--model",
            "fake",
            "--concurrency",
            "1",
            "--quiet",
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        journal = out / "lists.jsonl"
        while time.time() < deadline:
            if journal.is_file() and journal.read_text().count("\n") >= 3:
                break
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        done_at_kill = len(read_journal(out))
        assert 3 <= done_at_kill < 12
        finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    _check_each_record_once(out, [f"q{i}" for i in range(12)])
    _check_folder(out, 12)
    assert "12 of 12 queries done" in finished.stdout


def _check_each_record_once(out: Path, query_ids: list[str]) -> None:
    """Every line of the folder's files is there once: no query, passage or LLM call record was
    written twice (a resumed run redoes only the queries its predecessor did not commit)."""

    def lines(name: str) -> list[str]:
        return (out / name).read_text().splitlines()

    def once(items: list) -> bool:
        return max(Counter(items).values()) == 1

    assert sorted(json.loads(x)["query_id"] for x in lines("lists.jsonl")) == sorted(query_ids)
    assert sorted(json.loads(x)["_id"] for x in lines("queries.jsonl")) == sorted(query_ids)
    corpus = lines("corpus.jsonl")
    assert once(corpus) and once([json.loads(x)["_id"] for x in corpus])
    qrels = lines("qrels/train.tsv")[1:]
    assert once(qrels) and len(qrels) == len(corpus)
    raw_calls = lines("generation.jsonl")
    assert once(raw_calls)
    calls = [json.loads(x) for x in raw_calls]
    assert {c["query_id"] for c in calls} == set(query_ids)
    live = [c for c in calls if not c.get("abandoned")]
    keys = [
        (c["query_id"], c["kind"], c["strategy"], c["grade"], c["index"], c["attempt"])
        for c in live
    ]
    assert once(keys)
    kept = [c["passage_id"] for c in live if c["accepted"] and c["kind"] == "passage"]
    assert sorted(kept) == sorted(json.loads(x)["_id"] for x in corpus)


def test_level_separation_counts_ordered_queries():
    cosines = {
        "a": {3: [0.9], 2: [0.7], 1: [0.5], 0: [0.1]},
        "b": {3: [0.6], 2: [0.7], 1: [0.5], 0: [0.1]},
        "c": {3: [0.8], 0: [0.2]},
    }
    result = level_separation(cosines)
    assert result["queries_with_all_levels"] == 2 and result["fully_ordered"] == 1
    assert result["mean_cosine"]["3"] == pytest.approx((0.9 + 0.6 + 0.8) / 3, abs=1e-4)
    assert result["gaps"]["3-2"] == pytest.approx((0.9 + 0.6 + 0.8) / 3 - 0.7, abs=1e-4)
    assert fully_ordered({3: 0.5, 2: 0.4}) and not fully_ordered({3: 0.5, 2: 0.5})


def test_inspect_reports_levels_rejections_and_separation(tmp_path, tiny_model_dir):
    with FakeLLMServer(["garbage"]) as server:
        generate(_job(tmp_path, server.url, n=3), progress=False)
    report = inspect_dataset(tmp_path / "gen", encoder=str(tiny_model_dir), progress=False)
    assert report["queries"] == 3 and report["passages_per_level"] == {
        "3": 3,
        "2": 3,
        "1": 3,
        "0": 3,
    }
    assert report["words_per_level"]["3"]["mean"] == 40.0
    assert report["rejections"]["calls"] == 15 and report["rejections"]["rejected"] == 0
    # The fake server reports 50 completion tokens per call: 15 calls for 12 passages.
    assert report["cost_per_kept_passage"]["completion_tokens"] == round(15 * 50 / 12, 1)
    assert report["generation"]["strategies"]["0"] == "other-topic"
    assert set(report["separation"]["mean_cosine"]) == {"3", "2", "1", "0"}
    assert main(["inspect", str(tmp_path / "gen"), "--no-encoder", "--json"]) == 0


def test_inspect_measures_the_lists_a_training_source_gives(mini_scifact, tiny_model_dir):
    """Real lists (judged positives against BM25 negatives), inspected as train --data reads
    them: every positive is paired with each of its query's two BM25 negatives."""
    spec = f"{mini_scifact.root},split=test,relabel=1:3,bm25=2:1"
    report = inspect_dataset(
        spec, encoder=str(tiny_model_dir), judge=str(tiny_model_dir), progress=False
    )
    qrels = mini_scifact.qrels("test")
    positives = sum(len(judged) for judged in qrels.values())
    assert report["dataset"] == spec and report["queries"] == len(qrels)
    assert report["passages_per_level"] == {"3": positives, "1": 2 * len(qrels)}
    assert report["difficulty"]["3>1"]["pairs"] == 2 * positives
    assert report["difficulty"]["adjacent"] == report["difficulty"]["3>1"]
    # The judge reports on every passage of every level.
    assert report["encoder_judge"]["per_level"]["3"]["passages"] == positives


def _brute_force_chain(grades, scores, margin=0.0):
    """The largest consistent subset by enumeration, ties to the higher grades."""
    best = ()
    for mask in range(1 << len(grades)):
        chosen = [i for i in range(len(grades)) if mask >> i & 1]
        consistent = all(
            grades[i] == grades[j] or (scores[i] - scores[j] > margin) == (grades[i] > grades[j])
            for i in chosen
            for j in chosen
            if i != j
        )
        key = (len(chosen), sorted((grades[i] for i in chosen), reverse=True))
        if consistent and key > (len(best), sorted((grades[i] for i in best), reverse=True)):
            best = tuple(chosen)
    return set(best)


def test_agreeing_chain_matches_exhaustive_search():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 7))
        grades = [int(g) for g in rng.integers(0, 4, size=n)]
        scores = [float(s) for s in rng.choice(np.linspace(0, 1, 6), size=n)]
        margin = float(rng.choice([0.0, 0.1]))
        found = agreeing_chain(grades, scores, margin)
        expected = _brute_force_chain(grades, scores, margin)
        assert len(found) == len(expected)
        assert sorted(grades[i] for i in found) == sorted(grades[i] for i in expected)
    assert agreeing_chain([3, 2, 1, 0], [0.9, 0.5, 0.6, 0.1]) in ({0, 1, 3}, {0, 2, 3})
    assert agreeing_chain([3, 2, 1, 0], [0.9, 0.5, 0.6, 0.1]) == {0, 1, 3}
    assert rank_levels([3, 2, 1, 0], [0.9, 0.5, 0.6, 0.1]) == [3, 1, 2, 0]
    assert parse_grade("Grade: 2.") == 2 and parse_grade("none") is None


def test_judge_decisions_are_logged_and_applied(tmp_path, tiny_model_dir):
    with FakeLLMServer() as server:
        generate(_job(tmp_path, server.url, n=4), progress=False)
        source = tmp_path / "gen"
        spec = BackendSpec(backend="openai", model="fake", endpoints=(server.url,))
        from synthrank.generate import make_backend

        llm = make_backend(spec)
        summary = judge_dataset(
            source,
            tmp_path / "llm",
            JudgeConfig(judge="llm", rule="drop"),
            backend=llm,
            progress=False,
        )
    # The fake judge grades everything 2: only level-2 passages agree and survive.
    assert summary["decisions"] == {"keep": 4, "drop": 12} and summary["agreement"] == 0.25
    kept = read_qrels(tmp_path / "llm" / "qrels" / "train.tsv")
    assert all(list(judged.values()) == [2] for judged in kept.values())
    lines = [json.loads(x) for x in (tmp_path / "llm" / "judgments.jsonl").read_text().splitlines()]
    assert len(lines) == 16 and all(x["reason"] for x in lines)

    encoder = JudgeConfig(encoder=str(tiny_model_dir), rule="relabel")
    summary = judge_dataset(source, tmp_path / "relabel", encoder, progress=False)
    lines = [
        json.loads(x) for x in (tmp_path / "relabel" / "judgments.jsonl").read_text().splitlines()
    ]
    relabelled = read_qrels(tmp_path / "relabel" / "qrels" / "train.tsv")
    for line in lines:
        grade = relabelled[line["query_id"]][line["passage_id"]]
        expected = line["intended"] if line["agrees"] else line["judged_level"]
        assert grade == expected and line["decision"] == ("keep" if line["agrees"] else "relabel")
    assert sum(len(j) for j in relabelled.values()) == 16
    report = inspect_dataset(tmp_path / "relabel", encoder=None, progress=False)
    assert report["judge"]["decisions"] == summary["decisions"]
    assert sum(v["passages"] for v in report["judge"]["per_level"].values()) == 16
    with pytest.raises(SynthrankError, match="not empty"):
        judge_dataset(source, tmp_path / "relabel", encoder, progress=False)


# Faults found when synthrank was tried as its users would (issue 13): replies like real servers'.

ONE_LEVEL = {"levels": [{"grade": 3, "name": "answer", "definition": "answers the query"}]}


def _calls(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "generation.jsonl").read_text().splitlines()]


def test_a_reply_slower_than_the_http_clients_default_is_accepted(tmp_path):
    # Only timeout_s may cut a reply short, not an HTTP client's own default (httpx's is 5 s,
    # aiohttp's 300 s); a 70B model takes tens of seconds.
    with FakeLLMServer(delay_s=6.0) as server:
        job = _job(tmp_path, server.url, n=1)
        job = replace(
            job,
            config=config_from_dict({**ONE_LEVEL, "min_words": 10}, "t"),
            backend=replace(job.backend, timeout_s=30.0, max_retries=0),
        )
        result = generate(job, progress=False)
    assert result.unfinished == [] and result.done_now == 1 and server.requests == 1
    (call,) = _calls(job.out)
    assert call["accepted"] and call["tries"] == 1 and call["latency_s"] >= 6.0


def test_reasoning_blocks_are_removed_before_validation_and_plan_parsing(tmp_path):
    with FakeLLMServer(mode="think") as server:
        job = replace(_job(tmp_path, server.url, n=2), config=config_from_dict(PLANNED, "t"))
        generate(job, progress=False)
    records = read_journal(job.out)
    assert len(records) == 2 and all(len(r.passages) == 4 for r in records)
    for record in records:
        assert all(not v.startswith("<") and "think" not in v for v in record.plan.values())
        for passage in record.passages:
            assert "think" not in passage.text and "plan it" not in passage.text
            assert passage.text[0].isupper() and passage.text.endswith(".")
    # The stored raw response keeps the reasoning, for provenance.
    assert all(c["response"].startswith("<think>") for c in _calls(job.out))


def test_a_reply_that_is_only_reasoning_is_rejected_with_its_reason(tmp_path):
    with FakeLLMServer(mode="think-only") as server:
        job = replace(_job(tmp_path, server.url, n=1), config=config_from_dict(ONE_LEVEL, "t"))
        result = generate(job, progress=False)
    (record,) = read_journal(job.out)
    assert result.done_now == 1 and record.passages == ()
    assert record.failures == ({"grade": 3, "index": 0, "reason": "only reasoning"},)
    assert [c["reason"] for c in _calls(job.out)] == ["only reasoning"] * 3


def test_null_content_is_a_rejection_retried_with_new_seeds(tmp_path, capsys):
    # A reasoning model that spent max_tokens thinking: vLLM sends content null.
    with FakeLLMServer(mode="null") as server:
        queries = _queries_file(tmp_path, 1)
        code = main(
            [
                "generate",
                "--queries",
                str(queries),
                "--out",
                str(tmp_path / "gen"),
                "--levels",
                "3",
                "--llm-backend",
                "openai",
                "--endpoint",
                server.url,
                "--model",
                "fake",
                "--quiet",
            ]
        )
        assert server.requests == 3  # max_attempts, no transport retries of the same request
    calls = _calls(tmp_path / "gen")
    assert [c["reason"] for c in calls] == ["empty at the limit"] * 3
    assert len({c["sampling"]["seed"] for c in calls}) == 3
    out = capsys.readouterr().out
    assert code == 0 and "empty at the limit (3)" in out and "raise max_tokens" in out


def test_an_empty_system_prompt_sends_no_system_turn(tmp_path):
    with FakeLLMServer(mode="no-system") as server:
        job = _job(tmp_path, server.url, n=1)
        job = replace(job, config=replace(job.config, system_prompt=""))
        result = generate(job, progress=False)
    assert result.unfinished == [] and len(read_journal(job.out)[0].passages) == 4
    assert all([m["role"] for m in b["messages"]] == ["user"] for b in server.bodies)


def test_a_job_whose_every_call_is_refused_stops_with_the_servers_message(tmp_path, capsys):
    with FakeLLMServer(mode="no-system") as server:
        queries = _queries_file(tmp_path, 6)
        command = [
            "generate",
            "--queries",
            str(queries),
            "--out",
            str(tmp_path / "gen"),
            "--llm-backend",
            "openai",
            "--endpoint",
            server.url,
            "--model",
            "fake",
            "--quiet",
        ]
        assert main(command) == 2
    err = capsys.readouterr().err
    assert "the engine refused all" in err and "HTTP 400: System role not supported" in err
    assert read_journal(tmp_path / "gen") == []
    calls = _calls(tmp_path / "gen")
    assert calls and all(c["abandoned"] and not c["accepted"] for c in calls)
    assert all(c["reason"].startswith("refused: HTTP 400: System role not") for c in calls)
    assert json.loads((tmp_path / "gen" / "meta.json").read_text())["status"] == "incomplete"
    # The rerun against a server that accepts the system turn finishes the job and keeps the
    # record of the refused calls, each once.
    with FakeLLMServer() as server:
        command[command.index("--endpoint") + 1] = server.url
        assert main(command) == 0
    after = _calls(tmp_path / "gen")
    assert after[: len(calls)] == calls
    fresh = after[len(calls) :]
    assert all("abandoned" not in c for c in fresh)
    assert sorted({c["query_id"] for c in fresh}) == [f"q{i}" for i in range(6)]
    _check_folder(tmp_path / "gen", 6)


def test_strip_reasoning_handles_open_closed_and_bare_closing_tags():
    from synthrank.generate.validate import strip_reasoning

    assert strip_reasoning("<think>a\nb</think>\n\nAnswer.") == ("Answer.", True)
    assert strip_reasoning("<THINKING>x</THINKING>Answer.") == ("Answer.", True)
    assert strip_reasoning("<think>cut by the limit") == ("", True)
    assert strip_reasoning("reasoning</think>Answer.") == ("Answer.", True)
    assert strip_reasoning("Plain answer.") == ("Plain answer.", False)
    assert parse_grade("<think>maybe 1 or 3</think>2") == 2
    assert parse_plan_answer("<think>hmm: insulin?</think>\nGlucose uptake") == "Glucose uptake"


def test_misorder_rates_count_wrong_pairs_and_half_ties():
    from synthrank.generate.inspect import misorder_rates

    scores = {
        # 3 > 2 right, 3 > 0 right, 2 > 0 wrong (0.1 > 0.05)
        "a": {3: [0.9], 2: [0.05], 0: [0.1]},
        # two level-1 passages: one above the level-3 passage, one tied with it
        "b": {3: [0.5], 1: [0.7, 0.5]},
    }
    rates = misorder_rates(scores)
    assert rates["3>2"] == {"pairs": 1, "misordered": 0.0, "rate": 0.0}
    assert rates["2>0"] == {"pairs": 1, "misordered": 1.0, "rate": 1.0}
    assert rates["3>1"] == {"pairs": 2, "misordered": 1.5, "rate": 0.75}
    assert rates["3>0"]["misordered"] == 0.0
    # grades present: 3, 2, 1, 0 -> adjacent pairs 3>2, 2>1 (none), 1>0 (none)
    assert rates["adjacent"] == {"pairs": 1, "misordered": 0.0, "rate": 0.0}
    assert rates["all"]["pairs"] == 5 and rates["all"]["misordered"] == 2.5


def test_misorder_rates_match_a_brute_force_count():
    from synthrank.generate.inspect import misorder_rates

    rng = np.random.default_rng(0)
    scores = {
        f"q{i}": {g: list(rng.integers(0, 4, size=rng.integers(1, 3)) / 4) for g in (3, 2, 1, 0)}
        for i in range(30)
    }
    flat = [(q, g, s) for q, per in scores.items() for g, values in per.items() for s in values]
    wrong = pairs = 0.0
    for q, g, s in flat:
        for q2, g2, s2 in flat:
            if q == q2 and g > g2:
                pairs += 1
                wrong += (s2 > s) + 0.5 * (s2 == s)
    rates = misorder_rates(scores)
    assert rates["all"]["pairs"] == pairs
    assert rates["all"]["misordered"] == pytest.approx(wrong)


def test_encoder_judge_agreement_per_level():
    from synthrank.generate.inspect import judge_agreement

    # q1 fully ordered; q2: level 2 scored above level 3: the chain keeps 3, 1, 0 (higher
    # grades win a tie in size), so level 2 disagrees.
    result = judge_agreement(
        {
            "q1": {3: [0.9], 2: [0.6], 1: [0.3], 0: [0.1]},
            "q2": {3: [0.5], 2: [0.8], 1: [0.3], 0: [0.1]},
        }
    )
    assert result["per_level"]["3"] == {"passages": 2, "agree": 2, "rate": 1.0}
    assert result["per_level"]["2"] == {"passages": 2, "agree": 1, "rate": 0.5}
    assert result["agreement"] == pytest.approx(7 / 8)


def test_query_files_with_a_byte_order_mark(tmp_path):
    from synthrank.llm.jobs import load_queries

    bom = "\ufeff"
    tsv = tmp_path / "q.tsv"
    tsv.write_text(bom + "id\ttext\nq1\twhat is insulin\n", encoding="utf-8")
    headerless = tmp_path / "h.tsv"
    headerless.write_text(bom + "q1\twhat is insulin\n", encoding="utf-8")
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text(bom + json.dumps({"_id": "q1", "text": "what is insulin"}) + "\n")
    for path in (tsv, headerless, jsonl):
        assert list(load_queries(str(path))) == [Query("q1", "what is insulin")], path


# The OpenAI backend's production features (README, Backends), measured on the fake server.


def _openai(*endpoints: str, **settings):
    from synthrank.llm.backends.openai_http import OpenAIBackend

    spec = BackendSpec(backend="openai", model="fake", endpoints=endpoints, timeout_s=5.0)
    return OpenAIBackend(replace(spec, **settings))


def _complete(endpoints: tuple[str, ...], requests, **settings):
    """``requests`` answered by a fresh openai backend, closed afterwards."""
    backend = _openai(*endpoints, **settings)
    try:
        return backend.complete(requests)
    finally:
        backend.close()


def _requests(n: int):
    from synthrank.llm.backends import ChatRequest

    return [
        ChatRequest((("user", f"Write a passage about topic {i}."),), 80, 0.7, 0.9, seed=i)
        for i in range(n)
    ]


def test_requests_spread_over_endpoints_and_a_failed_try_moves_to_the_other():
    with FakeLLMServer() as first, FakeLLMServer() as second:
        completions = _complete((first.url, second.url), _requests(8))
        assert first.requests == second.requests == 4
    assert all(c.error is None and c.tries == 1 for c in completions)
    assert {c.endpoint for c in completions} == {first.url, second.url}

    with FakeLLMServer() as live:
        completions = _complete(
            (DEAD_ENDPOINT, live.url), _requests(8), max_retries=1, retry_backoff_s=0.01
        )
        assert live.requests == 8
    assert all(c.error is None and c.text and c.endpoint == live.url for c in completions)
    # Requests that started on the dead endpoint succeeded on their second try, on the live one.
    assert sorted(c.tries for c in completions) == [1] * 4 + [2] * 4


def test_one_dead_endpoint_loses_no_query(tmp_path):
    with FakeLLMServer() as live:
        job = _job(tmp_path, live.url, n=4)
        job = replace(job, backend=replace(job.backend, endpoints=(DEAD_ENDPOINT, live.url)))
        result = generate(job, progress=False)
    assert result.unfinished == [] and result.done_now == 4
    _check_folder(job.out, 4)
    calls = _calls(job.out)
    assert all(c["accepted"] and c["endpoint"] == live.url for c in calls)
    assert any(c["tries"] == 2 for c in calls)


def test_retry_after_is_honoured():
    # Retry-After: 1 against a 10 ms backoff: the retry comes no sooner than 1 s after the 429.
    with FakeLLMServer(["429"], retry_after="1") as server:
        (completion,) = _complete((server.url,), _requests(1), retry_backoff_s=0.01)
        gap = server.arrivals[1] - server.arrivals[0]
    assert completion.error is None and completion.tries == 2
    assert 0.99 <= gap < 1.5
    # Retry-After: 0 against a 5 s backoff: the server's word wins.
    with FakeLLMServer(["429"]) as server:
        (completion,) = _complete((server.url,), _requests(1), retry_backoff_s=5.0)
        gap = server.arrivals[1] - server.arrivals[0]
    assert completion.error is None and completion.tries == 2 and gap < 1.0


def test_backoff_grows_exponentially_with_jitter():
    # Every request fails 4 times: its gaps between tries are base x 2^attempt x U(0.5, 1).
    base, tries = 0.05, 5
    with FakeLLMServer(fail_first=tries - 1) as server:
        completions = _complete((server.url,), _requests(3), retry_backoff_s=base)
        arrivals = list(zip(server.bodies, server.arrivals, strict=True))
    assert all(c.error is None and c.tries == tries for c in completions)
    ratios = []
    for seed in range(3):
        times = [t for body, t in arrivals if body["seed"] == seed]
        assert len(times) == tries
        for attempt, (before, after) in enumerate(itertools.pairwise(times)):
            backoff = base * 2**attempt
            gap = after - before
            assert 0.5 * backoff - 0.005 <= gap <= backoff + 0.15, (attempt, gap)
            ratios.append(gap / backoff)
    # Jitter: without it every gap is at least its full backoff.
    assert min(ratios) < 0.95


def test_an_endpoint_is_a_base_url_and_its_query_string_stays_at_the_end():
    from synthrank.errors import SettingError
    from synthrank.llm.backends.openai_http import chat_url

    for endpoint, message in (
        ("localhost:9/v1", "is not an http:// or https:// URL"),
        ("ftp://host/v1", "is not an http:// or https:// URL"),
        ("http://127.0.0.1:8000/v1/chat/completions", r"give the server's base URL \(e.g. "
         r"http://127.0.0.1:8000/v1\)"),
    ):  # fmt: skip
        with pytest.raises(SettingError, match=message) as caught:
            _openai(endpoint)
        assert caught.value.key == "endpoints"
    assert chat_url("https://h/v1/") == "https://h/v1/chat/completions"
    with FakeLLMServer() as server:
        backend = _openai(f"{server.url}?api-version=2024-06-01")
        try:
            assert backend.complete(_requests(1))[0].error is None
        finally:
            backend.close()
        assert server.paths == ["/v1/chat/completions?api-version=2024-06-01"]


def test_a_404_asks_whether_the_endpoint_is_the_base_url():
    with FakeLLMServer(faults=["404"]) as server:
        (completion,) = _complete((server.url,), _requests(1), max_retries=0)
    assert completion.refused and "HTTP 404" in completion.error
    assert f"(is {server.url} the server's base URL, e.g. ending in /v1?)" in completion.error


def test_the_api_key_comes_from_the_variable_named_by_api_key_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-default")
    monkeypatch.setenv("SYNTHRANK_TEST_KEY", "sk-named")
    with FakeLLMServer() as server:
        _complete((server.url,), _requests(2), api_key_env="SYNTHRANK_TEST_KEY")
        _complete((server.url,), _requests(1))
        monkeypatch.delenv("OPENAI_API_KEY")
        _complete((server.url,), _requests(1))
    sent = [h.get("authorization") for h in server.headers]
    assert sent == ["Bearer sk-named", "Bearer sk-named", "Bearer sk-default", None]


def test_command_line_flags_override_the_config_file(tmp_path):
    config = tmp_path / "gen.toml"
    config.write_text(
        "docs_per_level = 2\nseed = 5\nmax_tokens = 100\nmin_words = 10\n\n"
        '[backend]\nbackend = "openai"\nmodel = "fake"\n'
        f'endpoints = ["{DEAD_ENDPOINT}"]\nconcurrency = 1\ntimeout_s = 50\nmax_retries = 0\n'
    )
    with FakeLLMServer() as server:
        command = ["generate", "--queries", str(_queries_file(tmp_path, 2))]
        command += ["--out", str(tmp_path / "gen"), "--config", str(config), "--quiet"]
        command += ["--docs-per-level", "1", "--seed", "7", "--endpoint", server.url]
        command += ["--concurrency", "2", "--timeout", "30"]
        assert main(command) == 0
    meta = json.loads((tmp_path / "gen" / "meta.json").read_text())
    # The flags win; what no flag names comes from the file.
    assert meta["config"]["docs_per_level"] == 1 and meta["config"]["seed"] == 7
    assert meta["config"]["max_tokens"] == 100 and meta["config"]["min_words"] == 10
    backend = meta["backend"]
    assert backend["endpoints"] == [server.url] and backend["model"] == "fake"
    assert backend["concurrency_per_endpoint"] == 2 and backend["timeout_s"] == 30
    assert backend["max_retries"] == 0
    _check_folder(tmp_path / "gen", 2)
    passages = [c for c in _calls(tmp_path / "gen") if c["kind"] == "passage"]
    assert passages and all(c["sampling"]["max_tokens"] == 100 for c in passages)


def test_a_packaged_model_whose_sha256_does_not_match_is_refused(tmp_path, monkeypatch):
    import hashlib

    from synthrank.llm import models

    package = tmp_path / "site" / "synthrank_test_gguf_parts"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    parts = [b"GGUF fake model, part one;", b" part two."]
    for i, data in enumerate(parts):
        (package / f"part{i}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    good = hashlib.sha256(b"".join(parts)).hexdigest()
    entry = models.PackagedModel(
        "a fake model in two parts",
        tuple((package.name, f"part{i}.bin") for i in range(len(parts))),
        len(b"".join(parts)),
        good,
        "pip install synthrank-test-gguf",
    )
    monkeypatch.setitem(models.GGUF_MODELS, "fake-good", entry)
    monkeypatch.setitem(models.GGUF_MODELS, "fake-bad", replace(entry, sha256="0" * 64))
    resolved = resolve_gguf("fake-good")
    assert resolved.path.read_bytes() == b"".join(parts) and resolved.sha256 == good
    with pytest.raises(SynthrankError) as refused:
        resolve_gguf("fake-bad")
    assembled = models.cache_root() / "models" / "fake-bad.gguf"
    assert str(refused.value) == (
        f"model fake-bad: {assembled} does not match its sha256 000000000000...; the package "
        "files are damaged: reinstall them (pip install synthrank-test-gguf)"
    )
    # The bad assembly is not left in the cache to be trusted next time.
    assert not assembled.exists()
    # A one-file model is checked in place.
    single = replace(entry, parts=entry.parts[:1], sha256="0" * 64)
    monkeypatch.setitem(models.GGUF_MODELS, "fake-single", single)
    with pytest.raises(SynthrankError, match=r"part0\.bin does not match its sha256 0000"):
        resolve_gguf("fake-single")
    assert (package / "part0.bin").exists()


def _two_part_model(tmp_path, monkeypatch):
    """A fake packaged model of two parts, registered as "fake-parts"."""
    import hashlib

    from synthrank.llm import models

    package = tmp_path / "site" / "synthrank_test_gguf_two"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    parts = [b"GGUF fake model, part one;", b" part two."]
    for i, data in enumerate(parts):
        (package / f"part{i}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = models.PackagedModel(
        "a fake model in two parts",
        tuple((package.name, f"part{i}.bin") for i in range(len(parts))),
        len(b"".join(parts)),
        hashlib.sha256(b"".join(parts)).hexdigest(),
        "pip install synthrank-test-gguf",
    )
    monkeypatch.setitem(models.GGUF_MODELS, "fake-parts", entry)
    return b"".join(parts)


def test_a_model_cache_that_cannot_be_written_is_one_line_naming_the_path(tmp_path, monkeypatch):
    import errno

    from synthrank.llm import models

    _two_part_model(tmp_path, monkeypatch)
    # A cache folder that cannot be made (a file is in the way, which stops root too).
    (tmp_path / "blocked").write_text("")
    monkeypatch.setenv("SYNTHRANK_CACHE", str(tmp_path / "blocked"))
    with pytest.raises(SynthrankError) as refused:
        resolve_gguf("fake-parts")
    assert str(refused.value) == (
        f"model fake-parts: cannot write {tmp_path / 'blocked' / 'models'}: Not a directory; "
        "free space there, or set SYNTHRANK_CACHE to a writable folder"
    )

    # A full disk while the parts are written: the partial file is not left behind.
    monkeypatch.setenv("SYNTHRANK_CACHE", str(tmp_path / "cache"))
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle, mode):
            self.file = real_fdopen(handle, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(models.os, "fdopen", FullDisk)
    folder = tmp_path / "cache" / "models"
    with pytest.raises(SynthrankError) as refused:
        resolve_gguf("fake-parts")
    assert str(refused.value) == (
        f"model fake-parts: cannot write {folder / 'fake-parts.gguf'}: No space left on device; "
        "free space there, or set SYNTHRANK_CACHE to a writable folder"
    )
    assert list(folder.iterdir()) == []


def test_a_verification_stamp_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch):
    import errno

    model = _two_part_model(tmp_path, monkeypatch)
    folder = tmp_path / "cache" / "models"
    stamp = folder / "fake-parts.verified.json"
    real_write_text = Path.write_text

    def refuse_stamp(self, *args, **kwargs):
        if self == stamp:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refuse_stamp)
    message = (
        f"cannot write {stamp}: Read-only file system; {folder / 'fake-parts.gguf'} is verified, "
        "and will be hashed again next time"
    )
    for _ in range(2):
        with pytest.warns(SynthrankWarning) as caught:
            assert resolve_gguf("fake-parts").path.read_bytes() == model
        assert [str(w.message) for w in caught] == [message]
    monkeypatch.setattr(Path, "write_text", real_write_text)
    # A stamp cut short (a full disk) is ignored and written anew.
    stamp.write_text('{"path": ')
    resolved = resolve_gguf("fake-parts")
    assert json.loads(stamp.read_text())["sha256"] == resolved.sha256


def test_published_lists_of_the_same_settings_are_reused_not_generated(tmp_path, capsys):
    """A job given a published lists file takes its lists of the job's queries and generates
    only the rest; the cost per kept passage counts only the passages generated here; a file of
    another model or other settings is refused before anything is taken."""
    from synthrank.generate.publish import export_lists

    with FakeLLMServer() as server:
        first = _job(tmp_path, server.url, out="first", n=4)
        generate(first, progress=False)
        archive = tmp_path / "first.jsonl.gz"
        export_lists(first.out, archive)
        served = server.served
        job = replace(_job(tmp_path, server.url, out="second", n=6), reuse=(archive,))
        result = generate(job, progress=False)
        assert (result.reused, result.done_now, result.done_before) == (4, 2, 0)
        assert server.served - served == 2 * 5  # 5 calls a query (a plan and 4 levels)
        # Where the lists came from, and how long the job that made them ran, stay on record.
        made = json.loads((first.out / "meta.json").read_text())["seconds_total"]
        meta = json.loads((job.out / "meta.json").read_text())
        assert meta["reused"] == {str(archive): {"queries": 4, "seconds_total": made}}
        again = generate(job, progress=False)
        assert again.reused == 0 and again.done_before == 6 and server.served - served == 10
        # A continuation adds its time to the folder's total and keeps the record of reuse.
        after = json.loads((job.out / "meta.json").read_text())
        assert after["reused"] == meta["reused"]
        total = meta["seconds_total"] + after["seconds_this_run"]
        assert after["seconds_total"] == pytest.approx(total, abs=0.11)
        # Every list from the file: the LLM is not even loaded (this engine has no such model).
        offline = replace(job, out=tmp_path / "all-reused", reuse=(archive,), limit=4)
        offline = replace(offline, backend=replace(job.backend, backend="llama-cpp"))
        assert generate(offline, progress=False).reused == 4 and server.served - served == 10
        # A rebuild may not call the LLM: lists the files do not hold are refused.
        with pytest.raises(SynthrankError, match=r"the lists of 2 queries \(first q4\) are in"):
            generate(replace(job, out=tmp_path / "rebuilt", reuse_only=True), progress=False)
        assert server.served - served == 10
        for bad in (
            replace(job, out=tmp_path / "other-model", backend=replace(job.backend, model="f2")),
            replace(job, out=tmp_path / "other-config", config=replace(job.config, min_words=9)),
        ):
            key = "model" if bad.backend.model == "f2" else "config_fingerprint"
            with pytest.raises(SynthrankError, match=f"made with a different {key}"):
                generate(bad, progress=False)
            assert not bad.out.exists()  # refused before the job wrote anything
        # From the command line: the default settings are not the file's (min_words 10).
        command = ["generate", "--queries", job.queries, "--out", str(tmp_path / "cli")]
        command += ["--llm-backend", "openai", "--endpoint", server.url, "--model", "fake"]
        assert main([*command, "--reuse", str(archive), "--quiet"]) == 2
        assert "made with a different config_fingerprint" in capsys.readouterr().err
        assert main([*command, "--reuse", str(tmp_path / "missing.jsonl.gz")]) == 2
    assert capsys.readouterr().err.endswith("missing.jsonl.gz: no such lists file\n")
    _check_folder(job.out, 6)
    first_lists = {r.query_id: r for r in read_journal(first.out)}
    second_lists = {r.query_id: r for r in read_journal(job.out)}
    assert all(second_lists[q] == first_lists[q] for q in first_lists)
    report = inspect_dataset(job.out, encoder=None, progress=False)
    # The fake server reports 50 completion tokens a call: 10 calls for the 8 passages made here.
    assert report["cost_per_kept_passage"] == {
        "completion_tokens": round(10 * 50 / 8, 1),
        "llm_seconds": report["cost_per_kept_passage"]["llm_seconds"],
        "passages": 8,
    }


def test_published_lists_hold_no_query_text_and_rebuild_the_dataset(tmp_path):
    from synthrank.generate.publish import export_lists, import_lists

    with FakeLLMServer() as server:
        job = _job(tmp_path, server.url, n=4)
        generate(job, progress=False)
        archive = tmp_path / "published" / "lists.jsonl.gz"
        assert main(["export", str(job.out), "--out", str(archive)]) == 0
        raw = gzip.decompress(archive.read_bytes()).decode()
        assert all(q.text not in raw for q in load_queries(job.queries))
        rebuilt = tmp_path / "rebuilt"
        counts = import_lists(archive, rebuilt)
        assert counts["queries"] == 4 and counts["passages"] == 16
        for name in ("corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "lists.jsonl"):
            assert (rebuilt / name).read_text() == (job.out / name).read_text(), name
        # Lists published from an unfinished job (its last query cut here): the job's own
        # generate command continues the rebuilt folder, and only the missing query is new.
        partial = tmp_path / "partial.jsonl.gz"
        partial.write_bytes(gzip.compress("".join(raw.splitlines(True)[:-1]).encode()))
        rebuilt = tmp_path / "rebuilt-partial"
        assert import_lists(partial, rebuilt)["queries"] == 3
        result = generate(replace(job, out=rebuilt), progress=False)
    assert result.done_before == 3 and result.done_now == 1
    _check_folder(rebuilt, 4)
    with pytest.raises(SynthrankError, match=r'query "q0" is not in'):
        other = tmp_path / "other.jsonl"
        other.write_text(json.dumps({"_id": "x", "text": "another query"}) + "\n")
        import_lists(archive, tmp_path / "again", queries=str(other))
    with pytest.raises(SynthrankError, match="not a synthrank lists file"):
        import_lists(job.out / "lists.jsonl", tmp_path / "bad")
    assert export_lists(rebuilt, tmp_path / "again.jsonl.gz") == 4


def test_published_lists_are_taken_only_for_the_query_text_they_were_written_for(tmp_path, capsys):
    """Export records a digest of each query's text (never the text); import refuses, and
    reuse regenerates, a query whose text is not the one its list was written for."""
    from synthrank.generate.publish import export_lists, import_lists

    with FakeLLMServer() as server:
        first = _job(tmp_path, server.url, out="first", n=4)
        generate(first, progress=False)
        archive = tmp_path / "lists.jsonl.gz"
        export_lists(first.out, archive)
        with gzip.open(archive, "rt") as handle:
            lines = [json.loads(line) for line in handle][1:]
        texts = {q.id: q.text for q in load_queries(first.queries)}
        assert [line["query_digest"] for line in lines] == [
            text_digest(texts[f"q{i}"]) for i in range(4)
        ]
        assert all("query" not in line for line in lines)
        edited = tmp_path / "edited.jsonl"
        edited.write_text(
            "".join(
                json.dumps({"_id": q, "text": t + (" (edited)" if q == "q2" else "")}) + "\n"
                for q, t in texts.items()
            )
        )
        with pytest.raises(SynthrankError) as refused:
            import_lists(archive, tmp_path / "imported", queries=str(edited))
        assert "1 queries' text differs from the text their lists were generated for (q2)" in str(
            refused.value
        )
        assert not (tmp_path / "imported").exists()
        assert import_lists(archive, tmp_path / "same", queries=first.queries)["queries"] == 4
        served = server.served
        job = replace(first, queries=str(edited), out=tmp_path / "reused", reuse=(archive,))
        with pytest.warns(SynthrankWarning, match=r"1 queries' text differs .* \(q2\)"):
            result = generate(job, progress=False)
        assert (result.reused, result.done_now) == (3, 1)
        assert server.served - served == 5  # q2's plan and four levels, for its new text
    (record,) = [r for r in read_journal(job.out) if r.query_id == "q2"]
    assert record.query.endswith("(edited)")
    old_answer = next(x["text"] for x in lines[2]["passages"] if x["grade"] == 3)
    assert next(p.text for p in record.passages if p.grade == 3) != old_answer


def test_a_full_disk_is_one_line_and_the_rerun_finishes(tmp_path, capsys, monkeypatch):
    import errno

    import synthrank.llm.store as store_module

    real_fsync, commits = store_module.os.fsync, []

    def fsync(fd):
        commits.append(fd)
        if len(commits) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    out = tmp_path / "gen"
    with FakeLLMServer() as server:
        command = ["generate", "--queries", str(_queries_file(tmp_path, 6)), "--out", str(out)]
        command += ["--levels", "3,0", "--llm-backend", "openai", "--endpoint", server.url]
        command += ["--model", "fake", "--concurrency", "1", "--quiet"]
        monkeypatch.setattr(store_module.os, "fsync", fsync)
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"synthrank: error: no space left on device writing {out / 'lists.jsonl'}; "
            f"finished queries are kept in {out}: free space (or make it writable) and run the "
            "same command again"
        ]
        monkeypatch.setattr(store_module.os, "fsync", real_fsync)
        assert main(command) == 0
    assert sorted(r.query_id for r in read_journal(out)) == [f"q{i}" for i in range(6)]
    dataset = BeirDataset(out, "gen")
    assert len(dataset.corpus()) == 12 and len(dataset.qrels("train")) == 6
    assert all(sorted(j.values()) == [0, 3] for j in dataset.qrels("train").values())


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_call(
    tmp_path, capsys, monkeypatch
):
    import errno

    from synthrank.fileio import LOCK_FILE

    real_open = Path.open

    def read_only(self, *args, **kwargs):
        if self.name == LOCK_FILE:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", read_only)
    out = tmp_path / "ro" / "gen"
    with FakeLLMServer() as server:
        command = ["generate", "--queries", str(_queries_file(tmp_path, 2)), "--out", str(out)]
        command += ["--llm-backend", "openai", "--endpoint", server.url, "--model", "fake"]
        assert main([*command, "--quiet"]) == 2
        assert server.requests == 0
    err = capsys.readouterr().err
    assert err == f"synthrank: error: cannot write to {out}: Read-only file system\n"


def test_backend_settings_that_cannot_run_are_one_line_errors(tmp_path, capsys):
    queries = _queries_file(tmp_path, 2)
    base = ["generate", "--queries", str(queries), "--out", str(tmp_path / "gen"), "--quiet"]
    base += ["--llm-backend", "openai", "--endpoint", DEAD_ENDPOINT, "--model", "fake"]
    for flag, value, message in (
        ("--concurrency", "0", "concurrency must be >= 1 (got 0)"),
        ("--max-retries", "-1", "max_retries must be >= 0 (got -1)"),
    ):
        assert main([*base, flag, value]) == 2
        assert capsys.readouterr().err == f"synthrank: error: {message}\n"
    config = tmp_path / "exp.toml"
    config.write_text(
        'name = "x"\n[queries]\nsource = "q.jsonl"\n[generate]\ntemperature = -1.0\n'
        '[generate.backend]\nbackend = "openai"\nconcurrency = 0\n'
        '[[train]]\nname = "ws2"\n[evaluate]\ndatasets = ["beir:scifact"]\n'
    )
    assert main(["run", str(config), "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"synthrank: error: {config}, [generate.backend], key 'concurrency': must be >= 1 (got 0)\n"
    )
    config.write_text(config.read_text().replace("concurrency = 0\n", ""))
    assert main(["run", str(config), "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"synthrank: error: {config}, [generate], key 'temperature': must be >= 0 (got -1.0)\n"
    )


def test_resuming_with_edited_query_text_is_refused(tmp_path):
    with FakeLLMServer() as server:
        job = _job(tmp_path, server.url, n=3)
        generate(job, progress=False)
        path = Path(job.queries)
        path.write_text(path.read_text().replace("how does volcano 1 work", "why volcanoes erupt"))
        served = server.served
        with pytest.raises(SynthrankError, match=r"1 queries' text differs .* \(q1\)"):
            generate(job, progress=False)
        assert server.served == served
    assert [r.query for r in read_journal(job.out)][1] == "how does volcano 1 work"
