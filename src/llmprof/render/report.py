"""Report stage: ``metrics.json`` and figures in, ``report.md``, ``report.html`` and ``findings.json`` out.

The report is built once as a list of blocks (headings, paragraphs, tables,
figures) and rendered twice, to Markdown and to standalone HTML, so the two
never disagree. It reads only the extract folder, never the SQLite export.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmprof.analysis.categories import kernel_label
from llmprof.analysis.findings import Finding, findings, profiler_overhead
from llmprof.common.errors import InputError
from llmprof.common.outputs import staged_directory, write_json
from llmprof.render.figures import FIGURES


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    path: str
    caption: str


Block = Heading | Paragraph | Table | Figure


def _ms(ns: float) -> str:
    return f"{ns / 1e6:,.2f} ms"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _mb(value: int) -> str:
    return f"{value / 1e6:,.2f} MB"


def load_json(path: Path, made_by: str = "the stage that writes it") -> dict[str, Any]:
    if not path.exists():
        raise InputError(f"{path}: missing; run {made_by} first")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); run {made_by} again") from exc
    return data


def load_metrics(extract_dir: Path) -> dict[str, Any]:
    return load_json(extract_dir / "metrics.json", "`llmprof extract`")


def _headline(m: dict[str, Any]) -> Table:
    activity = m["gpu_activity"]
    top = max(m["kernels"]["categories"], key=lambda c: c["share"])
    gpus = ", ".join(sorted({g["name"] for g in m["gpus"] if g.get("name")})) or "not recorded"
    copies = m["memcpy"]["directions"]
    rows = [
        ("Capture window", _ms(m["capture_window"]["duration_ns"])),
        ("GPUs", gpus),
        ("Kernels", f"{m['kernels']['count']:,} ({_ms(m['kernels']['time_ns'])} of GPU time)"),
        ("GPU busy", _pct(activity["busy_fraction"]) if activity["captured"] else "no GPU work captured"),
        ("Largest kernel family", f"{top['category']} ({_pct(top['share'])})" if top["time_ns"] else "n/a"),
        ("CUDA API calls", f"{m['cuda_api']['count']:,} ({_ms(m['cuda_api']['time_ns'])})"),
        ("Synchronization share of API time", _pct(m["cuda_api"]["sync_share"])),
        ("Copies H2D / D2H / D2D", " / ".join(_mb(copies[d]["bytes"]) for d in ("H2D", "D2H", "D2D"))),
        ("NVTX ranges", f"{m['nvtx']['range_count']:,}"),
    ]
    return Table(("Metric", "Value"), tuple(rows))


def _finding_blocks(found: list[Finding]) -> list[Block]:
    if not found:
        return [Paragraph("No rule fired: no finding is supported by these numbers.")]
    blocks: list[Block] = []
    for f in found:
        marker = "⚠" if f.severity == "warning" else "ℹ"
        blocks.append(Heading(f"{marker} {f.title}", 3))
        blocks.append(Paragraph(f"**Evidence.** {f.evidence}"))
        blocks.append(Paragraph(f"**Next step.** {f.next_step}"))
    return blocks


def _top_kernels(m: dict[str, Any]) -> Table:
    rows = tuple(
        (
            kernel_label(k["name"], k["short_name"]),
            k["category"],
            f"{k['count']:,}",
            _ms(k["time_ns"]),
            _pct(k["share"]),
        )
        for k in m["kernels"]["top"]
    )
    return Table(("Kernel", "Category", "Instances", "GPU time", "Share"), rows)


def _nvtx_table(m: dict[str, Any]) -> Table:
    rows = tuple(
        (
            r["name"],
            r["style"],
            f"{r['instances']:,}",
            _ms(r["range_ns"]),
            _ms(r["gpu_projected_ns"]),
            _ms(r["gpu_time_ns"]),
            f"{r['gpu_ops']:,}",
        )
        for r in m["nvtx"]["ranges"][:20]
    )
    return Table(("Range", "Style", "Instances", "Range time", "GPU projected", "GPU kernel time", "GPU ops"), rows)


def _workload_blocks(traced: dict[str, Any], untraced: dict[str, Any] | None) -> list[Block]:
    spec, model, versions = traced["spec"], traced["model"], traced["versions"]
    workload = spec["workload"]
    loss = profiler_overhead(traced, untraced) if untraced is not None else None
    rows = [
        (
            "Model",
            f"{model['name']} ({model['source']}"
            + (f", {model['parameters'] / 1e9:.2f}B parameters)" if model.get("parameters") else ")"),
        ),
        ("Capture mode", traced["capture_mode"]),
        (
            "Workload",
            f"batch {workload['batch_size']}, input {workload['input_len']} tokens, output "
            f"{workload['output_len']} tokens; {len(traced['warmup_latency_s'])} warmup calls before the "
            f"capture, {len(traced['iterations'])} captured",
        ),
        ("Throughput traced", f"{traced['output_tokens_per_s']:,.0f} output tok/s"),
        ("Throughput untraced", f"{untraced['output_tokens_per_s']:,.0f} output tok/s" if untraced else "not measured"),
        ("Profiler overhead", _pct(loss)),
        ("GPU", f"{traced['gpu']['name']} × {traced['gpu']['count']}"),
        (
            "Versions",
            f"vLLM {versions['vllm']}, torch {versions['torch']}, CUDA {versions['cuda']}, "
            f"driver {versions['driver'] or 'n/a'}, {(traced.get('nsys') or {}).get('version') or 'nsys n/a'}",
        ),
        (
            "Kernels captured",
            f"{(traced.get('nsys') or {}).get('kernels_captured', 'n/a'):,}" if traced.get("nsys") else "n/a",
        ),
    ]
    latency = tuple(
        (
            str(i["index"]),
            f"{i['latency_s'] * 1e3:,.1f} ms",
            f"{i['output_tokens']:,}",
            f"{i['output_tokens_per_s']:,.0f}",
        )
        for i in traced["iterations"]
    )
    return [
        Heading("Workload"),
        Table(("Item", "Value"), tuple(rows)),
        Table(("Captured iteration", "Latency", "Output tokens", "tok/s"), latency),
    ]


def _phase_blocks(m: dict[str, Any]) -> list[Block]:
    phases = m.get("phases", {})
    if not phases.get("source"):
        return []
    total = sum(p["gpu_time_ns"] for p in phases["phases"]) or 1
    rows = tuple(
        (
            p["phase"],
            f"{p['steps']:,}",
            _ms(p["gpu_time_ns"]),
            _pct(p["gpu_time_ns"] / total),
            _ms(p["gpu_time_ns"] / p["steps"]) if p["steps"] else "n/a",
        )
        for p in phases["phases"]
    )
    return [
        Heading("Prefill and decode"),
        Paragraph(
            "GPU time of vLLM's engine steps, by the requests each step's NVTX range names "
            "(context requests: prefill; generation requests: decode)."
        ),
        Table(("Phase", "Steps", "GPU kernel time", "Share", "Per step"), rows),
    ]


def build_report(
    run: str,
    m: dict[str, Any],
    found: list[Finding],
    figure_dir: str | None,
    traced: dict[str, Any] | None = None,
    untraced: dict[str, Any] | None = None,
) -> list[Block]:
    """The report's blocks for one run (with its workload when the run records are given)."""
    source = m["source"]
    blocks: list[Block] = [
        Heading(f"llmprof report: {run}", 1),
        Paragraph(
            f"Capture `{source['file']}` "
            f"(Nsight Systems {source['nsys_version'] or 'version not recorded in this export'}, "
            f"export schema {source['export_schema_version'] or 'n/a'})."
        ),
        Heading("Headline numbers"),
        _headline(m),
        *(_workload_blocks(traced, untraced) if traced is not None else []),
        Heading("Findings"),
        *_finding_blocks(found),
    ]
    if figure_dir is not None:
        blocks.append(Heading("Figures"))
        blocks += [Figure(f"{figure_dir}/{name}.png", caption) for name, (_, _, caption) in FIGURES.items()]
    blocks += [Heading("Top kernels"), _top_kernels(m) if m["kernels"]["top"] else Paragraph("No kernels.")]
    blocks += _phase_blocks(m)
    blocks += [
        Heading("NVTX ranges and their GPU work"),
        _nvtx_table(m) if m["nvtx"]["ranges"] else Paragraph("No NVTX ranges."),
    ]
    if m.get("skipped_summaries"):
        blocks.append(Heading("Summaries without data"))
        blocks += [Paragraph(f"`{name}`: {why}") for name, why in sorted(m["skipped_summaries"].items())]
    return blocks


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Table):
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "|".join("---" for _ in b.header) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
        else:
            out.append(f"![{b.caption}]({b.path})\n\n*{b.caption}*")
        out.append("")
    return "\n".join(out)


