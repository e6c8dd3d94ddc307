"""LLM-graded real lists (synthrank grade) against a fake judge: BM25 top-N per query, every
decision journaled, the BEIR view, agreement with the dataset's labels, resume and refusals."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from synthrank.data import Document, Query, read_qrels, write_corpus, write_qrels, write_queries
from synthrank.errors import SynthrankError
from synthrank.generate.graded import GradeJob, grade_real_lists, read_grades
from synthrank.llm.backends import Completion

DOCS = {
    "d-ice": "Glaciers carve valleys as glacier ice moves downhill; moraines mark glacier fronts.",
    "d-ice2": "Sea ice and glacier ice differ: glacier ice forms from compacted snow on land.",
    "d-bread": "Sourdough bread rises because wild yeast and bacteria ferment the flour.",
    "d-yeast": "Baker's yeast ferments sugars in bread dough and releases carbon dioxide.",
    "d-moon": "The Moon's phases follow its orbit: sunlight falls on the half facing the Sun.",
    "d-tide": "Tides rise and fall as the Moon's gravity pulls on the oceans.",
    "d-violin": "A violin has four strings tuned in fifths and is played with a bow.",
    "d-harbor": "The harbor was dredged so that larger ships could dock at the market quay.",
}
QUERIES = {
    "q1": "how do glacier valleys form",
    "q2": "why does bread dough rise with yeast",
    "q3": "what causes the moon phases and tides",
}
LABELS = {"q1": {"d-ice": 1}, "q2": {"d-yeast": 1}, "q3": {"d-moon": 1, "d-tide": 1}}
WORD = re.compile(r"[a-z]{4,}")


class FakeJudge:
    """Grades a passage by the query's words of 4+ letters it contains (3 or more -> 3), as an
    LLM would answer: one digit, or text without one for the passage on the Moon's phases."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.prompts: list[str] = []
        self.fail_after = fail_after

    @staticmethod
    def grade(query: str, passage: str) -> int | None:
        if "phases" in passage:
            return None
        return min(3, len(set(WORD.findall(query.lower())) & set(WORD.findall(passage.lower()))))

    def complete(self, requests):
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt
        out = []
        for request in requests:
            prompt = request.messages[0][1]
            self.prompts.append(prompt)
            query = prompt.split("Search query: ")[1].split("\n")[0]
            passage = prompt.split("Passage: ")[1].split("\n\nHow relevant")[0]
            grade = self.grade(query, passage)
            out.append(Completion("I cannot tell" if grade is None else f"{grade}", "stop"))
        return out

    def describe(self):
        return {"backend": "fake", "model": "fake-judge"}

    def close(self) -> None:
        pass


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    write_corpus(root / "corpus.jsonl", [Document(i, t) for i, t in DOCS.items()])
    write_queries(root / "queries.jsonl", [Query(i, t) for i, t in QUERIES.items()])
    write_qrels(root / "qrels" / "train.tsv", LABELS)
    return root


def _bm25_top(query: str, n: int) -> list[str]:
    """bm25s over the toy corpus (English stop words), called directly: the passages of the
    query's top ``n`` that share a term with it (score > 0), to check what the journal records."""
    import bm25s

    ids = list(DOCS)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(DOCS.values()), stopwords="en", show_progress=False))
    hits, scores = retriever.retrieve(
        bm25s.tokenize([query], stopwords="en", show_progress=False), k=n, show_progress=False
    )
    return [ids[i] for i, score in zip(hits[0], scores[0], strict=True) if score > 0]


