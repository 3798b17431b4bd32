"""Small charts as inline SVG, drawn here (no script, no library): a bar per month,
each bar a link to the list behind its number."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 300
HEIGHT = 90
TOP = 14  # room for the largest value
BOTTOM = 16  # room for the month labels


def bar_chart(title: str, bars: Sequence[tuple[str, int, str]]) -> Markup:
    """``bars``: (label, value, href) oldest first. The largest value is written
    above its bar; every bar carries its label and value as a tooltip."""
    if not bars:
        return Markup("")
    peak = max(value for _, value, _ in bars) or 1
    step = WIDTH / len(bars)
    room = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"'
        f' role="img" aria-label="{escape(title)}">'
    ]
    top_drawn = False
    for index, (label, value, href) in enumerate(bars):
        x = index * step + step * 0.15
        width = step * 0.7
        height = room * value / peak
        y = TOP + room - height
        parts.append(
            f'<a href="{escape(href)}"><rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}"'
            f' height="{max(height, 0.5):.1f}"><title>{escape(label)}: {value}</title></rect></a>'
        )
        if value == peak and not top_drawn and value:
            top_drawn = True
            parts.append(
                f'<text x="{x + width / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">{value}</text>'
            )
        if index in (0, len(bars) - 1):  # the first and last months, inside the frame
            anchor, at = ("start", x) if index == 0 else ("end", x + width)
            parts.append(
                f'<text x="{at:.1f}" y="{HEIGHT - 3}" text-anchor="{anchor}">{escape(label)}</text>'
            )
    parts.append(f'<line x1="0" y1="{TOP + room}" x2="{WIDTH}" y2="{TOP + room}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  every value above is escaped or a number
