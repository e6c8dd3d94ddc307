"""The experiment file: one TOML that names every stage of a synthrank experiment.

::

    name = "quickstart"
    base_model = "minilm"

    [queries]                 # optional: real queries to generate passages for; train data
    source = "beir:scifact"   # a BEIR dataset or folder, or a .jsonl / .tsv query file
    split = "train"
    limit = 8
    heldout = 0.25            # share of generated queries kept out of training (for the report)
    reuse = ["results/lists.jsonl.gz"]  # optional: published lists of the same model and
                              # [generate] settings, taken instead of generated

    [generate]                # any GenerationConfig key, [[generate.levels]], [generate.backend]
    target_words = 60
    [generate.backend]
    model = "smollm2-135m"

    [judge]                   # optional: JudgeConfig keys (encoder "mpnet" by default)
    rule = "drop"

    [doc2query]               # optional: queries for documents (synthrank generate-queries);
    corpus = "beir:scifact"   # train data "doc2query"; any QueryGenConfig key, and a
    docs_limit = 1000         # [doc2query.backend] table (default: [generate.backend])
    reuse = ["d2q.jsonl.gz"]  # optional: published queries (synthrank export) taken back
    filter_top_k = 3

    [graded]                  # optional: real lists graded by an LLM judge (synthrank grade);
    dataset = "beir:scifact"  # train data "graded"; a [graded.backend] table as above
    split = "train"
    top_n = 8

    [[train]]                 # one table per trained model: name, data, any TrainConfig key
    name = "ws2"
    loss = "ws2"
    data = ["synthetic"]      # "synthetic", "doc2query" or "graded" (the stages above, options
                              # allowed: "doc2query,bm25=2:0"), or any --data source string
    seeds = [0, 1]            # optional: one model per seed (ws2@0, ws2@1); the report averages

    [report]                  # optional
    reference = "infonce"     # a second delta column: each model against this one
    query_text = true         # the example lists show their query's text (false: its id only,
                              # for a report published without a benchmark's text)
    [[report.claims]]         # a claim the report marks held, not held or undecided
    id = "C1"
    text = "ws2 beats InfoNCE on the same synthetic lists"
    model = "ws2"
    than = "infonce"
    dataset = "beir:scifact"
    kind = "better"           # or "matches": the 95% interval of the difference within +-margin
    note = "base: minilm"     # optional: printed beside the verdict

    [evaluate]
    datasets = ["beir:scifact"]
    split = "test"
    corpus_sample = 1000      # optional: judged documents + this many others
    splits = {"beir:arguana" = "dev"}  # optional: a dataset's own split
    backend = "torch"         # optional: or "openvino", with precision = "bf16", quantize = "int8"
    max_length = 256          # optional: tokens per text for every model (256)
    batch_size = 64           # optional: texts per encoding batch (64; a speed setting only)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from synthrank.config import from_mapping, read_toml
from synthrank.errors import SettingError, SynthrankError
from synthrank.evaluate.encode import ENCODE_BATCH_SIZE
from synthrank.evaluate.metrics import MEASURES
from synthrank.evaluate.models import Runtime
from synthrank.fileio import group_name
from synthrank.generate import BackendSpec, GenerationConfig, config_from_dict
from synthrank.generate.doc2query import QueryGenConfig
from synthrank.generate.graded import GradeJob
from synthrank.generate.judge import JudgeConfig
from synthrank.generate.runner import parse_shard
from synthrank.train import SourceSpec, TrainConfig

SYNTHETIC = "synthetic"
DOC2QUERY = "doc2query"
GRADED = "graded"
STAGE_DATA = {SYNTHETIC: "queries", DOC2QUERY: "doc2query", GRADED: "graded"}
"""Train data names that stand for a stage's output, and the table that makes the stage."""


@dataclass(frozen=True)
class QueriesSection:
    source: str
    split: str | None = None
    limit: int | None = None
    shard: str | None = None
    heldout: float = 0.1
    reuse: tuple[str, ...] = ()
    """Published lists files (``synthrank export``) of the same model and [generate] settings,
    whose lists of these queries are taken instead of generated (``generate --reuse``)."""


@dataclass(frozen=True)
class EvaluateSection:
    datasets: tuple[str, ...] = ("beir:scifact",)
    split: str = "test"
    corpus_sample: int | None = None
    max_length: int | None = 256
    """Every model is evaluated at this length (trained models keep their training length)."""
    batch_size: int = ENCODE_BATCH_SIZE
    seed: int = 0
    splits: dict[str, str] = field(default_factory=dict)
    """Per-dataset split where it is not ``split`` (``{"beir:arguana" = "dev"}``)."""
    backend: str = "torch"
    """Encoder runtime of every evaluation: torch, or openvino (see ``precision``, ``quantize``)."""
    precision: str = "fp32"
    quantize: str | None = None

    def split_of(self, dataset: str) -> str:
        return self.splits.get(dataset, self.split)

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.backend, self.precision, self.quantize)


@dataclass(frozen=True)
class Doc2QuerySection:
    """``[doc2query]``: queries written for documents of ``corpus``
    (:func:`synthrank.generate.doc2query.generate_queries`), then the consistency filter when
    ``filter_top_k`` is set; trained on as the data source ``doc2query``."""

    corpus: str
    docs_limit: int | None = None
    filter_top_k: int | None = None
    reuse: tuple[str, ...] = ()
    """Published queries files (``synthrank export`` of a generate-queries folder) of the same
    corpus, model and settings, whose documents' queries are taken instead of generated
    (``generate-queries --reuse``)."""
    config: QueryGenConfig = field(default_factory=QueryGenConfig)
    backend: BackendSpec | None = None
    """The engine; None: the ``[generate.backend]`` one."""


@dataclass(frozen=True)
class GradedSection:
    """``[graded]``: the BM25 top ``top_n`` of each query of ``dataset``'s ``split`` graded 0-3
    by an LLM judge (:func:`synthrank.generate.graded.grade_real_lists`); trained on as the data
    source ``graded``."""

    dataset: str
    split: str = "train"
    top_n: int = 8
    limit: int | None = None
    passage_words: int = 200
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
    text: str
    model: str
    than: str
    dataset: str
    kind: str = "better"
    margin: float = 0.01
    measure: str = "nDCG@10"
    note: str = ""
    """What the reader should know next to the verdict (how this run differs from the claim's
    source, for example); the report prints it beside the claim."""


@dataclass(frozen=True)
class ReportSection:
    reference: str | None = None
    """A model (name without @seed) every other is also compared with, beside the base."""
    claims: tuple[Claim, ...] = ()
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
    report: ReportSection = ReportSection()
    source: Path | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


def plain(value: Any) -> Any:
    """``value`` with dataclasses, tuples and paths turned into JSON types."""
    if is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value) if f.name != "source"}
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
        base_model=values.get("base_model", "minilm"),
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
    job_keys = {
        k: table.pop(k) for k in ("corpus", "docs_limit", "filter_top_k", "reuse") if k in table
    }
    try:
        config = from_mapping(QueryGenConfig, table, f"{at}]")
    except SynthrankError as exc:
        raise SynthrankError(
            f"{exc} (or corpus, docs_limit, filter_top_k, reuse, [backend])"
        ) from None
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
