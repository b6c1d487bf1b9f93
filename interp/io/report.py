"""One self-contained `report.html` per run: manifest header, summary, then figures and tables.

plotly.js is inlined once in the page head (about 4.5 MB), every figure after that is a `<div>`
plus a small script, and every table is escaped HTML, so the file opens offline and can be
mailed or archived on its own. No computation happens here.

Example (not a doctest: it writes files):

    write_report(run, title="IOI on smollm2-135m",
                 summary_lines=["accuracy 0.95", "top head L12H3"],
                 sections=[ReportSection("Head patching", text="...", figure=fig, table=df)])
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from plotly.offline import get_plotlyjs

from interp.io.runstore import Run, RunStoreError

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["ReportSection", "write_report", "render_report"]

REPORT_FILE = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.3rem; }
table.meta td { padding: 0.1rem 1rem 0.1rem 0; }
table.meta td:first-child { color: #666; }
table.dataframe { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
table.dataframe th, table.dataframe td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; }
table.dataframe th { background: #f4f4f4; }
section { margin-top: 2rem; border-top: 1px solid #eee; }
.note { color: #666; font-size: 0.8rem; }
.status-failed { color: #b00; font-weight: bold; }
"""


@dataclass
class ReportSection:
    """One titled block of the report; any of text, figure and table may be left out."""

    title: str
    text: str = ""
    figure: go.Figure | None = None
    table: pd.DataFrame | None = None
    table_max_rows: int = 30


def write_report(
    run: Run, *, title: str, summary_lines: list[str], sections: list[ReportSection]
) -> Path:
    """Render the report and write it to `<run>/report.html`; returns the path."""
    page = render_report(run, title=title, summary_lines=summary_lines, sections=sections)
    return run.write_text(REPORT_FILE, page)


def render_report(
    run: Run, *, title: str, summary_lines: list[str], sections: list[ReportSection]
) -> str:
    """The report as one HTML string (what `write_report` writes)."""
    body = [f"<h1>{_esc(title)}</h1>", _header(run)]
    if summary_lines:
        items = "".join(f"<li>{_esc(line)}</li>" for line in summary_lines)
        body.append(f"<h2>Summary</h2><ul>{items}</ul>")
    body.extend(_section(s) for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_STYLE}</style>"
        # plotly.js once, inline, so the file needs no network (a CDN link would not load).
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        "</head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _header(run: Run) -> str:
    try:
        manifest = run.read_manifest()
    except RunStoreError as exc:
        return f"<p class='note'>No manifest: {_esc(str(exc))}</p>"
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    sha = manifest.get("weights_sha256")
    commit = manifest.get("git_commit")
    if commit and manifest.get("git_dirty"):
        commit = f"{commit[:12]} (uncommitted changes)"
    elif commit:
        commit = commit[:12]
    status = manifest.get("status", "-")
    rows = {
        "run": run.run_id,
        "experiment": manifest.get("experiment") or config.get("name"),
        "model": manifest.get("model_id") or (config.get("model") or {}).get("name"),
        "weights sha256": f"{sha[:16]}..." if isinstance(sha, str) else sha,
        "seed": manifest.get("seed"),
        "git commit": commit,
        "created": manifest.get("created_at"),
        "status": status,
    }
    cells = []
    for key, value in rows.items():
        shown = _esc("-" if value is None else str(value))
        if key == "status" and value == "failed":
            shown = f"<span class='status-failed'>{shown}</span>"
        cells.append(f"<tr><td>{_esc(key)}</td><td>{shown}</td></tr>")
    if manifest.get("error"):
        cells.append(f"<tr><td>error</td><td><pre>{_esc(str(manifest['error']))}</pre></td></tr>")
    return f"<table class='meta'>{''.join(cells)}</table>"


def _section(section: ReportSection) -> str:
    parts = [f"<section><h2>{_esc(section.title)}</h2>"]
    for paragraph in (p.strip() for p in section.text.split("\n\n")):
        if paragraph:
            parts.append(f"<p>{_esc(paragraph)}</p>")
    if section.figure is not None:
        # plotly.js is already in <head>; each figure adds only its div and data.
        parts.append(section.figure.to_html(full_html=False, include_plotlyjs=False))
    if section.table is not None:
        parts.append(_table(section.table, section.table_max_rows))
    parts.append("</section>")
    return "\n".join(parts)


def _table(df: pd.DataFrame, max_rows: int) -> str:
    shown = df.head(max_rows)
    out = shown.to_html(index=False, escape=True, border=0, float_format=_fmt, na_rep="-")
    if len(df) > len(shown):
        out += f"<p class='note'>showing {len(shown)} of {len(df)} rows</p>"
    return out


def _fmt(value: Any) -> str:
    return f"{value:.4g}"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)
