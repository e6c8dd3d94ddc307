from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthrank.data import (
    BeirDataset,
    DataError,
    Document,
    Query,
    iter_corpus,
    iter_queries,
    read_qrels,
    write_corpus,
    write_qrels,
    write_queries,
)
from synthrank.errors import SynthrankError


def test_real_scifact_counts(scifact: BeirDataset) -> None:
    corpus = scifact.corpus()
    assert len(corpus) == 5183
    assert len(scifact.queries()) == 1109
    test, train = scifact.qrels("test"), scifact.qrels("train")
    assert (len(test), sum(map(len, test.values()))) == (300, 339)
    assert (len(train), sum(map(len, train.values()))) == (809, 919)
    assert scifact.splits() == ["test", "train"]
    doc = corpus["4983"]
    assert doc.title.startswith("Microstructural development of human newborn")
    assert doc.full_text() == f"{doc.title} {doc.text}"


def test_load_split_keeps_judged_queries_only(scifact: BeirDataset) -> None:
    split = scifact.load_split("test")
    assert len(split.queries) == 300
    assert set(split.queries) == set(split.qrels)
    assert split.warnings == []


def test_round_trip(tmp_path: Path) -> None:
    docs = [Document("d1", "first text", "A title"), Document("d2", "second — ünïcode")]
    queries = [Query("q1", "what is first?")]
    assert write_corpus(tmp_path / "corpus.jsonl", docs) == 2
    assert write_queries(tmp_path / "queries.jsonl", queries) == 1
    assert write_qrels(tmp_path / "qrels" / "dev.tsv", {"q1": {"d1": 3, "d2": 0}}) == 2
    assert list(iter_corpus(tmp_path / "corpus.jsonl")) == docs
    assert list(iter_queries(tmp_path / "queries.jsonl")) == queries
    assert read_qrels(tmp_path / "qrels" / "dev.tsv") == {"q1": {"d1": 3, "d2": 0}}
    assert (tmp_path / "qrels" / "dev.tsv").read_text().splitlines()[0] == (
        "query-id\tcorpus-id\tscore"
    )


def test_append_keeps_earlier_records(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    write_corpus(path, [Document("a", "x")])
    write_corpus(path, [Document("b", "y")], append=True)
    assert [d.id for d in iter_corpus(path)] == ["a", "b"]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "field", "fragment"),
    [
        ('{"_id": "x", "text": ', None, "malformed JSON"),
        ('{"text": "no id"}', "_id", "missing"),
        ('{"_id": "", "text": "empty id"}', "_id", "empty"),
        ('{"_id": ["x"], "text": "t"}', "_id", "expected a string"),
        ('{"_id": "x"}', "text", "missing"),
        ('{"_id": "x", "text": 5}', "text", "expected a string, got int"),
        ('{"_id": "x", "text": "t", "title": null, "extra": 1}', None, None),
        ('["not", "an", "object"]', None, "expected a JSON object"),
    ],
)
def test_corpus_errors_name_file_line_field(
    tmp_path: Path, line: str, field: str | None, fragment: str | None
) -> None:
    path = _write_lines(tmp_path / "corpus.jsonl", ['{"_id": "ok", "text": "fine"}', line])
    if fragment is None:
        assert [d.id for d in iter_corpus(path)] == ["ok", "x"]
        return
    with pytest.raises(DataError) as caught:
        list(iter_corpus(path))
    problem = caught.value.problems[0]
    assert (problem.path, problem.line, problem.field) == (path, 2, field)
    message = str(caught.value)
    assert f"{path}, line 2" in message and fragment in message
    if field is not None:
        assert f'field "{field}"' in message
    assert "\n" not in message


def test_every_problem_is_counted_and_reported_once(tmp_path: Path) -> None:
    lines = ['{"_id": "a", "text": "t"}'] + ['{"_id": "a", "text": "dup"}'] * 7 + ["{bad"]
    path = _write_lines(tmp_path / "corpus.jsonl", lines)
    with pytest.raises(DataError) as caught:
        list(iter_corpus(path))
    error = caught.value
    assert error.total == 8
    assert [p.line for p in error.problems] == [2, 3, 4, 5, 6]
    assert 'duplicate id "a" (first on line 1)' in str(error)
    assert "and 7 more bad records" in str(error)


def test_empty_query_text_is_an_error(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "queries.jsonl", ['{"_id": "q", "text": "  "}'])
    with pytest.raises(DataError, match=r'line 1, field "text": empty query text'):
        list(iter_queries(path))


def test_numeric_ids_become_strings(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "queries.jsonl", ['{"_id": 7, "text": "seven"}'])
    assert list(iter_queries(path)) == [Query("7", "seven")]


def test_qrels_formats_and_errors(tmp_path: Path) -> None:
    beir = _write_lines(
        tmp_path / "a.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t2", "q1\td2\t0"]
    )
    assert read_qrels(beir) == {"q1": {"d1": 2, "d2": 0}}
    trec = _write_lines(tmp_path / "b.txt", ["q1 0 d1 3", "q2 0 d9 1"])
    assert read_qrels(trec) == {"q1": {"d1": 3}, "q2": {"d9": 1}}
    bad = _write_lines(tmp_path / "c.tsv", ["q1\td1\thigh", "q1\td1", "q1\td2\t1", "q1\td2\t2"])
    with pytest.raises(DataError) as caught:
        read_qrels(bad)
    problems = caught.value.problems
    assert [(p.line, p.field) for p in problems] == [(1, "score"), (2, None), (4, "corpus-id")]
    assert "judged twice (first on line 3)" in problems[2].message


