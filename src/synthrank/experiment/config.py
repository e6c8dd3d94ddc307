"""The experiment file: one TOML that names every stage of a synthrank experiment.

A file gives the experiment a ``name`` and at least one ``[[train]]`` table; tables that make
training data (``[queries]`` with ``[generate]`` and ``[judge]``, ``[doc2query]``,
``[graded]``) add their stages, ``[evaluate]`` says where every model is measured and
``[report]`` what the report compares::

    name = "quickstart"

    [queries]
    source = "beir:scifact"
    split = "train"
    limit = 8

    [[train]]
    name = "ws2"
    loss = "ws2"

Every table and key, with its type, default and meaning, is in :data:`EXPERIMENT_TABLES`
(:func:`experiment_reference` as plain data); ``synthrank config --example`` prints a file with
all of them, annotated (:func:`example_experiment`). :func:`load_experiment` reads a file into
an :class:`Experiment`, with errors that name the file, table and key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import textwrap
from collections.abc import Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from synthrank.config import field_docs, from_mapping, read_toml, toml_value, tomllib, type_text
from synthrank.errors import SettingError, SynthrankError
from synthrank.evaluate.encode import ENCODE_BATCH_SIZE, parse_devices
from synthrank.evaluate.metrics import MEASURES
from synthrank.evaluate.models import Runtime
from synthrank.fileio import group_name
from synthrank.generate import BackendSpec, GenerationConfig, config_from_dict
from synthrank.generate.config import DEFAULT_LEVELS, LEVEL_PRESETS, Level
from synthrank.generate.doc2query import QueryGenConfig
from synthrank.generate.graded import GradeJob
from synthrank.generate.judge import JudgeConfig
from synthrank.generate.prompts import TEMPLATES
from synthrank.llm.jobs import parse_shard
from synthrank.train import SourceSpec, TrainConfig
from synthrank.train.trainer import unknown_setting_hint

SYNTHETIC = "synthetic"
DOC2QUERY = "doc2query"
GRADED = "graded"
STAGE_DATA = {SYNTHETIC: "queries", DOC2QUERY: "doc2query", GRADED: "graded"}
"""Train data names that stand for a stage's output, and the table that makes the stage."""


@dataclass(frozen=True)
class QueriesSection:
    """``[queries]``: the real queries passages are generated for (the data ``synthetic``)."""

    source: str
    """The queries: a BEIR folder or ``beir:NAME`` (with ``split``), or a ``.jsonl`` / ``.tsv``
    query file."""
    split: str | None = None
    """With a BEIR dataset: only the queries judged in ``qrels/SPLIT.tsv``; unset: every query
    of ``queries.jsonl``."""
    limit: int | None = None
    """Only the first ``limit`` queries (>= 1); unset: all."""
    shard: str | None = None
    """``"i/n"`` (0 <= i < n): only every n-th query from position i of the limited set, a
    deterministic split whose shards together are the whole; unset: all."""
    heldout: float = 0.1
    """Share of the generated queries, in [0, 1), kept out of training (at least one when
    above 0): the report scores every model on their lists."""
    reuse: tuple[str, ...] = ()
    """Published lists files (``synthrank export``) of the same model and [generate] settings,
    whose lists of these queries are taken instead of generated (``generate --reuse``)."""


NOT_IDENTITY = {"identity": False}
"""Metadata of a dataclass field that says where work runs, not what it gives: :func:`plain`
(and so a stage's identity, :func:`digest`) leaves it out."""


@dataclass(frozen=True)
class EvaluateSection:
    """``[evaluate]``: where the base model and every trained model are measured."""

    datasets: tuple[str, ...] = ("beir:scifact",)
    """BEIR folders or ``beir:NAME`` datasets (at least one, each once), each scored with
    nDCG@10, RR@10, R@100, AP@100 and P@10."""
    split: str = "test"
    """The qrels split scored (``qrels/SPLIT.tsv``)."""
    corpus_sample: int | None = None
    """Search a sample of each corpus (>= 0): every document judged in the split plus this
    many others drawn with ``seed``; unset: the whole corpus."""
    max_length: int | None = 256
    """Tokens per text (>= 1) for every model, base and trained, so that they compare."""
    batch_size: int = ENCODE_BATCH_SIZE
    """Texts per encoding batch (>= 1); a speed setting only."""
    seed: int = 0
    """Seed of the ``corpus_sample`` draw."""
    splits: dict[str, str] = field(default_factory=dict)
    """Per-dataset split where it is not ``split`` (``{"beir:arguana" = "dev"}``); each key a
    dataset of ``datasets``."""
    backend: str = "torch"
    """Encoder runtime of every evaluation: torch, or openvino (see ``precision``, ``quantize``)."""
    precision: str = "fp32"
    """``fp32``, or ``bf16`` (openvino only; a CPU with AVX512-BF16 or AMX)."""
    quantize: str | None = None
    """``int8``: weights compressed by NNCF (openvino only); unset: full weights."""
    device: str | tuple[str, ...] | None = field(default=None, metadata=NOT_IDENTITY)
    """Where every evaluation encodes: a device (``cuda``), a comma list or a list of devices
    (``["cuda:0", "cuda:1"]``: one process each, sentence-transformers' multi-process pool;
    ``cpu`` may repeat); unset: the model's own device. Where the work runs, not what it gives:
    changing it reruns nothing."""

    def split_of(self, dataset: str) -> str:
        return self.splits.get(dataset, self.split)

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.backend, self.precision, self.quantize)

    @property
    def devices(self) -> tuple[str, ...]:
        """``device`` parsed (:func:`~synthrank.evaluate.encode.parse_devices`); ``()`` unset."""
        return parse_devices(self.device, backend=self.backend)


