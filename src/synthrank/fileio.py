"""Text reading that drops a byte-order mark, and atomic file writes: a reader (or a crash) sees
the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

TEXT_ENCODING = "utf-8-sig"
"""How every text input is read: UTF-8, with a leading byte-order mark dropped (Windows editors
and Excel write one; kept, it would become part of the first id or key)."""


def read_text(path: Path) -> str:
    """The text of ``path`` read as :data:`TEXT_ENCODING`."""
    return path.read_text(encoding=TEXT_ENCODING)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved over ``path`` (with the usual
    permissions, not mkstemp's private ones) when the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[TextIO]:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        yield handle


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_json_atomic(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def slug(text: str) -> str:
    """``text`` as a file name: characters other than letters, digits, ``-_.`` become ``-``."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "run"


def group_name(model: str) -> str:
    """``ws2@1`` -> ``ws2``: the experiment's [[train]] name of one seed's model."""
    return model.split("@", 1)[0]
