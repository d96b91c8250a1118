"""Study stage: every run of a study side by side, with comparison figures and findings.

Input is a manifest (one entry per run: its extract folder, run records and
sweep values). A run whose outputs are missing is kept as a failed row with the
reason from its logs, never silently dropped, so a sweep finished with
``snakemake --keep-going`` still yields a study that says what failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from llmprof.analysis.categories import CATEGORY_ORDER
from llmprof.analysis.findings import Finding, profiler_overhead
from llmprof.analysis.metrics import records
from llmprof.common.errors import InputError
from llmprof.common.outputs import staged_directory, write_json, write_table
from llmprof.render.report import Block, Heading, Paragraph, Table, load_json, load_metrics, to_html, to_markdown

#: Run parameters compared across runs, from the run record's settings (in this order).
PARAMETERS = (
    ("batch_size", "workload", pa.int64()),
    ("input_len", "workload", pa.int64()),
    ("output_len", "workload", pa.int64()),
    ("capture_mode", None, pa.string()),
    ("enforce_eager", "engine", pa.bool_()),
    ("tensor_parallel_size", "engine", pa.int64()),
)
SHARE_CHANGE = 0.05  # a category's share must move this much between the ends of a sweep to be reported

STUDY_SCHEMA = pa.schema(
    [
        pa.field("run", pa.string()),
        pa.field("status", pa.string()),  # ok or failed
        pa.field("reason", pa.string()),
        pa.field("sweep", pa.string()),
        pa.field("swept_values", pa.string()),  # JSON object of the swept keys
        *(pa.field(name, kind) for name, _, kind in PARAMETERS),
        pa.field("output_tok_per_s_traced", pa.float64()),
        pa.field("output_tok_per_s_untraced", pa.float64()),
        pa.field("profiler_overhead", pa.float64()),
        pa.field("mean_iteration_latency_s", pa.float64()),
        pa.field("kernel_count", pa.int64()),
        pa.field("kernel_time_ns", pa.int64()),
        pa.field("gpu_busy_fraction", pa.float64()),
        *(pa.field(f"share_{c.replace('/', '_')}", pa.float64()) for c in CATEGORY_ORDER),
        pa.field("sync_share", pa.float64()),
        pa.field("h2d_bytes", pa.int64()),
        pa.field("top_kernel", pa.string()),
        pa.field("top_kernel_share", pa.float64()),
    ]
)


@dataclass(frozen=True)
class RunEntry:
    """One run of the study: where its outputs are and how it was made."""

    run: str
    extract: Path
    record: Path | None = None
    baseline: Path | None = None
    logs: Path | None = None
    sweep: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, item: dict[str, Any]) -> RunEntry:
        def path(key: str) -> Path | None:
            return Path(item[key]) if item.get(key) else None

        return cls(
            item["run"], Path(item["extract"]), path("record"), path("baseline"), path("logs"), item.get("sweep") or {}
        )


def load_manifest(text: str) -> list[RunEntry]:
    """Runs of a study from JSON: a list of {run, extract, record?, baseline?, logs?, sweep?}."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"study manifest: not valid JSON ({exc})") from exc
    if not isinstance(items, list) or not items:
        raise InputError("study manifest: expected a non-empty list of runs")
    return [RunEntry.from_dict(i) for i in items]


def failure_reason(entry: RunEntry) -> str:
    """The last error line in the run's logs, or what is missing."""
    lines: list[str] = []
    if entry.logs is not None and entry.logs.is_dir():
        for log in sorted(entry.logs.glob("*.log")):
            lines += [
                f"{log.stem}: {line.strip()}"
                for line in log.read_text(errors="replace").splitlines()
                if "error" in line.lower()
            ]
    return lines[-1][:500] if lines else f"{entry.extract / 'metrics.json'} was not produced"


def _json(path: Path | None) -> dict[str, Any] | None:
    """A run record, or None where the run has none (a capture without records, a failed run)."""
    return load_json(path) if path is not None and path.exists() else None


