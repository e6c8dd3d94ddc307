"""Small inline SVG charts (no JavaScript, no network): bars, lines, box plots."""

from __future__ import annotations

from html import escape

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")


def bar_chart(values: dict[str, float], *, title: str, width: int = 520) -> str:
    """Horizontal bars, one per label, value printed at the bar's end."""
    row, left, right = 24, 170, 70
    height = row * len(values) + 36
    top = max(values.values(), default=1.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="4" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(values.items()):
        y = 28 + i * row
        length = (width - left - right) * value / top
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" font-size="12" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{row - 6}" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{left + length + 4:.1f}" y="{y + 14}" font-size="12">{value:.4f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    series: dict[str, list[tuple[float, float]]], *, title: str, width: int = 520, height: int = 240
) -> str:
    """One polyline per series over shared axes, with a legend."""
    points = [p for values in series.values() for p in values]
    if not points:
        return ""
    x_min, x_max = min(p[0] for p in points), max(p[0] for p in points)
    y_min, y_max = min(p[1] for p in points), max(p[1] for p in points)
    x_span, y_span = (x_max - x_min) or 1.0, (y_max - y_min) or 1.0
    left, bottom, top, right = 50, 30, 24, 110

    def place(x: float, y: float) -> str:
        px = left + (width - left - right) * (x - x_min) / x_span
        py = height - bottom - (height - top - bottom) * (y - y_min) / y_span
        return f"{px:.1f},{py:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="4" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{y_max:.3g}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">'
        f"{y_min:.3g}</text>",
        f'<text x="{width - right}" y="{height - bottom + 14}" font-size="10" '
        f'text-anchor="end">step {x_max:.0f}</text>',
    ]
    for i, (name, values) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(place(x, y) for x, y in values)
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>'
        )
        parts.append(
            f'<text x="{width - right + 8}" y="{top + 14 * (i + 1)}" font-size="11" '
            f'fill="{color}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def quantiles(values: list[float]) -> tuple[float, float, float, float, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return at(0.0), at(0.25), at(0.5), at(0.75), at(1.0)


def box_plot(groups: dict[str, list[float]], *, title: str, width: int = 520) -> str:
    """One box (quartiles, whiskers at min and max, median line) per group, vertical."""
    filled = {k: v for k, v in groups.items() if v}
    if not filled:
        return ""
    height, left, bottom, top = 200, 50, 30, 24
    low = min(min(v) for v in filled.values())
    high = max(max(v) for v in filled.values())
    span = (high - low) or 1.0
    slot = (width - left - 10) / len(filled)

    def y(value: float) -> float:
        return height - bottom - (height - top - bottom) * (value - low) / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="4" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end">{high:.2f}</text>',
        f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">'
        f"{low:.2f}</text>",
    ]
    for i, (label, values) in enumerate(filled.items()):
        q0, q1, q2, q3, q4 = quantiles(values)
        center = left + slot * (i + 0.5)
        half = min(slot * 0.3, 30)
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<line x1="{center:.1f}" y1="{y(q0):.1f}" x2="{center:.1f}" y2="{y(q4):.1f}" '
            'stroke="#555"/>'
            f'<rect x="{center - half:.1f}" y="{y(q3):.1f}" width="{2 * half:.1f}" '
            f'height="{max(y(q1) - y(q3), 1):.1f}" fill="{color}" fill-opacity="0.6" '
            'stroke="#333"/>'
            f'<line x1="{center - half:.1f}" y1="{y(q2):.1f}" x2="{center + half:.1f}" '
            f'y2="{y(q2):.1f}" stroke="#000" stroke-width="2"/>'
            f'<text x="{center:.1f}" y="{height - bottom + 16}" font-size="11" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def forest_plot(
    rows: dict[str, tuple[float, float, float]], *, title: str, width: int = 520
) -> str:
    """One row per label: a point at the estimate and a whisker over its interval
    ``(estimate, low, high)``, on one axis with a dashed line at zero; filled points mark
    intervals that exclude zero."""
    row, left, right = 24, 170, 90
    height = row * len(rows) + 52
    values = [v for triple in rows.values() for v in triple] + [0.0]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or 0.01
    lo, hi = lo - pad, hi + pad

    def x(value: float) -> float:
        return left + (width - left - right) * (value - lo) / (hi - lo)

    bottom = 28 + row * len(rows)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="4" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{x(0):.1f}" y1="24" x2="{x(0):.1f}" y2="{bottom}" stroke="#999" '
        'stroke-dasharray="4 3"/>',
        f'<text x="{x(lo):.1f}" y="{bottom + 14}" font-size="10">{lo:+.3f}</text>',
        f'<text x="{x(hi):.1f}" y="{bottom + 14}" font-size="10" text-anchor="end">'
        f"{hi:+.3f}</text>",
    ]
    for i, (label, (estimate, low, high)) in enumerate(rows.items()):
        y = 28 + i * row + row / 2
        fill = "#222" if low > 0 or high < 0 else "#fff"
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="12" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<line x1="{x(low):.1f}" y1="{y:.1f}" x2="{x(high):.1f}" y2="{y:.1f}" '
            'stroke="#222" stroke-width="1.5"/>'
            f'<circle cx="{x(estimate):.1f}" cy="{y:.1f}" r="4" fill="{fill}" stroke="#222"/>'
            f'<text x="{width - right + 6}" y="{y + 4:.1f}" font-size="11">'
            f"{estimate:+.4f}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
