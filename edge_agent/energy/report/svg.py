"""Small inline SVG charts for the energy report: stacked bars, lines with a limit, bars.

No plotting library and no network assets: each function returns one `<svg>` element as
text, with its axes, labels and a legend, so the report is a single self-contained file
that opens anywhere (and prints) the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 860, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 48
COLOURS = {
    "sharp": "#c0392b",
    "peak": "#e67e22",
    "flat": "#2e86c1",
    "valley": "#27ae60",
    "line": "#34495e",
    "limit": "#c0392b",
    "bar": "#2e86c1",
}


def _nice_max(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * exp:
            return step * exp
    return 10.0 * exp


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _frame(title: str, y_max: float, unit: str, y_min: float = 0.0) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for k in range(5):
        v = y_min + (y_max - y_min) * k / 4
        y = TOP + plot_h - plot_h * k / 4
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#ddd" stroke-width="1"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    middle = f"{TOP + plot_h / 2:.0f}"
    out.append(
        f'<text x="14" y="{middle}" transform="rotate(-90 14 {middle})" '
        f'text-anchor="middle">{escape(unit)}</text>'
    )
    return out


def _x_labels(labels: Sequence[str], xs: Sequence[float]) -> list[str]:
    every = max(1, math.ceil(len(labels) / 16))
    return [
        f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{escape(label)}</text>'
        for i, (label, x) in enumerate(zip(labels, xs, strict=True))
        if i % every == 0
    ]


def _legend(names: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    x = LEFT
    for name, colour in names:
        out.append(
            f'<rect x="{x}" y="{HEIGHT - 18}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{HEIGHT - 9}">{escape(name)}</text>'
        )
        x += 14 + 8 * len(name) + 16
    return out


def stacked_bars(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float]]],
    *,
    unit: str,
) -> str:
    """Bars per label, stacked by series (name, colour, values)."""
    totals = [sum(max(0.0, s[2][i]) for s in series) for i in range(len(labels))]
    y_max = _nice_max(max(totals, default=0.0))
    out = _frame(title, y_max, unit)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    n = max(1, len(labels))
    slot = plot_w / n
    bar = max(1.0, slot * 0.7)
    xs = []
    for i in range(len(labels)):
        x = LEFT + slot * i + (slot - bar) / 2
        xs.append(x + bar / 2)
        base = float(TOP + plot_h)
        for name, colour, values in series:
            h = plot_h * max(0.0, values[i]) / y_max
            if h > 0:
                base -= h
                out.append(
                    f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                    f'fill="{colour}"><title>{escape(labels[i])} {escape(name)}: '
                    f"{values[i]:.3f} {escape(unit)}</title></rect>"
                )
    out += _x_labels(labels, xs)
    out += _legend([(name, colour) for name, colour, _ in series])
    out.append("</svg>")
    return "\n".join(out)


def line_chart(
    title: str,
    points: Sequence[tuple[float, float]],
    *,
    unit: str,
    x_labels: Sequence[tuple[float, str]] = (),
    limit: tuple[str, float] | None = None,
    y_min: float = 0.0,
    y_max: float | None = None,
    name: str = "",
) -> str:
    """A polyline of (x, y) points, with an optional horizontal limit (e.g. contract demand)."""
    top = max([y for _, y in points] + ([limit[1]] if limit else []), default=0.0)
    y_hi = y_max if y_max is not None else _nice_max(top * 1.05)
    out = _frame(title, y_hi, unit, y_min)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    if points:
        x0 = min(x for x, _ in points)
        x1 = max(x for x, _ in points)
        span = (x1 - x0) or 1.0

        def sx(x: float) -> float:
            return LEFT + plot_w * (x - x0) / span

        def sy(y: float) -> float:
            return TOP + plot_h - plot_h * (min(max(y, y_min), y_hi) - y_min) / (y_hi - y_min)

        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{COLOURS["line"]}" stroke-width="1.2"/>'
        )
        if len(points) <= 62:
            out += [
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{COLOURS["line"]}">'
                f"<title>{y:.4f}</title></circle>"
                for x, y in points
            ]
        if limit is not None:
            y = sy(limit[1])
            out.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{COLOURS["limit"]}" stroke-dasharray="6 4" stroke-width="1.5"/>'
            )
        slack = span * 0.01  # a tick just before the first point (00:00 vs 00:01) still shows
        shown = [(sx(max(x, x0)), label) for x, label in x_labels if x0 - slack <= x <= x1]
        out += _x_labels([label for _, label in shown], [x for x, _ in shown])
    legend = [(name or title, COLOURS["line"])]
    if limit is not None:
        legend.append((limit[0], COLOURS["limit"]))
    out += _legend(legend)
    out.append("</svg>")
    return "\n".join(out)


def bars(title: str, labels: Sequence[str], values: Sequence[float], *, unit: str) -> str:
    """One bar per label."""
    return stacked_bars(title, labels, [(unit, COLOURS["bar"], values)], unit=unit)
