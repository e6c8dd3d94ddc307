"""QueryFile: the queries of a file read back from disk give exactly what the streaming readers
give, with their errors and warnings; a generate job reads its queries through it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from synthrank.data import DataError, Query, iter_queries, iter_queries_tsv
from synthrank.data.query_file import QueryFile
from synthrank.errors import SynthrankError
from synthrank.llm.jobs import load_queries, select_queries

DATA = Path(os.environ.get("SYNTHRANK_DATA", ""))

LINES = [
    {"_id": "q1", "text": "what is insulin"},
    {"_id": " q2", "text": "héllo wörld, a query with non-ASCII text"},
    {"_id": "q3", "text": "a third \\t one"},
    {"_id": "q4", "text": "fourth"},
    {"_id": "q5", "text": "fifth 🙂"},
]


def write_jsonl(path: Path, records: list[dict], *, crlf: bool = False) -> Path:
    ending = "\r\n" if crlf else "\n"
    path.write_bytes(
        "\ufeff".encode() + ending.join(json.dumps(r, ensure_ascii=False) for r in records).encode()
        + ending.encode() + b"\n"  # a blank line at the end
    )  # fmt: skip
    return path


@pytest.mark.parametrize("crlf", [False, True])
def test_a_jsonl_file_reads_as_iter_queries_reads_it(tmp_path: Path, crlf: bool) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", LINES, crlf=crlf)
    expected_warnings: list[str] = []
    expected = list(iter_queries(path, warnings=expected_warnings))
    warnings: list[str] = []
    queries = QueryFile(path, warnings=warnings)
    assert list(queries) == expected and len(queries) == 5
    assert warnings == expected_warnings and "has leading whitespace" in warnings[0]
    assert queries[1] == Query("q2", LINES[1]["text"]) and queries[-1].text == "fifth 🙂"
    with pytest.raises(IndexError):
        queries[5]


def test_a_tsv_file_with_a_header_reads_as_iter_queries_tsv(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("id\ttext\nq1\t what is insulin \n\nq2\tsecond\n", encoding="utf-8")
    assert list(QueryFile(path)) == list(iter_queries_tsv(path))
    assert [q.id for q in QueryFile(path)] == ["q1", "q2"]


def test_slices_are_query_files_as_select_queries_cuts_them(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", LINES)
    queries = QueryFile(path, warnings=[])
    as_list = list(queries)
    for limit, shard in [(None, None), (4, None), (4, (1, 3)), (None, (0, 2)), (2, (1, 2))]:
        cut = select_queries(queries, limit, shard)
        assert isinstance(cut, QueryFile)
        assert list(cut) == select_queries(as_list, limit, shard), (limit, shard)


def test_keep_takes_the_queries_a_split_judges_in_file_order(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", LINES)
    assert [q.id for q in QueryFile(path, keep={"q5", "q2", "other"}, warnings=[])] == ["q2", "q5"]


@pytest.mark.parametrize(
    "lines",
    [
        [*LINES, {"_id": "q3", "text": "again"}],  # a repeated id, found from the hashes
        [*LINES[:2], "not json", {"_id": "q3", "text": "again"}],  # two problems, in order
        [{"_id": "q1", "text": ""}, *LINES[1:]],
    ],
)
def test_bad_files_raise_the_streaming_readers_error(tmp_path: Path, lines: list) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError) as expected:
        list(iter_queries(path))
    with pytest.raises(DataError) as caught:
        QueryFile(path)
    assert str(caught.value) == str(expected.value)


def test_a_line_that_is_not_utf8_is_the_readers_error(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"_id": "q1", "text": "fine"}\n{"_id": "q2", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"line 2: not UTF-8 text"):
        QueryFile(path)


def test_a_file_edited_under_a_job_is_one_line_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", LINES)
    queries = QueryFile(path, warnings=[])
    with path.open("r+b") as handle:  # in place, as an editor saving over it might
        handle.write(b"x" * 40)
    with pytest.raises(SynthrankError, match=r"line at byte 0 no longer holds a query"):
        queries[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SynthrankError, match=r"file not found"):
        QueryFile(tmp_path / "none.jsonl")


@pytest.mark.skipif(not (DATA / "beir" / "scifact").is_dir(), reason="needs SciFact")
def test_a_beir_split_reads_its_judged_queries_as_before() -> None:
    from synthrank.data import resolve_dataset

    dataset = resolve_dataset(str(DATA / "beir" / "scifact"))
    judged = dataset.qrels("train")
    expected = [q for q in dataset.queries().values() if q.id in judged]
    loaded = load_queries(str(DATA / "beir" / "scifact"), "train")
    assert isinstance(loaded, QueryFile) and list(loaded) == expected and len(expected) == 809
    assert list(load_queries(str(DATA / "beir" / "scifact"))) == list(dataset.queries().values())
