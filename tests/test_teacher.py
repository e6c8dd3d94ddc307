"""Teacher scores on graded lists: every pair of each query's list scored by the teacher as
sentence-transformers scores it, beside the list's grades, keyed by ids; BM25 lists of real
text; encodings reused from the per-text cache."""

from __future__ import annotations

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


def test_bm25_lists_of_real_text_and_cached_encodings(
    graded_toy, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    first = tmp_path / "judged"
    score_lists(str(graded_toy.root), first, teacher=str(tiny_model_dir), split="test",
                progress=False)
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
