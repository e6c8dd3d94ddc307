"""Plain-text tables of evaluation results for the terminal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from synthrank.evaluate.significance import Comparison


def metrics_table(rows: Mapping[str, Mapping[str, float]], measures: Sequence[str]) -> str:
    """One row per system, one column per measure, values as fractions with 4 decimals."""
    label_width = max([len("system"), *(len(name) for name in rows)])
    widths = [max(len(m), 6) for m in measures]
    header = "system".ljust(label_width) + "".join(
        f"  {m:>{w}}" for m, w in zip(measures, widths, strict=True)
    )
    lines = [header, "-" * len(header)]
    for name, values in rows.items():
        cells = "".join(f"  {values[m]:>{w}.4f}" for m, w in zip(measures, widths, strict=True))
        lines.append(name.ljust(label_width) + cells)
    return "\n".join(lines)


def comparison_table(comparisons: Sequence[Comparison], *, alpha: float = 0.05) -> str:
    """Measure, A, B, delta, p-value; ``*`` marks p < alpha."""
    lines = [f"{'measure':<8}  {'A':>7}  {'B':>7}  {'B-A':>8}  {'p':>8}", "-" * 46]
    for c in comparisons:
        mark = " *" if c.p_value < alpha else ""
        lines.append(
            f"{c.measure:<8}  {c.mean_a:>7.4f}  {c.mean_b:>7.4f}  {c.delta:>+8.4f}  "
            f"{c.p_value:>8.4f}{mark}"
        )
    n = comparisons[0].n_queries if comparisons else 0
    lines.append(f"{n} paired queries; * p < {alpha}")
    return "\n".join(lines)
