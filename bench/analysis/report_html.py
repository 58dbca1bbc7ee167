"""``report.html``: the report as one self-contained page, from the same computed points as ``report.md``.

The page is the Markdown report rendered block by block (headings, paragraphs,
lists, notes, tables), so every sentence ``report.md`` says (findings with
their tests, the noisy and CHANCE marks, the environment, the failed cells)
is said here too, from the same text. What the page adds:

* each Pareto figure is an inline SVG scatter drawn from the section's
  :class:`~bench.analysis.report_points.Frontier` (log axes where the PNG has
  them, :func:`bench.analysis.plots.wants_log`); hovering a point shows its
  variant and values (an SVG ``<title>``), clicking it jumps to its row of the
  section's point table (anchor ids);
* every table sorts by any column (a few lines of inline JS);
* other figures (batch-size curves, profiles, design spaces) are inlined from
  the SVG files written beside it, or as PNG data URIs.

Nothing is fetched: no CDN, no server, no script beyond the page's own.
``#selftest`` appended to the page's URL makes the page check itself in a
browser and write the result into ``<pre id="selftest">`` (see
``tests/test_report_html.py``, which runs it in headless Chromium).
"""
from __future__ import annotations

import base64
import math
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pandas as pd
from markupsafe import Markup, escape

from bench.analysis.report_points import METRICS, MINIMIZE, Frontier

TEMPLATE = os.path.join(os.path.dirname(__file__), "templates", "report.html.j2")
_FAMILY_COLOURS = {"resnet": "#1f77b4", "resnext": "#d62728"}  # as in bench/analysis/plots.py
_OTHER_COLOUR = "#7f7f7f"
_W, _H = 640, 400
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 34, 50

Block = Dict[str, Any]


# --------------------------------------------------------------------------- page


def render(markdown: str, facts: Dict[str, Any], out_dir: str, title: str) -> str:
    """The page for a report whose Markdown is ``markdown`` and whose points and frontiers are ``facts``.

    ``facts`` is what :func:`bench.analysis.reports.build_report` returns beside the text: per section
    (``facts["groups"][slug]``) its ``points`` table and ``frontiers`` by pair name."""
    import jinja2

    sections = {slug: _Section(slug, g) for slug, g in facts.get("groups", {}).items()}
    blocks = list(_blocks(markdown.splitlines(), sections, out_dir))
    with open(TEMPLATE, encoding="utf-8") as f:
        template = jinja2.Environment(autoescape=True, keep_trailing_newline=True).from_string(f.read())
    return template.render(title=title, blocks=blocks,
                           expected={"plots": sum(s.plots for s in sections.values()),
                                     "rows": sum(len(s.ids) for s in sections.values())})


class _Section:
    """One device/precision section: its points (with row anchors) and its frontiers."""

    def __init__(self, slug: str, group: Dict[str, Any]) -> None:
        self.slug = slug
        self.title = str(group.get("title", ""))  # the heading of its section in report.md
        self.points: pd.DataFrame = group["points"]
        self.frontiers: Dict[str, Frontier] = group.get("frontiers", {})
        self.ids = {i: f"{slug}-p{n}" for n, i in enumerate(self.points.index)}
        self.plots = 0
        self.table_done = False

    def figure(self, name: str) -> Optional[Markup]:
        for pair_name, fr in self.frontiers.items():
            if name == f"{self.slug}-{pair_name}" and not fr.points.empty:
                self.plots += 1
                return scatter_svg(fr, self.ids)
        return None


# --------------------------------------------------------------------------- Markdown blocks


def _blocks(lines: Sequence[str], sections: Dict[str, _Section], out_dir: str) -> Iterator[Block]:
    """The Markdown report as typed blocks; each section's point table follows its first paragraph."""
    section: Optional[_Section] = None
    used: set = set()  # heading anchors, unique although sections repeat their headings
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 4)
            text = line.lstrip("#").strip()
            if level == 2:
                if section is not None and not section.table_done:  # a section without a paragraph
                    yield _point_table(section)
                section = next((s for s in sections.values() if s.title == text), None)
            anchor = base = _slug(text)
            while anchor in used:
                anchor = f"{base}-{len(used)}"
            used.add(anchor)
            yield {"kind": "heading", "level": level, "html": inline(text), "id": anchor}
            i += 1
            continue
        block_lines, i = _take(lines, i)
        yield _block(block_lines, out_dir, section)
        if section is not None and not section.table_done and not line.startswith("!"):
            yield _point_table(section)
    if section is not None and not section.table_done:
        yield _point_table(section)


