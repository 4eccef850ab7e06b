"""Write a report: ``index.html`` (tables and inline SVG charts), ``figures.json``, CSVs.

Self-contained for a closed network: no JavaScript, no external fonts, styles or URLs.
Every published cell in the HTML carries machine-readable attributes so a test (or a
screen reader tool) can read the figures back::

    <td data-figure="received_daily.committed" data-municipality="0301"
        data-day="2026-11-20" data-value="123">123</td>

``data-kind`` is the column's kind (dimension, count, share, statistic, text).
``data-value`` is absent on a suppressed cell, which carries ``data-suppressed="true"``
instead. Dimension attributes are the row's dimension columns (underscores as dashes).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kpr.reports.tables import ColumnKind, PublishedTable

__all__ = [
    "ChartSpec",
    "LineChartSpec",
    "Section",
    "bar_chart",
    "line_chart",
    "render_html",
    "write_report_files",
]


@dataclass(frozen=True)
class ChartSpec:
    """A bar chart of one value column of a table, one bar per row, rows in a filter."""

    title: str
    value: str
    label_columns: tuple[str, ...]
    where: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class LineChartSpec:
    """A line chart of one value column over ``x`` (a period column): one line per
    series, each a label and the filter that picks its rows."""

    title: str
    value: str
    x: str
    series: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]


@dataclass(frozen=True)
class Section:
    title: str
    tables: tuple[PublishedTable, ...]
    charts: tuple[tuple[str, ChartSpec | LineChartSpec], ...] = ()  # (table key, chart)
    notes: str = ""


def _attr_name(column: str) -> str:
    return "data-" + column.replace("_", "-")


def _raw_value(value: Any) -> str:
    return str(value)


def _cell_attributes(table: PublishedTable, index: int, column: str) -> str:
    row = table.rows[index]
    parts = [
        f'data-figure="{html.escape(table.key)}.{html.escape(column)}"',
        f'data-kind="{table.table.column(column).kind.value}"',
    ]
    for dimension in table.table.dimensions:
        parts.append(f'{_attr_name(dimension)}="{html.escape(str(row.get(dimension, "")))}"')
    value = row.get(column)
    if table.is_suppressed(index, column):
        parts.append('data-suppressed="true"')
    elif value is not None:
        parts.append(f'data-value="{html.escape(_raw_value(value))}"')
    return " ".join(parts)


def _table_html(table: PublishedTable, max_rows: int) -> str:
    spec = table.table
    out = [f'<section class="table" id="{spec.key}"><h3>{html.escape(spec.title)}</h3>']
    if spec.description:
        out.append(f"<p class=note>{html.escape(spec.description)}</p>")
    if not table.rows:
        out.append("<p class=empty>Ingen rader / No rows</p></section>")
        return "".join(out)
    rows = range(len(table.rows))
    shown = rows if len(table.rows) <= max_rows else rows[-max_rows:]
    if len(shown) < len(table.rows):
        out.append(
            f"<p class=note>Viser de siste {max_rows} av {len(table.rows)} radene; alle i "
            f"{spec.key}.csv / Showing the last {max_rows} of {len(table.rows)} rows.</p>"
        )
    out.append(f'<table data-table="{spec.key}"><thead><tr>')
    for column in spec.columns:
        out.append(f"<th>{html.escape(column.label)}</th>")
    out.append("</tr></thead><tbody>")
    for index in shown:
        out.append("<tr>")
        for column in spec.columns:
            text = html.escape(table.cell_text(index, column.key))
            if column.kind is ColumnKind.DIMENSION:
                out.append(f"<th scope=row>{text}</th>")
            else:
                attributes = _cell_attributes(table, index, column.key)
                out.append(f"<td {attributes}>{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table></section>")
    return "".join(out)


def bar_chart(
    title: str, bars: Sequence[tuple[str, float | None, str]], *, share: bool = False
) -> str:
    """A horizontal bar chart as inline SVG. Each bar is (label, value or None, attributes);
    a None value (suppressed) is drawn as an empty bar labelled "skjult / hidden"."""
    width, label_width, bar_height, gap = 760, 260, 18, 6
    height = 30 + len(bars) * (bar_height + gap)
    top = max([value for _, value, _ in bars if value is not None] or [1.0]) or 1.0
    if share:
        top = 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" aria-label="{html.escape(title)}">',
        f'<text x="0" y="16" class="chart-title">{html.escape(title)}</text>',
    ]
    for position, (label, value, attributes) in enumerate(bars):
        y = 28 + position * (bar_height + gap)
        out.append(
            f'<text x="{label_width - 6}" y="{y + 13}" text-anchor="end">'
            f"{html.escape(label)}</text>"
        )
        if value is None:
            out.append(
                f'<text x="{label_width + 4}" y="{y + 13}" class="hidden" {attributes}'
                ' data-suppressed="true">skjult / hidden</text>'
            )
            continue
        length = (width - label_width - 90) * (value / top)
        text = f"{value * 100:.1f} %" if share else f"{value:g}"
        out.append(
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}"'
            f' {attributes} data-value="{value:g}"/>'
        )
        out.append(f'<text x="{label_width + length + 4:.1f}" y="{y + 13}">{text}</text>')
    out.append("</svg>")
    return "".join(out)


_LINE_COLOURS = ("#2a5d84", "#c0392b", "#27863c", "#7d3c98", "#b9770e")


def line_chart(
    title: str,
    xs: Sequence[str],
    lines: Sequence[tuple[str, Sequence[tuple[float | None, str]]]],
    *,
    share: bool = False,
) -> str:
    """Lines over ``xs`` as inline SVG. Each line is (label, one (value or None, point
    attributes) per x); a None (suppressed) point breaks the line and is marked with a
    hollow circle carrying ``data-suppressed``, so a gap is never drawn as a zero."""
    width, height, left, right, top_margin, bottom = 760, 260, 60, 150, 28, 40
    plot_w, plot_h = width - left - right, height - top_margin - bottom
    values = [v for _, points in lines for v, _ in points if v is not None]
    top = 1.0 if share else (max(values, default=1.0) or 1.0)
    step = plot_w / max(len(xs) - 1, 1)

    def at(position: int, value: float) -> tuple[float, float]:
        return left + position * step, top_margin + plot_h * (1 - value / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" aria-label="{html.escape(title)}">',
        f'<text x="0" y="16" class="chart-title">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{top_margin + plot_h}" x2="{left + plot_w}"'
        f' y2="{top_margin + plot_h}" class="axis"/>',
        f'<text x="{left - 6}" y="{top_margin + 4}" text-anchor="end">'
        f"{'100 %' if share else f'{top:g}'}</text>",
        f'<text x="{left - 6}" y="{top_margin + plot_h}" text-anchor="end">0</text>',
    ]
    label_every = max(1, len(xs) // 8)
    for position, period in enumerate(xs):
        if position % label_every == 0 or position == len(xs) - 1:
            out.append(
                f'<text x="{left + position * step:.1f}" y="{height - 14}"'
                f' text-anchor="middle">{html.escape(period)}</text>'
            )
    # Drawn last to first, so the first series (the municipality) lies on top where
    # the lines coincide (a county of one municipality).
    for number, (label, points) in reversed(list(enumerate(lines))):
        colour = _LINE_COLOURS[number % len(_LINE_COLOURS)]
        segment: list[str] = []
        segments: list[list[str]] = []
        for position, (value, _attributes) in enumerate(points):
            if value is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            x, y = at(position, value)
            segment.append(f"{x:.1f},{y:.1f}")
        if segment:
            segments.append(segment)
        for part in segments:
            out.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2"'
                f' points="{" ".join(part)}"/>'
            )
        for position, (value, attributes) in enumerate(points):
            if value is None and not attributes:
                continue  # no row for this period: nothing to mark
            if value is None:
                x, _ = at(position, 0.0)
                out.append(
                    f'<circle cx="{x:.1f}" cy="{top_margin + plot_h - 6}" r="3" fill="none"'
                    f' stroke="{colour}" {attributes} data-suppressed="true"/>'
                )
                continue
            x, y = at(position, value)
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}" {attributes}'
                f' data-value="{value:g}"><title>{html.escape(label)} '
                f"{html.escape(xs[position])}: {value:g}</title></circle>"
            )
        legend_y = top_margin + 14 + number * 16
        out.append(
            f'<rect x="{width - right + 12}" y="{legend_y - 9}" width="10" height="10"'
            f' style="fill:{colour}"/><text x="{width - right + 26}" y="{legend_y}">'
            f"{html.escape(label)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _chart_attributes(table: PublishedTable, index: int, column: str) -> str:
    attributes = _cell_attributes(table, index, column).replace('data-figure="', 'data-chart="')
    return " ".join(
        part
        for part in attributes.split(" ")
        if not part.startswith(("data-value=", "data-suppressed=", "data-kind="))
    )


def _line_chart(table: PublishedTable, spec: LineChartSpec) -> str:
    share = table.table.column(spec.value).kind is ColumnKind.SHARE
    xs = sorted({str(row.get(spec.x)) for row in table.rows})
    lines = []
    for label, where in spec.series:
        by_x: dict[str, tuple[float | None, str]] = {}
        for index, row in enumerate(table.rows):
            if any(row.get(key) != value for key, value in where):
                continue
            value = row.get(spec.value)
            shown = None if table.is_suppressed(index, spec.value) or value is None else value
            by_x[str(row.get(spec.x))] = (
                None if shown is None else float(shown),
                _chart_attributes(table, index, spec.value),
            )
        if by_x:
            lines.append((label, [by_x.get(x, (None, "")) for x in xs]))
    return f'<figure class="chart">{line_chart(spec.title, xs, lines, share=share)}</figure>'


def _chart(table: PublishedTable, spec: ChartSpec | LineChartSpec) -> str:
    if isinstance(spec, LineChartSpec):
        return _line_chart(table, spec)
    bars = []
    share = table.table.column(spec.value).kind is ColumnKind.SHARE
    for index, row in enumerate(table.rows):
        if any(row.get(key) != value for key, value in spec.where):
            continue
        label = " ".join(str(row.get(column, "")) for column in spec.label_columns)
        value = None if table.is_suppressed(index, spec.value) else row.get(spec.value)
        if value is None and not table.is_suppressed(index, spec.value):
            continue
        attributes = _chart_attributes(table, index, spec.value)
        bars.append((label, None if value is None else float(value), attributes))
    return f'<figure class="chart">{bar_chart(spec.title, bars, share=share)}</figure>'


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#1b1b1b;max-width:1200px}
h1{font-size:1.6em}h2{border-bottom:2px solid #2a5d84;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;font-size:.85em;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
thead th{background:#e8eef3;text-align:center}th[scope=row]{text-align:left;font-weight:normal}
td[data-suppressed]{color:#888;font-style:italic}
.note{color:#555;font-size:.85em;max-width:60em}
svg rect{fill:#2a5d84}svg text{font-size:12px;fill:#1b1b1b}svg .chart-title{font-weight:bold}
svg .hidden{fill:#888;font-style:italic}svg .axis{stroke:#888}
dl.meta dt{font-weight:bold;float:left;width:16em}dl.meta dd{margin-left:16em}
"""


