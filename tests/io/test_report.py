"""report.html: one offline file with the manifest header, figures and escaped tables."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from interp.io.report import ReportSection, write_report
from interp.io.runstore import RunStore, build_manifest


def _run(tmp_path: Path):
    run = RunStore(tmp_path).create("ioi")
    manifest = build_manifest(
        {"name": "ioi", "model": {"name": "tiny-gpt2"}},
        model_id="tiny-gpt2",
        weights_sha256="0123456789abcdef" * 4,
        seed=7,
        cwd=tmp_path,
    )
    run.write_manifest(manifest | {"git_commit": "c0ffee" * 7, "git_dirty": False})
    return run


def test_report_is_one_offline_file(tmp_path: Path) -> None:
    run = _run(tmp_path)
    fig1 = go.Figure(go.Heatmap(z=[[0.123456, -2.5]], name="heads_trace"))
    fig2 = go.Figure(go.Bar(x=[31.4159], y=["L1H2"]))
    table = pd.DataFrame({"label": ["<b>L1H2</b>", "MLP3"], "value": [1.5, -0.25]})
    long_table = pd.DataFrame({"i": range(100)})
    path = write_report(
        run,
        title="IOI <report>",
        summary_lines=["accuracy 0.95 & rising"],
        sections=[
            ReportSection("Heads", text="first para\n\nsecond para", figure=fig1, table=table),
            ReportSection("DLA", figure=fig2),
            ReportSection("Long", table=long_table, table_max_rows=5),
        ],
    )
    assert path == run.path / "report.html" and list(run.path.glob("*.html")) == [path]
    html = path.read_text()
    assert not re.search(r"<script[^>]+src=[\"']?https?:", html)  # opens offline
    assert html.count("Plotly.newPlot") == 2 and "heads_trace" in html and "31.4159" in html
    assert "&lt;b&gt;L1H2&lt;/b&gt;" in html and "<b>L1H2</b>" not in html  # escaped table
    assert "IOI &lt;report&gt;" in html and "accuracy 0.95 &amp; rising" in html
    assert "<p>first para</p>" in html and "<p>second para</p>" in html
    assert "showing 5 of 100 rows" in html
    # the header: model, sha prefix, seed, commit prefix, created, status
    for text in ("tiny-gpt2", "0123456789abcdef...", "c0ffeec0ffee", "running", run.run_id):
        assert text in html
    assert re.search(r"<td>seed</td><td>7</td>", html)
    # plotly.js itself is inlined exactly once
    assert html.count(get_plotlyjs()[:300]) == 1


def test_report_without_manifest_or_sections(tmp_path: Path) -> None:
    run = RunStore(tmp_path).create("bare")
    html = write_report(run, title="t", summary_lines=[], sections=[]).read_text()
    assert "No manifest" in html and "Plotly.newPlot" not in html
