"""The command line: one vocabulary (old spellings still read, with a warning), help that says
what each option does and its default, one-line errors with exit code 2, evaluate and compare."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from synthrank.cli import build_parser, main
from synthrank.data import BeirDataset


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synthrank.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_option() -> None:
    result = _run("evaluate", "--help")
    assert result.returncode == 0
    for option in ("--model", "--dataset", "--split", "--out", "--top-k", "--encoder-backend"):
        assert option in result.stdout
    for hidden in ("--output", "--compare", "--backend"):
        assert hidden not in result.stdout
    assert "(default: 100)" in result.stdout  # --top-k's default, added by the formatter


def _subparsers():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices


def test_every_command_prints_its_help() -> None:
    for name, sub in _subparsers().items():
        text = sub.format_help()
        assert text.startswith(f"usage: synthrank {name}"), name
        # A flag's help says itself when it is the default (--keep-identical-ids depends on
        # the dataset): the formatter adds no "(default: True)".
        assert "(default: True)" not in text and "(default: False)" not in text, name


def test_every_option_has_help_that_says_something() -> None:
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            text = (action.help or "").strip()
            where = f"synthrank {name} {'/'.join(action.option_strings) or action.dest}"
            assert len(text) >= 10, f"{where}: help says nothing ({text!r})"
            assert not text.startswith("("), f"{where}: help is only a default ({text!r})"
            assert "README" not in text, f"{where}: points to a file a pip user lacks"


def test_one_vocabulary_across_commands() -> None:
    """An output is --out; the LLM engine --llm-backend; the encoder runtime --encoder-backend;
    the training flags are HF Trainer's names."""
    visible = {
        name: {o for a in sub._actions if a.help != argparse.SUPPRESS for o in a.option_strings}
        for name, sub in _subparsers().items()
    }
    for name, options in visible.items():
        assert "--output" not in options and "--backend" not in options, name
    for name in ("generate", "generate-queries", "grade", "judge"):
        assert "--llm-backend" in visible[name], name
    for name in ("evaluate", "inspect", "judge"):
        assert "--encoder-backend" in visible[name], name
    for name in ("merge", "export", "judge", "evaluate", "train", "generate", "score"):
        assert "--out" in visible[name], name
    for name in ("train", "sweep"):
        for option in (
            "--learning-rate",
            "--num-train-epochs",
            "--warmup-ratio",
            "--per-device-train-batch-size",
        ):
            assert option in visible[name], (name, option)
    assert {"--student", "--judge-encoder"} <= visible["inspect"]
    assert {"--judge-kind", "--judge-encoder"} <= visible["judge"]


@pytest.mark.parametrize(
    ("old", "new", "dest", "value"),
    [
        (["--lr", "3e-5"], ["--learning-rate", "3e-5"], "lr", 3e-5),
        (["--epochs", "2"], ["--num-train-epochs", "2"], "epochs", 2.0),
        (["--warmup", "0.1"], ["--warmup-ratio", "0.1"], "warmup", 0.1),
        (["--batch-size", "8"], ["--per-device-train-batch-size", "8"], "batch_size", 8),
    ],
)
def test_old_training_flags_still_read_with_a_warning(old, new, dest, value, capsys) -> None:
    base = ["train", "--data", "beir:scifact", "--out", "x"]
    args = build_parser().parse_args([*base, *new])
    assert getattr(args, dest) == value and capsys.readouterr().err == ""
    args = build_parser().parse_args([*base, *old])
    assert getattr(args, dest) == value
    assert capsys.readouterr().err.strip() == (
        f"synthrank: warning: {old[0]} is deprecated; use {new[0]}"
    )


