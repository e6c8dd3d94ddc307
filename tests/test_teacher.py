"""Teacher scores on graded lists: every pair of each query's list scored by the teacher as
sentence-transformers scores it, beside the list's grades, keyed by ids; BM25 lists of real
text; encodings reused from the per-text cache."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from synthrank.cli import main
from synthrank.evaluate import encode as encode_module
from synthrank.train.teacher import read_scores, score_lists


def _cosines(model, query, passages):
    q = model.encode_query([query], convert_to_numpy=True)
    d = model.encode_document(passages, convert_to_numpy=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    return (d @ q[0]).tolist()


def test_judged_lists_are_scored_as_sentence_transformers_scores_them(
    graded_toy, tiny_model_dir, tmp_path
):
    out = tmp_path / "scores"
    meta = score_lists(
        str(graded_toy.root), out, teacher=str(tiny_model_dir), split="test", progress=False
    )
    split = graded_toy.load_split("test")
    assert meta["counts"] == {"queries": 16, "pairs": 64}
    assert meta["lists"] == "judged" and len(meta["reads"]["qrels/test.tsv"]["sha256"]) == 64
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert {(r["query_id"], r["doc_id"]): r["grade"] for r in rows} == {
        (q, d): g for q, judged in split.qrels.items() for d, g in judged.items()
    }
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.max_seq_length = 256
    scores = read_scores(out)
    for query_id in ("q64", "q70"):
        docs = sorted(split.qrels[query_id])
        expected = _cosines(
            model, split.queries[query_id].text, [split.corpus[d].full_text() for d in docs]
        )
        assert [scores[(query_id, d)] for d in docs] == pytest.approx(expected, abs=1e-5)
    assert all("text" not in r and "query" not in r for r in rows)
    # Published gzipped (results/teacher), the scores read back the same.
    published = tmp_path / "published"
    published.mkdir()
    with gzip.open(published / "scores.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write((out / "scores.jsonl").read_text())
    assert read_scores(published) == scores


def test_bm25_lists_of_real_text_and_cached_encodings(
    graded_toy, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    first = tmp_path / "judged"
    score_lists(
        str(graded_toy.root), first, teacher=str(tiny_model_dir), split="test", progress=False
    )
    encoded: list[int] = []
    real = encode_module._encode_chunk

    def counting(model, texts, role, batch_size, bar):
        encoded.append(len(texts))
        return real(model, texts, role, batch_size, bar)

    monkeypatch.setattr(encode_module, "_encode_chunk", counting)
    out = tmp_path / "bm25"
    command = ["score", "--dataset", str(graded_toy.root), "--split", "test", "--out", str(out)]
    assert main([*command, "--teacher", str(tiny_model_dir), "--bm25-top", "3", "--quiet"]) == 0
    assert "scored 48 pairs of 16 queries (bm25 top 3)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [r["bm25_rank"] for r in rows[:3]] == [1, 2, 3]
    split = graded_toy.load_split("test")
    assert all(r["grade"] == split.qrels[r["query_id"]].get(r["doc_id"]) for r in rows)
    # Queries were encoded by the first run: only passages it did not score are encoded.
    judged = {d for judged in split.qrels.values() for d in judged}
    fresh = {r["doc_id"] for r in rows} - judged
    assert sum(encoded) == len(fresh)


def _softmax(x, t):
    z = np.exp((np.asarray(x, dtype=np.float64) - np.max(x)) / t)
    return z / z.sum()


def test_teacher_target_mixes_the_teachers_and_the_grades_distributions():
    import torch

    from synthrank.train.losses import target_distribution, teacher_target

    grades = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    scores = torch.tensor([[0.71, 0.64, 0.66, 0.20], [0.30, 0.35, 0.52, 0.10]])
    alone = teacher_target(grades, scores, weight=1.0, teacher_temperature=0.05)
    for row in range(2):
        assert alone[row].tolist() == pytest.approx(_softmax(scores[row].tolist(), 0.05).tolist())
    half = teacher_target(grades, scores, weight=0.5, teacher_temperature=0.05, temperature=0.25)
    expected = 0.5 * _softmax(scores[0].tolist(), 0.05) + 0.5 * _softmax([3, 2, 1, 0], 0.25)
    assert half[0].tolist() == pytest.approx(expected.tolist())
    # The list-wise losses take it as their "given" target: the weights, normalised.
    given = target_distribution(half, "given")
    for row in range(2):
        assert given[row].tolist() == pytest.approx(half[row].tolist())
    own = torch.tensor([[True, True, False, False]])
    assert target_distribution(torch.tensor([[0.2, 0.6, 0.2, 0.0]]), "given", own_mask=own)[
        0
    ].tolist() == pytest.approx([0.25, 0.75, 0.0, 0.0])


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_training_on_teacher_targets(graded_toy, tiny_model_dir, tmp_path, weight):
    from synthrank.train import SourceSpec, TrainConfig

    scores_dir = tmp_path / "scores"
    score_lists(str(graded_toy.root), scores_dir, teacher=str(tiny_model_dir), progress=False)
    config = TrainConfig(
        data=[SourceSpec.parse(f"{graded_toy.root},split=train,teacher={scores_dir}")],
        out=tmp_path / "model",
        base_model=str(tiny_model_dir),
        loss="kl",
        batch_size=8,
        max_steps=2,
        max_length=32,
        teacher_weight=weight,
        teacher_temperature=0.05,
        target_temperature=0.25,
    )
    result, training = _train_keeping_data(config)
    assert result.steps == 2 and result.report.used == 64
    scores = read_scores(scores_dir)
    group = training.groups[0]
    teacher = [scores[(group.query_id, doc)] for doc in _doc_ids(graded_toy, group)]
    assert list(group.teacher_scores) == pytest.approx(teacher, abs=1e-6)
    expected = weight * _softmax(teacher, 0.05) + (1 - weight) * _softmax(
        [_grade(graded_toy, group, i) for i in range(4)], 0.25
    )
    assert list(group.labels) == pytest.approx(expected.tolist(), abs=1e-6)
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"teacher target: {weight:g} x softmax(teacher score / 0.05)" in card


def _train_keeping_data(config):
    """``train(config)``'s result and the :class:`TrainingData` it trained on."""
    from synthrank.train import train
    from synthrank.train import trainer as trainer_module

    seen = {}
    real = trainer_module.training_dataset

    def keep(config, model):
        seen["training"] = real(config, model)
        return seen["training"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "training_dataset", keep)
        result = train(config, progress=False)
    return result, seen["training"]


