"""Queries for documents (synthrank generate-queries) without a real LLM: K queries per document
with every call logged, validation, crash repair and resume, backend failures, the consistency
filter on a hand-checked corpus, and the output read as a training source."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer

from synthrank.cli import main
from synthrank.data import Document, read_qrels, write_corpus
from synthrank.errors import SynthrankError
from synthrank.generate import BackendSpec
from synthrank.generate.doc2query import (
    QUERIES_FORMAT,
    DocumentRecord,
    GeneratedQuery,
    QueryGenConfig,
    QueryGenJob,
    accept_query,
    filter_queries,
    generate_queries,
    parse_query,
    read_documents,
    read_queries_file,
    render_prompt,
    select_documents,
)
from synthrank.generate.prompts import stable_hash
from synthrank.report.build import _source_line

DOCS = [
    Document(
        "glacier",
        "Glaciers carve deep valleys as ice moves slowly downhill over thousands of years. "
        "Moraines mark where a glacier once stopped.",
        "Glaciers and valleys",
    ),
    Document(
        "sourdough",
        "A sourdough starter is a culture of wild yeast and lactic bacteria. Feed it flour and "
        "water every day to keep it active.",
        "Keeping a sourdough starter",
    ),
    Document(
        "bees",
        "Honeybees share the location of flowers by dancing. A forager returns to the hive with "
        "nectar, and the colony turns nectar into honey.",
        "How honeybees communicate",
    ),
    Document(
        "beekeeping",
        "Beekeepers harvest honey from the hive in late summer. They leave enough honey in each "
        "hive for the colony to survive the winter.",
        "The beekeeping year",
    ),
    Document(
        "cricket",
        "Cricket is played between two teams of eleven players. The bowler delivers the ball to "
        "the batter, who defends the wicket.",
        "The rules of cricket",
    ),
    Document(
        "tides",
        "Tides rise and fall twice a day because the moon pulls on the oceans. Spring tides occur "
        "when the sun and moon align.",
        "Why the sea has tides",
    ),
]
IDS = [d.id for d in DOCS]
DEAD_ENDPOINT = "http://127.0.0.1:9/v1"


def _corpus(tmp_path: Path, docs: list[Document] = DOCS) -> Path:
    """A BEIR folder holding only a corpus."""
    folder = tmp_path / "source"
    write_corpus(folder / "corpus.jsonl", docs)
    return folder


def _job(tmp_path: Path, url: str, out: str = "d2q", docs=DOCS, **settings) -> QueryGenJob:
    spec = BackendSpec(
        backend="openai",
        model="fake",
        endpoints=(url,),
        timeout_s=2.0,
        max_retries=2,
        retry_backoff_s=0.01,
    )
    config = replace(QueryGenConfig(), **settings)
    return QueryGenJob(str(_corpus(tmp_path, docs)), tmp_path / out, config=config, backend=spec)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _seed(doc_id: str, k: int = 0, attempt: int = 0, seed: int = 0) -> int:
    return stable_hash(seed, doc_id, k, attempt)


def test_k_queries_per_document_with_every_call_logged(tmp_path):
    with FakeLLMServer() as server:
        job = _job(tmp_path, server.url, queries_per_doc=3)
        result = generate_queries(job, progress=False)
    assert result.unfinished == [] and result.done_now == 6 and result.selected == 6
    records = read_documents(job.out)
    assert [r.doc_id for r in records] == IDS
    texts = {d.id: d.full_text().lower() for d in DOCS}
    for record in records:
        assert [q.id for q in record.queries] == [f"{record.doc_id}-q{k}" for k in range(3)]
        assert len({q.text for q in record.queries}) == 3 and record.failures == ()
        # The fake server answers with words of the document it was shown.
        assert all(w in texts[record.doc_id] for q in record.queries for w in q.text.split())
    calls = _lines(job.out / "generation.jsonl")
    assert len(calls) == server.requests == result.counts["calls"]
    for call in calls:
        assert call["kind"] == "query" and call["model"] == "fake" and call["tries"] == 1
        assert call["sampling"]["seed"] == _seed(call["doc_id"], call["index"], call["attempt"])
        assert call["response"] and call["finish_reason"] == "stop"
        assert call["latency_s"] >= 0 and call["completion_tokens"] == 50
        assert call["prompt_tokens"] > 0 and call["endpoint"] == server.url
        system, user = call["messages"]
        assert system["role"] == "system" and user["role"] == "user"
        assert "Write one search query that this document answers" in user["content"]
        doc = DOCS[IDS.index(call["doc_id"])]
        assert user["content"].startswith(f"Document: {doc.title} {doc.text}")
        assert call["accepted"] == (call["reason"] is None) == ("query_id" in call)
    kept = [c["query_id"] for c in calls if c["accepted"]]
    assert sorted(kept) == sorted(q.id for r in records for q in r.queries)
    assert len({c["sampling"]["seed"] for c in calls}) == len(calls)
    # The BEIR view: every query, judged relevant (1) to its source document only.
    queries = _lines(job.out / "queries.jsonl")
    assert sorted(q["_id"] for q in queries) == sorted(kept)
    qrels = read_qrels(job.out / "qrels" / "train.tsv")
    assert qrels == {qid: {qid.rsplit("-q", 1)[0]: 1} for qid in kept}
    meta = json.loads((job.out / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["kind"] == "queries-for-documents"
    assert meta["config"]["queries_per_doc"] == 3 and meta["backend"]["model"] == "fake"
    assert meta["counts"]["queries"] == 18 and meta["counts"]["queries_in_view"] == 18
    assert meta["counts"]["filter"] is None and meta["corpus"]["documents"] == 6


def test_documents_are_drawn_with_the_seed_and_shards_partition_them():
    docs = [Document(str(i), f"text {i}") for i in range(20)]
    assert select_documents(docs, None, 0, None) == docs
    drawn = select_documents(docs, 8, 0, None)
    assert drawn == select_documents(docs, 8, 0, None) and len(set(drawn)) == 8
    assert drawn != docs[:8] and drawn != select_documents(docs, 8, 1, None)
    # A larger limit extends the same draw.
    assert select_documents(docs, 12, 0, None)[:8] == drawn
    shards = [select_documents(docs, 8, 0, (i, 3)) for i in range(3)]
    assert sorted(d.id for shard in shards for d in shard) == sorted(d.id for d in drawn)
    config = QueryGenConfig(doc_words=5, template="{title} | {document} | {style}")
    assert render_prompt(config, DOCS[0]) == (
        "Glaciers and valleys | Glaciers and valleys Glaciers carve | search query"
    )
    with pytest.raises(SynthrankError, match=r"c\.toml: template uses \{query\}"):
        replace(config, template="{document} {query}").validate("c.toml")


def _verdict(reply: str, kept=(), limit: bool = False) -> tuple[str, str | None]:
    config = QueryGenConfig(max_words=12)
    return accept_query(reply, DOCS[0], list(kept), config, stopped_by_limit=limit)


def test_validation_names_each_rejection():
    good = "why do glaciers form moraines"
    assert _verdict(good) == (good, None)
    assert _verdict(f'Here is a search query:\n\n**Query:** "{good}"') == (good, None)
    assert _verdict(f"<think>The document is about ice.</think>\n1. {good}\n2. other") == (
        good,
        None,
    )
    assert parse_query("Relevant query: 2019 glacier retreat\n") == ("2019 glacier retreat", True)
    assert parse_query("Query-based glacier maps") == ("Query-based glacier maps", False)
    assert _verdict("glaciers form moraines why", kept=[good])[1] == "duplicate"
    assert _verdict("how glaciers move " * 5)[1] == "too long"
    assert _verdict("glaciers")[1] == "too short"
    assert _verdict("Glaciers and Valleys")[1] == "copy of the title"
    first = "glaciers carve deep valleys as ice moves slowly downhill over thousands of years"
    assert accept_query(first, DOCS[0], [], QueryGenConfig(), stopped_by_limit=False)[1] == (
        "copy of the first sentence"
    )
    assert _verdict("What is the main topic of this document?")[1] == "meta-text"
    assert _verdict("I'm sorry, I cannot write a query for that.")[1] == "refusal"
    assert _verdict("<think>still thinking about the")[1] == "only reasoning"
    assert _verdict("", limit=True)[1] == "empty at the limit"
    assert _verdict("why do glaciers form", limit=True)[1] == "truncated"
    assert _verdict("why do glaciers form\nExplanation: the", limit=True) == (
        "why do glaciers form",
        None,
    )


def test_scripted_rejections_are_retried_with_new_seeds_then_recorded(tmp_path):
    replies = {
        _seed("glacier", 0, 0): "Query: how do glaciers carve valleys?",
        _seed("glacier", 1, 0): "Glaciers carve valleys how do?",
        _seed("glacier", 1, 1): " ".join(["glacier"] * 41),
        _seed("glacier", 1, 2): "Glaciers and valleys",
    }
    with FakeLLMServer(replies=replies) as server:
        job = _job(tmp_path, server.url, docs=DOCS[:1], queries_per_doc=2)
        result = generate_queries(job, progress=False)
    (record,) = read_documents(job.out)
    assert [(q.id, q.text) for q in record.queries] == [
        ("glacier-q0", "how do glaciers carve valleys?")
    ]
    assert record.failures == ({"index": 1, "reason": "copy of the title"},)
    calls = _lines(job.out / "generation.jsonl")
    assert [(c["index"], c["attempt"], c["reason"]) for c in calls] == [
        (0, 0, None),
        (1, 0, "duplicate"),
        (1, 1, "too long"),
        (1, 2, "copy of the title"),
    ]
    assert result.counts["failed_queries"] == 1 and result.counts["rejected_calls"] == 3
    assert result.counts["rejections"] == {"duplicate": 1, "too long": 1, "copy of the title": 1}


def test_resume_after_a_torn_journal_line_loses_and_duplicates_nothing(tmp_path):
    names = ["documents.jsonl", "generation.jsonl", "queries.jsonl", "qrels/train.tsv"]
    with FakeLLMServer() as server:
        job = _job(tmp_path, server.url, queries_per_doc=2)
        generate_queries(job, progress=False)
        whole = {name: (job.out / name).read_text() for name in names}
        # A crash while the last document was being committed: its calls are written, its
        # journal line half, its queries already in the view; a call record torn too.
        journal = whole["documents.jsonl"].splitlines(keepends=True)
        last = journal[-1]
        (job.out / "documents.jsonl").write_text("".join(journal[:-1]) + last[: len(last) // 2])
        with (job.out / "generation.jsonl").open("a") as calls:
            calls.write('{"doc_id": "tides", "acc')
        before = server.requests
        result = generate_queries(job, progress=False)
        asked = server.requests - before
    assert result.done_before == 5 and result.done_now == 1 and result.unfinished == []
    assert asked == 2  # only the last document's two queries are asked again
    for name in names:
        if name != "generation.jsonl":
            assert (job.out / name).read_text() == whole[name], name

    def timeless(text: str) -> list[dict]:
        return [{**json.loads(x), "latency_s": None} for x in text.splitlines()]

    calls = (job.out / "generation.jsonl").read_text()
    assert timeless(calls) == timeless(whole["generation.jsonl"])
    keys = [(c["doc_id"], c["index"], c["attempt"]) for c in timeless(calls)]
    assert max(Counter(keys).values()) == 1


def test_a_backend_failure_leaves_the_document_for_the_next_run(tmp_path, capsys):
    out = tmp_path / "d2q"
    with FakeLLMServer(["500"]) as server:
        command = ["generate-queries", "--corpus", str(_corpus(tmp_path) / "corpus.jsonl")]
        command += ["--out", str(out), "--llm-backend", "openai", "--endpoint", server.url]
        command += ["--model", "fake", "--concurrency", "1", "--max-retries", "0", "--quiet"]
        assert main(command) == 1
        captured = capsys.readouterr()
        assert "1 documents failed in the backend" in captured.err
        assert "run the same command again to retry them" in captured.err
        assert "5 of 6 documents done" in captured.out
        (failed,) = [c for c in _lines(out / "generation.jsonl") if c.get("abandoned")]
        assert failed["reason"].startswith("backend error: gave up after 1 tries")
        assert "HTTP 500" in failed["reason"]
        assert failed["doc_id"] not in {r.doc_id for r in read_documents(out)}
        assert json.loads((out / "meta.json").read_text())["status"] == "incomplete"
        assert main(command) == 0
    assert [r.doc_id for r in read_documents(out)][-1] == failed["doc_id"]
    calls = _lines(out / "generation.jsonl")
    assert calls.count(failed) == 1 and len(_lines(out / "queries.jsonl")) == 6
    assert json.loads((out / "meta.json").read_text())["status"] == "complete"


def test_resuming_with_other_settings_is_refused_naming_the_key(tmp_path, monkeypatch):
    with FakeLLMServer() as server:
        job = _job(tmp_path, server.url)
        generate_queries(job, progress=False)
        more = replace(job, config=replace(job.config, queries_per_doc=2))
        with pytest.raises(SynthrankError, match="different config_fingerprint"):
            generate_queries(more, progress=False)
        with pytest.raises(SynthrankError, match=r"different docs_limit \(None, now 3\)"):
            generate_queries(replace(job, docs_limit=3), progress=False)
        with pytest.raises(SynthrankError, match="different model"):
            other = replace(job, backend=replace(job.backend, model="other"))
            generate_queries(other, progress=False)
        with pytest.raises(SynthrankError, match="is the folder of the corpus itself"):
            generate_queries(replace(job, out=Path(job.corpus)), progress=False)
    # A finished job loads no engine again: the same command only repairs the folder.
    monkeypatch.setattr("synthrank.generate.doc2query.make_backend", pytest.fail)
    again = generate_queries(job, progress=False)
    assert again.done_before == 6 and again.done_now == 0


# The consistency filter, checked by hand. bm25s drops English stop words and ranks title + text:
# - glacier "glaciers carve deep valleys": every term is in the glacier document only: rank 1.
# - sourdough "why do tides rise and fall" (written about another document): its terms are only in
#   the tides document, so the sourdough document matches nothing: no rank.
# - bees "honey taken out of the hive": "honey" and "hive" are in bees (once each) and beekeeping
#   (twice each) only, whose lengths (16 and 17 terms) are nearly equal, so beekeeping comes
#   first and bees second: rank 2.
# - beekeeping, cricket and tides use terms of their own document only (with "honey", also in
#   bees, once): rank 1.
FILTER_QUERIES = {
    "glacier": "glaciers carve deep valleys",
    "sourdough": "why do tides rise and fall",
    "bees": "honey taken out of the hive",
    "beekeeping": "beekeepers harvest honey in late summer",
    "cricket": "what does the bowler do in cricket",
    "tides": "spring tides and the moon",
}
EXPECTED_RANKS = {
    "glacier": 1,
    "sourdough": None,
    "bees": 2,
    "beekeeping": 1,
    "cricket": 1,
    "tides": 1,
}


def test_consistency_filter_keeps_queries_whose_document_bm25_ranks_in_the_top_k(tmp_path):
    replies = {_seed(doc_id): text for doc_id, text in FILTER_QUERIES.items()}
    with FakeLLMServer(replies=replies) as server:
        job = _job(tmp_path, server.url)
        generate_queries(job, progress=False)
    assert filter_queries(job.out, 1) == {
        "top_k": 1,
        "checked": 6,
        "kept": 4,
        "dropped": 2,
        "unchecked": 0,
    }
    decisions = _lines(job.out / "filter.jsonl")
    # A rank beyond K is not looked for: bees' rank 2 is reported as none at K = 1.
    top_1 = {doc_id: rank if rank == 1 else None for doc_id, rank in EXPECTED_RANKS.items()}
    assert {d["doc_id"]: d["rank"] for d in decisions} == top_1
    assert all(
        d["kept"] == (d["rank"] == 1) and d["query_id"] == f"{d['doc_id']}-q0" for d in decisions
    )
    kept = ["glacier-q0", "beekeeping-q0", "cricket-q0", "tides-q0"]
    assert [q["_id"] for q in _lines(job.out / "queries.jsonl")] == kept
    assert sorted(read_qrels(job.out / "qrels" / "train.tsv")) == sorted(kept)
    counts = json.loads((job.out / "meta.json").read_text())["counts"]
    assert counts["queries"] == 6 and counts["queries_in_view"] == 4
    # Run again with another K: every decision is replaced.
    assert filter_queries(job.out, 2)["kept"] == 5
    decisions = _lines(job.out / "filter.jsonl")
    assert {d["doc_id"]: d["rank"] for d in decisions} == EXPECTED_RANKS
    assert "bees-q0" in {q["_id"] for q in _lines(job.out / "queries.jsonl")}


def test_the_output_is_a_training_source_over_the_linked_corpus(tmp_path, monkeypatch, capsys):
    from synthrank.train.data import SourceSpec, assemble_groups

    source = _corpus(tmp_path) / "corpus.jsonl"
    out = tmp_path / "d2q"
    replies = {_seed(doc_id): text for doc_id, text in FILTER_QUERIES.items()}
    with FakeLLMServer(replies=replies) as server:
        command = ["generate-queries", "--corpus", str(source.parent), "--out", str(out)]
        command += ["--llm-backend", "openai", "--endpoint", server.url, "--model", "fake"]
        command += ["--filter-top-k", "1", "--quiet"]
        assert main(command) == 0
    assert "kept 4 of 6 queries" in capsys.readouterr().out
    # The corpus is referenced, not copied.
    corpus = out / "corpus.jsonl"
    assert corpus.is_symlink() and corpus.resolve() == source.resolve()
    groups, report = assemble_groups([SourceSpec.parse(f"{out},bm25=1:0")], group_size=2)
    assert report.used == 4 and len(groups) == 4
    full = {d.id: d.full_text() for d in DOCS}
    for group in groups:
        assert group.labels == (1, 0)
        assert group.passages[0] == full[group.query_id.removesuffix("-q0")]
        assert group.query == FILTER_QUERIES[group.query_id.removesuffix("-q0")]

    # Where no symlink can be made, the corpus is copied.
    def refuse(*args, **kwargs):
        raise OSError("symlinks are not supported here")

    monkeypatch.setattr(os, "symlink", refuse)
    with FakeLLMServer() as server:
        job = _job(tmp_path, server.url, out="copied")
        generate_queries(job, progress=False)
    copied = job.out / "corpus.jsonl"
    assert not copied.is_symlink() and copied.read_bytes() == source.read_bytes()
    assert json.loads((job.out / "meta.json").read_text())["corpus"]["linked"] is False


def test_published_queries_are_taken_back_without_the_llm(tmp_path, monkeypatch, capsys):
    """`synthrank export` of a generate-queries folder, then `--reuse` of that file in a new
    folder: the same journal and training view with no engine loaded, the reuse on record;
    a partial file leaves the rest to the LLM; a file of other settings is refused."""
    with FakeLLMServer() as server:
        job = _job(tmp_path, server.url, queries_per_doc=2)
        generate_queries(job, progress=False)
        filter_queries(job.out, 3)
    published = tmp_path / "published" / "queries.jsonl.gz"
    assert main(["export", str(job.out), "--out", str(published)]) == 0
    assert "the queries written for 6 documents" in capsys.readouterr().out
    meta, records = read_queries_file(published)
    assert meta["job"] == json.loads((job.out / "meta.json").read_text())["job"]
    assert records == read_documents(job.out)

    monkeypatch.setattr("synthrank.generate.doc2query.make_backend", pytest.fail)
    again = replace(job, out=tmp_path / "again", reuse=(published,))
    result = generate_queries(again, progress=False)
    filter_queries(again.out, 3)
    assert (result.reused, result.done_now, result.unfinished) == (6, 0, [])
    assert read_documents(again.out) == read_documents(job.out)
    for name in ("queries.jsonl", "qrels/train.tsv", "filter.jsonl"):
        assert (again.out / name).read_text() == (job.out / name).read_text(), name
    reused = json.loads((again.out / "meta.json").read_text())
    assert reused["reused"] == {str(published): {"documents": 6, "seconds": meta["seconds_total"]}}
    assert reused["status"] == "complete" and reused["backend"]["model"] == "fake"
    line = _source_line("doc2query", reused)
    assert "0 of 0 calls rejected here; 6 documents' queries reused from " in line
    assert f"{published} (its job ran {meta['seconds_total'] / 60:.1f} min)" in line
    assert not (again.out / "generation.jsonl").exists() or not _lines(
        again.out / "generation.jsonl"
    )
    monkeypatch.undo()

    # Through the command line, twice: the second run takes nothing again and asks nothing.
    command = ["generate-queries", "--corpus", job.corpus, "--out", str(tmp_path / "cli")]
    command += ["--llm-backend", "openai", "--endpoint", DEAD_ENDPOINT, "--model", "fake"]
    command += ["--queries-per-doc", "2", "--reuse", str(published), "--quiet"]
    for printed in ("(0 this run, 6 reused, ", "(0 this run, "):
        assert main(command) == 0
        assert f"6 of 6 documents done {printed}" in capsys.readouterr().out
        on_record = json.loads((tmp_path / "cli" / "meta.json").read_text())
        assert on_record["reused"] == reused["reused"]  # counted once
        assert on_record["seconds_total"] >= on_record["seconds_this_run"] >= 0

    # A file holding two documents: the other four are generated, the two are not asked for.
    partial = tmp_path / "partial.jsonl.gz"
    header = {"format": QUERIES_FORMAT, "meta": meta}
    kept = [r for r in records if r.doc_id in ("glacier", "tides")]
    with gzip.open(partial, "wt") as handle:
        handle.write("\n".join([json.dumps(header)] + [r.to_json() for r in kept]) + "\n")
    with FakeLLMServer() as server:
        spec = replace(job.backend, endpoints=(server.url,))
        mixed = replace(job, out=tmp_path / "mixed", reuse=(partial,), backend=spec)
        result = generate_queries(mixed, progress=False)
        asked = {call["doc_id"] for call in _lines(mixed.out / "generation.jsonl")}
    assert (result.reused, result.done_now) == (2, 4)
    assert asked == set(IDS) - {"glacier", "tides"}
    assert read_documents(mixed.out)[:2] == kept  # taken as they are
    # A rebuild may not ask the LLM: what the files do not hold is refused, nothing generated.
    only = replace(job, out=tmp_path / "only", reuse=(partial,), reuse_only=True)
    with pytest.raises(SynthrankError, match="4 documents' queries are in neither its journal"):
        generate_queries(only, progress=False)

    for key, changed in (
        ("config_fingerprint", replace(job, config=replace(job.config, queries_per_doc=3))),
        ("model", replace(job, backend=replace(job.backend, model="other"))),
    ):
        other = replace(changed, out=tmp_path / f"other-{key}", reuse=(published,))
        with pytest.raises(SynthrankError, match=f"made with a different {key}"):
            generate_queries(other, progress=False)
        assert not other.out.exists()  # refused before anything is written
    lists = tmp_path / "lists.jsonl.gz"
    with gzip.open(lists, "wt") as handle:
        handle.write(json.dumps({"format": "synthrank-lists/1", "meta": {}}) + "\n")
    with pytest.raises(SynthrankError, match="not a synthrank queries file"):
        read_queries_file(lists)
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as handle:
        handle.write(json.dumps(header) + "\n" + json.dumps({"queries": []}) + "\n")
    with pytest.raises(SynthrankError, match=r"bad.jsonl.gz, line 2: not a document record"):
        read_queries_file(bad)
    with gzip.open(bad, "wt") as handle:
        handle.write(json.dumps(header) + "\n\n{oops\n")
    with pytest.raises(SynthrankError, match=r"bad.jsonl.gz, line 3: not JSON"):
        read_queries_file(bad)
    bad.write_bytes(published.read_bytes()[:-40])  # cut short, as by a failed download
    with pytest.raises(
        SynthrankError, match=r"bad.jsonl.gz: not a synthrank queries file \(not a whole gzip file"
    ):
        read_queries_file(bad)
    # Queries of another corpus (a document this one lacks) are refused, naming the document.
    stranger = DocumentRecord("atlantis", (GeneratedQuery("atlantis-q0", 0, "where is it"),))
    with gzip.open(bad, "wt") as handle:
        handle.write(json.dumps(header) + "\n" + stranger.to_json() + "\n")
    other = replace(job, out=tmp_path / "other-corpus", reuse=(bad,))
    with pytest.raises(SynthrankError, match=r"document 'atlantis' is not in .*corpus\.jsonl"):
        generate_queries(other, progress=False)


def test_a_refused_call_settles_its_query_and_the_document_is_committed(tmp_path, capsys):
    out = tmp_path / "d2q"
    with FakeLLMServer(["err200"]) as server:
        command = ["generate-queries", "--corpus", str(_corpus(tmp_path) / "corpus.jsonl")]
        command += ["--out", str(out), "--llm-backend", "openai", "--endpoint", server.url]
        command += ["--model", "fake", "--concurrency", "1", "--max-retries", "3", "--quiet"]
        assert main(command) == 0
        assert server.requests == 6  # the refused call is not asked again
    assert "6 of 6 documents done" in capsys.readouterr().out
    (refused,) = [c for c in _lines(out / "generation.jsonl") if not c["accepted"]]
    assert refused["reason"].startswith("refused: error body (code 400) in an HTTP 200: the")
    record = next(r for r in read_documents(out) if r.doc_id == refused["doc_id"])
    assert record.queries == () and "exceeds the available context" in record.failures[0]["reason"]
    assert json.loads((out / "meta.json").read_text())["status"] == "complete"


def test_published_queries_are_taken_only_for_the_document_text_they_were_written_for(
    tmp_path,
):
    from synthrank.fileio import SynthrankWarning
    from synthrank.generate.doc2query import export_queries

    with FakeLLMServer() as server:
        job = _job(tmp_path, server.url)
        generate_queries(job, progress=False)
        published = tmp_path / "queries.jsonl.gz"
        export_queries(job.out, published)
        _, records = read_queries_file(published)
        assert all(r.doc_digest is not None for r in records)
        # The corpus fixed in place: one document's text is not the one its queries were for.
        edited = [
            replace(d, text=d.text + " Edited since.") if d.id == "glacier" else d for d in DOCS
        ]
        write_corpus(Path(job.corpus) / "corpus.jsonl", edited)
        again = replace(job, out=tmp_path / "again", reuse=(published,))
        with pytest.warns(SynthrankWarning, match=r"1 documents' text differs .* \(glacier\)"):
            result = generate_queries(again, progress=False)
    assert (result.reused, result.done_now) == (5, 1)
    asked = {call["doc_id"] for call in _lines(again.out / "generation.jsonl")}
    assert asked == {"glacier"}


def test_empty_documents_are_skipped_without_a_call_and_counted(tmp_path, capsys):
    """A document with neither title nor text (after stripping) asks for no call and is
    counted; a title-only document is kept; docs_limit and shards select among the others
    exactly as in the same corpus without the empty documents."""
    empty = [Document("d6", "", ""), Document("d7", "   ", "")]
    title_only = Document("moon", "", "Phases of the Moon seen from Earth")
    docs = [DOCS[0], empty[0], *DOCS[1:4], empty[1], title_only, *DOCS[4:]]
    with_text = [d for d in docs if d not in empty]
    source = _corpus(tmp_path, docs)
    out = tmp_path / "d2q"
    with FakeLLMServer() as server:
        command = ["generate-queries", "--corpus", str(source), "--out", str(out)]
        command += ["--queries-per-doc", "1", "--llm-backend", "openai", "--endpoint", server.url]
        assert main([*command, "--model", "fake", "--quiet"]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith("7 of 7 documents done (7 this run, ")
        assert "s); 2 empty documents skipped; 7 queries; 0 queries failed validation" in printed
        calls = _lines(out / "generation.jsonl")
        assert sorted(c["doc_id"] for c in calls) == sorted([*IDS, "moon"])
        moon = next(c for c in calls if c["doc_id"] == "moon")
        assert moon["messages"][1]["content"].startswith(
            "Document: Phases of the Moon seen from Earth\n"
        )
        assert sorted(q["_id"] for q in _lines(out / "queries.jsonl")) == sorted(
            f"{d.id}-q0" for d in with_text
        )
        meta = json.loads((out / "meta.json").read_text())
        assert meta["status"] == "complete" and meta["counts"]["empty_documents_skipped"] == 2
        assert (meta["corpus"]["documents"], meta["counts"]["documents"]) == (9, 7)

        for shard in [None, (0, 2), (1, 2)]:
            runs = {}
            for name, corpus in [("with-empty", docs), ("without", with_text)]:
                job = _job(tmp_path / name / str(shard), server.url, docs=corpus)
                job = replace(job, docs_limit=4, shard=shard)
                generate_queries(job, progress=False)
                runs[name] = [r.doc_id for r in read_documents(job.out)]
            picked = [d.id for d in select_documents(with_text, 4, 0, shard)]
            assert runs["with-empty"] == runs["without"] == picked

    (tmp_path / "hollow").mkdir()
    write_corpus(tmp_path / "hollow" / "corpus.jsonl", empty)
    command = ["generate-queries", "--corpus", str(tmp_path / "hollow"), "--out", str(out) + "2"]
    assert main([*command, "--llm-backend", "openai", "--endpoint", DEAD_ENDPOINT]) == 2
    assert capsys.readouterr().err == (
        f"synthrank: error: {tmp_path / 'hollow' / 'corpus.jsonl'}: all 2 documents have an empty "
        "title and text: no documents to write queries for\n"
    )
