"""Study stage: the study table, its comparison figures and findings, as files.

Writes ``runs.parquet``, ``figures/``, ``report.md``, ``report.html`` and
``findings.json`` of a study; what they hold is computed by
:mod:`llmprof.analysis.study`.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import pandas as pd
import pyarrow as pa

from llmprof.analysis.findings import Finding, pct
from llmprof.analysis.study import STUDY_SCHEMA, RunEntry, study_findings, study_table, swept_parameter
from llmprof.common.outputs import staged_directory, write_json, write_table
from llmprof.render.document import Block, Figure, Heading, Paragraph, Table, embedded_images, to_html, to_markdown
from llmprof.render.figures import STUDY_FIGURES, draw_study_figures, figure_links
from llmprof.render.report import finding_blocks

#: The columns of the study table shown in the report, and how each value is written.
SHOWN_COLUMNS = (
    ("run", ""),
    ("status", ""),
    ("batch_size", ""),
    ("capture_mode", ""),
    ("comparison_group", ""),
    ("output_tok_per_s_traced", "tok"),
    ("output_tok_per_s_untraced", "tok"),
    ("profiler_overhead", "pct"),
    ("iteration_overhead", "pct"),
    ("busy_share_raw", "pct"),
    ("busy_share_corrected", "pct"),
    ("share_gemm", "pct"),
    ("share_attention", "pct"),
    ("sync_share", "pct"),
    ("h2d_bytes", "bytes"),
    ("top_kernel", ""),
)
#: The columns added to the table when the study has serving runs.
SERVING_SHOWN = (
    ("mode", ""),
    ("request_rate", ""),
    ("max_concurrency", ""),
    ("request_per_s_untraced", "rate"),
    ("request_per_s_traced", "rate"),
    ("ttft_p50_ms_untraced", "ms"),
    ("ttft_p99_ms_untraced", "ms"),
    ("tpot_p50_ms_untraced", "ms"),
    ("itl_p99_ms_untraced", "ms"),
    ("ttft_p99_ms_traced", "ms"),
    ("mean_batch_requests", "rate"),
)


def _cell(value: object, kind: str = "") -> str:
    """A table cell: n/a where the value is missing, numbers written as their kind says (pct, tok, bytes)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    if not kind or not isinstance(value, numbers.Real):
        return str(value)
    if kind == "pct":
        return pct(float(value))
    if kind == "tok":
        return f"{float(value):,.0f}"
    if kind == "ms":
        return f"{float(value):,.2f} ms"
    if kind == "rate":
        return f"{float(value):,.2f}"
    return f"{float(value) / 1e6:,.2f} MB"


def study_blocks(
    table: pd.DataFrame, found: list[Finding], parameter: str | None, figures: list[tuple[str, str]]
) -> list[Block]:
    """The study report: the runs, the comparison findings and the figures ((path, caption) of each)."""
    shown = SHOWN_COLUMNS + (SERVING_SHOWN if (table["mode"] == "serve").any() else ())
    rows = tuple(tuple(_cell(row[c], k) for c, k in shown) for _, row in table.iterrows())
    return [
        Heading("llmprof study", 1),
        Paragraph(
            f"{len(table)} runs, {int((table['status'] == 'ok').sum())} complete; compared over `{parameter or 'run'}`."
        ),
        Heading("Runs"),
        Table(tuple(c for c, _ in shown), rows),
        Heading("Findings"),
        *finding_blocks(found, "No comparison finding: fewer than two complete runs differ in a run parameter."),
        Heading("Figures"),
        *(Figure(path, caption) for path, caption in figures),
    ]


def write_study(entries: list[RunEntry], out: str | Path, *, force: bool = False) -> pd.DataFrame:
    """Write runs.parquet, figures/, report.md, report.html and findings.json of a study into ``out``."""
    table = study_table(entries)
    parameter = swept_parameter(table)
    found = study_findings(table)
    with staged_directory(Path(out), force, "study") as stage:
        write_table(stage / "runs.parquet", pa.Table.from_pandas(table, schema=STUDY_SCHEMA, preserve_index=False))
        draw_study_figures(table, parameter, entries, stage / "figures")
        blocks = study_blocks(table, found, parameter, figure_links(STUDY_FIGURES, "figures"))
        (stage / "report.md").write_text(to_markdown(blocks))
        (stage / "report.html").write_text(to_html(blocks, "llmprof study", embedded_images(blocks, stage)))
        write_json(stage / "findings.json", [f.to_dict() for f in found])
    return table