def _take(lines: Sequence[str], i: int) -> Tuple[List[str], int]:
    """The lines of one block starting at ``i``: a table, list, quote or paragraph ends at a blank line."""
    out = []
    first = lines[i][:1]
    while i < len(lines) and lines[i].strip() and not lines[i].startswith("#"):
        if out and first not in "|>-" and lines[i][:1] in "|!":  # a table or image after a paragraph line
            break
        out.append(lines[i])
        i += 1
    return out, i


_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")


def _block(lines: List[str], out_dir: str, section: Optional[_Section]) -> Block:
    first = lines[0]
    image = _IMAGE.match(first.strip())
    if image and len(lines) == 1:
        alt, src = image.groups()
        name = os.path.splitext(os.path.basename(src))[0]
        svg = section.figure(name) if section is not None else None
        return {"kind": "figure", "svg": svg if svg is not None else _embedded(out_dir, src, alt),
                "caption": alt, "interactive": svg is not None, "id": "fig-" + _slug(name)}
    if first.startswith("|"):
        header, rows = _table_cells(lines)
        return {"kind": "table", "header": [inline(h) for h in header],
                "rows": [{"id": "", "cells": [inline(c) for c in r]} for r in rows]}
    if first.startswith(">"):
        return {"kind": "note", "html": inline(" ".join(line.lstrip("> ").strip() for line in lines))}
    if first.startswith("- "):
        items, current = [], []
        for line in lines:
            if line.startswith("- ") and current:
                items.append(" ".join(current))
                current = []
            current.append(line[2:] if line.startswith("- ") else line.strip())
        items.append(" ".join(current))
        return {"kind": "list", "entries": [inline(t) for t in items]}
    return {"kind": "para", "html": inline(" ".join(line.strip() for line in lines))}


