"""The quality-vs-%strong-calls picture of ``llm-router router eval``, as SVG text written by
hand (no plotting library). Pure: curves in, a string out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["render_curves_svg", "render_lines_svg"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
_W = 640
_PLOT_H = 344
_LEFT, _RIGHT, _TOP, _AXIS = 64, 20, 40, 44
_LEGEND_ROW = 18


def nice_ticks(lo: float, hi: float, *, target: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering ``lo..hi``.

    >>> nice_ticks(0.66, 0.72)
    [0.66, 0.68, 0.7, 0.72]
    >>> nice_ticks(0.3, 0.3)
    [0.3, 0.4]
    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    """
    span = hi - lo or abs(hi) or 1.0
    raw = span / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    digits = max(0, -math.floor(math.log10(step)))
    first = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-6:
        ticks.append(round(value, digits))
        value += step
    if ticks[-1] < hi or len(ticks) < 2:
        ticks.append(round(ticks[-1] + step, digits))
    return ticks


def render_curves_svg(
    curves: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    weak: float,
    strong: float,
    title: str,
    note: str | None = None,
) -> str:
    """An SVG picture of each ``(label, points)`` curve: x is the share of strong calls
    (0..1), y the mean quality. Dashed lines mark always-weak, always-strong and random
    routing (the straight line between them). The legend sits below the plot, so it never
    hides a curve; ``note`` (say, that the numbers are in-sample) is printed under the title."""
    ys = [y for _, pts in curves for _, y in pts] + [weak, strong]
    ticks = nice_ticks(min(ys), max(ys))
    lo, hi = ticks[0], ticks[-1]
    plot_w, plot_h = _W - _LEFT - _RIGHT, _PLOT_H
    top = _TOP + (18 if note else 0)
    legend_top = top + plot_h + _AXIS + 8
    _H = legend_top + _LEGEND_ROW * len(curves) + 8

    def x_of(x: float) -> float:
        return _LEFT + x * plot_w

    def y_of(y: float) -> float:
        return top + (hi - y) / (hi - lo) * plot_h

    decimals = max((len(f"{t}".partition(".")[2]) for t in ticks), default=0)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<rect x="{_LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#444"/>',
    ]
    if note:
        out.append(f'<text x="{_W / 2}" y="42" text-anchor="middle" fill="#b00">'
                   f'{escape(note)}</text>')
    for i in range(11):  # grid and ticks
        x = x_of(i / 10)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                   f'{i * 10}</text>')
    for value in ticks:
        y = y_of(value)
        out.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{value:.{decimals}f}</text>')
    out.append(f'<text x="{_LEFT + plot_w / 2}" y="{top + plot_h + 36}" text-anchor="middle">'
               'calls sent to the strong model (%)</text>')
    out.append(f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" '
               'text-anchor="middle">mean quality</text>')
    for label, y in (("always strong", strong), ("always weak", weak)):
        out.append(f'<line x1="{_LEFT}" y1="{y_of(y):.1f}" x2="{_LEFT + plot_w}" '
                   f'y2="{y_of(y):.1f}" stroke="#999" stroke-dasharray="4 4"/>')
        out.append(f'<text x="{_LEFT + plot_w - 4}" y="{y_of(y) - 4:.1f}" text-anchor="end" '
                   f'fill="#777">{label}</text>')
    out.append(f'<line x1="{x_of(0):.1f}" y1="{y_of(weak):.1f}" x2="{x_of(1):.1f}" '
               f'y2="{y_of(strong):.1f}" stroke="#999" stroke-dasharray="2 3"/>')
    for k, (label, points) in enumerate(curves):
        colour = _COLOURS[k % len(_COLOURS)]
        path = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                   'stroke-width="2"/>')
        ly = legend_top + _LEGEND_ROW * k + 12
        out.append(f'<line x1="{_LEFT + 12}" y1="{ly - 4}" x2="{_LEFT + 36}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{_LEFT + 42}" y="{ly}">{escape(label)}</text>')
    out.append("</svg>")
    out[0] = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
              f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="12">')
    out[1] = f'<rect width="{_W}" height="{_H}" fill="white"/>'
    return "\n".join(out) + "\n"


def render_lines_svg(
    lines: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
) -> str:
    """An SVG picture of each ``(label, points)`` line over a shared x axis (say, APGR after
    each number of feedback reports), legend below the plot.

    >>> svg = render_lines_svg([("a", [(0, 0.5), (10, 0.6)])], title="t", x_label="x",
    ...                        y_label="y")
    >>> svg.startswith("<svg") and "polyline" in svg
    True
    """
    xs = [x for _, pts in lines for x, _ in pts]
    ys = [y for _, pts in lines for _, y in pts]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys), max(ys))
    (x_lo, x_hi), (y_lo, y_hi) = (x_ticks[0], x_ticks[-1]), (y_ticks[0], y_ticks[-1])
    plot_w, plot_h, top = _W - _LEFT - _RIGHT, _PLOT_H, _TOP
    legend_top = top + plot_h + _AXIS + 8
    height = legend_top + _LEGEND_ROW * len(lines) + 8

    def x_of(x: float) -> float:
        return _LEFT + (x - x_lo) / ((x_hi - x_lo) or 1) * plot_w

    def y_of(y: float) -> float:
        return top + (y_hi - y) / ((y_hi - y_lo) or 1) * plot_h

    y_decimals = max((len(f"{t}".partition(".")[2]) for t in y_ticks), default=0)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{height}" fill="white"/>',
        f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<rect x="{_LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#444"/>',
    ]
    for value in x_ticks:
        x = x_of(value)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                   f'{value:g}</text>')
    for value in y_ticks:
        y = y_of(value)
        out.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{value:.{y_decimals}f}</text>')
    out.append(f'<text x="{_LEFT + plot_w / 2}" y="{top + plot_h + 36}" text-anchor="middle">'
               f'{escape(x_label)}</text>')
    out.append(f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    for k, (label, points) in enumerate(lines):
        colour = _COLOURS[k % len(_COLOURS)]
        path = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in points)
        dash = "" if k == 0 else ' stroke-dasharray="6 4"'
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"{dash}/>')
        ly = legend_top + _LEGEND_ROW * k + 12
        out.append(f'<line x1="{_LEFT + 12}" y1="{ly - 4}" x2="{_LEFT + 36}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="3"{dash}/>')
        out.append(f'<text x="{_LEFT + 42}" y="{ly}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
