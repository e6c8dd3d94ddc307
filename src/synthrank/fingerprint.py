"""Content fingerprints of the files a stage reads: the identity of data by what it holds, not
by the path that names it.

A path string names other data from another working directory, and data fixed in place keeps
its name; an mtime changes with every fresh clone. :func:`content_digest` is the SHA-256 of a
file's bytes, or of a folder's files (each relative path with its own digest), so the same data
has the same fingerprint on every machine. Digests are cached per file under
``$SYNTHRANK_CACHE/fingerprints``, keyed by the file's resolved path, size, mtime and inode, so a
large model is hashed once; the cache is an optimisation only (a cache that cannot be written is
skipped with a warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from synthrank.fileio import sha256_file

MISSING = "missing"
"""The digest recorded for a path that does not exist."""
_memo: dict[tuple[str, int, int, int], str] = {}
_warned = False


def _cache_dir() -> Path:
    from synthrank.data.resolve import cache_root

    return cache_root() / "fingerprints"


def _file_key(path: Path) -> tuple[str, int, int, int]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


def file_digest(path: Path) -> str:
    """The SHA-256 (hex) of the bytes of file ``path``."""
    key = _file_key(path)
    if key in _memo:
        return _memo[key]
    entry = _cache_dir() / (hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32] + ".txt")
    try:
        cached = entry.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        cached = ""
    if len(cached) == 64:
        _memo[key] = cached
        return cached
    value = sha256_file(path)
    _memo[key] = value
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text(value + "\n", encoding="ascii")
    except OSError as exc:
        global _warned
        if not _warned:
            _warned = True
            warnings.warn(
                f"fingerprint cache at {entry.parent} not written ({exc.strerror or exc}); "
                "files are hashed again next time",
                stacklevel=2,
            )
    return value


def content_digest(path: Path) -> str:
    """The SHA-256 (hex) of a file's bytes, or of a folder's files: each file's path relative
    to the folder (``/``-separated, sorted) with its :func:`file_digest`. Hidden files and
    folders (``.cache``, ``.git``) are left out. :class:`FileNotFoundError` when ``path`` is
    neither a file nor a folder."""
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            file = Path(root) / name
            relative = file.relative_to(path).as_posix()
            digest.update(f"{relative}\0{file_digest(file)}\n".encode())
    return digest.hexdigest()


def fingerprints(paths: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Per label of ``paths``, the resolved path and its :func:`content_digest` (``sha256``):
    what ``stage.json`` records of the files a stage read. A path that does not exist is
    recorded with ``sha256`` :data:`MISSING`."""
    found: dict[str, dict[str, str]] = {}
    for label, path in paths.items():
        value = content_digest(path) if path.exists() else MISSING
        found[label] = {"path": str(path.resolve()), "sha256": value}
    return found