def _table_cells(lines: List[str]) -> Tuple[List[str], List[List[str]]]:
    def cells(line: str) -> List[str]:
        parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        return [p.strip().replace("\\|", "|") for p in parts]

    rows = [cells(line) for line in lines if not re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", line.strip())]
    return rows[0], rows[1:]


_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")


def inline(text: str) -> Markup:
    """Markdown's inline code, bold and links as HTML; everything else escaped."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(escape(text[pos:m.start()]))
        code, bold, label, href = m.groups()
        if code is not None:
            out.append(Markup("<code>{}</code>").format(code))
        elif bold is not None:
            out.append(Markup("<strong>{}</strong>").format(inline(bold)))
        else:
            out.append(Markup('<a href="{}">{}</a>').format(href, inline(label)))
        pos = m.end()
    out.append(escape(text[pos:]))
    return Markup("").join(out)


def _slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower())) or "section"


def _embedded(out_dir: str, src: str, alt: str) -> Markup:
    """A figure written beside the report: its SVG inlined, else its PNG as a data URI, else a note."""
    base = os.path.join(out_dir, os.path.splitext(src)[0])
    if os.path.isfile(base + ".svg") and not os.path.islink(base + ".svg"):
        with open(base + ".svg", encoding="utf-8") as f:
            svg = f.read()
        start = svg.find("<svg")
        if start >= 0:
            return Markup(svg[start:])
    if os.path.isfile(base + ".png") and not os.path.islink(base + ".png"):
        with open(base + ".png", "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        return Markup('<img alt="{}" src="data:image/png;base64,{}">').format(alt, data)
    return Markup("<p>(figure {} not found)</p>").format(src)


# --------------------------------------------------------------------------- the point table

_POINT_COLUMNS = (("variant", "label", None), ("cell", "cell_id", None), ("family", "family", None),
                  ("cardinality", "cardinality", ".0f"), ("params (M)", "params", "params"),
                  ("GMACs", "macs", "macs"), ("latency bs1 (ms)", "latency_bs1_ms", "latency"),
                  ("throughput (img/s)", "throughput_img_s", "throughput"),
                  ("peak memory (MiB)", "peak_mem_mb", "memory"), ("train step (ms)", "train_step_ms", ".4g"),
                  ("top-1 (%)", "top1_acc", "top1"), ("marks", None, None), ("file", "source", None))


def _point_table(section: _Section) -> Block:
    """Every point of the section, one row each, with the anchor its plot markers link to."""
    section.table_done = True
    rows = []
    for i, p in section.points.iterrows():
        cells = []
        for _, column, fmt in _POINT_COLUMNS:
            if column is None:
                cells.append(escape(", ".join(marks(p)) or "–"))
            elif fmt in METRICS:
                cells.append(escape(value(p, fmt)))
            elif fmt:
                cells.append(escape(_num(p.get(column), fmt)))
            else:
                cells.append(Markup("<code>{}</code>").format(p.get(column)) if column == "cell_id"
                             else escape(_text(p.get(column))))
        rows.append({"id": section.ids[i], "cells": cells})
    return {"kind": "table", "points": True, "caption": f"All {len(rows)} point(s) of this section",
            "header": [escape(name) for name, _, _ in _POINT_COLUMNS], "rows": rows}


def marks(p: pd.Series) -> List[str]:
    """The flags a point carries: noisy timings, chance-level or synthetic accuracy, tied with the frontier."""
    out = []
    if _flag(p.get("latency_bs1_noisy")) or _flag(p.get("throughput_noisy")):
        out.append("noisy")
    if _flag(p.get("train_step_noisy")):
        out.append("noisy train step")
    if _flag(p.get("near_chance")):
        out.append("CHANCE")
    if _flag(p.get("synthetic")) and not pd.isna(p.get("top1_acc")):
        out.append("SYNTHETIC")
    return out


def _flag(v: Any) -> bool:
    return v is True or (not isinstance(v, str) and v is not None and not pd.isna(v) and bool(v))


def _text(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _num(v: Any, fmt: str, scale: float = 1.0) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(x) else format(x * scale, fmt)


def value(p: pd.Series, key: str) -> str:
    """A metric of a point as displayed (scaled), with its seed spread for accuracy."""
    m = METRICS[key]
    text = _num(p.get(m.column), m.fmt, m.scale)
    if key == "top1" and text != "–" and not pd.isna(p.get("top1_acc_std")):
        text += " ± " + _num(p.get("top1_acc_std"), ".2f", 100)
    return text


# --------------------------------------------------------------------------- the scatter plot


def _ticks(lo: float, hi: float, log: bool) -> List[float]:
    if log:
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in (1, 2, 5)]
        return [t for t in ticks if lo <= t <= hi] or [lo, hi]
    step = 10 ** math.floor(math.log10((hi - lo) / 4)) if hi > lo else 1.0
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= 6:
            step *= m
            break
    return [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


class _Axis:
    def __init__(self, values: Sequence[float], start: float, end: float) -> None:
        from bench.analysis.plots import wants_log  # the PNG's rule, so both figures use the same axes

        self.log = wants_log(values)
        lo, hi = min(values), max(values)
        if self.log:
            lo, hi = lo / 1.15, hi * 1.15
        else:
            pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.start, self.end = lo, hi, start, end

    def __call__(self, v: float) -> float:
        f = math.log if self.log else float
        return self.start + (f(v) - f(self.lo)) / (f(self.hi) - f(self.lo)) * (self.end - self.start)


def _legend() -> Markup:
    items = [(_FAMILY_COLOURS["resnet"], "#fff", "ResNet"), (_FAMILY_COLOURS["resnext"], "#fff", "ResNeXt"),
             ("#fff", "#000", "on the frontier")]
    out = [Markup('<g class="legend" transform="translate({} 6)">').format(_LEFT)]
    for k, (fill, stroke, text) in enumerate(items):
        out.append(Markup('<circle cx="{0}" cy="6" r="5" fill="{1}" stroke="{2}" stroke-width="2"/>'
                          '<text x="{3}" y="10" class="tick">{4}</text>').format(k * 110 + 5, fill, stroke,
                                                                               k * 110 + 14, text))
    return Markup("").join(out + [Markup("</g>")])


def scatter_svg(fr: Frontier, row_ids: Dict[Any, str]) -> Markup:
    """One Pareto plot: every point (colour = family, black edge = on the frontier), the frontier's staircase,
    a hover title with the variant and values, and a link to the point's row."""
    x, y = METRICS[fr.pair.x], METRICS[fr.pair.y]
    pts = fr.points
    xs = [float(v) * x.scale for v in pts[x.column]]
    ys = [float(v) * y.scale for v in pts[y.column]]
    ax, ay = _Axis(xs, _LEFT, _W - _RIGHT), _Axis(ys, _H - _BOTTOM, _TOP)
    out = [Markup('<svg class="pareto" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="{}" '
                  'height="{}" role="img" data-pair="{}">').format(_W, _H, _W, _H, fr.pair.name)]
    out.append(Markup('<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>').format(
        _LEFT, _TOP, _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM))
    for t in _ticks(ax.lo, ax.hi, ax.log):
        px = ax(t)
        out.append(Markup('<line x1="{0:.1f}" x2="{0:.1f}" y1="{1}" y2="{2}" stroke="#eee"/>'
                          '<text x="{0:.1f}" y="{3}" text-anchor="middle" class="tick">{4}</text>').format(
            px, _TOP, _H - _BOTTOM, _H - _BOTTOM + 16, format(t, "g")))
    for t in _ticks(ay.lo, ay.hi, ay.log):
        py = ay(t)
        out.append(Markup('<line x1="{1}" x2="{2}" y1="{0:.1f}" y2="{0:.1f}" stroke="#eee"/>'
                          '<text x="{3}" y="{4:.1f}" text-anchor="end" class="tick">{5}</text>').format(
            py, _LEFT, _W - _RIGHT, _LEFT - 6, py + 4, format(t, "g")))
    out.append(Markup('<text x="{}" y="{}" text-anchor="middle" class="axis">{}{}</text>').format(
        (_LEFT + _W - _RIGHT) / 2, _H - 12, x.label, " (log scale)" if ax.log else ""))
    out.append(Markup('<text transform="translate(16 {}) rotate(-90)" text-anchor="middle" class="axis">{}{}'
                      '</text>').format((_TOP + _H - _BOTTOM) / 2, y.label, " (log scale)" if ay.log else ""))
    front = sorted((xv, yv) for xv, yv, f in zip(xs, ys, pts["front"]) if f)
    if len(front) > 1:  # the staircase: from each frontier point across, then to the next
        steps = [front[0]] + [q for a, b in zip(front, front[1:]) for q in ((b[0], a[1]), b)]
        out.append(Markup('<polyline class="front" fill="none" stroke="#000" stroke-dasharray="4 3" '
                          'points="{}"/>').format(" ".join(f"{ax(a):.1f},{ay(b):.1f}" for a, b in steps)))
    for (i, p), xv, yv in zip(pts.iterrows(), xs, ys):
        on = bool(p["front"])
        hover = "\n".join([str(p.get("label", p.get("variant"))), f"{x.short}: {value(p, fr.pair.x)}",
                           f"{y.short}: {value(p, fr.pair.y)}", f"family: {_text(p.get('family'))}, cardinality: "
                           f"{_num(p.get('cardinality'), '.0f')}", f"cell: {p.get('cell_id')}"]
                          + (["on the frontier"] if on else ["tied with the frontier"] if _flag(p.get("tied"))
                             else []) + marks(p))
        out.append(Markup('<a href="#{}"><circle class="point{}" cx="{:.1f}" cy="{:.1f}" r="{}" fill="{}" '
                          'stroke="{}" stroke-width="{}"><title>{}</title></circle></a>').format(
            row_ids.get(i, ""), " front" if on else "", ax(xv), ay(yv), 7 if on else 5,
            _FAMILY_COLOURS.get(str(p.get("family")), _OTHER_COLOUR), "#000" if on else "#fff",
            2 if on else 1, hover))
        if on:  # labelled, on the side of the point that has room
            left = ax(xv) > _W - _RIGHT - 160
            out.append(Markup('<text x="{:.1f}" y="{:.1f}" text-anchor="{}" class="label">{}</text>').format(
                ax(xv) + (-9 if left else 9), ay(yv) - 6, "end" if left else "start", p.get("label", p.get("variant"))))
    out.append(_legend())
    better = f"{'lower' if x.sense == MINIMIZE else 'higher'} {x.short}, " \
             f"{'lower' if y.sense == MINIMIZE else 'higher'} {y.short} are better"
    out.append(Markup('<desc>{}</desc></svg>').format(better))
    return Markup("").join(out)
