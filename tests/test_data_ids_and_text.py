"""One rule for ids and text in every reader: ids are read without surrounding whitespace (and
each one so read is reported), text must be UTF-8 and valid Unicode (a bad line is a bad record
naming file, line and field, never a traceback nor a silently changed id)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthrank.data import (
    BeirDataset,
    DataError,
    Query,
    iter_corpus,
    iter_queries,
    iter_queries_tsv,
    read_qrels,
)
from synthrank.errors import SynthrankError
from synthrank.fileio import SynthrankWarning, quoted, read_text

DOCS = [
    ("Coffee and blood pressure", "Caffeine in coffee can cause a short rise in blood pressure."),
    ("How vaccines work", "Vaccines train the immune system to recognise a pathogen."),
    ("Eiffel Tower", "The Eiffel Tower in Paris was completed in 1889 for the World's Fair."),
    ("Growing tomatoes", "Tomato plants need full sun, regular watering and support."),
    ("Tea and health", "Green tea contains less caffeine than coffee."),
]


def _users_folder(
    root: Path,
    doc_ids: list[str],
    query_ids: list[str],
    qrels: bytes,
    texts: dict[int, str] | None = None,
) -> Path:
    """The users' cases: five documents, two queries (coffee, vaccines), qrels as given;
    ``texts`` replaces the text of some documents."""
    texts = texts or {}
    docs = [
        json.dumps({"_id": doc_id, "title": title, "text": texts.get(i, text)})
        for i, (doc_id, (title, text)) in enumerate(zip(doc_ids, DOCS, strict=True))
    ]
    _lines(root / "corpus.jsonl", docs)
    questions = ["does coffee raise blood pressure", "how do vaccines work"]
    _lines(
        root / "queries.jsonl",
        [json.dumps({"_id": q, "text": t}) for q, t in zip(query_ids, questions, strict=True)],
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\n" + qrels)
    return root


def _lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _doc(doc_id: str, text: str = "t") -> str:
    return json.dumps({"_id": doc_id, "text": text})


def test_ids_with_whitespace_are_stripped_alike_and_reported_with_file_line_field(
    tmp_path: Path,
) -> None:
    corpus = _lines(tmp_path / "corpus.jsonl", [_doc("d1 "), _doc("d2"), _doc("\td3")])
    _lines(
        tmp_path / "queries.jsonl",
        [json.dumps({"_id": "q1", "text": "a"}), json.dumps({"_id": " q2 ", "text": "b"})],
    )
    qrels = _lines(tmp_path / "qrels" / "test.tsv", ["q1\td1 \t2", "q2\td2\t1", "q2\td3\t1"])
    split = BeirDataset(tmp_path, "toy").load_split("test")
    assert set(split.corpus) == {"d1", "d2", "d3"}
    assert set(split.queries) == {"q1", "q2"}
    assert split.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1, "d3": 1}}
    assert split.warnings == [
        f'{qrels}, line 1, field "corpus-id": "d1 " has trailing whitespace; read as "d1"',
        f'{tmp_path / "queries.jsonl"}, line 2, field "_id": " q2 " has leading and trailing '
        'whitespace; read as "q2"',
        f'{corpus}, line 1, field "_id": "d1 " has trailing whitespace; read as "d1" '
        "(and 1 more ids with surrounding whitespace in this file, read without it: lines 3)",
    ]


def test_many_stripped_ids_make_one_warning_with_the_first_few_and_a_count(
    tmp_path: Path,
) -> None:
    corpus = _lines(tmp_path / "corpus.jsonl", [_doc(f"d{i} ") for i in range(8)])
    warnings: list[str] = []
    assert [d.id for d in iter_corpus(corpus, warnings=warnings)] == [f"d{i}" for i in range(8)]
    assert warnings == [
        f'{corpus}, line 1, field "_id": "d0 " has trailing whitespace; read as "d0" '
        "(and 7 more ids with surrounding whitespace in this file, read without it: "
        "lines 2, 3, 4, 5, ...)"
    ]


def test_without_a_list_stripped_ids_are_python_warnings(tmp_path: Path) -> None:
    """Callers that collect no warnings (generate reading a queries file) still show them."""
    path = _lines(tmp_path / "queries.jsonl", [json.dumps({"_id": "q1\t", "text": "a"})])
    with pytest.warns(SynthrankWarning) as caught:
        assert list(iter_queries(path)) == [Query("q1", "a")]
    assert [str(w.message) for w in caught] == [
        f'{path}, line 1, field "_id": "q1\\t" has trailing whitespace; read as "q1"'
    ]


def test_ids_that_strip_to_one_id_are_duplicates(tmp_path: Path) -> None:
    corpus = _lines(tmp_path / "corpus.jsonl", [_doc("d1"), _doc("d1 ")])
    with pytest.raises(DataError) as caught:
        list(iter_corpus(corpus))
    assert str(caught.value) == (
        f'{corpus}, line 2, field "_id": duplicate id "d1 " read as "d1" (first on line 1)'
    )
    qrels = _lines(tmp_path / "test.tsv", ["q1\td1\t1", " q1\td1 \t2"])
    with pytest.raises(DataError) as caught:
        read_qrels(qrels)
    assert str(caught.value) == (
        f'{qrels}, line 2, field "corpus-id": judged twice (first on line 1)'
    )


def test_case_both_files_spell_the_id_with_a_space_and_it_matches(tmp_path: Path) -> None:
    from synthrank.evaluate import evaluate

    root = _users_folder(
        tmp_path / "02b-space-both",
        ["d1 ", "d2", "d3", "d4", "d5"],
        ["q1", "q2"],
        b"q1\td1 \t2\nq1\td5\t1\nq2\td2\t2\n",
    )
    result = evaluate("minilm", root, cache_dir=None, progress=False)
    assert result.n_queries == 2
    assert result.metrics["nDCG@10"] == pytest.approx(1.0)
    assert result.warnings == [
        f'{root}/qrels/test.tsv, line 2, field "corpus-id": "d1 " has trailing whitespace; '
        'read as "d1"',
        f'{root}/corpus.jsonl, line 1, field "_id": "d1 " has trailing whitespace; read as "d1"',
    ]


def test_case_spaced_ids_in_the_jsonl_files_evaluate_every_query(tmp_path: Path) -> None:
    from synthrank.evaluate import evaluate

    root = _users_folder(
        tmp_path / "02-space-ids",
        ["d1 ", "d2", "d3", "d4", "d5"],
        ["q1", " q2"],
        b"q1\td1\t2\nq1\td5\t1\nq2\td2\t2\n",
    )
    result = evaluate("minilm", root, cache_dir=None, progress=False)
    assert sorted(result.per_query) == ["q1", "q2"]
    assert result.metrics["nDCG@10"] == pytest.approx(1.0)
    assert result.warnings == [
        f'{root}/queries.jsonl, line 2, field "_id": " q2" has leading whitespace; read as "q2"',
        f'{root}/corpus.jsonl, line 1, field "_id": "d1 " has trailing whitespace; read as "d1"',
    ]


def test_queries_tsv_reads_ids_as_the_other_readers_do(tmp_path: Path) -> None:
    good = _lines(tmp_path / "good.tsv", ["id\ttext", "q1 \t what is x? ", "q2\tsecond"])
    warnings: list[str] = []
    assert list(iter_queries_tsv(good, warnings=warnings)) == [
        Query("q1", "what is x?"),
        Query("q2", "second"),
    ]
    assert warnings == [f'{good}, line 2, field "id": "q1 " has trailing whitespace; read as "q1"']
    bad = _lines(tmp_path / "bad.tsv", ["q1\tfirst", "q1 \tagain", "q3\t", "q4"])
    with pytest.raises(DataError) as caught:
        list(iter_queries_tsv(bad, warnings=warnings))
    assert [(p.line, p.field, p.message) for p in caught.value.problems] == [
        (2, "id", 'duplicate id "q1 " read as "q1" (first on line 1)'),
        (3, "text", "empty query text"),
        (4, None, "expected two tab-separated columns: id, query text"),
    ]


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"_id": "d4", "text": "as they grow \ud83c."}, "text"),
        ({"_id": "d4", "title": "\udf31 tomatoes", "text": "fine"}, "title"),
        ({"_id": "d\ud83c", "text": "fine"}, "_id"),
    ],
)
def test_a_lone_surrogate_is_a_bad_record(tmp_path: Path, record: dict, field: str) -> None:
    path = tmp_path / "corpus.jsonl"
    # json.dumps escapes the surrogate as the user's file has it: "\ud83c" in ASCII.
    path.write_text(_doc("d1") + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        list(iter_corpus(path))
    code = next(c for c in "".join(record.values()) if "\ud800" <= c <= "\udfff")
    assert str(caught.value) == (
        f'{path}, line 2, field "{field}": lone surrogate \\u{ord(code):04x} (not valid Unicode)'
    )


def test_a_surrogate_pair_is_one_character_and_reads(tmp_path: Path) -> None:
    path = _lines(tmp_path / "queries.jsonl", ['{"_id": "q1", "text": "grow \\ud83c\\udf31"}'])
    assert list(iter_queries(path)) == [Query("q1", "grow \U0001f331")]


def test_case_lone_surrogate_in_the_corpus_is_one_line_error(tmp_path: Path) -> None:
    from synthrank.evaluate import evaluate

    root = _users_folder(
        tmp_path / "01-surrogate",
        ["d1", "d2", "d3", "d4", "d5"],
        ["q1", "q2"],
        b"q1\td1\t2\nq1\td5\t1\nq2\td2\t2\n",
        texts={3: "Tomato plants need full sun, regular watering and support as they grow \ud83c."},
    )
    assert "\\ud83c" in (root / "corpus.jsonl").read_text(), "escaped in the file, as the user's"
    with pytest.raises(SynthrankError) as caught:
        evaluate("minilm", root, cache_dir=None, progress=False)
    assert str(caught.value) == (
        f'{root}/corpus.jsonl, line 4, field "text": lone surrogate \\ud83c (not valid Unicode)'
    )


def test_lone_surrogate_in_queries(tmp_path: Path) -> None:
    path = _lines(tmp_path / "queries.jsonl", ['{"_id": "q1", "text": "tweet \\ud83c"}'])
    with pytest.raises(DataError, match=r'line 1, field "text": lone surrogate \\ud83c \(not'):
        list(iter_queries(path))


def test_case_qrels_in_cp1252_is_refused_at_its_line(tmp_path: Path) -> None:
    """Excel saved the qrels in Windows-1252: "café-1" is b"caf\\xe9-1"; read with replacement
    characters it matched no document, and two different ids became one."""
    root = _users_folder(
        tmp_path / "04-cp1252",
        ["caf\u00e9-1", "d2", "d3", "d4", "d5"],
        ["q1", "q2"],
        b"q1\tcaf\xe9-1\t2\nq1\td5\t1\nq2\td2\t2\n",
    )
    with pytest.raises(DataError) as caught:
        BeirDataset(root, "04-cp1252").load_split("test")
    assert str(caught.value) == (
        f"{root}/qrels/test.tsv, line 2: not UTF-8 text (invalid continuation byte at byte 6)"
    )
    dev = root / "qrels" / "dev.tsv"
    dev.write_bytes(b"query-id\tcorpus-id\tscore\nq1\tcaf\xe9-1\t2\nq1\tcaf\xe8-1\t1\n")
    with pytest.raises(DataError) as caught:
        read_qrels(dev)
    assert [p.line for p in caught.value.problems] == [2, 3]
    assert "judged twice" not in str(caught.value)


def test_every_line_reader_names_the_non_utf8_line_and_byte(tmp_path: Path) -> None:
    cp1252 = "caf\u00e9-1".encode("cp1252")
    tsv = tmp_path / "q.tsv"
    tsv.write_bytes(b"q1\tfine\nq2\t" + cp1252 + b"\n")
    with pytest.raises(DataError) as caught:
        list(iter_queries_tsv(tsv))
    assert (
        str(caught.value) == f"{tsv}, line 2: not UTF-8 text (invalid continuation byte at byte 6)"
    )
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"_id": "' + cp1252 + b'", "text": "t"}\n')
    with pytest.raises(DataError) as caught:
        list(iter_corpus(jsonl))
    # Bytes are counted in the line as it is on disk, byte-order mark included.
    assert str(caught.value) == (
        f"{jsonl}, line 1: not UTF-8 text (invalid continuation byte at byte 15)"
    )


def test_whole_file_reads_name_the_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_bytes(b'loss = "w1"\nname = "caf\xe9"\n')
    with pytest.raises(SynthrankError) as caught:
        read_text(path)
    assert (
        str(caught.value)
        == f"{path}, line 2: not UTF-8 text (invalid continuation byte at byte 11)"
    )
    path.write_bytes(b'\xef\xbb\xbfname = "caf\xe9"\n')
    with pytest.raises(SynthrankError, match=r"line 1: .* at byte 14\)"):
        read_text(path)


def test_quoted_shows_whitespace_and_invisible_characters() -> None:
    assert quoted("d1 ") == '"d1 "'
    assert quoted("\td1\u00a0") == '"\\td1\\xa0"'
    assert quoted('a"b\\c') == '"a\\"b\\\\c"'
    assert quoted("café") == '"café"'
