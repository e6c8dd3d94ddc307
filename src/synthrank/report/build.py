"""The report of one experiment run folder: ``report.md`` (a summary to commit) and
``report.html`` (self-contained: inline CSS and SVG, no scripts, no network).

It reads what the stages wrote: ``experiment.json`` (the stages of the current config), each
evaluation's ``metrics.json`` (means and per-query values), each trained model's
``train_log.jsonl`` and ``synthrank_train.json``, the generated data's ``meta.json`` and the
held-out score files. Deltas to the base model come with the paired t-test over queries.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from synthrank.errors import SynthrankError
from synthrank.evaluate import MEASURES, compare_per_query, load_metrics
from synthrank.fileio import atomic_write_text, group_name, read_text, write_json_atomic
from synthrank.generate.inspect import fully_ordered
from synthrank.generate.judge import judgment_summary
from synthrank.report.svg import bar_chart, box_plot, forest_plot, line_chart, quantiles

BASE = "base"
HEADLINE = "nDCG@10"
EXAMPLES = 3
EXAMPLES_FILE = "examples.json"


Delta = tuple[float, float, float, float]
"""(difference of means, p-value of the paired t-test, 95% interval low, high)."""


@dataclass
class ModelResult:
    """One model on one dataset; a model trained with several seeds (``ws2@0``, ``ws2@1``) is
    one result whose metrics are the mean over seeds and whose per-query values are each
    query's mean over seeds (what its paired tests use); ``seeds`` keeps each seed's metrics."""

    model: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    deltas: dict[str, Delta] = field(default_factory=dict)
    """measure -> its difference to the base."""
    seeds: dict[str, dict[str, float]] = field(default_factory=dict)
    reference_deltas: dict[str, Delta] = field(default_factory=dict)
    """measure -> its difference to the experiment's reference model."""


@dataclass
class ClaimResult:
    claim: dict[str, Any]
    delta: Delta | None
    verdict: str
    """``held``, ``not held``, ``undecided`` or ``not evaluated`` (a model is missing)."""


@dataclass
class ReportData:
    name: str
    root: Path
    datasets: dict[str, list[ModelResult]]
    split: dict[str, str]
    losses: dict[str, list[tuple[float, float]]]
    train_settings: dict[str, dict[str, Any]]
    heldout: dict[str, dict[str, list[float]]]
    generation: dict[str, Any] | None
    notes: list[str]
    examples: list[dict[str, Any]] = field(default_factory=list)
    """The first :data:`EXAMPLES` generated lists (query, passages with grades), shown in full."""
    reference: str | None = None
    claims: list[ClaimResult] = field(default_factory=list)
    timings: list[tuple[str, str, float]] = field(default_factory=list)
    """(kind, stage name, seconds of all its attempts) of every finished stage."""
    sources: list[str] = field(default_factory=list)
    """One line per other data stage (queries for documents, LLM-graded real lists)."""
    difficulty: dict[str, Any] | None = None
    """The student difficulty of the synthetic training lists (``inspect.json``'s
    ``difficulty``: the base model's misorder rate per pair of levels)."""
    correctness: dict[str, Any] | None = None
    """The [judge] stage's agreement with the intended grades, per level
    (:func:`~synthrank.generate.judge.judgment_summary` and the judge's settings); None where the
    experiment has no judge."""
    base_model: str | None = None
    """The experiment's ``base_model`` (an alias or a folder): what the ``base`` rows name."""

    def label(self, model: str) -> str:
        """A model's row label: ``base (minilm)`` for the base model (a folder by its last
        part), the name otherwise."""
        if model != BASE or not self.base_model:
            return model
        return f"{BASE} ({Path(self.base_model).name})"


def _read_json(path: Path) -> Any:
    return json.loads(read_text(path))


