"""The command line: help, one-line errors with exit code 2, evaluate and --compare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from synthrank.cli import main
from synthrank.data import BeirDataset


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synthrank.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_option() -> None:
    result = _run("evaluate", "--help")
    assert result.returncode == 0
    for option in ("--model", "--dataset", "--split", "--output", "--compare", "--top-k"):
        assert option in result.stdout


def test_bad_corpus_line_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"title": "no id"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "query"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    result = _run("evaluate", "--model", "minilm", "--dataset", str(tmp_path), "--quiet")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f'synthrank: error: {tmp_path / "corpus.jsonl"}, line 2, field "_id": missing'
    )


def test_missing_arguments_and_unknown_dataset(tmp_path: Path) -> None:
    result = _run("evaluate", "--model", "minilm")
    assert result.returncode == 2 and "needs --model and --dataset" in result.stderr
    result = _run("evaluate", "--model", "minilm", "--dataset", "beir:no-such-set")
    assert result.returncode == 2 and 'unknown BEIR dataset "no-such-set"' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_then_compare(
    tiny_model_dir: Path, mini_scifact: BeirDataset, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tiny"
    code = main(
        [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--dataset",
            str(mini_scifact.root),
            "--output",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    assert f"{saved['metrics']['nDCG@10']:.4f}" in printed
    assert (out / "run.trec").is_file()

    other = tmp_path / "tiny-short"
    main(
        [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--dataset",
            str(mini_scifact.root),
            "--output",
            str(other),
            "--max-length",
            "16",
            "--quiet",
        ]
    )
    capsys.readouterr()
    assert main(["evaluate", "--compare", str(out), str(other / "metrics.json"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["measure"] for r in rows] == ["nDCG@10", "RR@10", "R@100", "AP@100", "P@10"]
    short = json.loads((other / "metrics.json").read_text())
    assert rows[0]["delta"] == pytest.approx(
        short["metrics"]["nDCG@10"] - saved["metrics"]["nDCG@10"]
    )
    assert all(0.0 <= r["p_value"] <= 1.0 and r["n_queries"] == 40 for r in rows)


def test_compare_refuses_different_datasets(tmp_path: Path) -> None:
    for name, dataset in (("a", "beir:scifact"), ("b", "beir:nfcorpus")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(
            json.dumps(
                {"model": name, "dataset": dataset, "split": "test", "metrics": {}, "per_query": {}}
            )
        )
    result = _run("evaluate", "--compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.returncode == 2 and "same dataset and split" in result.stderr
