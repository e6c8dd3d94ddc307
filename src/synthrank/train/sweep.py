"""Train and evaluate a grid of training settings; one table to choose from.

Each combination of the grid trains into ``OUT/<name>`` and is evaluated into ``OUT/<name>/eval``;
a combination whose ``eval/metrics.json`` exists is not trained again, so an interrupted sweep
resumes where it stopped. The untrained base model is evaluated too, as the reference row.
``OUT/results.jsonl`` holds one line per run and ``OUT/table.md`` the table, with the p-value of
a paired t-test of each run's per-query nDCG@10 against the base model's.
"""

from __future__ import annotations

import itertools
import json
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from synthrank.errors import SynthrankError
from synthrank.train.trainer import TrainConfig, train

SWEEPABLE = (
    "loss",
    "lr",
    "temperature",
    "learn_temperature",
    "temperature_lr",
    "target",
    "target_temperature",
    "target_scope",
    "batch_size",
    "group_size",
    "group_strategy",
    "epochs",
    "warmup",
    "seed",
    "binary_threshold",
)


@dataclass(frozen=True)
class SweepRow:
    name: str
    settings: dict[str, Any]
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings, "metrics": self.metrics}


def _convert(key: str, raw: str) -> Any:
    hints = typing.get_type_hints(TrainConfig)
    kind = hints[key]
    if kind is bool:
        if raw.lower() not in ("true", "false"):
            raise SynthrankError(f"--grid {key}: {raw!r} is not true or false")
        return raw.lower() == "true"
    try:
        if kind in (float, float | None):
            return float(raw)
        if kind in (int, int | None):
            return int(raw)
    except ValueError as exc:
        raise SynthrankError(f"--grid {key}: {raw!r} is not a number") from exc
    return raw


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["loss=ws2,w1", "target_temperature=0.25,0.5"]`` -> typed values per setting."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, _, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in SWEEPABLE or not values:
            raise SynthrankError(
                f"--grid {item!r}: expected SETTING=V1,V2,... with SETTING one of "
                f"{', '.join(SWEEPABLE)}"
            )
        grid[key] = [_convert(key, v.strip()) for v in values.split(",")]
    return grid


def _name(combo: dict[str, Any]) -> str:
    return "_".join(f"{key}={value}" for key, value in combo.items()) or "run"


def sweep(
    base: TrainConfig,
    grid: dict[str, list[Any]],
    eval_dataset: str,
    *,
    eval_split: str = "test",
    out: Path,
    progress: bool = True,
) -> list[SweepRow]:
    """Train ``base`` with every combination of ``grid``, evaluate each on ``eval_dataset``."""
    from synthrank.evaluate import evaluate, load_metrics

    known = {f.name for f in fields(TrainConfig)}
    unknown = set(grid) - known
    if unknown:
        raise SynthrankError(f"unknown settings in grid: {', '.join(sorted(unknown))}")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[SweepRow] = []

    def measured(name: str, model: str | Path, target: Path, settings: dict) -> SweepRow:
        metrics_file = target / "metrics.json"
        if metrics_file.is_file():
            saved = load_metrics(metrics_file)
            return SweepRow(name, settings, saved["metrics"], saved["per_query"])
        result = evaluate(
            str(model), eval_dataset, eval_split, progress=progress, name=name, output=target
        )
        row = SweepRow(name, settings, result.metrics, result.per_query)
        with (out / "results.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row.to_json()) + "\n")
        return row

    rows.append(measured("base", base.base_model, out / "base" / "eval", {}))
    for values in itertools.product(*grid.values()):
        combo = dict(zip(grid, values, strict=True))
        name = _name(combo)
        config = replace(base, out=out / name, **combo)
        if not (config.out / "eval" / "metrics.json").is_file():
            train(config, progress=progress)
        rows.append(measured(name, config.out, config.out / "eval", combo))
    (out / "table.md").write_text(format_table(rows, list(grid)), encoding="utf-8")
    return rows


def format_table(rows: list[SweepRow], keys: list[str]) -> str:
    """A markdown table: one row per run, nDCG@10 and R@100 with deltas to the base model, and
    the paired t-test p-value of the nDCG@10 difference."""
    from synthrank.evaluate.significance import compare_per_query

    base = next((r for r in rows if r.name == "base"), None)
    header = [*keys, "nDCG@10", "R@100", "p (nDCG@10 vs base)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row.settings.get(k, "(base)" if row.name == "base" else "")) for k in keys]
        if base is None or row is base:
            cells += [f"{row.metrics[m]:.4f}" for m in ("nDCG@10", "R@100")] + [""]
        else:
            for measure in ("nDCG@10", "R@100"):
                value = row.metrics[measure]
                cells.append(f"{value:.4f} ({value - base.metrics[measure]:+.4f})")
            (test,) = compare_per_query(base.per_query, row.per_query, ["nDCG@10"])
            cells.append(f"{test.p_value:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