def _doc_ids(dataset, group):
    split = dataset.load_split("train")
    by_text = {split.corpus[d].full_text(): d for d in split.qrels[group.query_id]}
    return [by_text[text] for text in group.passages]


def _grade(dataset, group, i):
    split = dataset.load_split("train")
    return split.qrels[group.query_id][_doc_ids(dataset, group)[i]]


def test_teacher_targets_refuse_what_they_cannot_train(graded_toy, tmp_path):
    from synthrank.errors import SettingError, SynthrankError
    from synthrank.train import SourceSpec, TrainConfig

    scored = SourceSpec.parse(f"{graded_toy.root},teacher={tmp_path}")
    plain = SourceSpec(str(graded_toy.root))
    cases = [
        (dict(loss="w1", data=[scored]), "loss", "compares relevance levels"),
        (dict(loss="infonce", data=[scored]), "loss", "has one positive per query"),
        (dict(loss="kl", data=[scored, plain]), "data", "names a source without teacher="),
        (dict(loss="kl", data=[scored], teacher_weight=1.5), "teacher_weight", r"share in \["),
    ]
    for settings, key, message in cases:
        config = TrainConfig(out=tmp_path / "m", **{"teacher_weight": 1.0, **settings})
        with pytest.raises(SettingError, match=message) as caught:
            config.validate()
        assert caught.value.key == key
    with pytest.raises(SynthrankError, match="bm25= and random= would add passages"):
        SourceSpec.parse(f"{graded_toy.root},teacher={tmp_path},bm25=2:0")


def test_teacher_mined_lists_add_the_teachers_best_unjudged_passages(
    graded_toy, tiny_model_dir, tmp_path, capsys
):
    out = tmp_path / "mined"
    command = ["score", "--dataset", str(graded_toy.root), "--split", "test", "--out", str(out)]
    assert main([*command, "--teacher", str(tiny_model_dir), "--teacher-top", "2", "--quiet"]) == 0
    assert "scored 96 pairs of 16 queries (judged + teacher top 2)" in capsys.readouterr().out
    split = graded_toy.load_split("test")
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.max_seq_length = 256
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    corpus_ids = sorted(split.corpus)
    for query_id in ("q64", "q70"):
        own = [r for r in rows if r["query_id"] == query_id]
        judged = sorted(split.qrels[query_id])
        assert [r["doc_id"] for r in own[: len(judged)]] == judged
        mined = own[len(judged) :]
        assert [r["teacher_rank"] for r in mined] == [1, 2]
        assert all(r["grade"] is None for r in mined)
        # The two best unjudged passages of the whole corpus by a brute-force cosine.
        others = [d for d in corpus_ids if d not in split.qrels[query_id]]
        cosines = _cosines(
            model, split.queries[query_id].text, [split.corpus[d].full_text() for d in others]
        )
        best = sorted(zip(others, cosines, strict=True), key=lambda x: (-x[1], x[0]))[:2]
        assert [r["doc_id"] for r in mined] == [d for d, _ in best]
        assert [r["score"] for r in mined] == pytest.approx([c for _, c in best], abs=1e-5)