def render_html(
    title: str, meta: Mapping[str, Any], sections: Sequence[Section], *, max_rows: int = 3000
) -> str:
    tables = {table.key: table for section in sections for table in section.tables}
    out = [
        "<!DOCTYPE html><html lang=nb><head><meta charset=utf-8>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><dl class=meta>",
    ]
    for key, value in meta.items():
        out.append(
            f'<dt>{html.escape(str(key))}</dt><dd data-meta="{html.escape(str(key))}">'
            f"{html.escape(str(value))}</dd>"
        )
    out.append(
        "</dl><p class=note>«&lt;n»: færre enn n, skjult / fewer than n, hidden. «x»: skjult "
        "for å beskytte en liten celle / hidden to protect a small cell. «–»: ikke aktuelt / "
        "not applicable.</p><nav><ul>"
    )
    for section in sections:
        for table in section.tables:
            out.append(f'<li><a href="#{table.key}">{html.escape(table.table.title)}</a></li>')
    out.append("</ul></nav>")
    for section in sections:
        out.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.notes:
            out.append(f"<p class=note>{html.escape(section.notes)}</p>")
        for table_key, chart in section.charts:
            out.append(_chart(tables[table_key], chart))
        for table in section.tables:
            out.append(_table_html(table, max_rows))
    out.append("</body></html>")
    return "".join(out)


