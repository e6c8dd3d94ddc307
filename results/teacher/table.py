"""The table of results/teacher: each trained row on each dev set (mean nDCG@10 of its seeds,
the change against the untrained minilm with the paired t-test over queries on the seed-averaged
per-query values and its 95% interval, and each seed), from the metrics.json files that
train.sh writes. Run from the project root: .venv/bin/python results/teacher/table.py; with
``test``, the rows read on SciFact test (the settings chosen on the dev sets)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from synthrank.evaluate import compare_per_query, load_metrics

ROOT = Path("results/teacher/eval")
DATASETS = {
    "scifact-dev": "SciFact dev",
    "nfcorpus-dev": "NFCorpus dev",
    "arguana-dev": "ArguAna dev",
}
TEST = {"scifact-test": "SciFact test"}
ROWS = {
    "syn-grades": "(a) synthetic lists, intended grades",
    "syn-agreed": "(a) filtered to the passages whose level the teacher agrees with",
    "syn-teacher": "(b) synthetic lists, teacher targets (W = 1)",
    "syn-mix": "(c) synthetic lists, grades and teacher (W = 0.5)",
    "syn-mined": "(b) plus the teacher's 8 hardest passages of other claims (groups of 8)",
    "bm25-teacher": "(d) BM25 top 8 of real abstracts, teacher targets (W = 1)",
    "real-labels": "(e) real labels: judged abstract 3, 2 BM25 at 1, 1 random at 0",
    "syn-masked": "(b)+mined's lists, InfoNCE with the teacher's false negatives masked (0.95)",
    "bm25-masked": "(d)'s lists, InfoNCE with the teacher's false negatives masked (0.95)",
}


def seeds(row: str, dataset: str) -> list[dict]:
    return [
        load_metrics(folder / dataset)
        for folder in sorted(ROOT.glob(f"{row}-*"))
        if (folder / dataset / "metrics.json").is_file()
    ]


def averaged(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Per-query nDCG@10, the mean over the seeds."""
    return {
        q: {"nDCG@10": float(np.mean([r["per_query"][q]["nDCG@10"] for r in runs]))}
        for q in runs[0]["per_query"]
    }


def cell(row: str, dataset: str) -> str:
    base = load_metrics(ROOT / "base" / dataset) if (ROOT / "base" / dataset).is_dir() else None
    runs = seeds(row, dataset)
    if base is None or not runs:
        return "not run"
    (c,) = compare_per_query(base["per_query"], averaged(runs), ["nDCG@10"])
    each = ", ".join(f"{r['metrics']['nDCG@10']:.4f}" for r in runs)
    p = "< 0.001" if c.p_value < 0.001 else f"{c.p_value:.3f}"
    return (
        f"{c.mean_b:.4f} ({c.delta:+.4f}, p {p}, [{c.ci_low:+.3f}, {c.ci_high:+.3f}]; seeds {each})"
    )


def dev_mean(row: str) -> str:
    """The mean over the three dev sets of the seed-averaged nDCG@10: the choice of the settings
    read on SciFact test."""
    values = []
    for dataset in DATASETS:
        runs = [load_metrics(ROOT / row / dataset)] if row == "base" else seeds(row, dataset)
        if not runs:
            return "not run"
        values.append(np.mean([r["metrics"]["nDCG@10"] for r in runs]))
    return f"{np.mean(values):.4f}"


def main() -> None:
    dev = sys.argv[1:] != ["test"]
    datasets = DATASETS if dev else TEST
    columns = list(datasets.values()) + (["mean of the dev sets"] if dev else [])
    header = (
        "| training lists (kl unless named, 609 SciFact train claims) | "
        + " | ".join(columns)
        + " |"
    )
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    base = [
        f"{load_metrics(ROOT / 'base' / d)['metrics']['nDCG@10']:.4f}"
        if (ROOT / "base" / d).is_dir()
        else "not run"
        for d in datasets
    ]
    lines.append(
        "| none: minilm as released | "
        + " | ".join(base + ([dev_mean("base")] if dev else []))
        + " |"
    )
    for row, name in ROWS.items():
        cells = [cell(row, d) for d in datasets] + ([dev_mean(row)] if dev else [])
        if dev or any(c != "not run" for c in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if not dev:
        for a, b in (("bm25-teacher", "real-labels"),):
            runs_a, runs_b = seeds(a, "scifact-test"), seeds(b, "scifact-test")
            if runs_a and runs_b:
                (c,) = compare_per_query(averaged(runs_b), averaged(runs_a), ["nDCG@10"])
                lines.append(
                    f"\n{ROWS[a].split()[0]} against {ROWS[b].split()[0]} on SciFact test: "
                    f"{c.delta:+.4f} nDCG@10 "
                    f"(p {'< 0.001' if c.p_value < 0.001 else f'{c.p_value:.3f}'}, "
                    f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}])"
                )
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