def test_bm25_and_teacher_mined_lists_are_one_or_the_other(graded_toy, tiny_model_dir, tmp_path):
    from synthrank.errors import SynthrankError

    with pytest.raises(SynthrankError, match="choose one"):
        score_lists(
            str(graded_toy.root),
            tmp_path / "x",
            teacher=str(tiny_model_dir),
            bm25_top=2,
            teacher_top=2,
            progress=False,
        )
    with pytest.raises(SynthrankError, match="teacher_top must be >= 1"):
        score_lists(
            str(graded_toy.root), tmp_path / "x", teacher=str(tiny_model_dir), teacher_top=0
        )


def test_a_masked_group_is_the_teachers_best_and_the_negatives_below_its_cut() -> None:
    from synthrank.train.data import _pick_masked_group

    scores = {"a": 0.80, "b": 0.78, "c": 0.70, "d": 0.76, "e": 0.50, "f": 0.70}
    entries = [(t, 0) for t in "fedcba"] + [("a", 3)]
    # Cut 0.95 x 0.80 = 0.76: b and d (0.78, 0.76: not below it) are the likely false negatives;
    # c and f tie at 0.70 and go by text.
    chosen, reason = _pick_masked_group(entries, 3, scores, 0.95)
    assert reason == "" and chosen == [("a", 1), ("c", 0), ("f", 0)]
    assert _pick_masked_group(entries, 4, scores, 0.95)[0] == [
        ("a", 1),
        ("c", 0),
        ("f", 0),
        ("e", 0),
    ]
    assert _pick_masked_group(entries, 5, scores, 0.95) == (
        None,
        "fewer than 4 passages the teacher scores below 0.95 x its best",
    )
    # Ratio 1 keeps every passage below the positive: plain top-k hard negatives.
    assert _pick_masked_group(entries, 3, scores, 1.0)[0] == [("a", 1), ("b", 0), ("d", 0)]
    assert _pick_masked_group(entries[:2], 3, scores, 1.0) == (None, "fewer than 3 passages")


def test_training_infonce_with_the_teachers_false_negatives_masked(
    graded_toy, tiny_model_dir, tmp_path
):
    from synthrank.train import SourceSpec, TrainConfig

    scores_dir = tmp_path / "scores"
    score_lists(str(graded_toy.root), scores_dir, teacher=str(tiny_model_dir), progress=False)
    scores = read_scores(scores_dir)
    ratio = 0.9
    config = TrainConfig(
        data=[SourceSpec.parse(f"{graded_toy.root},split=train,teacher={scores_dir}")],
        out=tmp_path / "model",
        base_model=str(tiny_model_dir),
        loss="infonce",
        group_size=2,
        batch_size=4,
        max_steps=2,
        max_length=32,
        teacher_mask=ratio,
    )
    result, training = _train_keeping_data(config)
    # Each query's group, worked out from the scores file alone: its best-scored passage, then
    # the best one below ratio x that score; a query with none is skipped.
    split = graded_toy.load_split("train")
    expected = {}
    for query_id, judged in split.qrels.items():
        ranked = sorted(judged, key=lambda d: -scores[(query_id, d)])
        cut = ratio * scores[(query_id, ranked[0])]
        below = [d for d in ranked[1:] if scores[(query_id, d)] < cut]
        if below:
            expected[query_id] = [ranked[0], below[0]]
    assert expected and len(expected) < len(split.qrels)  # the mask drops some queries here
    got = {g.query_id: _doc_ids(graded_toy, g) for g in training.groups}
    assert got == expected
    assert all(g.labels == (1, 0) for g in training.groups)
    assert result.steps == 2 and result.report.used == len(expected)
    assert sum(result.report.skipped.values()) == len(split.qrels) - len(expected)
    assert type(training.loss).__name__ == "InfoNCELoss"
    card = (tmp_path / "model" / "README.md").read_text()
    assert (
        f"teacher mask: the positive is the teacher's best passage, the negatives those it "
        f"scores below {ratio:g} x" in card
    )


