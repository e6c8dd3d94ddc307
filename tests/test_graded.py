"""LLM-graded real lists (synthrank grade) against a fake judge: BM25 top-N per query, every
decision journaled, the BEIR view, agreement with the dataset's labels, resume and refusals."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from synthrank.data import Document, Query, read_qrels, write_corpus, write_qrels, write_queries
from synthrank.errors import SynthrankError
from synthrank.generate.backends import Completion
from synthrank.generate.graded import GradeJob, grade_real_lists, read_judgments

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
    LLM would answer: one digit, or text without one for passages naming a violin."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.prompts: list[str] = []
        self.fail_after = fail_after

    @staticmethod
    def grade(query: str, passage: str) -> int | None:
        if "violin" in passage:
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
    """An independent BM25 (Okapi, k1 1.5, b 0.75, bm25s's defaults and English stop words as
    bm25s tokenizes) over the toy corpus, to check the retrieval the journal records."""
    import bm25s

    ids = list(DOCS)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(DOCS.values()), stopwords="en", show_progress=False))
    hits, _ = retriever.retrieve(
        bm25s.tokenize([query], stopwords="en", show_progress=False), k=n, show_progress=False
    )
    return [ids[i] for i in hits[0]]


def test_each_querys_bm25_top_n_is_graded_and_journaled(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "graded"
    judge = FakeJudge()
    meta = grade_real_lists(GradeJob(str(dataset), out, top_n=3), judge, progress=False)
    judgments = read_judgments(out)
    assert len(judgments) == 9 and len(judge.prompts) == 9
    for query_id, text in QUERIES.items():
        mine = [j for j in judgments if j["query_id"] == query_id]
        assert [j["doc_id"] for j in mine] == _bm25_top(text, 3)
        assert [j["bm25_rank"] for j in mine] == [1, 2, 3]
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
    assert meta["counts"]["passages"] == 9 and meta["status"] == "complete"


def test_a_reply_without_a_grade_is_logged_and_left_out_of_the_qrels(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "graded"
    meta = grade_real_lists(GradeJob(str(dataset), out, top_n=8), FakeJudge(), progress=False)
    violins = [j for j in read_judgments(out) if j["doc_id"] == "d-violin"]
    assert len(violins) == 3  # top 8 of 8 documents: every query's list has it
    assert all(j["grade"] is None and j["reply"] == "I cannot tell" for j in violins)
    assert all("d-violin" not in docs for docs in read_qrels(out / "qrels" / "train.tsv").values())
    assert meta["counts"]["no_grade"] == sum(j["grade"] is None for j in read_judgments(out)) >= 1


def test_an_interrupted_job_resumes_without_regrading(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "graded"
    job = GradeJob(str(dataset), out, top_n=3, window=1)
    with pytest.raises(KeyboardInterrupt):
        grade_real_lists(job, FakeJudge(fail_after=3), progress=False)
    assert {j["query_id"] for j in read_judgments(out)} == {"q1"}
    with (out / "judgments.jsonl").open("a") as handle:
        handle.write('{"query_id": "q2", "doc_')  # a torn line, as a crash leaves it
    judge = FakeJudge()
    grade_real_lists(job, judge, progress=False)
    assert len(judge.prompts) == 6  # q2 and q3 only
    judgments = read_judgments(out)
    assert [j["query_id"] for j in judgments] == ["q1"] * 3 + ["q2"] * 3 + ["q3"] * 3
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
    judgments = [j for j in read_judgments(out) if j["grade"] is not None]
    for (query_id, text), entries in pool.items():
        assert text == QUERIES[query_id]
        expected = sorted(
            (DOCS[j["doc_id"]], j["grade"]) for j in judgments if j["query_id"] == query_id
        )
        assert sorted(entries) == expected
    assert json.loads((out / "meta.json").read_text())["job"]["top_n"] == 4


def test_the_grade_command_over_an_openai_compatible_server(dataset, tmp_path, capsys) -> None:
    from fake_llm_server import FakeLLMServer

    from synthrank.cli import main

    out = tmp_path / "graded"
    with FakeLLMServer(grade=3) as server:
        argv = ["grade", str(dataset), "--out", str(out), "--top-n", "2", "--quiet"]
        argv += ["--backend", "openai", "--endpoint", server.url, "--model", "judge"]
        assert main(argv) == 0
        assert len(server.bodies) == 6
        assert "Answer with one digit" in server.bodies[0]["messages"][0]["content"]
    printed = capsys.readouterr().out
    assert "graded 6 passages of 3 queries (grades 3: 6; 0 replies without a grade)" in printed
    assert "labelled positives graded 2-3" in printed
    assert all(set(g.values()) == {3} for g in read_qrels(out / "qrels" / "train.tsv").values())


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
    assert all(j["label"] is None for j in read_judgments(tmp_path / "b"))
