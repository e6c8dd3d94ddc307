"""Disks that are full or read-only: the embedding cache degrades to a warning, output folders are
checked before the long work, and every failed write is a one-line error. The failures are
injected at the write calls (tests run as root, which ignores permission bits)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from synthrank.data import BeirDataset
from synthrank.errors import SynthrankError
from synthrank.evaluate import evaluate
from synthrank.evaluate.encode import EmbeddingCache
from synthrank.fileio import SynthrankWarning, require_writable_dir


def _os_error(code: int, path: object) -> OSError:
    return OSError(code, os.strerror(code), str(path))


@contextlib.contextmanager
def _failing_temp_files(monkeypatch: pytest.MonkeyPatch, under: Path, code: int) -> Iterator[None]:
    """Temporary files under ``under`` cannot be made (``code``: a read-only mount, a full
    disk): how atomic writes and the writability probe fail there."""
    make_temp = tempfile.mkstemp

    def failing(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(under.resolve()):
            raise _os_error(code, dir)
        return make_temp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", failing)
    yield


@contextlib.contextmanager
def _failing_writes(
    monkeypatch: pytest.MonkeyPatch, under: Path, code: int, at: str
) -> Iterator[list[Path]]:
    """Writes of the embedding cache under ``under`` fail with ``code``: when its database file
    is made (``at="create"``, as on a read-only mount or without permission) or when rows are
    written into it (``at="write"``, as on a full disk: SQLite's "database or disk is full").
    Yields the paths that were tried."""
    import sqlite3

    tried: list[Path] = []
    connect = sqlite3.connect

    class FullDisk:
        """A connection whose writes fail as SQLite's do on a full disk."""

        def __init__(self, real: sqlite3.Connection, path: Path) -> None:
            self.real, self.path = real, path

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def execute(self, *args):
            return self.real.execute(*args)

        def executemany(self, *args):
            tried.append(self.path)
            raise sqlite3.OperationalError("database or disk is full")

        def close(self):
            self.real.close()

    def failing(path, *args, **kwargs):
        where = Path(str(path))
        if where.resolve().is_relative_to(under.resolve()):
            if at == "create":
                tried.append(where)
                raise _os_error(code, where)
            return FullDisk(connect(path, *args, **kwargs), where)
        return connect(path, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", failing)
    yield tried


@pytest.mark.parametrize(
    ("code", "at", "reason"),
    [
        (errno.ENOSPC, "write", "database or disk is full"),
        (errno.EROFS, "create", "Read-only file system"),
        (errno.EACCES, "create", "Permission denied"),
    ],
)
def test_cache_that_cannot_be_written_is_one_warning_and_the_evaluation_completes(
    tiny_model_dir: Path,
    mini_scifact: BeirDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    at: str,
    reason: str,
) -> None:
    reference = evaluate(str(tiny_model_dir), mini_scifact, cache_dir=None, progress=False)
    cache, out = tmp_path / "cache", tmp_path / "eval"
    with _failing_writes(monkeypatch, cache, code, at) as tried:
        result = evaluate(
            str(tiny_model_dir), mini_scifact, cache_dir=cache, progress=False, output=out
        )
    expected = f"embedding cache at {cache} not written: {reason}; --no-cache turns it off"
    assert result.warnings == [expected]
    assert len(tried) == 1, "after the first failure the cache is not written again"
    assert result.metrics == reference.metrics
    assert result.settings["embeddings_encoded"] == 240
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == reference.metrics
    assert saved["warnings"] == [expected]
    rows = [_rows(p) for p in cache.rglob("*.sqlite")]
    assert rows in ([], [0]), "no cache entry is left"


def _rows(database: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(database)) as connection:
        return connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]


def test_a_damaged_cache_is_read_past(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache", warnings=[])
    entry = tmp_path / "cache" / "model.sqlite"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"not a database at all, " * 100)
    assert cache.load("model", ["k1", "k2"]) == {}
    assert entry.is_file()


def test_cache_without_a_warnings_list_issues_a_python_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judge and inspect use the cache without collecting warnings: they still see one."""
    cache = EmbeddingCache(tmp_path / "cache")
    with (
        _failing_writes(monkeypatch, tmp_path / "cache", errno.ENOSPC, "write"),
        pytest.warns(SynthrankWarning) as caught,
    ):
        cache.save("model", ["a", "b"], np.zeros((2, 3), dtype=np.float32))
        cache.save("model", ["c", "d"], np.zeros((2, 3), dtype=np.float32))
    assert [str(w.message) for w in caught] == [
        f"embedding cache at {tmp_path / 'cache'} not written: database or disk is full; "
        "--no-cache turns it off"
    ]


def test_cache_round_trip_still_works(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache", warnings=[])
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    cache.save("model", ["a", "b"], vectors)
    found = EmbeddingCache(tmp_path / "cache").load("model", ["b", "a", "missing"])
    np.testing.assert_array_equal(found["a"], vectors[0])
    np.testing.assert_array_equal(found["b"], vectors[1])
    assert set(found) == {"a", "b"} and cache.warnings == []
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["model.sqlite"]


def test_read_only_output_fails_before_any_encoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mini_scifact: BeirDataset
) -> None:
    import synthrank.evaluate.runner as runner

    def never(*args, **kwargs):
        raise AssertionError("the evaluation started")

    monkeypatch.setattr(runner, "load_model", never)
    monkeypatch.setattr(runner, "encode_texts", never)
    out = tmp_path / "ro" / "eval"
    with (
        _failing_temp_files(monkeypatch, tmp_path / "ro", errno.EROFS),
        pytest.raises(SynthrankError) as caught,
    ):
        evaluate("minilm", mini_scifact, cache_dir=None, progress=False, output=out)
    assert str(caught.value) == f"cannot write to {out}: Read-only file system"
    assert not out.exists()  # the folder the refused evaluation made is gone again


def test_require_writable_dir_creates_the_folder_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    assert require_writable_dir(out) == out
    assert out.is_dir() and list(out.iterdir()) == []


def test_require_writable_dir_names_the_folder_when_it_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_mkdir(self: Path, *args, **kwargs) -> None:
        raise _os_error(errno.ENOSPC, self)

    monkeypatch.setattr(Path, "mkdir", full_mkdir)
    with pytest.raises(SynthrankError) as caught:
        require_writable_dir(tmp_path / "out")
    assert str(caught.value) == f"cannot write to {tmp_path / 'out'}: No space left on device"


def test_saving_a_result_into_a_full_disk_is_one_line_error(
    tiny_model_dir: Path,
    mini_scifact: BeirDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = evaluate(str(tiny_model_dir), mini_scifact, cache_dir=None, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    with (
        _failing_temp_files(monkeypatch, out, errno.ENOSPC),
        pytest.raises(SynthrankError) as caught,
    ):
        result.save(out)
    assert str(caught.value) == f"cannot write to {out}: No space left on device"


def test_holdout_checks_its_output_before_copying_the_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mini_scifact: BeirDataset
) -> None:
    from synthrank.data.derive import split_holdout

    def never(self: BeirDataset, **kwargs) -> None:
        raise AssertionError("the corpus was read")

    monkeypatch.setattr(BeirDataset, "corpus", never)
    out = tmp_path / "ro" / "held"
    with (
        _failing_temp_files(monkeypatch, tmp_path / "ro", errno.EROFS),
        pytest.raises(SynthrankError) as caught,
    ):
        split_holdout(mini_scifact, "test", 10, out)
    assert str(caught.value) == f"cannot write to {out}: Read-only file system"


def test_dataset_zip_that_cannot_be_unpacked_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synthrank.data.resolve import extract_zip_folder

    archive = tmp_path / "toy.zip"
    archive.write_bytes(b"")
    target = tmp_path / "cache" / "toy"
    target.parent.mkdir()

    def read_only_mkdtemp(*args, **kwargs) -> str:
        raise _os_error(errno.EROFS, target.parent)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only_mkdtemp)
    with pytest.raises(SynthrankError) as caught:
        extract_zip_folder(archive, target, lambda p: True, "BEIR folder")
    assert str(caught.value) == (
        f"{archive}: cannot unpack it into {target.parent} (Read-only file system); free space "
        "there or set SYNTHRANK_CACHE to a writable folder"
    )


def test_a_full_disk_while_training_saves_is_one_line_error(
    graded_toy: BeirDataset, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """safetensors reports a full disk with its own error type (no OSError): it is one line
    too, naming the folder and the last complete checkpoint."""
    from sentence_transformers import SentenceTransformerTrainer

    from synthrank.train import SourceSpec, TrainConfig, train

    class SafetensorError(Exception):
        pass

    def full(self, *args, **kwargs):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(SentenceTransformerTrainer, "save_model", full)
    out = tmp_path / "model"
    config = TrainConfig(
        data=[SourceSpec(str(graded_toy.root))], out=out, base_model=str(tiny_model_dir),
        batch_size=8, max_steps=1, max_length=32,
    )  # fmt: skip
    with pytest.raises(SynthrankError) as caught:
        train(config, progress=False)
    assert str(caught.value) == (
        f"cannot save in {out / 'checkpoints'}: No space left on device (os error 28); complete "
        "checkpoints are kept (last: none): free space and run the same command with --resume"
    )


def test_a_lock_that_cannot_be_written_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synthrank.fileio import LOCK_FILE, FolderLock

    real_open = Path.open

    class FullDisk:
        """The lock file on a full disk: it opens and locks, but writing fails."""

        def __init__(self, handle) -> None:
            self.handle = handle

        def fileno(self) -> int:
            return self.handle.fileno()

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def opening(self: Path, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        return FullDisk(handle) if self.name == LOCK_FILE else handle

    monkeypatch.setattr(Path, "open", opening)
    out = tmp_path / "out"
    with pytest.raises(SynthrankError) as caught:
        FolderLock(out).acquire()
    assert str(caught.value) == f"cannot write to {out}: No space left on device"
    assert not out.exists()