def test_old_spellings_of_judge_and_inspect_options(capsys) -> None:
    args = build_parser().parse_args(
        [
            "judge",
            "src",
            "--out",
            "o",
            "--judge",
            "llm",
            "--encoder",
            "minilm",
            "--backend",
            "openai",
        ]
    )
    assert (args.judge, args.encoder, args.backend) == ("llm", "minilm", "openai")
    assert capsys.readouterr().err.count("is deprecated") == 3
    args = build_parser().parse_args(["inspect", "d", "--encoder", "m", "--judge", "mpnet"])
    assert (args.encoder, args.judge) == ("m", "mpnet")
    args = build_parser().parse_args(["evaluate", "--backend", "openvino", "--output", "o"])
    assert (args.encoder_backend, str(args.out)) == ("openvino", "o")
    with pytest.raises(SystemExit):  # an old spelling still checks its choices
        build_parser().parse_args(["evaluate", "--backend", "onnx"])


def test_exit_status_is_documented() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for line in ("0    done", "1    the job ran but left work unfinished", "2    a usage"):
        assert line in result.stdout


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
            "--out",
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
            "--out",
            str(other),
            "--max-length",
            "16",
            "--quiet",
        ]
    )
    capsys.readouterr()
    assert main(["compare", str(out), str(other / "metrics.json"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["measure"] for r in rows] == ["nDCG@10", "RR@10", "R@100", "AP@100", "P@10"]
    short = json.loads((other / "metrics.json").read_text())
    assert rows[0]["delta"] == pytest.approx(
        short["metrics"]["nDCG@10"] - saved["metrics"]["nDCG@10"]
    )
    assert all(0.0 <= r["p_value"] <= 1.0 and r["n_queries"] == 40 for r in rows)
    # The old spelling gives the same comparison, with a deprecation line.
    assert main(["evaluate", "--compare", str(out), str(other / "metrics.json"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == rows
    assert "evaluate --compare is deprecated; use synthrank compare" in captured.err


def test_compare_refuses_different_datasets(tmp_path: Path) -> None:
    for name, dataset in (("a", "beir:scifact"), ("b", "beir:nfcorpus")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(
            json.dumps(
                {"model": name, "dataset": dataset, "split": "test", "metrics": {}, "per_query": {}}
            )
        )
    result = _run("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.returncode == 2 and "same dataset and split" in result.stderr


def test_positional_outputs_became_out(capsys) -> None:
    from synthrank.cli import _output

    args = build_parser().parse_args(["export", "folder", "--out", "lists.jsonl.gz"])
    assert _output(args, "export") == Path("lists.jsonl.gz") and capsys.readouterr().err == ""
    args = build_parser().parse_args(["export", "folder", "lists.jsonl.gz"])
    assert _output(args, "export") == Path("lists.jsonl.gz")
    assert "export OUT as a positional argument is deprecated" in capsys.readouterr().err
    assert main(["export", "folder"]) == 2
    assert capsys.readouterr().err.strip() == "synthrank: error: export needs --out"
    assert main(["judge", "folder", "a", "--out", "b"]) == 2
    assert "give the output once, with --out" in capsys.readouterr().err
    assert main(["merge", "only-one-part"]) == 2
    assert capsys.readouterr().err.strip() == "synthrank: error: merge needs --out"


def test_levels_preset_on_the_command_line(tmp_path: Path) -> None:
    from synthrank.cli import _generation_job
    from synthrank.generate import LEVEL_PRESETS

    base = ["generate", "--queries", "q.jsonl", "--out", str(tmp_path / "g")]
    default = _generation_job(build_parser().parse_args(base))
    assert default.config.levels == LEVEL_PRESETS["planned"]
    assert default.backend.model == "qwen2.5-coder-0.5b"
    hard = _generation_job(build_parser().parse_args([*base, "--levels", "hard"]))
    assert hard.config.levels == LEVEL_PRESETS["hard"]
    some = _generation_job(build_parser().parse_args([*base, "--levels", "3,0"]))
    assert [level.grade for level in some.config.levels] == [3, 0]
    assert main([*base, "--levels", "hardest"]) == 2