@dataclass(frozen=True)
class Doc2QuerySection:
    """``[doc2query]``: queries written for documents of ``corpus``
    (:func:`synthrank.generate.doc2query.generate_queries`), then the consistency filter when
    ``filter_top_k`` is set; trained on as the data source ``doc2query``."""

    corpus: str
    """The documents: a BEIR folder, ``beir:NAME`` (its ``corpus.jsonl``) or a corpus
    ``.jsonl`` file."""
    docs_limit: int | None = None
    """Only this many documents (>= 1), drawn at random with the ``seed``; unset: every
    document, in corpus order."""
    filter_top_k: int | None = None
    """After generating, keep only the queries whose source document BM25 ranks in its top
    ``filter_top_k`` over the corpus (>= 1; Promptagator's consistency filter); unset: keep
    all."""
    reuse: tuple[str, ...] = ()
    """Published queries files (``synthrank export`` of a generate-queries folder) of the same
    corpus, model and settings, whose documents' queries are taken instead of generated
    (``generate-queries --reuse``)."""
    config: QueryGenConfig = field(default_factory=QueryGenConfig)
    """What is asked for each document and what is kept: the table's other keys."""
    backend: BackendSpec | None = None
    """The engine; None: the ``[generate.backend]`` one."""


@dataclass(frozen=True)
class GradedSection:
    """``[graded]``: the BM25 top ``top_n`` of each query of ``dataset``'s ``split`` graded 0-3
    by an LLM judge (:func:`synthrank.generate.graded.grade_real_lists`); trained on as the data
    source ``graded``."""

    dataset: str
    """BEIR folder or ``beir:NAME``: the queries of ``split`` and the corpus they search."""
    split: str = "train"
    """The queries judged in ``qrels/SPLIT.tsv`` (their labels are compared with the grades),
    or ``all``: every query of ``queries.jsonl``, for a dataset without labels."""
    top_n: int = 8
    """Passages per query (>= 1): BM25's top ``top_n`` (title and text)."""
    limit: int | None = None
    """Only the first ``limit`` queries of the split in id order (>= 1); unset: all."""
    passage_words: int = 200
    """Each passage is shown to the judge cut to this many words (>= 1)."""
    backend: BackendSpec | None = None
    """The judge's engine; None: the ``[generate.backend]`` one."""

    def job(self, out: Path) -> GradeJob:
        return GradeJob(self.dataset, out, self.split, self.top_n, self.limit, self.passage_words)


CLAIM_KINDS = ("better", "matches")


@dataclass(frozen=True)
class Claim:
    """A claim about two models on one dataset, decided by the paired test of their
    seed-averaged per-query ``measure``: ``better`` holds when ``model`` beats ``than`` with
    p < 0.05, fails when it loses with p < 0.05, and is undecided otherwise; ``matches`` holds
    when the 95% interval of the difference lies within +-``margin``, fails when it lies wholly
    outside, and is undecided otherwise."""

    id: str
    """The claim's label in the report ("C1"), unique among the claims."""
    text: str
    """The claim in words, as the report prints it."""
    model: str
    """The model claimed about: a ``[[train]]`` name (without ``@SEED``) or ``base``."""
    than: str
    """The model it is compared with: a ``[[train]]`` name or ``base``, not ``model``."""
    dataset: str
    """The dataset of ``[evaluate]`` ``datasets`` the claim is about."""
    kind: str = "better"
    """``better`` (``model`` beats ``than``, p < 0.05) or ``matches`` (the 95% interval of the
    difference lies within +-``margin``)."""
    margin: float = 0.01
    """For ``matches``: the largest difference (> 0, in ``measure`` units) that still counts as
    a match."""
    measure: str = "nDCG@10"
    """The per-query measure compared: nDCG@10, RR@10, R@100, AP@100 or P@10."""
    note: str = ""
    """What the reader should know next to the verdict (how this run differs from the claim's
    source, for example); the report prints it beside the claim."""


@dataclass(frozen=True)
class ReportSection:
    """``[report]``: what the report compares, beside each model against the base."""

    reference: str | None = None
    """A model (name without @seed) every other is also compared with, beside the base."""
    claims: tuple[Claim, ...] = ()
    """Claims the report decides: ``[[report.claims]]`` tables."""
    query_text: bool = True
    """Whether the report's example lists show their query's text (else its id only)."""