def _json_table(table: PublishedTable) -> dict[str, Any]:
    spec = table.table
    return {
        "title": spec.title,
        "description": spec.description,
        "columns": [{"key": c.key, "label": c.label, "kind": c.kind.value} for c in spec.columns],
        "rows": [dict(row) for row in table.rows],
        "suppressed": sorted([index, column] for index, column in table.suppressed),
    }


def _csv(table: PublishedTable) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = table.column_keys()
    writer.writerow(keys)
    for index, row in enumerate(table.rows):
        writer.writerow(
            [
                table.cell_text(index, key)
                if table.is_suppressed(index, key)
                else ("" if row.get(key) is None else row.get(key))
                for key in keys
            ]
        )
    return buffer.getvalue()


def write_report_files(
    out_dir: Path, title: str, meta: Mapping[str, Any], sections: Sequence[Section]
) -> list[Path]:
    """Write ``index.html``, ``figures.json`` and one ``<table>.csv`` per table; returns
    the paths written. Raises ``OSError`` if the directory cannot be written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    index = out_dir / "index.html"
    index.write_text(render_html(title, meta, sections), encoding="utf-8")
    written.append(index)
    tables = [table for section in sections for table in section.tables]
    figures = {"meta": dict(meta), "tables": {t.key: _json_table(t) for t in tables}}
    path = out_dir / "figures.json"
    path.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    written.append(path)
    for table in tables:
        path = out_dir / f"{table.key}.csv"
        path.write_text(_csv(table), encoding="utf-8")
        written.append(path)
    return written