def collect(root: Path) -> ReportData:
    """Everything the report shows, from the files the stages wrote."""
    plan_path = root / "experiment.json"
    if not plan_path.is_file():
        raise SynthrankError(f"{root}: no experiment.json; is this a `synthrank run` folder?")
    plan = _read_json(plan_path)
    datasets: dict[str, list[ModelResult]] = {}
    split: dict[str, str] = {}
    losses: dict[str, list[tuple[float, float]]] = {}
    settings: dict[str, dict[str, Any]] = {}
    heldout: dict[str, dict[str, list[float]]] = {}
    generation = None
    examples: list[dict[str, Any]] = []
    timings: list[tuple[str, str, float]] = []
    notes: list[str] = []
    sources: list[str] = []
    difficulty = correctness = None
    for stage in plan["stages"]:
        folder = root / stage["folder"]
        if not (folder / "stage.json").is_file():
            notes.append(f"stage {stage['kind']} {stage['name']} has not finished")
            continue
        kind = stage["kind"]
        seconds = _read_json(folder / "stage.json").get("seconds")
        if seconds is not None:
            timings.append((kind, stage["name"], seconds))
        if kind == "generate":
            generation = _read_json(folder / "meta.json")
            examples = _first_lists(folder, EXAMPLES)
        elif kind == "judge":
            judge = _read_json(folder / "meta.json").get("judge", {})
            correctness = {**judge, **(judgment_summary(folder) or {})}
        elif kind == "inspect":
            difficulty = _read_json(folder / "inspect.json").get("difficulty")
        elif kind in ("doc2query", "graded"):
            sources.append(_source_line(kind, _read_json(folder / "meta.json")))
        elif kind == "sample":
            notes.append(
                f"{stage['name']} is evaluated on a corpus sample (every judged document plus "
                "random others); scores are higher than on the full corpus"
            )
        elif kind == "train":
            log = folder / "train_log.jsonl"
            if log.is_file():
                entries = [json.loads(x) for x in read_text(log).splitlines() if x.strip()]
                losses[stage["model"]] = [(e["step"], e["loss"]) for e in entries if "loss" in e]
            summary = folder / "synthrank_train.json"
            if summary.is_file():
                settings[stage["model"]] = _read_json(summary).get("config", {})
        elif kind == "evaluate":
            metrics = load_metrics(folder)
            datasets.setdefault(stage["dataset"], []).append(
                ModelResult(stage["model"], metrics["metrics"], metrics["per_query"])
            )
            split[stage["dataset"]] = metrics["split"]
        elif kind == "heldout":
            heldout[stage["model"]] = _read_json(folder / "scores.json")
    report = plan.get("experiment", {}).get("report") or {}
    reference = report.get("reference")
    datasets = {name: average_seeds(results) for name, results in datasets.items()}
    for results in datasets.values():
        for anchor, slot in ((BASE, "deltas"), (reference, "reference_deltas")):
            found = next((r for r in results if r.model == anchor), None)
            for result in results if found is not None else []:
                if result is not found:
                    getattr(result, slot).update(_differences(found, result, MEASURES))
    claims = [decide_claim(c, datasets) for c in report.get("claims", [])]
    if not report.get("query_text", True):
        for record in examples:
            record["query"] = None
    return ReportData(
        plan["name"],
        root,
        datasets,
        split,
        losses,
        settings,
        heldout,
        generation,
        notes,
        examples,
        reference,
        claims,
        timings,
        sources,
        difficulty,
        correctness,
        plan.get("experiment", {}).get("base_model"),
    )


def average_seeds(results: list[ModelResult]) -> list[ModelResult]:
    """Results of one dataset with each ``NAME@SEED`` group folded into one ``NAME`` result
    (mean metrics, per-query means over seeds), in order of first appearance."""
    groups: dict[str, list[ModelResult]] = {}
    for result in results:
        groups.setdefault(group_name(result.model), []).append(result)
    folded = []
    for name, members in groups.items():
        if len(members) == 1 and members[0].model == name:
            folded.append(members[0])
            continue
        queries = set(members[0].per_query)
        for member in members[1:]:
            if set(member.per_query) != queries:
                raise SynthrankError(
                    f"{name}: {member.model} covers {len(member.per_query)} queries and "
                    f"{members[0].model} {len(queries)}; evaluate every seed on the same "
                    "dataset and split (rerun the experiment)"
                )
        per_query = {
            q: {
                k: sum(m.per_query[q][k] for m in members) / len(members)
                for k in members[0].per_query[q]
            }
            for q in sorted(queries)
        }
        metrics = {k: sum(m.metrics[k] for m in members) / len(members) for k in MEASURES}
        seeds = {m.model.split("@", 1)[1]: m.metrics for m in members}
        folded.append(ModelResult(name, metrics, per_query, seeds=seeds))
    return folded


