"""Stage identity covers the content of what a stage reads, and one writer holds an output
folder: the same experiment from another working directory, or data fixed in place, runs the
stages that read it again; a second process on a folder being written is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer

from synthrank.cli import main
from synthrank.data import Document, Query, write_corpus, write_qrels, write_queries
from synthrank.errors import SynthrankError
from synthrank.experiment import load_experiment, run_experiment
from synthrank.fileio import LOCK_FILE, FolderLock
from synthrank.fingerprint import content_digest
from synthrank.llm.store import read_journal

DOCS = {
    "d1": "Insulin lowers blood sugar by helping cells take up glucose.",
    "d2": "Volcanoes erupt when magma rises through cracks in the crust.",
    "d3": "Sourdough bread rises because wild yeast ferments the dough.",
    "d4": "Glaciers carve valleys as the ice slowly flows downhill.",
    "d5": "Bees communicate the direction of flowers with a waggle dance.",
}
QUERIES = {
    "q1": "how does insulin lower blood sugar",
    "q2": "why do volcanoes erupt",
    "q3": "what makes sourdough bread rise",
}
RIGHT = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}
WRONG = {"q1": {"d4": 1}, "q2": {"d5": 1}, "q3": {"d4": 1}}

EXPERIMENT = """
name = "identity"
base_model = "{model}"

[[train]]
name = "ws2"
loss = "ws2"
data = ["data/mini,split=test,bm25=1:0"]
group_size = 2
batch_size = 2
max_steps = 1
max_length = 32

