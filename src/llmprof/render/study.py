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
from llmprof.analysis.study import STUDY_SCHEMA, RunEntry, modes_of, study_findings, study_table, swept_parameter
from llmprof.common.outputs import staged_directory, write_json, write_table
from llmprof.render.document import Block, Figure, Heading, Paragraph, Table, embedded_images, to_html, to_markdown
from llmprof.render.figures import STUDY_FIGURES, draw_study_figures, figure_links
from llmprof.render.report import finding_blocks

#: The study table in the report, as two narrower tables (how each run was made and ran; where its GPU time
#: went), each column with its human label (units included) and how its values are written.
RUN_COLUMNS = (
    ("run", "run", ""),
    ("status", "status", ""),
    ("batch_size", "batch size", ""),
    ("capture_mode", "capture mode", ""),
    ("comparison_group", "comparison group", ""),
    ("output_tok_per_s_untraced", "output tok/s without nsys", "tok"),
    ("output_tok_per_s_traced", "output tok/s under nsys", "tok"),
    ("profiler_overhead", "throughput lost to nsys", "pct"),
    ("iteration_overhead", "iteration slowdown under nsys", "pct"),
)
GPU_COLUMNS = (
    ("run", "run", ""),
    ("busy_share_raw", "GPU busy, traced window", "pct"),
    ("busy_share_corrected", "GPU busy, untraced iteration", "pct"),
    ("share_gemm", "GEMM (% of kernel time)", "pct"),
    ("share_attention", "attention (% of kernel time)", "pct"),
    ("sync_share", "sync (% of CUDA API time)", "pct"),
    ("h2d_bytes", "H2D copies (MB)", "mb"),
    ("top_kernel", "top kernel", "name"),
)
#: Kernel names in the table are cut to this many characters, so the table fits the page.
NAME_WIDTH = 40
#: The serving table, shown when the study has serving runs (latencies without nsys unless said).
SERVING_COLUMNS = (
    ("run", "run", ""),
    ("mode", "mode", ""),
    ("request_rate", "request rate (req/s)", ""),
    ("max_concurrency", "max concurrency", ""),
    ("request_per_s_untraced", "req/s without nsys", "rate"),
    ("request_per_s_traced", "req/s under nsys", "rate"),
    ("ttft_p50_ms_untraced", "TTFT p50", "ms"),
    ("ttft_p99_ms_untraced", "TTFT p99", "ms"),
    ("tpot_p50_ms_untraced", "TPOT p50", "ms"),
    ("itl_p99_ms_untraced", "ITL p99", "ms"),
    ("ttft_p99_ms_traced", "TTFT p99 under nsys", "ms"),
    ("tpot_p50_ms_traced", "TPOT p50 under nsys", "ms"),
    ("mean_batch_requests", "requests per engine step", "rate"),
)


def _cell(value: object, kind: str = "") -> str:
    """A table cell: n/a where the value is missing, numbers written as their kind says (pct, tok, mb, name)."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    if kind == "name":
        text = str(value)
        return text if len(text) <= NAME_WIDTH else text[: NAME_WIDTH - 1] + "…"
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
    return f"{float(value) / 1e6:,.2f}"


#: The labels that change when a study has serving runs (offline runs' are the columns' own): a serving run's
#: overhead is that of its median TPOT, its busy share that of its whole load.
MODE_LABELS = {
    "serve": {
        "profiler_overhead": "per-token speed lost to nsys",
        "iteration_overhead": "TPOT slowdown under nsys",
        "busy_share_corrected": "GPU busy, untraced load",
    },
    "both": {
        "profiler_overhead": "lost to nsys (tok/s; serving: per-token speed)",
        "iteration_overhead": "slowdown under nsys (iteration; serving: TPOT)",
        "busy_share_corrected": "GPU busy, untraced iteration (serving: load)",
    },
}


def _by_mode(table: pd.DataFrame, columns: tuple[tuple[str, str, str], ...]) -> tuple[tuple[str, str, str], ...]:
    """``columns`` with the labels of the study's modes (offline runs, serving runs or both)."""
    labels = MODE_LABELS.get(modes_of(table), {})
    return tuple((name, labels.get(name, label), kind) for name, label, kind in columns)


def _table(table: pd.DataFrame, columns: tuple[tuple[str, str, str], ...]) -> Table:
    rows = tuple(tuple(_cell(row[c], k) for c, _, k in columns) for _, row in table.iterrows())
    return Table(tuple(label for _, label, _ in columns), rows)


def study_blocks(
    table: pd.DataFrame, found: list[Finding], parameter: str | None, figures: list[tuple[str, str]]
) -> list[Block]:
    """The study report: the runs, the comparison findings and the figures ((path, caption) of each). With a swept
    parameter the tables list the runs along it (runs without a value last), else in the study's order."""
    if parameter is not None:
        table = table.sort_values([parameter, "run"], na_position="last", kind="stable")
    serving: list[Block] = []
    if (table["mode"] == "serve").any():
        serving = [Heading("Serving latency", 3), _table(table, SERVING_COLUMNS)]
    return [
        Heading("llmprof study", 1),
        Paragraph(
            f"{len(table)} runs, {int((table['status'] == 'ok').sum())} complete; compared over "
            f"{(parameter or 'run').replace('_', ' ')}."
        ),
        Heading("Runs"),
        _table(table, _by_mode(table, RUN_COLUMNS)),
        Heading("Where the GPU time went", 3),
        _table(table, _by_mode(table, GPU_COLUMNS)),
        *serving,
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
