"""The report of one experiment run folder: ``report.md`` (a summary to commit) and
``report.html`` (self-contained: inline CSS and SVG, no scripts, no network).

It reads what the stages wrote: ``experiment.json`` (the stages of the current config), each
evaluation's ``metrics.json`` (means and per-query values), each trained model's
``train_log.jsonl`` and ``synthrank_train.json``, the generated data's ``meta.json`` and the
held-out score files. Deltas to the base model come with the paired t-test over queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from synthrank.errors import SynthrankError
from synthrank.evaluate import MEASURES, compare_per_query, load_metrics
from synthrank.fileio import atomic_write_text, read_text
from synthrank.generate.inspect import fully_ordered
from synthrank.report.svg import bar_chart, box_plot, forest_plot, line_chart, quantiles

BASE = "base"
HEADLINE = "nDCG@10"
EXAMPLES = 3


@dataclass
class ModelResult:
    model: str
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    deltas: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    """measure -> (delta to base, p-value of the paired t-test, 95% interval low, high)."""


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
    notes: list[str] = []
    for stage in plan["stages"]:
        folder = root / stage["folder"]
        if not (folder / "stage.json").is_file():
            notes.append(f"stage {stage['kind']} {stage['name']} has not finished")
            continue
        kind = stage["kind"]
        if kind == "generate":
            generation = _read_json(folder / "meta.json")
            examples = _first_lists(folder / "lists.jsonl", EXAMPLES)
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
    for results in datasets.values():
        base = next((r for r in results if r.model == BASE), None)
        if base is None:
            continue
        for result in results:
            if result is base:
                continue
            for c in compare_per_query(base.per_query, result.per_query, MEASURES):
                result.deltas[c.measure] = (c.delta, c.p_value, c.ci_low, c.ci_high)
    return ReportData(
        plan["name"], root, datasets, split, losses, settings, heldout, generation, notes, examples
    )


def _first_lists(path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` lists of a generation's ``lists.jsonl``, passages by falling grade."""
    if not path.is_file():
        return []
    lists = []
    for line in read_text(path).splitlines():
        if line.strip() and len(lists) < n:
            record = json.loads(line)
            record["passages"] = sorted(record["passages"], key=lambda x: -x["grade"])
            lists.append(record)
    return lists


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


def _ci(delta: tuple[float, float, float, float]) -> str:
    return f"[{delta[2]:+.4f}, {delta[3]:+.4f}]"


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
        "rejected"
    )


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
    for note in data.notes:
        lines.append(f"Note: {note}.")
    if data.notes:
        lines.append("")
    for dataset, results in data.datasets.items():
        best = _best(results)
        lines += [
            f"## {dataset} ({data.split[dataset]})",
            "",
            "| model | " + " | ".join(MEASURES) + f" | delta {HEADLINE} vs base (p) | 95% CI |",
            "|---|" + "---|" * (len(MEASURES) + 2),
        ]
        for result in results:
            label = result.model + (" (base)" if result.model == BASE else "")
            if result.model == best:
                label = f"**{label}** (best)"
            cells = [f"{result.metrics[m]:.4f}" for m in MEASURES]
            delta = interval = ""
            if HEADLINE in result.deltas:
                value, p, *_ = result.deltas[HEADLINE]
                delta, interval = f"{value:+.4f} ({_p(p)})", _ci(result.deltas[HEADLINE])
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {delta} | {interval} |")
        if best is None and len(results) > 1:
            lines.append("")
            lines.append(
                f"No model beats every other on {HEADLINE} (paired t-test, p < {SIGNIFICANCE}): "
                "none is marked best."
            )
        lines.append("")
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
            "| run | loss | steps | first loss | last loss |",
            "|---|---|---|---|---|",
        ]
        for model, curve in data.losses.items():
            loss = data.train_settings.get(model, {}).get("loss", "")
            if curve:
                lines.append(
                    f"| {model} | {loss} | {int(curve[-1][0])} | {curve[0][1]:.4f} | "
                    f"{curve[-1][1]:.4f} |"
                )
        lines.append("")
    if data.examples:
        names = _level_names(data)
        lines += [f"## {len(data.examples)} generated lists, in full", ""]
        for record in data.examples:
            lines += [f"Query {record['query_id']}: *{record['query']}*", ""]
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
    parts += [f"<p class='note'>Note: {escape(n)}.</p>" for n in data.notes]
    for dataset, results in data.datasets.items():
        best = _best(results)
        parts.append(f"<h2>{escape(dataset)} ({escape(data.split[dataset])})</h2>")
        header = "".join(f"<th>{escape(m)}</th>" for m in MEASURES)
        parts.append(
            f"<table class='metrics' data-dataset='{escape(dataset)}'><tr><th>model</th>{header}"
            f"<th>delta {HEADLINE} vs base</th><th>p (paired t)</th><th>95% CI</th></tr>"
        )
        for result in results:
            css = "best" if result.model == best else ("base" if result.model == BASE else "")
            label = result.model + (" (base)" if result.model == BASE else "")
            label += " (best)" if result.model == best else ""
            cells = "".join(
                f"<td data-model='{escape(result.model)}' data-measure='{escape(m)}'>"
                f"{result.metrics[m]:.4f}</td>"
                for m in MEASURES
            )
            found = result.deltas.get(HEADLINE)
            delta = "" if found is None else f"{found[0]:+.4f}"
            parts.append(
                f"<tr class='{css}'><td>{escape(label)}</td>{cells}<td>{delta}</td>"
                f"<td>{'' if found is None else _p(found[1])}</td>"
                f"<td>{'' if found is None else _ci(found)}</td></tr>"
            )
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
    if data.examples:
        names = _level_names(data)
        parts.append(f"<h2>{len(data.examples)} generated lists, in full</h2>")
        for record in data.examples:
            parts.append(
                f"<section class='list' data-query='{escape(record['query_id'])}'>"
                f"<p>Query {escape(record['query_id'])}: <em>{escape(record['query'])}</em></p><ul>"
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
