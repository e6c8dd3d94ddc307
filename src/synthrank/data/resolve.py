"""Find a dataset by path or by name, downloading the official BEIR zip when it is nowhere local.

``beir:NAME`` is looked up in ``$SYNTHRANK_DATA/beir/NAME``, then in the cache
(``$SYNTHRANK_CACHE/datasets/beir/NAME``, default ``~/.cache/synthrank``), then downloaded from
the official BEIR location (``$SYNTHRANK_BEIR_URL`` overrides it, e.g. for a mirror), checked
against the MD5 that BEIR publishes, and unpacked into the cache. Nothing is written beside the
data root, which may be read-only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from synthrank.data.beir import BeirDataset
from synthrank.errors import SynthrankError

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"

BEIR_DATASETS: dict[str, str] = {
    "msmarco": "444067daf65d982533ea17ebd59501e4",
    "trec-covid": "ce62140cb23feb9becf6270d0d1fe6d1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
    "quora": "18fb154900ba42a600f84b839c173167",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
}
"""BEIR's downloadable datasets and the MD5 of each zip, as published in BEIR's README."""

_CHUNK = 1 << 20


def cache_root() -> Path:
    """Where synthrank keeps downloads and embeddings: ``$SYNTHRANK_CACHE`` or
    ``~/.cache/synthrank``."""
    configured = os.environ.get("SYNTHRANK_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "synthrank"


def _is_beir_folder(path: Path) -> bool:
    return (path / "corpus.jsonl").is_file() and (path / "queries.jsonl").is_file()


def download_zip(url: str, dest: Path, md5: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, verifying its MD5.

    A failed or mismatching download leaves nothing at ``dest``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)
    handle, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout) as response,
        ):
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
                while block := response.read(_CHUNK):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        if digest.hexdigest() != md5:
            raise SynthrankError(
                f"{url}: checksum mismatch (MD5 {digest.hexdigest()}, expected {md5}); "
                "the download is corrupt or the file changed upstream; nothing was kept"
            )
        tmp.replace(dest)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SynthrankError(f"{url}: download failed ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def extract_zip_folder(
    archive: Path, target: Path, wanted: Callable[[Path], bool], what: str
) -> Path:
    """Unpack ``archive`` and move the folder in it that ``wanted`` accepts (the top or one level
    down) to ``target``, atomically; paths escaping the archive are refused, and a folder that
    takes no files (full, read-only) is a :class:`SynthrankError`."""
    try:
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    except OSError as exc:
        raise SynthrankError(_cannot_unpack(archive, target, exc)) from exc
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                resolved = (staging / member).resolve()
                if not resolved.is_relative_to(staging.resolve()):
                    raise SynthrankError(f"{archive}: unsafe path in zip: {member}")
            zipped.extractall(staging)
        candidates = [staging, *(p for p in staging.iterdir() if p.is_dir())]
        found = next((c for c in candidates if wanted(c)), None)
        if found is None:
            raise SynthrankError(f"{archive}: no {what} inside")
        found.replace(target)
    except zipfile.BadZipFile as exc:
        raise SynthrankError(f"{archive}: not a valid zip file ({exc})") from exc
    except OSError as exc:
        raise SynthrankError(_cannot_unpack(archive, target, exc)) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _cannot_unpack(archive: Path, target: Path, exc: OSError) -> str:
    return (
        f"{archive}: cannot unpack it into {target.parent} ({exc.strerror or exc}); free space "
        "there or set SYNTHRANK_CACHE to a writable folder"
    )


def _fetch_beir(name: str) -> Path:
    target = cache_root() / "datasets" / "beir" / name
    if _is_beir_folder(target):
        return target
    base = os.environ.get("SYNTHRANK_BEIR_URL", BEIR_URL).rstrip("/")
    archive = download_zip(f"{base}/{name}.zip", target.parent / f"{name}.zip", BEIR_DATASETS[name])
    try:
        return extract_zip_folder(
            archive, target, _is_beir_folder, "BEIR folder (corpus.jsonl and queries.jsonl)"
        )
    finally:
        archive.unlink(missing_ok=True)


def local_beir(name: str) -> Path | None:
    """The folder of BEIR dataset ``name`` on this machine, without downloading it:
    ``$SYNTHRANK_DATA/beir/NAME``, ``$SYNTHRANK_DATA/NAME``, then the download cache; None
    when it is in none of them."""
    data_root = os.environ.get("SYNTHRANK_DATA")
    candidates = [Path(data_root) / "beir" / name, Path(data_root) / name] if data_root else []
    candidates.append(cache_root() / "datasets" / "beir" / name)
    return next((c for c in candidates if _is_beir_folder(c)), None)


def resolve_dataset(spec: str | Path) -> BeirDataset:
    """Turn a dataset argument into a BEIR folder: a path, or ``beir:NAME``."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not _is_beir_folder(path):
            raise SynthrankError(
                f"{path}: not a BEIR folder (expected corpus.jsonl and queries.jsonl inside)"
            )
        return BeirDataset(root=path, name=text)
    if not text.startswith("beir:"):
        raise SynthrankError(
            f'dataset "{text}" not found: give a BEIR folder path or beir:NAME '
            f"(NAME one of {', '.join(sorted(BEIR_DATASETS))})"
        )
    name = text.removeprefix("beir:")
    local = local_beir(name)
    if local is not None:
        return BeirDataset(root=local, name=text)
    if name not in BEIR_DATASETS:
        raise SynthrankError(
            f'unknown BEIR dataset "{name}": not under $SYNTHRANK_DATA and not downloadable; '
            f"known: {', '.join(sorted(BEIR_DATASETS))}"
        )
    return BeirDataset(root=_fetch_beir(name), name=text)