@dataclass(frozen=True)
class TrainRun:
    name: str
    data: tuple[str, ...]
    settings: dict[str, Any]
    """TrainConfig keys other than data, out and base_model."""

    def stage_data(self) -> list[str]:
        """The names of :data:`STAGE_DATA` this run trains on."""
        return sorted({data_name(spec) for spec in self.data} & set(STAGE_DATA))

    def config(self, out: Path, base_model: str, folders: dict[str, Path]) -> TrainConfig:
        """The training config; ``folders`` maps each stage's data name to its output."""
        sources = []
        for spec in self.data:
            name, _, options = spec.partition(",")
            if name.strip() in STAGE_DATA:
                spec = ",".join(x for x in (str(folders[name.strip()]), options) if x)
            sources.append(SourceSpec.parse(spec))
        config = TrainConfig(data=sources, out=out, base_model=base_model, **self.settings)
        config.validate()
        return config


def data_name(spec: str) -> str:
    """The dataset part of a train data source string (before its first comma)."""
    return spec.partition(",")[0].strip()


@dataclass(frozen=True)
class Experiment:
    name: str
    """The experiment's name (no ``/``): its run folder is ``runs/NAME`` unless ``--out``
    says otherwise."""
    queries: QueriesSection | None
    """None: no passages are generated (no run trains on "synthetic")."""
    generation: GenerationConfig
    backend: BackendSpec
    runs: tuple[TrainRun, ...]
    evaluation: EvaluateSection
    judge: JudgeConfig | None = None
    doc2query: Doc2QuerySection | None = None
    graded: GradedSection | None = None
    base_model: str = "minilm"
    """The encoder every ``[[train]]`` run fine-tunes, evaluated as the base: an alias
    (``minilm``, ``mpnet``), a sentence-transformers folder or a Hugging Face name."""
    report: ReportSection = ReportSection()
    source: Path | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


