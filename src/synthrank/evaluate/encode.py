"""Encode texts with a sentence-transformers model: length-bucketed batches and a disk cache.

Texts are sorted by token length so each batch holds texts of nearly equal length (little
padding), then encoded in batches of :data:`ENCODE_BATCH_SIZE` unless told otherwise. The cache
holds one vector per text, keyed by the model's weights and configuration and by the text, and is
written a chunk of the input at a time, so a second evaluation of the same model skips encoding
and an interrupted encoding resumes at the first missing chunk. The cache only saves time: one
that cannot be written (a full or read-only disk) is reported once and the encoding goes on
without it.

Several devices (``cuda:0,cuda:1``; :func:`parse_devices`) encode in one process each, through
sentence-transformers' multi-process pool: the same length-sorted batches are shared out among
them, one pool serves every call inside :func:`encoding_devices`, and it is stopped when that
block ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from synthrank.errors import SettingError
from synthrank.fileio import warn

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Role = Literal["query", "document"]


def model_fingerprint(model: SentenceTransformer) -> str:
    """A digest of everything that shapes an embedding: module layout and settings (max length,
    pooling, normalisation, prompts), tokenizer, and every weight. A model that
    :func:`~synthrank.evaluate.models.load_model` runs in OpenVINO carries the digest of its
    PyTorch source and its runtime (``synthrank_fingerprint``), so each backend, precision and
    quantization has embeddings of its own."""
    import torch

    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{model!r}|max_seq_length={model.max_seq_length}".encode())
    exported = getattr(model, "synthrank_fingerprint", None)
    if exported is not None:
        digest.update(f"exported:{exported}".encode())
        return digest.hexdigest()
    for module in model.children():
        config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
        digest.update(
            f"{type(module).__name__}:{json.dumps(config, sort_keys=True, default=str)}".encode()
        )
    digest.update(repr(sorted(getattr(model, "prompts", {}).items())).encode())
    tokenizer = model.tokenizer
    digest.update(f"{type(tokenizer).__name__}:{len(tokenizer)}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def text_key(text: str, role: Role) -> str:
    """The cache key of one text in one role (queries and documents may be encoded with other
    prompts): a 128-bit BLAKE2b of both."""
    return hashlib.blake2b(f"{role}\0{text}".encode(), digest_size=16).hexdigest()


class EmbeddingCache:
    """Embeddings on disk, one entry per text: ``ROOT/<model fingerprint>.sqlite``, a table of
    (text key, float32 vector), so a text is encoded once by a model whatever list, chunk or
    order it comes in (a corpus encoded for an evaluation is reused when its passages are
    scored in BM25 lists).

    A write that fails (no space left, a read-only or foreign folder, a damaged database) is
    reported once, into ``warnings`` (:func:`synthrank.fileio.warn`), and the cache is read but
    no longer written for the rest of its life: a full disk would fail every later chunk too.
    A database that cannot be read counts as empty.
    """

    _BATCH = 500
    """Keys per lookup (SQLite's limit on parameters is 999 in old builds)."""

    def __init__(self, root: str | Path, *, warnings: list[str] | None = None) -> None:
        self.root = Path(root)
        self.warnings = warnings
        self.writable = True
        self._connections: dict[str, sqlite3.Connection | None] = {}

    def _path(self, model_key: str) -> Path:
        return self.root / f"{model_key}.sqlite"

    def _connect(self, model_key: str, *, create: bool) -> sqlite3.Connection | None:
        if model_key in self._connections and (self._connections[model_key] or not create):
            return self._connections[model_key]
        path = self._path(model_key)
        if not path.is_file() and not create:
            return None
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=60)
            if create:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vector BLOB)"
                )
            else:
                connection.execute("SELECT 1 FROM embeddings LIMIT 1")
        except (OSError, sqlite3.Error) as exc:
            if create:
                self._failed(exc)
            return None
        self._connections[model_key] = connection
        return connection

    def load(self, model_key: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those ``keys`` the cache holds."""
        connection = self._connect(model_key, create=False)
        found: dict[str, np.ndarray] = {}
        if connection is None:
            return found
        unique = list(dict.fromkeys(keys))
        try:
            for start in range(0, len(unique), self._BATCH):
                batch = unique[start : start + self._BATCH]
                marks = ",".join("?" * len(batch))
                rows = connection.execute(
                    f"SELECT key, vector FROM embeddings WHERE key IN ({marks})", batch
                )
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        except sqlite3.Error:
            return {}  # a damaged cache is encoded past; the texts are embedded again
        return found

    def save(self, model_key: str, keys: Sequence[str], embeddings: np.ndarray) -> None:
        """Store ``embeddings`` (one float32 row per key)."""
        if not self.writable or not len(keys):
            return
        connection = self._connect(model_key, create=True)
        if connection is None:
            return
        rows = [
            (key, np.ascontiguousarray(row, dtype=np.float32).tobytes())
            for key, row in zip(keys, embeddings, strict=True)
        ]
        try:
            with connection:
                connection.executemany(
                    "INSERT OR REPLACE INTO embeddings (key, vector) VALUES (?, ?)", rows
                )
        except (OSError, sqlite3.Error) as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self.writable = False
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        warn(
            f"embedding cache at {self.root} not written: {reason}; --no-cache turns it off",
            self.warnings,
        )

    def close(self) -> None:
        for connection in self._connections.values():
            if connection is not None:
                connection.close()
        self._connections.clear()


@dataclass
class EncodeStats:
    texts: int = 0
    encoded: int = 0
    from_cache: int = 0


ENCODE_BATCH_SIZE = 64
"""Texts per encoding batch by default. Texts are sorted by length first, so a batch holds little
padding and larger batches only run faster: SciFact abstracts with MiniLM on 2 CPU cores took
0.55x the time of batches of 8 at 32 and 0.48x at 64 (128: 0.47x; README, Performance)."""


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of ``batch_size`` in order of decreasing length."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _token_lengths(model: SentenceTransformer, texts: Sequence[str]) -> list[int]:
    encoded = model.tokenizer(
        list(texts), truncation=True, max_length=model.max_seq_length or None, verbose=False
    )
    return [len(ids) for ids in encoded["input_ids"]]


def parse_devices(value: str | Sequence[str] | None, *, backend: str = "torch") -> tuple[str, ...]:
    """The devices ``value`` names, in order: a comma list (``"cuda:0,cuda:1"``) or a sequence
    of names; ``()`` for None (the model's own device). ``cpu`` may repeat (``cpu,cpu``: two CPU
    processes); any other device is named once. ``backend`` is the encoder's runtime
    (:class:`~synthrank.evaluate.models.Runtime`): a model exported to OpenVINO encodes on the
    cpu only. :class:`~synthrank.errors.SettingError` (key ``device``) for an empty item, a name
    torch does not know, a device named twice, a CUDA or MPS device this machine lacks, or
    devices other than one ``cpu`` with the ``openvino`` backend."""
    import torch

    if value is None:
        return ()
    if isinstance(value, str):
        given, names = value, [item.strip() for item in value.split(",")]
    else:
        names = [str(item).strip() for item in value]
        given = ",".join(names)
    if not names:
        raise SettingError("device", "is an empty list: name a device, or leave it unset")
    parsed = []
    for position, name in enumerate(names, start=1):
        if not name:
            raise SettingError(
                "device",
                f"{given!r}: item {position} is empty; separate devices by single commas, "
                "as in cuda:0,cuda:1",
            )
        try:
            parsed.append(torch.device(name))
        except RuntimeError:
            raise SettingError(
                "device", f"{name!r} is no torch device; give cpu, cuda, cuda:N or mps"
            ) from None
    seen: dict[str, str] = {}
    for name, device in zip(names, parsed, strict=True):
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise SettingError(
                    "device", f"{name}: this machine has no CUDA device (torch sees none); use cpu"
                )
            count = torch.cuda.device_count()
            if (device.index or 0) >= count:
                raise SettingError(
                    "device",
                    f"{name}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}",
                )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise SettingError("device", f"{name}: this machine has no MPS device; use cpu")
        canonical = f"{device.type}:{device.index or 0}"
        if device.type != "cpu" and canonical in seen:
            raise SettingError(
                "device",
                f"{given!r}: {seen[canonical]} and {name} are the same device; name each device "
                "once (only cpu may repeat, one process each)",
            )
        seen[canonical] = name
    if backend == "openvino" and names != ["cpu"]:
        raise SettingError(
            "device",
            f"{given!r}: a model exported to OpenVINO encodes on the cpu only; leave the device "
            "unset (or give cpu), or encode with the torch backend",
        )
    return tuple(names)


class _DeviceScope:
    """The devices of an :func:`encoding_devices` block and the pool it started, if any: one
    pool per model at a time, started when a text first needs encoding."""

    def __init__(self, devices: tuple[str, ...]) -> None:
        self.devices = devices
        self._model: SentenceTransformer | None = None
        self._pool: dict | None = None
        self._home = None

    def pool(self, model: SentenceTransformer) -> dict:
        if self._model is not model:
            self.stop()
            # sentence-transformers moves the model to the CPU to share it with the workers;
            # it goes back where it was when the pool stops.
            self._home = model.device
            self._pool = model.start_multi_process_pool(list(self.devices))
            self._model = model
        assert self._pool is not None
        return self._pool

    def stop(self) -> None:
        model, pool, self._model, self._pool = self._model, self._pool, None, None
        if model is None or pool is None:
            return
        try:
            model.stop_multi_process_pool(pool)
        finally:
            model.to(self._home)


_SCOPE: ContextVar[_DeviceScope | None] = ContextVar("synthrank_encoding_devices", default=None)


@contextlib.contextmanager
def encoding_devices(devices: str | Sequence[str] | None) -> Iterator[tuple[str, ...]]:
    """Encode on ``devices`` (see :func:`parse_devices`) in every :func:`encode_texts` and
    :func:`grouped_scores` call inside the block that names no devices itself; yields the
    parsed devices. One device moves the model there; several start one worker process each
    (sentence-transformers' ``start_multi_process_pool``), once, when a text first needs
    encoding, and stop them when the block ends, however it ends. None or ``()`` changes
    nothing (the model's own device, or an enclosing block's devices)."""
    parsed = parse_devices(devices) if devices else ()
    if not parsed:
        yield parsed
        return
    scope = _DeviceScope(parsed)
    token = _SCOPE.set(scope)
    try:
        yield parsed
    finally:
        _SCOPE.reset(token)
        scope.stop()


def _encode_chunk(
    model: SentenceTransformer, texts: Sequence[str], role: Role, batch_size: int, bar
) -> np.ndarray:
    encode = model.encode_query if role == "query" else model.encode_document
    batches = length_buckets(_token_lengths(model, texts), batch_size)
    scope = _SCOPE.get()
    devices = scope.devices if scope is not None else ()
    backend = getattr(model, "backend", "torch")
    if devices and backend != "torch":
        parse_devices(devices, backend=backend)  # only one cpu passes: where it runs anyway
        devices = ()
    if len(devices) > 1:
        assert scope is not None
        # The whole chunk in one call, in bucket order: the pool cuts it into pieces of
        # batch_size, so each worker encodes exactly the batches one process would.
        in_order = np.concatenate(batches)
        sorted_embeddings = encode(
            [texts[i] for i in in_order],
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            pool=scope.pool(model),
            chunk_size=batch_size,
        ).astype(np.float32, copy=False)
        bar.update(len(texts))
    else:
        device = {"device": devices[0]} if devices else {}
        pieces = []
        for batch in batches:
            pieces.append(
                encode(
                    [texts[i] for i in batch],
                    batch_size=len(batch),
                    show_progress_bar=False,
                    convert_to_numpy=True,
                    **device,
                ).astype(np.float32, copy=False)
            )
            bar.update(len(batch))
        sorted_embeddings = np.concatenate(pieces)
    out = np.empty_like(sorted_embeddings)
    out[np.concatenate(batches)] = sorted_embeddings
    return out


def encode_texts(
    model: SentenceTransformer,
    texts: Sequence[str],
    *,
    role: Role,
    batch_size: int = ENCODE_BATCH_SIZE,
    cache: EmbeddingCache | None = None,
    model_key: str | None = None,
    chunk_size: int = 1024,
    progress: bool = True,
    stats: EncodeStats | None = None,
    devices: str | Sequence[str] | None = None,
) -> np.ndarray:
    """Embed ``texts`` as queries or documents (the model's prompts for each role apply);
    float32, shape (len(texts), dimension).

    With a ``cache``, every text is looked up first and only those it lacks are encoded (each
    distinct text once), then saved, ``chunk_size`` texts at a time (an interrupted encoding
    loses at most one chunk: about 8 minutes of EmbeddingGemma on 2 CPU cores at 1024);
    ``model_key`` is the model's :func:`model_fingerprint` (computed when not given).
    ``devices``: where to encode (:func:`parse_devices`; several: one process each, one pool
    for all the chunks, the progress bar moving a chunk at a time); None: those of an enclosing
    :func:`encoding_devices` block, else the model's own device. ``ValueError`` for no texts,
    :class:`~synthrank.errors.SettingError` for devices :func:`parse_devices` refuses.
    """
    from tqdm.auto import tqdm

    if not texts:
        raise ValueError("encode_texts needs at least one text")
    stats = stats if stats is not None else EncodeStats()
    stats.texts += len(texts)
    if cache is not None and model_key is None:
        model_key = model_fingerprint(model)
    pieces: list[np.ndarray] = []
    desc = "encode queries" if role == "query" else "encode documents"
    with (
        encoding_devices(devices),
        tqdm(total=len(texts), desc=desc, unit=role, disable=not progress) as bar,
    ):
        for start in range(0, len(texts), chunk_size):
            chunk = list(texts[start : start + chunk_size])
            if cache is None:
                pieces.append(_encode_chunk(model, chunk, role, batch_size, bar))
                stats.encoded += len(chunk)
                continue
            assert model_key is not None
            keys = [text_key(text, role) for text in chunk]
            found = cache.load(model_key, keys)
            missing = {key: text for key, text in zip(keys, chunk, strict=True) if key not in found}
            bar.update(len(chunk) - len(missing))
            if missing:
                new = _encode_chunk(model, list(missing.values()), role, batch_size, bar)
                cache.save(model_key, list(missing), new)
                found.update(zip(missing, new, strict=True))
            stats.encoded += len(missing)
            stats.from_cache += len(chunk) - len(missing)
            pieces.append(np.stack([found[key] for key in keys]).astype(np.float32, copy=False))
    return np.concatenate(pieces)


def grouped_scores(
    model: SentenceTransformer,
    queries: Sequence[str],
    groups: Sequence[Sequence[str]],
    *,
    cosine: bool = True,
    cache: EmbeddingCache | None = None,
    progress: bool = True,
    devices: str | Sequence[str] | None = None,
) -> list[list[float]]:
    """The score of each query with each text of its own group (``groups[i]`` belongs to
    ``queries[i]``): cosine, or the raw dot product with ``cosine=False``; one list of
    ``len(groups[i])`` floats per query. ``devices`` as :func:`encode_texts` takes them (one
    pool serves the queries and the texts)."""
    model_key = model_fingerprint(model) if cache is not None else None
    flat = [text for group in groups for text in group]
    with encoding_devices(devices):
        q_vectors = encode_texts(
            model, queries, role="query", cache=cache, model_key=model_key, progress=progress
        )
        d_vectors = (
            encode_texts(
                model, flat, role="document", cache=cache, model_key=model_key, progress=progress
            )
            if flat
            else np.zeros((0, q_vectors.shape[1]), dtype=q_vectors.dtype)
        )
    if cosine:
        q_vectors = q_vectors / np.maximum(np.linalg.norm(q_vectors, axis=1, keepdims=True), 1e-12)
        d_vectors = d_vectors / np.maximum(np.linalg.norm(d_vectors, axis=1, keepdims=True), 1e-12)
    scores, row = [], 0
    for i, group in enumerate(groups):
        scores.append([float(x) for x in d_vectors[row : row + len(group)] @ q_vectors[i]])
        row += len(group)
    return scores