def _inline_html(text: str) -> str:
    """Escape, then render the two inline marks the blocks use: **bold** and `code`."""
    parts = html.escape(text).split("`")
    rendered = [p if i % 2 == 0 else f"<code>{p}</code>" for i, p in enumerate(parts)]
    bold = "".join(rendered).split("**")
    return "".join(p if i % 2 == 0 else f"<strong>{p}</strong>" for i, p in enumerate(bold))


def to_html(blocks: list[Block], title: str) -> str:
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            body.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            body.append(
                f'<figure><img src="{html.escape(b.path)}" alt="{html.escape(b.caption)}">'
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "th{background:#f0f0f0}img{max-width:100%}code{background:#f4f4f4;padding:0 3px}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    extract_dir: str | Path,
    out: str | Path,
    *,
    run: str | None = None,
    figures_dir: str | Path | None = None,
    record: str | Path | None = None,
    baseline: str | Path | None = None,
    force: bool = False,
) -> list[Finding]:
    """Write report.md, report.html and findings.json for one run into ``out``.

    Args:
        extract_dir: the run's extract folder (metrics.json and tables).
        out: the report folder.
        run: the run's name for the title (default: the extract folder's parent name).
        figures_dir: the run's figures folder, linked relative to ``out``.
        record: the profiled run's record (run.json of the profile stage).
        baseline: the same workload's record without nsys (baseline stage).
        force: replace ``out`` if it exists.
    """
    extract_dir, out = Path(extract_dir), Path(out)
    metrics = load_metrics(extract_dir)
    traced = load_json(Path(record)) if record is not None else None
    untraced = load_json(Path(baseline)) if baseline is not None else None
    found = findings(metrics, traced, untraced)
    figure_link = os.path.relpath(figures_dir, out) if figures_dir is not None else None
    name = run or extract_dir.resolve().parent.name
    blocks = build_report(name, metrics, found, figure_link, traced, untraced)
    with staged_directory(out, force, "report") as stage:
        (stage / "report.md").write_text(to_markdown(blocks))
        (stage / "report.html").write_text(to_html(blocks, f"llmprof report: {name}"))
        write_json(stage / "findings.json", [f.to_dict() for f in found])
    return found