def _differences(a: ModelResult, b: ModelResult, measures) -> dict[str, Delta]:
    return {
        c.measure: (c.delta, c.p_value, c.ci_low, c.ci_high)
        for c in compare_per_query(a.per_query, b.per_query, measures)
    }


def decide_claim(claim: dict[str, Any], datasets: dict[str, list[ModelResult]]) -> ClaimResult:
    """A claim of the experiment file (:class:`synthrank.experiment.config.Claim`) decided on
    the results of its dataset (corpus-sample results count for their dataset)."""
    results = next(
        (
            r
            for name, r in datasets.items()
            if name.split(" (corpus sample)")[0] == claim["dataset"]
        ),
        [],
    )
    found = {r.model: r for r in results}
    if claim["model"] not in found or claim["than"] not in found:
        return ClaimResult(claim, None, "not evaluated")
    measure = claim.get("measure", HEADLINE)
    delta = _differences(found[claim["than"]], found[claim["model"]], [measure])[measure]
    value, p, low, high = delta
    if len(found[claim["model"]].per_query) < 2:
        verdict = "undecided"  # one query gives no test and no interval
    elif claim.get("kind", "better") == "matches":
        margin = claim.get("margin", 0.01)
        if -margin <= low and high <= margin:
            verdict = "held"
        elif low > margin or high < -margin:
            verdict = "not held"
        else:
            verdict = "undecided"
    elif p < SIGNIFICANCE:
        verdict = "held" if value > 0 else "not held"
    else:
        verdict = "undecided"
    return ClaimResult(claim, delta, verdict)


def _query_text(record: dict[str, Any], form: str, quote=lambda text: text) -> str:
    """``: <the query>`` for an example list, or a note where ``[report] query_text = false``."""
    if record["query"] is None:
        return " (query text not reproduced)"
    return ": " + form.format(quote(record["query"]))


