"""A forest plot per gate: each thresholded gap with its interval against the threshold, as a small
self-contained SVG (a ``data:`` URI the report's page shows as an image: no script, nothing fetched).

Pure: `forest_svg(uncertainty)` takes a gate's `uncertainty` object (replay-gate --json) and returns
the SVG text, or None when the gate has no thresholded check with a value."""

from __future__ import annotations

import base64
import math
from xml.sax.saxutils import escape

ROW = 26
LEFT = 250
WIDTH = 800
PLOT = WIDTH - LEFT - 175
COLOURS = {"pass": "#1a7f37", "fail": "#b42318", "undetermined": "#9a6700"}


def _rows(u: dict) -> list[dict]:
    return [c for c in u.get("checks", []) if c["kind"] in ("near_equivalence", "mean_gap")
            and c.get("estimate") is not None]


def forest_svg(u: dict) -> str | None:
    rows = _rows(u)
    if not rows:
        return None
    xs = [0.0]
    for c in rows:
        t = float(c["threshold"])
        xs += [c["estimate"], t] + ([-t] if c["kind"] == "near_equivalence" else [])
        xs += [v for v in (c.get("low"), c.get("high")) if v is not None and math.isfinite(v)]
    lo, hi = min(xs), max(xs)
    pad = (hi - lo) * 0.08 or 0.01
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return LEFT + (min(max(v, lo), hi) - lo) / (hi - lo) * PLOT

    height = ROW * len(rows) + 46
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, sans-serif" font-size="11">',
           f'<line x1="{x(0.0):.1f}" y1="8" x2="{x(0.0):.1f}" y2="{height - 30}" stroke="#8c959f" stroke-width="1"/>']
    for i, c in enumerate(rows):
        y = 20 + ROW * i
        t = float(c["threshold"])
        for b in ([t, -t] if c["kind"] == "near_equivalence" else [t]):
            out.append(f'<line x1="{x(b):.1f}" y1="{y - 9}" x2="{x(b):.1f}" y2="{y + 9}" stroke="#57606a" '
                       f'stroke-dasharray="3,2"/>')
        colour = COLOURS.get(c["call"], "#57606a")
        if c.get("low") is not None and c.get("high") is not None:
            out.append(f'<line x1="{x(c["low"]):.1f}" y1="{y}" x2="{x(c["high"]):.1f}" y2="{y}" stroke="{colour}" '
                       f'stroke-width="2"/>')
            for v in (c["low"], c["high"]):
                if lo < v < hi:
                    out.append(f'<line x1="{x(v):.1f}" y1="{y - 4}" x2="{x(v):.1f}" y2="{y + 4}" stroke="{colour}"/>')
        out.append(f'<circle cx="{x(c["estimate"]):.1f}" cy="{y}" r="3.5" fill="{colour}"/>')
        ref = f" vs {c['reference']}" if c.get("reference") else ""
        label = escape(f"{c['kind'].replace('_', ' ')}: {c['candidate']}{ref}")
        out.append(f'<text x="6" y="{y + 4}">{label}</text>')
        rule = "rule pass" if c["passed"] else "rule FAIL"
        out.append(f'<text x="{LEFT + PLOT + 8}" y="{y + 4}" fill="{colour}">{escape(c["call"])} ({rule})</text>')
    axis_y = height - 22
    out.append(f'<line x1="{LEFT}" y1="{axis_y}" x2="{LEFT + PLOT}" y2="{axis_y}" stroke="#57606a"/>')
    for v in (lo + pad, 0.0, hi - pad):
        out.append(f'<text x="{x(v):.1f}" y="{axis_y + 14}" text-anchor="middle">{v:+.4f}</text>')
    level = u.get("level", 0.95)
    out.append(f'<text x="6" y="{axis_y + 14}" fill="#57606a">gap, {level:g} interval; dashed: threshold</text>')
    out.append("</svg>")
    return "\n".join(out)


def forest_data_uri(u: dict) -> str | None:
    svg = forest_svg(u)
    return None if svg is None else "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