BOM = "\ufeff"


def test_byte_order_mark_is_dropped_by_every_reader(tmp_path: Path) -> None:
    """Windows editors start UTF-8 files with a byte-order mark; kept, it would become part of
    the first id (the judgment of query "\ufeffq1" matches no query and is dropped)."""
    from synthrank.config import read_toml
    from synthrank.evaluate import load_metrics

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(BOM + text, encoding="utf-8")
        return path

    joined = '{"_id": "d1", "text": "a"}\n' + BOM + '{"_id": "d2", "text": "b"}\n'
    corpus = write("corpus.jsonl", joined)
    assert [d.id for d in iter_corpus(corpus)] == ["d1", "d2"], "also where files were joined"
    queries = write("queries.jsonl", '{"_id": "q1", "text": "coffee"}\n')
    assert list(iter_queries(queries)) == [Query("q1", "coffee")]
    no_header = write("qrels.tsv", "q1\td1\t2\nq1\td5\t1\nq2\td2\t2\n")
    assert read_qrels(no_header) == {"q1": {"d1": 2, "d5": 1}, "q2": {"d2": 2}}
    header = write("header.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t2\n")
    assert read_qrels(header) == {"q1": {"d1": 2}}
    assert read_toml(write("config.toml", 'loss = "w1"\n')) == {"loss": "w1"}
    metrics = {"model": "m", "dataset": "d", "split": "test", "metrics": {}, "per_query": {}}
    assert load_metrics(write("metrics.json", json.dumps(metrics)))["model"] == "m"


def test_missing_file_and_split(tmp_path: Path, scifact: BeirDataset) -> None:
    with pytest.raises(SynthrankError, match="file not found"):
        list(iter_corpus(tmp_path / "nope.jsonl"))
    with pytest.raises(SynthrankError, match=r'no split "dev".*available splits: test, train'):
        scifact.qrels("dev")


def test_unknown_ids_in_qrels_are_reported_with_counts(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus.jsonl", [Document("d1", "x"), Document("d2", "y")])
    write_queries(tmp_path / "queries.jsonl", [Query("q1", "a"), Query("q2", "b")])
    write_qrels(
        tmp_path / "qrels" / "test.tsv",
        {"q1": {"d1": 1, "ghost-doc": 1}, "q2": {"d2": 1}, "ghost-q": {"d1": 1, "d2": 1}},
    )
    split = BeirDataset(tmp_path, "toy").load_split("test")
    assert set(split.queries) == {"q1", "q2"}
    assert "ghost-q" not in split.qrels
    assert split.qrels["q1"] == {"d1": 1, "ghost-doc": 1}
    assert len(split.warnings) == 2
    assert (
        '2 judgments name 1 query ids missing from queries.jsonl (e.g. "ghost-q")'
        in (split.warnings[0])
    )
    assert (
        '1 judgments name 1 document ids missing from corpus.jsonl (e.g. "ghost-doc")'
        in (split.warnings[1])
    )


def test_written_records_are_json_lines(tmp_path: Path) -> None:
    write_corpus(tmp_path / "c.jsonl", [Document("d", "t", "T")])
    assert json.loads((tmp_path / "c.jsonl").read_text()) == {"_id": "d", "title": "T", "text": "t"}


def test_holdout_split_is_disjoint_deterministic_and_keeps_the_profile(tmp_path):
    from synthrank.data.derive import dataset_source, holdout_ids, split_holdout
    from synthrank.evaluate.runner import profile_for

    root = tmp_path / "arguana"
    docs = [Document(f"d{i}", f"text {i}") for i in range(6)]
    write_corpus(root / "corpus.jsonl", docs)
    write_queries(root / "queries.jsonl", [Query(f"q{i}", f"query {i}") for i in range(5)])
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(5)}
    write_qrels(root / "qrels" / "test.tsv", qrels)
    source = BeirDataset(root, "beir:arguana")
    counts = split_holdout(source, "test", 2, tmp_path / "a", seed=3)
    split_holdout(source, "test", 2, tmp_path / "b", seed=3)
    derived = BeirDataset(tmp_path / "a", str(tmp_path / "a"))
    dev, rest = derived.qrels("dev"), derived.qrels("test")
    assert counts == {"test": 3, "dev": 2} and set(dev) | set(rest) == set(qrels)
    assert not set(dev) & set(rest) and {**dev, **rest} == qrels
    assert dev == BeirDataset(tmp_path / "b", "b").qrels("dev")
    assert set(dev) == holdout_ids(list(qrels), 2, seed=3)
    # Scored as its source: ArguAna's own-id rule holds for the derived folder.
    assert dataset_source(derived) == "beir:arguana"
    assert profile_for(derived).ignore_identical_ids
    assert profile_for(BeirDataset(tmp_path / "b", "any-folder-name")).ignore_identical_ids
    with pytest.raises(SynthrankError, match="cannot hold out 5 of 5"):
        split_holdout(source, "test", 5, tmp_path / "c")