def _first_lists(folder: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` lists of a generation folder, passages by falling grade: from its
    ``lists.jsonl``, or where the folder travelled without it, from its
    :data:`EXAMPLES_FILE` (the same lists, query text left out: ``query`` None)."""
    path = folder / "lists.jsonl"
    if path.is_file():
        lines = (json.loads(line) for line in read_text(path).splitlines() if line.strip())
        lists = list(itertools.islice(lines, n))
    elif (folder / EXAMPLES_FILE).is_file():
        lists = [{**x, "query": None} for x in json.loads(read_text(folder / EXAMPLES_FILE))][:n]
    else:
        return []
    for record in lists:
        record["passages"] = sorted(record["passages"], key=lambda x: -x["grade"])
    return lists


def write_examples(folder: Path) -> None:
    """Keep the first :data:`EXAMPLES` lists of generation folder ``folder`` (ids, grades and
    passages; no query text) in its :data:`EXAMPLES_FILE`, so that a report built from a copy
    of the run without its journal still shows what the models were trained on."""
    lists = [
        {"query_id": x["query_id"], "passages": x["passages"]}
        for x in _first_lists(folder, EXAMPLES)
    ]
    write_json_atomic(folder / EXAMPLES_FILE, lists)


def _level_names(data: ReportData) -> dict[str, str]:
    return {str(g): name for g, name in ((data.generation or {}).get("levels") or {}).items()}


SIGNIFICANCE = 0.05


def _best(results: list[ModelResult]) -> str | None:
    """The model with the highest nDCG@10, when it beats every other model on it by a paired
    t-test at p < 0.05; None when no model does (the report then marks none)."""
    top = max(results, key=lambda r: r.metrics[HEADLINE])
    for other in results:
        if other is top:
            continue
        (c,) = compare_per_query(other.per_query, top.per_query, [HEADLINE])
        if c.p_value >= SIGNIFICANCE or c.delta <= 0:
            return None
    return top.model


def _loss_panels(data: ReportData) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Training curves grouped by loss: losses of different kinds do not share a scale."""
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for model, curve in data.losses.items():
        loss = data.train_settings.get(model, {}).get("loss", "loss")
        panels.setdefault(loss, {})[model] = curve
    return panels


def loss_ends(curve: list[tuple[float, float]]) -> tuple[float, float]:
    """The mean loss over the first and over the last tenth (at least one) of a training curve's
    ``(step, loss)`` points: a logged step's loss is one batch's, too noisy to compare alone."""
    window = max(1, len(curve) // 10)
    first = [loss for _, loss in curve[:window]]
    last = [loss for _, loss in curve[-window:]]
    return sum(first) / len(first), sum(last) / len(last)


def training_target(settings: dict[str, Any]) -> str:
    """What a trained model learned towards, from its ``synthrank_train.json`` settings: the
    grades' list-wise target, a teacher's (with its weight), InfoNCE's positive (the top grade,
    a binary threshold, or the teacher's best with its false-negative mask)."""
    if settings.get("loss") == "infonce":
        if settings.get("teacher_mask") is not None:
            return f"teacher's best, negatives below {settings['teacher_mask']:g} x it"
        if settings.get("binary_threshold") is not None:
            return f"grade >= {settings['binary_threshold']} vs below"
        return "top grade"
    weight = settings.get("teacher_weight")
    grades = (
        f"grades {settings.get('target', 'softmax')} t {settings.get('target_temperature', '')}"
    )
    if weight is None:
        return f"{grades}, {settings.get('target_scope', 'batch')} scope"
    teacher = f"teacher t {settings.get('teacher_temperature', '')}"
    return teacher if weight >= 1 else f"{weight:g} x {teacher} + {1 - weight:g} x {grades}"


def _ci(delta: Delta) -> str:
    return f"[{delta[2]:+.4f}, {delta[3]:+.4f}]"


def _delta(delta: Delta) -> str:
    return f"{delta[0]:+.4f} ({_p(delta[1])})"


def _seed_cell(result: ModelResult) -> str:
    """``2: 0.7012, 0.6980``: the number of seeds and each seed's nDCG@10."""
    if not result.seeds:
        return "1"
    values = ", ".join(f"{m[HEADLINE]:.4f}" for m in result.seeds.values())
    return f"{len(result.seeds)}: {values}"


def _cell(text: str) -> str:
    """``text`` as one markdown table cell: its own pipes escaped, on one line."""
    return " ".join(text.split()).replace("|", "\\|")


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _generation_line(generation: dict[str, Any]) -> str:
    counts = generation.get("counts", {})
    per_level = ", ".join(f"{g}: {n}" for g, n in counts.get("passages_per_level", {}).items())
    strategies = ", ".join(f"{g}: {s}" for g, s in generation.get("strategies", {}).items())
    backend = generation.get("backend", {})
    return (
        f"{counts.get('queries', 0)} queries, {counts.get('passages', 0)} passages "
        f"(per level {per_level}) by {backend.get('model')} ({backend.get('backend')}); "
        f"strategies {strategies}; {counts.get('failed_passages', 0)} passages failed "
        f"validation, {counts.get('rejected_calls', 0)} of {counts.get('calls', 0)} calls "
        f"rejected{_reuse_note(generation)}"
    )


def _reuse_note(generation: dict[str, Any]) -> str:
    """Which lists were taken from published files, and how long their own jobs ran."""
    parts = []
    for archive, entry in (generation.get("reused") or {}).items():
        seconds = entry.get("seconds_total")
        took = "time not recorded" if seconds is None else f"its job ran {seconds / 60:.1f} min"
        parts.append(f"{entry['queries']} reused from {archive} ({took})")
    if not parts:
        return ""
    here = generation.get("seconds_total")
    made = "" if here is None else f"; generated here in {here / 60:.1f} min"
    return f"; lists {', '.join(parts)}{made}"


def _difficulty_line(difficulty: dict[str, Any]) -> str:
    """The share of adjacent-level pairs of the training lists the base model scores in the
    wrong order, overall and per pair."""
    adjacent = difficulty.get("adjacent", {})
    if not adjacent.get("pairs"):
        return f"Training lists: no pairs of adjacent levels to order for {difficulty['student']}"
    grades = sorted({int(g) for k in difficulty if ">" in k for g in k.split(">")}, reverse=True)
    per_pair = ", ".join(
        f"{a}>{b} {difficulty[f'{a}>{b}']['rate']:.1%}" for a, b in itertools.pairwise(grades)
    )
    return (
        f"Training lists under the untrained {difficulty['student']}: "
        f"{adjacent['rate']:.1%} of {adjacent['pairs']} adjacent-level passage pairs in the "
        f"wrong order ({per_pair}); levels the student already orders hold little to learn"
    )


def _correctness_line(correctness: dict[str, Any] | None) -> str:
    """How often the independent judge agrees with the intended grades, per level (issue 14's
    label correctness); where no judge ran, that it was not measured."""
    if correctness is None:
        return (
            'Label correctness: not measured (a [judge] table measures it; rule = "keep" '
            "only records the judge's agreement)"
        )
    judge = correctness.get("judge")
    name = f"{judge} judge {correctness['encoder']}" if judge == "encoder" else f"{judge} judge"
    per_level = ", ".join(
        f"{g}: {v['agree'] / v['passages']:.0%}" for g, v in correctness["per_level"].items()
    )
    decisions = ", ".join(f"{n} {k}" for k, n in sorted(correctness["decisions"].items()))
    return (
        f"Label correctness ({name}, rule {correctness.get('rule')}): "
        f"{correctness['agreement']:.0%} of {correctness.get('passages')} generated passages "
        f"agree with their intended level (per level {per_level}; {decisions})"
    )


def _source_line(kind: str, meta: dict[str, Any]) -> str:
    """What a doc2query or graded stage made, from its ``meta.json``."""
    counts, model = meta.get("counts", {}), meta.get("backend", {}).get("model")
    if kind == "doc2query":
        line = (
            f"Queries for documents: {counts.get('queries', 0)} queries for "
            f"{counts.get('documents', 0)} documents of {meta.get('corpus', {}).get('source')} "
            f"by {model}; {counts.get('rejected_calls', 0)} of {counts.get('calls', 0)} calls "
            "rejected"
        )
        reused = []
        for archive, entry in (meta.get("reused") or {}).items():
            seconds = entry.get("seconds")
            took = "time not recorded" if seconds is None else f"its job ran {seconds / 60:.1f} min"
            reused.append(f"{entry['documents']} documents' queries reused from {archive} ({took})")
        if reused:
            line += f" here; {', '.join(reused)}"
        kept = counts.get("filter")
        if kept:
            line += (
                f"; the consistency filter (source document in the BM25 top {kept['top_k']}) "
                f"kept {kept['kept']} of {kept['checked']}"
            )
        return line
    grades = ", ".join(f"{g}: {n}" for g, n in counts.get("per_grade", {}).items())
    line = (
        f"Real lists graded by an LLM: {counts.get('passages', 0)} passages of "
        f"{counts.get('queries', 0)} queries graded by {model} (per grade {grades}; "
        f"{counts.get('no_grade', 0)} replies without a grade)"
    )
    agreement = meta.get("agreement_with_labels")
    if agreement:
        pos, other = agreement["positives_graded_2_or_3"], agreement["others_graded_0_or_1"]
        line += (
            f"; against the dataset's labels, {pos['agree']} of {pos['n']} labelled positives "
            f"graded 2-3 and {other['agree']} of {other['n']} other passages 0-1"
        )
    return line


def heldout_rows(data: ReportData) -> list[tuple[str, dict[str, float], bool]]:
    """(model, mean score per grade, whether the means fall with the grade) per model."""
    rows = []
    for model, scores in data.heldout.items():
        means = {g: sum(v) / len(v) for g, v in scores.items() if v}
        rows.append((model, means, fully_ordered({int(g): m for g, m in means.items()})))
    return rows


def to_markdown(data: ReportData) -> str:
    lines = [f"# synthrank report: {data.name}", ""]
    if data.generation:
        lines += [f"Synthetic data: {_generation_line(data.generation)}.", ""]
    if data.difficulty:
        lines += [f"{_difficulty_line(data.difficulty)}.", ""]
    if data.generation:
        lines += [f"{_correctness_line(data.correctness)}.", ""]
    for line in data.sources:
        lines += [f"{line}.", ""]
    for note in data.notes:
        lines.append(f"Note: {note}.")
    if data.notes:
        lines.append("")
    for dataset, results in data.datasets.items():
        best = _best(results)
        seeded = any(r.seeds for r in results)
        extra = [f"delta {HEADLINE} vs base (p)", "95% CI"]
        if data.reference:
            extra.append(f"delta vs {data.reference} (p)")
        lines += [
            f"## {dataset} ({data.split[dataset]})",
            "",
            "| model | "
            + ("seeds | " if seeded else "")
            + " | ".join(list(MEASURES) + extra)
            + " |",
            "|---|" + "---|" * (len(MEASURES) + len(extra) + seeded),
        ]
        for result in results:
            label = data.label(result.model)
            if result.model == best:
                label = f"**{label}** (best)"
            cells = [_seed_cell(result)] if seeded else []
            cells += [f"{result.metrics[m]:.4f}" for m in MEASURES]
            found = result.deltas.get(HEADLINE)
            cells += ["", ""] if found is None else [_delta(found), _ci(found)]
            if data.reference:
                found = result.reference_deltas.get(HEADLINE)
                cells.append("" if found is None else _delta(found))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if best is None and len(results) > 1:
            lines.append("")
            lines.append(
                f"No model beats every other on {HEADLINE} (paired t-test, p < {SIGNIFICANCE}): "
                "none is marked best."
            )
        lines.append("")
    if data.claims:
        noted = any(result.claim.get("note") for result in data.claims)
        lines += [
            "## Claims",
            "",
            "| claim | dataset | comparison | difference (p) | 95% CI | verdict |"
            + (" note |" if noted else ""),
            "|---|---|---|---|---|---|" + ("---|" if noted else ""),
        ]
        for result in data.claims:
            c = result.claim
            measure = c.get("measure", HEADLINE)
            rule = f"{c['model']} vs {c['than']}, {measure}"
            if c.get("kind") == "matches":
                rule += f", within +-{c.get('margin', 0.01)}"
            found = result.delta
            lines.append(
                f"| {c['id']}: {_cell(c['text'])} | {c['dataset']} | {rule} | "
                f"{'' if found is None else _delta(found)} | "
                f"{'' if found is None else _ci(found)} | **{result.verdict}** |"
                + (f" {_cell(c.get('note', ''))} |" if noted else "")
            )
        lines += [
            "",
            "Held: the difference goes the claimed way with p < 0.05 (paired t-test on "
            "seed-averaged per-query values); not held: it goes the other way with p < 0.05; "
            "undecided: neither. A 'matches' claim holds when the 95% interval lies within the "
            "margin and fails when it lies wholly outside.",
            "",
        ]
    rows = heldout_rows(data)
    if rows:
        grades = sorted({g for _, means, _ in rows for g in means}, key=int, reverse=True)
        lines += [
            "## Scores per level on held-out synthetic lists",
            "",
            "| model | " + " | ".join(f"level {g}" for g in grades) + " | levels in order |",
            "|---|" + "---|" * (len(grades) + 1),
        ]
        for model, means, ordered in rows:
            cells = [f"{means[g]:.4f}" if g in means else "" for g in grades]
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {'yes' if ordered else 'no'} |")
        lines.append("")
    if data.losses:
        lines += [
            "## Training",
            "",
            "Loss: the mean over the first and the last tenth of the logged steps (one step's "
            "loss is one batch's).",
            "",
            "| run | loss | target | steps | loss, first tenth | loss, last tenth |",
            "|---|---|---|---|---|---|",
        ]
        for model, curve in data.losses.items():
            settings = data.train_settings.get(model, {})
            if curve:
                first, last = loss_ends(curve)
                lines.append(
                    f"| {model} | {settings.get('loss', '')} | {training_target(settings)} | "
                    f"{int(curve[-1][0])} | {first:.4f} | {last:.4f} |"
                )
        lines.append("")
    if data.timings:
        lines += ["## Time per stage", "", "| stage | kind | minutes |", "|---|---|---|"]
        lines += [f"| {name} | {kind} | {sec / 60:.1f} |" for kind, name, sec in data.timings]
        lines += ["", _timing_summary(data.timings), ""]
    if data.examples:
        names = _level_names(data)
        lines += [f"## {len(data.examples)} generated lists, in full", ""]
        for record in data.examples:
            lines += [f"Query {record['query_id']}{_query_text(record, '*{}*')}", ""]
            for passage in record["passages"]:
                grade = str(passage["grade"])
                label = f"{grade} ({names[grade]})" if grade in names else grade
                text = " ".join(passage["text"].split())
                lines.append(f"- **{label}**: {text}")
            lines.append("")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
tr.best td{background:#e8f4e8;font-weight:bold} tr.base td{background:#f4f4f4}
.charts{display:flex;flex-wrap:wrap;gap:16px} .note{color:#a05a00}
"""


def _timing_summary(timings: list[tuple[str, str, float]]) -> str:
    totals: dict[str, float] = {}
    for kind, _, sec in timings:
        totals[kind] = totals.get(kind, 0.0) + sec
    summary = ", ".join(f"{kind} {sec / 60:.1f}" for kind, sec in totals.items())
    return f"Minutes per kind: {summary} (a resumed stage counts every run of it)."


def to_html(data: ReportData) -> str:
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>synthrank report: {escape(data.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>synthrank report: {escape(data.name)}</h1>",
    ]
    if data.generation:
        parts.append(
            f"<p id='generation'>Synthetic data: {escape(_generation_line(data.generation))}.</p>"
        )
    if data.difficulty:
        parts.append(f"<p id='difficulty'>{escape(_difficulty_line(data.difficulty))}.</p>")
    if data.generation:
        parts.append(f"<p id='correctness'>{escape(_correctness_line(data.correctness))}.</p>")
    parts += [f"<p class='source'>{escape(line)}.</p>" for line in data.sources]
    parts += [f"<p class='note'>Note: {escape(n)}.</p>" for n in data.notes]
    for dataset, results in data.datasets.items():
        best = _best(results)
        parts.append(f"<h2>{escape(dataset)} ({escape(data.split[dataset])})</h2>")
        seeded = any(r.seeds for r in results)
        header = ("<th>seeds</th>" if seeded else "") + "".join(
            f"<th>{escape(m)}</th>" for m in MEASURES
        )
        reference = f"<th>delta vs {escape(data.reference)} (p)</th>" if data.reference else ""
        parts.append(
            f"<table class='metrics' data-dataset='{escape(dataset)}'><tr><th>model</th>{header}"
            f"<th>delta {HEADLINE} vs base</th><th>p (paired t)</th><th>95% CI</th>{reference}"
            "</tr>"
        )
        for result in results:
            css = "best" if result.model == best else ("base" if result.model == BASE else "")
            label = data.label(result.model) + (" (best)" if result.model == best else "")
            cells = f"<td>{escape(_seed_cell(result))}</td>" if seeded else ""
            cells += "".join(
                f"<td data-model='{escape(result.model)}' data-measure='{escape(m)}'>"
                f"{result.metrics[m]:.4f}</td>"
                for m in MEASURES
            )
            found = result.deltas.get(HEADLINE)
            delta = "" if found is None else f"{found[0]:+.4f}"
            cells += (
                f"<td>{delta}</td><td>{'' if found is None else escape(_p(found[1]))}</td>"
                f"<td>{'' if found is None else _ci(found)}</td>"
            )
            if data.reference:
                found = result.reference_deltas.get(HEADLINE)
                cells += f"<td>{'' if found is None else escape(_delta(found))}</td>"
            parts.append(f"<tr class='{css}'><td>{escape(label)}</td>{cells}</tr>")
        parts.append("</table>")
        if best is None and len(results) > 1:
            parts.append(
                f"<p class='note'>No model beats every other on {HEADLINE} (paired t-test, "
                f"p &lt; {SIGNIFICANCE}): none is marked best.</p>"
            )
        parts.append("<div class='charts'>")
        rows = {
            r.model: r.deltas[HEADLINE][:1] + r.deltas[HEADLINE][2:]
            for r in results
            if HEADLINE in r.deltas
        }
        if rows:
            parts.append(forest_plot(rows, title=f"{HEADLINE} minus base, 95% CI ({dataset})"))
        for measure in (HEADLINE, "R@100"):
            values = {r.model: r.metrics[measure] for r in results}
            parts.append(bar_chart(values, title=f"{measure} on {dataset}"))
        parts.append("</div>")
    if data.claims:
        noted = any(result.claim.get("note") for result in data.claims)
        parts.append(
            "<h2>Claims</h2><table class='claims'><tr><th>claim</th><th>dataset</th>"
            "<th>comparison</th><th>difference (p)</th><th>95% CI</th><th>verdict</th>"
            + ("<th>note</th>" if noted else "")
            + "</tr>"
        )
        for result in data.claims:
            c, found = result.claim, result.delta
            parts.append(
                f"<tr data-claim='{escape(c['id'])}'><td>{escape(c['id'])}: {escape(c['text'])}"
                f"</td><td>{escape(c['dataset'])}</td><td>{escape(c['model'])} vs "
                f"{escape(c['than'])}</td><td>{'' if found is None else escape(_delta(found))}</td>"
                f"<td>{'' if found is None else _ci(found)}</td>"
                f"<td class='verdict'>{escape(result.verdict)}</td>"
                + (f"<td class='note'>{escape(c.get('note', ''))}</td>" if noted else "")
                + "</tr>"
            )
        parts.append("</table>")
    rows = heldout_rows(data)
    if rows:
        parts.append("<h2>Scores per level on held-out synthetic lists</h2><div class='charts'>")
        for model, scores in data.heldout.items():
            groups = {f"level {g}": v for g, v in scores.items()}
            parts.append(box_plot(groups, title=f"{model}: score by intended level"))
        parts.append(
            "</div><table class='heldout'><tr><th>model</th><th>level</th><th>n</th>"
            "<th>mean</th><th>median</th><th>q1</th><th>q3</th></tr>"
        )
        for model, scores in data.heldout.items():
            for grade, values in scores.items():
                if values:
                    _, q1, q2, q3, _ = quantiles(values)
                    parts.append(
                        f"<tr><td>{escape(model)}</td><td>{grade}</td><td>{len(values)}</td>"
                        f"<td>{sum(values) / len(values):.4f}</td><td>{q2:.4f}</td>"
                        f"<td>{q1:.4f}</td><td>{q3:.4f}</td></tr>"
                    )
        parts.append("</table>")
    if data.losses:
        parts.append("<h2>Training loss</h2><div class='charts'>")
        for loss, curves in _loss_panels(data).items():
            parts.append(line_chart(curves, title=f"{loss} loss per logged step"))
        parts.append("</div>")
    if data.timings:
        parts.append("<h2>Time per stage</h2><table><tr><th>stage</th><th>kind</th>")
        parts.append("<th>minutes</th></tr>")
        parts += [
            f"<tr><td>{escape(name)}</td><td>{escape(kind)}</td><td>{sec / 60:.1f}</td></tr>"
            for kind, name, sec in data.timings
        ]
        parts.append(f"</table><p>{escape(_timing_summary(data.timings))}</p>")
    if data.examples:
        names = _level_names(data)
        parts.append(f"<h2>{len(data.examples)} generated lists, in full</h2>")
        for record in data.examples:
            parts.append(
                f"<section class='list' data-query='{escape(record['query_id'])}'>"
                f"<p>Query {escape(record['query_id'])}"
                f"{_query_text(record, '<em>{}</em>', escape)}</p><ul>"
            )
            for passage in record["passages"]:
                grade = str(passage["grade"])
                label = f"{grade} ({names[grade]})" if grade in names else grade
                parts.append(
                    f"<li data-grade='{grade}'><b>{escape(label)}</b>: "
                    f"{escape(passage['text'])}</li>"
                )
            parts.append("</ul></section>")
    parts.append("</body></html>")
    return "".join(parts)


def build_report(root: Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``root``; return their paths."""
    data = collect(root)
    markdown, html = root / "report.md", root / "report.html"
    atomic_write_text(markdown, to_markdown(data))
    atomic_write_text(html, to_html(data))
    return markdown, html