def run_row(entry: RunEntry) -> dict[str, Any]:
    """The study row of one run (status failed, with its reason, when its outputs are missing)."""
    row: dict[str, Any] = {f.name: None for f in STUDY_SCHEMA}
    row.update(
        run=entry.run,
        sweep=entry.sweep.get("name"),
        swept_values=json.dumps(entry.sweep.get("values", {}), sort_keys=True),
    )
    if not (entry.extract / "metrics.json").exists():
        return {**row, "status": "failed", "reason": failure_reason(entry)}
    m = load_metrics(entry.extract)
    traced, untraced = _json(entry.record), _json(entry.baseline)
    if traced is not None:
        spec = traced["spec"]
        for name, section, _ in PARAMETERS:
            row[name] = (spec.get(section, {}) if section else spec).get(name)
        row["output_tok_per_s_traced"] = traced["output_tokens_per_s"]
        latencies = [i["latency_s"] for i in traced["iterations"]]
        row["mean_iteration_latency_s"] = sum(latencies) / len(latencies) if latencies else None
    if untraced is not None:
        row["output_tok_per_s_untraced"] = untraced["output_tokens_per_s"]
    if traced is not None and untraced is not None:
        row["profiler_overhead"] = profiler_overhead(traced, untraced)
    for category in m["kernels"]["categories"]:
        row[f"share_{category['category'].replace('/', '_')}"] = category["share"]
    top = m["kernels"]["top"][0] if m["kernels"]["top"] else None
    row.update(
        status="ok",
        kernel_count=m["kernels"]["count"],
        kernel_time_ns=m["kernels"]["time_ns"],
        gpu_busy_fraction=m["gpu_activity"]["busy_fraction"] if m["gpu_activity"]["captured"] else None,
        sync_share=m["cuda_api"]["sync_share"],
        h2d_bytes=m["memcpy"]["directions"]["H2D"]["bytes"],
        top_kernel=top["short_name"] if top else None,
        top_kernel_share=top["share"] if top else None,
    )
    return row


def study_table(entries: list[RunEntry]) -> pd.DataFrame:
    """One row per run, in manifest order."""
    table = pa.Table.from_pylist([run_row(e) for e in entries], schema=STUDY_SCHEMA)
    nullable = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    frame: pd.DataFrame = table.to_pandas(types_mapper=nullable.get)
    return frame


def swept_parameter(table: pd.DataFrame) -> str | None:
    """The run parameter that differs across the successful runs (the first, if several)."""
    ok = table[table["status"] == "ok"]
    for name, _, _ in PARAMETERS:
        if ok[name].notna().all() and ok[name].nunique() > 1:
            return name
    return None


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def study_findings(table: pd.DataFrame) -> list[Finding]:
    """Findings that compare runs: failures, idle and throughput trends, shifting kernel families."""
    found = [
        Finding(
            "run_failed",
            "warning",
            f"Run {row['run']} failed",
            str(row["reason"]),
            "Read the run's logs under logs/{run}/; a GPU out-of-memory error calls for a smaller batch or "
            "max_model_len, or a lower gpu_memory_utilization.",
        )
        for row in records(table[table["status"] == "failed"])
    ]
    parameter = swept_parameter(table)
    ok = table[table["status"] == "ok"]
    if parameter is None or len(ok) < 2 or not pd.api.types.is_numeric_dtype(ok[parameter]):
        return found
    ok = ok.sort_values([parameter, "run"])
    first, last = ok.iloc[0], ok.iloc[-1]
    label = parameter.replace("_", " ")
    if pd.notna(first["gpu_busy_fraction"]) and pd.notna(last["gpu_busy_fraction"]):
        idle_a, idle_b = 1 - first["gpu_busy_fraction"], 1 - last["gpu_busy_fraction"]
        verb = "falls" if idle_b < idle_a else "rises"
        found.append(
            Finding(
                "idle_trend",
                "info",
                f"GPU idle {verb} from {_pct(idle_a)} at {label} {first[parameter]} to "
                f"{_pct(idle_b)} at {label} {last[parameter]}",
                "Busy share of the capture window per run: "
                + ", ".join(
                    f"{r['run']} {_pct(r['gpu_busy_fraction'])}"
                    for r in records(ok)
                    if pd.notna(r["gpu_busy_fraction"])
                ),
                "Where idle stays high at the largest setting, the host side (scheduling, sampling, Python) bounds "
                "throughput: look at the CPU with --sample=cpu.",
            )
        )
    for column in ("output_tok_per_s_untraced", "output_tok_per_s_traced"):
        if pd.notna(first[column]) and pd.notna(last[column]) and first[column] > 0:
            which = "untraced" if column.endswith("untraced") else "traced"
            found.append(
                Finding(
                    "throughput_scaling",
                    "info",
                    f"Throughput grows {last[column] / first[column]:.1f}× from {label} "
                    f"{first[parameter]} to {last[parameter]} ({which})",
                    f"{first[column]:,.0f} → {last[column]:,.0f} output tok/s; "
                    f"{label} grows {last[parameter] / first[parameter]:.1f}×.",
                    "Sublinear scaling marks where the GPU saturates; pick the batch size at the knee "
                    "for latency-bound serving.",
                )
            )
            break
    for category in CATEGORY_ORDER:
        column = f"share_{category.replace('/', '_')}"
        a, b = first[column], last[column]
        if pd.notna(a) and pd.notna(b) and abs(b - a) >= SHARE_CHANGE:
            found.append(
                Finding(
                    "category_shift",
                    "info",
                    f"{category}'s share of GPU time {'grows' if b > a else 'falls'} from "
                    f"{_pct(a)} to {_pct(b)} with {label}",
                    f"{first['run']}: {_pct(a)}; {last['run']}: {_pct(b)}.",
                    "Optimise the family whose share grows with the setting you will deploy.",
                )
            )
    overheads = ok["profiler_overhead"].dropna()
    if len(overheads):
        found.append(
            Finding(
                "overhead_range",
                "info",
                f"Profiler overhead {_pct(overheads.min())}–{_pct(overheads.max())} across runs",
                "Traced against untraced output tok/s of the same workload.",
                "Compare runs on untraced throughput; use traced timings for where the time goes, not how much.",
            )
        )
    return sorted(found, key=lambda f: f.severity != "warning")