[evaluate]
datasets = ["data/mini"]
split = "test"
max_length = 64
"""


def _dataset(root: Path, qrels: dict[str, dict[str, int]]) -> Path:
    write_corpus(root / "corpus.jsonl", [Document(i, t) for i, t in DOCS.items()])
    write_queries(root / "queries.jsonl", [Query(i, t) for i, t in QUERIES.items()])
    write_qrels(root / "qrels" / "test.tsv", qrels)
    return root


def _base_ndcg(root: Path) -> float:
    (metrics,) = [p for p in (root / "eval").rglob("metrics.json") if "base-" in str(p)]
    return json.loads(metrics.read_text())["metrics"]["nDCG@10"]


def test_content_digest_is_the_data_not_its_path_or_mtime(tmp_path):
    one = _dataset(tmp_path / "one", RIGHT)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    os.utime(two / "corpus.jsonl", (1, 1))
    assert content_digest(one) == content_digest(two)
    (two / ".synthrank.lock").write_text("process 1")  # hidden files are not data
    assert content_digest(one) == content_digest(two)
    write_qrels(two / "qrels" / "test.tsv", WRONG)
    assert content_digest(one) != content_digest(two)
    assert content_digest(one / "corpus.jsonl") == content_digest(two / "corpus.jsonl")


def test_other_data_under_the_same_relative_path_reruns_what_reads_it(
    tmp_path, tiny_model_dir, monkeypatch
):
    _dataset(tmp_path / "A" / "data" / "mini", RIGHT)
    _dataset(tmp_path / "B" / "data" / "mini", WRONG)
    config = tmp_path / "exp.toml"
    config.write_text(EXPERIMENT.format(model=tiny_model_dir))
    root = tmp_path / "run"
    logs: list[str] = []

    monkeypatch.chdir(tmp_path / "A")
    run_experiment(load_experiment(config), root, progress=False, log=logs.append)
    in_a = _base_ndcg(root)
    records = {p.parent.name: json.loads(p.read_text()) for p in root.rglob("stage.json")}
    base = next(r for name, r in records.items() if name.startswith("base-"))
    qrels = base["reads"]["data/mini qrels/test.tsv"]
    assert qrels["path"] == str(tmp_path / "A" / "data" / "mini" / "qrels" / "test.tsv")
    assert len(qrels["sha256"]) == 64 and len(base["content"]) == 16

    # The same config from B: "data/mini" names other qrels. Every stage reads them (the
    # training through its data source, the evaluations directly or through the model).
    monkeypatch.chdir(tmp_path / "B")
    logs.clear()
    stages = run_experiment(load_experiment(config), root, dry_run=True, log=logs.append)
    assert [s.state() for s in stages] == ["done"] * len(stages)
    assert sum(" changed " in line for line in logs) == len(stages)
    assert any("data/mini qrels/test.tsv changed" in line for line in logs)
    assert any("reads the output of train ws2, which changed" in line for line in logs)
    logs.clear()
    run_experiment(load_experiment(config), root, progress=False, log=logs.append)
    in_b = _base_ndcg(root)
    assert in_a != in_b
    direct = main(
        [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--dataset",
            "data/mini",
            "--max-length",
            "64",
            "--output",
            str(tmp_path / "direct"),
            "--quiet",
        ]
    )
    assert direct == 0
    expected = json.loads((tmp_path / "direct" / "metrics.json").read_text())
    assert in_b == pytest.approx(expected["metrics"]["nDCG@10"])
    # Nothing finished is lost: the results from A are kept beside the run.
    kept = list((root / ".changed").rglob("metrics.json"))
    assert len(kept) == 2
    assert any(json.loads(p.read_text())["metrics"]["nDCG@10"] == in_a for p in kept)

    # Unchanged data: nothing runs again.
    logs.clear()
    run_experiment(load_experiment(config), root, progress=False, log=logs.append)
    assert not any(line.startswith(("train:", "evaluate:")) for line in logs)

    # Data fixed in place: the same path, other content.
    write_qrels(tmp_path / "B" / "data" / "mini" / "qrels" / "test.tsv", RIGHT)
    run_experiment(load_experiment(config), root, progress=False, log=logs.append)
    assert _base_ndcg(root) == in_a


def test_a_stage_finished_before_content_was_recorded_stays_done_and_is_recorded(
    tmp_path, tiny_model_dir, monkeypatch
):
    _dataset(tmp_path / "data" / "mini", RIGHT)
    config = tmp_path / "exp.toml"
    config.write_text(EXPERIMENT.format(model=tiny_model_dir))
    root = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    run_experiment(load_experiment(config), root, progress=False, log=lambda _: None)
    paths = list(root.rglob("stage.json"))
    for path in paths:  # as a run of an earlier synthrank left them
        record = json.loads(path.read_text())
        for key in ("reads", "needs", "content"):
            record.pop(key)
        path.write_text(json.dumps(record))
    logs: list[str] = []
    run_experiment(load_experiment(config), root, progress=False, log=logs.append)
    assert not any("changed" in line for line in logs)
    assert all("content" in json.loads(p.read_text()) for p in paths)


def test_a_second_writer_of_a_folder_is_refused_naming_the_holder(tmp_path):
    folder = tmp_path / "out"
    with FolderLock(folder):
        with FolderLock(folder):  # the same process may take it again
            pass
        child = _take_lock(folder)
        assert child.returncode == 1
        assert f"{folder} is being written by process {os.getpid()} on " in child.stderr
    # Released: another process takes it.
    assert _take_lock(folder).returncode == 0


def _take_lock(folder: Path) -> subprocess.CompletedProcess:
    """Another process that takes the lock of ``folder`` and ends."""
    code = "import sys; from pathlib import Path; from synthrank.fileio import FolderLock; "
    code += "FolderLock(Path(sys.argv[1])).acquire()"
    return subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)


def _six_queries(tmp_path: Path) -> Path:
    queries = tmp_path / "q.jsonl"
    lines = [json.dumps({"_id": f"q{i}", "text": f"how does thing {i} work"}) for i in range(6)]
    queries.write_text("\n".join(lines) + "\n")
    return queries


def _generate_command(queries: Path, out: Path, url: str) -> list[str]:
    return [
        "generate", "--queries", str(queries), "--levels", "3,0", "--out", str(out),
        "--llm-backend", "openai", "--endpoint", url, "--model", "fake", "--concurrency", "2",
        "--quiet",
    ]  # fmt: skip


def _start(command: list[str], out: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "synthrank.cli", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (out / "lists.jsonl").is_file() or not (out / "lists.jsonl").stat().st_size:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    return process


def test_two_generate_processes_on_one_folder_commit_each_query_once(tmp_path, capsys):
    queries = _six_queries(tmp_path)
    out = tmp_path / "gen"
    with FakeLLMServer(delay_s=0.4) as server:
        command = _generate_command(queries, out, server.url)
        first = _start(command, out)
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{out} is being written by process {first.pid} on " in err
        assert first.wait(timeout=120) == 0
    records = read_journal(out)
    assert sorted(r.query_id for r in records) == [f"q{i}" for i in range(6)]
    corpus_ids = [json.loads(x)["_id"] for x in (out / "corpus.jsonl").read_text().splitlines()]
    assert len(corpus_ids) == len(set(corpus_ids)) == 12


def test_the_lock_dies_with_a_killed_writer(tmp_path):
    queries = _six_queries(tmp_path)
    out = tmp_path / "gen"
    with FakeLLMServer(delay_s=0.4) as server:
        command = _generate_command(queries, out, server.url)
        first = _start(command, out)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert (out / LOCK_FILE).is_file()
        assert main(command) == 0
    assert sorted(r.query_id for r in read_journal(out)) == [f"q{i}" for i in range(6)]


def test_a_second_run_of_an_experiment_folder_is_refused(tmp_path, tiny_model_dir, monkeypatch):
    _dataset(tmp_path / "data" / "mini", RIGHT)
    config = tmp_path / "exp.toml"
    config.write_text(EXPERIMENT.format(model=tiny_model_dir))
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "run"
    with _Holder(root) as holder:
        with pytest.raises(SynthrankError, match=f"is being written by process {holder.pid} "):
            run_experiment(load_experiment(config), root, progress=False, log=lambda _: None)
        assert not (root / "train").exists()  # refused before any stage ran


class _Holder:
    """Another process holding the lock of ``folder`` until the block ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> subprocess.Popen:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; from pathlib import Path; "
                "from synthrank.fileio import FolderLock; FolderLock(Path(sys.argv[1])).acquire(); "
                "print('held', flush=True); time.sleep(120)",
                str(self.folder),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "held"
        return self.process

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait()