def test_each_querys_bm25_top_n_is_graded_and_journaled(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "graded"
    judge = FakeJudge()
    meta = grade_real_lists(GradeJob(str(dataset), out, top_n=3), judge, progress=False)
    judgments = read_grades(out)
    expected_total = sum(len(_bm25_top(text, 3)) for text in QUERIES.values())
    assert len(judgments) == len(judge.prompts) == expected_total >= 6
    for query_id, text in QUERIES.items():
        mine = [j for j in judgments if j["query_id"] == query_id]
        assert [j["doc_id"] for j in mine] == _bm25_top(text, 3)
        assert [j["bm25_rank"] for j in mine] == list(range(1, len(mine) + 1))
        for j in mine:
            assert j["grade"] == FakeJudge.grade(text, DOCS[j["doc_id"]])
            assert j["label"] == LABELS[query_id].get(j["doc_id"])
    # The hand-checked top passage of each query and its grade.
    assert (judgments[0]["doc_id"], judgments[0]["grade"]) == ("d-ice", 2)  # glacier, valleys
    qrels = read_qrels(out / "qrels" / "train.tsv")
    expected = {}
    for j in judgments:
        if j["grade"] is not None:
            expected.setdefault(j["query_id"], {})[j["doc_id"]] = j["grade"]
    assert qrels == expected
    assert (out / "corpus.jsonl").is_symlink()
    graded = [j for j in judgments if j["grade"] is not None]
    positives = [j for j in graded if j["label"]]
    others = [j for j in graded if not j["label"]]
    agreement = meta["agreement_with_labels"]
    assert agreement["positives_graded_2_or_3"]["n"] == len(positives)
    assert agreement["positives_graded_2_or_3"]["agree"] == sum(j["grade"] >= 2 for j in positives)
    assert agreement["others_graded_0_or_1"]["agree"] == sum(j["grade"] <= 1 for j in others)
    assert meta["counts"]["passages"] == expected_total and meta["status"] == "complete"


def test_a_reply_without_a_grade_is_logged_and_left_out_of_the_qrels(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "graded"
    meta = grade_real_lists(GradeJob(str(dataset), out, top_n=8), FakeJudge(), progress=False)
    (moon,) = [j for j in read_grades(out) if j["doc_id"] == "d-moon"]
    assert moon["query_id"] == "q3" and moon["label"] == 1
    assert moon["grade"] is None and moon["reply"] == "I cannot tell"
    assert "d-moon" not in read_qrels(out / "qrels" / "train.tsv")["q3"]
    assert meta["counts"]["no_grade"] == sum(j["grade"] is None for j in read_grades(out)) >= 1


def test_an_interrupted_job_resumes_without_regrading(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "graded"
    job = GradeJob(str(dataset), out, top_n=3, window=1)
    sizes = {q: len(_bm25_top(text, 3)) for q, text in QUERIES.items()}
    with pytest.raises(KeyboardInterrupt):  # after q1's window, in q2's
        grade_real_lists(job, FakeJudge(fail_after=sizes["q1"]), progress=False)
    assert {j["query_id"] for j in read_grades(out)} == {"q1"}
    with (out / "grades.jsonl").open("a") as handle:
        handle.write('{"query_id": "q2", "doc_')  # a torn line, as a crash leaves it
    judge = FakeJudge()
    grade_real_lists(job, judge, progress=False)
    assert len(judge.prompts) == sizes["q2"] + sizes["q3"]  # q2 and q3 only
    judgments = read_grades(out)
    assert [j["query_id"] for j in judgments] == [q for q in QUERIES for _ in range(sizes[q])]
    fresh = tmp_path / "fresh"
    grade_real_lists(GradeJob(str(dataset), fresh, top_n=3), FakeJudge(), progress=False)
    assert read_qrels(out / "qrels" / "train.tsv") == read_qrels(fresh / "qrels" / "train.tsv")


def test_continuing_with_other_settings_is_refused(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "graded"
    grade_real_lists(GradeJob(str(dataset), out, top_n=3), FakeJudge(), progress=False)
    with pytest.raises(SynthrankError, match=r"other settings \(top_n\)"):
        grade_real_lists(GradeJob(str(dataset), out, top_n=2), FakeJudge(), progress=False)


def test_graded_lists_are_a_training_source(dataset: Path, tmp_path: Path) -> None:
    from synthrank.train.data import SourceSpec, read_lists

    out = tmp_path / "graded"
    grade_real_lists(GradeJob(str(dataset), out, top_n=4), FakeJudge(), progress=False)
    pool = read_lists([SourceSpec.parse(str(out))], random.Random(0))
    judgments = [j for j in read_grades(out) if j["grade"] is not None]
    for (query_id, text), entries in pool.items():
        assert text == QUERIES[query_id]
        expected = sorted(
            (DOCS[j["doc_id"]], j["grade"]) for j in judgments if j["query_id"] == query_id
        )
        assert sorted(entries) == expected
    assert json.loads((out / "meta.json").read_text())["job"]["top_n"] == 4


def test_the_grade_command_over_an_openai_compatible_server(dataset, tmp_path, capsys) -> None:
    from fake_llm_server import FakeLLMServer, overlap_grade

    from synthrank.cli import main

    out = tmp_path / "graded"
    with FakeLLMServer(grade="overlap") as server:
        argv = ["grade", str(dataset), "--out", str(out), "--top-n", "2", "--quiet"]
        argv += ["--llm-backend", "openai", "--endpoint", server.url, "--model", "judge"]
        assert main(argv) == 0
        assert len(server.bodies) == 6
        prompts = [body["messages"][0]["content"] for body in server.bodies]
    assert "Answer with one digit" in prompts[0]
    counts = Counter(overlap_grade(p) for p in prompts)
    grades = ", ".join(f"{g}: {counts[g]}" for g in (3, 2, 1, 0) if counts[g])
    printed = capsys.readouterr().out
    assert f"graded 6 passages of 3 queries (grades {grades}; 0 replies without a grade)" in printed
    assert "labelled positives graded 2-3" in printed
    journal = {(j["query_id"], j["doc_id"]): j["grade"] for j in read_grades(out)}
    assert sorted(journal.values()) == sorted(overlap_grade(p) for p in prompts)
    qrels = read_qrels(out / "qrels" / "train.tsv")
    assert {(q, d): g for q, j in qrels.items() for d, g in j.items()} == journal


def test_a_dataset_without_labels_is_graded_with_split_all(dataset, tmp_path) -> None:
    (dataset / "qrels" / "train.tsv").unlink()
    with pytest.raises(SynthrankError):
        grade_real_lists(
            GradeJob(str(dataset), tmp_path / "a", top_n=2), FakeJudge(), progress=False
        )
    meta = grade_real_lists(
        GradeJob(str(dataset), tmp_path / "b", split="all", top_n=2), FakeJudge(), progress=False
    )
    assert meta["counts"]["queries"] == 3 and meta["agreement_with_labels"] is None
    assert all(j["label"] is None for j in read_grades(tmp_path / "b"))


def test_an_interrupted_first_run_keeps_its_settings_and_limits_may_change(
    dataset, tmp_path
) -> None:
    out = tmp_path / "graded"
    with pytest.raises(KeyboardInterrupt):
        grade_real_lists(
            GradeJob(str(dataset), out, top_n=2, window=1), FakeJudge(fail_after=2), progress=False
        )
    with pytest.raises(SynthrankError, match=r"other settings \(top_n\)"):
        grade_real_lists(GradeJob(str(dataset), out, top_n=3), FakeJudge(), progress=False)
    grade_real_lists(GradeJob(str(dataset), out, top_n=2, limit=2), FakeJudge(), progress=False)
    # A smaller limit later keeps what was graded: the view holds every graded query.
    meta = grade_real_lists(
        GradeJob(str(dataset), out, top_n=2, limit=1), FakeJudge(), progress=False
    )
    assert meta["counts"]["queries"] == 2
    assert set(read_qrels(out / "qrels" / "train.tsv")) == {"q1", "q2"}
    # The same folder named another way is the same dataset.
    grade_real_lists(GradeJob(f"{dataset}/", out, top_n=2), FakeJudge(), progress=False)


def test_the_output_reads_as_a_graded_dataset_for_inspect(dataset, tmp_path) -> None:
    from synthrank.generate import inspect_dataset

    out = tmp_path / "graded"
    grade_real_lists(GradeJob(str(dataset), out, top_n=3), FakeJudge(), progress=False)
    report = inspect_dataset(out, encoder=None)
    assert report["queries"] == len(read_qrels(out / "qrels" / "train.tsv"))


def test_passages_sharing_no_term_with_the_query_are_not_sent_to_the_judge(
    dataset, tmp_path
) -> None:
    write_queries(dataset / "queries.jsonl", [Query("q9", "the and of")])
    write_qrels(dataset / "qrels" / "train.tsv", {"q9": {"d-ice": 1}})
    judge = FakeJudge()
    meta = grade_real_lists(GradeJob(str(dataset), tmp_path / "g", top_n=3), judge, progress=False)
    assert judge.prompts == [] and meta["counts"]["passages"] == 0


def test_a_judge_that_never_grades_fails_the_command(dataset, tmp_path, capsys) -> None:
    from fake_llm_server import FakeLLMServer

    from synthrank.cli import main

    with FakeLLMServer(grade=7) as server:
        argv = ["grade", str(dataset), "--out", str(tmp_path / "g"), "--top-n", "1", "--quiet"]
        argv += ["--llm-backend", "openai", "--endpoint", server.url, "--model", "judge"]
        assert main(argv) == 1
    assert "no reply held a grade 0-3" in capsys.readouterr().err


def test_a_judge_that_gives_every_passage_one_grade_fails_and_keeps_its_grades(
    dataset, tmp_path, capsys
) -> None:
    """What Qwen2.5-Coder-1.5B did on SciFact: grade 0 for every passage, labelled positives too.
    No list holds an order to learn, so the command fails and says so; the grades stay."""
    from fake_llm_server import FakeLLMServer

    from synthrank.cli import main

    out = tmp_path / "g"
    with FakeLLMServer(grade=0) as server:
        argv = ["grade", str(dataset), "--out", str(out), "--top-n", "3", "--quiet"]
        argv += ["--llm-backend", "openai", "--endpoint", server.url, "--model", "judge"]
        assert main(argv) == 1
    captured = capsys.readouterr()
    journal = read_grades(out)
    positives = sum(j["label"] is not None for j in journal)
    assert {j["grade"] for j in journal} == {0} and positives > 0
    assert f"same grade (grades 0: {len(journal)})" in captured.err
    assert f"0 of {positives} labelled positives graded 2-3" in captured.out


def test_lists_with_two_grades_are_counted_per_query(dataset, tmp_path) -> None:
    from synthrank.generate.graded import judge_failure

    meta = grade_real_lists(
        GradeJob(str(dataset), tmp_path / "g", top_n=3), FakeJudge(), progress=False
    )
    per_query: dict[str, set[int]] = {}
    for j in read_grades(tmp_path / "g"):
        if j["grade"] is not None:
            per_query.setdefault(j["query_id"], set()).add(j["grade"])
    expected = sum(len(g) > 1 for g in per_query.values())
    assert meta["counts"]["lists_with_two_grades"] == expected > 0
    assert judge_failure(meta) is None


def test_what_reading_the_dataset_found_is_in_meta_and_on_the_console(
    dataset, tmp_path, capsys
) -> None:
    from fake_llm_server import FakeLLMServer

    from synthrank.cli import main
    from synthrank.fileio import SynthrankWarning

    write_qrels(dataset / "qrels" / "train.tsv", {**LABELS, "q1": {"d-ice": 1, "d-gone": 1}})
    missing = (
        f"{dataset / 'qrels' / 'train.tsv'}: 1 judgments name 1 document ids missing from "
        'corpus.jsonl (e.g. "d-gone"); they count as relevant but cannot be retrieved'
    )
    with pytest.warns(SynthrankWarning) as caught:
        meta = grade_real_lists(
            GradeJob(str(dataset), tmp_path / "a", top_n=2), FakeJudge(), progress=False
        )
    assert [str(w.message) for w in caught] == [missing] and meta["warnings"] == [missing]

    # Every query with split all: an id with a trailing space, read without it.
    queries = dataset / "queries.jsonl"
    queries.write_text(queries.read_text().replace('"_id": "q2"', '"_id": "q2 "'))
    spaced = f'{queries}, line 2, field "_id": "q2 " has trailing whitespace; read as "q2"'
    argv = ["grade", str(dataset), "--out", str(tmp_path / "b"), "--split", "all", "--top-n"]
    with FakeLLMServer(grade="overlap") as server:
        argv += [
            "2",
            "--quiet",
            "--llm-backend",
            "openai",
            "--endpoint",
            server.url,
            "--model",
            "j",
        ]
        assert main(argv) == 0
    assert capsys.readouterr().err == f"warning: {spaced}\n"
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["warnings"] == [spaced]
