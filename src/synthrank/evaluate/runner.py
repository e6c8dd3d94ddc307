"""Evaluate a retriever on a BEIR dataset: encode, search, measure, save."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synthrank.data import BeirDataset, resolve_dataset
from synthrank.data.derive import corpus_sample_ids, dataset_source
from synthrank.data.resolve import cache_root
from synthrank.errors import SettingError, SynthrankError
from synthrank.evaluate.encode import (
    ENCODE_BATCH_SIZE,
    EmbeddingCache,
    EncodeStats,
    encode_texts,
    encoding_devices,
    model_fingerprint,
    parse_devices,
)
from synthrank.evaluate.metrics import (
    MEASURES,
    Run,
    mean_measures,
    per_query_measures,
    trec_order,
)
from synthrank.evaluate.models import TORCH, Runtime, load_model, set_max_length
from synthrank.evaluate.search import SearchMethod, search
from synthrank.fileio import FolderLock, atomic_write_text, read_text, require_writable_dir

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


@dataclass(frozen=True)
class DatasetProfile:
    """How a benchmark is scored beyond its qrels.

    ``relevance_level``: the lowest grade that counts as relevant for binary measures (TREC DL
    judges 0-3 and counts >= 2). ``ignore_identical_ids``: drop a query's own id from its results
    (ArguAna and Quora queries are also corpus documents; BEIR removes them).
    """

    relevance_level: int = 1
    ignore_identical_ids: bool = False


DATASET_PROFILES: dict[str, DatasetProfile] = {
    "arguana": DatasetProfile(ignore_identical_ids=True),
    "quora": DatasetProfile(ignore_identical_ids=True),
    "trec-dl-2019": DatasetProfile(relevance_level=2),
    "trec-dl-2020": DatasetProfile(relevance_level=2),
    "dl19": DatasetProfile(relevance_level=2),
    "dl20": DatasetProfile(relevance_level=2),
}


def profile_for(dataset: BeirDataset) -> DatasetProfile:
    """The scoring profile of a dataset, found by its short name (``beir:quora`` -> ``quora``);
    a derived folder (a corpus sample, a dev split) is scored as the dataset it came from
    (:func:`synthrank.data.derive.dataset_source`)."""
    name = dataset_source(dataset)
    short = name.removeprefix("beir:").rstrip("/").split("/")[-1].lower()
    return DATASET_PROFILES.get(short, DatasetProfile())


@dataclass
class EvalResult:
    model: str
    dataset: str
    split: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    run: Run
    timings: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_queries(self) -> int:
        return len(self.per_query)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "n_queries": self.n_queries,
            "metrics": self.metrics,
            "per_query": self.per_query,
            "timings": self.timings,
            "settings": self.settings,
            "warnings": self.warnings,
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write ``metrics.json`` and ``run.trec`` into ``out_dir``; each file appears whole or
        not at all. :class:`SynthrankError` (``cannot write to OUT: No space left on device``)
        when the folder takes no files."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            run_text = format_trec_run(self.run, tag=_run_tag(self.model))
            atomic_write_text(out / "run.trec", run_text)
            atomic_write_text(out / "metrics.json", json.dumps(self.to_json(), indent=2) + "\n")
        except OSError as exc:
            raise SynthrankError(f"cannot write to {out}: {exc.strerror or exc}") from exc
        return out


def _run_tag(model: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in model)[-64:] or "synthrank"


def format_trec_run(run: Mapping[str, Mapping[str, float]], *, tag: str) -> str:
    """TREC run lines ``qid Q0 docid rank score tag``, in trec_eval's order (:func:`trec_order`:
    score descending, ties by document id descending), each score written in full (``repr``), so
    that trec_eval on the file ranks as the metrics did: rounded, near-equal scores would tie and
    reorder."""
    lines = []
    for query_id, ranking in run.items():
        for rank, doc_id in enumerate(trec_order(ranking), start=1):
            lines.append(f"{query_id} Q0 {doc_id} {rank} {float(ranking[doc_id])!r} {tag}\n")
    return "".join(lines)


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Read a ``metrics.json`` written by :meth:`EvalResult.save` (a folder holding one works)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise SynthrankError(f"{path}: file not found")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise SynthrankError(f"{path}, line {exc.lineno}: malformed JSON ({exc.msg})") from exc
    for key in ("model", "dataset", "split", "metrics", "per_query"):
        if key not in data:
            raise SynthrankError(
                f'{path}, field "{key}": missing; is this a synthrank metrics.json?'
            )
    return data


def _to_unit_length(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def model_similarity(encoder: SentenceTransformer, name: str) -> str:
    """``cosine`` or ``dot``: how ``encoder`` scores (its ``similarity_fn_name``, cosine when
    unset); :class:`SynthrankError` naming model ``name`` for any other."""
    similarity = encoder.similarity_fn_name or "cosine"
    if similarity not in ("cosine", "dot"):
        raise SynthrankError(
            f"model {name}: similarity {similarity} is not supported; use cosine or dot"
        )
    return similarity


def retrieve(
    encoder: SentenceTransformer,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    *,
    top_k: int = 100,
    ignore_identical_ids: bool = False,
    search_method: SearchMethod = "exact",
    batch_size: int = ENCODE_BATCH_SIZE,
    cache: EmbeddingCache | None = None,
    model_key: str | None = None,
    progress: bool = True,
    stats: EncodeStats | None = None,
    timings: dict[str, float] | None = None,
    name: str = "model",
) -> Run:
    """The ``top_k`` documents of ``corpus`` (id -> text) that ``encoder`` ranks first for each
    query of ``queries`` (id -> text), with their scores: cosines of the embeddings for a
    cosine model, raw dot products for a ``dot`` one (:func:`model_similarity`). With
    ``ignore_identical_ids`` a query's own id is left out of its ranking (BEIR's rule for
    ArguAna and Quora). Embeddings go through ``cache`` when given
    (:func:`~synthrank.evaluate.encode.encode_texts`); the seconds spent encoding and searching
    go into ``timings`` (``encode_corpus``, ``encode_queries``, ``search``)."""
    timings = {} if timings is None else timings
    similarity = model_similarity(encoder, name)
    doc_ids, query_ids = list(corpus), list(queries)
    embeddings = {}
    for role, texts, timing in (
        ("document", [corpus[d] for d in doc_ids], "encode_corpus"),
        ("query", [queries[q] for q in query_ids], "encode_queries"),
    ):
        tick = time.perf_counter()
        embeddings[role] = encode_texts(
            encoder,
            texts,
            role=role,
            batch_size=batch_size,
            cache=cache,
            model_key=model_key,
            progress=progress,
            stats=stats,
        )
        timings[timing] = time.perf_counter() - tick
    doc_emb, query_emb = embeddings["document"], embeddings["query"]

    tick = time.perf_counter()
    if similarity == "cosine":
        doc_emb, query_emb = _to_unit_length(doc_emb), _to_unit_length(query_emb)
    scores, indices = search(
        query_emb, doc_emb, top_k + int(ignore_identical_ids), method=search_method
    )
    run: Run = {}
    for row, query_id in enumerate(query_ids):
        ranking: dict[str, float] = {}
        for score, index in zip(scores[row], indices[row], strict=True):
            if index < 0 or (ignore_identical_ids and doc_ids[index] == query_id):
                continue
            ranking[doc_ids[index]] = float(score)
            if len(ranking) == top_k:
                break
        run[query_id] = ranking
    timings["search"] = time.perf_counter() - tick
    return run


def evaluate(
    model: str | SentenceTransformer,
    dataset: str | Path | BeirDataset,
    split: str = "test",
    *,
    max_length: int | None = None,
    batch_size: int = ENCODE_BATCH_SIZE,
    top_k: int = 100,
    relevance_level: int | None = None,
    ignore_identical_ids: bool | None = None,
    search_method: SearchMethod = "exact",
    cache_dir: str | Path | None = "default",
    progress: bool = True,
    name: str | None = None,
    runtime: Runtime = TORCH,
    devices: str | Sequence[str] | None = None,
    corpus_sample: int | None = None,
    seed: int = 0,
    output: str | Path | None = None,
) -> EvalResult:
    """Evaluate ``model`` on ``split`` of ``dataset``.

    ``model`` is a loaded ``SentenceTransformer`` or what :func:`load_model` takes (``minilm``, a
    folder, a hub name). ``dataset`` is a :class:`BeirDataset`, a folder, or ``beir:NAME``.
    Scores follow the model's similarity: cosine models are scored on unit-length embeddings,
    ``dot`` models on raw ones. ``relevance_level`` and ``ignore_identical_ids`` default to the
    dataset's :class:`DatasetProfile`. ``cache_dir=None`` turns the embedding cache off;
    ``"default"`` uses ``$SYNTHRANK_CACHE/embeddings``. ``name`` labels the model in the
    results (default: the ``model`` argument when it is a string). ``runtime`` runs a model given
    by name in OpenVINO, in bf16 or with int8 weights (:class:`Runtime`). ``devices``: where to
    encode, one device or several (``"cuda:0,cuda:1"`` or a list; several encode in one process
    each, :func:`~synthrank.evaluate.encode.parse_devices`, which says what it refuses); None:
    the model's own device. ``corpus_sample``: search every document the split judges plus this
    many others drawn with ``seed`` (:func:`~synthrank.data.derive.corpus_sample_ids`, the draw
    of an experiment's ``[evaluate] corpus_sample``; scores are higher than on the whole corpus,
    so compare models on one sample); None: the whole corpus. ``output``: a folder to save the
    result in (:meth:`EvalResult.save`), checked for writing before any work starts, so that a
    read-only or missing destination fails at once rather than after the encoding.
    Warnings (ids read without their whitespace, judgments naming unknown ids, an embedding cache
    that could not be written) are in the result's ``warnings``.
    """
    devices = parse_devices(devices or None, backend=runtime.backend)
    if corpus_sample is not None and corpus_sample < 0:
        raise SettingError("corpus_sample", f"must be >= 0 (got {corpus_sample})")
    with contextlib.ExitStack() as held:
        if output is not None:
            # One writer at a time: a second evaluation into this folder is refused at once (a
            # folder the lock made is removed again if the evaluation stops before saving).
            held.enter_context(FolderLock(Path(output)))
            require_writable_dir(Path(output))
        timings: dict[str, float] = {}
        started = time.perf_counter()

        tick = time.perf_counter()
        data = dataset if isinstance(dataset, BeirDataset) else resolve_dataset(dataset)
        split_data = data.load_split(split)
        warnings = list(split_data.warnings)
        if not split_data.queries:
            raise SynthrankError(f"{data.name}: split {split} has no judged queries with text")
        corpus = split_data.corpus
        if corpus_sample is not None:
            kept = corpus_sample_ids(corpus, split_data.qrels, corpus_sample, seed)
            corpus = {d: doc for d, doc in corpus.items() if d in kept}
        timings["load_data"] = time.perf_counter() - tick

        tick = time.perf_counter()
        model_name = name or (model if isinstance(model, str) else type(model).__name__)
        # One device loads the model there; several share it from the CPU (the pool's way).
        home = (devices[0] if len(devices) == 1 else "cpu") if devices else None
        encoder = (
            load_model(model, runtime=runtime, device=home) if isinstance(model, str) else model
        )
        if max_length is not None:
            set_max_length(encoder, max_length, name=model_name)
        similarity = model_similarity(encoder, model_name)
        cache = None
        if cache_dir is not None:
            root = cache_root() / "embeddings" if cache_dir == "default" else Path(cache_dir)
            cache = EmbeddingCache(root, warnings=warnings)
        model_key = model_fingerprint(encoder)
        timings["load_model"] = time.perf_counter() - tick

        profile = profile_for(data)
        level = profile.relevance_level if relevance_level is None else relevance_level
        drop_self = (
            profile.ignore_identical_ids if ignore_identical_ids is None else ignore_identical_ids
        )
        stats = EncodeStats()
        held.enter_context(encoding_devices(devices))
        run = retrieve(
            encoder,
            {q: query.text for q, query in split_data.queries.items()},
            {d: doc.full_text() for d, doc in corpus.items()},
            top_k=top_k,
            ignore_identical_ids=drop_self,
            search_method=search_method,
            batch_size=batch_size,
            cache=cache,
            model_key=model_key,
            progress=progress,
            stats=stats,
            timings=timings,
            name=model_name,
        )

        tick = time.perf_counter()
        per_query = per_query_measures(split_data.qrels, run, relevance_level=level)
        metrics = mean_measures(per_query, MEASURES)
        timings["metrics"] = time.perf_counter() - tick
        timings["total"] = time.perf_counter() - started

        settings = {
            "max_length": encoder.max_seq_length,
            "batch_size": batch_size,
            "top_k": top_k,
            "similarity": similarity,
            "relevance_level": level,
            "ignore_identical_ids": drop_self,
            "search": search_method,
            "runtime": runtime.label,
            "devices": list(devices) or None,
            "model_fingerprint": model_key,
            "corpus_size": len(corpus),
            **({"corpus_sample": corpus_sample, "seed": seed} if corpus_sample is not None else {}),
            "embeddings_from_cache": stats.from_cache,
            "embeddings_encoded": stats.encoded,
        }
        result = EvalResult(
            model=model_name,
            dataset=data.name,
            split=split,
            metrics=metrics,
            per_query=per_query,
            run=run,
            timings=timings,
            settings=settings,
            warnings=warnings,
        )
        if output is not None:
            result.save(output)
        return result
