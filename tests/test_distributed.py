"""Two processes on the gloo backend train exactly like one process on the whole batch.

Runs the real command under torchrun: ``synthrank train`` with 2 processes x 4 queries against
1 process x 8 queries, on a dataset of exactly 8 queries so both see the same global batch. The
losses gather every process's embeddings (so each loss call sees all 8 queries' passages), and the
logged loss and gradient norm of the step must match, and so must the trained weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer

from synthrank.data import BeirDataset, write_qrels

# Starts torchrun (minutes of CPU): `pytest -m "not llm"` skips it.
pytestmark = pytest.mark.llm


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def eight_queries(graded_toy: BeirDataset, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eight")
    for name in ("corpus.jsonl", "queries.jsonl"):
        (root / name).write_bytes((graded_toy.root / name).read_bytes())
    qrels = graded_toy.qrels("train")
    write_qrels(root / "qrels" / "train.tsv", {q: qrels[q] for q in sorted(qrels)[:8]})
    return root


def _train(processes: int, batch: int, loss: str, data: Path, base: Path, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "synthrank.cli",
        "train",
        "--data",
        str(data),
        "--base",
        str(base),
        "--loss",
        loss,
        "--out",
        str(out),
        "--per-device-train-batch-size",
        str(batch),
        "--max-steps",
        "1",
        "--max-length",
        "32",
        "--learning-rate",
        "1e-3",
        "--warmup-ratio",
        "0",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = [json.loads(line) for line in (out / "train_log.jsonl").open()]
    return record


@pytest.mark.parametrize("loss", ["ws2", "w1", "infonce"])
def test_two_processes_equal_one(
    loss: str, eight_queries: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    one = _train(1, 8, loss, eight_queries, tiny_model_dir, tmp_path / "one")
    two = _train(2, 4, loss, eight_queries, tiny_model_dir, tmp_path / "two")
    assert two["epoch"] == one["epoch"] == 1.0, "both saw the 8 queries in one step"
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)
    single = SentenceTransformer(str(tmp_path / "one"), device="cpu").state_dict()
    double = SentenceTransformer(str(tmp_path / "two"), device="cpu").state_dict()
    for name, tensor in single.items():
        torch.testing.assert_close(double[name], tensor, rtol=1e-4, atol=1e-6, msg=name)