def test_every_writer_of_an_output_folder_is_refused_while_another_holds_it(
    tmp_path, tiny_model_dir
):
    from synthrank.evaluate import evaluate
    from synthrank.generate import GenerateJob, generate
    from synthrank.generate.doc2query import QueryGenJob, generate_queries
    from synthrank.generate.graded import GradeJob, grade_real_lists
    from synthrank.generate.judge import JudgeConfig, judge_dataset
    from synthrank.train import SourceSpec, TrainConfig, train

    data = _dataset(tmp_path / "mini", RIGHT)
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"_id": "q1", "text": "how does insulin work"}) + "\n")
    with FakeLLMServer() as server:
        from synthrank.generate import BackendSpec

        spec = BackendSpec(backend="openai", model="fake", endpoints=(server.url,))
        generate(GenerateJob(str(queries), tmp_path / "gen", backend=spec), progress=False)
        writers = {
            "generate": lambda out: generate(
                GenerateJob(str(queries), out, backend=spec), progress=False
            ),
            "generate-queries": lambda out: generate_queries(
                QueryGenJob(str(data), out, backend=spec), progress=False
            ),
            "grade": lambda out: grade_real_lists(
                GradeJob(str(data), out, split="test", top_n=2), _NeverCalled(), progress=False
            ),
            "judge": lambda out: judge_dataset(
                tmp_path / "gen", out, JudgeConfig(encoder=str(tiny_model_dir)), progress=False
            ),
            "train": lambda out: train(
                TrainConfig(
                    data=[SourceSpec(str(data), split="test", bm25_negatives=1, bm25_label=0)],
                    out=out,
                    base_model=str(tiny_model_dir),
                    group_size=2,
                    batch_size=2,
                    max_steps=1,
                ),
                progress=False,
            ),
            "evaluate": lambda out: evaluate(
                str(tiny_model_dir), data, progress=False, cache_dir=None, output=out
            ),
        }
        for name, write in writers.items():
            out = tmp_path / f"out-{name}"
            with _Holder(out) as holder, pytest.raises(SynthrankError) as refused:
                write(out)
            assert f"{out} is being written by process {holder.pid} on " in str(refused.value)
            assert [p.name for p in out.iterdir()] == [LOCK_FILE], name  # nothing written


class _NeverCalled:
    """A judge backend that must not be reached (the folder is refused first)."""

    name = "never"

    def complete(self, requests):
        raise AssertionError("the refused job called its backend")

    def describe(self):
        return {"backend": "never", "model": "never"}

    def close(self):
        return None