def plain(value: Any) -> Any:
    """``value`` with dataclasses, tuples and paths turned into JSON types; a dataclass's fields
    marked :data:`NOT_IDENTITY` (and ``source``) left out."""
    if is_dataclass(value):
        return {
            f.name: plain(getattr(value, f.name))
            for f in fields(value)
            if f.name != "source" and f.metadata.get("identity", True)
        }
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def digest(*parts: Any) -> str:
    """A short content hash of JSON-able parts: the identity of a stage's inputs."""
    text = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _table(values: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    table = values.get(key, {})
    if not isinstance(table, dict):
        raise SynthrankError(f"{where}: {key} must be a table ([{key}])")
    return dict(table)


@contextlib.contextmanager
def _located(where: str) -> Iterator[None]:
    """Re-raise an error of building a table's config with the table's place ``where``
    (``FILE, [TABLE]``) and, for a :class:`SettingError`, its key; an error that names
    ``where`` already passes as it is."""
    try:
        yield
    except SettingError as exc:
        # A setting checked deeper in the table (a level of [generate]) keeps its place.
        place = exc.where if exc.where and exc.where.startswith(where) else where
        raise SynthrankError(f"{place}, key {exc.key!r}: {exc.problem}") from None
    except SynthrankError as exc:
        if str(exc).startswith(where):
            raise
        raise SynthrankError(f"{where}: {exc}") from None


def _train_runs(raw: dict[str, Any], where: str) -> list[TrainRun]:
    """One [[train]] table's runs: itself, or one per seed of ``seeds`` (named ``NAME@SEED``)."""
    raw = dict(raw)
    seeds = raw.pop("seeds", None)
    if seeds is None:
        return [_train_run(raw, where)]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32 for x in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise SynthrankError(
            f"{where}, key 'seeds': expected a list of distinct integers in [0, 2**32)"
        )
    if "seed" in raw:
        raise SynthrankError(f"{where}: give seed or seeds, not both")
    runs = []
    for seed in seeds:
        run = _train_run({**raw, "seed": seed}, where)
        runs.append(TrainRun(f"{run.name}@{seed}", run.data, run.settings))
    return runs


def _train_run(raw: dict[str, Any], where: str) -> TrainRun:
    raw = dict(raw)
    known = {key.name for key in TRAIN_ONLY_KEYS} | {
        f.name for f in fields(TrainConfig) if f.name not in TRAIN_SET_BY_EXPERIMENT
    }
    unknown = sorted(set(raw) - known - set(TRAIN_SET_BY_EXPERIMENT))
    if unknown:
        raise SynthrankError(
            f"{where}: unknown key {unknown[0]!r}{unknown_setting_hint(unknown[0])}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    name = raw.pop("name", None)
    if not isinstance(name, str) or not name.strip() or "/" in name or "@" in name:
        raise SynthrankError(f"{where}: give each run a name (a string without '/' or '@')")
    data = raw.pop("data", [SYNTHETIC])
    if not isinstance(data, list) or not data or not all(isinstance(d, str) for d in data):
        raise SynthrankError(f"{where}, key 'data': expected a list of source strings")
    for reserved in ("out", "base_model"):
        if reserved in raw:
            raise SynthrankError(
                f"{where}: key {reserved!r} is set by the experiment (output folder, base_model)"
            )
    try:
        sources = [SourceSpec.parse(spec) for spec in data]
    except SynthrankError as exc:
        raise SynthrankError(f"{where}, key 'data': {exc}") from None
    checked = from_mapping(
        TrainConfig, raw, where, nested={"data": sources, "out": Path("."), "base_model": ""}
    )
    with _located(f"{where} ({name})"):
        checked.validate()
    settings = {k: v for k, v in asdict(checked).items() if k in raw}
    return TrainRun(name=name, data=tuple(data), settings=settings)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file; errors name the file, table and key."""
    path = Path(path)
    values = read_toml(path)
    where = str(path)
    known = {
        "name",
        "base_model",
        "queries",
        "generate",
        "judge",
        "doc2query",
        "graded",
        "train",
        "evaluate",
        "report",
    }
    unknown = sorted(set(values) - known)
    if unknown:
        raise SynthrankError(
            f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}"
        )
    name = values.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise SynthrankError(f"{where}: give the experiment a name (name = \"...\", no '/')")
    base_model = values.get("base_model", "minilm")
    if not isinstance(base_model, str) or not base_model.strip():
        raise SynthrankError(
            f"{where}, key 'base_model': expected an encoder's alias, folder or Hugging Face "
            f"name (a string), got {base_model!r}"
        )
    queries = None
    if "queries" in values:
        queries = from_mapping(
            QueriesSection, _table(values, "queries", where), f"{where}, [queries]"
        )
        _check_queries(queries, f"{where}, [queries]")
    generate_table = _table(values, "generate", where)
    backend = from_mapping(
        BackendSpec, _table(generate_table, "backend", where), f"{where}, [generate.backend]"
    )
    with _located(f"{where}, [generate.backend]"):
        backend.validate()
    generate_table.pop("backend", None)
    with _located(f"{where}, [generate]"):
        generation = config_from_dict(generate_table, f"{where}, [generate]")
    judge = None
    if "judge" in values:
        judge = from_mapping(JudgeConfig, _table(values, "judge", where), f"{where}, [judge]")
        with _located(f"{where}, [judge]"):
            judge.validate()
        if judge.judge != "encoder":
            # The experiment's judge stage has no LLM engine to hand the judge.
            raise SynthrankError(
                f"{where}, [judge], key 'judge': an experiment judges its generated lists with "
                'an encoder (judge = "encoder"); an LLM judge grades real lists in a [graded] '
                "table, or generated ones with synthrank judge --judge-kind llm"
            )
    raw_runs = values.get("train", [])
    if not isinstance(raw_runs, list) or not raw_runs:
        raise SynthrankError(f"{where}: give at least one [[train]] table")
    runs = tuple(
        run
        for i, raw in enumerate(raw_runs)
        for run in _train_runs(raw, f"{where}, [[train]] #{i + 1}")
    )
    doc2query = _doc2query_section(values, where)
    graded = _graded_section(values, where)
    present = {"queries": queries, "doc2query": doc2query, "graded": graded}
    for i, raw in enumerate(raw_runs):
        run = _train_runs(raw, f"{where}, [[train]] #{i + 1}")[0]
        for data in run.stage_data():
            if present[STAGE_DATA[data]] is None:
                raise SynthrankError(
                    f"{where}, [[train]] #{i + 1} ({run.name}): data {data!r} is the output of "
                    f"the [{STAGE_DATA[data]}] table, which this file does not have"
                )
    names = [run.name for run in runs]
    if len(set(names)) != len(names) or "base" in names:
        raise SynthrankError(f"{where}: [[train]] names must be unique and not 'base' ({names})")
    evaluation = from_mapping(
        EvaluateSection, _table(values, "evaluate", where), f"{where}, [evaluate]"
    )
    _check_evaluate(evaluation, f"{where}, [evaluate]")
    report = _report_section(
        _table(values, "report", where),
        {"base"} | {group_name(n) for n in names},
        evaluation.datasets,
        f"{where}, [report]",
    )
    return Experiment(
        name=name,
        queries=queries,
        generation=generation,
        backend=backend,
        runs=runs,
        evaluation=evaluation,
        judge=judge,
        doc2query=doc2query,
        graded=graded,
        base_model=base_model,
        report=report,
        source=path,
    )


def _check_queries(queries: QueriesSection, where: str) -> None:
    if not 0 <= queries.heldout < 1:
        raise SynthrankError(f"{where}, key 'heldout': a share in [0, 1) (got {queries.heldout})")
    if queries.limit is not None and queries.limit < 1:
        raise SynthrankError(f"{where}, key 'limit': must be >= 1 (got {queries.limit})")
    if queries.shard is not None:
        try:
            parse_shard(queries.shard)
        except SynthrankError:
            raise SynthrankError(
                f"{where}, key 'shard': expected 'i/n' with 0 <= i < n, e.g. '0/4' "
                f"(got {queries.shard!r})"
            ) from None


def _check_evaluate(evaluation: EvaluateSection, where: str) -> None:
    if not evaluation.datasets:
        raise SynthrankError(f"{where}, key 'datasets': name at least one dataset")
    if len(set(evaluation.datasets)) != len(evaluation.datasets):
        raise SynthrankError(f"{where}, key 'datasets': a dataset is named twice")
    if not isinstance(evaluation.splits, dict) or any(
        d not in evaluation.datasets or not isinstance(v, str) for d, v in evaluation.splits.items()
    ):
        raise SynthrankError(
            f"{where}, key 'splits': a table of dataset = split, for datasets of "
            f"'datasets' ({', '.join(evaluation.datasets)})"
        )
    counts = {"batch_size": 1, "max_length": 1, "corpus_sample": 0}
    for key, least in counts.items():
        value = getattr(evaluation, key)
        if value is not None and value < least:
            raise SynthrankError(f"{where}, key {key!r}: must be >= {least} (got {value})")
    with _located(where):
        evaluation.runtime.validate()
        evaluation.devices  # noqa: B018 (parsed for its errors)


def _stage_table(
    values: dict[str, Any], key: str, where: str
) -> tuple[dict[str, Any], BackendSpec | None, str]:
    """Stage table ``key`` without its optional ``backend`` sub-table, that sub-table read (None
    when absent), and the table's name for errors (``FILE, [KEY``, closed by the caller)."""
    table = _table(values, key, where)
    at = f"{where}, [{key}"
    backend = None
    if "backend" in table:
        backend = from_mapping(BackendSpec, _table(table, "backend", at), f"{at}.backend]")
        with _located(f"{at}.backend]"):
            backend.validate()
        del table["backend"]
    return table, backend, at


def _doc2query_section(values: dict[str, Any], where: str) -> Doc2QuerySection | None:
    if "doc2query" not in values:
        return None
    table, backend, at = _stage_table(values, "doc2query", where)
    own = [f.name for f in fields(Doc2QuerySection) if f.name != "config"]
    known = sorted({*own, *(f.name for f in fields(QueryGenConfig))})
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise SynthrankError(f"{at}]: unknown key {unknown[0]!r}; known keys: {', '.join(known)}")
    job_keys = {k: table.pop(k) for k in own if k in table}
    config = from_mapping(QueryGenConfig, table, f"{at}]")
    with _located(f"{at}]"):
        config.validate(f"{at}]")
    section = from_mapping(
        Doc2QuerySection, job_keys, f"{at}]", nested={"config": config, "backend": backend}
    )
    for key in ("docs_limit", "filter_top_k"):
        value = getattr(section, key)
        if value is not None and value < 1:
            raise SynthrankError(f"{at}], key {key!r}: must be >= 1, got {value}")
    return section


def _graded_section(values: dict[str, Any], where: str) -> GradedSection | None:
    if "graded" not in values:
        return None
    table, backend, at = _stage_table(values, "graded", where)
    section = from_mapping(GradedSection, table, f"{at}]", nested={"backend": backend})
    with _located(f"{at}]"):
        section.job(Path(".")).validate()
    return section


def _report_section(
    table: dict[str, Any], models: set[str], datasets: tuple[str, ...], where: str
) -> ReportSection:
    raw_claims = table.pop("claims", [])
    if not isinstance(raw_claims, list):
        raise SynthrankError(f"{where}, key 'claims': expected [[report.claims]] tables")
    section = from_mapping(ReportSection, table, where)
    if section.reference is not None and section.reference not in models:
        raise SynthrankError(
            f"{where}, key 'reference': {section.reference!r} is not a model of this experiment "
            f"({', '.join(sorted(models))})"
        )
    claims = []
    for i, raw in enumerate(raw_claims):
        at = f"{where}, [[report.claims]] #{i + 1}"
        if not isinstance(raw, dict):
            raise SynthrankError(f"{at}: expected a table")
        claim = from_mapping(Claim, raw, at)
        if claim.id in {c.id for c in claims}:
            raise SynthrankError(f"{at}, key 'id': {claim.id!r} is used by another claim")
        if claim.model == claim.than:
            raise SynthrankError(f"{at}: model and than name the same model ({claim.model!r})")
        if claim.measure not in MEASURES:
            raise SynthrankError(
                f"{at}, key 'measure': {claim.measure!r} is not measured ({', '.join(MEASURES)})"
            )
        for key in ("model", "than"):
            if getattr(claim, key) not in models:
                raise SynthrankError(
                    f"{at}, key {key!r}: {getattr(claim, key)!r} is not a model of this "
                    f"experiment ({', '.join(sorted(models))})"
                )
        if claim.dataset not in datasets:
            raise SynthrankError(
                f"{at}, key 'dataset': {claim.dataset!r} is not evaluated ({', '.join(datasets)})"
            )
        if claim.kind not in CLAIM_KINDS:
            raise SynthrankError(
                f"{at}, key 'kind': must be one of {', '.join(CLAIM_KINDS)} (got {claim.kind!r})"
            )
        if not 0 < claim.margin < math.inf:
            raise SynthrankError(f"{at}, key 'margin': must be a number > 0 (got {claim.margin})")
        claims.append(claim)
    return ReportSection(section.reference, tuple(claims), section.query_text)


# --- the reference: every table and key of an experiment file ----------------------------------

UNSET = "unset"
"""The default of a key that has none: left out, it means what its doc says."""
REQUIRED = "required"
"""The default of a key that must be given."""


@dataclass(frozen=True)
class KeyDoc:
    """One key of a table, as the reference shows it."""

    name: str
    type: str
    """Readable: ``integer``, ``list of strings``, ``"keep", "drop" or "relabel"``."""
    default: str
    """As TOML writes it (``0.1``, ``"train"``, ``[]``), or :data:`REQUIRED` or :data:`UNSET`."""
    doc: str
    example: Any = None
    """A value for the annotated example where the default is required or unset."""
    field: str | None = None
    """The dataclass field behind the key (``synthrank.train.trainer.TrainConfig.loss``); None
    for a key only the experiment file has."""


@dataclass(frozen=True)
class Fields:
    """The keys of a table that are fields of dataclass ``cls``, each documented by the field's
    docstring, with its default and type read from the class."""

    cls: type
    exclude: tuple[str, ...] = ()
    """Fields that are not keys here: sub-tables, or values the experiment sets itself."""
    only: tuple[str, ...] | None = None
    """Only these fields are keys (the rest of ``cls`` is not read from the file)."""
    examples: dict[str, Any] = field(default_factory=dict)
    """Values for the annotated example, for fields without a default or defaulting to None."""
    shown: dict[str, tuple[str, str]] = field(default_factory=dict)
    """(type, default) as the file writes them, where the field's own would mislead."""

    def key_docs(self) -> list[KeyDoc]:
        docs = field_docs(self.cls)
        hints = get_type_hints(self.cls)
        found = []
        for f in fields(self.cls):
            if f.name in self.exclude or (self.only is not None and f.name not in self.only):
                continue
            type_name, default = self.shown.get(f.name, (type_text(hints[f.name]), ""))
            found.append(
                KeyDoc(
                    f.name,
                    type_name,
                    default or _default_text(f),
                    _plain_doc(docs.get(f.name, "")),
                    self.examples.get(f.name),
                    f"{self.cls.__module__}.{self.cls.__qualname__}.{f.name}",
                )
            )
        return found


@dataclass(frozen=True)
class TableDoc:
    """One table of an experiment file: its header, what it is for, and its keys (those of
    ``extra`` first, then the fields of each of ``fields``)."""

    header: str
    """``[generate.backend]``, ``[[train]]`` (repeated), or ``""`` for the file's top level."""
    purpose: str
    fields: tuple[Fields, ...] = ()
    extra: tuple[KeyDoc, ...] = ()
    """Keys that are not dataclass fields (or are read differently from the field)."""
    optional: bool = True
    """Whether a file may leave the table out."""
    written: bool = True
    """Whether the annotated example writes the table (else it shows it commented out: a
    table whose absence means something, such as another table's engine)."""
    rows: tuple[dict[str, Any], ...] = ({},)
    """For a repeated table: the tables the example writes, each giving values beyond the
    defaults."""
    commented: tuple[str, ...] = ()
    """Keys the example shows commented out although they have a default: one that excludes
    another key (``seed`` beside ``seeds``)."""

    @property
    def repeats(self) -> bool:
        return self.header.startswith("[[")

    @property
    def path(self) -> tuple[str, ...]:
        """The table's place: ``("generate", "backend")``; ``()`` for the top level."""
        name = self.header.strip("[]")
        return tuple(name.split(".")) if name else ()

    def key_docs(self) -> list[KeyDoc]:
        return [*self.extra, *(key for group in self.fields for key in group.key_docs())]


def _default_text(f: Any) -> str:
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return REQUIRED
    return UNSET if value is None else toml_value(value)


def _plain_doc(doc: str) -> str:
    """A docstring as one paragraph of plain text: its lines joined, code in single backticks
    (reST's double ones halved), a Sphinx role (``:data:`~a.b.NAME```) as its target's last
    name."""
    text = " ".join(doc.split())
    text = re.sub(r":\w+:`~?(?:[\w.]*\.)?([\w]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _preset_name(levels: tuple[Any, ...]) -> str:
    return next(name for name, preset in LEVEL_PRESETS.items() if preset == levels)


_BACKEND_EXAMPLES = {"threads": 4, "device": "cuda"}
_RUNTIME_EXAMPLES = {"quantize": "int8"}

TRAIN_ONLY_KEYS = (
    KeyDoc(
        "name",
        "string",
        REQUIRED,
        "The run's name (no `/` or `@`; unique, not `base`): its row in the report; with "
        "`seeds`, one model per seed named `NAME@SEED`.",
        example="ws2",
    ),
    KeyDoc(
        "data",
        "list of strings",
        toml_value([SYNTHETIC]),
        f"The training sources, pooled by query: `{SYNTHETIC}` (the lists of [queries], after "
        f"[judge]), `{DOC2QUERY}` (the queries of [doc2query]), `{GRADED}` (the graded lists of "
        "[graded]), each with options as a source string takes them "
        f'(`"{DOC2QUERY},bm25=2:0"`), or any `synthrank train --data` source string '
        "(`DATASET[,split=S][,relabel=A:B][,bm25=N:LABEL][,random=N:LABEL][,teacher=FOLDER]`).",
    ),
    KeyDoc(
        "seeds",
        "list of integers",
        UNSET,
        "One model per seed (distinct, in [0, 2**32)), named `NAME@SEED`, each trained with "
        "that `seed` (give `seed` or `seeds`, not both); the report averages them. Unset: one "
        "model, at `seed`.",
        example=[0, 1],
    ),
)
"""The keys of a ``[[train]]`` table that are not :class:`TrainConfig` settings."""

TRAIN_SET_BY_EXPERIMENT = ("data", "out", "base_model")
"""The :class:`TrainConfig` fields an experiment sets itself (``data`` from the run's sources,
``out`` its folder, ``base_model`` the file's)."""

EXPERIMENT_TABLES: tuple[TableDoc, ...] = (
    TableDoc(
        "",
        "The experiment's name and the encoder every run starts from.",
        (Fields(Experiment, only=("name", "base_model"), examples={"name": "example"}),),
        optional=False,
    ),
    TableDoc(
        "[queries]",
        "Real queries that graded passages are generated for; their lists are the train data "
        f"`{SYNTHETIC}`. Needed by a run that trains on it.",
        (
            Fields(
                QueriesSection,
                examples={
                    "source": "beir:scifact",
                    "split": "train",
                    "limit": 100,
                    "shard": "0/4",
                },
            ),
        ),
    ),
    TableDoc(
        "[generate]",
        "What the LLM is asked for each query and what is kept (a generation config).",
        (
            Fields(
                GenerationConfig,
                shown={
                    "levels": (
                        "string (a preset) or [[generate.levels]] tables",
                        toml_value(_preset_name(DEFAULT_LEVELS)),
                    )
                },
            ),
        ),
    ),
    TableDoc(
        "[[generate.levels]]",
        "One relevance level, instead of a preset in `levels` (the example spells out the "
        "default preset's levels).",
        (Fields(Level, examples={"template": TEMPLATES["direct"]}),),
        written=False,
        rows=tuple(asdict(level) for level in DEFAULT_LEVELS),
    ),
    TableDoc(
        "[generate.backend]",
        "The LLM engine of every stage that calls one, unless its own backend table says "
        "otherwise.",
        (Fields(BackendSpec, examples=_BACKEND_EXAMPLES),),
    ),
    TableDoc(
        "[judge]",
        f"An independent check of the generated levels before training on `{SYNTHETIC}`: a "
        "reference encoder orders each query's passages, and those whose judged level "
        'disagrees are kept, dropped or relabelled (an experiment takes `judge = "encoder"`; '
        "an LLM judge grades real lists in [graded]).",
        (Fields(JudgeConfig, exclude=("runtime",)),),
    ),
    TableDoc(
        "[judge.runtime]",
        "How the encoder judge runs.",
        (Fields(Runtime, examples=_RUNTIME_EXAMPLES),),
    ),
    TableDoc(
        "[doc2query]",
        "Queries written for documents of a corpus (synthrank generate-queries), each judged "
        f"relevant to its document; the train data `{DOC2QUERY}`.",
        (
            Fields(
                Doc2QuerySection,
                exclude=("config", "backend"),
                examples={"corpus": "beir:scifact", "docs_limit": 1000, "filter_top_k": 3},
            ),
            Fields(QueryGenConfig),
        ),
    ),
    TableDoc(
        "[doc2query.backend]",
        "The engine of [doc2query]; left out: [generate.backend].",
        (Fields(BackendSpec, examples=_BACKEND_EXAMPLES),),
        written=False,
    ),
    TableDoc(
        "[graded]",
        "Real lists (BM25's top passages of each query) graded 0-3 by an LLM judge "
        f"(synthrank grade); the train data `{GRADED}`.",
        (
            Fields(
                GradedSection,
                exclude=("backend",),
                examples={"dataset": "beir:scifact", "limit": 100},
            ),
        ),
    ),
    TableDoc(
        "[graded.backend]",
        "The engine of the [graded] judge; left out: [generate.backend].",
        (Fields(BackendSpec, examples=_BACKEND_EXAMPLES),),
        written=False,
    ),
    TableDoc(
        "[[train]]",
        "One trained model (or one per seed): its name, its data and its training settings.",
        (
            Fields(
                TrainConfig,
                exclude=TRAIN_SET_BY_EXPERIMENT,
                examples={
                    "binary_threshold": 2,
                    "lr": 1e-4,
                    "temperature": 0.05,
                    "target_temperature": 0.25,
                    "teacher_weight": 0.5,
                    "teacher_mask": 0.95,
                    "mini_batch_size": 8,
                    "deepspeed": "ds_config.json",
                },
            ),
        ),
        extra=TRAIN_ONLY_KEYS,
        optional=False,
        rows=({"name": "ws2"},),
        commented=("seed",),
    ),
    TableDoc(
        "[evaluate]",
        "Where the base model and every trained model are measured.",
        (Fields(EvaluateSection, examples={"corpus_sample": 1000, **_RUNTIME_EXAMPLES}),),
    ),
    TableDoc(
        "[report]",
        "What the report compares, beside each model against the base.",
        (Fields(ReportSection, exclude=("claims",), examples={"reference": "ws2"}),),
    ),
    TableDoc(
        "[[report.claims]]",
        "A claim about two models on one dataset, which the report marks held, not held or "
        "undecided.",
        (Fields(Claim),),
        rows=(
            {
                "id": "C1",
                "text": "ws2 beats the base model",
                "model": "ws2",
                "than": "base",
                "dataset": "beir:scifact",
            },
        ),
    ),
)
"""Every table an experiment file may hold (:func:`load_experiment`), in the order the
annotated example writes them."""


def experiment_reference() -> list[dict[str, Any]]:
    """Every table of an experiment file, for a reference page: a dict per table with
    ``header`` (``"[generate.backend]"``, ``"[[train]]"``, ``""`` for the top level),
    ``purpose``, ``repeats`` (an array of tables), ``optional`` (may be left out) and
    ``keys``: a dict per key with ``name``, ``type`` (readable), ``default`` (as TOML writes
    it, or ``"required"`` or ``"unset"``), ``doc`` (plain text, code in backticks) and
    ``field`` (the dataclass field behind it, None for a key only the file has)."""
    return [
        {
            "header": table.header,
            "purpose": table.purpose,
            "repeats": table.repeats,
            "optional": table.optional,
            "keys": [
                {
                    "name": key.name,
                    "type": key.type,
                    "default": key.default,
                    "doc": key.doc,
                    "field": key.field,
                }
                for key in table.key_docs()
            ],
        }
        for table in EXPERIMENT_TABLES
    ]


_COMMENT_WIDTH = 98


def _comment(text: str, commented: bool = False) -> list[str]:
    prefix = "# # " if commented else "# "
    wrapped = textwrap.wrap(
        text,
        _COMMENT_WIDTH,
        initial_indent=prefix,
        subsequent_indent=prefix,
        break_on_hyphens=False,
        break_long_words=False,
    )
    return wrapped or [prefix.rstrip()]


def _assignment(name: str, value: str, prefix: str) -> list[str]:
    """``name = value``, a long array written one item a line."""
    line = f"{prefix}{name} = {value}"
    if len(line) <= _COMMENT_WIDTH or not value.startswith("["):
        return [line]
    items = tomllib.loads(f"v = {value}")["v"]
    return [f"{prefix}{name} = [", *(f"{prefix}    {toml_value(v)}," for v in items), f"{prefix}]"]


def example_experiment() -> str:
    """An experiment file with every table and key: each key at its default with its doc as a
    comment above it, a key without a default value commented out with an example value
    (required ones given one), and tables whose absence means something (another table's
    engine, levels spelled out instead of a preset) commented out whole. :func:`load_experiment`
    reads it; ``synthrank config --example`` prints it."""
    lines = [
        "# A synthrank experiment file with every table and key, each at its default (keys",
        "# without one are commented out). An experiment keeps only the tables it needs: the",
        "# top-level name and one [[train]] table are required; [queries], [doc2query] and",
        "# [graded] each add a stage that makes train data (run with all of them, this file",
        "# generates, grades and trains on each). Reference: synthrank config --json.",
    ]
    for table in EXPERIMENT_TABLES:
        lines.append("")
        if table.header:
            lines += _comment(f"{table.header} {table.purpose}")
        for row in table.rows if table.repeats else ({},):
            lines += _example_table(table, row)
    return "\n".join(lines) + "\n"


def _example_table(table: TableDoc, row: dict[str, Any]) -> list[str]:
    off = "" if table.written else "# "
    lines = [f"{off}{table.header}"] if table.header else []
    for key in table.key_docs():
        given = row.get(key.name)
        if table.written:
            note = " (required)" if key.default == REQUIRED else ""
            lines += _comment(key.doc + note)
        if given is not None or key.default == REQUIRED:
            value = toml_value(key.example if given is None else given)
            lines += _assignment(key.name, value, off)
        elif key.default != UNSET and key.name not in table.commented:
            lines += _assignment(key.name, key.default, off)
        elif key.default != UNSET:
            lines.append(f"# {off}{key.name} = {key.default}")
        elif key.example is not None:
            lines.append(f"# {off}{key.name} = {toml_value(key.example)}")
    return lines
