"""The quality-vs-%strong-calls picture of ``llm-router router eval``, as SVG text written by
hand (no plotting library). Pure: curves in, a string out.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["render_curves_svg"]

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
_W, _H = 640, 440
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 20, 40, 56


def render_curves_svg(
    curves: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    weak: float,
    strong: float,
    title: str,
) -> str:
    """An SVG picture of each ``(label, points)`` curve: x is the share of strong calls
    (0..1), y the mean quality. Dashed lines mark always-weak, always-strong and random
    routing (the straight line between them)."""
    ys = [y for _, pts in curves for _, y in pts] + [weak, strong]
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.05 or 0.05
    lo, hi = lo - pad, hi + pad
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x_of(x: float) -> float:
        return _LEFT + x * plot_w

    def y_of(y: float) -> float:
        return _TOP + (hi - y) / (hi - lo) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#444"/>',
    ]
    for i in range(11):  # grid and ticks
        x = x_of(i / 10)
        out.append(f'<line x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_TOP + plot_h}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">'
                   f'{i * 10}</text>')
    for i in range(6):
        value = lo + (hi - lo) * i / 5
        y = y_of(value)
        out.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.3f}</text>')
    out.append(f'<text x="{_LEFT + plot_w / 2}" y="{_H - 14}" text-anchor="middle">'
               'calls sent to the strong model (%)</text>')
    out.append(f'<text transform="translate(16 {_TOP + plot_h / 2}) rotate(-90)" '
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
        ly = _TOP + plot_h - 12 - 16 * (len(curves) - 1 - k)
        out.append(f'<line x1="{_LEFT + 12}" y1="{ly - 4}" x2="{_LEFT + 36}" y2="{ly - 4}" '
                   f'stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{_LEFT + 42}" y="{ly}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
