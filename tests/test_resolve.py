"""Dataset resolution, and the real download path against a loopback HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from synthrank.data import resolve as resolve_module
from synthrank.data import resolve_dataset
from synthrank.errors import SynthrankError


def test_beir_name_resolves_to_data_root(data_root: Path) -> None:
    dataset = resolve_dataset("beir:scifact")
    assert dataset.root == data_root / "beir" / "scifact"
    assert dataset.name == "beir:scifact"


def test_path_resolves_and_non_beir_folder_is_rejected(tmp_path: Path, data_root: Path) -> None:
    assert resolve_dataset(data_root / "beir" / "scifact").root == data_root / "beir" / "scifact"
    with pytest.raises(SynthrankError, match="not a BEIR folder"):
        resolve_dataset(tmp_path)
    with pytest.raises(SynthrankError, match="give a BEIR folder path or beir:NAME"):
        resolve_dataset(tmp_path / "missing")
    with pytest.raises(SynthrankError, match='unknown BEIR dataset "nope"'):
        resolve_dataset("beir:nope")


class _ZipServer:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits.append(self.path)
                body = server.files.get(self.path.rsplit("/", 1)[-1])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/datasets"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def zip_server() -> Iterator[_ZipServer]:
    server = _ZipServer({})
    yield server
    server.httpd.shutdown()


def _beir_zip(path: Path, folder: str) -> bytes:
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr(f"{folder}/corpus.jsonl", '{"_id": "d1", "title": "", "text": "hello"}\n')
        zipped.writestr(f"{folder}/queries.jsonl", '{"_id": "q1", "text": "hi"}\n')
        zipped.writestr(f"{folder}/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return path.read_bytes()


def test_download_verifies_unpacks_and_caches(
    tmp_path: Path, zip_server: _ZipServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _beir_zip(tmp_path / "toy.zip", "toy")
    zip_server.files["toy.zip"] = body
    monkeypatch.setitem(resolve_module.BEIR_DATASETS, "toy", hashlib.md5(body).hexdigest())
    monkeypatch.setenv("SYNTHRANK_BEIR_URL", zip_server.url)
    monkeypatch.setenv("SYNTHRANK_DATA", str(tmp_path / "empty-data-root"))

    dataset = resolve_dataset("beir:toy")
    assert dataset.root == tmp_path / "cache" / "datasets" / "beir" / "toy"
    assert dataset.qrels("test") == {"q1": {"d1": 1}}
    assert [d.text for d in dataset.corpus().values()] == ["hello"]
    assert zip_server.hits == ["/datasets/toy.zip"]
    assert not list(dataset.root.parent.glob("*.zip")), "the zip is removed after unpacking"

    assert resolve_dataset("beir:toy").root == dataset.root
    assert len(zip_server.hits) == 1, "a cached dataset is not downloaded again"


def test_checksum_mismatch_keeps_nothing(
    tmp_path: Path, zip_server: _ZipServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    zip_server.files["toy.zip"] = _beir_zip(tmp_path / "toy.zip", "toy")
    monkeypatch.setitem(resolve_module.BEIR_DATASETS, "toy", "0" * 32)
    monkeypatch.setenv("SYNTHRANK_BEIR_URL", zip_server.url)
    monkeypatch.delenv("SYNTHRANK_DATA")
    with pytest.raises(SynthrankError, match="checksum mismatch"):
        resolve_dataset("beir:toy")
    cache = tmp_path / "cache" / "datasets" / "beir"
    assert not any(cache.iterdir())


def test_http_error_is_a_clear_error(
    tmp_path: Path, zip_server: _ZipServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(resolve_module.BEIR_DATASETS, "absent", "0" * 32)
    monkeypatch.setenv("SYNTHRANK_BEIR_URL", zip_server.url)
    monkeypatch.delenv("SYNTHRANK_DATA")
    with pytest.raises(SynthrankError, match=r"absent\.zip: download failed \(HTTP Error 404"):
        resolve_dataset("beir:absent")


def test_zip_with_escaping_path_is_rejected(
    tmp_path: Path, zip_server: _ZipServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("../outside.txt", "x")
    body = evil.read_bytes()
    zip_server.files["evil.zip"] = body
    monkeypatch.setitem(resolve_module.BEIR_DATASETS, "evil", hashlib.md5(body).hexdigest())
    monkeypatch.setenv("SYNTHRANK_BEIR_URL", zip_server.url)
    monkeypatch.delenv("SYNTHRANK_DATA")
    with pytest.raises(SynthrankError, match="unsafe path in zip"):
        resolve_dataset("beir:evil")
    assert not (tmp_path / "cache" / "datasets" / "outside.txt").exists()