def _cell(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    if kind == "pct":
        return _pct(float(value))
    if kind == "tok":
        return f"{float(value):,.0f}"
    if kind == "bytes":
        return f"{int(value) / 1e6:,.2f} MB"
    return str(value)


def study_blocks(table: pd.DataFrame, found: list[Finding], figure_dir: str) -> list[Block]:
    from llmprof.render.figures import STUDY_FIGURES

    columns = (
        ("run", ""),
        ("status", ""),
        ("batch_size", ""),
        ("capture_mode", ""),
        ("output_tok_per_s_traced", "tok"),
        ("output_tok_per_s_untraced", "tok"),
        ("profiler_overhead", "pct"),
        ("gpu_busy_fraction", "pct"),
        ("share_gemm", "pct"),
        ("share_attention", "pct"),
        ("sync_share", "pct"),
        ("h2d_bytes", "bytes"),
        ("top_kernel", ""),
    )
    rows = tuple(tuple(_cell(row[c], k) for c, k in columns) for _, row in table.iterrows())
    blocks: list[Block] = [
        Heading("llmprof study", 1),
        Paragraph(
            f"{len(table)} runs, {int((table['status'] == 'ok').sum())} complete; compared over "
            f"`{swept_parameter(table) or 'run'}`."
        ),
        Heading("Runs"),
        Table(tuple(c for c, _ in columns), rows),
        Heading("Findings"),
    ]
    for f in found:
        blocks += [
            Heading(("⚠ " if f.severity == "warning" else "ℹ ") + f.title, 3),
            Paragraph(f"**Evidence.** {f.evidence}"),
            Paragraph(f"**Next step.** {f.next_step}"),
        ]
    if not found:
        blocks.append(Paragraph("No comparison finding: fewer than two complete runs differ in a run parameter."))
    from llmprof.render.report import Figure

    blocks.append(Heading("Figures"))
    blocks += [Figure(f"{figure_dir}/{name}.png", caption) for name, (_, _, caption) in STUDY_FIGURES.items()]
    return blocks


def write_study(entries: list[RunEntry], out: str | Path, *, force: bool = False) -> pd.DataFrame:
    """Write runs.parquet, figures/, report.md, report.html and findings.json of a study into ``out``."""
    from llmprof.render.figures import draw_study_figures

    table = study_table(entries)
    found = study_findings(table)
    with staged_directory(Path(out), force, "study") as stage:
        write_table(stage / "runs.parquet", pa.Table.from_pandas(table, schema=STUDY_SCHEMA, preserve_index=False))
        draw_study_figures(table, entries, stage / "figures")
        blocks = study_blocks(table, found, "figures")
        (stage / "report.md").write_text(to_markdown(blocks))
        (stage / "report.html").write_text(to_html(blocks, "llmprof study"))
        write_json(stage / "findings.json", [f.to_dict() for f in found])
    return table
