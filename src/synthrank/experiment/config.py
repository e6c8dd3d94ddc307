"""The experiment file: one TOML that names every stage of a synthrank experiment.

::

    name = "quickstart"
    base_model = "minilm"

    [queries]                 # real queries to generate for
    source = "beir:scifact"
    split = "train"
    limit = 8
    heldout = 0.25            # share of generated queries kept out of training (for the report)

    [generate]                # any GenerationConfig key, [[generate.levels]], [generate.backend]
    target_words = 60
    [generate.backend]
    model = "smollm2-135m"

    [judge]                   # optional: JudgeConfig keys
    rule = "drop"

    [[train]]                 # one table per trained model: name, data, any TrainConfig key
    name = "ws2"
    loss = "ws2"
    data = ["synthetic"]      # "synthetic" is the generated data; or any --data source string
    seeds = [0, 1]            # optional: one model per seed (ws2@0, ws2@1); the report averages

    [report]                  # optional
    reference = "infonce"     # a second delta column: each model against this one
    [[report.claims]]         # a claim the report marks held, not held or undecided
    id = "C1"
    text = "ws2 beats InfoNCE on the same synthetic lists"
    model = "ws2"
    than = "infonce"
    dataset = "beir:scifact"
    kind = "better"           # or "matches": the 95% interval of the difference within +-margin

    [evaluate]
    datasets = ["beir:scifact"]
    split = "test"
    corpus_sample = 1000      # optional: judged documents + this many others
    splits = {"beir:arguana" = "dev"}  # optional: a dataset's own split
    backend = "torch"         # optional: or "openvino", with precision = "bf16", quantize = "int8"
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from synthrank.config import from_mapping, read_toml
from synthrank.errors import SynthrankError
from synthrank.evaluate.metrics import MEASURES
from synthrank.evaluate.models import Runtime
from synthrank.fileio import group_name
from synthrank.generate import BackendSpec, GenerationConfig, config_from_dict
from synthrank.generate.judge import JudgeConfig
from synthrank.train import SourceSpec, TrainConfig

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class QueriesSection:
    source: str
    split: str | None = None
    limit: int | None = None
    shard: str | None = None
    heldout: float = 0.1


@dataclass(frozen=True)
class EvaluateSection:
    datasets: tuple[str, ...] = ("beir:scifact",)
    split: str = "test"
    corpus_sample: int | None = None
    max_length: int | None = 256
    """Every model is evaluated at this length (trained models keep their training length)."""
    batch_size: int = 8
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


@dataclass(frozen=True)
class ReportSection:
    reference: str | None = None
    """A model (name without @seed) every other is also compared with, beside the base."""
    claims: tuple[Claim, ...] = ()


@dataclass(frozen=True)
class TrainRun:
    name: str
    data: tuple[str, ...]
    settings: dict[str, Any]
    """TrainConfig keys other than data, out and base_model."""

    def config(self, out: Path, base_model: str, synthetic: Path) -> TrainConfig:
        sources = [
            SourceSpec.parse(f"{synthetic},split=train" if spec == SYNTHETIC else spec)
            for spec in self.data
        ]
        config = TrainConfig(data=sources, out=out, base_model=base_model, **self.settings)
        config.validate()
        return config


@dataclass(frozen=True)
class Experiment:
    name: str
    queries: QueriesSection
    generation: GenerationConfig
    backend: BackendSpec
    runs: tuple[TrainRun, ...]
    evaluation: EvaluateSection
    judge: JudgeConfig | None = None
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
    checked = from_mapping(
        TrainConfig, raw, where, nested={"data": [], "out": Path("."), "base_model": ""}
    )
    settings = {k: v for k, v in asdict(checked).items() if k in raw}
    return TrainRun(name=name, data=tuple(data), settings=settings)


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file; errors name the file, table and key."""
    path = Path(path)
    values = read_toml(path)
    where = str(path)
    known = {"name", "base_model", "queries", "generate", "judge", "train", "evaluate", "report"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SynthrankError(
            f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}"
        )
    name = values.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise SynthrankError(f"{where}: give the experiment a name (name = \"...\", no '/')")
    if "queries" not in values:
        raise SynthrankError(f"{where}: missing [queries] (source = a BEIR dataset or a file)")
    queries = from_mapping(QueriesSection, _table(values, "queries", where), f"{where}, [queries]")
    if not 0 <= queries.heldout < 1:
        raise SynthrankError(f"{where}, [queries], key 'heldout': a share in [0, 1)")
    generate_table = _table(values, "generate", where)
    backend = from_mapping(
        BackendSpec, _table(generate_table, "backend", where), f"{where}, [generate.backend]"
    )
    generate_table.pop("backend", None)
    generation = config_from_dict(generate_table, f"{where}, [generate]")
    judge = None
    if "judge" in values:
        judge = from_mapping(JudgeConfig, _table(values, "judge", where), f"{where}, [judge]")
        judge.validate()
    raw_runs = values.get("train", [])
    if not isinstance(raw_runs, list) or not raw_runs:
        raise SynthrankError(f"{where}: give at least one [[train]] table")
    runs = tuple(
        run
        for i, raw in enumerate(raw_runs)
        for run in _train_runs(raw, f"{where}, [[train]] #{i + 1}")
    )
    names = [run.name for run in runs]
    if len(set(names)) != len(names) or "base" in names:
        raise SynthrankError(f"{where}: [[train]] names must be unique and not 'base' ({names})")
    evaluation = from_mapping(
        EvaluateSection, _table(values, "evaluate", where), f"{where}, [evaluate]"
    )
    if not evaluation.datasets:
        raise SynthrankError(f"{where}, [evaluate], key 'datasets': name at least one dataset")
    if len(set(evaluation.datasets)) != len(evaluation.datasets):
        raise SynthrankError(f"{where}, [evaluate], key 'datasets': a dataset is named twice")
    if not isinstance(evaluation.splits, dict) or any(
        d not in evaluation.datasets or not isinstance(v, str) for d, v in evaluation.splits.items()
    ):
        raise SynthrankError(
            f"{where}, [evaluate], key 'splits': a table of dataset = split, for datasets of "
            f"'datasets' ({', '.join(evaluation.datasets)})"
        )
    try:
        evaluation.runtime.validate()
    except SynthrankError as exc:
        raise SynthrankError(f"{where}, [evaluate]: {exc}") from None
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
        base_model=values.get("base_model", "minilm"),
        report=report,
        source=path,
    )


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
        if claim.kind not in CLAIM_KINDS or not 0 < claim.margin < math.inf:
            raise SynthrankError(f"{at}: kind is better or matches, and margin a number > 0")
        claims.append(claim)
    return ReportSection(section.reference, tuple(claims))
