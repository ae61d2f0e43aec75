"""Charts of the HTML report as inline SVG: they open in any browser, offline, with no script.

(Plotly's own HTML would inline 4.6 MB of JavaScript per report; the page itself draws with plotly.)
"""

from __future__ import annotations

import html

import numpy as np

from core.evaluate.calibration import Calibration

WIDTH, HEIGHT, PAD = 420, 320, 44


def reliability_svg(cal: Calibration) -> str:
    """Bars: share right per confidence bin; dashed diagonal: perfect calibration; grey: images per bin."""
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def x(v: float) -> float:
        return PAD + v * inner_w

    def y(v: float) -> float:
        return HEIGHT - PAD - v * inner_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="Reliability diagram" font-family="sans-serif" font-size="11">',
             f'<rect x="{PAD}" y="{PAD}" width="{inner_w}" height="{inner_h}" fill="#fafafa" stroke="#ccc"/>']  # fmt: skip
    most = max(int(cal.count.max()), 1) if len(cal.count) else 1
    for i in range(len(cal.count)):
        low, high = float(cal.edges[i]), float(cal.edges[i + 1])
        n = int(cal.count[i])
        if not n:
            continue
        share = n / most * 0.25  # images per bin, as a thin grey band along the bottom
        parts.append(_rect(x(low) + 1, y(share), x(high) - x(low) - 2, y(0) - y(share), "#d0d0d0",
                           f"{n} images with confidence {low:.0%}-{high:.0%}"))  # fmt: skip
        acc = float(cal.accuracy[i])
        parts.append(_rect(x(low) + 3, y(acc), x(high) - x(low) - 6, y(0) - y(acc), "#4C78A8",
                           f"confidence {low:.0%}-{high:.0%}: {acc:.0%} right of {n}"))  # fmt: skip
    parts.append(f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#E45756" stroke-dasharray="5,4"/>')
    for tick in np.linspace(0, 1, 6):
        parts.append(f'<text x="{x(tick):.1f}" y="{HEIGHT - PAD + 16}" text-anchor="middle">{tick:.0%}</text>')
        parts.append(f'<text x="{PAD - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.0%}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">how sure the model was</text>')
    parts.append(f'<text x="14" y="{HEIGHT / 2}" text-anchor="middle" transform="rotate(-90 14 {HEIGHT / 2})">'
                 "share of right answers</text>")  # fmt: skip
    parts.append(f'<text x="{PAD}" y="{PAD - 10}">calibration error {cal.ece:.1%}; dashed: perfectly calibrated</text>')
    parts.append("</svg>")
    return "".join(parts)


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str) -> str:
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{fill}">'
            f"<title>{html.escape(title)}</title></rect>")  # fmt: skip
