"""Text reading that drops a byte-order mark and names the line of bytes that are not UTF-8,
warnings that do not stop a run, checks that an output folder takes files, and atomic file
writes: a reader (or a crash) sees the old file or the new one, never half."""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TextIO

from synthrank.errors import SynthrankError

TEXT_ENCODING = "utf-8-sig"
"""How every text input is read: UTF-8, with a leading byte-order mark dropped (Windows editors
and Excel write one; kept, it would become part of the first id or key)."""


class SynthrankWarning(UserWarning):
    """Something a user should know about an input or a cache that does not stop the run (an id
    read without its surrounding whitespace, an embedding cache that could not be written)."""


def warn(message: str, into: list[str] | None) -> None:
    """Report ``message``: appended to ``into``, the caller's list of warnings to show (as
    :func:`synthrank.evaluate.evaluate` shows and saves them), or, without one, issued as a
    :class:`SynthrankWarning` so that it is never lost."""
    if into is not None:
        into.append(message)
    else:
        warnings.warn(message, SynthrankWarning, stacklevel=3)


def quoted(text: str) -> str:
    """``text`` in double quotes, with whitespace other than a space and every character that
    does not print escaped as Python does (``"d1\\t"``, ``"\\xa0d1"``), so that a message shows
    exactly what a file holds."""
    escaped = (c if c == " " or (c.isprintable() and c not in '"\\') else _escape(c) for c in text)
    return '"' + "".join(escaped) + '"'


def _escape(char: str) -> str:
    return "\\" + char if char in '"\\' else char.encode("unicode_escape").decode("ascii")


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def lone_surrogate(text: str) -> str | None:
    """The problem of a string that holds a lone surrogate (JSON can escape one, ``"\\ud83c"``,
    half of an emoji's pair; it is not valid Unicode and cannot be encoded), else None."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return f"lone surrogate \\u{ord(found.group()):04x} (not valid Unicode)"


def _not_utf8(exc: UnicodeDecodeError, offset: int = 0) -> str:
    return f"not UTF-8 text ({exc.reason} at byte {exc.start + offset})"


def decode_line(raw: bytes) -> str:
    """One line of a text file as :data:`TEXT_ENCODING` (a byte-order mark at its start dropped,
    as files joined together have them); UnicodeDecodeError as ``bytes.decode`` raises it, with
    ``start`` counted in ``raw``."""
    text = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        skipped = len(raw) - len(text)
        raise UnicodeDecodeError(
            exc.encoding, raw, exc.start + skipped, exc.end + skipped, exc.reason
        ) from None


def iter_lines(path: Path, bad_line: Callable[[int, str], None]) -> Iterator[tuple[int, str]]:
    """The lines of ``path``, numbered from 1, without their line ending (``\\n`` or ``\\r\\n``),
    each decoded by :func:`decode_line`. A line that is not UTF-8 is skipped after passing its
    number and problem (``not UTF-8 text (invalid continuation byte at byte 3)``) to
    ``bad_line``: nothing is read with replacement characters, which would change ids."""
    for line_no, _, _, text in iter_line_spans(path, bad_line):
        yield line_no, text


def iter_line_spans(
    path: Path, bad_line: Callable[[int, str], None]
) -> Iterator[tuple[int, int, int, str]]:
    """(number, byte offset, byte length, text) of each line of ``path`` as :func:`iter_lines`
    reads them; offset and length (in bytes, the line ending left out) let a reader fetch the
    line again later (``os.pread``) instead of keeping it."""
    offset = 0
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            try:
                yield line_no, start, len(raw), decode_line(raw)
            except UnicodeDecodeError as exc:
                bad_line(line_no, _not_utf8(exc))


def read_text(path: Path) -> str:
    """The text of ``path`` read as :data:`TEXT_ENCODING`; :class:`SynthrankError` naming the
    line when it is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode(TEXT_ENCODING)
    except UnicodeDecodeError as exc:
        offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        position = exc.start + offset
        line_start = data.rfind(b"\n", 0, position) + 1
        line_no = data.count(b"\n", 0, position) + 1
        raise SynthrankError(
            f"{path}, line {line_no}: {_not_utf8(exc, offset - line_start)}"
        ) from None


def require_writable_dir(path: Path) -> Path:
    """Create the folder ``path`` (and its parents) and check that a file can be written in it,
    so that a command fails before its long work rather than after it; :class:`SynthrankError`
    (``cannot write to PATH: Read-only file system``) when it cannot."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path, prefix=".synthrank-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise SynthrankError(f"cannot write to {path}: {exc.strerror or exc}") from exc
    return path


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
"""Write failures a user fixes outside synthrank (a full disk or quota, a read-only mount,
permissions): reported in one line with the path, never as a traceback."""


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Give an :class:`OSError` raised in the block the ``path`` being written, when it has
    none (``write`` and ``flush`` on an open file raise ``No space left on device`` without
    naming it)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def write_error(exc: OSError) -> str:
    """``no space left on device writing PATH``: a write failure in words, for one line."""
    reason = (exc.strerror or str(exc)).lower()
    return f"{reason} writing {exc.filename}" if exc.filename else reason


def sha256_file(path: Path) -> str:
    """The SHA-256 (hex) of the bytes of file ``path``, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def listed(ids: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` of ``ids`` joined by commas, ``, ...`` after them when there are
    more: the examples an error or warning names."""
    return ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")


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


LOCK_FILE = ".synthrank.lock"


class FolderLock:
    """An exclusive lock on an output folder, held while one process writes it: a second
    writer (a requeued cluster job beside the old one, a second terminal) is refused at once,
    naming the holder. It is an ``flock`` on ``FOLDER/.synthrank.lock``, so it dies with its
    process (``kill -9`` included) and never needs cleaning up; the file keeps the last
    holder's process id, host and start time for the message. Use as a context manager, or
    :meth:`acquire` / :meth:`release`. Re-entrant within one process (a job that calls another
    on the same folder). A folder the lock made, and that holds nothing else when it is
    released (a job refused before it wrote anything), is removed again."""

    _held: ClassVar[dict[str, list[Any]]] = {}
    """Resolved folder -> [holders in this process, the open lock file, folder made by it]."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._key: str | None = None

    def acquire(self) -> FolderLock:
        import fcntl
        import socket
        import time

        if self._key is not None:
            return self
        made = not self.folder.exists()
        key = str(self.folder.resolve())
        if key in FolderLock._held:
            FolderLock._held[key][0] += 1
            self._key = key
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = (self.folder / LOCK_FILE).open("a+", encoding="utf-8")
        except OSError as exc:
            raise SynthrankError(f"cannot write to {self.folder}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SynthrankError(
                f"{self.folder} is being written by {holder}; wait for it to end (or stop it), "
                "or choose another output folder"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            handle.write(f"process {os.getpid()} on {socket.gethostname()} since {started}\n")
            handle.flush()
        except OSError as exc:
            handle.close()
            with contextlib.suppress(OSError):
                (self.folder / LOCK_FILE).unlink()
                if made:
                    self.folder.rmdir()
            raise SynthrankError(f"cannot write to {self.folder}: {exc.strerror or exc}") from exc
        FolderLock._held[key] = [1, handle, made]
        self._key = key
        return self

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None or key not in FolderLock._held:
            return
        entry = FolderLock._held[key]
        entry[0] -= 1
        if entry[0] == 0:
            del FolderLock._held[key]
            entry[1].close()  # closing the file releases the flock
            if entry[2] and [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                (self.folder / LOCK_FILE).unlink()
                self.folder.rmdir()

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