def test_a_teacher_mask_refuses_what_it_cannot_train(graded_toy, tmp_path):
    from synthrank.errors import SettingError, SynthrankError
    from synthrank.train import SourceSpec, TrainConfig
    from synthrank.train.data import assemble_groups

    scored = SourceSpec.parse(f"{graded_toy.root},teacher={tmp_path}")
    plain = SourceSpec(str(graded_toy.root))
    cases = [
        (dict(loss="kl"), "loss", "the mask picks InfoNCE's negatives"),
        (dict(teacher_mask=0.0), "teacher_mask", r"share in \(0, 1\]"),
        (dict(teacher_mask=1.2), "teacher_mask", r"share in \(0, 1\]"),
        (dict(binary_threshold=2), "binary_threshold", "picks the positive by grade"),
        (dict(data=[scored, plain]), "data", "names a source without teacher="),
        (dict(teacher_weight=1.0), "teacher_mask", "and teacher_weight exclude each other"),
    ]
    for settings, key, message in cases:
        values = {"loss": "infonce", "data": [scored], "teacher_mask": 0.95, **settings}
        with pytest.raises(SettingError, match=message) as caught:
            TrainConfig(out=tmp_path / "m", **values).validate()
        assert caught.value.key == key
    with pytest.raises(SynthrankError, match="teacher_mask needs teacher scores"):
        assemble_groups([plain], 2, teacher_mask=0.95)
    with pytest.raises(SynthrankError, match="teacher= needs the folder of synthrank score"):
        SourceSpec.parse(f"{graded_toy.root},teacher=")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"query_id": "q1", "doc_id": "d1", "score": 0.5', "line 2: not a JSON line"),
        ('{"query_id": "q1", "doc_id": "d1"}', "line 2: field 'score': not a finite number"),
        ('{"query_id": "q1", "doc_id": "d1", "score": "high"}', "field 'score': not a finite"),
        ('{"query_id": "q1", "doc_id": "d1", "score": NaN}', r"not a finite number \(got nan\)"),
        ('{"query_id": "q1", "doc_id": "d1", "score": Infinity}', r"number \(got inf\)"),
        ('{"query_id": "q1", "score": 0.5}', "line 2: field 'doc_id': missing or not an id"),
        ("[1, 2]", "line 2: not a JSON object"),
    ],
)
def test_a_bad_line_of_a_scores_file_is_named_with_its_line_and_field(tmp_path, line, message):
    from synthrank.errors import SynthrankError

    good = '{"query_id": "q0", "doc_id": "d0", "score": 0.25}'
    (tmp_path / "scores.jsonl").write_text(f"{good}\n{line}\n")
    with pytest.raises(SynthrankError, match=message) as caught:
        read_scores(tmp_path)
    assert str(tmp_path / "scores.jsonl") in str(caught.value)
    # Blank lines (a file ending in an empty line) are no rows.
    (tmp_path / "scores.jsonl").write_text(f"{good}\n\n")
    assert read_scores(tmp_path) == {("q0", "d0"): 0.25}


def test_scores_of_other_text_are_refused(graded_toy, tiny_model_dir, tmp_path):
    import shutil

    from synthrank.errors import SynthrankError
    from synthrank.train.data import SourceSpec, assemble_groups

    data = tmp_path / "data"
    shutil.copytree(graded_toy.root, data)
    scores = tmp_path / "scores"
    score_lists(str(data), scores, teacher=str(tiny_model_dir), progress=False)
    spec = SourceSpec.parse(f"{data},teacher={scores}")
    assert assemble_groups([spec], 2, teacher_mask=1.0)[1].used == 64
    # The qrels cut to fewer queries: the scores still belong to the same texts.
    qrels = data / "qrels" / "train.tsv"
    qrels.write_text("".join(qrels.read_text().splitlines(keepends=True)[:9]))
    assert assemble_groups([spec], 2, teacher_mask=1.0)[1].used == 2
    corpus = data / "corpus.jsonl"
    lines = corpus.read_text().splitlines(keepends=True)
    edited = json.loads(lines[0]) | {"text": "Bananas are yellow."}
    corpus.write_text(json.dumps(edited) + "\n" + "".join(lines[1:]))
    with pytest.raises(SynthrankError, match=r"were made on other content than .*corpus.jsonl"):
        assemble_groups([spec], 2, teacher_mask=1.0)


def test_the_mask_cuts_below_a_negative_best_score_too() -> None:
    from synthrank.train.data import _pick_masked_group

    # A dot-product teacher's scores: the best is -0.1, the cut -0.1 - 0.05 x 0.1 = -0.105.
    scores = {"a": -0.1, "b": -0.1001, "c": -0.5, "d": -0.6}
    entries = [(t, 0) for t in "abcd"]
    assert _pick_masked_group(entries, 3, scores, 0.95)[0] == [("a", 1), ("c", 0), ("d", 0)]
